"""Exact best-of-N: law, KL, reward, win rate, the BoN <-> RLHF dictionary, bounds, estimator.

Oracles
-------
* ``oracles/tables.json`` (mpmath, 50 digits; see ``oracles/make_tables.py``):
  the level law ``F^N - F^-N``, KL, reward, win rate, the tilted lam with the
  same KL / the same reward, ``log N - (N-1)/N``, the exact expectation of the
  Beirami et al. estimator; for N in {1, 1.5, 2, 2.5, 4, 7, 100, 1e6} and
  log N in {1e-10, 50, 700, 1e6}, on ten references (ties, p down to 1e-300,
  p(A) = 1 - 1e-100, rewards of scale 1e+-300).
* Brute-force enumeration of all K^N ordered N-tuples in exact rational
  arithmetic (ties broken uniformly), for K <= 4 and N <= 5.
* For K = 10^5 equally likely distinct rewards: an independent float oracle
  (``math.fsum``) and the discretisation error derived in
  ``test_distinct_atoms_kl_approaches_the_bound``.
"""

from __future__ import annotations

import math
from fractions import Fraction

import mpmath as mp
import numpy as np
import pytest
from scipy.special import xlogy

from klfrontier import (
    Reference,
    best_of_n,
    bon_curve,
    bon_kl_beirami,
    bon_kl_bound,
    bon_kl_from_eps,
    tilted,
)
from oracles import mp_oracle as O
from oracles.cases import CASES, TABLES, ref_of, rel

RTOL = 1e-10
COND_OK = 1e4


def _log_n(row):
    return float(mp.log(mp.mpf(row["n"]))) if "n" in row else float(row["log_n"])


def _kw(row):
    return {"n": float(row["n"])} if "n" in row else {"log_n": float(row["log_n"])}


# ---------------------------------------------------------------- mpmath tables
@pytest.mark.parametrize("name", list(CASES))
def test_best_of_n_matches_mpmath(name):
    ref = ref_of(name)
    for row in CASES[name]["bon"]:
        b = best_of_n(ref, **_kw(row))
        kl = mp.mpf(row["kl"])
        # KL: relative (an exact 0 at N = 1 is returned as 0 exactly)
        assert rel(b.kl, kl) <= RTOL or (abs(kl) < 1e-300 and b.kl == 0.0), (name, row.get("n"), b.kl)
        assert rel(b.reward, row["reward"]) <= RTOL, (name, row)
        assert rel(b.win_rate, row["win_rate"]) <= RTOL, (name, row)
        assert rel(b.kl_bound, row["bound"]) <= 1e-13
        for got, exact in zip(b.level_probs, row["levels"]):
            exact = mp.mpf(exact)
            if exact > mp.mpf("1e-290"):
                assert rel(got, exact) <= RTOL, (name, row.get("n"), got, exact)
            else:  # below the float range (or nearly): absolute
                assert abs(got - float(exact)) <= 1e-300
        assert b.kl <= b.kl_bound * (1 + 1e-14) + 1e-300
        assert b.probs.sum() == pytest.approx(1.0, abs=1e-13)
        assert b.log_n == pytest.approx(_log_n(row), rel=1e-15)


@pytest.mark.parametrize("name", list(CASES))
def test_bon_curve_matches_mpmath(name):
    ref = ref_of(name)
    rows = CASES[name]["bon"]
    curve = bon_curve(ref, log_n=[_log_n(r) for r in rows])
    for i, row in enumerate(rows):
        kl = mp.mpf(row["kl"])
        assert rel(curve.kl[i], kl) <= RTOL or (abs(kl) < 1e-300 and curve.kl[i] == 0.0), (name, row)
        assert rel(curve.reward[i], row["reward"]) <= RTOL, (name, row)
        assert rel(curve.win_rate[i], row["win_rate"]) <= RTOL, (name, row)
        assert rel(curve.kl_bound[i], row["bound"]) <= 1e-13


@pytest.mark.parametrize("name", list(CASES))
def test_dictionary_lambdas_match_mpmath(name):
    """lam_same_kl / lam_same_reward: same KL / same reward as BoN (theory §3).

    Checked forwards against mpmath where lam is well conditioned
    (kappa <= 1e4) and backwards (the tilted policy at that lam has the BoN's
    KL / reward to 1e-10) everywhere.
    """
    ref = ref_of(name)
    c = CASES[name]
    for row in c["bon"]:
        b = best_of_n(ref, **_kw(row))
        ok_kl = ok_rw = False
        if b.lam_same_kl not in (0.0, np.inf):
            t = tilted(ref, lam=b.lam_same_kl)
            assert rel(t.kl, b.kl) <= RTOL, (name, row)
        if "lam_same_kl" in row:
            lam = mp.mpf(row["lam_same_kl"])
            kl, _, _, var, _ = O.tilt_all(c["rewards"], c["probs"], lam)
            if kl / (lam**2 * var) <= COND_OK:
                ok_kl = True
                assert rel(b.lam_same_kl, lam) <= RTOL, (name, row, b.lam_same_kl)
        if b.lam_same_reward not in (0.0, np.inf):
            t = tilted(ref, lam=b.lam_same_reward)
            assert rel(t.reward, b.reward) <= 1e-12, (name, row)
        if "lam_same_reward" in row:
            lam = mp.mpf(row["lam_same_reward"])
            _, rw, _, var, _ = O.tilt_all(c["rewards"], c["probs"], lam)
            mean = O.tilt_all(c["rewards"], c["probs"], 0)[1]
            # d log lam / d log (R - mean) = (R - mean) / (lam Var)
            if (rw - mean) / (lam * var) <= COND_OK and (rw - mean) > 1e-6 * abs(rw):
                ok_rw = True
                assert rel(b.lam_same_reward, lam) <= 1e-9, (name, row, b.lam_same_reward)
        # same KL: the tilted policy has at least the BoN's reward (it is optimal), so
        # lam_same_reward <= lam_same_kl -- where both lams are well conditioned (on a
        # plateau of D, e.g. BoN saturating an interior level, neither is resolvable)
        if b.lam_same_kl not in (0.0, np.inf):
            assert tilted(ref, lam=b.lam_same_kl).reward >= b.reward - 1e-14 * abs(b.reward)
        if ok_kl and ok_rw:
            assert b.lam_same_reward <= b.lam_same_kl * (1 + 1e-10)


# ------------------------------------------------------------------ brute force
BRUTE = [
    ([0, 1, 1], [Fraction(1, 2), Fraction(1, 3), Fraction(1, 6)]),
    ([2, 0, 2, 1], [Fraction(1, 10), Fraction(2, 5), Fraction(3, 10), Fraction(1, 5)]),
    ([5, 5, 5], [Fraction(1, 5), Fraction(3, 5), Fraction(1, 5)]),
    ([3, 1, 2, 0], [Fraction(1, 4)] * 4),
    ([0, 7, 7, 7], [Fraction(0), Fraction(1, 7), Fraction(2, 7), Fraction(4, 7)]),
]


@pytest.mark.parametrize("rewards,probs", BRUTE)
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_best_of_n_matches_brute_force_enumeration(rewards, probs, n):
    """All K^N ordered tuples in exact arithmetic, ties broken uniformly; rtol 1e-13."""
    law = O.brute_force_bon(rewards, probs, n)
    ref = Reference([float(r) for r in rewards], probs=[float(p) for p in probs])
    b = best_of_n(ref, n=n)
    np.testing.assert_allclose(b.probs, [float(x) for x in law], rtol=1e-13, atol=1e-16)
    # win rate: P(r(Y_N) > r(Y)) + P(=)/2 with Y ~ p, exactly
    win = sum(
        law[i]
        * probs[j]
        * (1 if rewards[i] > rewards[j] else Fraction(1, 2) if rewards[i] == rewards[j] else 0)
        for i in range(len(rewards))
        for j in range(len(rewards))
    )
    assert b.win_rate == pytest.approx(float(win), rel=1e-13)
    with mp.workdps(50):
        kl = mp.fsum(
            mp.mpf(a.numerator)
            / a.denominator
            * mp.log(mp.mpf(a.numerator * q.denominator) / (a.denominator * q.numerator))
            for a, q in zip(law, probs)
            if a != 0
        )
        reward = mp.fsum(mp.mpf(a.numerator) / a.denominator * r for a, r in zip(law, rewards))
    assert rel(b.kl, kl) <= 1e-12 or (kl == 0 and b.kl == 0.0)
    assert rel(b.reward, reward) <= 1e-13


# -------------------------------------------------------------------- N = 1, N -> inf
@pytest.mark.parametrize("name", ["three", "ties", "tiny_probs", "huge_rewards", "random7"])
def test_n_equal_one_is_p(name):
    ref = ref_of(name)
    for kw in ({"n": 1}, {"n": 1.0}, {"log_n": 0.0}):
        b = best_of_n(ref, **kw)
        assert b.kl == 0.0 and b.n == 1.0 and b.log_n == 0.0
        np.testing.assert_allclose(b.level_probs, np.exp(ref.level_logq), rtol=1e-14)
        np.testing.assert_allclose(b.probs, ref.probs, rtol=1e-14)
        assert b.reward == pytest.approx(ref.mean_reward, rel=1e-14)
        assert b.win_rate == pytest.approx(0.5, rel=1e-14)
        assert b.lam_same_kl == 0.0 and b.lam_same_reward == 0.0
    c = bon_curve(ref, n=[1.0])
    assert c.kl[0] == 0.0 and c.win_rate[0] == 0.5


@pytest.mark.parametrize(
    "name", ["three", "ties", "tiny_probs", "tiny_top", "interior_mass", "top_near_one", "huge_rewards"]
)
def test_huge_n_saturates_to_p_given_argmax(name):
    ref = ref_of(name)
    top = ref.level_index == ref.n_levels - 1
    pA = ref.probs[top].sum()
    for ln in (1e4, 1e6, 1e300):
        b = best_of_n(ref, log_n=ln)
        assert b.kl == pytest.approx(ref.kl_max, rel=1e-14)
        assert rel(b.kl, CASES[name]["kl_max"]) <= 1e-13
        assert b.reward == ref.r_max
        np.testing.assert_allclose(b.probs[top], ref.probs[top] / pA, rtol=1e-14)
        assert (b.probs[~top] == 0).all()
        assert b.n == np.inf and b.log_n == ln
        assert b.lam_same_kl == np.inf and b.lam_same_reward == np.inf
        assert b.win_rate == pytest.approx(1 - pA / 2, rel=1e-14)
        assert b.kl_bound == pytest.approx(ln - 1.0, rel=1e-15)
    c = bon_curve(ref, log_n=[1e6])
    assert c.kl[0] == pytest.approx(ref.kl_max, rel=1e-14) and c.reward[0] == ref.r_max


def test_single_outcome_and_constant_reward():
    for ref in (Reference([2.0], probs=[1.0]), Reference([1.0, 1.0, 1.0], probs=[0.2, 0.3, 0.5])):
        for kw in ({"n": 1}, {"n": 2.5}, {"n": 1e9}, {"log_n": 1e6}):
            b = best_of_n(ref, **kw)
            assert b.kl == 0.0 and b.reward == ref.r_max and b.win_rate == 0.5
            np.testing.assert_allclose(b.probs, ref.probs, rtol=1e-15)
            assert b.lam_same_kl == 0.0 and b.lam_same_reward == 0.0


# ------------------------------------------------------------ distinct tiny atoms
K5 = 100_000


@pytest.fixture(scope="module")
def uniform_distinct():
    return Reference(np.arange(K5, dtype=float), logprobs=np.full(K5, -np.log(K5)))


def _fsum_oracle(n):
    """KL, E[J], win rate of BoN on K equally likely distinct levels, in floats.

    ``d_j = ((j+1)/K)^N - (j/K)^N`` as ``(j/K)^N expm1(N log1p(1/j))`` (no
    cancellation), every sum by ``math.fsum`` (exactly rounded).
    """
    j = np.arange(K5, dtype=float)
    with np.errstate(divide="ignore"):
        d = np.where(
            j > 0,
            np.exp(n * np.log(np.maximum(j, 1) / K5)) * np.expm1(n * np.log1p(1 / np.maximum(j, 1))),
            np.exp(-n * np.log(K5)),
        )
    kl = math.fsum(xlogy(d, K5 * d).tolist())
    reward = math.fsum((d * j).tolist())
    win = math.fsum((d * (j + 0.5) / K5).tolist())
    return kl, reward, win


@pytest.mark.parametrize("n", [2.5, 3, 10, 100, 1000])
def test_distinct_atoms_kl_approaches_the_bound(uniform_distinct, n):
    r"""K equally likely distinct rewards: KL = log N - (N-1)/N - N(N-1)^2 / (24 (N-2) K^2) + ...

    Derivation.  The BoN level law is ``d_j = G((j+1)/K) - G(j/K)``, ``G(x) = x^N``:
    the law of ``floor(K M)``, ``M`` the max of N uniforms, a coarse-graining of
    M's density ``g = G'``.  Coarse-graining loses, per cell of width 1/K,
    ``int_cell g log g - (int_cell g) log(avg g) = Var_cell(g) / (2 avg g) / K
    + O(K^-4)``, and ``Var_cell(g) = g'^2 / (12 K^2)``.  Summing,
    ``bound - KL = (1/(24 K^2)) int_0^1 g'^2/g dx = N (N-1)^2 / (24 (N-2) K^2)``
    (N > 2: the integrand ``N (N-1)^2 x^(N-3)`` is integrable).  The next
    terms are smaller by O(N/K) (measured: 1e-6 relative at N = 3..1000).
    Tolerance: 1e-3 of the predicted gap plus 3e-14 (the KL's own rounding)
    plus ``K^-N``: the bottom cells, where ``g`` is not smooth on the scale
    1/K, contribute at that order (at N = 2.5 the formula is off by 5e-14
    whichever way the CDF is summed).
    Also: the KL equals the fsum oracle to 1e-12 relative, and stays below
    the bound (data processing).
    """
    b = best_of_n(uniform_distinct, n=n)
    kl, reward, win = _fsum_oracle(n)
    assert b.kl == pytest.approx(kl, rel=1e-12)
    bound = math.log(n) - (n - 1) / n
    assert b.kl_bound == pytest.approx(bound, rel=1e-15)
    assert b.kl < bound
    if n > 2:
        gap = n * (n - 1) ** 2 / (24 * (n - 2) * K5**2)
        assert (bound - b.kl) == pytest.approx(gap, rel=1e-3, abs=3e-14 + K5**-n)
    assert b.reward == pytest.approx(reward, rel=1e-13)


@pytest.mark.parametrize("n", [1.5, 2.5, 3, 10, 100, 1000])
def test_distinct_atoms_win_rate_and_reward(uniform_distinct, n):
    r"""Win rate ``N/(N+1) - N/(12 K^2)`` and ``E[J]/K = N/(N+1) - 1/(2K) - N/(12 K^2)``.

    Derivation: with ties counted 1/2, win = ``E[(J + 1/2)/K] = 1 + 1/(2K) -
    (1/K) sum_{i=1}^K (i/K)^N`` (summation by parts), and Euler-Maclaurin
    ``(1/K) sum_{i<=K} f(i/K) = 1/(N+1) + 1/(2K) + N/(12 K^2) + O(N^3/K^4)``
    for ``f = x^N``.  Without atoms (K -> inf) the win rate is N/(N+1).
    Tolerances: 1e-13 absolute (the next term is < 1e-14 for N <= 1000).
    """
    b = best_of_n(uniform_distinct, n=n)
    assert b.win_rate == pytest.approx(n / (n + 1) - n / (12 * K5**2), abs=1e-13)
    assert b.reward / K5 == pytest.approx(n / (n + 1) - 1 / (2 * K5) - n / (12 * K5**2), abs=1e-13)
    c = bon_curve(uniform_distinct, n=[n])
    assert c.win_rate[0] == pytest.approx(b.win_rate, rel=1e-13)
    assert c.kl[0] == pytest.approx(b.kl, rel=1e-12)


# ------------------------------------------------------------------- the bound
def test_kl_never_exceeds_the_bound_on_random_references():
    rng = np.random.default_rng(31)
    log_ns = np.concatenate([[0.0, 1e-12, 1e-6, 1e-3], np.linspace(0.01, 12, 40), [50.0, 700.0, 1e6]])
    bound = np.asarray(bon_kl_bound(log_n=log_ns))
    for _ in range(150):
        K = int(rng.integers(1, 12))
        p = rng.dirichlet(np.ones(K) * rng.choice([0.05, 1.0, 20.0]))
        p = np.maximum(p, 1e-300)
        r = rng.integers(0, max(1, K // 2) + 1, size=K).astype(float) * rng.choice([1e-200, 1.0, 1e200])
        ref = Reference(r, probs=p / p.sum())
        c = bon_curve(ref, log_n=log_ns)
        assert np.all(c.kl <= bound * (1 + 1e-13) + 1e-300)
        assert np.all(c.kl <= ref.kl_max * (1 + 1e-13))
        assert np.all(np.diff(c.kl) >= -1e-15 * (1 + c.kl[1:]))  # KL increases with N
        assert np.all(np.diff(c.win_rate) >= -1e-15)
        assert np.all(c.win_rate >= 0.5 - 1e-15) and np.all(c.win_rate <= 1.0)


def test_exact_kl_far_below_the_bound_when_p_argmax_is_large():
    """p(A) = 1/2: the exact KL tends to -log p(A) = log 2 while the bound grows like log N."""
    ref = Reference([0.0, 1.0, 2.0], probs=[0.3, 0.2, 0.5])
    log_ns = np.array([1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 1e4])
    c = bon_curve(ref, log_n=log_ns)
    assert np.all(c.kl <= np.log(2.0) * (1 + 1e-15))
    assert np.all(np.diff(c.kl) >= -2e-16)  # flat to rounding at saturation
    assert c.kl[-3] == pytest.approx(np.log(2.0), rel=1e-15)  # N = e^50
    # log 2 - KL = (mass not yet moved) -> 0 like (1/2)^N: at N = e^2 it is still visible
    assert np.log(2.0) - c.kl[1] > 1e-3
    assert c.kl_bound[-1] == pytest.approx(1e4 - 1.0, rel=1e-15)
    assert c.kl_bound[-1] / c.kl[-1] > 1e4
    # at N = 10 the bound already overstates the KL twofold (measured 2.04x)
    b = best_of_n(ref, n=10)
    assert b.kl_bound / b.kl > 2.0


# ------------------------------------------------------------- Beirami estimator
@pytest.mark.parametrize("row", TABLES["beirami"], ids=lambda r: f"eps={r['eps']},logN={r['log_n']}")
def test_beirami_estimator_matches_mpmath(row):
    eps, ln = float(row["eps"]), float(row["log_n"])
    got = bon_kl_from_eps(eps, log_n=ln)
    exact = mp.mpf(row["value"])
    if exact < mp.mpf("1e-290"):
        assert abs(got - float(exact)) <= 1e-300
    else:
        # rtol 1e-12: the closed form is evaluated as non-negative terms (no cancellation)
        assert rel(got, exact) <= 1e-12, (eps, ln, got, exact)


def test_beirami_estimator_bounds_and_limits():
    eps = np.array([5e-324, 1e-300, 1e-100, 1e-20, 1e-8, 1e-3, 0.1, 0.5, 0.9, 1 - 1e-16, 1.0])
    for ln in (0.0, 1e-300, 1e-12, 1e-6, 1e-3, 0.1, 1.0, 3.0, 10.0, 100.0, 700.0, 1e6, 1e300):
        bound = bon_kl_bound(log_n=ln)
        v = bon_kl_from_eps(eps, log_n=ln)
        assert np.all(v >= 0.0)
        assert np.all(v <= bound * (1 + 1e-14) + 1e-300)
        assert v[-1] == 0.0  # eps = 1: nothing to move
        if ln <= 100:  # N eps << 1: the bound
            assert v[1] == pytest.approx(bound, rel=1e-13)
    assert bon_kl_from_eps(0.3, n=1) == 0.0
    assert bon_kl_from_eps(0.25, n=4) == pytest.approx(float(O.beirami(0.25, n=4)), rel=1e-13)
    # the estimator for huge N: -log eps (the BoN output is the top atom)
    assert bon_kl_from_eps(1e-3, log_n=1e6) == pytest.approx(-np.log(1e-3), rel=1e-14)


@pytest.mark.parametrize("name", list(CASES))
def test_exact_expected_estimator_matches_mpmath(name):
    ref = ref_of(name)
    for row in CASES[name]["bon"]:
        e = bon_kl_beirami(ref, **_kw(row))
        exact = mp.mpf(row["estimate"])
        if exact < mp.mpf("1e-290"):
            assert abs(e) <= 1e-290
        else:
            assert rel(e, exact) <= RTOL, (name, row, e, exact)


def test_expected_estimator_versus_exact_kl():
    """Measured fact, not assumed: E_{pi_N} D_hat >= KL(pi_N || p) on every instance tried.

    Beirami et al. conjecture the estimator is an upper bound on average.  On
    the ten mpmath instances (11 values of N each) the ratio E D_hat / KL lies in
    [1, 2.49], equal to 1 (to 1e-12) once BoN is saturated (both are -log p(A));
    on 300 random references x 5 values of N (seeded), its minimum is
    1 - O(1e-15) (an almost deterministic reference where both are ~1e-5).
    """
    ratios = []
    for c in CASES.values():
        for row in c["bon"]:
            kl, est = mp.mpf(row["kl"]), mp.mpf(row["estimate"])
            if kl > mp.mpf("1e-290"):
                ratios.append(float(est / kl))
    ratios = np.array(ratios)
    assert ratios.min() >= 1 - 1e-12
    assert 2.4 < ratios.max() < 2.5
    rng = np.random.default_rng(5)
    worst = np.inf
    for _ in range(300):
        K = int(rng.integers(2, 7))
        p = rng.dirichlet(np.ones(K) * rng.choice([0.1, 1.0, 10.0]))
        r = rng.integers(0, K, size=K).astype(float)
        ref = Reference(r, probs=p)
        if ref.is_constant:
            continue
        for n in (1.2, 2, 3, 10, 100):
            kl = best_of_n(ref, n=n).kl
            if kl > 1e-12:
                worst = min(worst, bon_kl_beirami(ref, n=n) / kl)
    assert 1 - 1e-12 <= worst <= 1 + 1e-6


def test_sampled_estimate_is_seeded_and_consistent():
    ref = ref_of("random7")
    b = best_of_n(ref, n=4)
    rng = np.random.default_rng(99)
    idx = rng.choice(ref.size, size=200_000, p=b.probs / b.probs.sum())
    est = bon_kl_beirami(ref, n=4, samples=idx)
    exact = bon_kl_beirami(ref, n=4)
    per = bon_kl_from_eps(ref.probs, n=4)
    sd = np.sqrt(b.probs @ (per - exact) ** 2 / idx.size)
    assert abs(est - exact) <= 5 * sd


# ------------------------------------------------------------------- bad input
REF = Reference([0.0, 1.0, 2.0], probs=[0.5, 0.3, 0.2])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({}, "give exactly one of n= or log_n="),
        ({"n": 2, "log_n": 1.0}, "give exactly one of n= or log_n="),
        ({"n": 0.5}, "n must be >= 1"),
        ({"n": 0}, "n must be >= 1"),
        ({"n": -3}, "n must be >= 1"),
        ({"n": np.nan}, "n is NaN"),
        ({"log_n": np.nan}, "log_n is NaN"),
        ({"log_n": -1e-9}, "log_n must be >= 0"),
        ({"n": [2, 3]}, "n must be a scalar"),
        ({"log_n": [1.0]}, "log_n must be a scalar"),
    ],
)
def test_best_of_n_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        best_of_n(REF, **kwargs)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({}, "give exactly one of n= or log_n="),
        ({"n": [2.0, 0.5]}, "n must be >= 1"),
        ({"n": [2.0, np.nan]}, "n contains NaN"),
        ({"log_n": [1.0, -1.0]}, "log_n must be >= 0"),
        ({"log_n": []}, "log_n is empty"),
    ],
)
def test_bon_curve_and_bound_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bon_curve(REF, **kwargs)
    with pytest.raises(ValueError, match=match):
        bon_kl_bound(**kwargs)


@pytest.mark.parametrize(
    "eps,match",
    [
        (0.0, "eps must lie in"),
        (-0.1, "eps must lie in"),
        (1.5, "eps must lie in"),
        (np.nan, "eps must lie in"),
        ([0.5, np.nan], "eps must lie in"),
    ],
)
def test_estimator_bad_eps(eps, match):
    with pytest.raises(ValueError, match=match):
        bon_kl_from_eps(eps, n=4)


def test_estimator_bad_n_and_samples():
    with pytest.raises(ValueError, match="n must be >= 1"):
        bon_kl_from_eps(0.5, n=0.9)
    with pytest.raises(ValueError, match="log_n is NaN"):
        bon_kl_beirami(REF, log_n=np.nan)
    ref = Reference([0.0, 1.0, 2.0], probs=[0.5, 0.5, 0.0])
    with pytest.raises(ValueError, match="samples contains indices outside the support"):
        bon_kl_beirami(ref, n=2, samples=[0, 2])
    with pytest.raises(ValueError, match="samples contains indices outside"):
        bon_kl_beirami(ref, n=2, samples=[3])
    with pytest.raises(ValueError, match="samples must be a non-empty 1-D array"):
        bon_kl_beirami(ref, n=2, samples=[])
    with pytest.raises(ValueError, match="samples must be a non-empty 1-D array"):
        bon_kl_beirami(ref, n=2, samples=[0.5])


def test_random_extreme_references_against_mpmath():
    """best_of_n and bon_curve on 40 seeded references (p down to 1e-260, rewards to 1e+-280,
    ties) at 10 values of N from 1 + 1e-12 to e^(1e6), against mpmath; rtol 1e-10."""
    log_ns = [
        1e-12,
        1e-6,
        float(np.log(1.5)),
        float(np.log(2.5)),
        float(np.log(7.0)),
        4.6,
        14.0,
        40.0,
        700.0,
        1e6,
    ]
    for r, p in O.extreme_laws(1, 40, k_min=1):
        ref = Reference(r, probs=p)
        pr = ref.probs.tolist()
        curve = bon_curve(ref, log_n=log_ns)
        for k, ln in enumerate(log_ns):
            kl, rw, win, d = O.bon(r.tolist(), pr, log_n=ln)
            b = best_of_n(ref, log_n=ln)
            for got in (b.kl, curve.kl[k]):
                assert rel(got, kl) <= RTOL or (abs(kl) < 1e-300 and abs(got) < 1e-300), (r, pr, ln)
            for got in (b.reward, curve.reward[k]):
                assert rel(got, rw) <= RTOL, (r, pr, ln)
            for got in (b.win_rate, curve.win_rate[k]):
                assert rel(got, win) <= RTOL, (r, pr, ln)
            assert rel(bon_kl_beirami(ref, log_n=ln), O.beirami_expectation(r.tolist(), pr, log_n=ln)) <= RTOL


def test_bon_curve_does_not_depend_on_the_order_of_n():
    """Regression: unsorted log_n with equal pruning points truncated the KL series (2.5e-8)."""
    rng = np.random.default_rng(8)
    grid = np.array([0.0, 1e-9, 0.05, 0.5, 1.0, 2.0, float(np.log(100.0)), 7.5, 30.0, 300.0, 1e4])
    refs = [
        ref_of("random7"),
        ref_of("ties"),
        Reference(
            [0.0, 0.0, 2.0, 0.0, 1.0],
            probs=[
                0.11572201454907277,
                0.6143970676696946,
                0.014607845561662473,
                0.25268936081678817,
                0.0025837114027821694,
            ],
        ),
    ]
    for ref in refs:
        single = [best_of_n(ref, log_n=x) for x in grid]
        for _ in range(5):
            perm = rng.permutation(grid.size)
            c = bon_curve(ref, log_n=grid[perm])
            for k, i in enumerate(perm):
                b = single[i]
                assert c.kl[k] == pytest.approx(b.kl, rel=1e-12, abs=1e-300)
                assert c.reward[k] == pytest.approx(b.reward, rel=1e-13)
                assert c.win_rate[k] == pytest.approx(b.win_rate, rel=1e-13)


def test_n_infinite_is_the_saturated_limit():
    """N = inf (n=inf or log_n=inf) is p(. | argmax): the same law as log N = 1e6, no NaN."""
    ref = Reference([0.0, 0.5, 1.0, 1.0], probs=[0.5, 0.3, 0.1, 0.1])
    lim = best_of_n(ref, log_n=1e6)
    for kw in ({"n": np.inf}, {"log_n": np.inf}):
        b = best_of_n(ref, **kw)
        assert b.n == np.inf and b.log_n == np.inf and b.kl_bound == np.inf
        np.testing.assert_array_equal(b.probs, lim.probs)
        assert b.kl == lim.kl == pytest.approx(ref.kl_max, rel=1e-15)
        assert b.reward == ref.r_max and b.win_rate == lim.win_rate
        assert b.lam_same_kl == np.inf and b.lam_same_reward == np.inf
    c = bon_curve(ref, n=[1.0, 2.0, np.inf])
    assert c.log_n[-1] == np.inf and c.kl_bound[-1] == np.inf
    assert c.kl[-1] == pytest.approx(ref.kl_max, rel=1e-15) and c.reward[-1] == ref.r_max
    assert bon_kl_beirami(ref, n=np.inf) == pytest.approx(bon_kl_beirami(ref, log_n=1e6), rel=1e-15)
    assert bon_kl_from_eps(0.1, n=np.inf) == pytest.approx(-np.log(0.1), rel=1e-15)


def test_huge_n_keeps_masses_below_the_float_range():
    """p(1) = e^-800 at log N = 800: the law of the maximum is [e^-1, 1 - e^-1] (docs/second_order.md)."""
    ref = Reference([0.0, 1.0], logprobs=[0.0, -800.0], normalize=True)
    probs = best_of_n(ref, log_n=800.0).level_probs
    np.testing.assert_allclose(probs, [np.exp(-1.0), -np.expm1(-1.0)], rtol=1e-13)
