"""Reference: validation, reward levels, units, zero-probability outcomes, samples."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from klfrontier import Reference, best_of_n, tilted


# ------------------------------------------------------------------ levels
def test_levels_group_ties_and_sort():
    ref = Reference([2.0, 0.0, 2.0, 1.0, 0.0], probs=[0.1, 0.2, 0.3, 0.15, 0.25])
    assert ref.size == 5 and ref.n_levels == 3
    assert ref.level_values.tolist() == [0.0, 1.0, 2.0]
    np.testing.assert_allclose(np.exp(ref.level_logq), [0.45, 0.15, 0.4], rtol=1e-15)
    assert ref.level_index.tolist() == [2, 0, 2, 1, 0]
    assert ref.r_max == 2.0 and ref.r_min == 0.0
    assert ref.log_p_argmax == pytest.approx(np.log(0.4), rel=1e-15)
    assert ref.kl_max == pytest.approx(-np.log(0.4), rel=1e-15)
    assert ref.mean_reward == pytest.approx(0.15 + 0.8, rel=1e-15)
    assert not ref.is_constant
    # standardised units: u = (r - r_max)/(r_max - r_min) in [-1, 0]
    assert ref.level_u.tolist() == [-1.0, -0.5, 0.0]
    assert ref.reward_scale == 2.0
    assert ref.to_reward(-0.5) == 1.0
    assert ref.lam_to_u(3.0) == 6.0 and ref.lam_from_u(6.0) == 3.0
    assert "K=5" in repr(ref)


def test_tied_level_masses_are_exact_in_log_space():
    # 10^4 outcomes of mass 1e-310 (subnormal in linear space) tied with one of mass ~1
    K = 10_000
    lp = np.full(K + 1, np.log(1e-310) + 0.0)
    lp[-1] = np.log1p(-K * 1e-310)
    r = np.zeros(K + 1)
    r[-1] = 1.0
    ref = Reference(r, logprobs=lp)
    assert ref.level_logq[0] == pytest.approx(np.log(K * 1e-310), rel=1e-14)
    # -log p(A) = -log(1 - 1e-306): relative accuracy kept although p(A) ~ 1
    assert ref.kl_max == pytest.approx(1e-306, rel=1e-12)


def test_constant_reward_and_single_outcome():
    ref = Reference([3.0, 3.0], probs=[0.4, 0.6])
    assert ref.is_constant and ref.n_levels == 1 and ref.kl_max == 0.0
    assert ref.reward_scale == 0.0 and ref.level_u.tolist() == [0.0]
    assert ref.mean_reward == 3.0
    one = Reference([-7.5], probs=[1.0])
    assert one.size == 1 and one.is_constant and one.mean_reward == -7.5
    assert one.lam_from_u(0.0) == 0.0


def test_extreme_reward_scales_are_exact():
    # u is computed as v/2 - v_top/2 over the half range: no overflow at 1e308
    ref = Reference([-1e308, 0.0, 1e308], probs=[0.25, 0.5, 0.25])
    assert ref.level_u.tolist() == [-1.0, -0.5, 0.0]
    assert ref.reward_scale == np.inf  # documented: r_max - r_min overflows
    assert ref.mean_reward == 0.0
    tiny = Reference([1e-300, 2e-300, 3e-300], probs=[0.25, 0.5, 0.25])
    assert tiny.level_u.tolist() == [-1.0, -0.5, 0.0]
    assert tiny.mean_reward == pytest.approx(2e-300, rel=1e-15)
    # scale invariance of the standardised law
    base = Reference([0.0, 1.0, 2.5], probs=[0.2, 0.3, 0.5])
    big = Reference([0.0, 1e300, 2.5e300], probs=[0.2, 0.3, 0.5])
    np.testing.assert_allclose(big.level_u, base.level_u, rtol=1e-15)
    assert big.lam_to_u(1e-300) == pytest.approx(base.lam_to_u(1.0), rel=1e-15)


# ------------------------------------------------------------- log inputs
def test_logprobs_input_matches_probs_input():
    p = np.array([0.1, 0.2, 0.3, 0.4])
    r = np.array([1.0, -1.0, 0.5, 1.0])
    a = Reference(r, probs=p)
    b = Reference(r, logprobs=np.log(p))
    np.testing.assert_allclose(a.logprobs, b.logprobs, rtol=1e-15)
    np.testing.assert_allclose(a.level_logq, b.level_logq, rtol=1e-15)
    # log-probabilities far below the float range of p are kept exactly
    lp = np.array([-2000.0, -1000.0, 0.0])
    c = Reference([0.0, 1.0, 2.0], logprobs=lp)
    assert c.logprobs[0] == -2000.0 and c.logprobs[1] == -1000.0
    assert c.kl_max == 0.0 or c.kl_max < 1e-300
    assert c.probs[0] == 0.0  # underflows in linear space, but is on the support
    assert c.level_index.tolist() == [0, 1, 2]


def test_zero_probability_outcomes_are_kept_but_carry_no_level():
    r = [5.0, 0.0, 1.0, 9.0]
    p = [0.0, 0.5, 0.5, 0.0]
    ref = Reference(r, probs=p)
    assert ref.size == 4 and ref.n_levels == 2
    assert ref.r_max == 1.0  # 5 and 9 are never generated: not in A
    assert ref.level_values.tolist() == [0.0, 1.0]
    assert ref.level_index.tolist() == [-1, 0, 1, -1]
    assert ref.probs.tolist() == [0.0, 0.5, 0.5, 0.0]
    lifted = np.exp(ref.to_outcomes(np.log([0.25, 0.75])))
    assert lifted.tolist() == [0.0, 0.25, 0.75, 0.0]
    # policies keep the zero-probability outcomes, with probability 0
    for pol in (tilted(ref, kl=0.1), best_of_n(ref, n=3)):
        assert pol.probs.shape == (4,)
        assert pol.probs[0] == 0.0 and pol.probs[3] == 0.0
        assert pol.probs.sum() == pytest.approx(1.0, rel=1e-14)
    # same via logprobs=-inf
    ref2 = Reference(r, logprobs=[-np.inf, np.log(0.5), np.log(0.5), -np.inf])
    assert ref2.level_index.tolist() == [-1, 0, 1, -1]


# ------------------------------------------------------------ normalisation
def test_rounding_level_sums_are_accepted_and_removed():
    p = np.array([0.1] * 10)  # sums to 0.9999999999999999
    ref = Reference(np.arange(10.0), probs=p)
    assert np.exp(np.logaddexp.reduce(ref.logprobs)) == pytest.approx(1.0, abs=1e-15)
    ref = Reference([0.0, 1.0], probs=[0.5, 0.5 + 5e-10])  # within SUM_TOL = 1e-9
    assert ref.probs.sum() == pytest.approx(1.0, abs=1e-15)


def test_normalize_true_rescales_exactly():
    ref = Reference([0.0, 1.0, 2.0], probs=[2.0, 3.0, 5.0], normalize=True)
    np.testing.assert_allclose(ref.probs, [0.2, 0.3, 0.5], rtol=1e-15)
    ref = Reference([0.0, 1.0], logprobs=[5.0, 5.0], normalize=True)
    np.testing.assert_allclose(ref.probs, [0.5, 0.5], rtol=1e-15)


# ---------------------------------------------------------------- from_samples
def test_from_samples_equal_weights_and_ties():
    ref = Reference.from_samples([3.0, 1.0, 3.0, 2.0])
    assert ref.size == 4 and ref.level_values.tolist() == [1.0, 2.0, 3.0]
    np.testing.assert_allclose(np.exp(ref.level_logq), [0.25, 0.25, 0.5], rtol=1e-15)
    assert ref.mean_reward == pytest.approx(2.25, rel=1e-15)


def test_from_samples_weights_are_normalised():
    ref = Reference.from_samples([0.0, 1.0, 1.0], weights=[1.0, 2.0, 1.0])
    np.testing.assert_allclose(np.exp(ref.level_logq), [0.25, 0.75], rtol=1e-15)
    ref = Reference.from_samples([0.0, 1.0], weights=[0.0, 3.0])
    assert ref.n_levels == 1 and ref.probs.tolist() == [0.0, 1.0]


def test_from_samples_single_sample():
    ref = Reference.from_samples([4.2])
    assert ref.is_constant and ref.mean_reward == 4.2


# ------------------------------------------------------------------- sampling
def test_sample_is_seeded_and_follows_p():
    ref = Reference([0.0, 1.0, 2.0, 3.0], probs=[0.1, 0.0, 0.6, 0.3])
    a = ref.sample(20_000, seed=123)
    b = ref.sample(20_000, seed=np.random.default_rng(123))
    assert np.array_equal(a, b)
    freq = np.bincount(a, minlength=4) / a.size
    assert freq[1] == 0.0
    # 5 standard errors of a binomial proportion (seeded: deterministic)
    np.testing.assert_allclose(freq, ref.probs, atol=5 * np.sqrt(0.25 / a.size))


def test_brute_force_fractions_helper_consistency():
    # the Fraction-based enumeration oracle used in test_bon sums to one
    from oracles.mp_oracle import brute_force_bon

    out = brute_force_bon([0, 1, 1], [Fraction(1, 2), Fraction(1, 3), Fraction(1, 6)], 3)
    assert sum(out) == 1


# ---------------------------------------------------------------- bad input
BAD = [
    (dict(rewards=[0.0, 1.0], probs=[0.5, np.nan]), "probs contains NaN"),
    (dict(rewards=[0.0, 1.0], probs=[0.5, np.inf]), "probs contains inf"),
    (dict(rewards=[0.0, 1.0], probs=[1.5, -0.5]), "probs contains negative"),
    (dict(rewards=[0.0, 1.0], probs=[0.5, 0.6]), "probs sum to .* not 1; pass normalize=True"),
    (dict(rewards=[0.0, 1.0], probs=[0.0, 0.0]), "probs: every outcome has probability zero"),
    (dict(rewards=[0.0, 1.0], probs=[0.0, 0.0], normalize=True), "probs: every outcome"),
    (dict(rewards=[0.0, np.nan], probs=[0.5, 0.5]), "rewards must be finite"),
    (dict(rewards=[0.0, np.inf], probs=[0.5, 0.5]), "rewards must be finite"),
    (dict(rewards=[-np.inf, 0.0], probs=[0.5, 0.5]), "rewards must be finite"),
    (dict(rewards=[0.0, 1.0, 2.0], probs=[0.5, 0.5]), "rewards and probs have different lengths"),
    (dict(rewards=[], probs=[]), "rewards is empty"),
    (dict(rewards=[0.0], probs=[]), "probs is empty"),
    (dict(rewards=[[0.0, 1.0]], probs=[0.5, 0.5]), "rewards must be one-dimensional"),
    (dict(rewards=["a", "b"], probs=[0.5, 0.5]), "rewards must be an array of real numbers"),
    (dict(rewards=[0.0, 1.0]), "exactly one of probs= or logprobs="),
    (dict(rewards=[0.0, 1.0], probs=[0.5, 0.5], logprobs=[-0.7, -0.7]), "exactly one of probs="),
    (dict(rewards=[0.0, 1.0], logprobs=[np.nan, 0.0]), "logprobs contains NaN"),
    (dict(rewards=[0.0, 1.0], logprobs=[np.inf, 0.0]), "logprobs contains \\+inf"),
    (dict(rewards=[0.0, 1.0], logprobs=[-np.inf, -np.inf]), "logprobs: every outcome"),
    (dict(rewards=[0.0, 1.0], logprobs=[0.0, 0.0]), "logprobs sum to 2, not 1; pass normalize=True"),
    (dict(rewards=[0.0, 1.0, 2.0], logprobs=[0.0, 0.0]), "rewards and logprobs have different lengths"),
]


@pytest.mark.parametrize("kwargs,match", BAD)
def test_bad_input_raises_value_error_naming_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Reference(**kwargs)


@pytest.mark.parametrize(
    "weights,match",
    [
        ([1.0, -1.0], "weights contains negative"),
        ([1.0, np.nan], "weights contains NaN"),
        ([1.0, np.inf], "weights contains inf"),
        ([0.0, 0.0], "weights: every outcome has probability zero"),
        ([1.0, 1.0, 1.0], "rewards and weights have different lengths"),
    ],
)
def test_from_samples_bad_weights_name_weights(weights, match):
    with pytest.raises(ValueError, match=match):
        Reference.from_samples([0.0, 1.0], weights=weights)


@pytest.mark.parametrize(
    "rewards,match",
    [
        ([], "rewards is empty"),
        ([0.0, np.nan], "rewards must be finite"),
        ([[1.0]], "rewards must be one-dimensional"),
    ],
)
def test_from_samples_bad_rewards(rewards, match):
    with pytest.raises(ValueError, match=match):
        Reference.from_samples(rewards)


def test_public_entry_points_reject_a_non_reference_by_name():
    import klfrontier as kf
    from klfrontier import ldp
    from klfrontier.sequences import Memoryless, bon_monte_carlo, convergence, reward_law

    calls = [
        (kf.tilted, dict(kl=0.1)),
        (kf.frontier, dict(kl=[0.1])),
        (kf.best_of_n, dict(n=2)),
        (kf.bon_curve, dict(n=[2])),
        (kf.bon_kl_beirami, dict(n=2)),
        (kf.soft_best_of_n, dict(n=2, lam=1.0)),
        (kf.optimality, dict(policy=[0.5, 0.5])),
        (kf.solve_lam_for_kl, dict(kl=0.1)),
        (kf.solve_lam_for_reward, dict(reward=1.0)),
        (kf.cgf, dict(t=1.0)),
        (ldp.rate_function, dict(x=0.5)),
        (ldp.scgf, dict(t=1.0)),
        (ldp.cumulants, dict(lam=1.0)),
        (kf.equivalence, dict(delta=0.1)),
        (reward_law, dict(length=3)),
        (bon_monte_carlo, dict(length=3, n=2)),
        (convergence, dict(delta=0.1)),
        (Memoryless, dict(length=3)),
    ]
    for fn, kw in calls:
        with pytest.raises(ValueError, match=r"^ref must be a klfrontier\.Reference, got list$"):
            fn([0.0, 1.0], **kw)


def test_copy_false_hands_the_rewards_over():
    r = np.array([0.0, 2.0, 1.0])
    kept = Reference(r, probs=[0.25, 0.25, 0.5], copy=False)
    assert np.shares_memory(kept.rewards, r) and not r.flags.writeable  # no K-sized copy
    r2 = np.array([0.0, 2.0, 1.0])
    copied = Reference(r2, probs=[0.25, 0.25, 0.5])
    assert not np.shares_memory(copied.rewards, r2) and r2.flags.writeable
    assert kept.mean_reward == copied.mean_reward == 1.0
