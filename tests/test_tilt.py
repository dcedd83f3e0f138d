"""The tilted policy, lambda(Delta), the CGF, the frontier and the KL-regularised form.

Oracles
-------
* ``oracles/tables.json``: mpmath at 50 digits (``oracles/make_tables.py``,
  functions in ``oracles/mp_oracle.py``) for ten small references, from plain
  to extreme (probabilities 1e-300, p(A) = 1 - 1e-100, an interior level of
  mass ~1 between 1e-200 atoms, rewards of scale 1e300 and 1e-300).
* Closed forms for K = 10^6 outcomes (a truncated geometric law on a reward
  grid; a two-level law), evaluated with three-term mpmath expressions.
* Identities of theory §2: dR*/dDelta = 1/lam, concavity, the regularised value.

Tolerances are relative and stated at each assertion.  lambda(Delta) is
ill-conditioned near saturation (``kappa = d log lam / d log D = D / (lam^2
Var)`` reaches 1e9 at Delta = (1 - 1e-10) kl_max): there the test checks the
backward error and that the forward error is what kappa predicts; see
``test_lambda_near_saturation_is_backward_stable``.
"""

from __future__ import annotations

import mpmath as mp
import numpy as np
import pytest

from klfrontier import Reference, cgf, frontier, tilted
from klfrontier.tilt import ConvergenceError, solve_lam_for_kl, solve_lam_for_reward
from oracles import mp_oracle as O
from oracles.cases import CASES, ref_of, rel

RTOL = 1e-10  # the target for lambda, KL and reward
COND_OK = 1e4  # lambda is checked to RTOL where kappa <= COND_OK (kappa eps << RTOL)


# ---------------------------------------------------------------- oracles
@pytest.mark.parametrize("name", list(CASES))
def test_tilted_by_budget_matches_mpmath(name):
    ref = ref_of(name)
    c = CASES[name]
    # log-space masses carry eps |log q| absolute: kl_max = -log(1 - 1e-100) to ~1e-14
    assert rel(ref.kl_max, c["kl_max"]) <= 1e-13
    for row in c["tilt"]:
        d = float(row["kl"])
        pol = tilted(ref, kl=d)
        assert not pol.saturated
        assert rel(pol.kl, row["kl"]) <= RTOL, (name, d)
        assert rel(pol.reward, row["reward"]) <= RTOL, (name, d)
        if float(row["cond"]) <= COND_OK:
            assert rel(pol.lam, row["lam"]) <= RTOL, (name, d, pol.lam, row["lam"])
        # the policy's own KL and reward are exact for the lam it reports
        kl, rw, _, _ = O.tilt(c["rewards"], c["probs"], pol.lam)
        assert rel(pol.kl, kl) <= RTOL and rel(pol.reward, rw) <= RTOL
        # outcome probabilities are exp(log p + log(phi/q)): their sum is 1 to ~1e-14
        assert pol.probs.sum() == pytest.approx(1.0, abs=1e-13)


@pytest.mark.parametrize("name", list(CASES))
def test_lambda_near_saturation_is_backward_stable(name):
    """Where kappa = d log lam / d log D is large, lam is as good as D allows.

    Measured fact (asserted): the returned lam reproduces the budget to
    1e-13 (backward error), and its forward error is at most kappa times that
    backward error plus 1e-15 -- nothing beyond the conditioning.  At
    Delta = (1 - 1e-10) kl_max, kappa ~ 1e9 and the forward error is ~1e-7:
    the 1e-10 target on lam is not attainable there from a float budget.
    """
    ref = ref_of(name)
    c = CASES[name]
    for row in c["tilt"]:
        cond = float(row["cond"])
        if cond <= COND_OK:
            continue
        d = mp.mpf(row["kl"])
        pol = tilted(ref, kl=float(d))
        kl_at, _, _, _ = O.tilt(c["rewards"], c["probs"], pol.lam)
        backward = float(abs(kl_at - d) / d)
        assert backward <= 1e-13, (name, float(d), backward)
        assert rel(pol.lam, row["lam"]) <= 1.5 * cond * (backward + 1e-15) + RTOL


@pytest.mark.parametrize("name", list(CASES))
def test_tilted_by_lambda_cgf_and_regularised_value_match_mpmath(name):
    ref = ref_of(name)
    for row in CASES[name]["lam"]:
        lam = float(row["lam"])
        pol = tilted(ref, lam=lam)
        assert pol.lam == lam and not pol.saturated
        assert rel(pol.kl, row["kl"]) <= RTOL, name
        assert rel(pol.reward, row["reward"]) <= RTOL, name
        assert rel(pol.regularized_value, row["regularized_value"]) <= RTOL, name
        assert rel(cgf(ref, lam), row["cgf"]) <= RTOL, name
        assert rel(cgf(ref, -lam), row["cgf_neg"]) <= RTOL, name
        # KL-regularised form: beta = 1/lam gives the same policy
        pb = tilted(ref, beta=1.0 / lam)
        assert pb.lam == pytest.approx(lam, rel=1e-15)
        assert rel(pb.regularized_value, row["regularized_value"]) <= RTOL


@pytest.mark.parametrize("name", list(CASES))
def test_frontier_matches_mpmath_and_tilted(name):
    ref = ref_of(name)
    rows = CASES[name]["tilt"]
    budgets = np.array([float(r["kl"]) for r in rows] + [0.0, ref.kl_max, 2 * ref.kl_max])
    fr = frontier(ref, budgets)
    n = len(rows)
    for i, row in enumerate(rows):
        assert rel(fr.reward[i], row["reward"]) <= RTOL, (name, budgets[i])
        assert rel(fr.kl_used[i], row["kl"]) <= RTOL
        if float(row["cond"]) <= COND_OK:
            assert rel(fr.lam[i], row["lam"]) <= RTOL
    assert not fr.saturated[: n + 1].any() and fr.saturated[n + 1 :].all()
    assert fr.reward[n] == ref.mean_reward and fr.lam[n] == 0.0
    assert fr.reward[n + 1] == ref.r_max and fr.lam[n + 1] == np.inf
    assert fr.kl_used[n + 2] == ref.kl_max and fr.slope[n + 2] == 0.0
    assert set(fr.to_dict()) == {"kl", "kl_used", "reward", "lam", "saturated"}


def test_cgf_at_zero_and_large_arguments():
    ref = ref_of("three")
    assert cgf(ref, 0.0) == 0.0
    # Lambda(t) -> t r_max + log p(A) for large t; -> t r_min + log p(r_min)
    for t in (1e3, 1e6):
        exact = O.cgf([0.0, 1.0, 2.0], [0.5, 0.3, 0.2], t)
        assert rel(cgf(ref, t), exact) <= 1e-14
        exact = O.cgf([0.0, 1.0, 2.0], [0.5, 0.3, 0.2], -t)
        assert rel(cgf(ref, -t), exact) <= 1e-14
    ts = np.array([[0.5, -0.5], [2.0, 3.0]])
    out = cgf(ref, ts)
    assert out.shape == (2, 2)
    for t, v in zip(ts.ravel(), out.ravel()):
        assert rel(v, O.cgf([0.0, 1.0, 2.0], [0.5, 0.3, 0.2], t)) <= 1e-14
    const = Reference([2.0, 2.0], probs=[0.5, 0.5])
    assert cgf(const, 3.0) == 6.0


# ------------------------------------------------------ K = 10^6 closed forms
K6 = 1_000_000


def _geometric_reference(a, h):
    """p_j ~ rho^j, r_j = a + h j, j < K: p spans 1e-300 (rho^(K-1) = e^-690)."""
    rho_log = -690.0 / (K6 - 1)
    j = np.arange(K6)
    lp = j * rho_log
    p = np.exp(lp - np.logaddexp.reduce(lp))
    return Reference(a + h * j, probs=p / p.sum()), rho_log


def _geometric_closed_form(a, h, rho_log, lam):
    """Lambda, Lambda' and D of the truncated geometric law, from the closed form

    ``sum_{j<K} z^j = (1 - z^K)/(1 - z)``, ``z = rho e^{lam h}``:
    ``Lambda = lam a + log S(z) - log S(rho)``, ``Lambda' = a + h (K z^K/(z^K - 1) - z/(z - 1))``.
    """
    with mp.workdps(60):
        a, h, lam, lr = mp.mpf(a), mp.mpf(h), mp.mpf(lam), mp.mpf(rho_log)

        def log_s(x):  # log sum_{j<K} e^{x j}
            if x == 0:
                return mp.log(K6)
            return mp.log(mp.expm1(K6 * x) / mp.expm1(x))

        x = lr + lam * h
        L = lam * a + log_s(x) - log_s(lr)
        zK, z = mp.exp(K6 * x), mp.exp(x)
        mean = a + h * (K6 * zK / (zK - 1) - z / (z - 1))
        return L, mean, lam * mean - L


def _closed_form_lam(a, h, rho_log, delta):
    def below(ell):
        return _geometric_closed_form(a, h, rho_log, mp.exp(ell))[2] < delta

    with mp.workdps(60):
        # bisection in log lam (D increases with lam) over lam (r_max - r_min) in
        # [1e-30, 1e4]: beyond, the 60-digit closed form cancels (lam a ~ 1e304)
        scale = mp.mpf(h) * (K6 - 1)
        lo, hi = mp.log(mp.mpf("1e-30") / scale), mp.log(mp.mpf("1e4") / scale)
        for _ in range(200):
            mid = (lo + hi) / 2
            if below(mid):
                lo = mid
            else:
                hi = mid
            if hi - lo < mp.mpf(10) ** -40:
                break
        return mp.exp((lo + hi) / 2)


@pytest.mark.slow  # ~11 s each: 5 budgets on 10^6 levels plus a 60-digit closed-form bisection
@pytest.mark.parametrize(
    "a,h",
    [
        (1e299, 9e299 / (K6 - 1)),  # rewards in [1e299, 1e300]
        (-1e300, 9e299 / (K6 - 1)),  # rewards in [-1e300, -1e299]
        (0.0, 1.0 / (K6 - 1)),
    ],
)  # rewards in [0, 1]
def test_million_outcomes_against_closed_form(a, h):
    """K = 10^6 distinct rewards, probabilities from 7e-4 down to 2e-303."""
    ref, rho_log = _geometric_reference(a, h)
    assert ref.n_levels == K6
    kl_max = ref.kl_max
    for d in (1e-8, 1e-3, 0.1 * kl_max, 0.5 * kl_max, 0.9 * kl_max):
        pol = tilted(ref, kl=d)
        lam = _closed_form_lam(a, h, rho_log, mp.mpf(d))
        L, mean, D = _geometric_closed_form(a, h, rho_log, lam)
        assert rel(pol.kl, d) <= RTOL
        assert rel(pol.lam, lam) <= RTOL, (d, pol.lam, lam)
        assert rel(pol.reward, mean) <= RTOL, (d, pol.reward, mean)
        # the KL and reward the policy reports are exact for its own lam
        L2, mean2, D2 = _geometric_closed_form(a, h, rho_log, pol.lam)
        assert rel(pol.kl, D2) <= RTOL and rel(pol.reward, mean2) <= RTOL
        assert rel(cgf(ref, pol.lam), L2) <= RTOL


def test_million_outcomes_two_levels_closed_form_lambda():
    """Two reward levels over 10^6 outcomes: lam = logit(b) - logit(a) exactly.

    The level masses are the exactly rounded sums (math.fsum) of the float
    probabilities; the tilted top mass b solves KL(Bern(b)||Bern(a)) = Delta.
    """
    import math

    rng = np.random.default_rng(2024)
    w = rng.uniform(0.5, 1.5, size=K6) * np.exp(-rng.uniform(0, 600, size=K6) * (rng.random(K6) < 0.3))
    p = w / w.sum()
    r = np.where(np.arange(K6) < 37, 3.0, -2.0)  # 37 top outcomes, tiny mass
    p[:37] *= 1e-6
    p /= p.sum()
    ref = Reference(r, probs=p)
    a = mp.mpf(math.fsum(p[:37].tolist())) / mp.mpf(math.fsum(p.tolist()))
    assert ref.n_levels == 2
    for b in ("1e-5", "0.01", "0.5", "0.99", "0.999999"):
        b = mp.mpf(b)
        with mp.workdps(60):
            delta = b * mp.log(b / a) + (1 - b) * mp.log((1 - b) / (1 - a))
            lam = (mp.log(b / (1 - b)) - mp.log(a / (1 - a))) / 5  # reward gap 5
            reward = -2 + 5 * b
        pol = tilted(ref, kl=float(delta))
        assert rel(pol.kl, delta) <= RTOL
        assert rel(pol.lam, lam) <= RTOL, (b, pol.lam, lam)
        assert rel(pol.reward, reward) <= RTOL
        assert rel(pol.level_probs[1], b) <= RTOL


# ------------------------------------------------------------ scale invariance
@pytest.mark.parametrize("factor", [2.0**996, 1e300, 1e-300, 2.0**-996])
def test_scale_invariance(factor):
    """Rewards x c gives lam / c, the same KL and the reward x c."""
    base = Reference([0.0, 1.0, 1.7, 2.0], probs=[0.4, 0.3, 0.2, 0.1])
    big = Reference(np.array([0.0, 1.0, 1.7, 2.0]) * factor, probs=[0.4, 0.3, 0.2, 0.1])
    # powers of two scale exactly: results agree to a few ulps; 1e+-300 rounds the rewards
    tol = 1e-14 if np.log2(factor).is_integer() else 1e-12
    for d in (1e-14, 1e-8, 0.1, 1.0, 2.0):
        p0, p1 = tilted(base, kl=d), tilted(big, kl=d)
        assert p1.kl == pytest.approx(p0.kl, rel=tol)
        assert p1.lam * factor == pytest.approx(p0.lam, rel=tol)
        assert p1.reward == pytest.approx(p0.reward * factor, rel=tol)
        assert p1.regularized_value == pytest.approx(p0.regularized_value * factor, rel=tol)
    assert big.kl_max == base.kl_max


# ----------------------------------------------------------- degenerate cases
@pytest.mark.parametrize(
    "ref",
    [
        Reference([1.5, 1.5, 1.5], probs=[0.2, 0.3, 0.5]),
        Reference([-4.0], probs=[1.0]),
        Reference([1e300, 1e300], logprobs=[np.log(0.25), np.log(0.75)]),
    ],
)
def test_constant_reward_returns_p(ref):
    for kw in ({"kl": 0.0}, {"kl": 0.5}, {"kl": np.inf}, {"beta": 2.0}, {"lam": 3.0}, {"lam": 0.0}):
        pol = tilted(ref, **kw)
        assert pol.lam == 0.0 and pol.kl == 0.0 and not pol.saturated
        assert pol.reward == ref.mean_reward
        np.testing.assert_allclose(pol.probs, ref.probs, rtol=1e-15)
    fr = frontier(ref, [0.0, 1.0, 10.0])
    assert (fr.reward == ref.mean_reward).all() and (fr.lam == 0).all() and not fr.saturated.any()
    assert solve_lam_for_kl(ref, 0.3) == 0.0
    assert ref.kl_max == 0.0


def test_zero_budget_is_p():
    ref = ref_of("ties")
    pol = tilted(ref, kl=0.0)
    assert pol.lam == 0.0 and pol.kl == 0.0 and pol.reward == ref.mean_reward
    np.testing.assert_allclose(pol.probs, ref.probs, rtol=1e-15)
    assert tilted(ref, lam=0.0).kl == 0.0


def test_small_budgets_are_continuous_at_zero():
    """Delta -> 0: lam ~ sqrt(2 Delta / Var_p r), reward gain ~ sqrt(2 Delta Var_p r)."""
    ref = ref_of("three")
    var = 0.5 * 0.7**2 + 0.3 * 0.3**2 + 0.2 * 1.3**2
    for d in (1e-300, 1e-100, 1e-30, 1e-14, 1e-8):
        pol = tilted(ref, kl=d)
        assert pol.kl == pytest.approx(d, rel=1e-14)
        # next-order terms are O(lam) relative: lam ~ sqrt(d)
        assert pol.lam == pytest.approx(np.sqrt(2 * d / var), rel=10 * np.sqrt(d) + 1e-14)
        # the gain is resolved down to the rounding of the reward itself (eps R)
        assert pol.reward_gain == pytest.approx(
            np.sqrt(2 * d * var), rel=10 * np.sqrt(d), abs=4 * np.finfo(float).eps * pol.reward
        )


# ------------------------------------------------------------------ saturation
@pytest.mark.parametrize("name", ["three", "ties", "tiny_top", "top_near_one", "huge_rewards"])
def test_saturation_at_and_beyond_kl_max(name):
    ref = ref_of(name)
    top = ref.level_index == ref.n_levels - 1
    pA = ref.probs[top].sum()
    for d in (ref.kl_max, ref.kl_max * (1 + 1e-12), 2 * ref.kl_max + 1.0, 1e300, np.inf):
        pol = tilted(ref, kl=d)
        assert pol.saturated and pol.lam == np.inf
        assert pol.reward == ref.r_max
        assert pol.kl == ref.kl_max
        assert rel(pol.kl, CASES[name]["kl_max"]) <= 1e-13
        # p(. | A), ties in A kept in proportion
        np.testing.assert_allclose(pol.probs[top], ref.probs[top] / pA, rtol=1e-14)
        assert (pol.probs[~top] == 0).all()
        assert pol.kl_budget == d
    assert tilted(ref, lam=np.inf).saturated
    assert tilted(ref, beta=1e-320).saturated or tilted(ref, beta=1e-320).lam > 0


@pytest.mark.parametrize("name", ["three", "ties", "tiny_top", "random7", "interior_mass"])
def test_continuity_just_below_saturation(name):
    """As Delta -> kl_max from below: KL = Delta, reward -> r_max, lam increases to inf."""
    ref = ref_of(name)
    prev_lam, prev_gap = 0.0, np.inf
    for eps in (1e-2, 1e-4, 1e-6, 1e-9, 1e-12):
        d = ref.kl_max * (1 - eps)
        pol = tilted(ref, kl=d)
        assert not pol.saturated
        assert pol.kl == pytest.approx(d, rel=1e-13)
        gap = ref.r_max - pol.reward
        assert 0 <= gap < prev_gap and pol.lam > prev_lam
        prev_lam, prev_gap = pol.lam, gap
    # the last step is within a hair of the saturated policy
    sat = tilted(ref, kl=ref.kl_max)
    assert prev_gap <= 1e-9 * (ref.r_max - ref.mean_reward)
    np.testing.assert_allclose(pol.probs, sat.probs, atol=1e-9)


# ------------------------------------------------------------------ identities
def test_frontier_slope_is_one_over_lambda_by_finite_differences():
    ref = ref_of("random7")
    for frac in (1e-6, 1e-3, 0.05, 0.3, 0.7, 0.95):
        d = frac * ref.kl_max
        h = 1e-4 * d
        fr = frontier(ref, [d - h, d, d + h])
        fd = (fr.reward[2] - fr.reward[0]) / (2 * h)
        # central difference: truncation ~(h/d)^2 ~ 1e-8, rounding ~eps R / h
        assert fd == pytest.approx(1.0 / fr.lam[1], rel=1e-6), frac
        assert fr.slope[1] == pytest.approx(1.0 / fr.lam[1], rel=1e-15)


@pytest.mark.parametrize("name", ["three", "ties", "random7", "tiny_probs", "huge_rewards"])
def test_frontier_is_increasing_and_concave(name):
    ref = ref_of(name)
    d = np.linspace(0.0, ref.kl_max, 401)[:-1]
    fr = frontier(ref, d)
    R = fr.reward / max(abs(ref.r_max), abs(ref.r_min))
    assert np.all(np.diff(R) > 0)
    # second differences of a concave function on a uniform grid are <= 0
    # (rounding: a few eps of R)
    assert np.all(np.diff(R, 2) <= 1e-14)
    assert np.all(np.diff(fr.lam) > 0)  # slope 1/lam decreases
    assert np.all(np.diff(fr.slope[1:]) < 0)


def test_regularised_form_maximises_reward_minus_beta_kl():
    """phi_{1/beta} maximises E r - beta KL(phi||p), with value beta Lambda(1/beta).

    Checked against 2000 random policies (seeded) and small perturbations of
    the optimum; the identity E_phi r - beta KL(phi||p) = value - beta KL(phi||phi*)
    is also checked for each random phi (theory §2), to 1e-12.
    """
    rng = np.random.default_rng(11)
    r = np.array([0.3, -1.2, 2.2, 0.7, 2.2, -0.1, 1.9])
    p = np.array([0.11, 0.2, 0.03, 0.26, 0.05, 0.3, 0.05])
    ref = Reference(r, probs=p)
    for beta in (0.05, 0.5, 3.0):
        opt = tilted(ref, beta=beta)
        assert opt.lam == 1.0 / beta
        value = opt.regularized_value
        assert value == pytest.approx(opt.reward - beta * opt.kl, rel=1e-13)
        assert rel(value, O.cgf(list(r), list(p), 1.0 / beta) * beta) <= RTOL
        phis = np.concatenate([rng.dirichlet(np.ones(7) * s, size=500) for s in (0.1, 1.0, 10.0)])
        near = opt.probs * np.exp(1e-3 * rng.normal(size=(500, 7)))
        phis = np.concatenate([phis, near / near.sum(axis=1, keepdims=True)])
        for phi in phis:
            kl_p = float(np.sum(phi * np.log(phi / ref.probs)))
            obj = float(phi @ r) - beta * kl_p
            assert obj <= value + 1e-12 * abs(value)
            kl_opt = float(np.sum(phi * np.log(phi / opt.probs)))
            assert obj == pytest.approx(value - beta * kl_opt, abs=1e-12 * (1 + abs(value)))


def test_solve_lam_for_reward_matches_mpmath():
    c = CASES["random7"]
    ref = ref_of("random7")
    for row in c["tilt"]:
        if float(row["cond"]) > COND_OK:
            continue
        lam = solve_lam_for_reward(ref, float(row["reward"]))
        exact = O.lam_for_reward(c["rewards"], c["probs"], mp.mpf(float(row["reward"])))
        assert rel(lam, exact) <= 1e-9
    assert solve_lam_for_reward(ref, ref.r_max) == np.inf
    assert solve_lam_for_reward(ref, ref.mean_reward) == 0.0
    with pytest.raises(ValueError, match="reward must lie in"):
        solve_lam_for_reward(ref, ref.r_max + 1.0)
    with pytest.raises(ValueError, match="reward must lie in"):
        solve_lam_for_reward(ref, ref.mean_reward - 0.5)


def test_convergence_error_carries_partial_result():
    err = ConvergenceError("x", partial=np.array([1.0]))
    assert isinstance(err, RuntimeError) and err.partial.tolist() == [1.0]


def test_array_budgets_in_solve_lam_for_kl():
    ref = ref_of("three")
    d = np.array([[0.0, 0.1], [ref.kl_max, 0.5]])
    lam = solve_lam_for_kl(ref, d)
    assert lam.shape == (2, 2) and lam[0, 0] == 0.0 and lam[1, 0] == np.inf
    assert lam[0, 1] == pytest.approx(tilted(ref, kl=0.1).lam, rel=1e-14)
    with pytest.raises(ValueError, match="kl must be >= 0"):
        solve_lam_for_kl(ref, [0.1, -1.0])  # returned lam = 0 silently
    with pytest.raises(ValueError, match="kl is NaN"):
        solve_lam_for_kl(ref, np.nan)


# ------------------------------------------------------------------ bad input
REF = Reference([0.0, 1.0, 2.0], probs=[0.5, 0.3, 0.2])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({}, "give exactly one of kl=, beta= or lam="),
        ({"kl": 0.1, "beta": 1.0}, "give exactly one of kl=, beta= or lam="),
        ({"kl": 0.1, "lam": 1.0}, "give exactly one of"),
        ({"beta": 1.0, "lam": 1.0}, "give exactly one of"),
        ({"kl": -0.1}, "kl must be >= 0"),
        ({"kl": np.nan}, "kl is NaN"),
        ({"kl": [0.1, 0.2]}, "kl must be a scalar"),
        ({"beta": 0.0}, "beta must be > 0"),
        ({"beta": -1.0}, "beta must be > 0"),
        ({"beta": np.nan}, "beta is NaN"),
        ({"lam": -1.0}, "lam must be >= 0"),
        ({"lam": np.nan}, "lam is NaN"),
        ({"lam": -np.inf}, "lam must be >= 0"),
    ],
)
def test_tilted_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tilted(REF, **kwargs)


@pytest.mark.parametrize(
    "kl,match", [([], "kl is empty"), ([0.1, np.nan], "kl contains NaN"), ([-1.0], "kl must be >= 0")]
)
def test_frontier_bad_arguments(kl, match):
    with pytest.raises(ValueError, match=match):
        frontier(REF, kl)


@pytest.mark.parametrize("t", [np.nan, np.inf, -np.inf, [0.0, np.nan]])
def test_cgf_bad_arguments(t):
    with pytest.raises(ValueError, match="t must be finite"):
        cgf(REF, t)


# ------------------------------------------------------- random extreme references
def _random_extreme_refs(seed, count):
    """Seeded non-constant references from :func:`oracles.mp_oracle.extreme_laws` (K >= 2)."""
    out = []
    for r, p in O.extreme_laws(seed, count, k_min=2):
        ref = Reference(r, probs=p)
        if not ref.is_constant:
            out.append((r.tolist(), ref.probs.tolist(), ref))
    return out


def test_random_extreme_references_against_mpmath():
    """tilted(kl=Delta) on 40 seeded references (9 budgets from 1e-12 to 1 - 1e-10 of kl_max).

    This sweep found (and now guards) a silently wrong policy (budget 1e-151
    solved to D = 7e-49), ConvergenceErrors of the lam solver, and KL errors
    of 2e-11 from ``log phi - log q`` rounding in ``tilt_stats``.  Asserted: the reported KL and reward are those of the
    reported lam (mpmath, rtol 1e-10), the budget is met (rtol 1e-12), and the
    reward is the frontier's (the mpmath reward at the mpmath lam is not
    needed: reward error = backward error / lam, checked through the KL).
    """
    for r, p, ref in _random_extreme_refs(0, 40):
        for frac in (1e-12, 1e-6, 1e-3, 0.1, 0.5, 0.9, 0.999, 1 - 1e-6, 1 - 1e-10):
            d = frac * ref.kl_max
            pol = tilted(ref, kl=d)
            kl, rw, L, _ = O.tilt(r, p, pol.lam)
            assert rel(pol.kl, kl) <= RTOL, (r, p, frac)
            assert rel(pol.reward, rw) <= RTOL, (r, p, frac)
            assert rel(pol.kl, d) <= 1e-12, (r, p, frac)
            assert rel(d, kl) <= 1e-12, (r, p, frac)


def test_budget_one_ulp_below_saturation():
    """Found by Hypothesis (optimality of a point mass on the argmax, KL 1 ulp below kl_max).

    D is flat to rounding there, and the solver's final Newton step, made of noise,
    moved lam to where R* sat 2.4e-21 (2e-13 of the reward scale) below r_max; the
    true R*(kl_max - 1 ulp) is within ~4e-25 of r_max.
    """
    ref = Reference(
        [-7.5e-09] * 6 + [5e-09, 0.0],
        logprobs=[-np.inf] * 4
        + [-0.015602643312663459, -9.225943015288847, -23.18536514156525, -4.174485726672335],
    )
    d = float(np.nextafter(ref.kl_max, 0.0))
    pol = tilted(ref, kl=d)
    assert not pol.saturated
    assert pol.kl == pytest.approx(d, rel=1e-15)
    assert ref.r_max - pol.reward <= 1e-24
