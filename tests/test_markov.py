"""Markov references (theory §8): exact optimum, best-of-N, Perron root, equivalence, bigram instance.

Oracles: brute-force enumeration of all K^m paths in mpmath (50 digits),
the memoryless engine (a chain whose rows all equal p), finite differences
of the Perron root, and closed forms for the periodic / reducible examples.
"""

import importlib.util
import itertools
import time

import mpmath as mp
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import klfrontier as kf
from klfrontier.sequences.markov import BackoffTransition, Markov, MarkovEquivalence

mp.mp.dps = 50
RTOL = 1e-10


# ------------------------------------------------------------------ oracles
def _chain(seed, K=3):
    rng = np.random.default_rng(seed)
    P = rng.random((K, K)) + 0.05
    P /= P.sum(axis=1, keepdims=True)
    mu = rng.random(K) + 0.05
    mu /= mu.sum()
    return mu, P


def brute(mu, P, m, reward_of):
    """Every path: (mpf probability, mpf reward) with ``reward_of(path)``."""
    K = len(mu)
    out = []
    for path in itertools.product(range(K), repeat=m):
        pr = mp.mpf(mu[path[0]])
        for a, b in zip(path[:-1], path[1:]):
            pr *= mp.mpf(P[a, b])
        out.append((path, pr, mp.mpf(reward_of(path))))
    return out


def brute_tilt(paths, lam):
    lam = mp.mpf(lam)
    w = [pr * mp.e ** (lam * s) for _, pr, s in paths]
    Z = mp.fsum(w)
    es = mp.fsum(wi * s for wi, (_, _, s) in zip(w, paths)) / Z
    var = mp.fsum(wi * (s - es) ** 2 for wi, (_, _, s) in zip(w, paths)) / Z
    return {
        "log_z": mp.log(Z),
        "reward": es,
        "kl": lam * es - mp.log(Z),
        "var": var,
        "logphi": {p: mp.log(wi / Z) for wi, (p, _, _) in zip(w, paths)},
    }


def brute_law(paths):
    law = {}
    for _, pr, s in paths:
        key = mp.nstr(s, 30)
        law[key] = law.get(key, mp.mpf(0)) + pr
    vals = sorted(law, key=mp.mpf)
    return [mp.mpf(v) for v in vals], [law[v] for v in vals]


def brute_bon(values, q, log_n, lam=None, log_z=None):
    """Exact BoN (reward, KL to p, KL to the tilted optimum) on a law of S_m, mpmath."""
    N = mp.e ** mp.mpf(log_n)
    F = mp.mpf(0)
    rew = kl = klo = mp.mpf(0)
    for v, qi in zip(values, q):
        Fm, F = F, F + qi
        d = F**N - Fm**N
        rew += v * d
        if d > 0:
            kl += d * mp.log(d / qi)
            if lam is not None:
                klo += d * mp.log(d / (qi * mp.e ** (mp.mpf(lam) * v - log_z)))
    return rew, kl, klo


def rel(a, b):
    return abs(float(a) - float(b)) / max(abs(float(b)), 1e-300)


# --------------------------------------------------------- exact optimum
@pytest.mark.parametrize("kind", ["dense", "sparse"])
@pytest.mark.parametrize("lam", [0.3, 2.0])
def test_tilted_per_token_matches_enumeration(kind, lam):
    mu, P = _chain(1)
    r = np.array([0.0, 0.5, 2.0])
    m = 6
    T = P if kind == "dense" else sp.csr_matrix(P)
    mk = Markov(mu, T, r, length=m)
    opt = mk.tilted(lam=lam)
    ex = brute_tilt(brute(mu, P, m, lambda p: sum(r[y] for y in p)), lam)
    assert rel(opt.reward, ex["reward"]) < RTOL
    assert rel(opt.kl, ex["kl"]) < RTOL
    assert rel(opt.log_partition, ex["log_z"]) < RTOL
    assert rel(opt.reward_variance, ex["var"]) < 1e-9
    assert opt.reward_per_token == pytest.approx(opt.reward / m, rel=1e-15)
    # path probabilities of the non-homogeneous chain
    paths = np.array(list(itertools.product(range(3), repeat=m)))
    lp = opt.logprob(paths)
    want = np.array([float(ex["logphi"][tuple(p)]) for p in paths])
    np.testing.assert_allclose(lp, want, rtol=1e-12, atol=1e-12)
    assert abs(float(np.exp(lp).sum()) - 1.0) < 1e-13


def test_tilted_per_transition_matches_enumeration():
    mu, P = _chain(2)
    P[0, 2] = 0.0
    P /= P.sum(axis=1, keepdims=True)
    R = np.array([[0.0, 1.5, 9.0], [0.5, -1.0, 0.0], [2.0, 0.5, 1.0]])
    m = 6
    paths = brute(mu, P, m, lambda p: sum(R[a, b] for a, b in zip(p[:-1], p[1:])))
    for T in (P, sp.csr_matrix(P)):
        mk = Markov(mu, T, R, length=m)
        assert not mk.per_token and mk.n_terms == m - 1
        for lam in (0.0, 0.7, 3.0):
            opt = mk.tilted(lam=lam)
            ex = brute_tilt(paths, lam)
            assert rel(opt.reward, ex["reward"]) < RTOL
            assert abs(opt.kl - float(ex["kl"])) <= RTOL * max(float(ex["kl"]), 1e-300) + 1e-15
            assert abs(opt.log_partition - float(ex["log_z"])) <= RTOL * abs(float(ex["log_z"])) + 1e-15
        # the solver hits the budget and the largest reward ignores the forbidden 0 -> 2 edge
        assert mk.tilted(kl=1.5).kl == pytest.approx(1.5, rel=1e-12)
        assert mk.max_reward == pytest.approx(float(max(s for _, pr, s in paths if pr > 0)), rel=1e-15)


def test_kl_budget_and_saturation():
    mu, P = _chain(3)
    r = np.array([0.0, 0.5, 2.0])
    m = 5
    paths = brute(mu, P, m, lambda p: sum(r[y] for y in p))
    top = max(s for _, _, s in paths)
    p_top = mp.fsum(pr for _, pr, s in paths if s == top)
    mk = Markov(mu, P, r, length=m)
    assert rel(mk.kl_max, -mp.log(p_top)) < 1e-13
    assert mk.max_reward == float(top) and mk.min_reward == 0.0
    for d in (1e-3, 0.5, 0.9 * mk.kl_max, 0.999 * mk.kl_max):
        opt = mk.tilted(kl=d)
        assert opt.kl == pytest.approx(d, rel=1e-12) and not opt.saturated
        ex = brute_tilt(paths, opt.lam)
        assert rel(opt.reward, ex["reward"]) < RTOL
    sat = mk.tilted(kl=mk.kl_max + 1)
    assert sat.saturated and sat.lam == np.inf and sat.reward == float(top)
    samples = sat.sample(50, seed=1)
    assert (r[samples].sum(axis=1) == float(top)).all()
    assert mk.tilted(kl=0).kl == 0 and mk.tilted(kl=0).reward == pytest.approx(mk.mean_reward)
    assert mk.tilted(beta=0.5).lam == 2.0


def _normalised(P):
    """mpmath rows of ``P`` divided by their exact sums (what the engine's law is)."""
    return [[mp.mpf(float(x)) / mp.fsum(mp.mpf(float(y)) for y in row) for x in row] for row in P]


def brute_exact(mu, P, m, r):
    """Like :func:`brute`, on exactly normalised rows and initial law (no float rounding of masses)."""
    Pn = _normalised(P)
    mun = _normalised([mu])[0]
    out = []
    for path in itertools.product(range(len(mu)), repeat=m):
        pr = mun[path[0]]
        for a, b in zip(path[:-1], path[1:]):
            pr *= Pn[a][b]
        out.append((path, pr, mp.mpf(sum(r[y] for y in path))))
    return out


@pytest.mark.parametrize("kind", ["dense", "sparse", "backoff"])
def test_tiny_transition_masses_keep_relative_accuracy(kind):
    """Row masses like ``1 - 7e-111``: KL, log Z and kl_max of order 1e-110 keep their digits.

    The largest entry of each row rounds to 1 in floats; its log-mass ``-7e-111`` and each
    row sum ``1 + 7e-111 e^{-10 lam}`` are still formed exactly (largest term apart).
    """
    tiny = 7.04e-111
    r = [-3.0, 7.0]
    mu = [tiny, 1.0]
    P = np.array([[tiny, 1.0], [2.5 * tiny, 1.0]])
    if kind == "dense":
        T = P
    elif kind == "sparse":
        T = sp.csr_matrix(P)
    else:  # the same rows as a sparse part (the tiny entries) plus a rank-one backoff onto state 1
        T = BackoffTransition(sp.csr_matrix([[tiny, 0.0], [2.5 * tiny, 0.0]]), [1.0, 1.0], [0.0, 1.0])
    m = 3
    with mp.workdps(160):  # masses 1 - 7e-111 need more than 110 digits
        _tiny_checks(kind, T, mu, P, r, m, tiny)


def _tiny_checks(kind, T, mu, P, r, m, tiny):
    paths = brute_exact(mu, P, m, r) if kind != "backoff" else brute_exact(mu, T.toarray(), m, r)
    mk = Markov(mu, T, r, length=m)
    top = max(s for _, _, s in paths)
    assert rel(mk.kl_max, -mp.log(mp.fsum(pr for _, pr, s in paths if s == top))) < 1e-12
    for lam in (0.05, 0.7, 3.0):
        opt = mk.tilted(lam=lam)
        ex = brute_tilt(paths, lam)
        assert float(ex["kl"]) < 1e-108
        assert rel(opt.kl, ex["kl"]) < 1e-10
        assert rel(opt.log_partition, ex["log_z"]) < 1e-12
        assert rel(opt.reward, ex["reward"]) < 1e-14
        assert rel(opt.reward_variance, ex["var"]) < 1e-9
    # a budget above the old floor (the initial law's share alone) is met, not saturated
    d = 0.5 * mk.kl_max
    opt = mk.tilted(kl=d)
    assert not opt.saturated and rel(opt.kl, d) < 1e-10
    # the i.i.d. chain is the memoryless model, relatively at this scale
    iid = Markov([tiny, 1.0], [[tiny, 1.0]] * 2, r, length=m)
    mem = kf.Memoryless(kf.Reference(r, probs=[tiny, 1.0]), m)
    assert rel(iid.kl_max, mem.tilted(kl=1e300).kl) < 1e-12
    a, b = iid.tilted(kl=8.4e-111), mem.tilted(kl=8.4e-111)
    assert rel(a.kl, b.kl) < 1e-10 and rel(a.lam, b.lam) < 1e-8


def test_samples_follow_the_policy():
    mu, P = _chain(4, K=2)
    mk = Markov(mu, P, [0.0, 1.0], length=4)
    opt = mk.tilted(kl=0.8)
    y = opt.sample(40_000, seed=7)
    codes = y @ (2 ** np.arange(4))
    freq = np.bincount(codes, minlength=16) / y.shape[0]
    paths = np.array(list(itertools.product(range(2), repeat=4)))
    prob = np.exp(opt.logprob(paths))
    order = paths @ (2 ** np.arange(4))
    z = (freq[order] - prob) / np.sqrt(prob * (1 - prob) / y.shape[0])
    assert np.abs(z).max() < 4.5
    np.testing.assert_allclose(opt.position_rewards().sum(), opt.reward, rtol=1e-12)


# ------------------------------------------------------------- BoN, law
def test_reward_law_and_bon_match_enumeration():
    mu, P = _chain(5)
    r = np.array([0.0, 0.5, 2.0])
    m = 6
    mk = Markov(mu, P, r, length=m)
    paths = brute(mu, P, m, lambda p: sum(r[y] for y in p))
    vals, q = brute_law(paths)
    law = mk.reward_law()
    np.testing.assert_allclose(law.values, [float(v) for v in vals], rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.exp(law.logpmf), [float(x) for x in q], rtol=1e-12)
    for log_n in (0.5, np.log(7.3), 4.0, 9.0):
        b = mk.best_of_n(log_n=log_n)
        opt = mk.tilted(kl=log_n)
        lz = brute_tilt(paths, opt.lam)["log_z"]
        rew, kl, klo = brute_bon(vals, q, log_n, opt.lam, lz)
        assert rel(b.reward, rew) < RTOL
        assert rel(b.kl, kl) < 1e-9
        assert rel(b.kl_to_optimal, klo) < 1e-9
        assert rel(b.optimal_reward, opt.reward) < 1e-14
        assert b.kl <= b.kl_bound + 1e-12
        # theory §2 identity: KL(π||φ) = KL(π||p) - λ E S + log Z
        assert b.details["kl_to_optimal_identity"] == pytest.approx(b.kl_to_optimal, rel=1e-9)
        assert b.error_bound < 1e-10


def test_bon_per_transition_and_saturated():
    mu, P = _chain(6)
    R = np.array([[0.0, 1.0, 3.0], [1.0, 0.0, 2.0], [2.0, 1.0, 0.0]])
    m = 5
    mk = Markov(mu, P, R, length=m)
    paths = brute(mu, P, m, lambda p: sum(R[a, b] for a, b in zip(p[:-1], p[1:])))
    vals, q = brute_law(paths)
    for log_n in (1.0, 6.0, mk.kl_max + 2.0):
        b = mk.best_of_n(log_n=log_n)
        rew, kl, _ = brute_bon(vals, q, log_n)
        assert rel(b.reward, rew) < RTOL and rel(b.kl, kl) < 1e-9
    assert b.kl_to_optimal == np.inf and b.lam == np.inf


def test_per_transition_sparse_rewards_agree_with_dense():
    P = np.array([[0.5, 0.5, 0], [0, 0.3, 0.7], [0.6, 0, 0.4]])
    R = np.array([[1.0, 2, 0], [0, 0, 1], [3, 0, 0.5]])
    a = Markov([1 / 3] * 3, P, R, length=12)
    b = Markov([1 / 3] * 3, sp.csr_matrix(P), sp.csr_matrix(R), length=12)
    assert b.tilted(kl=2.0).reward == pytest.approx(a.tilted(kl=2.0).reward, rel=1e-13)
    for ln in (1.0, 3.0):
        assert b.best_of_n(log_n=ln).reward == pytest.approx(a.best_of_n(log_n=ln).reward, rel=1e-12)
    np.testing.assert_allclose(b.reward_law().logpmf, a.reward_law().logpmf, rtol=1e-12)
    # the DP must leave the chain untouched (sparse index arrays are shared)
    np.testing.assert_array_equal(b._ch.P.toarray(), P)
    assert b.perron(0.3).variance == pytest.approx(a.perron(0.3).variance, rel=1e-10)


def test_best_of_n_refuses_non_lattice_rewards():
    mu, P = _chain(7)
    mk = Markov(mu, P, [0.0, 1.0, np.sqrt(2.0)], length=4)
    with pytest.raises(ValueError, match="lattice"):
        mk.best_of_n(log_n=2.0)
    assert mk.tilted(kl=1.0).kl == pytest.approx(1.0, rel=1e-12)  # the optimum needs no lattice
    assert mk.best_of_n(n=1).kl == 0.0


# ---------------------------------------------- representations agree
def test_sparse_dense_and_backoff_agree():
    rng = np.random.default_rng(11)
    K, m = 30, 40
    S = sp.random(K, K, density=0.15, random_state=12, data_rvs=lambda n: rng.random(n) + 0.1).tocsr()
    row = np.asarray(S.sum(axis=1)).ravel()
    alpha = 0.3
    S = sp.diags((1 - alpha) / np.where(row > 0, row, 1.0)) @ S
    w = np.where(row > 0, alpha, 1.0)
    b = rng.random(K) + 0.01
    b /= b.sum()
    bt = BackoffTransition(S, w, b)
    dense = bt.toarray()
    r = np.round(rng.normal(size=K), 1)
    mu = np.full(K, 1.0 / K)
    mks = [
        Markov(mu, dense, r, length=m),
        Markov(mu, sp.csr_matrix(dense), r, length=m),
        Markov(mu, bt, r, length=m),
    ]
    assert [x.transition_kind for x in mks] == ["dense", "sparse", "backoff"]
    opts = [x.tilted(kl=8.0) for x in mks]
    for o in opts[1:]:
        assert o.lam == pytest.approx(opts[0].lam, rel=1e-11)
        assert o.reward == pytest.approx(opts[0].reward, rel=1e-12)
        assert o.kl == pytest.approx(8.0, rel=1e-12)
    bons = [x.best_of_n(log_n=8.0) for x in mks]
    for bb in bons[1:]:
        assert bb.reward == pytest.approx(bons[0].reward, rel=1e-11)
        assert bb.kl == pytest.approx(bons[0].kl, rel=1e-10)
    prs = [x.perron(0.7) for x in mks]
    for pr in prs[1:]:
        assert pr.log_rho == pytest.approx(prs[0].log_rho, rel=1e-12)
        assert pr.derivative == pytest.approx(prs[0].derivative, rel=1e-10)
        assert pr.variance == pytest.approx(prs[0].variance, rel=1e-9)


def test_large_sparse_perron_uses_arpack_and_agrees_with_dense():
    from klfrontier.sequences import markov as mkmod

    rng = np.random.default_rng(3)
    K = 60
    P = rng.random((K, K)) ** 4
    P /= P.sum(axis=1, keepdims=True)
    r = np.round(rng.normal(size=K), 1)
    mk = Markov(np.full(K, 1 / K), sp.csr_matrix(P), r, length=5)
    dense = mk.perron(0.4)
    old = mkmod._DENSE_EIG
    try:
        mkmod._DENSE_EIG = 10
        it = mk.perron(0.4)
        d2 = mk.doob(lam=0.4)
    finally:
        mkmod._DENSE_EIG = old
    assert it.log_rho == pytest.approx(dense.log_rho, rel=1e-12)
    assert it.derivative == pytest.approx(dense.derivative, rel=1e-10)
    assert it.variance == pytest.approx(dense.variance, rel=1e-8)
    assert d2.kl_rate_direct == pytest.approx(d2.kl_rate, rel=1e-9)


# -------------------------------------------------- memoryless special case
def test_memoryless_is_the_special_case():
    p = np.array([0.5, 0.3, 0.2])
    r = np.array([0.0, 0.5, 2.0])
    ref = kf.Reference(r, probs=p)
    m = 60
    mk = kf.Markov(p, np.tile(p, (3, 1)), r, length=m)
    ml = kf.Memoryless(ref, length=m)
    for kl in (0.5, 6.0, 30.0):
        a, b = mk.tilted(kl=kl), ml.tilted(kl=kl)
        assert a.reward == pytest.approx(b.reward, rel=RTOL)
        assert a.lam == pytest.approx(b.lam, rel=RTOL)
    for log_n in (0.7, 6.0, 30.0, 80.0):
        a, b = mk.best_of_n(log_n=log_n), ml.best_of_n(log_n=log_n)
        assert a.reward == pytest.approx(b.reward, rel=RTOL)
        assert a.kl == pytest.approx(b.kl, rel=RTOL)
        assert a.kl_to_optimal == pytest.approx(b.kl_to_optimal, rel=1e-9)
    law_a = mk.with_length(12).reward_law()
    law_b = kf.reward_law(ref, 12)
    np.testing.assert_allclose(law_a.values, law_b.values, atol=1e-12)
    np.testing.assert_allclose(law_a.logpmf, law_b.logpmf, rtol=1e-10)
    e1, e2 = kf.equivalence(ref, 0.1), kf.equivalence(mk, 0.1)
    assert isinstance(e2, MarkovEquivalence) and isinstance(e2, kf.Equivalence)
    for f in ("lam", "x_star", "frontier_reward", "sigma2", "I0_at_x_star"):
        assert getattr(e2, f) == pytest.approx(getattr(e1, f), rel=RTOL)
    assert e2.lattice == e1.lattice
    np.testing.assert_allclose(e2.gap_prediction([50, 101]), e1.gap_prediction([50, 101]), rtol=1e-10)
    np.testing.assert_allclose(
        e2.kl_to_optimal_prediction([50, 101]), e1.kl_to_optimal_prediction([50, 101]), rtol=1e-10
    )
    c1 = kf.convergence(ref, 0.1, lengths=[20, 100])
    c2 = kf.convergence(mk, 0.1, lengths=[20, 100])
    assert isinstance(c2, kf.ConvergenceTable)
    for r1, r2 in zip(c1.rows, c2.rows):
        for k in (
            "reward_per_token",
            "optimal_reward",
            "gap",
            "kl_per_token",
            "kl_to_optimal",
            "gap_prediction",
            "kl_to_optimal_prediction",
        ):
            assert r2[k] == pytest.approx(r1[k], rel=1e-10), k
    assert set(c1.to_dict()) <= set(c2.to_dict())


# ---------------------------------------------------------- Perron root
def test_perron_derivatives_match_finite_differences_and_limits():
    mu, P = _chain(8)
    r = np.array([0.0, 0.5, 2.0])
    R = np.array([[0.0, 1.0, 0.3], [0.2, 0.0, 2.0], [1.0, 0.1, 0.0]])
    for rew in (r, R):
        mk = Markov(mu, P, rew, length=3)
        h = 1e-4
        pr = mk.perron(0.5)
        lo, hi = mk.perron(0.5 - h), mk.perron(0.5 + h)
        assert pr.derivative == pytest.approx((hi.log_rho - lo.log_rho) / (2 * h), rel=1e-7)
        assert pr.variance == pytest.approx((hi.derivative - lo.derivative) / (2 * h), rel=1e-7)
        # Λ(θ) = lim (1/m) log E e^{θ S_m}: the finite-m log Z per step converges like 1/m
        lz = [mk.with_length(m).tilted(lam=0.5).log_partition for m in (200, 400)]
        assert lz[1] - lz[0] == pytest.approx(200 * pr.log_rho, rel=1e-9)
        d = mk.doob(lam=0.5)
        assert d.kl_rate == pytest.approx(0.5 * pr.derivative - pr.log_rho, rel=1e-14)
        assert d.kl_rate_direct == pytest.approx(d.kl_rate, rel=1e-10)
        Q = d.transition()
        np.testing.assert_allclose(Q.sum(axis=1), 1.0, rtol=1e-13)
        np.testing.assert_allclose(d.stationary @ Q, d.stationary, rtol=1e-12)


def test_finite_m_optimum_converges_to_the_doob_chain():
    mu, P = _chain(9)
    mk = Markov(mu, P, [0.0, 0.5, 2.0], length=10)
    delta = 0.2
    doob = mk.doob(kl_rate=delta)
    assert doob.kl_rate == pytest.approx(delta, rel=1e-12)
    gaps = []
    for m in (50, 200, 800):
        opt = mk.with_length(m).tilted(kl=m * delta)
        gaps.append(opt.reward_per_token - doob.reward_rate)
        assert opt.kl_per_token == pytest.approx(delta, rel=1e-12)
    gaps = np.array(gaps)
    # O(1/m): m * gap settles (to the boundary correction of the finite-m optimum)
    mg = gaps * np.array([50, 200, 800])
    assert abs(gaps[-1]) < abs(gaps[0]) / 10
    assert abs(mg[2] - mg[1]) < 0.05 * abs(mg[1])
    # the middle of a long optimal chain is the stationary Doob chain
    pos = mk.with_length(400).tilted(lam=doob.lam).position_rewards()
    assert pos[200] == pytest.approx(doob.reward_rate, rel=1e-10)


def test_rate_function_legendre():
    mu, P = _chain(10)
    mk = Markov(mu, P, [0.0, 0.5, 2.0], length=5)
    eq = kf.equivalence(mk, 0.15)
    assert eq.I0_at_x_star == pytest.approx(0.15, rel=1e-10)
    assert mk.rate_function(eq.x_star) == pytest.approx(0.15, rel=1e-10)
    base = mk.perron(0.0).derivative
    assert mk.rate_function(base) == pytest.approx(0.0, abs=1e-14)
    assert mk.rate_function(-0.1) == np.inf and mk.rate_function(2.5) == np.inf
    # I(x) ≈ -(1/m) log P(S_m = x m): exact law at m = 400 within O(log m / m)
    law = mk.with_length(400).reward_law()
    x = 1.0
    i = int(np.argmin(np.abs(law.values - 400 * x)))
    assert -law.logpmf[i] / 400 == pytest.approx(mk.rate_function(law.values[i] / 400), abs=0.02)


# ------------------------------------------------- equivalence, tables
def test_equivalence_table_irreducible_aperiodic():
    mu, P = _chain(12, K=2)
    mk = Markov(mu, P, [0.0, 1.0], length=10)
    assert mk.structure() == {"irreducible": True, "n_classes": 1, "period": 1}
    tab = kf.convergence(mk, 0.1, lengths=[20, 80, 320])
    gaps = [r["gap"] for r in tab.rows]
    assert gaps[0] > gaps[1] > gaps[2] > 0
    assert abs(tab.rows[-1]["kl_per_token"] - 0.1) < abs(tab.rows[0]["kl_per_token"] - 0.1)
    kpt = [r["kl_to_optimal_per_token"] for r in tab.rows]
    assert kpt[0] > kpt[1] > kpt[2]
    # the second-order term (finite-m tilt, lattice Gumbel form) closes in on the exact gap
    ratios = [r["gap_ratio"] for r in tab.rows]
    assert abs(ratios[-1] - 1) < 0.03 and abs(ratios[-1] - 1) < abs(ratios[0] - 1)
    assert tab.rows[-1]["kl_to_optimal_ratio"] == pytest.approx(1.0, abs=0.06)
    assert all(r["exact"] and r["error_bound"] < 1e-9 for r in tab.rows)
    text = tab.to_text()
    assert "markov-dp" in text and "lam_m" in tab.to_dict()


def _periodic():
    P = np.array([[0, 0, 0.7, 0.3], [0, 0, 0.7, 0.3], [0.6, 0.4, 0, 0], [0.6, 0.4, 0, 0]])
    return Markov([0.5, 0.5, 0, 0], P, [0.0, 1.0, 0.0, 2.0], length=10)


def test_periodic_chain_documented():
    """Period 2: ±ρ are both eigenvalues of P_θ.  Λ = log ρ is still right; the O(1/m)
    terms alternate with the parity of m, and the equivalence still holds."""
    mk = _periodic()
    assert mk.structure() == {"irreducible": True, "n_classes": 1, "period": 2}
    eq = kf.equivalence(mk, 0.1)
    ev = np.linalg.eigvals(
        np.array([[0, 0, 0.7, 0.3], [0, 0, 0.7, 0.3], [0.6, 0.4, 0, 0], [0.6, 0.4, 0, 0]])
        * np.exp(eq.lam * np.array([0, 1, 0, 2]))[None, :]
    )
    assert np.sort(np.abs(ev))[-2] == pytest.approx(np.exp(mk.perron(eq.lam).log_rho))  # ±ρ
    assert eq.lam == pytest.approx(0.57034403007704, rel=1e-10)
    assert eq.x_star == pytest.approx(0.84338920843012, rel=1e-10)
    # m (R_m - x*) alternates in sign with the parity of m: +0.1002, -0.0992 at m = 10, 11
    d = {m: mk.with_length(m).tilted(kl=0.1 * m).reward_per_token - eq.x_star for m in (160, 161)}
    assert 160 * d[160] == pytest.approx(0.1002, abs=2e-3) and 161 * d[161] == pytest.approx(
        -0.0978, abs=2e-3
    )
    tab = kf.convergence(mk, 0.1, lengths=[80, 81, 320])
    assert tab.rows[2]["gap"] < tab.rows[0]["gap"]
    assert tab.rows[0]["gap"] == pytest.approx(0.040479, rel=1e-4)
    assert tab.rows[1]["gap"] == pytest.approx(0.039944, rel=1e-4)
    assert tab.rows[2]["gap_ratio"] == pytest.approx(1.016, abs=0.01)


def _reducible():
    P = np.zeros((4, 4))
    P[:2, :2] = 0.5
    P[2:, 2:] = [[0.9, 0.1], [0.9, 0.1]]
    return Markov([0.25] * 4, P, [0.0, 1.0, 0.0, 1.0], length=10)


def test_reducible_chain_documented():
    """Two closed classes A (fair coin) and B (10% ones), half the mass each.

    Λ(θ) = max(Λ_A, Λ_B) has a kink at 0; for δ > 0 class A dominates, the Perron vectors
    vanish on B, and the finite-m optimum pays log 2 nats to pick A: its per-token reward
    falls short of the Doob value by (log 2)/(λ m) + o(1/m).  The Legendre transform is
    the convex hull of min(I_A, I_B): 0 on [0.1, 0.5], while the true rate at 0.3 is
    I_A(0.3) = KL(Bern .3 || Bern .5) = 0.0823 (Gärtner–Ellis does not apply)."""
    mk = _reducible()
    assert mk.structure() == {"irreducible": False, "n_classes": 2, "period": None}
    eq = kf.equivalence(mk, 0.1)
    np.testing.assert_allclose(eq.doob.stationary[2:], 0.0, atol=1e-14)
    lam_a = float(kf.solve_lam_for_kl(kf.Reference([0.0, 1.0], probs=[0.5, 0.5]), 0.1))
    assert eq.lam == pytest.approx(lam_a, rel=1e-10)
    m = 640
    short = m * (eq.x_star - mk.with_length(m).tilted(kl=0.1 * m).reward_per_token)
    assert short == pytest.approx(np.log(2) / eq.lam, rel=0.01)
    assert mk.rate_function(0.3) == 0.0
    law = mk.with_length(800).reward_law()
    i = int(np.argmin(np.abs(law.values - 240)))
    assert -law.logpmf[i] / 800 == pytest.approx(0.0875, abs=1e-3)  # → 0.0823 as m grows
    tab = kf.convergence(mk, 0.1, lengths=[80, 320])
    assert tab.rows[1]["gap"] < tab.rows[0]["gap"]


# ------------------------------------------------------------ properties
@st.composite
def chains(draw):
    K = draw(st.integers(2, 3))
    m = draw(st.integers(2, 4))
    P = np.array([[draw(st.floats(0.05, 1.0)) for _ in range(K)] for _ in range(K)])
    P /= P.sum(axis=1, keepdims=True)
    r = np.array([draw(st.integers(-3, 3)) for _ in range(K)], dtype=float) * 0.5
    mu = np.full(K, 1.0 / K)
    return mu, P, r, m


@settings(max_examples=25, deadline=None)
@given(chains(), st.floats(0.05, 3.0), st.floats(0.1, 8.0))
def test_properties_against_numpy_enumeration(ch, lam, log_n):
    mu, P, r, m = ch
    mk = Markov(mu, P, r, length=m)
    K = len(mu)
    paths = np.array(list(itertools.product(range(K), repeat=m)))
    logp = np.log(mu[paths[:, 0]]) + np.log(P[paths[:, :-1], paths[:, 1:]]).sum(axis=1)
    S = r[paths].sum(axis=1)
    w = logp + lam * S
    lz = np.logaddexp.reduce(w)
    phi = np.exp(w - lz)
    opt = mk.tilted(lam=lam)
    assert opt.reward == pytest.approx(phi @ S, rel=1e-9, abs=1e-12)
    assert opt.kl == pytest.approx(float(np.sum(phi * (w - lz - logp))), rel=1e-8, abs=1e-12)
    if r.min() == r.max():
        return
    b = mk.best_of_n(log_n=log_n)
    assert -1e-12 <= b.kl <= b.kl_bound + 1e-12
    assert b.reward <= mk.max_reward + 1e-12
    if np.isfinite(b.kl_to_optimal):
        assert b.details["kl_to_optimal_identity"] == pytest.approx(b.kl_to_optimal, rel=1e-7, abs=1e-10)
        assert b.reward <= b.optimal_reward + 1e-9  # no policy beats the optimum at its KL
    fr = mk.frontier([0.1, 0.5, 1.0])
    assert np.all(np.diff(fr.reward) >= -1e-12)


# ------------------------------------------------------------- errors
def test_errors_name_the_argument():
    mu, P = _chain(13)
    with pytest.raises(ValueError, match="rows must sum to 1"):
        Markov(mu, P * 1.1, [0, 1, 2], length=3)
    mk = Markov(mu, P, [0, 1, 2], length=3)
    for kw in ({}, {"lam": 1.0, "kl_rate": 0.1}):
        with pytest.raises(ValueError, match=r"give exactly one of lam= or kl_rate="):
            mk.doob(**kw)
    with pytest.raises(ValueError, match="^t must be finite"):
        mk.perron(np.inf)
    with pytest.raises(ValueError, match="initial"):
        Markov([0.5, 0.6, 0.1], P, [0, 1, 2], length=3)
    with pytest.raises(ValueError, match="rewards must have shape"):
        Markov(mu, P, [0, 1], length=3)
    with pytest.raises(ValueError, match="length"):
        Markov(mu, P, [0, 1, 2], length=0)
    with pytest.raises(ValueError, match="rewards must be finite"):
        Markov(mu, P, [0, np.nan, 2], length=3)
    mk = Markov(mu, P, [0, 1, 2], length=3)
    with pytest.raises(ValueError, match="exactly one"):
        mk.tilted(kl=1.0, lam=1.0)
    with pytest.raises(ValueError, match="kl must be >= 0"):
        mk.tilted(kl=-1)
    with pytest.raises(ValueError, match="log_n"):
        mk.best_of_n(log_n=-1)
    with pytest.raises(ValueError, match="delta"):
        kf.equivalence(mk, 0.0)
    with pytest.raises(ValueError, match="saturation"):
        kf.equivalence(mk, 50.0)
    with pytest.raises(ValueError, match="BackoffTransition"):
        Markov(mu, BackoffTransition(sp.csr_matrix((3, 3)), [1, 1, 1], mu), np.zeros((3, 3)), length=3)


# ------------------------------------------------------ the real instance
needs_data = pytest.mark.skipif(
    importlib.util.find_spec("gensim") is None or importlib.util.find_spec("vaderSentiment") is None,
    reason="needs the data extra (gensim, vaderSentiment)",
)


@needs_data
def test_bigram_instance_runs_in_seconds_at_m_200():
    from klfrontier.instances.bigram import END, bigram_vader, tokenize

    t0 = time.perf_counter()
    inst = bigram_vader()
    mk = inst.markov
    assert inst.size == 4043 and mk.length == 200 and inst.lattice == 0.1
    assert inst.words[0] == END and mk.structure()["irreducible"]
    opt = mk.tilted(kl=200 * 0.2)
    secs = time.perf_counter() - t0
    assert opt.kl == pytest.approx(40.0, rel=1e-12)
    assert secs < 30  # a few seconds unshared; generous for a loaded CI machine
    assert opt.reward_per_token > inst.ref.mean_reward + 0.2
    text = inst.decode(opt.sample(1, seed=0)[0])
    assert text.count(".") >= 1 and "</s>" not in text
    assert tokenize("It's 5 p.m. now!") == ["it's", "p", END, "m", END, "now", END]
    # memoryless approximation: the stationary unigram law with the same reward
    assert inst.ref.size == 4043 and inst.ref.mean_reward == pytest.approx(
        mk.perron(0.0).derivative, rel=1e-9
    )


@needs_data
def test_bigram_demo_sections_small(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from klfrontier import jobs, jobs_markov
    from klfrontier.report import write_report

    job = jobs_markov.bigram_demo_job(
        min_count=30, length=30, deltas=(0.2, 1.0), bon_length=6, conv_lengths=(4, 8), conv_deltas=(0.2,)
    )
    assert [s.heading[0] for s in job.sections] == ["1", "2", "3", "4", "5"]
    rows = {r["delta"]: r for r in job.summary["memoryless_vs_markov"]}
    assert set(rows) == {0.2, 1.0}
    conv = job.summary["convergence"]["0.2"]
    assert conv["m"] == [4, 8] and all(conv["exact"])
    samples = job.summary["samples"]
    assert len(samples) == 3 and all(len(v) == 3 for v in samples.values())
    write_report(tmp_path, job.title, job.sections, job.summary, lead=job.lead)
    assert (tmp_path / "bigram_frontier.png").stat().st_size > 0
    # `klfrontier demo --instance bigram` goes to this builder
    monkeypatch.setattr(jobs_markov, "bigram_demo_job", lambda progress=None: "bigram job")
    assert jobs.demo_job("bigram") == "bigram job"
