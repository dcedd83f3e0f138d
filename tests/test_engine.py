"""The tilt engine (``klfrontier._engine``) and the best-of-N kernel against mpmath at 50 digits.

Levels with masses down to 1e-300, values spread to +-1e300 (through the
standardisation of ``Reference``), ties, batches of laws, and the solvers on
the hard cases: plateaus of D, step-like means, mass ~1 at one outcome.
"""

from __future__ import annotations

import mpmath as mp
import numpy as np
import pytest

from klfrontier import Reference
from klfrontier import _bon_kernel as bk
from klfrontier import _engine as en
from klfrontier.errors import ConvergenceError

mp.mp.dps = 50


def _mp_stats(logq, u, lam):
    """Exact ``Lambda``, mean, variance, k3, k4 and ``D`` of the tilt by ``lam`` (mpmath).

    At 700 digits: ``D`` and the gain are formed as differences of O(1)
    numbers and must resolve values near 1e-600; the results keep 50.
    """
    with mp.workdps(700):
        out = _mp_stats_raw(logq, u, lam)
    return {k: +v for k, v in out.items()}


def _mp_stats_raw(logq, u, lam):
    lam = mp.mpf(lam)
    lq = [mp.mpf(x) for x in logq]
    uu = [mp.mpf(x) for x in u]
    ex = [a + lam * b for a, b in zip(lq, uu)]
    top = max(ex)
    z = mp.fsum(mp.exp(e - top) for e in ex)
    zq = mp.fsum(mp.exp(a) for a in lq)
    lam_ = top + mp.log(z) - mp.log(zq)
    phi = [mp.exp(e - top) / z for e in ex]
    mean = mp.fsum(p * b for p, b in zip(phi, uu))
    c = [mp.fsum(p * (b - mean) ** k for p, b in zip(phi, uu)) for k in (2, 3, 4)]
    q = [mp.exp(a) / zq for a in lq]
    kl = mp.fsum(p * (mp.log(p) - mp.log(qq)) for p, qq in zip(phi, q) if p > 0)
    mu0 = mp.fsum(qq * b for qq, b in zip(q, uu))
    return {
        "cgf": lam_,
        "mean": mean,
        "var": c[0],
        "k3": c[1],
        "k4": c[2] - 3 * c[0] ** 2,
        "kl": kl,
        "gain": mean - mu0,
    }


def _rel(a, b):
    b = mp.mpf(b)
    return float(abs(mp.mpf(float(a)) - b) / abs(b)) if b != 0 else abs(float(a))


LAWS = {
    "bernoulli": (np.log([0.5, 0.5]), [-1.0, 0.0]),
    "tiny_masses": (
        np.array([np.log1p(-1e-6 - 1e-12), np.log(1e-6), np.log(1e-12), np.log(1e-300)]),
        [-1.0, -0.5, -0.25, 0.0],
    ),
    "mass_one_below_top": (np.array([np.log(1e-300), 0.0, np.log(1e-200)]), [-1.0, -1e-3, 0.0]),
    "skewed": (np.log([0.9, 0.09, 0.009, 0.001]), [-1.0, -0.7, -0.2, 0.0]),
}
LAMS = [1e-300, -1e-12, 1e-7, 5e-4, -0.3, 2.0, 40.0, -250.0, 1e4]


@pytest.mark.parametrize("name", sorted(LAWS))
def test_tilt_stats_match_mpmath(name):
    logq, u = LAWS[name]
    law = en.LevelLaw(logq, np.array(u))
    st = en.tilt_stats(law, LAMS)
    for i, lam in enumerate(LAMS):
        ex = _mp_stats(logq, u, lam)
        # D and the gain to full relative accuracy wherever they are above the underflow
        if abs(ex["kl"]) > 1e-290:
            assert _rel(st.kl[i], ex["kl"]) < 1e-9, (name, lam, "kl")
        # the gain: relative, up to eps |lam| sd (the rounding of the p-mean inside the
        # centred covariance; it shows only when the whole variance sits in masses ~1e-200)
        err = abs(float(st.gain[i]) - float(ex["gain"]))
        assert err <= 1e-9 * abs(float(ex["gain"])) + 1e-15 * abs(lam) * law.sd, (name, lam, "gain")
        # locations: absolute to a few eps of the unit range; scale quantities relative to spread
        assert abs(float(st.mean[i]) - float(ex["mean"])) < 1e-14, (name, lam, "mean")
        assert abs(float(st.cgf[i]) - float(ex["cgf"])) <= 1e-13 * max(1.0, abs(float(ex["cgf"])))
        if ex["var"] > 1e-250:
            assert abs(float(st.var[i]) - float(ex["var"])) <= 1e-10 * float(ex["var"]) + 1e-16


def test_stats4_and_series_agree_with_mpmath_cumulants():
    logq, u = LAWS["skewed"]
    law = en.LevelLaw(logq, np.array(u))
    lams = np.array([0.01, 0.7, 9.0])
    cgf, mean, var, k3, k4, kl, ok = en.stats4(law, lams)
    assert ok.all()
    for i, lam in enumerate(lams):
        ex = _mp_stats(logq, u, lam)
        for got, key in ((var, "var"), (k3, "k3"), (k4, "k4"), (kl, "kl")):
            assert _rel(got[i], ex[key]) < 1e-9, (lam, key)
    k = law.cumulants
    ex0 = _mp_stats(logq, u, 0.0)
    assert _rel(k[2], ex0["var"]) < 1e-13 and _rel(k[3], ex0["k3"]) < 1e-12 and _rel(k[4], ex0["k4"]) < 1e-11
    ser = en.series_stats(law, [1e-4, -1e-4])
    for i, lam in enumerate((1e-4, -1e-4)):
        ex = _mp_stats(logq, u, lam)
        assert _rel(ser.kl[i], ex["kl"]) < 1e-13
        assert _rel(ser.gain[i], ex["gain"]) < 1e-13


def test_ties_are_one_level_in_reference_and_huge_values_stay_exact():
    # +-1e300 rewards with ties: the engine sees two standardised levels
    ref = Reference([-1e300, 1e300, 1e300, -1e300], probs=[0.1, 0.2, 0.3, 0.4])
    assert ref.n_levels == 2
    law = ref.level_law
    st = en.tilt_stats(law, [0.5, 3.0])
    for i, lam in enumerate((0.5, 3.0)):
        ex = _mp_stats(np.log([0.5, 0.5]), [-1.0, 0.0], lam)
        assert _rel(st.kl[i], ex["kl"]) < 1e-13
        assert _rel(st.gain[i], ex["gain"]) < 1e-13


@pytest.mark.parametrize("t", [0.05, 0.5, 3.0, -2.0])
def test_centred_cgf_keeps_relative_accuracy_past_t_one_tenth(t):
    """A mean-centred K of 1e-13..1e-10 at |t| > 0.1 (mass 1 - 1e-9 at one level).

    The rule is log1p(sum q expm1 x) wherever that sum is >= -1/2; the old
    cut-off |t| <= 0.1 sent these rows to logsumexp, which kept 4.7e-6.
    """
    u = np.array([-1.0, -0.3, 0.0])
    logq = np.log([1e-12, 1e-9, 1 - 1e-9 - 1e-12])
    q = [mp.exp(mp.mpf(a)) for a in logq]
    mean = mp.fsum(a * mp.mpf(v) for a, v in zip(q, u)) / mp.fsum(q)
    c = float(mean)
    k, _ = en.centred_cgf(logq, u, [t], [c])
    tt, cc = mp.mpf(t), mp.mpf(c)
    exact = mp.log(mp.fsum(a * mp.exp(tt * (mp.mpf(v) - cc)) for a, v in zip(q, u)) / mp.fsum(q))
    assert abs(k[0] - exact) <= 1e-13 * abs(exact)


def test_log1p_rule_hands_cancelling_sums_to_the_fallback():
    """A centre at the top with a large t: sum q e^x << 1, so log1p(s) would cancel; logsumexp is used."""
    u = np.array([-1.0, -0.5, 0.0])
    logq = np.log([0.5, 0.4999999, 1e-7])
    k, x = en.centred_cgf(logq, u, [40.0], [0.0])
    exact = mp.log(mp.fsum(mp.exp(mp.mpf(a) + 40 * mp.mpf(v)) for a, v in zip(logq, u)))
    assert abs(k[0] - exact) <= 1e-15 * abs(exact)
    seen = []
    got = en.log1p_rule(
        np.array([0.25, -0.75, np.inf]), lambda m: seen.append(m.copy()) or np.array([7.0, 8.0])
    )
    assert got[0] == np.log1p(0.25) and got[1:].tolist() == [7.0, 8.0]
    assert seen[0].tolist() == [False, True, True]


def test_log1p_rule_is_within_a_few_ulp_of_log1p_everywhere():
    """log(1 + s) above 1/4 (the fast branch) and log1p below: each within 3 eps of the exact value."""
    rng = np.random.default_rng(12)
    s = np.concatenate(
        [
            -0.5 + 0.75 * rng.random(2000),  # both sides of 1/4
            0.25 + 1e-3 * rng.random(500),
            np.geomspace(1e-300, 1e300, 2000),
            -np.geomspace(1e-300, 0.5, 500),
        ]
    )
    got = en.log1p_rule(s, None)
    for x, k in zip(s[::7], got[::7]):
        exact = mp.log1p(mp.mpf(x))
        assert abs(k - exact) <= 3 * np.finfo(float).eps * abs(exact), x
    # the branch depends on each entry alone: a batch equals its entries one by one
    np.testing.assert_array_equal(got, [en.log1p_rule(np.array([x]), None)[0] for x in s])


def test_expm1_sums_keep_each_term_and_sum_within_a_few_ulp():
    """Rows of small exponents take expm1 (within EXPM1_FAST), the rest exp - 1 unless its rounding
    would show in the sum; every row's sum within 1e-13 of the exact one, whatever its batch."""
    rng = np.random.default_rng(21)
    scales = np.concatenate([np.geomspace(1e-12, 0.29, 12), [0.31, 0.5, 2.0, 20.0]])
    x = rng.normal(size=(scales.size, 40)) * scales[:, None] / 3.0
    x[:, 0] = 0.0
    x[-4, 1] = 0.35
    x[-4, :] -= x[-4].mean()  # centred, past EXPM1_FAST: the sum is O(x^2), and exp - 1 is redone
    assert np.abs(x[-4]).max() > en.EXPM1_FAST
    q = rng.random(40)
    for qq in (None, q):
        e, s = en.expm1_sums(x, qq)
        np.testing.assert_array_equal(e[:12], np.expm1(x[:12]))  # all within EXPM1_FAST
        for i in range(x.shape[0]):
            w = [mp.mpf(1)] * 40 if qq is None else [mp.mpf(v) for v in qq]
            exact = mp.fsum(a * mp.expm1(mp.mpf(v)) for a, v in zip(w, x[i]))
            assert abs(s[i] - exact) <= 1e-13 * abs(exact), i
            # the branch depends on the row alone, and a caller's bound gives the same bits
            e1, s1 = en.expm1_sums(x[i : i + 1], qq)
            e2, s2 = en.expm1_sums(x[i : i + 1], qq, bound=np.abs(x[i : i + 1]).max(axis=1))
            np.testing.assert_array_equal(e1[0], e[i])
            assert s1[0] == s2[0] == s[i]


def test_batch_kernels_on_a_batch_of_laws_match_mpmath():
    rng = np.random.default_rng(3)
    T, L = 5, 7
    u = np.sort(-rng.random(L))
    u[0], u[-1] = -1.0, 0.0
    logq = np.log(rng.dirichlet(np.ones(L), size=T))
    logq[2, 3] = np.log(1e-300)
    t = np.array([1e-9, -0.05, 3.0, -40.0, 700.0])
    c = en.centres(t, -0.5)
    k, _ = en.centred_cgf(logq, u, t, c)
    lp, kap = en.log_tilt(logq, u, t)
    for i in range(T):
        ex = _mp_stats(logq[i], u, t[i])
        lse = mp.log(mp.fsum(mp.exp(mp.mpf(a)) for a in logq[i]))
        exact_kap = ex["cgf"] + lse
        assert abs(float(kap[i]) - float(exact_kap)) <= 1e-14 * max(1.0, abs(float(exact_kap)))
        exact_k = exact_kap - mp.mpf(t[i]) * mp.mpf(c[i])
        # K_c is relative to the law's own total mass (1 up to a few eps)
        assert abs(float(k[i]) - float(exact_k)) <= 1e-14 * abs(float(exact_k)) + 4 * np.finfo(float).eps
        assert np.isclose(np.exp(lp[i]).sum(), 1.0, rtol=1e-14)
    with pytest.raises(ValueError, match="rows"):
        en.log_tilt(logq, u, t[:2])


def test_tilted_mean_var_matches_mpmath_on_lattice_indices():
    logq = np.log([0.25, 0.25, 1e-300, 0.5 - 1e-300])
    ks = np.array([0.0, 1.0, 5.0, 9.0])
    kap, mu, var = en.tilted_mean_var(logq, ks, [-3.0, 0.0, 2.5])
    for i, lam in enumerate((-3.0, 0.0, 2.5)):
        ex = _mp_stats(logq, ks, lam)
        assert _rel(mu[i], ex["mean"]) < 1e-14 and _rel(var[i], ex["var"]) < 1e-12


# ------------------------------------------------------------------ solvers
def _law(logq, u):
    return en.LevelLaw(np.asarray(logq, dtype=float), np.asarray(u, dtype=float))


@pytest.mark.parametrize("name", sorted(LAWS))
def test_solve_kl_hits_targets_over_decades(name):
    logq, u = LAWS[name]
    law = _law(logq, u)
    kl_max = -float(logq[-1]) if name != "tiny_masses" else 300 * np.log(10.0)
    targets = np.geomspace(1e-12, 0.99 * kl_max, 40)
    for fn in (None, lambda lm: en.stats4(law, lm)):
        lam, mean, kl = en.solve_kl(lambda lm: en.tilt_stats(law, lm), targets, sd=law.sd, stats4_fn=fn)
        np.testing.assert_allclose(kl, targets, rtol=1e-11)
        ex = [_mp_stats(logq, u, lv)["kl"] for lv in lam[::8]]
        np.testing.assert_allclose([float(e) for e in ex], targets[::8], rtol=1e-9)


def test_solve_kl_on_a_plateau_and_a_step():
    # a plateau of D: the top two levels nearly tie, so D stays flat over decades of lam
    law = _law(np.log([0.5, 0.5 - 1e-9, 1e-9]), [-1.0, -1e-12, 0.0])
    targets = np.array([np.log(2.0) * 0.999, np.log(2.0) * 1.0001, 5.0, 20.0])
    lam, _, kl = en.solve_kl(lambda lm: en.tilt_stats(law, lm), targets, sd=law.sd)
    np.testing.assert_allclose(kl, targets, rtol=1e-9)


def test_solve_mean_tilted_means_and_guards():
    logq, u = LAWS["mass_one_below_top"]
    law = _law(logq, u)

    def mv(t, rows):
        st = en.tilt_stats(law, t)
        return st.mean, st.var

    # step-like mean: almost all mass at -1e-3, so the mean jumps near t ~ +-hundreds
    x = np.array([-0.9, -0.5, -2e-3, -5e-4, -1e-6])
    t = en.solve_mean(mv, x)
    for xi, ti in zip(x, t):
        assert abs(float(_mp_stats(logq, u, ti)["mean"]) - xi) <= 1e-13 * max(1.0, abs(xi)) + 1e-15
    # the ends-based solver (log distances, open bracket) agrees
    t2 = en.solve_t(law, x)
    np.testing.assert_allclose(t2, t, rtol=1e-8)
    # a plateau: slope 0 gives a non-finite Newton step; bisection still finds the root
    calls = []

    def flat(t, rows):
        calls.append(t.size)
        return np.tanh(t - 3.0) ** 3, np.zeros_like(t)

    root = en.solve_mean(flat, np.array([0.0]), lo=-10.0, hi=10.0, tol=1e-14, max_iter=300)
    assert abs(root[0] - 3.0) < 1e-4 and len(calls) < 300


def test_solve_mean_two_cycle_is_broken_and_non_convergence_is_reported():
    # a value granular at 1e-12: Newton from either side of the root lands on the other iterate
    def granular(t, rows):
        return np.round(t, 12), np.ones_like(t)

    r = en.solve_mean(granular, np.array([0.3]), lo=0.0, hi=1.0, btol=1e-11)
    assert abs(r[0] - 0.3) < 1e-11
    with pytest.raises(ConvergenceError) as info:
        en.solve_mean(
            lambda t, rows: (np.sin(t) * 0 + 1e-3 * np.sign(t - 0.5), np.ones_like(t)),
            np.array([0.0]),
            lo=0.0,
            hi=1.0,
            max_iter=5,
        )
    assert info.value.partial is not None


# --------------------------------------------------------------- BoN kernel
def test_bon_kernel_matches_mpmath_for_astronomical_n():
    with mp.workdps(700):
        _bon_kernel_case()


def _bon_kernel_case():
    logq = np.array([np.log1p(-1e-300 - 1e-20), np.log(1e-20), np.log(1e-300)])
    q = [mp.mpf(1) - mp.mpf("1e-300") - mp.mpf("1e-20"), mp.mpf("1e-20"), mp.mpf("1e-300")]
    F = [mp.fsum(q[: j + 1]) for j in range(3)]
    S = [mp.fsum(q[j + 1 :]) for j in range(3)]
    logF = np.array([float(mp.log(f)) for f in F])
    logS = np.array([float(mp.log(s)) if s > 0 else -np.inf for s in S])
    lnl_f, lnl_c = bk.tail_logs(logq, logF, logS)
    for log_n in (0.5, 30.0, 700.0):
        lev = bk.level_logd(logq, lnl_f, lnl_c, log_n)
        N = mp.exp(mp.mpf(log_n))
        for j in range(3):
            Fm = F[j - 1] if j else mp.mpf(0)
            exact = mp.log(mp.exp(N * mp.log(F[j])) - (mp.exp(N * mp.log(Fm)) if j else 0))
            if exact > -700:
                assert abs(float(lev[j]) - float(exact)) <= 1e-12 * max(1.0, abs(float(exact))), (log_n, j)
    assert np.array_equal(bk.level_logd(logq, lnl_f, lnl_c, 0.0), logq)
    # N = e^(1e4): all the mass on the top level, N S_j exact far below e^-745
    lev = bk.level_logd(logq, lnl_f, lnl_c, 1e4)
    assert lev[2] == 0.0 and lev[1] < -1e300 and lev[0] < -1e300


def test_bon_kernel_is_the_one_behind_reference_bon_and_the_window():
    from klfrontier import best_of_n
    from klfrontier.sequences._window import bon_level_logd

    ref = Reference([0.0, 1.0, 2.0], probs=[0.5, 0.3, 0.2])
    logF, _, logS = ref.level_log_cdf
    lev = bon_level_logd(ref.level_logq, logS, logF, np.log(7.0))
    np.testing.assert_allclose(np.exp(lev), np.exp(best_of_n(ref, n=7).level_logprobs), rtol=1e-14)
