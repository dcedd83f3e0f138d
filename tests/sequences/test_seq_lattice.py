"""Lattice engine: detection, exact support, tilted FFT against 50-digit brute force and a log-space DP."""

from __future__ import annotations

import mpmath as mp
import numpy as np
import pytest
import seq_oracle as orc
from scipy.special import gammaln

from klfrontier import Reference
from klfrontier.sequences import detect_lattice, reward_law
from klfrontier.sequences.lattice_engine import LatticeEngine, _Support, lattice_dp

# The requirement: relative error <= 1e-8 in the log-pmf wherever log-pmf >= -1e5.
REQ = 1e-8


def _rel_log_err(got, want):
    got, want = np.asarray(got, float), np.asarray(want, float)
    assert np.array_equal(np.isneginf(got), np.isneginf(want))
    fin = np.isfinite(want)
    return np.abs(got[fin] - want[fin]) / np.maximum(1.0, np.abs(want[fin])), np.abs(got[fin] - want[fin])


def _ref_from_ks(ks, probs, h=0.1, a=-0.3):
    return Reference([a + h * k for k in ks], probs=probs)


# ----------------------------------------------------------------- detection
def test_detect_decimal_grid_and_gcd():
    vals = np.round(np.arange(-40, 41) * 0.1, 1)
    lat = detect_lattice(Reference(vals, probs=np.full(81, 1 / 81)))
    assert lat.ks.tolist() == list(range(81))
    assert lat.h == pytest.approx(0.1, rel=1e-14) and lat.a == -4.0
    # gaps and a common factor: levels 0, 0.6, 0.9 -> span 0.3, indices 0, 2, 3
    lat = detect_lattice(Reference([0.0, 0.6, 0.9], probs=[0.2, 0.3, 0.5]))
    assert lat.ks.tolist() == [0, 2, 3] and lat.h == pytest.approx(0.3, rel=1e-14)


@pytest.mark.parametrize("irr", [np.sqrt(2), np.pi, np.e, (1 + np.sqrt(5)) / 2])
def test_detect_rejects_irrational(irr):
    assert detect_lattice(Reference([0.0, 1.0, irr], probs=[0.5, 0.3, 0.2])) is None


def test_given_span_and_errors():
    ref = Reference([0.0, 0.2, 0.6], probs=[0.2, 0.3, 0.5])
    lat = detect_lattice(ref, lattice=0.1)  # finer than needed: the maximal span is returned
    assert lat.ks.tolist() == [0, 1, 3] and lat.h == pytest.approx(0.2)
    assert detect_lattice(ref, lattice=False) is None
    with pytest.raises(ValueError, match="lattice"):
        detect_lattice(ref, lattice=0.15)
    with pytest.raises(ValueError, match="lattice"):
        detect_lattice(ref, lattice=-1.0)
    with pytest.raises(ValueError, match="lattice"):
        detect_lattice(ref, lattice="x")
    with pytest.raises(ValueError, match="lattice"):
        reward_law(Reference([0.0, 1.0, np.sqrt(2)], probs=[0.5, 0.3, 0.2]), 3, method="lattice-fft")


# ------------------------------------------------------------------- support
def _brute_support(ks, m):
    cur = {0}
    for _ in range(m):
        cur = {a + k for a in cur for k in ks}
    return cur


@pytest.mark.parametrize("ks", [[0, 3, 4], [0, 1, 9], [0, 5, 6, 13], [0, 1], [0, 2, 3, 7]])
@pytest.mark.parametrize("m", [1, 2, 3, 5, 8, 40, 90])
def test_support_exact(ks, m):
    sup = _Support(np.array(ks), m)
    mask = sup.mask(-3, m * ks[-1] + 3)
    got = {int(t) for t in np.arange(-3, m * ks[-1] + 4)[mask]}
    assert got == _brute_support(ks, m)


# ------------------------------------------------------- 50-digit brute force
CASES_MP = [
    # (ks, probs): gaps in the support, a tiny mass, uneven masses
    ([0, 3, 4, 7], [0.4, 0.3, 0.3 - 1e-200, 1e-200]),
    ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10], list(np.linspace(1, 3, 11) / np.linspace(1, 3, 11).sum())),
    ([0, 1], [0.999, 0.001]),
    ([0, 2, 5], [1e-30, 0.5, 0.5 - 1e-30]),
]


@pytest.mark.parametrize("case", range(len(CASES_MP)))
@pytest.mark.parametrize("m", [1, 2, 3, 7, 12])
def test_fft_law_matches_mpmath(case, m):
    ks, probs = CASES_MP[case]
    ref = _ref_from_ks(ks, probs)
    law = reward_law(ref, m)
    assert law.method == "lattice-fft" and law.exact
    want = orc.lattice_law(ks, probs, m)
    t = np.rint((law.values - m * ref.r_min) / law.lattice[1]).astype(int)
    # support: exactly the sums with positive probability
    pos = [i for i, x in enumerate(want) if x != mp.ninf]
    assert t.tolist() == pos
    rel, ab = _rel_log_err(law.logpmf, [float(want[i]) for i in pos])
    assert rel.max() <= REQ
    assert ab.max() <= 1e-11  # measured ~1e-13


@pytest.mark.parametrize("m", [2, 5, 9])
def test_direct_dp_matches_mpmath(m):
    ks, probs = CASES_MP[0]
    lat = detect_lattice(_ref_from_ks(ks, probs))
    t, lp = lattice_dp(lat, m)
    want = orc.lattice_law(ks, probs, m)
    assert t.tolist() == [i for i, x in enumerate(want) if x != mp.ninf]
    rel, ab = _rel_log_err(lp, [float(want[i]) for i in t])
    assert ab.max() <= 1e-12


# ------------------------------------------------------------ against the DP
@pytest.fixture(scope="module")
def ref81():
    rng = np.random.default_rng(1)
    q = rng.random(81) + 0.05
    return Reference(np.round(np.arange(-40, 41) * 0.1, 1), probs=q / q.sum())


@pytest.mark.parametrize("m", [40, 200])
def test_fft_law_matches_dp_81_levels(ref81, m):
    law = reward_law(ref81, m)
    dp = reward_law(ref81, m, method="direct")
    assert np.allclose(law.values, dp.values, rtol=0, atol=1e-9)
    rel, ab = _rel_log_err(law.logpmf, dp.logpmf)
    assert rel.max() <= REQ
    assert ab.max() <= 1e-9  # measured ~6e-12 at m = 200
    assert law.error_estimate <= 1e-9
    # logsf summed from the top, consistent with the pmf
    assert law.logsf[-1] == -np.inf
    np.testing.assert_allclose(
        law.logsf[:-1], np.logaddexp.accumulate(law.logpmf[::-1])[::-1][1:], rtol=1e-13, atol=1e-14
    )  # S to 1e-14 relative where log S ~ 0


def test_deep_tails_to_minus_1e5():
    """Levels with mass e^-500: the log-pmf reaches -1e5 at m = 200 and stays accurate."""
    rng = np.random.default_rng(7)
    L = 20
    logq = np.log(rng.random(L + 1) + 0.1)
    logq[-1] = -500.0
    logq[3] = -200.0
    logq[:-1] -= np.logaddexp.reduce(logq[:-1])
    ref = Reference(np.arange(L + 1) * 0.5, logprobs=logq, normalize=True)
    m = 200
    law = reward_law(ref, m)
    dp = reward_law(ref, m, method="direct")
    assert dp.logpmf.min() < -9.9e4
    rel, ab = _rel_log_err(law.logpmf, dp.logpmf)
    assert rel.max() <= REQ
    assert rel.max() <= 1e-12  # relative error of the log: measured ~1e-15


@pytest.mark.parametrize("m", [1000, 100_000])
def test_binomial_closed_form_large_m(m):
    p = 0.3
    law = reward_law(Reference([0.0, 1.0], probs=[1 - p, p]), m)
    t = law.values
    want = gammaln(m + 1) - gammaln(t + 1) - gammaln(m - t + 1) + t * np.log(p) + (m - t) * np.log1p(-p)
    sel = want >= -1e5
    rel = np.abs(law.logpmf - want)[sel] / np.maximum(1, np.abs(want[sel]))
    assert rel.max() <= REQ
    # the closed form itself carries ~1e-10 absolute (gammaln of 1e5)
    assert np.abs(law.logpmf - want)[sel].max() <= 1e-8


def test_trinomial_lattice_equals_type_enumeration():
    ref = Reference([0.0, 1.0, 2.0], probs=[0.5, 0.3, 0.2])
    a = reward_law(ref, 1500)
    b = reward_law(ref, 1500, method="types")
    np.testing.assert_allclose(a.values, b.values, rtol=0, atol=1e-9)
    rel, _ = _rel_log_err(a.logpmf, b.logpmf)
    assert rel.max() <= 1e-11


def test_engine_windows_are_short_and_trusted(ref81):
    eng = LatticeEngine(detect_lattice(ref81), 10_000)
    blk = eng.block(0.02)
    assert blk.n < 10_000 * 80 / 5  # a window, not the whole support
    t, lp, score = eng.law(blk.o + blk.n // 2 - 100, blk.o + blk.n // 2 + 100)
    assert (score >= -eng.tau).all()


@pytest.mark.slow
def test_fft_law_matches_dp_m600(ref81):
    law = reward_law(ref81, 600)
    dp = reward_law(ref81, 600, method="direct")
    rel, ab = _rel_log_err(law.logpmf, dp.logpmf)
    assert rel.max() <= REQ and ab.max() <= 1e-9
