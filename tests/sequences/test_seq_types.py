"""Type enumeration: compositions, exact law against 50-digit brute force, the BoN window."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest
import seq_oracle as orc

from klfrontier import Reference
from klfrontier.sequences import reward_law
from klfrontier.sequences.types import compositions, types_count, types_law, types_window
from klfrontier.tilt import solve_lam_for_kl, tilt_stats

SQRT2 = 2**0.5


@pytest.mark.parametrize("m,K", [(1, 1), (0, 3), (4, 3), (7, 4), (12, 2)])
def test_compositions(m, K):
    c = compositions(m, K)
    assert c.shape == (comb(m + K - 1, K - 1), K) == (types_count(m, K), K)
    assert (c.sum(axis=1) == m).all() and (c >= 0).all()
    assert len({tuple(r) for r in c.tolist()}) == c.shape[0]


@pytest.mark.parametrize(
    "values,probs,m",
    [
        ([0.0, 1.0, SQRT2], [0.5, 0.3, 0.2], 7),
        ([0.0, 1.0, 2.0, SQRT2], [0.4, 0.3, 0.2, 0.1], 6),  # partial lattice: tied sums merge
        ([-1.0, np.pi, np.e], [1e-100, 0.5, 0.5 - 1e-100], 5),  # a tiny mass
    ],
)
def test_types_law_matches_mpmath(values, probs, m):
    ref = Reference(values, probs=probs)
    law = reward_law(ref, m)
    assert law.method == "types" and law.exact
    want = orc.count_law(values, probs, m)
    assert law.size == len(want)
    np.testing.assert_allclose(law.values, [float(s) for s, _ in want], rtol=1e-14, atol=1e-13)
    wl = np.array([float(lp) for _, lp in want])
    rel = np.abs(law.logpmf - wl) / np.maximum(1.0, np.abs(wl))
    assert rel.max() <= 1e-13


def test_types_law_sums_to_one_and_tails():
    ref = Reference([0.0, 1.0, SQRT2], probs=[0.5, 0.3, 0.2])
    law = reward_law(ref, 200)
    assert law.size == types_count(200, 3)  # non-lattice: every type its own sum
    assert abs(np.logaddexp.reduce(law.logpmf)) < 1e-12
    assert np.all(np.diff(law.values) > 0)
    np.testing.assert_allclose(
        law.logsf[:-1], np.logaddexp.accumulate(law.logpmf[::-1])[::-1][1:], rtol=1e-12, atol=1e-13
    )  # S to 1e-13 where log S ~ 0


def test_types_refuses_huge_enumeration():
    ref = Reference([0.0, 1.0, SQRT2], probs=[0.5, 0.3, 0.2])
    with pytest.raises(ValueError, match="max_types"):
        types_law(ref, 10_000, max_types=1000)


@pytest.mark.parametrize(
    "values,probs,m",
    [
        ([0.0, 1.0, SQRT2, 0.3], [0.4, 0.3, 0.2, 0.1], 120),
        ([0.0, 1.0, SQRT2], [0.5, 0.3, 0.2], 1200),
    ],
)
def test_window_equals_full_enumeration(values, probs, m):
    """Windowed enumeration returns exactly the full law's values inside the window."""
    ref = Reference(values, probs=probs)
    lam = float(solve_lam_for_kl(ref, 0.1))
    lam_u = float(ref.lam_to_u(lam))
    x_u = float(tilt_stats(ref, [lam_u]).mean[0])
    lo, hi = m * x_u - 15 / lam_u, m * x_u + 50 / lam_u
    tw = types_window(ref, m, lam_u, lo, hi)
    su, lp = types_law(ref, m)
    sel = (su >= lo) & (su <= hi)
    # everything typical is there; what is missing is below the stated bound
    assert tw.su.size <= sel.sum()
    idx = np.searchsorted(su, tw.su - 1e-9)
    np.testing.assert_allclose(su[idx], tw.su, rtol=0, atol=1e-9)
    np.testing.assert_allclose(lp[idx], tw.logpmf, rtol=1e-13)
    missing = np.setdiff1d(np.flatnonzero(sel), idx)
    if missing.size:
        assert np.logaddexp.reduce(lp[missing]) <= tw.log_missing
