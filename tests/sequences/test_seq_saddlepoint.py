"""Saddle-point approximations: their error measured against exact laws (never called exact)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import gammaln, logsumexp

from klfrontier import Reference
from klfrontier.sequences import Memoryless, reward_law
from klfrontier.sequences.saddlepoint import saddlepoint_logdensity, saddlepoint_logsf

THREE = Reference([0.0, 1.0, 2**0.5], probs=[0.5, 0.3, 0.2])


@pytest.mark.parametrize("m,tol", [(50, 0.25), (200, 0.06), (1000, 0.02)])
def test_lugannani_rice_tail_error_in_the_bon_region(m, tol):
    """Pointwise relative error of P(S > s) where BoN at N = e^{0.1 m} lives.

    Measured: 0.20, 0.048, 0.016 (the exact law has atoms; the approximation
    is smooth, so the pointwise error is of the order of one atom's share of
    the tail and shrinks like 1/sqrt(m)).
    """
    law = reward_law(THREE, m)
    assert law.method == "types"
    su = (law.values - m * THREE.r_max) / THREE.reward_scale
    sel = (law.logsf > -0.1 * m - 25) & (law.logsf < -0.1 * m + 3) & (law.logsf < -1)
    err = np.abs(np.expm1(saddlepoint_logsf(THREE, m, su[sel]) - law.logsf[sel]))
    assert err.max() < tol


def test_daniels_density_on_binomial():
    """Lattice law: Daniels density times the span is the local-limit pmf, error O(1/m)."""
    m, p = 400, 0.3
    ref = Reference([0.0, 1.0], probs=[1 - p, p])
    t = np.arange(40, 361)
    su = t - m * 1.0  # standardised: u = r - 1
    exact = gammaln(m + 1) - gammaln(t + 1) - gammaln(m - t + 1) + t * np.log(p) + (m - t) * np.log1p(-p)
    err = np.abs(np.expm1(saddlepoint_logdensity(ref, m, su) - exact))
    assert err.max() < 1.0 / m  # measured ~2e-4


def test_bon_error_shrinks_with_m():
    """Per-token reward gap of the saddle-point BoN vs exact; the total KL(π_N||φ_Δ) too.

    Measured relative gap error: 2.2e-4 (m=50), 4.3e-5 (200), 6.7e-6 (1000),
    5.0e-7 (1e4), 8.9e-8 (1e5).
    """
    prev = np.inf
    for m in (50, 200, 1000, 10_000):
        seq = Memoryless(THREE, m)
        ex, sp = seq.best_of_n(log_n=0.1 * m), seq.best_of_n(log_n=0.1 * m, method="saddlepoint")
        assert ex.exact and not sp.exact and np.isnan(sp.error_bound)
        rel = abs(sp.reward_gap_per_token / ex.reward_gap_per_token - 1)
        assert rel < min(prev, 5e-4)
        prev = rel
        assert abs(sp.kl_to_optimal - ex.kl_to_optimal) < 1e-3
        # continuous-limit KL: log N - (N-1)/N; the atoms make the exact KL slightly smaller
        assert sp.kl == pytest.approx(sp.kl_bound) and ex.kl <= sp.kl


def test_saddlepoint_grid_law():
    law = reward_law(THREE, 300, method="saddlepoint", grid=2001)
    assert abs(logsumexp(law.logpmf)) < 1e-12
    exact = reward_law(THREE, 300)
    assert law.mean == pytest.approx(exact.mean, rel=1e-6)
