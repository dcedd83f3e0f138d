"""Estimators from samples of a real model (SPEC §9).

Per prompt there are ``n`` samples ``r_1..r_n`` from the reference (optionally
with their log-probabilities).  Their empirical law ``p_hat`` puts mass
``1/n`` on each sample; the library's exact engines applied to ``p_hat`` give
*plug-in* estimates:

* best-of-N on ``p_hat`` (:func:`klfrontier.bon.bon_curve`; ties exact);
* the tilted policy and frontier on ``p_hat`` (:mod:`klfrontier.tilt`).

Beside them:

* the unbiased without-replacement BoN estimator
  ``U_N = sum_i r_(i) C(i-1, N-1) / C(n, N)`` (:func:`unbiased_bon_reward`),
  whose mean over the draw of the ``n`` samples is exactly ``E[max of N]``;
* the covariance form of the tilted reward gain,
  ``E_{phi_lam} r - E_p r = Cov_p(r, e^{lam r}) / E_p e^{lam r}``
  (:func:`tilted_gain_cov`), a base-sample estimator;
* percentile confidence intervals from a two-level bootstrap (prompts with
  replacement, then samples within each drawn prompt with replacement).

Trust
-----
``p_hat`` gives every sample mass ``1/n``, so any reweighting ``phi`` of the
samples has ``KL(phi || p_hat) = log n - H(phi) <= log n``: plug-in KL is
capped by ``log n`` whatever the true KL is.  Near the cap ``phi`` sits on a
few samples: ``H(phi) < 1`` nat means fewer than ``e`` effective samples
(``exp(H_2) <= exp(H)``).  The rule used here: an estimate is *trusted*
while its plug-in KL (or budget) is at most ``log n - trust_margin``
(default margin 1 nat), or is 0; BoN estimates need ``N <= n`` as well.
Across prompts an entry is trusted when it is trusted for every prompt.

Bootstrap kernels
-----------------
Each resample is a vector of level counts, and every statistic is recomputed
on it by vectorised kernels that work on many resamples at once (BoN level
law on integer counts, hypergeometric form of ``U_N``, tilts by moment
series or matrix products, a batched Newton solver for the frontier).  They
agree with the exact engines (:func:`~klfrontier.bon.bon_curve`,
:func:`~klfrontier.tilt.tilt_stats`, :func:`~klfrontier.tilt.frontier`) to
about ``1e-11`` of the reward range (``tests/test_empirical.py``).  Cost:
``O(n_boot * sum_x n_x * (grid sizes))``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from scipy.special import betaln, gammaln, logsumexp

from ._logspace import log_neg_log1mexp
from .bon import _bon_level_logd, bon_curve, bon_kl_bound, bon_kl_estimator
from .io import SampleSet
from .reference import Reference
from .tilt import frontier, tilt_stats

__all__ = [
    "unbiased_bon_reward",
    "tilted_gain_cov",
    "kl_trust_limit",
    "analyze_samples",
    "EmpiricalAnalysis",
    "EstimateTable",
    "Estimate",
]

# Elements of a (rows x grid x levels) work array processed at once.
_BLOCK = 2**21


# ----------------------------------------------------------------------------- kernels
_SMALL_M = 32


def _log_choose(k, m):
    """``log C(k, m)`` for integer arrays ``k >= 0`` and integer ``m >= 0``; ``-inf`` where ``k < m``.

    ``C(k, m) = 1 / ((k + 1) B(m + 1, k - m + 1))`` with ``betaln`` (no
    difference of two large ``gammaln``), or for ``m <= 32`` the exact sum
    ``sum_j log(k - j) - log m!``.
    """
    k = np.asarray(k, dtype=float)
    out = np.full(k.shape, -np.inf)
    ok = k >= m
    kk = k[ok]
    if m <= _SMALL_M:
        # betaln loses ~1e-11 for a tiny first argument and a huge second one;
        # the falling factorial k (k-1) ... (k-m+1) / m! is a short exact sum
        acc = np.zeros(kk.shape)
        for j in range(int(m)):
            acc += np.log(kk - j)
        out[ok] = acc - gammaln(m + 1.0)
    else:
        out[ok] = -np.log1p(kk) - betaln(m + 1.0, kk - m + 1.0)
    return out


def _check_rewards(rewards):
    r = np.asarray(rewards, dtype=float)
    if r.ndim != 1 or r.size == 0:
        raise ValueError("rewards must be a non-empty 1-D array")
    if not np.isfinite(r).all():
        raise ValueError("rewards contain NaN or inf")
    return r


def _check_int_n(n, n_max):
    arr = np.asarray(n, dtype=float)
    if arr.size == 0 or np.isnan(arr).any() or (arr != np.round(arr)).any():
        raise ValueError("n must be integers")
    if (arr < 1).any() or (arr > n_max).any():
        raise ValueError(f"n must lie in [1, number of samples = {n_max}]")
    return arr.astype(np.int64)


def unbiased_bon_reward(rewards, n):
    """Unbiased estimate of the best-of-N reward from ``n_s`` samples drawn without replacement.

    Parameters
    ----------
    rewards : (n_s,) array_like
        Samples of the reward under the reference.
    n : int or array_like of int
        ``N`` with ``1 <= N <= n_s``.

    Returns
    -------
    float or ndarray
        ``U_N`` for each ``N``.

    Notes
    -----
    With the samples sorted ascending, ``r_(1) <= ... <= r_(n_s)``,

    .. math:: U_N = \\sum_{i=N}^{n_s} r_{(i)} \\binom{i-1}{N-1} / \\binom{n_s}{N},

    the average of ``max`` over all ``C(n_s, N)`` subsets of size ``N`` (the
    ``i``-th smallest is the maximum of exactly ``C(i-1, N-1)`` of them).
    Its expectation over i.i.d. samples is ``E[max of N i.i.d. draws]``.
    The weights are formed in log space (:func:`scipy.special.betaln`) and
    normalised to sum to one (the hockey-stick identity makes that exact), so
    ``n_s = 10^6`` is routine.  ``U_1`` is the sample mean, ``U_{n_s}`` the
    sample maximum.

    Examples
    --------
    >>> unbiased_bon_reward([3.0, 1.0, 2.0], [1, 2, 3]).tolist()   # (1+2+3)/3, (2+3+3)/3, 3
    [2.0, 2.6666666666666665, 3.0]
    """
    r = np.sort(_check_rewards(rewards))
    ns = _check_int_n(n, r.size)
    top = r[-1]
    i = np.arange(1, r.size + 1)
    out = np.empty(ns.shape, dtype=float)
    for pos, big_n in np.ndenumerate(ns):
        idx = i[big_n - 1:]
        logw = _log_choose(idx - 1, big_n - 1)
        w = np.exp(logw - logsumexp(logw))
        out[pos] = top + w @ (r[big_n - 1:] - top)
    return float(out) if out.ndim == 0 else out


def tilted_gain_cov(rewards, lam):
    """Tilted reward gain in covariance form, from base samples.

    Parameters
    ----------
    rewards : (n,) array_like
        Samples of the reward under the reference.
    lam : float or array_like
        Inverse temperatures ``lam >= 0`` (reward units).

    Returns
    -------
    float or ndarray
        ``Cov_p_hat(r, e^{lam r}) / E_p_hat[e^{lam r}]`` for each ``lam``.

    Notes
    -----
    .. math:: E_{\\phi_\\lambda} r - E_p r
              = \\frac{\\mathrm{Cov}_p(r, e^{\\lambda r})}{E_p e^{\\lambda r}}
              = \\frac{\\sum_i w_i (r_i - \\bar r)}{\\sum_i w_i},
              \\quad w_i = e^{\\lambda (r_i - r_{\\max})}

    (the factor ``e^{lam r_max}`` cancels and keeps ``w`` in ``(0, 1]``).  On
    the empirical law this equals the plug-in tilted reward minus the sample
    mean, ``Lambda_hat'(lam) - r_bar``.

    Examples
    --------
    >>> round(tilted_gain_cov([0.0, 1.0], 1.0), 12)   # e/(1+e) - 1/2
    0.231058578630
    """
    r = _check_rewards(rewards)
    lams = np.asarray(lam, dtype=float)
    if np.isnan(lams).any() or (lams < 0).any() or np.isinf(lams).any():
        raise ValueError("lam must be finite and >= 0")
    dev = r - r.mean()
    w = np.exp(lams.reshape(-1, 1) * (r - r.max()))
    out = ((w @ dev) / w.sum(axis=1)).reshape(lams.shape)
    return float(out) if out.ndim == 0 else out


def kl_trust_limit(n, margin=1.0):
    """Largest plug-in KL (nats) trusted with ``n`` samples: ``log n - margin``.

    >>> round(kl_trust_limit(1000), 6)
    5.907755
    """
    return float(np.log(n) - margin)


# ----------------------------------------------------------------------------- vectorised kernels on counts
def _masses(counts, n):
    with np.errstate(divide="ignore"):
        return np.log(counts) - np.log(n)


# Levels whose BoN mass is below e^-_PRUNE (for every row) are skipped.
_PRUNE = 60.0


def _bon_prep(counts, n):
    """``log F_j`` and the BoN tail logs of level ``counts`` (``F_j = C_j/n``, ``C`` cumulative).

    Returns ``logF`` and ``(log(-log F_j), log(-log(F_{j-1}/F_j)))``, the
    arguments of :func:`klfrontier.bon._bon_level_logd`, exact on integer
    counts: ``-log F = -log(1 - S)`` from the survival ``S = (n - C)/n`` near
    the top, ``F_{j-1}/F_j = 1 - k_j/C_j``.
    """
    cum = np.cumsum(counts, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        surv = (n - cum) / n
        logF = np.where(surv < 0.5, np.log1p(-surv), np.log(cum / n))
        lnl_f = np.where(surv < 0.5, log_neg_log1mexp(np.log(np.minimum(surv, 0.5))),
                         np.log(-np.minimum(logF, 0.0)))
        lnl_c = np.where(cum > 0, log_neg_log1mexp(np.log(np.where(cum > 0, counts / cum, 1.0))), -np.inf)
    return logF, (lnl_f, lnl_c)


def _bon_from_counts(v, counts, n, ns):
    """Plug-in BoN reward, KL and win rate on resampled level counts.

    ``counts`` is ``(T, L)`` over ascending levels ``v``; returns three
    ``(T, M)`` arrays for the sizes ``ns``.  For each ``N`` only the levels
    with ``N log F_j > -60`` in some row are visited (the rest carry less
    than ``e^-60`` of the law).
    """
    T, L = counts.shape
    logq = _masses(counts, n)
    logF, tails = _bon_prep(counts, n)
    col_max = np.max(np.where(counts.cumsum(axis=1) > 0, logF, -np.inf), axis=0)  # nondecreasing
    win_w = (np.cumsum(counts, axis=1) - 0.5 * counts) / n       # F^- + q/2
    dv = v - v[-1]
    out = [np.empty((T, ns.size)) for _ in range(3)]
    for m, big_n in enumerate(ns):
        j0 = int(np.searchsorted(big_n * col_max > -_PRUNE, True)) if big_n > 1 else 0
        j0 = min(j0, L - 1)
        sl = slice(j0, None)
        lev = _bon_level_logd(logq[:, sl], tails[0][:, sl], tails[1][:, sl], np.log(float(big_n)))
        d = np.exp(lev)
        out[0][:, m] = v[-1] + d @ dv[sl]
        # sum d log(d/q): for integer N >= 2 the KL is not small, no cancellation to fear
        with np.errstate(invalid="ignore"):
            out[1][:, m] = np.sum(np.where(d > 0, d * (lev - logq[:, sl]), 0.0), axis=-1)
        out[2][:, m] = np.sum(d * win_w[:, sl], axis=-1)
    return out


def _unbiased_from_counts(v, counts, n, ns):
    """``U_N`` on resampled level counts: ``sum_j v_j [G(C_j) - G(C_{j-1})]``, ``G(k) = C(k,N)/C(n,N)``.

    Ties make the sorted-sample weights of one level add up to a difference
    of the hockey-stick partial sums ``sum_{i<=k} C(i-1,N-1) = C(k,N)``.
    Entries with ``N > n`` are NaN.
    """
    T, L = counts.shape
    cum = np.cumsum(counts, axis=1)
    prev = cum - counts
    dv = v - v[-1]
    out = np.full((T, ns.size), np.nan)
    ks = np.arange(n + 1)
    for m, big_n in enumerate(ns):
        if big_n > n:
            continue
        table = _log_choose(ks, big_n) - _log_choose(n, big_n)   # nondecreasing in k
        # levels whose cumulative count has G(C) < e^-60 in every row carry nothing
        j0 = min(int(np.searchsorted(table[cum.max(axis=0)] > -_PRUNE, True)), L - 1)
        hi, lo = table[cum[:, j0:]], table[prev[:, j0:]]
        with np.errstate(invalid="ignore"):
            d = np.where(np.isneginf(hi), 0.0, np.exp(hi) * -np.expm1(lo - hi))
        out[:, m] = v[-1] + d @ dv[j0:]
    return out


def _top_level(logW):
    """Index of the highest level with positive mass in each row."""
    L = logW.shape[1]
    return L - 1 - np.argmax(np.isfinite(logW[:, ::-1]), axis=1)


# Tilts with lam_u <= _SERIES_LAM come from the moment series (central moments up
# to _SERIES_ORDER): |u - c| <= 1 bounds every moment by the variance, so the
# truncation is below lam^(ORDER-1) / ORDER! ~ 1e-13 relative there.
_SERIES_LAM = 0.25
_SERIES_ORDER = 10
_FACT = np.cumprod(np.r_[1.0, np.arange(1.0, _SERIES_ORDER + 1)])   # k!


def _central_moments(u, W):
    """Means ``c`` and central moments ``mu_0..mu_ORDER`` of ``u`` under each row of ``W``."""
    c = W @ u
    dev = u[None, :] - c[:, None]
    mu = np.empty((W.shape[0], _SERIES_ORDER + 1))
    mu[:, 0], mu[:, 1] = 1.0, 0.0
    power = dev
    for k in range(2, _SERIES_ORDER + 1):
        power = power * dev
        mu[:, k] = np.sum(W * power, axis=1)
    return c, mu


def _tilt_series(mu, lam):
    """``(m1, var, D)`` of the tilt of ``u - c`` at ``lam`` from central moments.

    With ``M(lam) = E e^{lam (u - c)} = 1 + sum_{k>=2} mu_k lam^k / k!``:
    ``m1 = M'/M``, ``var = M''/M - m1^2``, ``D = lam m1 - log1p(M - 1)``;
    both terms of ``D`` are ``O(lam^2 var)`` and computed without cancellation.
    ``mu`` is ``(..., ORDER + 1)``; ``lam`` broadcasts against ``mu[..., 0]``.
    """
    m0 = p1 = p2 = 0.0
    for k in range(2, _SERIES_ORDER + 1):
        mk = mu[..., k]
        m0 = m0 + mk * lam**k / _FACT[k]
        p1 = p1 + mk * lam**(k - 1) / _FACT[k - 1]
        p2 = p2 + mk * lam**(k - 2) / _FACT[k - 2]
    m1 = p1 / (1.0 + m0)
    var = np.maximum(p2 / (1.0 + m0) - m1 * m1, 0.0)
    return m1, var, np.maximum(lam * m1 - np.log1p(m0), 0.0)


def _tilt_grid(u, logW, lam_u):
    """Tilts of each row of masses ``W`` at the inverse temperatures ``lam_u``.

    Parameters
    ----------
    u : (L,) standardised levels (ascending); logW : (T, L) log-masses;
    lam_u : (G,) inverse temperatures >= 0 (standardised units).

    Returns
    -------
    mean, kl, slope : (T, G) arrays
        ``E_phi u``, ``D = KL(phi || W)`` and ``d log D / d log lam = lam^2 Var_phi(u) / D``.

    Notes
    -----
    ``lam_u <= 0.25``: the moment series (:func:`_tilt_series`).  Above,
    rows are grouped by their top level ``j`` and everything is three matrix
    products with ``E = exp(lam (u - u_j))`` over the levels ``<= j``
    (entries in ``(0, 1]``, the top one exactly 1: nothing under- or
    overflows): ``Z = W E``, ``m_k = (W (u - u_j)^k) E / Z``,
    ``D = lam m_1 - log Z``, whose relative error ``eps / (lam^2 var)`` is
    small once ``lam`` is not.
    """
    T, L = logW.shape
    W = np.exp(logW)
    mean, kl, var = (np.empty((T, lam_u.size)) for _ in range(3))
    small = lam_u <= _SERIES_LAM
    if small.any():
        c, mu = _central_moments(u, W)
        m1, var[:, small], kl[:, small] = _tilt_series(mu[:, None, :], lam_u[None, small])
        mean[:, small] = c[:, None] + m1
    big = np.flatnonzero(~small)
    if big.size:
        top = _top_level(logW)
        lam = lam_u[big]
        for j in np.unique(top):
            rows = np.flatnonzero(top == j)
            du = u[:j + 1] - u[j]                                   # <= 0
            E = np.exp(du[:, None] * lam[None, :])                  # (j+1, G)
            Wj = W[rows, :j + 1]
            Z = Wj @ E
            m1 = ((Wj * du) @ E) / Z
            m2 = ((Wj * du * du) @ E) / Z
            mean[np.ix_(rows, big)] = u[j] + m1
            kl[np.ix_(rows, big)] = np.maximum(lam * m1 - np.log(Z), 0.0)
            var[np.ix_(rows, big)] = np.maximum(m2 - m1 * m1, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = lam_u * lam_u * var / kl
    return mean, kl, slope


def _tilt_pairs(u, logW, rows_of, top, moments, lam_u):
    """Like :func:`_tilt_grid` for row ``rows_of[i]`` of ``logW`` at ``lam_u[i]``.

    ``top`` and ``moments = (c, mu)`` (:func:`_central_moments`) describe
    the rows of ``logW``.  Returns ``(mean, kl, slope, dmean)`` with
    ``dmean = d E_phi u / d log lam = lam Var_phi(u)``.
    """
    A = rows_of.size
    L = logW.shape[1]
    mean, d, var = np.empty(A), np.empty(A), np.empty(A)
    small = lam_u <= _SERIES_LAM
    if small.any():
        c, mu = moments
        t = rows_of[small]
        m1, var[small], d[small] = _tilt_series(mu[t], lam_u[small])
        mean[small] = c[t] + m1
    big = np.flatnonzero(~small)
    rows = max(1, _BLOCK // max(1, L))
    for s in range(0, big.size, rows):
        idx = big[s:s + rows]
        t = rows_of[idx]
        du = u[None, :] - u[top[t], None]                       # <= 0 wherever W > 0
        lam = lam_u[idx]
        w = np.exp(logW[t] + lam[:, None] * du)
        Z = w.sum(axis=1)
        m1 = (w * du).sum(axis=1) / Z
        var[idx] = np.maximum((w * du * du).sum(axis=1) / Z - m1 * m1, 0.0)
        d[idx] = np.maximum(lam * m1 - np.log(Z), 0.0)
        mean[idx] = u[top[t]] + m1
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = lam_u * lam_u * var / d
    return mean, d, slope, lam_u * var


def _tilt_from_counts(u, logW, lam_u):
    """Mean of ``u`` and ``KL(phi || W)`` of the tilts (see :func:`_tilt_grid`)."""
    mean, kl, _ = _tilt_grid(u, logW, lam_u)
    return mean, kl


# log(lam_u) nodes that seed the frontier solver: spacing 1/4 gives Hermite starts
# with |log D - log Δ| ~ 1e-4, so one or two exact evaluations finish
_SEED_GRID = np.linspace(-10.0, 15.0, 101)


def _frontier_from_counts(u, logW, budgets, max_iter=60, tol=1e-11):
    """Plug-in frontier ``R*(Δ)`` (standardised mean) for each row of masses ``W``.

    Solves ``D_t(lam) = Δ_k`` for every (row, budget) pair at once.  ``log D``
    against ``ell = log lam`` on a grid (with its exact slope) gives a bracket
    and a cubic-Hermite start; safeguarded Newton steps on exact evaluations
    finish.  Once ``|log D - log Δ| < 1e-5`` the last Newton step is applied
    to the mean to first order (``dmean/dell = lam var``), which leaves an
    error of order ``1e-10`` (relative to the reward range).  Budgets at or
    above ``-log W_t(top)`` are saturated (mean ``u_top``).  Returns
    ``(mean, saturated)``, both ``(T, K)``.
    """
    T, L = logW.shape
    top = _top_level(logW)
    kl_max = -logW[np.arange(T), top]
    moments = _central_moments(u, np.exp(logW))
    mean = np.repeat(moments[0][:, None], budgets.size, axis=1)
    sat = budgets[None, :] >= kl_max[:, None]
    mean[sat] = np.broadcast_to(u[top][:, None], sat.shape)[sat]
    t_idx, k_idx = np.nonzero(~sat & (budgets[None, :] > 0))
    if t_idx.size == 0:
        return mean, sat
    A = t_idx.size
    with np.errstate(divide="ignore"):
        log_budget = np.log(budgets)
    target = log_budget[k_idx]
    rows_needed, where = np.unique(t_idx, return_inverse=True)
    _, gd, gs = _tilt_grid(u, logW[rows_needed], np.exp(_SEED_GRID))
    with np.errstate(divide="ignore"):
        lg = np.maximum.accumulate(np.log(gd), axis=1)                 # (rows, G) monotone
    G = _SEED_GRID.size
    # first node above each target, per (row, budget), then picked per pair
    j = np.sum(lg[:, :, None] < log_budget[None, None, :], axis=1)[where, k_idx]
    lo = np.where(j > 0, _SEED_GRID[np.maximum(j - 1, 0)], -np.inf)
    hi = np.where(j < G, _SEED_GRID[np.minimum(j, G - 1)], np.inf)
    jj = np.clip(j, 1, G - 1)
    x0, x1 = lg[where, jj - 1], lg[where, jj]
    s0, s1 = gs[where, jj - 1], gs[where, jj]
    ar = np.arange(A)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        h = x1 - x0
        tt = np.clip((target - x0) / h, 0.0, 1.0)
        h00, h10 = 2 * tt**3 - 3 * tt**2 + 1, tt**3 - 2 * tt**2 + tt
        h01, h11 = -2 * tt**3 + 3 * tt**2, tt**3 - tt**2
        herm = (h00 * _SEED_GRID[jj - 1] + h10 * h / s0 + h01 * _SEED_GRID[jj] + h11 * h / s1)
    ell = np.where(np.isfinite(herm), np.clip(herm, _SEED_GRID[jj - 1], _SEED_GRID[jj]),
                   0.5 * (_SEED_GRID[jj - 1] + _SEED_GRID[jj]))
    ell[j == 0] = _SEED_GRID[0] - 1.0
    ell[j == G] = _SEED_GRID[-1] + 1.0
    lo_ok, hi_ok = np.isfinite(lo), np.isfinite(hi)     # both from exact values on the grid
    res = np.empty(A)
    active = ar
    for _ in range(max_iter):
        e = ell[active]
        m, d, slope, dmean = _tilt_pairs(u, logW, t_idx[active], top, moments, np.exp(e))
        with np.errstate(divide="ignore"):
            g = np.log(d) - target[active]
        with np.errstate(divide="ignore", invalid="ignore"):
            step = -g / slope
        close = np.abs(g) < 1e-5
        res[active] = np.where(close & np.isfinite(step), m + dmean * step, m)
        above = g > 0
        hi[active] = np.where(above, e, hi[active])
        lo[active] = np.where(above, lo[active], e)
        hi_ok[active] |= above
        lo_ok[active] |= ~above
        narrow = hi[active] - lo[active] < tol
        done = close | (narrow & lo_ok[active] & hi_ok[active]) | (e > 700.0)
        # a narrow bracket whose far end was never confirmed by an evaluation: reopen it
        hi[active] = np.where(narrow & ~hi_ok[active], np.inf, hi[active])
        lo[active] = np.where(narrow & ~lo_ok[active], -np.inf, lo[active])
        lo_a, hi_a = lo[active], hi[active]
        cand = e + step
        fallback = np.where(np.isinf(hi_a), lo_a + 2.0,
                            np.where(np.isinf(lo_a), hi_a - 2.0, 0.5 * (lo_a + hi_a)))
        ok = np.isfinite(cand) & (cand > lo_a) & (cand < hi_a)
        ell[active] = np.where(ok, cand, fallback)
        active = active[~done]
        if active.size == 0:
            break
    # pairs left over (a budget a hair below the cap) keep their last mean: R is flat there
    mean[t_idx, k_idx] = res
    return mean, sat


# ----------------------------------------------------------------------------- results
def _jsonable(x):
    if x is None:
        return None
    a = np.asarray(x)
    if a.dtype == bool:
        return a.tolist()
    a = a.astype(float)
    if a.ndim == 0:
        return float(a) if np.isfinite(a) else None
    return np.where(np.isfinite(a), a, None).tolist()


@dataclass
class Estimate:
    """A point estimate with percentile bootstrap bounds and a trust flag.

    Attributes
    ----------
    value : ndarray
    lo, hi : ndarray or None
        Percentile bootstrap interval (``None`` when ``n_boot = 0``).
    trusted : ndarray of bool
        See the module notes for the rule.
    """

    value: np.ndarray
    lo: np.ndarray | None
    hi: np.ndarray | None
    trusted: np.ndarray

    def as_dict(self):
        """JSON-ready lists (NaN and ``inf`` become ``None``)."""
        return {k: _jsonable(getattr(self, k)) for k in ("value", "lo", "hi", "trusted")}


@dataclass
class EstimateTable:
    """The estimates for every prompt (leading axis ``P``) or aggregated over prompts.

    Grids: ``M`` values of ``N`` (BoN), ``G`` values of ``lam`` (tilt),
    ``K`` budgets Δ (frontier).

    Attributes
    ----------
    base_reward : Estimate
        ``E_p r`` (sample mean).
    bon_reward_plugin, bon_kl_plugin, bon_win_rate_plugin : Estimate
        Best-of-N on ``p_hat`` (``(.., M)``).
    bon_reward_unbiased : Estimate
        :func:`unbiased_bon_reward` (NaN where ``N > n``).
    tilt_reward, tilt_kl : Estimate
        Plug-in ``E_{phi_lam} r`` and ``KL(phi_lam || p_hat)`` (``(.., G)``).
    tilt_gain : Estimate
        :func:`tilted_gain_cov` (``(.., G)``).
    frontier_reward : Estimate
        Plug-in ``R*(Δ)`` (``(.., K)``).  Aggregated, each prompt gets the
        budget Δ; the tilt rows aggregated at a common ``lam`` give instead
        the frontier under an *average* KL budget (mean KL, mean reward).
    """

    base_reward: Estimate
    bon_reward_plugin: Estimate
    bon_reward_unbiased: Estimate
    bon_kl_plugin: Estimate
    bon_win_rate_plugin: Estimate
    tilt_reward: Estimate
    tilt_gain: Estimate
    tilt_kl: Estimate
    frontier_reward: Estimate

    def as_dict(self):
        return {f.name: getattr(self, f.name).as_dict() for f in fields(self)}


@dataclass
class EmpiricalAnalysis:
    """Result of :func:`analyze_samples`.

    Attributes
    ----------
    prompts : list of str
    n_samples : (P,) ndarray of int
    n_values : (M,) ndarray of int
    lam_values : (G,) ndarray
    kl_values : (K,) ndarray
    bon_kl_bound : (M,) ndarray
        ``log N - (N-1)/N``.
    per_prompt : EstimateTable
    aggregate : EstimateTable
        Means over prompts, with two-level bootstrap intervals.
    frontier_lam : (P, K) ndarray
        Plug-in ``lam_Δ`` per prompt (``inf`` where saturated).
    frontier_saturated : (P, K) ndarray of bool
        ``Δ >= -log p_hat(argmax)``.
    bon_kl_beirami : (P, M) ndarray or None
        With log-probabilities: the Beirami et al. estimate averaged over the
        plug-in BoN law of the samples, ``sum_i pi_hat_N(i) D_hat(p(y_i))``.
    confidence, n_boot, trust_margin
    """

    prompts: list
    n_samples: np.ndarray
    n_values: np.ndarray
    lam_values: np.ndarray
    kl_values: np.ndarray
    bon_kl_bound: np.ndarray
    per_prompt: EstimateTable
    aggregate: EstimateTable
    frontier_lam: np.ndarray
    frontier_saturated: np.ndarray
    bon_kl_beirami: np.ndarray | None
    confidence: float
    n_boot: int
    trust_margin: float

    def as_dict(self):
        """Plain-Python, strict-JSON form: NaN and ``inf`` become ``None``.

        ``frontier_lam`` is infinite exactly where ``frontier_saturated`` is true.
        """
        out = {"prompts": list(self.prompts), "confidence": self.confidence,
               "n_boot": self.n_boot, "trust_margin": self.trust_margin}
        for name in ("n_samples", "n_values", "lam_values", "kl_values", "bon_kl_bound",
                     "frontier_lam", "frontier_saturated", "bon_kl_beirami"):
            out[name] = _jsonable(getattr(self, name))
        out["per_prompt"] = self.per_prompt.as_dict()
        out["aggregate"] = self.aggregate.as_dict()
        return out


# ----------------------------------------------------------------------------- analysis
def _grid(x, name, *, integer=False):
    a = np.atleast_1d(np.asarray(x, dtype=float)).ravel()
    if np.isnan(a).any() or np.isinf(a).any():
        raise ValueError(f"{name} must be finite")
    if integer:
        if a.size == 0 or (a < 1).any() or (a != np.round(a)).any():
            raise ValueError(f"{name} must be integers >= 1")
        return a.astype(np.int64)
    if (a < 0).any():
        raise ValueError(f"{name} must be >= 0")
    return a


# The statistic vector of one prompt (or resample): EstimateTable fields in
# order, each with the grid it runs over (None: a single number).
_LAYOUT = (("base_reward", None), ("bon_reward_plugin", "n"), ("bon_reward_unbiased", "n"),
           ("bon_kl_plugin", "n"), ("bon_win_rate_plugin", "n"), ("tilt_reward", "lam"),
           ("tilt_gain", "lam"), ("tilt_kl", "lam"), ("frontier_reward", "kl"))


class _Prompt:
    """One prompt's samples, empirical reference and point estimates."""

    def __init__(self, rewards, logprobs, ns, lams, budgets):
        self.n = rewards.size
        self.ref = Reference.from_samples(rewards)
        self.v, self.counts = np.unique(rewards, return_counts=True)
        ref = self.ref
        log_ns = np.log(ns.astype(float))
        bc = bon_curve(ref, log_n=log_ns)
        unb = np.full(ns.size, np.nan)
        ok = ns <= self.n
        if ok.any():
            unb[ok] = unbiased_bon_reward(rewards, ns[ok])
        if ref.is_constant:
            t_reward, t_kl = np.full(lams.size, ref.r_max), np.zeros(lams.size)
        else:
            st = tilt_stats(ref, ref.lam_to_u(lams))
            t_reward, t_kl = ref.to_reward(st.mean), st.kl
        if budgets.size:
            fr = frontier(ref, budgets)
            f_reward, f_lam, f_sat = fr.reward, fr.lam, fr.saturated
        else:
            f_reward, f_lam, f_sat = (np.zeros(0),) * 2 + (np.zeros(0, dtype=bool),)
        # the order of _LAYOUT
        self.point = np.concatenate([[np.mean(rewards)], bc.reward, unb, bc.kl, bc.win_rate,
                                     t_reward, tilted_gain_cov(rewards, lams), t_kl, f_reward])
        self.frontier_lam, self.frontier_sat = f_lam, f_sat
        self.beirami = None
        if logprobs is not None:
            # per-sample BoN law: the level's mass shared by its tied samples
            level = np.searchsorted(self.v, rewards)
            eps = np.maximum(np.exp(logprobs), np.finfo(float).tiny)   # exp(-1000) -> the limit
            self.beirami = np.empty(ns.size)
            _, (lnl_f, lnl_c) = _bon_prep(self.counts, self.n)
            logq = _masses(self.counts, self.n)
            for m, big_n in enumerate(ns):
                d = np.exp(_bon_level_logd(logq, lnl_f, lnl_c, np.log(float(big_n))))
                self.beirami[m] = (d / self.counts)[level] @ bon_kl_estimator(eps, n=big_n)

    def boot_stats(self, counts, ns, lams, budgets):
        """Statistics (the order of ``_LAYOUT``) of resampled level counts ``(T, L)``."""
        v, n = self.v, self.n
        T = counts.shape[0]
        if v.size == 1:
            row = self.point
            return np.broadcast_to(row, (T, row.size))
        ref = self.ref
        scale = ref.reward_scale
        u = ref.level_u
        logW = _masses(counts, n)
        base = counts @ v / n
        b_rw, b_kl, b_win = _bon_from_counts(v, counts, n, ns)
        unb = _unbiased_from_counts(v, counts, n, ns)
        t_mean, t_kl = _tilt_from_counts(u, logW, ref.lam_to_u(lams))
        t_rw = v[-1] + t_mean * scale
        f_mean, _ = _frontier_from_counts(u, logW, budgets)
        f_rw = v[-1] + f_mean * scale
        return np.concatenate([base[:, None], b_rw, unb, b_kl, b_win, t_rw, t_rw - base[:, None],
                               t_kl, f_rw], axis=1)


def analyze_samples(samples, n_values=None, kl_values=None, lam_values=None, *, n_boot=200,
                    rng=0, progress=None, confidence=0.95, trust_margin=1.0) -> EmpiricalAnalysis:
    """Plug-in and unbiased estimates of the BoN and tilted trade-offs, with bootstrap CIs.

    Parameters
    ----------
    samples : SampleSet or mapping
        Reward samples per prompt (a mapping goes through
        :meth:`SampleSet.from_dict`).
    n_values : array_like of int, optional
        Best-of-N sizes ``N >= 1``.  Default: powers of two up to the largest
        per-prompt sample count.
    kl_values : array_like, optional
        KL budgets Δ >= 0 for the frontier.  Default: 21 points on
        ``[0, log n_max]``.  Pass ``[]`` to skip.
    lam_values : array_like, optional
        Inverse temperatures ``lam >= 0`` (reward units) for the tilted
        policy.  Default: 0 and 33 points ``lam * sd(r)`` log-spaced on
        ``[1e-2, 1e2]`` (``sd`` pooled over all samples).  Pass ``[]`` to skip.
    n_boot : int, default 200
        Bootstrap replications (0: no intervals).
    rng : int or numpy Generator, default 0
        Seed of the bootstrap.
    progress : callable, optional
        Called as ``progress(prompts_done, n_prompts)`` after each prompt's
        bootstrap (once, at the end, when ``n_boot = 0``).
    confidence : float, default 0.95
        Level of the percentile intervals.
    trust_margin : float, default 1.0
        Plug-in KL above ``log n - trust_margin`` is flagged untrusted.

    Returns
    -------
    EmpiricalAnalysis

    Notes
    -----
    *Two-level bootstrap.*  Replication ``b`` draws ``P`` prompts with
    replacement and, for every draw, ``n_x`` samples with replacement from
    that prompt (a multinomial on its reward levels); the aggregate statistic
    is the mean over the drawn prompts.  Per-prompt intervals use ``n_boot``
    within-prompt resamples.  Every statistic is recomputed exactly on each
    resample (plug-in BoN law, hypergeometric form of the unbiased
    estimator, tilt, and the frontier by a vectorised Newton solver).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> data = {f"q{i}": rng.normal(size=64) for i in range(5)}
    >>> res = analyze_samples(data, n_values=[1, 4], kl_values=[0.5], lam_values=[1.0],
    ...                       n_boot=50, rng=1)
    >>> agg = res.aggregate
    >>> bool(agg.bon_reward_unbiased.lo[1] < agg.bon_reward_unbiased.value[1]
    ...      < agg.bon_reward_unbiased.hi[1])
    True
    >>> res.per_prompt.bon_reward_plugin.value.shape
    (5, 2)
    """
    if not isinstance(samples, SampleSet):
        samples = SampleSet.from_dict(samples)
    counts_all = samples.counts
    n_max = int(counts_all.max())
    if n_values is None:
        n_values = 2 ** np.arange(int(np.floor(np.log2(n_max))) + 1)
    ns = _grid(n_values, "n_values", integer=True)
    if kl_values is None:
        kl_values = np.linspace(0.0, np.log(n_max), 21)
    budgets = _grid(kl_values, "kl_values")
    if lam_values is None:
        sd = float(np.std(np.concatenate(samples.rewards)))
        lam_values = (np.concatenate([[0.0], np.geomspace(1e-2, 1e2, 33)]) / sd
                      if sd > 0 else np.zeros(1))
    lams = _grid(lam_values, "lam_values")
    n_boot = int(n_boot)
    if n_boot < 0:
        raise ValueError("n_boot must be >= 0")
    if not 0 < confidence < 1:
        raise ValueError("confidence must lie in (0, 1)")
    if progress is not None and not callable(progress):
        raise ValueError("progress must be callable")
    gen = np.random.default_rng(rng)
    P = samples.n_prompts
    lps = samples.logprobs if samples.logprobs is not None else [None] * P
    grid_size = {None: 1, "n": ns.size, "lam": lams.size, "kl": budgets.size}
    ends = np.cumsum([grid_size[g] for _, g in _LAYOUT])
    where = {name: slice(e - grid_size[g], e) for (name, g), e in zip(_LAYOUT, ends)}
    S = int(ends[-1])

    prompts = [_Prompt(samples.rewards[x], lps[x], ns, lams, budgets) for x in range(P)]
    point = np.array([pr.point for pr in prompts]).reshape(P, S)

    lo_p = hi_p = lo_a = hi_a = None
    if n_boot:
        q = [(1 - confidence) / 2, (1 + confidence) / 2]
        # replication b draws the prompts pick[b]; prompt x is drawn by replications reps_of
        pick = gen.integers(0, P, size=(n_boot, P)).ravel()
        order = np.argsort(pick, kind="stable")
        reps = np.split(order // P, np.cumsum(np.bincount(pick, minlength=P))[:-1])
        agg_sum = np.zeros((n_boot, S))
        lo_p, hi_p = np.empty((P, S)), np.empty((P, S))
        for x, pr in enumerate(prompts):
            reps_of = reps[x]
            # one independent within-prompt resample per draw of the prompt
            # (at least n_boot of them, for the per-prompt intervals)
            cnt = gen.multinomial(pr.n, pr.counts / pr.n, size=max(reps_of.size, n_boot))
            stats = pr.boot_stats(cnt, ns, lams, budgets)
            np.add.at(agg_sum, reps_of, stats[:reps_of.size])
            lo_p[x], hi_p[x] = np.quantile(stats[:n_boot], q, axis=0)
            if progress is not None:
                progress(x + 1, P)
        lo_a, hi_a = np.quantile(agg_sum / P, q, axis=0)
    elif progress is not None:
        progress(P, P)

    # trust flags (module notes) -------------------------------------------
    limit = np.log(counts_all.astype(float))[:, None] - trust_margin

    def kl_ok(kl):
        return (kl <= limit) | (kl == 0)

    n_ok = ns[None, :] <= counts_all[:, None]
    bon_ok = n_ok & kl_ok(point[:, where["bon_kl_plugin"]])
    tilt_ok = kl_ok(point[:, where["tilt_kl"]])
    trusted = np.ones((P, S), dtype=bool)
    for name in ("bon_reward_plugin", "bon_kl_plugin", "bon_win_rate_plugin"):
        trusted[:, where[name]] = bon_ok
    trusted[:, where["bon_reward_unbiased"]] = n_ok
    for name in ("tilt_reward", "tilt_gain", "tilt_kl"):
        trusted[:, where[name]] = tilt_ok
    trusted[:, where["frontier_reward"]] = kl_ok(budgets[None, :])

    def table(vals, lo, hi, tr):
        def est(name, grid):
            sl = where[name] if grid else where[name].start   # base_reward: no grid axis
            return Estimate(vals[..., sl], None if lo is None else lo[..., sl],
                            None if hi is None else hi[..., sl], tr[..., sl])
        return EstimateTable(**{name: est(name, grid) for name, grid in _LAYOUT})

    per_prompt = table(point, lo_p, hi_p, trusted)
    aggregate = table(point.mean(axis=0), lo_a, hi_a, trusted.all(axis=0))
    f_lam = np.array([pr.frontier_lam for pr in prompts]).reshape(P, budgets.size)
    f_sat = np.array([pr.frontier_sat for pr in prompts], dtype=bool).reshape(P, budgets.size)
    beirami = (np.array([pr.beirami for pr in prompts]) if samples.logprobs is not None else None)
    return EmpiricalAnalysis(
        prompts=list(samples.prompts), n_samples=counts_all, n_values=ns, lam_values=lams,
        kl_values=budgets, bon_kl_bound=np.atleast_1d(bon_kl_bound(ns.astype(float))),
        per_prompt=per_prompt, aggregate=aggregate, frontier_lam=f_lam,
        frontier_saturated=f_sat, bon_kl_beirami=beirami, confidence=float(confidence),
        n_boot=n_boot, trust_margin=float(trust_margin))
