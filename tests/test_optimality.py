"""Near-optimality identity (theory §2): reward gap and KL to the optimal policy."""

import math

import mpmath as mp
import numpy as np
import pytest

from klfrontier import Reference, best_of_n, cgf, kl, tilted
from klfrontier.optimality import Optimality, optimality

REF3 = Reference([0.0, 1.0, 2.0], probs=[0.5, 0.3, 0.2])


def _random_refs(seed, count=40):
    """Seeded references of assorted sizes, with and without ties and zero-mass outcomes."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        k = int(rng.integers(2, 30))
        p = rng.dirichlet(np.full(k, rng.choice([0.2, 1.0, 5.0])))
        p = np.maximum(p, 1e-12)
        if i % 5 == 0:
            p[rng.integers(k)] = 0.0
        r = rng.standard_normal(k) * 10.0 ** rng.integers(-3, 4)
        if i % 2:
            r = np.round(r, 0 if abs(r).max() > 1 else 3)  # ties
        if (p > 0).sum() == 0:
            continue
        out.append(Reference(r, probs=p / p.sum()))
    return out


def _random_policy(rng, ref):
    phi = np.zeros(ref.size)
    on = ref.probs > 0
    phi[on] = rng.dirichlet(np.full(on.sum(), rng.choice([0.1, 1.0, 10.0])))
    return phi


# ---------------------------------------------------------------- oracle
def _mp_optimality(rewards, probs, phi):
    """(KL(phi||p), E_phi r, lam, R*, KL(phi||phi_lam)) at 50 digits, from the definitions."""
    with mp.workdps(50):
        r = [mp.mpf(x) for x in rewards]
        p = [mp.mpf(x) for x in probs]
        f = [mp.mpf(x) for x in phi]
        delta = mp.fsum(a * mp.log(a / b) for a, b in zip(f, p) if a > 0)
        reward = mp.fsum(a * x for a, x in zip(f, r))

        def tilt(lam):
            w = [b * mp.exp(lam * x) for b, x in zip(p, r)]
            z = mp.fsum(w)
            return [x / z for x in w]

        def d(lam):
            t = tilt(lam)
            return mp.fsum(a * mp.log(a / b) for a, b in zip(t, p)) - delta

        lam = mp.findroot(d, (mp.mpf("0.01"), mp.mpf(20)), solver="anderson")
        t = tilt(lam)
        rstar = mp.fsum(a * x for a, x in zip(t, r))
        klopt = mp.fsum(a * mp.log(a / b) for a, b in zip(f, t) if a > 0)
        return [float(x) for x in (delta, reward, lam, rstar, klopt)]


@pytest.mark.parametrize(
    "phi",
    [
        "bon4",
        [0.4, 0.1, 0.5],
        [0.0, 0.9, 0.1],
        [0.7, 0.0, 0.3],
    ],
)
def test_matches_mpmath(phi):
    if phi == "bon4":
        phi = best_of_n(REF3, n=4).probs
    phi = np.asarray(phi, dtype=float)
    opt = optimality(REF3, phi)
    delta, reward, lam, rstar, klopt = _mp_optimality([0.0, 1.0, 2.0], [0.5, 0.3, 0.2], phi)
    assert opt.kl == pytest.approx(delta, rel=1e-13)
    assert opt.reward == pytest.approx(reward, rel=1e-14)
    assert opt.lam == pytest.approx(lam, rel=1e-11)
    assert opt.frontier_reward == pytest.approx(rstar, rel=1e-13)
    assert opt.reward_gap == pytest.approx(rstar - reward, rel=1e-11)
    assert opt.kl_to_optimal == pytest.approx(klopt, rel=1e-11)
    assert not opt.saturated
    assert isinstance(opt, Optimality)


def test_doc_example_numbers():
    opt = optimality(REF3, best_of_n(REF3, n=4))
    assert opt.reward == pytest.approx(1.5279, rel=1e-14)
    assert opt.reward_gap > 0 and opt.kl_to_optimal > 0
    assert opt.kl_optimal == pytest.approx(opt.kl, rel=1e-13)


# --------------------------------------------------------------- identity
def test_identity_random_policies():
    rng = np.random.default_rng(11)
    worst = 0.0
    for ref in _random_refs(1):
        for _ in range(5):
            phi = _random_policy(rng, ref)
            opt = optimality(ref, phi)
            assert abs(opt.identity_residual) <= 1e-12, (ref, phi, opt)
            worst = max(worst, abs(opt.identity_residual))
            # the direct sum agrees with kl() too (unless phi_lam underflows in probs)
            if (opt.optimal.probs[phi > 0] > 0).all():
                assert opt.kl_to_optimal == pytest.approx(kl(phi, opt.optimal.probs), rel=1e-9, abs=1e-12)
            assert opt.reward_gap >= -1e-12 * ref.reward_scale
            assert opt.kl_to_optimal >= 0
    assert worst <= 1e-12


def test_identity_first_form_with_cgf():
    """KL(phi||phi_lam) = KL(phi||p) - lam E_phi r + Lambda(lam), in reward units."""
    rng = np.random.default_rng(3)
    for ref in _random_refs(2, count=20):
        if ref.is_constant:
            continue
        phi = _random_policy(rng, ref)
        opt = optimality(ref, phi)
        if opt.saturated:
            continue
        first = opt.kl - opt.lam * opt.reward + cgf(ref, opt.lam)
        # cancellation of lam * reward against Lambda(lam) at the reward's magnitude
        tol = 1e-12 * (1 + opt.lam * (abs(ref.r_max) + abs(ref.r_min)))
        assert first == pytest.approx(opt.kl_to_optimal, abs=tol)


def test_tilted_policies_are_optimal():
    for ref in _random_refs(4, count=20):
        if ref.is_constant:
            continue
        for frac in (1e-8, 1e-3, 0.1, 0.5, 0.9, 0.999):
            pol = tilted(ref, kl=frac * ref.kl_max)
            opt = optimality(ref, pol)
            assert not opt.saturated
            assert abs(opt.reward_gap) <= 1e-12 * ref.reward_scale
            assert abs(opt.kl_to_optimal) <= 1e-12
            assert abs(opt.identity_residual) <= 1e-12
            assert opt.lam == pytest.approx(pol.lam, rel=1e-8)


def test_best_of_n_is_strictly_suboptimal():
    refs = [
        REF3,
        Reference(np.arange(10.0), probs=np.full(10, 0.1)),
        Reference([0.0, 0.0, 1.0, 3.0, 3.0], probs=[0.3, 0.3, 0.2, 0.1, 0.1]),
    ]
    for ref in refs:
        for n in (2, 3, 10, 100.5, 1000):
            bon = best_of_n(ref, n=n)
            opt = optimality(ref, bon)
            if opt.saturated:
                continue
            # at n = 1000 BoN is within ~1e-97 of saturation: the gap is rounding-level
            assert opt.reward_gap > -1e-15 * ref.reward_scale and opt.kl_to_optimal >= 0
            if n <= 10:
                assert opt.reward_gap > 1e-4 * ref.reward_scale and opt.kl_to_optimal > 0
            assert abs(opt.identity_residual) <= 1e-12
            # BoN matches the tilted policy's reward only at a smaller lam
            # (near saturation both lams agree to the solver's resolution)
            if n <= 10:
                assert opt.lam > bon.lam_same_reward
            assert opt.bound() == pytest.approx(opt.kl_to_optimal_identity, rel=1e-10)


def test_best_of_n_one_is_the_reference():
    opt = optimality(REF3, best_of_n(REF3, n=1))
    assert opt.kl == 0 and opt.lam == 0 and opt.reward_gap == 0
    assert opt.kl_to_optimal == 0 and opt.identity_residual == 0


def test_bound_consequence_at_other_budgets():
    """KL(phi||phi_Δ) <= eps1 + lam_Δ eps2 for any budget Δ (equality with signed eps)."""
    rng = np.random.default_rng(5)
    for ref in _random_refs(6, count=10):
        if ref.is_constant:
            continue
        phi = _random_policy(rng, ref)
        me = optimality(ref, phi)
        for frac in (0.05, 0.3, 0.7):
            budget = frac * ref.kl_max
            at = optimality(ref, tilted(ref, kl=budget))  # lam_Δ, R*(Δ)
            eps1 = max(me.kl - budget, 0.0)
            eps2 = max(at.frontier_reward - me.reward, 0.0)
            direct = kl(phi, at.optimal.probs)
            assert direct <= at.bound(eps1, eps2) + 1e-9 * (1 + direct)


# ------------------------------------------------------------- saturation
REF_TIE = Reference([0.0, 1.0, 2.0, 2.0], probs=[0.4, 0.3, 0.2, 0.1])  # A = {2, 3}, p(A) = 0.3


def test_saturated_conditional_on_argmax():
    opt = optimality(REF_TIE, [0.0, 0.0, 2 / 3, 1 / 3])
    assert opt.saturated and opt.lam == math.inf
    assert opt.kl == pytest.approx(-math.log(0.3), rel=1e-15)
    assert opt.reward == 2.0 and opt.frontier_reward == 2.0 and opt.reward_gap == 0.0
    assert abs(opt.kl_to_optimal) <= 1e-15 and opt.identity_residual == pytest.approx(0, abs=1e-15)
    assert opt.bound() == 0.0


def test_saturated_supported_on_argmax():
    opt = optimality(REF_TIE, [0.0, 0.0, 0.5, 0.5])
    # KL(phi||p(.|A)) = KL(phi||p) + log p(A), finite
    want = 0.5 * math.log(0.5 / (2 / 3)) + 0.5 * math.log(0.5 / (1 / 3))
    assert opt.saturated and opt.reward_gap == 0.0
    assert opt.kl_to_optimal == pytest.approx(want, rel=1e-13)
    assert opt.kl_to_optimal == pytest.approx(opt.kl + math.log(0.3), rel=1e-13)
    assert abs(opt.identity_residual) <= 1e-15


def test_saturated_off_argmax_is_infinitely_far():
    # point mass on a low-probability outcome: KL = -log 0.01 > -log p(A)
    ref = Reference([0.0, 1.0, 2.0], probs=[0.49, 0.01, 0.5])
    opt = optimality(ref, [0.0, 1.0, 0.0])
    assert opt.saturated and opt.lam == math.inf
    assert opt.reward_gap == pytest.approx(1.0, rel=1e-15)
    assert opt.kl_to_optimal == math.inf and opt.kl_to_optimal_identity == math.inf
    assert opt.identity_residual == 0.0
    assert opt.bound() == math.inf and opt.bound(0.1, 0.0) == 0.1


def test_near_saturation_is_continuous():
    p_a = np.array([0.0, 0.0, 2 / 3, 1 / 3])
    last = None
    for eps in (1e-2, 1e-4, 1e-8, 1e-12, 1e-15):
        phi = (1 - eps) * p_a + eps * REF_TIE.probs
        opt = optimality(REF_TIE, phi / phi.sum())
        assert not opt.saturated
        assert abs(opt.identity_residual) <= 1e-12
        # gap ~ eps, lam ~ log(1/eps): KL to the optimum ~ eps log(1/eps)
        assert 0 <= opt.kl_to_optimal <= eps * (10 + 2 * math.log(1 / eps))
        if last is not None:
            assert opt.lam > last
        last = opt.lam


def test_saturation_threshold_when_p_argmax_is_near_one():
    # p(A) = 1 - 1e-13: -log p(A) ~ 1e-13 must keep its relative accuracy, and
    # p(.|A) must be recognised as saturated at exactly that KL.
    below = 1e-13
    ref = Reference([0.0, 1.0, 1.0], probs=[below, 0.5 - below / 2, 0.5 - below / 2])
    assert ref.kl_max == pytest.approx(-math.log1p(-below), rel=1e-12)
    opt = optimality(ref, [0.0, 0.5, 0.5])
    assert opt.saturated and opt.reward_gap == 0.0
    assert opt.kl == pytest.approx(ref.kl_max, rel=1e-12)
    assert abs(opt.kl_to_optimal) <= 1e-25


def test_nearly_tied_top_rewards():
    # the two top levels are 3.5e-189 apart in standardised units: lam_u ~ 1e196
    ref = Reference(
        [0.0, 0.0, 0.0, 3.512787536451397e-197, -1e-08],
        logprobs=[-1.504077396776274] * 4 + [-2.197224577336219],
    )
    for budget in (0.05, 0.5, 1.2):
        pol = tilted(ref, kl=budget)
        assert pol.kl == pytest.approx(budget, rel=1e-9)
        opt = optimality(ref, pol)
        assert abs(opt.kl_to_optimal) <= 1e-9


# ---------------------------------------------------------- other inputs
def test_constant_reward():
    ref = Reference([3.0, 3.0, 3.0], probs=[0.2, 0.3, 0.5])
    phi = np.array([0.6, 0.3, 0.1])
    opt = optimality(ref, phi)
    assert opt.lam == 0.0 and opt.reward_gap == 0.0 and not opt.saturated
    assert opt.reward == 3.0 and opt.frontier_reward == 3.0
    assert opt.kl_to_optimal == pytest.approx(kl(phi, ref.probs), rel=1e-14)
    assert opt.kl_to_optimal == pytest.approx(opt.kl, rel=1e-14)
    one = optimality(Reference([1.0], probs=[1.0]), [1.0])
    assert one.kl == 0 and one.kl_to_optimal == 0 and one.reward == 1.0


def test_affine_reward_invariance():
    """r -> a + c r leaves KLs unchanged, scales the gap by c and lam by 1/c."""
    # dyadic rewards, so that a + c r is exact for the shifts below
    base = Reference([0.0, 0.25, 1.0, 1.0, 0.75], probs=[0.3, 0.2, 0.1, 0.15, 0.25])
    phi = np.array([0.1, 0.1, 0.3, 0.2, 0.3])
    b = optimality(base, phi)
    for a, c in [(1e6, 1.0), (0.0, 1e300), (-1e300, 1e300), (0.0, 1e-300), (1.0, 2.0**-20)]:
        ref = Reference(a + c * base.rewards, probs=base.probs)
        o = optimality(ref, phi)
        assert o.kl == b.kl
        assert o.kl_to_optimal == pytest.approx(b.kl_to_optimal, rel=1e-13)
        assert o.reward_gap == pytest.approx(c * b.reward_gap, rel=1e-12)
        assert o.lam * c == pytest.approx(b.lam, rel=1e-12)
        assert abs(o.identity_residual) <= 1e-12


def test_tiny_probabilities():
    p = np.array([1e-300, 1e-200, 0.5, 0.5 - 1e-200])
    ref = Reference([5.0, 4.0, 0.0, 1.0], probs=p / p.sum())
    phi = np.array([1e-250, 0.25, 0.5, 0.25])
    phi = phi / phi.sum()
    opt = optimality(ref, phi)
    assert np.isfinite(opt.kl) and np.isfinite(opt.kl_to_optimal)
    assert abs(opt.identity_residual) <= 1e-12 * max(1.0, opt.kl_to_optimal)


def test_policy_objects_and_logprobs():
    bon = best_of_n(REF_TIE, n=5)
    a = optimality(REF_TIE, bon)
    b = optimality(REF_TIE, bon.probs)
    c = optimality(REF_TIE, policy_logprobs=bon.logprobs)
    for x in (b, c):
        assert x.kl == pytest.approx(a.kl, rel=1e-14)
        assert x.kl_to_optimal == pytest.approx(a.kl_to_optimal, rel=1e-12)
    assert set(a.to_dict()) >= {"kl", "reward_gap", "kl_to_optimal", "lam"}
    assert "Optimality(" in repr(a)


def test_zero_mass_outcomes_are_allowed_if_phi_avoids_them():
    ref = Reference([0.0, 1.0, 2.0], probs=[0.5, 0.5, 0.0])
    opt = optimality(ref, [0.25, 0.75, 0.0])
    assert opt.lam > 0 and abs(opt.kl_to_optimal) <= 1e-12  # it is a tilt
    assert opt.frontier_reward == pytest.approx(0.75, rel=1e-12)


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "phi, msg",
    [
        ([0.5, 0.5], r"policy must have shape \(3,\)"),
        ([[0.5, 0.3, 0.2]], r"policy must have shape"),
        ([0.5, np.nan, 0.5], "policy contains NaN"),
        ([0.5, np.inf, 0.5], "policy contains inf"),
        ([0.6, -0.1, 0.5], "policy contains negative"),
        ([0.5, 0.3, 0.3], "policy sum to 1.1"),
        ([0.0, 0.0, 0.0], "policy: every outcome has probability zero"),
        ([0.5, 0.3, 0.2 + 2e-9], "policy sum to"),
        (["a", "b", "c"], "policy must be an array of real numbers"),
    ],
)
def test_bad_policy(phi, msg):
    with pytest.raises(ValueError, match=msg):
        optimality(REF3, phi)


def test_rounding_in_the_sum_is_accepted():
    opt = optimality(REF3, [0.5, 0.3, 0.2 + 5e-10])
    assert opt.kl == pytest.approx(0.0, abs=1e-18)


def test_not_absolutely_continuous():
    ref = Reference([0.0, 1.0, 2.0], probs=[0.5, 0.5, 0.0])
    with pytest.raises(ValueError, match=r"policy is not absolutely continuous.*\[2\]"):
        optimality(ref, [0.25, 0.25, 0.5])
    with pytest.raises(ValueError, match="policy_logprobs is not absolutely continuous"):
        optimality(ref, policy_logprobs=np.log([0.25, 0.25, 0.5]))


def test_other_argument_errors():
    with pytest.raises(ValueError, match="exactly one of policy= or policy_logprobs="):
        optimality(REF3)
    with pytest.raises(ValueError, match="exactly one of policy= or policy_logprobs="):
        optimality(REF3, [0.5, 0.3, 0.2], policy_logprobs=np.log([0.5, 0.3, 0.2]))
    with pytest.raises(ValueError, match="policy_logprobs contains \\+inf"):
        optimality(REF3, policy_logprobs=[0.0, np.inf, -1.0])
    with pytest.raises(ValueError, match="policy is a Policy on 4 outcomes"):
        optimality(REF3, best_of_n(REF_TIE, n=2))
    opt = optimality(REF3, [0.4, 0.1, 0.5])
    with pytest.raises(ValueError, match="eps1 must be >= 0"):
        opt.bound(-1.0, 0.0)
    with pytest.raises(ValueError, match="eps2 must be >= 0"):
        opt.bound(0.0, math.nan)
