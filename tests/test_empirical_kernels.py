"""The empirical best-of-N kernel lives in the shared level-law module: one home, agreeing with level_logd and mpmath."""

import mpmath as mp
import numpy as np
import pytest

from klfrontier import _bon_kernel as BK
from klfrontier.empirical import kernels as K


def _count_table(n):
    """All levels ``(c, k)`` with ``1 <= k <= c <= n``, as flat arrays."""
    c, k = np.meshgrid(np.arange(1.0, n + 1), np.arange(1.0, n + 1), indexing="ij")
    ok = k <= c
    return c[ok], k[ok]


def test_bon_plugin_uses_the_shared_count_kernel():
    assert K.count_level_logd is BK.count_level_logd
    assert "count_level_logd" in BK.__all__


@pytest.mark.parametrize("big_n", [1.0, 2.0, 3.7, 16.0, 100.0, 1e4])
@pytest.mark.parametrize("n", [2, 5, 40, 300])
def test_count_level_logd_agrees_with_level_logd(n, big_n):
    c, k = _count_table(n)
    got = BK.count_level_logd(c, k, n, np.log(big_n))
    ln = np.log(n)
    logq = np.log(k) - ln
    with np.errstate(divide="ignore"):
        tails = BK.tail_logs(logq, np.log(c) - ln, np.log(n - c) - ln)
    want = BK.level_logd(logq, *tails, np.log(big_n))
    live = want > -700.0
    assert np.all(np.abs(np.expm1(got[live] - want[live])) < 1e-11)
    # n distinct samples (k = 1 at every c): the masses telescope to one
    assert abs(np.exp(got[k == 1.0]).sum() - 1.0) < 1e-12


def test_count_level_logd_bottom_level_is_a_power_and_matches_mpmath():
    # k = c: the mass is (c/n)^N exactly
    c = np.arange(1.0, 41.0)
    got = BK.count_level_logd(c, c, 40, np.log(7.0))
    assert np.allclose(got, 7.0 * np.log(c / 40.0), rtol=0.0, atol=1e-14)  # relative error of the mass
    with mp.workdps(40):
        rng = np.random.default_rng(3)
        for _ in range(300):
            n = int(rng.integers(2, 200))
            ci = int(rng.integers(1, n + 1))
            ki = int(rng.integers(1, ci + 1))
            big_n = float(rng.choice([2.0, 16.0, 100.0, 1e4]))
            val = float(BK.count_level_logd(np.array(float(ci)), np.array(float(ki)), n, np.log(big_n)))
            nn = mp.mpf(float(np.exp(np.log(big_n))))  # N as the kernel sees it
            exact = mp.log((mp.mpf(ci) / n) ** nn - (mp.mpf(ci - ki) / n) ** nn)
            if exact < -700:
                continue
            assert abs(float(mp.expm1(mp.mpf(val) - exact))) < 1e-10


# ----------------------------------------------------------------------------- the tilt's kernel
def _mp_tilt(rr, gg, lam):
    """Exact reward, KL = lam R - log mean e^{lam r}, log mean e^{lam r} and gold mean of one row's tilt."""
    w = [mp.exp(lam * v) for v in rr]
    s = mp.fsum(w)
    rew = mp.fsum(a * v for a, v in zip(w, rr)) / s
    lmgf = mp.log(s / len(rr))
    return rew, lam * rew - lmgf, lmgf, mp.fsum(a * v for a, v in zip(w, gg)) / s


def test_tilt_rows_cgf_follows_the_engine_rule():
    """The empirical tilt's log mean e^{lam r} and shift are the engine's (one rule, one cap)."""
    from klfrontier import _engine as en

    assert K.log1p_rule is en.log1p_rule
    assert K.cap_shift is en.cap_shift


def test_tilt_rows_match_mpmath_from_small_to_saturating_lam():
    """Relative accuracy of R, KL and log mean e^{lam r} across the old expm1 switch (lam span = 0.05)."""
    mp.mp.dps = 60
    rng = np.random.default_rng(5)
    rows = [rng.normal(size=40) * s + m for s, m in ((1, 0), (0.01, 1e3), (5, -2))]
    rows.append(np.round(rng.normal(size=40), 1))  # ties
    r = np.sort(np.array(rows), axis=1)
    lams = np.array([0.1, 0.05, 0.5, 3.0, 30.0, 300.0])  # lam sd from 5e-4 to 1.5e3
    out = K.tilt_rows(r, lams)
    for b in range(r.shape[0]):
        rr = [mp.mpf(v) for v in r[b]]
        for j, lam in enumerate(lams):
            rew, kl, lmgf, _ = _mp_tilt(rr, rr, mp.mpf(lam))
            assert abs(out["reward"][b, j] - rew) <= 1e-14 * abs(rew)
            assert abs(out["logmgf"][b, j] - lmgf) <= 1e-14 * abs(lmgf)
            # KL ~ lam^2 var / 2 is formed without cancelling: relative error ~ eps / (lam sd)
            assert abs(out["kl"][b, j] - kl) <= 1e-11 * kl


@pytest.mark.parametrize("lam", [1e-3, 0.3, 3.0, 8.0, 12.0])
def test_tilt_rows_jackknife_matches_mpmath_when_one_sample_holds_the_weight(lam):
    """Leave-one-out sums add the others up where one weight dominates (lam >= 8 here).

    The total minus the own term kept 18% of kl_jkvar at lam = 8 and gave NaN
    at lam = 12, where the others hold a share of 1e-17 of the weight.
    """
    mp.mp.dps = 50
    rng = np.random.default_rng(7)
    n = 12
    r = np.sort(rng.normal(size=(4, n)), axis=1)
    r[:, -1] += 3.0  # a clear top
    g = r + rng.normal(size=r.shape)
    out = K.tilt_rows(r, np.array([lam]), gold=g, jackknife=True, variances=True)
    L = mp.mpf(lam)
    for b in range(r.shape[0]):
        rr = [mp.mpf(v) for v in r[b]]
        gg = [mp.mpf(v) for v in g[b]]
        full = _mp_tilt(rr, gg, L)
        loo = [_mp_tilt(rr[:i] + rr[i + 1 :], gg[:i] + gg[i + 1 :], L) for i in range(n)]
        for k, name in ((0, "reward"), (1, "kl"), (3, "gold")):
            vals = [x[k] for x in loo]
            mu = mp.fsum(vals) / n
            bias = (n - 1) * (mu - full[k])
            var = mp.mpf(n - 1) / n * mp.fsum((v - mu) ** 2 for v in vals)
            assert abs(out[name + "_bias"][b, 0] - bias) <= 1e-10 * abs(bias), (name, b)
            assert abs(out[name + "_jkvar"][b, 0] - var) <= 1e-12 * var, (name, b)


def test_exclusive_sums_match_brute_force_and_keep_the_small_share():
    rng = np.random.default_rng(11)
    a = rng.normal(size=(50, 9))
    a[::3, 4] = 1e18  # one entry holds nearly all of the row
    a[1::7, 0] = -1e15
    got = K.exclusive_sums(a)
    for b in range(a.shape[0]):
        for i in range(a.shape[1]):
            want = float(mp.fsum(mp.mpf(v) for j, v in enumerate(a[b]) if j != i))
            assert abs(got[b, i] - want) <= 1e-12 * np.sum(np.abs(np.delete(a[b], i))), (b, i)
    # where no entry dominates, the result is the caller's total minus the entry, bit for bit
    c = rng.random(size=(5, 6))
    tot = c.sum(axis=1, keepdims=True)
    np.testing.assert_array_equal(K.exclusive_sums(c, total=tot), tot - c)
    assert K.exclusive_sums(np.array([[4.0]])).tolist() == [[0.0]]
    with pytest.raises(ValueError, match="out"):
        K.exclusive_sums(c, out=c)


@pytest.mark.parametrize("lam", [1e-9, 1e-6, 1e-4])
def test_tilt_rows_take_the_engine_series_at_small_lam_span(lam):
    """lam span <= SERIES_LAM: the cumulant series keeps the KL, the variance and the jackknife.

    The direct form kept eps / (lam sd) of the KL: 1.1e-3 at lam sd = 1e-9, and 8.9e-7 of its
    jackknife bias (6.1e-7 of the reward's).
    """
    mp.mp.dps = 60
    rng = np.random.default_rng(9)
    n = 12
    r = np.sort(
        rng.normal(size=(3, n)) * np.array([[1.0], [0.01], [3.0]]) + np.array([[0.0], [1e3], [-2.0]]), axis=1
    )
    out = K.tilt_rows(r, np.array([lam]), jackknife=True, variances=True)
    L = mp.mpf(lam)

    def exact(rr):
        w = [mp.exp(L * v) for v in rr]
        s = mp.fsum(w)
        rew = mp.fsum(a * v for a, v in zip(w, rr)) / s
        var = mp.fsum(a * (v - rew) ** 2 for a, v in zip(w, rr)) / s
        lm = mp.log(s / len(rr))
        return rew, L * rew - lm, lm, var

    for b in range(r.shape[0]):
        rr = [mp.mpf(v) for v in r[b]]
        rew, kl, lm, var = exact(rr)
        assert abs(out["reward"][b, 0] - rew) <= 1e-15 * abs(rew)
        assert abs(out["kl"][b, 0] - kl) <= 1e-13 * kl
        assert abs(out["logmgf"][b, 0] - lm) <= 1e-14 * abs(lm)
        assert abs(out["var"][b, 0] - var) <= 1e-13 * var
        loo = [exact(rr[:i] + rr[i + 1 :]) for i in range(n)]
        for k, name in ((0, "reward"), (1, "kl")):
            vals = [x[k] for x in loo]
            mu = mp.fsum(vals) / n
            bias = (n - 1) * (mu - [rew, kl][k])
            jk = mp.mpf(n - 1) / n * mp.fsum((v - mu) ** 2 for v in vals)
            assert abs(out[name + "_bias"][b, 0] - bias) <= 1e-12 * abs(bias), (name, b)
            assert abs(out[name + "_jkvar"][b, 0] - jk) <= 1e-12 * jk, (name, b)


def test_moment_cumulants_match_the_level_law_cumulants():
    """One conversion from moments to cumulants: the engine's level laws and the empirical rows."""
    from klfrontier import _engine as en

    rng = np.random.default_rng(4)
    v = rng.normal(size=50) ** 3
    d = v - v.mean()
    ps = K._power_sums(d[None, :])
    k_rows = en.moment_cumulants({j: ps[j][0] / v.size for j in ps})
    k_law = en.level_cumulants(np.full(v.size, -np.log(v.size)), v, float(v.mean()))
    vals = [mp.mpf(x) for x in v]
    mean = mp.fsum(vals) / len(vals)
    c = {j: mp.fsum((x - mean) ** j for x in vals) / len(vals) for j in range(2, 7)}
    exact = {2: c[2], 3: c[3], 4: c[4] - 3 * c[2] ** 2, 5: c[5] - 10 * c[3] * c[2]}
    exact[6] = c[6] - 15 * c[4] * c[2] - 10 * c[3] ** 2 + 30 * c[2] ** 3
    for j in range(2, 7):
        assert abs(k_rows[j] - exact[j]) <= 1e-12 * abs(exact[j]), j
        assert abs(k_law[j] - exact[j]) <= 1e-12 * abs(exact[j]), j


# ----------------------------------------------------------------------------- tied rewards as levels
def _tied_rows(seed=12, B=40, n=30):
    """Sorted rows with heavy ties: integers, a 0.5 grid, a constant row, one lone top far above the rest."""
    rng = np.random.default_rng(seed)
    r = np.round(rng.normal(size=(B, n)) * rng.uniform(0.3, 4.0, size=(B, 1)) * 2) / 2
    r[0] = 1.5
    r[1, :-1], r[1, -1] = 0.0, 9.0
    r[2, :-2], r[2, -2:] = -1.0, 6.0  # the top level twice: its other copy keeps the weight
    r[3] = rng.integers(0, 2, size=n)  # 0/1 rewards
    return np.sort(r, axis=1)


def test_tie_levels_write_the_rows_back():
    r = _tied_rows()
    levels, counts, distinct = K.tie_levels(r)
    assert levels.shape == counts.shape == (r.shape[0], int(distinct.max()))
    for b in range(r.shape[0]):
        np.testing.assert_array_equal(np.repeat(levels[b], counts[b].astype(int)), r[b])
        assert distinct[b] == np.unique(r[b]).size == np.count_nonzero(counts[b])
        assert (levels[b, distinct[b] :] == r[b, 0]).all()  # padding: the smallest reward, count 0


def test_exclusive_sums_with_counts_leave_out_one_copy():
    mp.mp.dps = 40
    rng = np.random.default_rng(13)
    a = rng.normal(size=(30, 7))
    counts = rng.integers(0, 4, size=a.shape).astype(float)
    counts[:, 0] = np.maximum(counts[:, 0], 1.0)
    a[::3, 2], counts[::3, 2] = 1e18, 1.0  # one sample holds nearly all of the row
    a[1::3, 2], counts[1::3, 2] = 1e18, 2.0  # ... and its twin keeps it there
    got = K.exclusive_sums(a, counts=counts)
    for b in range(a.shape[0]):
        tot = mp.fsum(mp.mpf(c) * mp.mpf(v) for c, v in zip(counts[b], a[b]))
        for i in range(a.shape[1]):
            want = float(tot - mp.mpf(a[b, i]))
            scale = float(np.sum(counts[b] * np.abs(a[b])))
            assert abs(got[b, i] - want) <= 1e-12 * max(abs(want), 1e-300) + 1e-15 * scale, (b, i)


@pytest.mark.parametrize("with_mean", [False, True])
def test_tilt_rows_on_levels_equal_the_rows_written_out(with_mean):
    """Oracle: the same rows sample by sample (itself checked against mpmath above), jackknife included,
    from the series (tiny lam) through the cap shift (lam span > 50) to one sample holding the weight."""
    r = _tied_rows()
    levels, counts, _ = K.tie_levels(r)
    lams = np.array([0.0, 1e-7, 1e-4, 0.03, 0.4, 2.0, 9.0, 40.0, 300.0])
    want = K.tilt_rows(r, lams, jackknife=True, variances=True)
    got = K.tilt_rows(
        levels,
        lams,
        jackknife=True,
        variances=True,
        counts=counts,
        mean=r.mean(axis=1) if with_mean else None,
    )
    assert set(got) == set(want)
    for key, w in want.items():
        g = got[key]
        np.testing.assert_array_equal(np.isfinite(g), np.isfinite(w), err_msg=key)
        ok = np.isfinite(w)
        # rewards are O(1): a bias of n differences of O(1) numbers is exact to ~n eps absolutely
        np.testing.assert_allclose(g[ok], w[ok], rtol=1e-11, atol=1e-12, err_msg=key)
    if with_mean:  # centred at the caller's means: the reward at lam = 0 is exactly them
        np.testing.assert_array_equal(got["reward"][:, 0], r.mean(axis=1))


def test_tilt_rows_counts_are_checked():
    r = _tied_rows()[:4]
    levels, counts, _ = K.tie_levels(r)
    lam = np.array([1.0])
    with pytest.raises(ValueError, match="gold"):
        K.tilt_rows(levels, lam, gold=levels, counts=counts)
    with pytest.raises(ValueError, match="shape"):
        K.tilt_rows(levels, lam, counts=counts[:, :-1])
    bad = counts.copy()
    bad[0, 0] += 1.0
    with pytest.raises(ValueError, match="same n"):
        K.tilt_rows(levels, lam, counts=bad)
    bad = counts.copy()
    bad[1, 0] = -bad[1, 0]
    with pytest.raises(ValueError, match=">= 0"):
        K.tilt_rows(levels, lam, counts=bad)


def test_tilt_rows_on_levels_batched_equals_row_by_row():
    r = _tied_rows(seed=14)
    levels, counts, _ = K.tie_levels(r)
    lams = np.array([0.0, 1e-4, 0.05, 1.0, 30.0])
    batch = K.tilt_rows(levels, lams, jackknife=True, variances=True, counts=counts)
    for i in range(r.shape[0]):
        one = K.tilt_rows(levels[i : i + 1], lams, jackknife=True, variances=True, counts=counts[i : i + 1])
        for key, v in one.items():
            np.testing.assert_array_equal(batch[key][i : i + 1], v, err_msg=key)
