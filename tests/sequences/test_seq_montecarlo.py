"""Monte Carlo cross-checks: the order-statistic sampler and the naive N·m-token baseline."""

from __future__ import annotations

import mpmath as mp
import numpy as np
import pytest

from klfrontier import Reference
from klfrontier.sequences import Memoryless, bon_monte_carlo, naive_bon_monte_carlo
from klfrontier.sequences.montecarlo import _log_winner_survival

SQRT2 = 2**0.5
THREE = Reference([0.0, 1.0, SQRT2], probs=[0.5, 0.3, 0.2])
BERN = Reference([0.0, 1.0], probs=[0.7, 0.3])


def _ref81():
    rng = np.random.default_rng(1)
    q = rng.random(81) + 0.05
    return Reference(np.round(np.arange(-40, 41) * 0.1, 1), probs=q / q.sum())


@pytest.mark.parametrize("log_n", [0.5, 3.0, 50.0, 1e4, 1e6])
@pytest.mark.parametrize("e", [1e-12, 0.3, 1.0, 7.0, 40.0])
def test_winner_survival_formula(log_n, e):
    """log(-expm1(log U / N)) with log U = -e, against 60 digits."""
    with mp.workdps(60):
        want = mp.log(-mp.expm1(-mp.mpf(e) / mp.exp(mp.mpf(log_n))))
    assert float(_log_winner_survival(log_n, np.array([e]))[0]) == pytest.approx(float(want), rel=1e-14)


@pytest.mark.parametrize(
    "ref,m,log_n",
    [
        (BERN, 100, 10.0),
        (THREE, 60, 6.0),  # types engine
        (_ref81(), 2000, 200.0),  # lattice FFT, 81 levels
        (BERN, 10_000, 1000.0),  # N = e^1000: tails far below 1e-308
        (THREE, 10_000, 1000.0),  # windowed types
    ],
)
def test_order_statistic_sampler_agrees_with_exact(ref, m, log_n):
    exact = Memoryless(ref, m).best_of_n(log_n=log_n)
    mc = bon_monte_carlo(ref, m, log_n=log_n, size=40_000, seed=12345)
    assert mc.outside == 0
    assert mc.method == exact.method
    assert mc.covers(exact.reward), (mc.ci, exact.reward)
    # the CI is informative: a few hundredths of a reward unit at most
    assert mc.ci[1] - mc.ci[0] < 0.2


def test_sampler_with_saddlepoint_law():
    mc = bon_monte_carlo(THREE, 1000, log_n=100.0, size=20_000, seed=7, method="saddlepoint")
    exact = Memoryless(THREE, 1000).best_of_n(log_n=100.0)
    assert mc.method == "saddlepoint" and mc.covers(exact.reward)


def test_sampler_n_equals_one_and_constant():
    mc = bon_monte_carlo(BERN, 50, n=1, size=20_000, seed=3)
    assert mc.covers(50 * 0.3)
    c = bon_monte_carlo(Reference([2.0, 2.0], probs=[0.5, 0.5]), 5, log_n=3.0, size=10, seed=0)
    assert c.mean == 10.0 and c.stderr == 0.0


def test_naive_baseline_agrees_with_exact():
    m, n = 12, 20
    exact = Memoryless(THREE, m).best_of_n(n=n)
    mc = naive_bon_monte_carlo(THREE, m, n, size=4000, seed=11)
    assert mc.size == 4000 and mc.covers(exact.reward)
    per = mc.ci_per_token
    assert per[0] < exact.reward_per_token < per[1]


def test_sampler_errors():
    with pytest.raises(ValueError, match="size"):
        bon_monte_carlo(BERN, 5, log_n=1.0, size=1)
    with pytest.raises(ValueError, match="exactly one"):
        bon_monte_carlo(BERN, 5)
    with pytest.raises(ValueError, match="integer"):
        naive_bon_monte_carlo(BERN, 5, 2.5)


def test_sampler_is_reproducible():
    a = bon_monte_carlo(BERN, 100, log_n=10.0, size=1000, seed=5, return_samples=True)
    b = bon_monte_carlo(BERN, 100, log_n=10.0, size=1000, seed=5, return_samples=True)
    assert np.array_equal(a.samples, b.samples)
