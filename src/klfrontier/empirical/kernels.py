"""Per-prompt estimators on batches of prompts with equal sample counts (theory §9).

Every kernel takes a matrix ``r`` of shape ``(B, n)``: ``B`` prompts, each
with ``n`` reward samples *sorted ascending* along the last axis, and returns
one value per prompt (and grid point).  Besides each point estimate a kernel
can return its exact leave-one-out (jackknife) values in ``O(n)`` per prompt,
from which the jackknife bias ``(n - 1)(mean_i theta_(-i) - theta)`` and
variance ``(n - 1)/n sum_i (theta_(-i) - mean)^2`` follow.

Estimators
----------
* the unbiased best-of-N reward ``U_N = sum_i r_(i) C(i-1, N-1) / C(n, N)``
  (its mean over the draw of the ``n`` samples is ``E[max of N]`` exactly);
* the plug-in best-of-N law on the empirical law ``p_hat`` (ties exact):
  sample ``i`` in a tie group occupying sorted positions ``a..b`` (1-based)
  gets ``omega_i = [(b/n)^N - ((a-1)/n)^N] / (b - a + 1)``, so
  ``KL(pi_N || p_hat) = sum_i omega_i log(n omega_i)``;
* the tilt of ``p_hat`` at ``lam``: ``R(lam) = sum w r / sum w``,
  ``Lambda(lam) = log mean e^{lam r}``, ``KL = lam R - Lambda``, with the
  reward gain formed as a centred covariance (no difference of two rounded
  rewards).
"""

from __future__ import annotations

import numpy as np
from scipy.special import betaln, gammaln, logsumexp

from .._bon_kernel import count_level_logd
from .._engine import SERIES_LAM, cap_shift, expm1_sums, log1p_rule, moment_cumulants, series_terms

__all__ = [
    "log_choose",
    "tie_bounds",
    "unbiased_weights",
    "bon_plugin",
    "tilt_rows",
    "exclusive_sums",
    "unbiased_jackknife",
    "tie_mean",
    "tie_levels",
    "pareto_khat",
    "tilt_khat",
    "khat_threshold",
]

# Elements of a (rows x n x grid) work array processed at once.
_BLOCK = 1 << 21
_SMALL_M = 32


def log_choose(k, m):
    """``log C(k, m)`` for integer arrays ``k >= 0`` and an integer ``m >= 0``; ``-inf`` where ``k < m``.

    For ``m <= 32`` the falling factorial ``sum_j log(k - j) - log m!`` (exact
    to a few ulp); above, ``-log(k + 1) - log B(m + 1, k - m + 1)``.

    >>> round(float(np.exp(log_choose(np.array([5]), 2))[0]), 12)
    10.0
    """
    k = np.asarray(k, dtype=float)
    out = np.full(k.shape, -np.inf)
    ok = k >= m
    kk = k[ok]
    if m <= _SMALL_M:
        acc = np.zeros(kk.shape)
        for j in range(int(m)):
            acc += np.log(kk - j)
        out[ok] = acc - gammaln(m + 1.0)
    else:
        out[ok] = -np.log1p(kk) - betaln(m + 1.0, kk - m + 1.0)
    return out


def unbiased_weights(n, big_n):
    """Weights ``C(i-1, N-1)/C(n, N)``, ``i = 1..n``, of the sorted samples in ``U_N`` (sum 1).

    >>> unbiased_weights(3, 2).round(12).tolist()
    [0.0, 0.333333333333, 0.666666666667]
    """
    logw = log_choose(np.arange(n), big_n - 1) - log_choose(np.array([n]), big_n)[0]
    w = np.exp(logw)
    return w / w.sum()  # the hockey-stick identity makes the sum exactly one


def tie_bounds(r):
    """First and last 0-based position of each sample's tie group in sorted rows ``r``.

    >>> a, b = tie_bounds(np.array([[0.0, 1.0, 1.0, 2.0]]))
    >>> a.tolist(), b.tolist()
    ([[0, 1, 1, 3]], [[0, 2, 2, 3]])
    """
    B, n = r.shape
    idx = np.broadcast_to(np.arange(n), (B, n))
    new = np.ones((B, n), dtype=bool)
    new[:, 1:] = r[:, 1:] != r[:, :-1]
    end = np.ones((B, n), dtype=bool)
    end[:, :-1] = new[:, 1:]
    a = np.maximum.accumulate(np.where(new, idx, 0), axis=1)
    b = np.minimum.accumulate(np.where(end, idx, n - 1)[:, ::-1], axis=1)[:, ::-1]
    return a, b


def tie_levels(r):
    """Each sorted row's distinct rewards and how often each occurs, for ``tilt_rows(..., counts=)``.

    Parameters
    ----------
    r : (B, n) ndarray
        Rewards, sorted ascending along each row.

    Returns
    -------
    levels, counts : (B, D) ndarray
        ``D`` is the most distinct rewards of any row.  A row with fewer
        is padded with its smallest reward at count 0 (no sample).
    distinct : (B,) int ndarray
        Distinct rewards per row.

    >>> v, c, k = tie_levels(np.array([[0.0, 1.0, 1.0, 2.0], [3.0, 3.0, 3.0, 3.0]]))
    >>> v.tolist(), c.tolist(), k.tolist()
    ([[0.0, 1.0, 2.0], [3.0, 3.0, 3.0]], [[1.0, 2.0, 1.0], [4.0, 0.0, 0.0]], [3, 1])
    """
    B, n = r.shape
    new = np.ones((B, n), dtype=bool)
    new[:, 1:] = r[:, 1:] != r[:, :-1]
    lev = np.cumsum(new, axis=1)
    distinct = lev[:, -1].copy() if n else np.zeros(B, dtype=np.int64)
    lev -= 1
    D = int(distinct.max()) if B and n else 0
    flat = (np.arange(B)[:, None] * D + lev).ravel()
    counts = np.bincount(flat, minlength=B * D).astype(float).reshape(B, D)
    levels = np.repeat(r[:, :1], D, axis=1)
    levels.ravel()[flat[new.ravel()]] = r[new]
    return levels, counts, distinct


def tie_mean(values, a, b):
    """Replace each entry of ``values`` by the mean over its tie group (bounds ``a``, ``b``)."""
    B, n = values.shape
    cs = np.zeros((B, n + 1))
    np.cumsum(values, axis=1, out=cs[:, 1:])
    tot = np.take_along_axis(cs, b + 1, axis=1) - np.take_along_axis(cs, a, axis=1)
    return tot / (b - a + 1)


def bon_plugin(r, ns, gold=None, jackknife=False):
    """Plug-in best-of-N on each row's empirical law: reward, KL, win rate (and gold).

    Parameters
    ----------
    r : (B, n) ndarray
        Sorted rewards.
    ns : (M,) ndarray
        Sizes ``N >= 1`` (real ``N`` allowed).
    gold : (B, n) ndarray, optional
        A second reward aligned with ``r``; its plug-in BoN mean is returned.
    jackknife : bool or callable
        Also return the jackknife bias and variance of the KL (``kl_bias``,
        ``kl_jkvar``); a callable ``jackknife(N)`` picks the sizes (NaN elsewhere).

    Returns
    -------
    dict of (B, M) arrays
        ``reward``, ``kl``, ``win_rate`` (+ ``gold``, + ``kl_bias``).

    Notes
    -----
    A tie group of ``k`` samples whose cumulative count is ``C`` gets BoN mass
    ``D = (C/n)^N - ((C-k)/n)^N``
    (:func:`klfrontier._bon_kernel.count_level_logd`), shared equally, so
    ``KL = sum_groups D log(n D / k)`` and the win rate against ``p_hat`` is
    ``sum_groups D ((C - k) + k/2) / n``.  Removing one sample from group
    ``h`` lowers ``C`` by one for ``h`` and the groups above, which gives all
    leave-one-out KLs from one prefix and one suffix sum.

    Examples
    --------
    >>> out = bon_plugin(np.array([[0.0, 1.0]]), np.array([1.0, 2.0]))
    >>> out["reward"].round(12).tolist()      # 1/2, then 3/4
    [[0.5, 0.75]]
    """
    B, n = r.shape
    ns = np.asarray(ns, dtype=float)
    a, b = tie_bounds(r)
    k = (b - a + 1).astype(float)
    c_hi = (b + 1).astype(float)
    last = np.arange(n)[None, :] == b  # one element stands for its group
    out = {key: np.empty((B, ns.size)) for key in ("reward", "kl", "win_rate")}
    if gold is not None:
        out["gold"] = np.empty((B, ns.size))
    if jackknife:
        out["kl_bias"] = np.empty((B, ns.size))
        out["kl_jkvar"] = np.empty((B, ns.size))
    win_w = (a + 0.5 * k) / n
    # A group's quantities depend only on (c_hi, k), integers in [0, n]: when the rows hold more
    # elements than there are pairs, evaluate on the (n + 1)^2 table of pairs and gather.
    if 4 * (n + 1) ** 2 <= B * n:
        grid = np.arange(n + 1, dtype=float)
        cc, kk = grid[:, None], grid[None, :]
        idx = (b + 1) * (n + 1) + (b - a + 1)

        def pick(t):
            return t.ravel().take(idx)
    else:
        cc, kk = c_hi, k

        def pick(t):
            return t

    for m, big_n in enumerate(ns):
        log_nb = np.log(big_n)
        with np.errstate(divide="ignore", invalid="ignore"):  # table cells with k = 0 or k > c
            logd = count_level_logd(cc, kk, n, log_nb)  # a group's mass
            d = np.exp(logd)
            omega = pick(d / kk)
            term = np.where(last, pick(np.where(d > 0, d * (logd + np.log(n) - np.log(kk)), 0.0)), 0.0)
        out["reward"][:, m] = np.sum(omega * r, axis=1)
        out["win_rate"][:, m] = np.sum(omega * win_w, axis=1)
        if gold is not None:
            out["gold"][:, m] = np.sum(omega * gold, axis=1)
        # best-of-1 is p itself: its KL is exactly 0 (the terms would leave rounding behind)
        kl = np.zeros(B) if big_n == 1 else np.maximum(term.sum(axis=1), 0.0)
        out["kl"][:, m] = kl
        if jackknife is True or (jackknife and jackknife(big_n)):
            out["kl_bias"][:, m], out["kl_jkvar"][:, m] = _bon_kl_jackknife(
                cc, kk, pick, a, b, last, n, log_nb, kl
            )
        elif jackknife:
            out["kl_bias"][:, m] = out["kl_jkvar"][:, m] = np.nan
    return out


def _kl_term(c_hi, k, n, log_nb):
    """``D log(n D / k)`` of a group with ``k`` samples and cumulative count ``c_hi`` out of ``n``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        logd = count_level_logd(c_hi, np.maximum(k, 1.0), n, log_nb)
        d = np.exp(logd)
        return np.where((k > 0) & (d > 0), d * (logd + np.log(n) - np.log(np.maximum(k, 1.0))), 0.0)


def _bon_kl_jackknife(c_hi, k, pick, a, b, last, n, log_nb, kl):
    """Jackknife bias ``(n-1)(mean_i KL_(-i) - KL)`` and variance of the plug-in BoN KL, per row.

    ``c_hi``, ``k`` are the elements' cumulative counts and group sizes, or a
    table of all pairs with ``pick`` gathering each element's entry.
    """
    B = a.shape[0]
    m1 = n - 1.0
    # groups below h keep their counts, groups above lose one sample from the cumulative count
    below = np.where(last, pick(_kl_term(c_hi, k, m1, log_nb)), 0.0)
    above = np.where(last, pick(_kl_term(c_hi - 1.0, k, m1, log_nb)), 0.0)
    mid = pick(_kl_term(c_hi - 1.0, k - 1.0, m1, log_nb))  # group h itself, one sample fewer
    pre = np.zeros((B, n + 1))
    np.cumsum(below, axis=1, out=pre[:, 1:])
    suf = np.zeros((B, n + 1))
    np.cumsum(above[:, ::-1], axis=1, out=suf[:, 1:])
    # sum over groups strictly below (positions < a) and strictly above (positions > b)
    s_below = np.take_along_axis(pre, a, axis=1)
    s_above = np.take_along_axis(suf, (n - 1 - b), axis=1)
    loo = s_below + mid + s_above  # KL without one sample of this element's group
    mu = loo.mean(axis=1)
    return m1 * (mu - kl), m1 / n * np.sum((loo - mu[:, None]) ** 2, axis=1)


def unbiased_jackknife(r, big_n):
    """Leave-one-out values of ``U_N`` for each row (``(B, n)``; needs ``N <= n - 1``).

    Removing the sample at sorted position ``j`` leaves ranks below ``j``
    unchanged and lowers those above by one, so
    ``U_(-j) = sum_{i<j} r_i c(i-1) + sum_{i>j} r_i c(i-2)`` with
    ``c(k) = C(k, N-1)/C(n-1, N)``: one prefix and one suffix sum.
    """
    B, n = r.shape
    lc = log_choose(np.arange(n), big_n - 1) - log_choose(np.array([n - 1]), big_n)[0]
    c = np.exp(lc)  # c[k] = C(k, N-1)/C(n-1, N), k = 0..n-1
    top = r[:, -1:]
    x = r - top  # weights sum to one: centre for accuracy
    wa = x * c[None, :]  # rank unchanged (0-based i: c(i))
    wb = np.zeros_like(x)
    wb[:, 1:] = x[:, 1:] * c[None, :-1]  # rank lowered by one: c(i-1)
    pre = np.zeros((B, n + 1))
    np.cumsum(wa, axis=1, out=pre[:, 1:])
    suf = np.zeros((B, n + 1))
    np.cumsum(wb[:, ::-1], axis=1, out=suf[:, 1:])
    j = np.arange(n)
    return top + pre[:, j] + suf[:, n - 1 - j]


def exclusive_sums(a, total=None, out=None, top=None, counts=None):
    """``sum_{j != i} a_j`` for every entry of each row of ``a`` ``(B, n)``.

    Parameters
    ----------
    a : (B, n) ndarray
    total : (B, 1) ndarray, optional
        The rows' totals as the caller formed them (default ``a.sum(axis=1)``).
    out : (B, n) ndarray, optional
        Not ``a`` (its entries are read again where the difference is lossy).
    top : (B,) int ndarray, optional
        Each row's largest entry in magnitude, where the caller knows it
        (default ``abs(a).argmax(axis=1)``).
    counts : (B, n) ndarray, optional
        Multiplicities: entry ``j`` stands for ``counts_j`` equal samples, the
        total is ``sum_j counts_j a_j`` and each entry's result leaves out
        one copy of itself (``0``: padding, never counted).

    Notes
    -----
    ``total - a_i``, except for a row's largest entry where that difference
    loses more than two bits (``|total| + |a_j| > 4 |total - a_j|``: ``a_j``
    holds nearly all of the row, as one sample does of a tilt's weights at
    large ``lam``); there the other entries (and the other copies of
    ``a_j``) are summed themselves.  Every other entry's difference is then
    about ``a_j``, with full accuracy.

    >>> exclusive_sums(np.array([[1e20, 1.0, 2.0]])).tolist()
    [[3.0, 1e+20, 1e+20]]
    """
    a = np.asarray(a, dtype=float)
    if out is a:
        raise ValueError("exclusive_sums: out must not be a")
    B, n = a.shape
    if total is not None:
        tot = total
    else:
        tot = (a.sum(axis=1) if counts is None else np.einsum("ij,ij->i", a, counts))[:, None]
    res = np.subtract(tot, a, out=out)
    if n == 1 and counts is None:
        res[:] = 0.0
        return res
    j = np.abs(a).argmax(axis=1) if top is None else top
    rows = np.arange(B)
    with np.errstate(invalid="ignore"):
        lossy = np.abs(tot[:, 0]) + np.abs(a[rows, j]) > 4.0 * np.abs(res[rows, j])
    if lossy.any():
        rr = np.flatnonzero(lossy)
        jr = j[rr]
        if counts is None:
            others = a[rr]
            others[np.arange(rr.size), jr] = 0.0
        else:  # the other entries, each as often as it occurs, and the other copies of a_j
            cc = counts[rr]
            cc[np.arange(rr.size), jr] -= 1.0
            others = a[rr] * cc
        res[rr, jr] = others.sum(axis=1)
    return res


def _power_sums(d, counts=None):
    """``{k: sum_i c_i d_i^k}`` per row, ``k = 1..6`` (``c``: the counts, default ones)."""
    acc = d.copy() if counts is None else d * counts
    out = {1: acc.sum(axis=1)}
    for k in range(2, 7):
        acc *= d
        out[k] = acc.sum(axis=1)
    return out


def tilt_rows(r, lams, gold=None, jackknife=False, variances=True, counts=None, mean=None):
    """The tilt of each row's empirical law at each ``lam``.

    Parameters
    ----------
    r : (B, n) ndarray
        Rewards (any order).
    lams : (G,) or (B, G) ndarray
        Inverse temperatures ``lam >= 0``, shared by the rows or one per row.
    gold : (B, n) ndarray, optional
        Self-normalised gold mean ``sum w g / sum w`` is returned too.
    jackknife : bool
        Also return jackknife biases and variances of ``reward`` and ``kl``
        and the variance of the frontier's linearisation ``(w~ - 1)/lam``.
    variances : bool
        With ``jackknife``, also the variances (``*_jkvar``, ``frontier_var``);
        ``False`` returns the biases only.
    counts : (B, n) ndarray, optional
        Tied rewards stored once: entry ``j`` of a row stands for
        ``counts_j`` samples of reward ``r_j`` (``0``: padding, not a
        sample).  Every row must hold the same number of samples
        ``sum_j counts_j``; the results (jackknife included) are those of
        the rows written out sample by sample, to rounding.  Not with
        ``gold`` (tied rewards need not have tied gold rewards).
    mean : (B,) ndarray, optional
        The rows' mean rewards as the caller computed them (with ``counts``,
        from the rows written out): the tilt is centred there, and the
        reward at ``lam = 0`` is exactly it.  Default: computed here.

    Returns
    -------
    dict of (B, G) arrays
        ``reward`` ``R``, ``kl``, ``logmgf`` ``Lambda(lam) = log mean e^{lam r}``,
        ``var`` (tilted variance), ``ess`` ``(sum w)^2 / sum w^2`` (+ ``gold``,
        + ``reward_bias``, ``kl_bias``, ``reward_jkvar``, ``kl_jkvar``,
        ``frontier_var``, + ``gold_bias``, ``gold_jkvar``).

    Notes
    -----
    With ``d = r - rbar`` and the shift ``c`` of
    :func:`klfrontier._engine.cap_shift` (no exponent above 50),
    ``w = e^{lam (d - c)}`` is formed as ``1 + expm1``:

    .. math:: R - \\bar r = \\frac{\\sum w d}{\\sum w},\\quad
              \\Lambda = \\lambda(\\bar r + c) + \\log\\operatorname{mean} w,\\quad
              KL = \\lambda (R - \\bar r - c) - \\log\\operatorname{mean} w,

    where ``log mean w = log1p(mean expm1(.))`` by the engine's one rule
    (:func:`klfrontier._engine.log1p_rule`, as for every CGF in the library;
    so are the leave-one-out values): at small ``lam`` both terms of the KL
    are ``O(lam^2 var)`` and neither is a difference of rounded rewards.

    Examples
    --------
    >>> t = tilt_rows(np.array([[0.0, 1.0]]), np.array([1.0]))
    >>> round(float(t["reward"][0, 0]), 12)       # e/(1+e)
    0.731058578630
    """
    B, L = r.shape
    lams = np.asarray(lams, dtype=float)
    lam_cols = np.broadcast_to(lams if lams.ndim == 2 else lams[None, :], (B, lams.shape[-1]))
    G = lam_cols.shape[1]
    cnt = None if counts is None else np.asarray(counts, dtype=float)
    n = L
    if cnt is not None:
        if gold is not None:
            raise ValueError("tilt_rows: counts cannot be given with gold")
        if cnt.shape != r.shape:
            raise ValueError(f"tilt_rows: counts has shape {cnt.shape}, rewards {r.shape}")
        tot = cnt.sum(axis=1)
        n = float(tot[0]) if B else 1.0
        if not (np.all(tot == n) and np.all(cnt >= 0) and n >= 1):
            raise ValueError("tilt_rows: every row's counts must be >= 0 and add up to the same n >= 1")
    if mean is not None:
        rbar = np.asarray(mean, dtype=float).reshape(B, 1)
    elif cnt is None:
        rbar = r.mean(axis=1, keepdims=True)
    else:
        rbar = (np.einsum("ij,ij->i", r, cnt) / n)[:, None]
    d = r - rbar
    top = d.argmax(axis=1)
    dmax = np.take_along_axis(d, top[:, None], axis=1)
    dmin = d.min(axis=1, keepdims=True)
    span = (dmax - dmin)[:, 0]
    psums = None  # power sums of d, for rows on the series (computed when first needed)
    # with counts every sum over samples is one over entries weighted by their counts
    cd = d if cnt is None else cnt * d
    keys = ["reward", "kl", "logmgf", "var", "ess"]
    if gold is not None:
        keys.append("gold")
    if jackknife:
        keys += ["reward_bias", "kl_bias"] + (
            ["reward_jkvar", "kl_jkvar", "frontier_var"] if variances else []
        )
        if gold is not None:
            keys += ["gold_bias"] + (["gold_jkvar"] if variances else [])
    out = {key: np.empty((B, G)) for key in keys}
    # sums of w = 1 + e against d, d^2 and gold are dot products with e plus fixed totals
    sd, d2 = cd.sum(axis=1), cd * d
    sd2 = d2.sum(axis=1)
    sg = None if gold is None else gold.sum(axis=1)
    # (B, n) work arrays reused for every lam: fresh temporaries per pass cost more than the arithmetic
    x, e = np.empty((B, L)), np.empty((B, L))
    if jackknife:
        w, s0m, gain_l, excl = (np.empty((B, L)) for _ in range(4))

    def dot(a, b):
        return np.einsum("ij,ij->i", a, b)

    def wsum(a):  # sum over the samples of per-entry values a (B, L): (B, 1)
        return (a.sum(axis=1) if cnt is None else dot(a, cnt))[:, None]

    for g in range(G):
        lam = lam_cols[:, g : g + 1]  # (B, 1): one lam per row
        zero = lam == 0.0
        c = cap_shift(dmax, lam)  # no overflow in e^{lam (d - c)}
        shifted = bool(c.any())
        if shifted:
            np.subtract(d, c, out=x)
            x *= lam  # x = lam (d - c)
        else:
            np.multiply(d, lam, out=x)  # c = 0: the same numbers, one pass
        _, se = expm1_sums(x, q=cnt, out=e, bound=(lam * np.maximum(dmax - c, c - dmin))[:, 0])
        s0 = (n + se)[:, None]
        s1 = (dot(e, cd) + sd)[:, None]
        gain = np.where(zero, 0.0, s1 / s0)
        # log mean w; w = 1 + e with its largest exponent at most X_CAP (log1p everywhere: mean w >= 1
        # when c = 0 by Jensen, >= e^{X_CAP} / n when shifted; the fallback is for the rule's sake)
        lmw = log1p_rule(
            se / n,
            lambda rows, x=x: logsumexp(x[rows], axis=1, b=None if cnt is None else cnt[rows]) - np.log(n),
        )[:, None]
        kl = np.maximum(lam * (gain - c) - lmw, 0.0)
        logmgf = lam * (rbar + c) + lmw
        var = np.maximum((dot(e, d2) + sd2) / s0[:, 0] - gain[:, 0] ** 2, 0.0)
        ee = dot(e, e) if cnt is None else dot(e, np.multiply(e, cnt, out=x))  # (x is free: lmw is formed)
        # rows with lam span <= SERIES_LAM: the engine's cumulant series (the direct KL, O(lam^2 var),
        # keeps only eps / (lam sd) of its digits there)
        ser = np.flatnonzero((lam[:, 0] * span <= SERIES_LAM) & ~zero[:, 0])
        if ser.size:
            if psums is None:
                psums = _power_sums(d, cnt)
            mom = {k: psums[k][ser] / n for k in psums}
            cg, gain_s, var_s, kl_s = series_terms(moment_cumulants(mom), lam[ser, 0])
            gain[ser, 0] = mom[1] + gain_s  # R - rbar
            kl[ser, 0] = np.maximum(kl_s, 0.0)
            logmgf[ser, 0] = lam[ser, 0] * (rbar[ser, 0] + mom[1]) + cg
            var[ser] = var_s
        out["reward"][:, g] = (rbar + gain)[:, 0]
        out["kl"][:, g] = kl[:, 0]
        out["logmgf"][:, g] = logmgf[:, 0]
        out["var"][:, g] = var
        out["ess"][:, g] = s0[:, 0] ** 2 / (n + 2.0 * se + ee)
        if gold is not None:
            out["gold"][:, g] = (dot(e, gold) + sg) / s0[:, 0]
        if jackknife:
            np.add(e, 1.0, out=w)
            # Sums without sample i: the total minus the own term, except where one sample holds
            # nearly all of it (large lam): there the difference would keep only the last digits of
            # the others' share, and exclusive_sums adds the others up instead.
            # the largest weight is the top reward's: only its difference can cancel
            exclusive_sums(e, total=se[:, None], out=excl, top=top, counts=cnt)  # sum_{j != i} e_j
            np.add(excl, n - 1.0, out=s0m)  # sum_{j != i} w_j, where that does not cancel (below)
            excl /= n - 1.0

            def fallback(bad):  # mean w without i below 1/2: sum the weights themselves
                rows = np.flatnonzero(bad.any(axis=1))
                s0m[rows] = exclusive_sums(w[rows], counts=None if cnt is None else cnt[rows])
                with np.errstate(divide="ignore"):
                    return np.log(s0m[rows] / (n - 1.0))[bad[rows]]

            # log mean w without i, by the engine's rule: log1p(excl), else log(s0m / (n - 1))
            kl_l = log1p_rule(excl, fallback)
            # a sample holding all the weight leaves nothing to tilt: its leave-one-out is NaN
            if not s0m.min() > 0:
                bad = ~(s0m > 0)
                s0m[bad] = np.nan
                kl_l[bad] = np.nan
            np.multiply(w, d, out=x)  # (x is free: the exponents are not read again)
            exclusive_sums(x, total=s1, out=gain_l, top=top, counts=cnt)
            gain_l /= s0m  # R_(-i) - rbar (any fixed centring works)
            # kl_(-i) = lam (gain_(-i) - c) - log mean w_(-i), 0 at lam = 0 (x is free again)
            if shifted:
                kl_loo = np.subtract(gain_l, c, out=x)
                kl_loo *= lam
            else:
                kl_loo = np.multiply(gain_l, lam, out=x)
            kl_loo -= kl_l
            if zero.any():
                kl_loo[zero[:, 0]] = 0.0
            if ser.size:  # the series without sample i: its power sums less its own powers
                ds = d[ser]
                mom = {k: (psums[k][ser, None] - ds**k) / (n - 1.0) for k in psums}
                _, gl, _, kll = series_terms(moment_cumulants(mom), lam[ser])
                gain_l[ser] = mom[1] + gl
                kl_loo[ser] = kll
            loos = [("reward", gain_l, gain), ("kl", kl_loo, kl)]
            if gold is not None:
                wg = w * gold
                swg = wg.sum(axis=1, keepdims=True)
                loos.append(("gold", exclusive_sums(wg, total=swg) / s0m, swg / s0))
            for name, loo, full in loos:
                mu = wsum(loo) / n
                out[name + "_bias"][:, g] = ((n - 1.0) * (mu - full))[:, 0]
                if variances:
                    out[name + "_jkvar"][:, g] = (n - 1.0) / n * wsum((loo - mu) ** 2)[:, 0]
            if ser.size:  # the sample mean's own leave-one-out shifts average to 0 exactly: drop them
                gl_mean = gl.mean(axis=1) if cnt is None else dot(gl, cnt[ser]) / n
                out["reward_bias"][ser, g] = (n - 1.0) * (gl_mean - gain_s)
            if not variances:
                continue
            # the frontier's linearisation (w~ - 1)/lam, w~ = w / mean w; at lam = 0 it is r - rbar
            wt = w / s0 * n
            with np.errstate(divide="ignore", invalid="ignore"):
                fv = wsum((wt - 1.0) ** 2) / (lam * lam * n * (n - 1.0))
            fv0 = sd2[:, None] / (n * (n - 1.0))
            out["frontier_var"][:, g] = np.where(zero, fv0, fv)[:, 0]
    return out


def tilt_khat(r, lams, fit):
    """Pareto shape of the tilted weights ``e^{lam r}`` of each row, where ``fit`` (else NaN).

    Parameters
    ----------
    r : (B, n) ndarray
        Rewards, sorted ascending along each row.
    lams : (G,) or (B, G) ndarray
    fit : (B, G) bool ndarray
        Where to fit (the Zhang–Stephens fit is the costly part of a tilt).

    Returns
    -------
    (B, G) ndarray
        :func:`pareto_khat` of ``lam r`` (only the top ``M + 1`` of each row
        are read; the shape is shift-invariant), ``-inf`` at ``lam = 0``.

    >>> r = np.sort(np.random.default_rng(0).normal(size=(2, 100)), axis=1)
    >>> k = tilt_khat(r, np.array([0.0, 1.0]), np.array([[True, True], [True, False]]))
    >>> bool(np.isneginf(k[0, 0])), bool(np.isnan(k[1, 1])), bool(k[0, 1] < 0.7)
    (True, True, True)
    """
    B, n = r.shape
    lams = np.asarray(lams, dtype=float)
    lam_cols = np.broadcast_to(lams if lams.ndim == 2 else lams[None, :], (B, lams.shape[-1]))
    M = int(np.ceil(min(0.2 * n, 3.0 * np.sqrt(n))))
    tail = r[:, -(M + 1) :]
    out = np.where(lam_cols == 0.0, -np.inf, np.nan)
    for g in range(lam_cols.shape[1]):
        rows = np.flatnonzero(fit[:, g] & (lam_cols[:, g] != 0.0))
        if rows.size:
            out[rows, g] = pareto_khat(lam_cols[rows, g : g + 1] * tail[rows], n=n)
    return out


def khat_threshold(n):
    """Largest trustworthy Pareto shape of importance weights from ``n`` draws: ``min(1 - 1/log10 n, 0.7)``.

    Vehtari, Simpson, Gelman, Yao & Gabry (2024), *Pareto smoothed importance
    sampling*, JMLR 25(72), §3: above it a self-normalised estimate is
    unreliable at this sample size.

    >>> float(khat_threshold(100)), float(khat_threshold(10**9))
    (0.5, 0.7)
    """
    n = np.asarray(n, dtype=float)
    with np.errstate(divide="ignore"):
        return np.minimum(1.0 - 1.0 / np.log10(np.maximum(n, 2.0)), 0.7)


def pareto_khat(logw, n=None):
    """Estimated Pareto shape ``k`` of the upper tail of each row's weights ``e^{logw}``.

    Rows are sorted ascending.

    Parameters
    ----------
    logw : (B, n) ndarray
        Log-weights, sorted ascending along each row (or only their top
        ``M + 1`` columns, with ``n`` given).
    n : int, optional
        Number of draws per row (default ``logw.shape[1]``).

    Returns
    -------
    (B,) ndarray
        ``k_hat``; ``-inf`` where the tail is flat (all top weights equal).

    Notes
    -----
    The tail is the ``M = ceil(min(0.2 n, 3 sqrt n))`` largest weights above
    the next one; their exceedances are fitted by the generalised Pareto
    law with the profile-likelihood estimator of Zhang & Stephens (2009),
    *Technometrics* 51(3), with the weakly informative prior on ``k`` used by
    Vehtari et al. (2024).  ``k >= 1/2``: infinite variance; ``k >= 1``:
    infinite mean.  The computation is batched over rows.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> heavy = np.sort(np.log(rng.pareto(1.0, size=(1, 4000)) + 1.0), axis=1)   # k = 1
    >>> light = np.sort(rng.normal(size=(1, 4000)) * 0.1, axis=1)
    >>> bool(pareto_khat(heavy)[0] > 0.8), bool(pareto_khat(light)[0] < 0.3)
    (True, True)
    """
    B = logw.shape[0]
    n = logw.shape[1] if n is None else int(n)
    M = int(np.ceil(min(0.2 * n, 3.0 * np.sqrt(n))))
    out = np.full(B, -np.inf)
    if M < 5 or n < M + 1:
        return np.full(B, np.nan)
    top = logw[:, -M:]
    cut = logw[:, -M - 1 : -M]
    # exceedances e^{lw} - e^{cut}, scaled by e^{-max} (the shape is scale-free)
    mx = top[:, -1:]
    y = np.exp(top - mx) - np.exp(cut - mx)
    ok = y[:, -1] > 0
    y = y[ok]
    if y.shape[0] == 0:
        return out
    m_est = 30 + int(np.sqrt(M))
    j = np.arange(1, m_est + 1, dtype=float)
    yq = y[:, int(M / 4 + 0.5) - 1]
    # tied weights can put the quartile exceedance at 0 (b = inf): use the smallest positive one
    tied = ~(yq > 0)
    if tied.any():
        yq = np.where(tied, np.min(np.where(y > 0, y, np.inf), axis=1), yq)
    with np.errstate(divide="ignore", invalid="ignore"):
        b = (1.0 - np.sqrt(m_est / (j - 0.5)))[None, :] / (3.0 * yq[:, None]) + 1.0 / y[:, -1:]
        k = np.log1p(-b[:, :, None] * y[:, None, :]).mean(axis=2)  # (rows, m)
        ll = M * (np.log(-b / k) - k - 1.0)
        ll = np.where(np.isfinite(ll), ll, -np.inf)
        w = np.exp(ll - ll.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        b_post = (b * w).sum(axis=1)
        k_post = np.log1p(-b_post[:, None] * y).mean(axis=1)
    # mean log1p(-b y) is the shape itself; the prior pulls it to 1/2 with the weight of 10 draws
    khat = (M * k_post + 10 * 0.5) / (M + 10)
    out[np.flatnonzero(ok)] = khat
    return out
