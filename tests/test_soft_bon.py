"""Exact soft best-of-N (theory §4): oracles, limits, accuracy checks, errors.

Oracles: brute-force enumeration of all K^N draws in mpmath (50 digits),
closed forms for N = 2 and 3 (sums over pairs / triples of levels), and
mpmath quadrature of the defining integral for real N.
"""

import itertools
import time

import mpmath as mp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from klfrontier import soft_bon as sb
from klfrontier.bon import best_of_n
from klfrontier.policy import Policy
from klfrontier.reference import Reference
from klfrontier.soft_bon import soft_best_of_n
from klfrontier.testing import references
from klfrontier.tilt import ConvergenceError, tilted

# ---------------------------------------------------------------- oracles


def _mp_level_law(ref, outcome_law):
    lev = [mp.mpf(0)] * ref.n_levels
    for y, j in enumerate(ref.level_index):
        if j >= 0:
            lev[j] += outcome_law[y]
    return lev


def _brute_force(rewards, probs, n, lam, dps=50):
    """Soft-BoN law by enumerating all K^n draws (exact sampling definition)."""
    with mp.workdps(dps):
        w = [mp.exp(mp.mpf(lam) * mp.mpf(r)) for r in rewards]
        p = [mp.mpf(x) for x in probs]
        out = [mp.mpf(0)] * len(rewards)
        for draw in itertools.product(range(len(rewards)), repeat=n):
            pr = mp.fprod(p[i] for i in draw)
            tot = mp.fsum(w[i] for i in draw)
            for i in draw:
                out[i] += pr * w[i] / tot
        return out


def _closed_form(logq, ell, n, dps=60):
    """Level law for n = 2 or 3: ``q_j E[n w_j / (w_j + w_K + ...)]`` over levels."""
    with mp.workdps(dps):
        q = [mp.exp(mp.mpf(float(x))) for x in logq]
        w = [mp.exp(mp.mpf(float(x))) for x in ell]
        idx = range(len(q))
        out = []
        for j in idx:
            if n == 2:
                e = mp.fsum(q[k] * 2 * w[j] / (w[j] + w[k]) for k in idx)
            else:
                e = mp.fsum(q[k] * q[m] * 3 * w[j] / (w[j] + w[k] + w[m]) for k in idx for m in idx)
            out.append(mp.log(q[j] * e))
        return out


def _mp_quad_law(ell, logq, n, dps=30):
    """Level law of the defining integral ``N q_j w_j int e^{-s w_j} M(s)^{N-1} ds``."""
    with mp.workdps(dps):
        w = [mp.exp(mp.mpf(float(x))) for x in ell]
        q = [mp.exp(mp.mpf(float(x))) for x in logq]
        n = mp.mpf(n)

        def m_of(s):
            return mp.fsum(a * mp.exp(-s * b) for a, b in zip(q, w))

        law = []
        for wj in w:
            pts = sorted({mp.mpf(0), *map(mp.mpf, range(1, 60, 3)), 1 / wj, 10 / wj, 40 / wj})
            val = mp.quad(lambda s, wj=wj: mp.exp(-s * wj) * m_of(s) ** (n - 1), pts + [mp.inf])
            law.append(n * wj * val)
        tot = mp.fsum(a * b for a, b in zip(law, q))
        return [mp.log(x / tot) + mp.log(a) for x, a in zip(law, q)]


def _max_rel(level_logprobs, mp_logs):
    return max(float(abs(mp.expm1(mp.mpf(float(a)) - b))) for a, b in zip(level_logprobs, mp_logs))


# ---------------------------------------------------------- brute force

CASES = [
    ([0.0, 1.0, 2.0], [0.5, 0.3, 0.2]),
    ([0.0, 1.0, 1.0, 3.0], [0.1, 0.2, 0.3, 0.4]),  # tie in the middle
    ([-1.0, 0.0, 5.0, 5.0], [0.25, 0.25, 0.25, 0.25]),  # tie at the top
    ([0.0, 0.5], [0.99, 0.01]),
]


@pytest.mark.parametrize("rewards, probs", CASES)
@pytest.mark.parametrize("n", [1, 2, 3, 5])
@pytest.mark.parametrize("lam", [0.3, 1.5, 4.0, 20.0])  # both engines (a <= 2, a > 2)
def test_matches_brute_force_enumeration(rewards, probs, n, lam):
    ref = Reference(rewards, probs=probs)
    soft = soft_best_of_n(ref, n=n, lam=lam)
    exact = _mp_level_law(ref, _brute_force(rewards, probs, n, lam))
    got = soft.level_probs
    # rtol 1e-10 on every level (observed: < 2e-15)
    for a, b in zip(got, exact):
        assert abs(mp.mpf(float(a)) - b) <= 1e-10 * b
    q = _mp_level_law(ref, [mp.mpf(x) for x in probs])
    kl = mp.fsum(b * mp.log(b / a) for b, a in zip(exact, q))
    assert soft.kl == pytest.approx(float(kl), rel=1e-10, abs=1e-15)
    rw = mp.fsum(b * mp.mpf(v) for b, v in zip(exact, ref.level_values))
    assert soft.reward == pytest.approx(float(rw), rel=1e-12)
    assert soft.sum_error <= 1e-13


def test_brute_force_accuracy_summary():
    """Print the worst relative error against enumeration over all CASES (not asserted)."""
    worst = 0.0
    for rewards, probs in CASES:
        ref = Reference(rewards, probs=probs)
        for n, lam in itertools.product([2, 3, 5], [0.3, 1.5, 4.0, 20.0]):
            exact = _mp_level_law(ref, _brute_force(rewards, probs, n, lam))
            got = soft_best_of_n(ref, n=n, lam=lam).level_probs
            worst = max(worst, max(float(abs(mp.mpf(float(a)) / b - 1)) for a, b in zip(got, exact)))
    print(f"\nsoft BoN vs brute force: max relative error {worst:.2e}")
    assert worst < 1e-10


# ------------------------------------------------------------ closed forms


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("a", [0.7, 5.0, 60.0, 700.0])
def test_extreme_masses_and_weights_against_closed_form(n, a):
    # masses from 1e-300 to ~1, weights from e^-a to 1, a tie: every level exact
    rewards = [0.0, 0.05, 0.3, 0.3, 0.31, 0.9, 1.0]
    probs = [1e-300, 0.2, 1e-12, 0.3, 1e-5, 0.5 - 1e-5 - 1e-12, 1e-300]
    ref = Reference(rewards, probs=probs, normalize=True)
    ell = a * ref.level_u
    soft = soft_best_of_n(ref, n=n, lam=ref.lam_from_u(a))
    exact = _closed_form(ref.level_logq, ell, n)
    assert np.isfinite(soft.level_logprobs).all()
    # rtol 1e-10 per level, including levels of probability ~1e-600
    assert _max_rel(soft.level_logprobs, exact) < 1e-10


@pytest.mark.parametrize("scale", [1e-300, 1e-8, 1e8, 1e300])
def test_reward_scale_is_irrelevant(scale):
    base = Reference([-1.0, 0.0, 0.5, 1.0], probs=[0.1, 0.4, 0.2, 0.3])
    scaled = Reference(np.array([-1.0, 0.0, 0.5, 1.0]) * scale, probs=[0.1, 0.4, 0.2, 0.3])
    for lam in (0.4, 3.0):
        a = soft_best_of_n(base, n=6, lam=lam)
        b = soft_best_of_n(scaled, n=6, lam=lam / scale)
        np.testing.assert_allclose(b.level_probs, a.level_probs, rtol=1e-13)
        assert b.kl == pytest.approx(a.kl, rel=1e-12)


# ------------------------------------------------------------- real N


@pytest.mark.parametrize("n", [1.5, 2.5, 7.3])
@pytest.mark.parametrize("a", [1.0, 6.0])
def test_real_n_matches_mpmath_quadrature(n, a):
    ref = Reference([0.0, 0.3, 1.0], probs=[0.6, 0.3, 0.1])
    soft = soft_best_of_n(ref, n=n, lam=ref.lam_from_u(a))
    exact = _mp_quad_law(a * ref.level_u, ref.level_logq, n)
    assert _max_rel(soft.level_logprobs, exact) < 1e-10


def test_real_n_near_a_crossing_is_refined():
    # A heavy high level over a 1e-12 low level: for non-integer N the zeros of
    # M sit ~pi/log(1e12) from the real axis and a single grid of step 0.2
    # misses the low level by ~4e-5 while sum(pi) is still 1 to 1e-11.
    ref = Reference([0.0, 1.0], probs=[1e-12, 1 - 1e-12])
    ell, logq = 6.0 * ref.level_u, ref.level_logq
    single = sb._soft_bon_log_ratio(ell, logq, 1.1)
    soft = soft_best_of_n(ref, n=1.1, lam=ref.lam_from_u(6.0))
    exact = _mp_quad_law(ell, logq, 1.1)
    assert _max_rel(logq + single - single[-1], exact) > 1e-6  # the single grid is off
    assert _max_rel(soft.level_logprobs, exact) < 1e-10


def test_real_n_lies_between_integers():
    ref = Reference([0.0, 1.0, 2.0, 2.0, 3.5], probs=[0.3, 0.25, 0.2, 0.15, 0.1])
    for lam in (0.2, 1.0, 5.0):
        s2, s25, s3 = (soft_best_of_n(ref, n=n, lam=lam) for n in (2, 2.5, 3))
        assert np.all(s25.level_probs >= 0)
        assert s25.level_probs.sum() == pytest.approx(1.0, abs=1e-14)
        assert s25.sum_error <= 1e-10
        assert s2.reward < s25.reward < s3.reward
        assert s2.kl < s25.kl < s3.kl


# ------------------------------------------------------------------ limits


def test_n_one_and_lam_zero_give_p_exactly():
    ref = Reference([0.0, 1.0, 1.0, 4.0], probs=[0.1, 0.2, 0.3, 0.4])
    for n, lam in [(1, 3.0), (1.0, 0.0), (7, 0.0), (2.5, 0.0)]:
        s = soft_best_of_n(ref, n=n, lam=lam)
        np.testing.assert_array_equal(s.level_logprobs, ref.level_logq)
        assert s.kl == 0.0 and s.sum_error == 0.0
        assert s.reward == pytest.approx(ref.mean_reward, rel=1e-15)


def test_continuous_at_n_one_and_lam_zero():
    ref = Reference([0.0, 1.0, 2.0], probs=[0.5, 0.3, 0.2])
    for n, lam in [(1 + 1e-9, 3.0), (4, 1e-10)]:
        s = soft_best_of_n(ref, n=n, lam=lam)
        t = s.level_logprobs - ref.level_logq
        assert 0 < np.abs(t).max() < 1e-8
        assert 0 < s.kl < 1e-16


@pytest.mark.parametrize("lam", [1e-8, 1e-5])
def test_small_lam_kl_keeps_relative_accuracy(lam):
    # KL ~ lam^2: computed from the exact log-ratios, not from log pi - log p
    rewards, probs = [0.0, 1.0, 2.0], [0.5, 0.3, 0.2]
    ref = Reference(rewards, probs=probs)
    exact = _brute_force(rewards, probs, 3, lam)
    kl = mp.fsum(b * mp.log(b / mp.mpf(p)) for b, p in zip(exact, probs))
    assert soft_best_of_n(ref, n=3, lam=lam).kl == pytest.approx(float(kl), rel=1e-10)


@pytest.mark.parametrize("lam_u", [200.0, 1e3])
@pytest.mark.parametrize("n", [2, 3, 5, 8.5])
def test_large_lam_tends_to_best_of_n(lam_u, n):
    ref = Reference([0.0, 1.0, 2.0, 2.0, 4.0], probs=[0.3, 0.2, 0.2, 0.1, 0.2])
    soft = soft_best_of_n(ref, n=n, lam=ref.lam_from_u(lam_u))
    bon = best_of_n(ref, n=n)
    # neighbouring levels differ by >= 0.25 in u: weights ratios <= e^{-50}
    np.testing.assert_allclose(soft.level_probs, bon.level_probs, rtol=1e-12)
    assert soft.kl == pytest.approx(bon.kl, rel=1e-12)


def test_lam_inf_is_best_of_n():
    ref = Reference([0.0, 1.0, 2.0, 2.0, 4.0], probs=[0.3, 0.2, 0.2, 0.1, 0.2])
    s = soft_best_of_n(ref, n=3.5, lam=np.inf)
    np.testing.assert_array_equal(s.level_logprobs, best_of_n(ref, n=3.5).level_logprobs)
    assert (s.n, s.lam, s.sum_error) == (3.5, np.inf, 0.0)


@pytest.mark.parametrize("lam", [0.5, 3.0])
def test_large_n_tends_to_tilted(lam):
    ref = Reference([0.0, 1.0, 2.0], probs=[0.5, 0.3, 0.2])
    phi = tilted(ref, lam=lam).level_probs
    scaled = []
    for n in (1e6, 1e8):
        s = soft_best_of_n(ref, n=n, lam=lam)
        err = np.abs(s.level_probs / phi - 1).max()
        assert err <= 10.0 / n
        scaled.append(n * err)
    # the error is C/N with the same C at N = 1e6 and 1e8: the O(1/N) term is
    # resolved to ~1e-8 relative at N = 1e8 (law accurate to ~1e-15)
    assert scaled[1] == pytest.approx(scaled[0], rel=1e-4)
    s = soft_best_of_n(ref, n=np.inf, lam=lam)
    np.testing.assert_array_equal(s.level_logprobs, tilted(ref, lam=lam).level_logprobs)


@pytest.mark.parametrize("a", [0.01, 0.5, 2.0])  # the deviation form serves a <= 2
@pytest.mark.parametrize("n", [1 + 1e-6, 2, 7.5, 1e4])
def test_both_engines_agree(a, n):
    # the deviation form (used for a <= 2) and the direct form compute the same law
    rng = np.random.default_rng(3)
    ref = Reference(rng.random(50), probs=rng.dirichlet(np.ones(50)))
    ell, logq = a * ref.level_u, ref.level_logq
    t_dev, _, _ = sb._trapezoid(sb._soft_bon_small_a, ell, logq, n)
    t_dir, _, _ = sb._trapezoid(sb._soft_bon_log_ratio, ell, logq, n)
    # absolute in log pi (the direct form is the less accurate one as N -> 1)
    assert np.abs(t_dev - t_dir).max() < 1e-13


def test_continuous_across_the_engine_switch():
    ref = Reference([0.0, 0.2, 0.7, 1.0], probs=[0.3, 0.3, 0.2, 0.2])
    for n in (2, 7.5):
        lo = soft_best_of_n(ref, n=n, lam=sb._SMALL_A * (1 - 1e-15))
        hi = soft_best_of_n(ref, n=n, lam=sb._SMALL_A * (1 + 1e-15))
        np.testing.assert_allclose(hi.level_probs, lo.level_probs, rtol=1e-13)
        assert hi.kl == pytest.approx(lo.kl, rel=1e-13)


# ------------------------------------------------------------- sum pi = 1


def test_sum_is_one_on_1e5_distinct_levels_and_timing():
    rng = np.random.default_rng(20240401)
    L = 10**5
    ref = Reference(rng.random(L), probs=rng.dirichlet(np.ones(L)))
    assert ref.n_levels == L
    soft_best_of_n(ref, n=8, lam=2.0)  # warm-up
    t0 = time.perf_counter()
    soft = soft_best_of_n(ref, n=8, lam=2.0)
    elapsed = time.perf_counter() - t0
    print(
        f"\nsoft BoN, 1e5 distinct levels, n=8, lam=2: {elapsed:.3f} s, |sum pi - 1| = {soft.sum_error:.1e}"
    )
    assert soft.sum_error <= 1e-10
    t = soft.level_logprobs - ref.level_logq
    assert np.all(np.diff(t) >= -1e-13)  # pi/p increases with the reward
    for n, lam in [(2.5, 2.0), (8, 1000.0)]:
        s = soft_best_of_n(ref, n=n, lam=lam)
        assert s.sum_error <= 1e-10
        assert np.isfinite(s.level_logprobs).all()


@pytest.mark.parametrize("lam_u", [700.0, 1000.0])
@pytest.mark.parametrize("n", [2, 8, 1e3, 1e8])
def test_sum_is_one_when_weights_span_e700(lam_u, n):
    rng = np.random.default_rng(7)
    ref = Reference(np.linspace(0.0, 1.0, 200), probs=rng.dirichlet(np.ones(200)))
    soft = soft_best_of_n(ref, n=n, lam=ref.lam_from_u(lam_u))
    assert soft.sum_error <= 1e-10
    assert np.isfinite(soft.level_logprobs).all()
    t = soft.level_logprobs - ref.level_logq
    assert np.all(np.diff(t) >= -1e-12 * (1 + np.abs(t[:-1])))


# ------------------------------------------------------------- properties


@given(
    references(max_size=8),
    st.sampled_from([1.5, 2, 3, 16, 1e4]),
    st.sampled_from([1e-6, 0.1, 1.0, 3.0, 30.0, 300.0]),
)
def test_properties(ref, n, lam_u):
    lam = ref.lam_from_u(lam_u) if not ref.is_constant else 1.0
    soft = soft_best_of_n(ref, n=n, lam=lam)
    assert soft.sum_error <= 1e-10
    t = soft.level_logprobs - ref.level_logq
    assert np.all(np.diff(t) >= -1e-12 * (1 + np.abs(t[:-1])))  # ratio increases with r
    assert soft.kl >= 0
    u = soft.level_probs @ ref.level_u
    bon_u = best_of_n(ref, n=n).level_probs @ ref.level_u
    # a weighted average of the draws lies between their mean and their max
    assert ref.mean_u - 1e-13 <= u <= bon_u + 1e-13


# ------------------------------------------------------------ the object


def test_policy_object():
    ref = Reference([0.0, 2.0, 1.0, 2.0], probs=[0.4, 0.1, 0.3, 0.2])
    s = soft_best_of_n(ref, n=4, lam=1.25)
    assert isinstance(s, Policy) and s.method == "soft_best_of_n"
    assert {"n", "log_n", "lam", "sum_error"} <= set(s.to_dict())
    assert (s.n, s.lam) == (4.0, 1.25)
    # tied outcomes share their level's mass in proportion to p
    assert s.probs[3] / s.probs[1] == pytest.approx(2.0, rel=1e-14)
    assert s.probs.sum() == pytest.approx(1.0, abs=1e-15)
    assert 0.5 < s.win_rate < 1.0


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n": float("nan"), "lam": 1.0}, "n is NaN"),
        ({"n": 0.5, "lam": 1.0}, "n must be >= 1"),
        ({"n": -3, "lam": 1.0}, "n must be >= 1"),
        ({"n": [2, 3], "lam": 1.0}, "n must be a scalar"),
        ({"n": None, "lam": 1.0}, "give exactly one of n= or log_n="),
        ({"n": "many", "lam": 1.0}, "n must be a real scalar"),
        ({"n": 2, "lam": float("nan")}, "lam is NaN"),
        ({"n": 2, "lam": -0.1}, "lam must be >= 0"),
        ({"n": 2, "lam": -np.inf}, "lam must be >= 0"),
        ({"n": 2, "lam": np.array([1.0])}, "lam must be a scalar"),
    ],
)
def test_bad_input(kwargs, match):
    ref = Reference([0.0, 1.0], probs=[0.5, 0.5])
    with pytest.raises(ValueError, match=match):
        soft_best_of_n(ref, **kwargs)


def test_lam_too_large_for_the_grid():
    # two levels 1e-9 apart: lam * gap = 0.01, not the best-of-N limit, and a = 1e7
    ref = Reference([0.0, 1e-9, 1.0], probs=[0.4, 0.3, 0.3])
    with pytest.raises(ValueError, match="lam is too large.*not certified equal to best-of-N"):
        soft_best_of_n(ref, n=2, lam=1e7)
    with pytest.raises(ValueError, match="lam is too large"):
        soft_best_of_n(ref, n=2.5, lam=1e7)  # real n: never certified


@pytest.mark.parametrize("n", [2, 3, 4])
def test_huge_lam_on_separated_levels_is_certified_best_of_n(n):
    """a = 1e7 (beyond the grid) on levels 0.25 apart: the law against brute force."""
    rewards, probs = [0.0, 1.0, 2.0, 4.0], [0.3, 0.2, 0.3, 0.2]
    ref = Reference(rewards, probs=probs)
    lam = 1e7 / 4.0
    assert sb._bon_limit_certified(ref, ref.lam_to_u(lam), n)
    soft = soft_best_of_n(ref, n=n, lam=lam)
    assert soft.sum_error == 0.0
    with mp.workdps(60):
        exact = _brute_force(rewards, probs, n, lam, dps=60)
        for got, want in zip(soft.level_probs, exact):
            assert abs(got - float(want)) <= 1e-15 * float(want)
    np.testing.assert_array_equal(soft.level_logprobs, best_of_n(ref, n=n).level_logprobs)


@pytest.mark.parametrize("n", [2, 5])
def test_certified_limit_agrees_with_the_quadrature(n):
    """Where both run (lam gaps ~ 60-100), the certified law equals the quadrature's."""
    ref = Reference([0.0, 1.0, 2.0, 3.0], probs=[0.4, 0.3, 0.2, 0.1])
    lam = 100.0
    lam_u = ref.lam_to_u(lam)
    assert sb._bon_limit_certified(ref, lam_u, n)
    t, _, _ = sb._trapezoid(sb._soft_bon_log_ratio, lam_u * ref.level_u, ref.level_logq, float(n))
    quad = ref.level_logq + t - np.log(np.exp(ref.level_logq) @ np.exp(t))
    np.testing.assert_allclose(soft_best_of_n(ref, n=n, lam=lam).level_logprobs, quad, rtol=0, atol=1e-13)
    # and a gap too narrow (lam = 30: e^-30 is not below one ulp) is not certified
    assert not sb._bon_limit_certified(ref, ref.lam_to_u(30.0), n)


def test_convergence_error_carries_the_partial_policy(monkeypatch):
    ref = Reference([0.0, 0.3, 1.0], probs=[0.6, 0.3, 0.1])
    monkeypatch.setattr(sb, "_H", 3.0)  # far too coarse
    with pytest.raises(ConvergenceError, match="sum pi - 1") as info:
        soft_best_of_n(ref, n=3, lam=8.0)
    part = info.value.partial
    assert isinstance(part, Policy) and part.sum_error > 1e-8
    assert np.exp(part.level_logprobs).sum() == pytest.approx(1.0, abs=1e-14)


def test_refinement_failure_raises(monkeypatch):
    ref = Reference([0.0, 1.0], probs=[1e-12, 1 - 1e-12])
    monkeypatch.setattr(sb, "_MAX_GRIDS", 2)
    with pytest.raises(ConvergenceError, match="non-integer n") as info:
        soft_best_of_n(ref, n=1.1, lam=6.0)
    assert isinstance(info.value.partial, Policy)


# ------------------------------------------------- rewards beyond an index
@pytest.mark.parametrize("top", [1e30, 1.7e308])
def test_soft_best_of_n_huge_reward_range_is_a_clear_error_not_an_index_error(top):
    # lam (r_max - r_min) = 1e30 does not fit an intp; 1.7e308 makes the node count inf
    ref = Reference([0.0, top], probs=[0.5, 0.5])
    with pytest.raises(ValueError, match="lam is too large for the exact quadrature"):
        soft_best_of_n(ref, n=2.5, lam=1.0)
    ref = Reference([0.0, 1e30], probs=[0.5, 0.5])
    # integer n: the best-of-N limit is certified, and exact (levels 0 and 1e30)
    s = soft_best_of_n(ref, n=2, lam=1.0)
    assert s.level_probs.tolist() == [0.25, 0.75] and s.reward == pytest.approx(7.5e29, rel=1e-15)


def test_cli_soft_bon_huge_rewards():
    from typer.testing import CliRunner

    from klfrontier.cli import app

    res = CliRunner().invoke(app, ["soft-bon", "--rewards", "0,1e30", "--probs", ".5,.5"])
    assert res.exit_code == 0, res.output
    assert "λ = 1" in res.output and "θ" not in res.output  # one name: lam / λ
    bad = CliRunner().invoke(app, ["soft-bon", "--rewards", "0,1e30", "--probs", ".5,.5", "--n", "2.5"])
    assert bad.exit_code == 2 and "lam is too large" in bad.output
    assert "Traceback" not in bad.output and "IndexError" not in bad.output
