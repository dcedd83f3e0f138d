"""Regressions for the bugs ``benchmarks/sweep_numerics.py`` found, each against an oracle.

Every case is the sweep's reproducer (rewards near ±float max or near 1e-300,
one outcome of probability 1 with the rest at 1e-300, masses spanning 1e-26..1),
with warnings turned into errors, as the sweep runs them.  The oracle is
mpmath at 400 digits (enough for masses 1 - 1e-300) or a closed form.
"""

import warnings

import mpmath
import numpy as np
import pytest

import klfrontier as kf
from klfrontier.ldp import to_reward_power as _to_reward_power

E308 = [
    -1.5670880011735717e308,
    -1.0486618437147920e308,
    7.1163163937859037e307,
    -1.3365001710199434e308,
    7.8999991324450462e307,
    -1.5950732465620486e308,
]
TINY = [
    -6.442326320899925e-301,
    5.141293168242116e-301,
    3.516327807265387e-301,
    3.768783219063223e-301,
    2.040224902473660e-301,
    5.731846950143172e-302,
    6.378385408297424e-301,
    -1.869253295250910e-301,
]
DOMINANT = [1.0] + [1e-300] * 7  # one outcome of probability ~1, the rest at 1e-300


@pytest.fixture(autouse=True)
def _warnings_are_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def _mp_tilted(rewards, probs, lam, dps=400):
    """(E_φ r, Λ(λ), KL(φ_λ||p)) at ``dps`` digits, from the outcome arrays."""
    with mpmath.workdps(dps):
        p = [mpmath.mpf(float(x)) for x in probs]
        tot = mpmath.fsum(p)
        p = [x / tot for x in p]
        r = [mpmath.mpf(float(x)) for x in rewards]
        lam = mpmath.mpf(float(lam))
        w = [q * mpmath.exp(lam * x) for q, x in zip(p, r)]
        z = mpmath.fsum(w)
        mean = mpmath.fsum(wi * x for wi, x in zip(w, r)) / z
        cgf = mpmath.log(z)
        return mean, cgf, lam * mean - cgf


def _rel(got, want):
    want = mpmath.mpf(want)
    return float(abs(mpmath.mpf(float(got)) - want) / abs(want))


# ------------------------------------------------------------------- rewards near ±float max
def test_tilted_reward_when_the_range_overflows():
    """The gain was multiplied by reward_scale = inf: every tilted policy reported r_max."""
    ref = kf.Reference(E308, probs=np.ones(6), normalize=True)
    assert ref.reward_scale == np.inf  # r_max - r_min > float max
    for frac in (1e-9, 0.1, 0.5, 0.9):
        pol = kf.tilted(ref, kl=frac * ref.kl_max)
        mean, _, _ = _mp_tilted(E308, np.ones(6), pol.lam)
        spread = 3.2e308  # r_max - r_min
        assert abs(float(mpmath.mpf(pol.reward) - mean)) / spread < 1e-10
        assert pol.reward == pytest.approx(float(kf.frontier(ref, [frac * ref.kl_max]).reward[0]), rel=1e-12)
        assert np.isfinite(pol.regularized_value)  # r_max + Λ_u/λ overflowed


def test_solve_lam_for_reward_when_the_range_overflows():
    ref = kf.Reference(E308, probs=np.ones(6), normalize=True)
    pol = kf.tilted(ref, kl=0.3 * ref.kl_max)
    lam = kf.solve_lam_for_reward(ref, pol.reward)
    assert lam == pytest.approx(pol.lam, rel=1e-9)  # was inf: (R - r_max) / inf = 0


def test_to_reward_and_cgf_near_float_max():
    ref = kf.Reference(
        [
            -1.1461162654107838e308,
            1.0419695657227363e308,
            -1.5229769890248493e308,
            -1.0832489185165896e308,
            -2.9080205659918067e307,
        ],
        probs=np.ones(5),
        normalize=True,
    )
    assert ref.to_reward(-1.0) == ref.r_min and ref.to_reward(0.0) == ref.r_max  # 2 u h overflowed
    lam = kf.equivalence(ref, 0.3 * ref.kl_max).lam
    _, want, _ = _mp_tilted(ref.rewards, ref.probs, lam - 2.0 / 3.2e308)
    assert _rel(kf.cgf(ref, lam - 2.0 / 3.2e308), want) < 1e-10


def test_variance_past_the_float_range_is_inf_not_an_error():
    """σ² of rewards spread over 1e300 is 1e600: equivalence raised OverflowError."""
    rewards = [3.394506683301824e299, -6.486964203928201e299, -7.329916681384153e299]
    ref = kf.Reference(rewards, probs=[3.86e-256, 8.73e-189, 2.28e-233], normalize=True)
    eq = kf.equivalence(ref, 0.3 * ref.kl_max)
    assert (
        eq.sigma2 == np.inf
        and np.isfinite(eq.x_star)
        and eq.I0_at_x_star == pytest.approx(eq.delta, rel=1e-8)
    )
    k = kf.cumulants(ref, eq.lam)
    assert np.isfinite(k[0]) and k[1] == np.inf and not np.isnan(k).any()
    assert _to_reward_power(0.0, np.inf, 2) == 0.0 and _to_reward_power(-1.0, 1e300, 3) == -np.inf


def test_gap_prediction_past_float_max_is_inf_without_a_warning():
    ref = kf.Reference(
        [6.8259815681538281e307, -9.1487871363665984e307, -7.3310290142303755e307, -1.5134389670383007e307],
        probs=[2.708e-129, 1.687e-207, 7.809e-193, 1.545e-143],
        normalize=True,
    )
    gp = kf.equivalence(ref, 0.3 * ref.kl_max).gap_prediction([1, 10, 1000])
    assert not np.isnan(gp).any()  # ±inf (documented), no warning


def test_bon_monte_carlo_spread_of_rewards_near_1e300():
    ref = kf.Reference(
        [3.394506683301824e299, -6.486964203928201e299, -7.329916681384153e299], probs=[0.2, 0.3, 0.5]
    )
    mc = kf.bon_monte_carlo(ref, 2, n=4, size=400, seed=0)
    assert np.isfinite(mc.mean) and np.isfinite(mc.stderr) and mc.stderr > 0  # the square overflowed
    exact = kf.Memoryless(ref, 2).best_of_n(n=4).reward
    assert abs(mc.mean - exact) < 5 * mc.stderr


# ------------------------------------------------------------------- one outcome of mass ~1
@pytest.mark.parametrize("scale", [1.0, 1e301])
def test_solve_lam_for_reward_with_a_dominant_outcome(scale):
    """The reward solver stopped where g = 1e-300 (its floor eps/g was taken at the iterate)."""
    rewards = np.array(TINY) * scale
    ref = kf.Reference(rewards, probs=DOMINANT, normalize=True)
    for frac in (1e-9, 0.1, 0.5, 0.9):
        pol = kf.tilted(ref, kl=frac * ref.kl_max)
        lam = kf.solve_lam_for_reward(ref, pol.reward)
        assert lam == pytest.approx(pol.lam, rel=1e-8)
        back = kf.tilted(ref, lam=lam).reward
        assert abs(back - pol.reward) <= 1e-10 * ref.reward_scale


def test_cgf_does_not_cancel_when_the_law_stays_put():
    """Λ = t r_c + log E e^{t(r - r_c)} at the top cancelled to 3e-5 relative at Λ = 1e-9."""
    rewards = [3.0, 0.0, 2.0, -2.0, 2.0, -1.0, 0.0, 2.0, 0.0]
    probs = [1e-300, 1.0] + [1e-300] * 7
    ref = kf.Reference(rewards, probs=probs, normalize=True)
    for frac in (1e-9, 1e-3, 0.1, 0.9):
        pol = kf.tilted(ref, kl=frac * ref.kl_max)
        mean, want, kl = _mp_tilted(rewards, probs, pol.lam)
        assert _rel(kf.cgf(ref, pol.lam), want) < 1e-12
        assert _rel(pol.lam * pol.reward - kf.cgf(ref, pol.lam), kl) < 1e-9  # KL = λR - Λ(λ)


def test_tied_top_level_mass_near_one():
    """A tied level of mass 1 - 1.7e-81 had log q = -1.8e-28 (a difference of O(eps) terms)."""
    rewards = [7.0, 0.0, 0.0, 0.0, 0.0, 7.0, 0.0, 0.0, 0.0, 0.5, 2.0, 0.0, 7.0]
    probs = [
        6.0704487321099134e-179,
        7.2460722996068411e-133,
        9.4596956013346770e-285,
        1.8102738569897910e-165,
        7.3037181806785603e-296,
        2.3452167395931742e-002,
        1.7916522634632311e-173,
        6.1212039178078482e-168,
        1.2536374525933015e-163,
        4.0321458624960203e-083,
        1.4580008132797666e-245,
        2.1492593390079559e-085,
        1.2030245827595689e-015,
    ]
    ref = kf.Reference(rewards, probs=probs, normalize=True)
    with mpmath.workdps(400):
        p = [mpmath.mpf(x) for x in probs]
        want = mpmath.log(mpmath.fsum(x for x, r in zip(p, rewards) if r == 7.0) / mpmath.fsum(p))
    assert _rel(ref.level_logq[-1], want) < 1e-12 and _rel(-ref.kl_max, want) < 1e-12
    for frac in (1e-3, 0.5, 0.999999):  # budgets of 1e-84: were missed by 1e4
        assert kf.tilted(ref, kl=frac * ref.kl_max).kl == pytest.approx(frac * ref.kl_max, rel=1e-9)
    assert kf.rate_function(ref, [7.0])[0] == pytest.approx(ref.kl_max, rel=1e-12)


def test_tied_top_level_at_1_minus_1e_297():
    rewards = [5.0, 5.0, 4.0, 3.0]
    probs = [1.0, 1.6e-298, 2.0e-298, 1.5e-298]
    ref = kf.Reference(rewards, probs=probs, normalize=True)
    with mpmath.workdps(400):
        p = [mpmath.mpf(x) for x in probs]
        want = mpmath.log((p[0] + p[1]) / mpmath.fsum(p))  # -3.5e-298
    assert _rel(ref.level_logq[-1], want) < 1e-12  # log(1 + 1.6e-298) rounded to 0
    assert kf.rate_function(ref, [5.0])[0] == pytest.approx(-float(want), rel=1e-12)


def test_gap_prediction_has_no_warning_on_dominant_ties():
    ref = kf.Reference(
        [2.0, 2.0, 2.0, 0.0, 0.0, 0.0, 2.0, 0.0, 2.0],
        probs=[1e-300] * 4 + [1.0] + [1e-300] * 4,
        normalize=True,
    )
    for frac in (0.01, 0.3, 0.9):
        gp = kf.equivalence(ref, frac * ref.kl_max).gap_prediction([1, 10, 1000])
        assert np.isfinite(gp).all()  # 0 · log 0 in the Gumbel entropy warned


# ------------------------------------------------------------------- the rate function's solver
def test_rate_function_solver_converges_on_a_step_like_mean():
    """Masses 1 .. 1e-26: Newton hopped inside g's rounding band until it ran out of iterations."""
    rewards = [
        -0.06435930214026199,
        0.7191368776906355,
        -0.24321983652004797,
        0.8661128410916351,
        -0.41662934016206604,
        -0.4348886035991045,
        -0.9002446348573402,
        -0.557099139074445,
    ]
    probs = [
        9.9998139027236577e-01,
        1.8572841176216499e-05,
        3.6879931843994638e-08,
        6.5218844955099556e-12,
        3.4646168620545776e-15,
        9.0565267222921378e-16,
        2.8198270865479376e-20,
        1.8764315975233216e-26,
    ]
    ref = kf.Reference(rewards, probs=probs, normalize=True)
    xs = np.linspace(ref.r_min, ref.r_max, 201)[1:-1]
    assert np.isfinite(kf.rate_function(ref, xs)).all()  # ConvergenceError before
    x = -0.15837449495877054
    with mpmath.workdps(60):
        p = [mpmath.mpf(v) for v in probs]
        tot = mpmath.fsum(p)
        r = [mpmath.mpf(v) for v in rewards]

        def lam_(t):
            return mpmath.log(mpmath.fsum(q * mpmath.exp(t * v) for q, v in zip(p, r)) / tot)

        def mean_(t):
            return mpmath.fsum(q * mpmath.exp(t * v) * v for q, v in zip(p, r)) / tot / mpmath.exp(lam_(t))

        t = mpmath.findroot(lambda t: mean_(t) - x, (-70, -30), solver="anderson")
        want = t * x - lam_(t)
    assert _rel(kf.rate_function(ref, [x])[0], want) < 1e-12


# ------------------------------------------------ sequence BoN (convergence) against enumerated types
def _mp_sequence_bon(rewards, probs, m, log_n, dps=60):
    """``(E_{π_N} S_m, KL(π_N || p^m), R*(δ))`` at ``dps`` digits, ``N = e^{log_n}``, ``δ = log_n / m``.

    The law of ``S_m`` from the types of ``m`` draws (multinomial masses);
    ``π_N(s) = F(s)^N - F(s-)^N``; ``R*(δ) = E_{φ_λ} r`` with ``KL(φ_λ || p) = δ``.
    """
    from itertools import combinations_with_replacement

    with mpmath.workdps(dps):
        p = [mpmath.mpf(float(x)) for x in probs]
        tot = mpmath.fsum(p)
        p = [x / tot for x in p]
        r = [mpmath.mpf(float(x)) for x in rewards]
        law = {}
        for combo in combinations_with_replacement(range(len(r)), m):
            counts = [combo.count(j) for j in range(len(r))]
            coef = mpmath.factorial(m)
            mass = mpmath.mpf(1)
            for j, c in enumerate(counts):
                coef /= mpmath.factorial(c)
                mass *= p[j] ** c
            s = mpmath.fsum(c * r[j] for j, c in enumerate(counts))
            law[s] = law.get(s, 0) + coef * mass
        n = mpmath.exp(mpmath.mpf(float(log_n)))
        cdf, reward, kl = mpmath.mpf(0), mpmath.mpf(0), mpmath.mpf(0)
        for s in sorted(law):
            q = law[s]
            pi = (cdf + q) ** n - cdf**n
            cdf += q
            if pi > 0:
                reward += pi * s
                kl += pi * mpmath.log(pi / q)
        delta = mpmath.mpf(float(log_n)) / m
        scale = max(abs(x) for x in r)

        def tilt(lam):
            w = [q * mpmath.exp(lam * x / scale) for q, x in zip(p, r)]
            z = mpmath.fsum(w)
            mean = mpmath.fsum(wi * x for wi, x in zip(w, r)) / z
            return mean, lam * mean / scale - mpmath.log(z)

        lam = mpmath.findroot(lambda t: tilt(t)[1] - delta, 1.0, tol=mpmath.mpf(10) ** (-dps + 10))
        return reward, kl, tilt(lam)[0]


@pytest.mark.parametrize(
    "rewards",
    [
        [-1e308, 0.0, 1e308],
        [-1.7976931348623157e308, 0.0, 1.7976931348623157e308],
        [0.0, 2.0**-997, 3 * 2.0**-997],
        [-1e308, -3.3e307, 1e308],
        [1.7976931348623157e308, -1.7976931348623157e308],
    ],
)
def test_convergence_with_rewards_near_float_max_and_min(rewards):
    """Was a ZeroDivisionError (the lattice span over an infinite reward range) at ±1e308."""
    probs = [0.2, 0.5, 0.3] if len(rewards) == 3 else [0.25, 0.75]
    tab = kf.convergence(kf.Reference(rewards, probs=probs), 0.1, lengths=[1, 2, 5])
    span = max(rewards) / 2 - min(rewards) / 2  # half the range: no overflow
    for row in tab.rows:
        m = row["m"]
        reward, kl, r_star = _mp_sequence_bon(rewards, probs, m, row["log_n"])
        assert abs(row["reward_per_token"] - float(reward / m)) <= 1e-11 * span
        assert abs(row["optimal_reward"] - float(r_star)) <= 1e-11 * span
        assert abs(row["gap"] - float(r_star - reward / m)) <= 1e-11 * span
        assert row["kl_per_token"] == pytest.approx(float(kl / m), rel=1e-10)
    assert np.isfinite(tab.lam) and tab.lam > 0


def test_convergence_on_a_fine_lattice_with_few_levels_is_fast_and_exact():
    """Five levels on a lattice of 54176 steps: the FFT tilts could not trust the isolated sums
    and ``lengths=[10]`` ran for minutes; the types engine takes them exactly."""
    import time

    rewards = [
        0.15834446333171442,
        0.7418801602719767,
        0.1995355755220981,
        0.9805882710053424,
        0.4169803302574065,
    ]
    logp = [
        -2.630458323371632,
        -1.2994769513128686,
        -0.916270852518867,
        -3.0433927568227936,
        -1.5721451934288333,
    ]
    ref = kf.Reference(rewards, logprobs=logp, normalize=True)
    t0 = time.perf_counter()
    tab = kf.convergence(ref, 0.9130178270468381, lengths=[10, 100])
    assert time.perf_counter() - t0 < 30
    assert [r["exact"] for r in tab.rows] == [True, True]
    row = tab.rows[0]
    reward, kl, r_star = _mp_sequence_bon(rewards, np.exp(logp), 10, row["log_n"])
    assert row["reward_per_token"] == pytest.approx(float(reward / 10), rel=1e-11)
    assert row["gap"] == pytest.approx(float(r_star - reward / 10), rel=1e-9)
    assert row["kl_per_token"] == pytest.approx(float(kl / 10), rel=1e-9)


# ----------------------------------------------------------- Markov.tilted at the float range's ends
@pytest.mark.parametrize("rewards", [[0.0, 1e300], [0.0, 1e-300], [-1e300, 1e300], [-3e-300, 7e-300]])
def test_markov_tilted_far_from_unit_rewards_matches_memoryless_without_warnings(rewards):
    """Rewards near 1e300 overflowed the sweep's second moments (lam near 1e300 for 1e-300)."""
    from klfrontier import Markov, Memoryless

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mk = Markov([0.5, 0.5], [[0.5, 0.5]] * 2, rewards, length=2)
        me = Memoryless(kf.Reference(rewards, probs=[0.5, 0.5]), 2)
        for kl in (1e-6, 0.3, 1.0):
            t, s = mk.tilted(kl=kl), me.tilted(kl=kl)
            assert t.kl == pytest.approx(kl, rel=1e-12)
            # Markov.tilted forms E S about r_max: owed relative to the range, not to a mean near 0
            span = 2 * (max(rewards) - min(rewards))
            assert t.reward == pytest.approx(s.reward, rel=1e-12, abs=1e-10 * span)
            assert t.lam == pytest.approx(s.lam, rel=1e-6)
            assert mk.tilted(lam=t.lam).reward == pytest.approx(t.reward, rel=1e-12)
        assert mk.mean_reward == pytest.approx(sum(rewards), rel=1e-15)


def test_markov_tilted_keeps_a_tiny_kl_budget_relative():
    """An initial law 1, 7e-111 keeps its small mass in log space: KL 2.8e-111 is not lost."""
    from klfrontier import Markov, Memoryless

    mk = Markov([7.04e-111, 1], [[7.04e-111, 1]] * 2, [-3, 7], length=1)
    me = Memoryless(kf.Reference([-3, 7], probs=[7.04e-111, 1]), 1)
    assert mk.kl_max == pytest.approx(7.04e-111, rel=1e-12)
    t, s = mk.tilted(kl=2.8e-111), me.tilted(kl=2.8e-111)
    assert t.kl == pytest.approx(2.8e-111, rel=1e-12) and t.lam == pytest.approx(s.lam, rel=1e-9)
    # the transition rows too (largest entry 1 - 7e-111 rounds to 1): KL grows with the length
    for m in (2, 3, 10):
        mk, me = mk.with_length(m), Memoryless(me.ref, m)
        assert mk.kl_max == pytest.approx(m * 7.04e-111, rel=1e-12)
        t, s = mk.tilted(kl=0.9 * m * 7.04e-111), me.tilted(kl=0.9 * m * 7.04e-111)
        assert not t.saturated and t.kl == pytest.approx(s.kl, rel=1e-10)
        assert t.lam == pytest.approx(s.lam, rel=1e-8)
