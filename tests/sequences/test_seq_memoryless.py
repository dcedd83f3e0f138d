"""Memoryless sequences: the law API, the optimal policy, exact sequence-level best-of-N."""

from __future__ import annotations

import mpmath as mp
import numpy as np
import pytest
import seq_oracle as orc

from klfrontier import Reference, best_of_n, tilted
from klfrontier.sequences import Memoryless, reward_law
from klfrontier.tilt import solve_lam_for_kl

SQRT2 = 2**0.5
THREE = Reference([0.0, 1.0, SQRT2], probs=[0.5, 0.3, 0.2])
BERN = Reference([0.0, 1.0], probs=[0.7, 0.3])


def _ref81(seed=1):
    rng = np.random.default_rng(seed)
    q = rng.random(81) + 0.05
    return Reference(np.round(np.arange(-40, 41) * 0.1, 1), probs=q / q.sum())


# ------------------------------------------------------------------ the law
def test_reward_law_api():
    law = reward_law(BERN, 5)
    assert law.lattice == (0.0, 1.0) and law.exact and law.method == "lattice-fft"
    assert law.values.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert law.mean == pytest.approx(1.5, rel=1e-14)
    ref = law.as_reference()
    assert ref.n_levels == 6 and ref.mean_reward == pytest.approx(1.5, rel=1e-14)
    np.testing.assert_allclose(np.exp(law.logcdf), np.cumsum(law.probs), rtol=1e-14)
    assert "lattice-fft" in repr(law)
    # constant reward: S_m is constant
    c = reward_law(Reference([2.5, 2.5], probs=[0.5, 0.5]), 4)
    assert c.values.tolist() == [10.0] and c.logpmf.tolist() == [0.0]


def test_reward_law_errors():
    with pytest.raises(ValueError, match="length"):
        reward_law(BERN, 0)
    with pytest.raises(ValueError, match="length"):
        reward_law(BERN, 2.5)
    with pytest.raises(ValueError, match="method"):
        reward_law(BERN, 3, method="fft")
    with pytest.raises(ValueError, match="ref"):
        reward_law([0, 1], 3)
    with pytest.raises(ValueError, match="lattice"):
        reward_law(THREE, 3, method="direct")


def test_saddlepoint_law_is_labelled_approximate():
    law = reward_law(THREE, 50, method="saddlepoint", grid=501)
    assert not law.exact and law.method == "saddlepoint" and np.isnan(law.error_estimate)
    assert abs(np.logaddexp.reduce(law.logpmf)) < 1e-12  # renormalised grid masses
    assert abs(law.info["log_norm"]) < 1.0 / 50  # Daniels: O(1/m) normalisation error


# ------------------------------------------------------------ tilted policy
def test_tilted_is_product_of_per_token_tilts():
    m = 50
    seq = Memoryless(THREE, m)
    opt = seq.tilted(kl=m * 0.1)
    pt = tilted(THREE, kl=0.1)
    assert opt.reward == pytest.approx(m * pt.reward, rel=1e-14)
    assert opt.kl == pytest.approx(m * 0.1, rel=1e-13)
    assert opt.lam == pytest.approx(pt.lam, rel=1e-14)
    assert opt.reward_per_token == pytest.approx(pt.reward, rel=1e-14)
    assert opt.kl_per_token == pytest.approx(0.1, rel=1e-13) and not opt.saturated
    # the law of S_m under phi: its mean is m R*(delta)
    b = seq.tilted(beta=1 / pt.lam)
    assert b.reward == pytest.approx(opt.reward, rel=1e-12)
    assert seq.tilted(lam=pt.lam).kl == pytest.approx(opt.kl, rel=1e-12)
    sat = seq.tilted(kl=m * 5.0)
    assert sat.saturated and sat.lam == np.inf and sat.reward == pytest.approx(m * SQRT2)
    with pytest.raises(ValueError, match="exactly one"):
        seq.tilted(kl=1.0, lam=1.0)
    with pytest.raises(ValueError, match="kl"):
        seq.tilted(kl=-1.0)


# ------------------------------------------------------ BoN against mpmath
def _oracle(values, probs, m, log_n, delta=None):
    """(reward, KL, KL to phi_Delta) from 50-digit brute force; Delta = log N."""
    law = orc.count_law(values, probs, m)
    vals = [s for s, _ in law]
    lps = [lp for _, lp in law]
    lam = orc.lam_for_kl(values, probs, mp.mpf(log_n) / m if delta is None else delta)
    return orc.sequence_bon(vals, lps, log_n, lam)


ORACLE_CASES = [
    ("three letters", [0.0, 1.0, SQRT2], [0.5, 0.3, 0.2], 8, 0.8),
    ("three letters, large N", [0.0, 1.0, SQRT2], [0.5, 0.3, 0.2], 9, 9 * 1.2),
    ("lattice with gaps", [-0.3, 0.0, 0.1, 0.4], [0.4, 0.3, 0.2, 0.1], 7, 3.0),
    ("bernoulli", [0.0, 1.0], [0.7, 0.3], 20, 20 * 0.5),
    ("rare top", [0.0, 1.0, 2.0], [0.6, 0.4 - 1e-30, 1e-30], 6, 6 * 0.3),
]


@pytest.mark.parametrize("case", ORACLE_CASES, ids=[c[0] for c in ORACLE_CASES])
def test_best_of_n_matches_mpmath(case):
    _, values, probs, m, log_n = case
    b = Memoryless(Reference(values, probs=probs), m).best_of_n(log_n=log_n)
    rew, kl, klo = _oracle(values, probs, m, log_n)
    assert b.exact
    assert b.reward == pytest.approx(float(rew), rel=1e-12, abs=1e-13)
    assert b.kl == pytest.approx(float(kl), rel=1e-10, abs=1e-14)
    assert b.kl_to_optimal == pytest.approx(float(klo), rel=1e-9, abs=1e-12)
    assert b.kl <= b.kl_bound + 1e-14
    assert b.details["kl_to_optimal_identity"] == pytest.approx(b.kl_to_optimal, rel=1e-9, abs=1e-11)


def test_huge_n_binomial_against_mpmath():
    """m = 2000, N = e^2000: BoN lives where P(S > s) ~ e^-2000 (far below 1e-308)."""
    m, p, log_n = 2000, 0.3, 2000.0
    with mp.workdps(50):
        lq = [
            mp.loggamma(m + 1)
            - mp.loggamma(t + 1)
            - mp.loggamma(m - t + 1)
            + t * mp.log(mp.mpf(p))
            + (m - t) * mp.log(1 - mp.mpf(p))
            for t in range(m + 1)
        ]
    lam = orc.lam_for_kl([0.0, 1.0], [1 - p, p], 1.0)
    rew, kl, klo = orc.sequence_bon(list(range(m + 1)), lq, log_n, lam)
    b = Memoryless(BERN, m).best_of_n(log_n=log_n)
    assert b.method == "lattice-fft" and b.details["tilts"] <= 3
    assert b.reward == pytest.approx(float(rew), rel=1e-12)
    assert b.kl == pytest.approx(float(kl), rel=1e-11)
    assert b.kl_to_optimal == pytest.approx(float(klo), rel=1e-8)


def test_window_matches_full_law_and_library_bon():
    ref = _ref81(3)
    m, log_n = 300, 300 * 0.2
    b = Memoryless(ref, m).best_of_n(log_n=log_n)
    law = reward_law(ref, m)
    full = best_of_n(law.as_reference(), log_n=log_n)
    assert b.reward == pytest.approx(full.reward, rel=1e-12)
    assert b.kl == pytest.approx(full.kl, rel=1e-10)
    assert b.details["window_size"] < law.size / 2  # only the window was needed
    lam = float(solve_lam_for_kl(ref, log_n / m))
    assert b.lam == pytest.approx(lam, rel=1e-14)
    # theory §2 identity, on the full law
    kl_id = (
        full.kl
        - lam * full.reward
        + m * float(np.log(np.exp(lam * ref.level_values) @ np.exp(ref.level_logq)))
    )
    assert b.kl_to_optimal == pytest.approx(kl_id, rel=1e-8)


def test_types_window_matches_full_types():
    m = 1500  # 1.1e6 types: full enumeration still possible
    from klfrontier.sequences.memoryless import sequence_bon

    full, _ = sequence_bon(THREE, m, 0.1 * m, "types", max_types=4_000_000)
    win, _ = sequence_bon(THREE, m, 0.1 * m, "types", max_types=1000)
    assert full.details["window"] is False and win.details["window"] is not False
    assert win.reward == pytest.approx(full.reward, rel=1e-13)
    assert win.kl == pytest.approx(full.kl, rel=1e-11)
    assert win.kl_to_optimal == pytest.approx(full.kl_to_optimal, rel=1e-9)


def test_bon_edge_cases():
    seq = Memoryless(THREE, 20)
    one = seq.best_of_n(n=1)
    assert one.kl == 0 and one.reward == pytest.approx(20 * THREE.mean_reward)
    assert seq.best_of_n(n=np.e**2).reward == pytest.approx(seq.best_of_n(log_n=2.0).reward, rel=1e-14)
    # saturated budget: the optimum is p(.|A)^m; BoN is not, so KL to it is infinite
    big = seq.best_of_n(log_n=20 * 3.0)
    assert big.kl_to_optimal == np.inf and big.lam == np.inf
    assert big.reward == pytest.approx(20 * SQRT2 * (1 - 1e-6), rel=1e-5)
    assert big.kl <= big.kl_bound
    const = Memoryless(Reference([1.0, 1.0], probs=[0.5, 0.5]), 7).best_of_n(log_n=5.0)
    assert const.reward == 7.0 and const.kl == 0.0
    with pytest.raises(ValueError, match="exactly one"):
        seq.best_of_n()
    with pytest.raises(ValueError, match="n must"):
        seq.best_of_n(n=0.5)
    with pytest.raises(ValueError, match="log_n"):
        seq.best_of_n(log_n=-1.0)
    with pytest.raises(ValueError, match="log_n"):
        seq.best_of_n(log_n=float("nan"))
    with pytest.raises(ValueError, match="direct"):
        seq.best_of_n(log_n=1.0, method="direct")
    with pytest.raises(ValueError, match="lattice"):
        seq.best_of_n(log_n=1.0, method="lattice-fft")
    with pytest.raises(ValueError, match="length"):
        Memoryless(THREE, -3)


def test_saddlepoint_bon_error_is_small_and_labelled():
    """Saddle-point BoN (labelled approximate) against the exact type engine."""
    for m, tol_gap in [(100, 2e-3), (1000, 2e-5)]:
        seq = Memoryless(THREE, m)
        ex = seq.best_of_n(log_n=0.1 * m)
        sp = seq.best_of_n(log_n=0.1 * m, method="saddlepoint")
        assert not sp.exact and sp.method == "saddlepoint"
        # error of the per-token gap, relative to the gap itself
        rel_gap = abs(sp.reward_gap_per_token - ex.reward_gap_per_token) / ex.reward_gap_per_token
        assert rel_gap < tol_gap
        assert sp.kl_to_optimal == pytest.approx(ex.kl_to_optimal, rel=0.05)


def test_per_token_views_and_to_dict():
    b = Memoryless(BERN, 100).best_of_n(log_n=10.0)
    s = b.to_dict()
    assert s["reward_per_token"] == pytest.approx(b.reward / 100)
    assert b.reward_gap == pytest.approx(b.optimal_reward - b.reward)
    assert b.kl_to_optimal_per_token == pytest.approx(b.kl_to_optimal / 100)
    assert 0 < b.error_bound < 1e-8


@pytest.mark.parametrize("log_n", [1e-6, 0.01, 1.0, 5.0])
def test_small_n_window_against_full_law(log_n):
    """N near 1: BoN ~ p^m spreads over the bulk; the window still holds it (tiny KLs keep digits)."""
    m = 10_000
    b = Memoryless(BERN, m).best_of_n(log_n=log_n)
    full = best_of_n(reward_law(BERN, m).as_reference(), log_n=log_n)
    assert b.details["window"][0] > 0  # a window, not the whole support
    assert b.reward == pytest.approx(full.reward, rel=1e-11)
    assert b.kl == pytest.approx(full.kl, rel=1e-9)
    assert b.kl_to_optimal == pytest.approx(b.details["kl_to_optimal_identity"], rel=1e-6, abs=1e-10)
