"""bon_curve (vectorised, pruned) agrees with best_of_n at every N, pruning included."""

import numpy as np
import pytest

from klfrontier import Reference, best_of_n, bon_curve


@pytest.mark.parametrize("seed", [0, 1])
def test_curve_matches_single_calls_over_huge_n_range(seed):
    rng = np.random.default_rng(seed)
    rewards = rng.integers(0, 40, size=300).astype(float)  # many ties
    ref = Reference(rewards, probs=rng.dirichlet(np.ones(300)))
    log_n = np.concatenate([[0.0, 1e-9, 0.3], np.linspace(1, 40, 25), [1e3, 1e6]])
    cur = bon_curve(ref, log_n=log_n)
    for i, ln in enumerate(log_n):
        b = best_of_n(ref, log_n=ln)
        # rtol 1e-12: pruning drops terms below ~1e-24 only
        assert cur.kl[i] == pytest.approx(b.kl, rel=1e-12, abs=1e-300)
        assert cur.reward[i] == pytest.approx(b.reward, rel=1e-12)
        assert cur.win_rate[i] == pytest.approx(b.win_rate, rel=1e-12)
    assert cur.kl[-1] == pytest.approx(ref.kl_max, rel=1e-14)  # saturates to -log p(A)


def test_tails_below_float_range_are_exact():
    # p = (1 - e^-800, e^-800), r = (0, 1), N = e^800: the top level wins with
    # probability 1 - (1 - e^-800)^N -> 1 - e^-1 (closed form; error ~e^-800).
    ref = Reference([0.0, 1.0], logprobs=[0.0, -800.0], normalize=True)
    b = best_of_n(ref, log_n=800.0)
    np.testing.assert_allclose(b.level_probs, [np.exp(-1), -np.expm1(-1)], rtol=1e-13)
    kl = np.exp(-1) * -1.0 + -np.expm1(-1) * (np.log(-np.expm1(-1)) + 800.0)
    assert b.kl == pytest.approx(kl, rel=1e-13)
    assert bon_curve(ref, log_n=[800.0]).kl[0] == pytest.approx(kl, rel=1e-13)
