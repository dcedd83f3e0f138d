"""Exact best-of-N with ties, real N and astronomically large N (SPEC §3).

Draw N i.i.d. samples from ``p`` and return one with the highest reward, ties
broken uniformly.  With ``F(v) = P(r <= v)``, ``F^-(v) = P(r < v)`` and level
mass ``q(v)``, the reward level of the winner has law

    d(v) = F(v)^N - F^-(v)^N,     pi_N(y) = p(y) d(r(y)) / q(r(y)).

Everything runs in log space from ``log N``:
``log d_j = N log F_j + log(1 - e^{N c_j})`` with ``c_j = log(F^-_j / F_j)
= log(1 - q_j / F_j)`` and ``N x = -exp(log N + log(-x))`` for ``x <= 0``, so
``N = e^{10^6}`` is as easy as ``N = 2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._logspace import kl_terms, log1mexp, log_bon_kl_bound, log_neg_log1mexp
from .policy import Policy, level_win_rate
from .reference import Reference
from .tilt import solve_lam_for_kl, solve_lam_for_reward

__all__ = [
    "best_of_n",
    "bon_curve",
    "BoNCurve",
    "bon_kl_bound",
    "bon_kl_estimator",
    "bon_kl_estimate",
]

# Levels whose BoN mass ratio d_j/q_j <= N F_j^{N-1} is below e^-PRUNE add less
# than PRUNE e^-PRUNE (~5e-25) to KL and reward: bon_curve skips them.
_PRUNE = 60.0


def _resolve_log_n(n, log_n, *, allow_array=False):
    if (n is None) == (log_n is None):
        raise ValueError("give exactly one of n= or log_n=")
    name, val = ("n", n) if n is not None else ("log_n", log_n)
    arr = np.asarray(val, dtype=float)
    if not allow_array and arr.ndim != 0:
        raise ValueError(f"{name} must be a scalar")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if np.isnan(arr).any():
        raise ValueError(f"{name} is NaN")
    if name == "n":
        if (arr < 1).any():
            raise ValueError("n must be >= 1")
        with np.errstate(divide="ignore"):
            return np.log(arr)
    if (arr < 0).any():
        raise ValueError("log_n must be >= 0")
    return arr


def _times_n(log_n, x):
    """``N x`` for ``x <= 0`` as ``-exp(log N + log(-x))`` (no overflow of N)."""
    with np.errstate(divide="ignore", over="ignore"):   # N x = -inf is the right limit
        return -np.exp(log_n + np.log(-x))


def _bon_tail_logs(ref: Reference):
    """``log(-log F_j)`` and ``log(-log(F^-_j / F_j))`` at the levels, tail-exact.

    ``-log F_j = -log(1 - S_j)`` is taken from the survival ``S_j`` (summed
    from the top) where ``S_j < 1/2``, so levels whose tails lie far below
    ``e^{-745}`` keep their exact contribution ``N S_j`` for astronomically
    large N; ``-log(F^-_j/F_j) = -log(1 - q_j/F_j)``.  ``+inf`` at the bottom
    level for the second, ``-inf`` at the top for the first.
    """
    cached = ref.__dict__.get("_bon_tail_logs")
    if cached is None:
        logF, _, logS = ref.level_log_cdf
        with np.errstate(divide="ignore"):
            lnl_f = np.where(logS < -np.log(2.0), log_neg_log1mexp(np.minimum(logS, 0.0)),
                             np.log(-logF))
        lnl_c = log_neg_log1mexp(np.minimum(ref.level_logq - logF, 0.0))
        cached = ref.__dict__["_bon_tail_logs"] = (lnl_f, lnl_c)
    return cached


def _bon_level_logd(logq, lnl_f, lnl_c, log_n):
    """Log-law of the BoN winner's level: ``-N A_j + log(1 - e^{-N C_j})``.

    ``A_j = -log F_j``, ``C_j = -log(F^-_j/F_j)`` given as their logs
    (:func:`_bon_tail_logs`), so ``N`` never appears outside an exponent.
    """
    if log_n == 0:
        return np.array(logq, dtype=float)   # N = 1 is p, exactly
    with np.errstate(over="ignore"):
        return -np.exp(log_n + lnl_f) + log1mexp(-np.exp(log_n + lnl_c))


def bon_kl_bound(n=None, *, log_n=None):
    """The usual BoN KL formula ``log N - (N - 1)/N`` (an upper bound; SPEC §3).

    Examples
    --------
    >>> round(float(bon_kl_bound(4)), 12)
    0.636294361120
    >>> float(bon_kl_bound(log_n=1e6))
    999999.0
    """
    ln = _resolve_log_n(n, log_n, allow_array=True)
    out = log_bon_kl_bound(ln)
    return float(out) if np.ndim(out) == 0 else out


def best_of_n(ref: Reference, n=None, *, log_n=None) -> Policy:
    """Exact law of best-of-N with uniform tie-breaking.

    Parameters
    ----------
    ref : Reference
    n : float, optional
        Number of samples, real ``n >= 1``.
    log_n : float, optional
        ``log N`` instead of ``n`` (``log_n = 1e6`` works).

    Returns
    -------
    Policy
        ``method="best_of_n"`` with ``n``, ``log_n``, ``kl_bound`` (``log N -
        (N-1)/N``), ``lam_same_kl`` and ``lam_same_reward`` (the inverse
        temperatures of the tilted policies with the same KL / the same reward:
        the BoN <-> RLHF dictionary; ``inf`` when BoN reaches ``r_max``).

    Notes
    -----
    ``KL(pi_N||p) = sum_v d(v) log(d(v)/q(v))`` and ``E r = sum_v v d(v)``.

    Examples
    --------
    >>> ref = Reference([0.0, 1.0, 2.0], probs=[0.5, 0.3, 0.2])
    >>> b = best_of_n(ref, n=4)
    >>> b.level_probs.round(6).tolist()
    [0.0625, 0.3471, 0.5904]
    >>> round(b.reward, 6), round(b.kl, 6), round(b.kl_bound, 6)
    (1.5279, 0.559751, 0.636294)
    """
    ln = float(_resolve_log_n(n, log_n))
    lev = _bon_level_logd(ref.level_logq, *_bon_tail_logs(ref), ln)
    kl = float(np.sum(kl_terms(lev, ref.level_logq)))
    reward = ref.to_reward(np.exp(lev) @ ref.level_u)
    lam_kl = float(solve_lam_for_kl(ref, kl)) if kl > 0 else 0.0
    if ref.is_constant or kl == 0:
        lam_rw = 0.0
    elif lev[-1] == 0.0:
        lam_rw = np.inf
    else:
        lam_rw = float(solve_lam_for_reward(ref, min(reward, ref.r_max)))
    n_val = float(np.exp(ln)) if ln < 709 else np.inf
    return Policy(ref, "best_of_n", lev, kl=kl, reward=reward,
                  params={"n": n_val, "log_n": ln, "kl_bound": float(log_bon_kl_bound(ln)),
                          "lam_same_kl": lam_kl, "lam_same_reward": lam_rw})


@dataclass
class BoNCurve:
    """Best-of-N measured at many N: arrays aligned with ``log_n``."""

    log_n: np.ndarray
    kl: np.ndarray
    reward: np.ndarray
    win_rate: np.ndarray
    kl_bound: np.ndarray

    @property
    def n(self):
        with np.errstate(over="ignore"):
            return np.exp(self.log_n)

    def as_dict(self):
        return {k: getattr(self, k).tolist() for k in ("log_n", "kl", "reward", "win_rate", "kl_bound")}


def bon_curve(ref: Reference, n=None, *, log_n=None) -> BoNCurve:
    """Exact BoN KL, reward and win rate at an array of N.

    The level CDF is computed once; for each N only the levels that can
    matter (``log N + (N-1) log F_j > -60``) are visited, so large N cost
    little.

    Notes
    -----
    For ``0.1 <= log N <= 600`` the sums run blocked over (N x levels) tiles
    that stay in cache, with ``log d_j = -N A_j + log(1 - e^{-N C_j})``,
    ``A = -log F``, ``C = -log(F^-/F)`` and ``KL = sum_j d_j log(d_j / q_j)``
    (pruned levels add ``d log(d/q) ~ 0``); three transcendental functions
    per (N, level).  Other N (near 1, where the ``q h(t)`` form avoids
    cancellation, or beyond float range) take the per-N log-space path.

    Examples
    --------
    >>> ref = Reference([0.0, 1.0, 2.0], probs=[0.5, 0.3, 0.2])
    >>> bon_curve(ref, n=[1, 4]).reward.round(6).tolist()
    [0.7, 1.5279]
    """
    ln = np.atleast_1d(_resolve_log_n(n, log_n, allow_array=True)).astype(float).ravel()
    logq, u = ref.level_logq, ref.level_u
    logF, logFm, _ = ref.level_log_cdf
    lnl_f, lnl_c = _bon_tail_logs(ref)
    log_neg_logF = lnl_f                  # decreasing in j; -inf at the top
    j0 = np.zeros(ln.size, dtype=np.intp)
    pos = ln > 0
    # keep j with log N + (N-1) log F_j > -PRUNE  (N-1 = expm1(log N))
    log_nm1 = ln[pos] + np.log(-np.expm1(-ln[pos]))            # log(N - 1) without overflow
    thresh = np.log(_PRUNE + ln[pos]) - log_nm1                # prune where log(-log F_j) > thresh
    j0[pos] = np.searchsorted(-log_neg_logF, -thresh, side="left")
    kl = np.full(ln.size, np.nan)
    rw = np.full(ln.size, np.nan)
    win = np.full(ln.size, np.nan)
    win_w = None
    fast = np.flatnonzero((ln >= _FAST_LOG_N_MIN) & (ln <= _FAST_LOG_N_MAX) & (j0 < logq.size))
    if fast.size:
        jmin = int(j0[fast].min())
        q = np.exp(logq[jmin:])
        win_w = np.exp(logFm) + 0.5 * np.exp(logq) if jmin == 0 else None
        ww = (np.exp(logFm[jmin:]) + 0.5 * q) if win_w is None else win_w
        rl = logq[jmin:] - logF[jmin:]                         # log(q/F) <= 0
        with np.errstate(divide="ignore", over="ignore"):
            big = rl >= _LOG_HALF
            C = -np.log1p(-np.exp(np.where(big, _LOG_HALF, rl)))
            C[big] = logF[jmin:][big] - logFm[jmin:][big]      # -log(F^-/F): inf at the bottom
        if np.all(C > 1e-280):                                 # no level mass lost to underflow
            sums = _bon_sums_blocked(np.exp(ln[fast]), j0[fast] - jmin, -logF[jmin:], C,
                                     logq[jmin:], np.column_stack([u[jmin:], ww, np.ones(q.size)]))
            # sum q h(t) = sum d t + sum q - sum d: keeps KL exact when the
            # level masses sum to 1 only up to rounding (pruned d are ~0).
            sums[0] += np.sum(np.exp(logq)) - sums[4]
            # the sums above carry a rounding error ~ eps (sum |d log(d/q)| + sum q
            # + sum d): rows whose KL is not >> that (N near 1, or one dominant
            # level) take the exact q h(t) path below.
            ok = sums[3] + 2.0 <= _MAX_CANCEL * sums[0]
            kl[fast[ok]], rw[fast[ok]], win[fast[ok]] = sums[:3, ok]
    if win_w is None:
        win_w = np.exp(logFm) + 0.5 * np.exp(logq)
    for i in np.flatnonzero(~(np.isfinite(kl) & np.isfinite(rw) & np.isfinite(win))):
        x, j = ln[i], int(j0[i])
        if x == 0:                                    # N = 1 is p, exactly
            q1 = np.exp(logq)
            kl[i], rw[i], win[i] = 0.0, q1 @ u, q1 @ win_w
            continue
        sl = slice(j, None)
        lev = _bon_level_logd(logq[sl], lnl_f[sl], lnl_c[sl], x)
        d = np.exp(lev)
        # In the sum q h(t) form a level with d = 0 contributes q: add the pruned mass.
        kl[i] = np.sum(kl_terms(lev, logq[sl])) + (np.exp(logF[j - 1]) if j > 0 else 0.0)
        rw[i] = d @ u[sl]
        win[i] = d @ win_w[sl]
    return BoNCurve(log_n=ln, kl=kl, reward=ref.to_reward(rw), win_rate=win,
                    kl_bound=np.asarray(log_bon_kl_bound(ln), dtype=float))


# bon_curve's blocked path: log N range (below: cancellation in sum d log(d/q)
# would cost > 1e-14 relative; above: N overflows) and tile size in elements.
_FAST_LOG_N_MIN = 0.1
_FAST_LOG_N_MAX = 600.0
_LOG_HALF = -np.log(2.0)
_TILE = 1 << 15
_MAX_CANCEL = 1e3


def _bon_sums_blocked(N, j0, A, C, logq, uw):
    """``sum_j d_j log(d_j/q_j)``, ``sum_j d_j u_j``, ``sum_j d_j w_j`` over ``j >= j0``.

    ``uw`` holds ``u`` and ``w`` as its first two columns; row 3 of the output
    is ``sum_j |d_j log(d_j/q_j)|`` (the scale of the KL sum's rounding
    error), rows 4... the sums ``d @ uw[:, 2:]``.

    ``log d_j = -N A_j + log(1 - e^{-N C_j})``.  Rows are sorted by ``j0``
    so that the rows active on a block of levels are a prefix; a row may
    also cover a few of its pruned levels, which only adds exact (tiny) terms.
    """
    order = np.argsort(j0, kind="stable")
    j0s = j0[order]
    Ns = N[order][:, None]
    R, L = Ns.shape[0], A.size
    kl = np.zeros(R)
    kl_abs = np.zeros(R)
    sums = np.zeros((R, uw.shape[1]))
    s = int(j0s[0])
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        while s < L:
            k = int(np.searchsorted(j0s, s, side="right"))
            e = min(L, s + max(256, _TILE // k))
            k = int(np.searchsorted(j0s, e - 1, side="right"))
            Nk = Ns[:k]
            y = np.multiply(Nk, C[s:e])
            np.negative(y, out=y)
            np.expm1(y, out=y)
            np.negative(y, out=y)
            np.log(y, out=y)                                   # log(1 - e^{-N C})
            # where N C > log 2, log(-expm1(-N C)) is only absolutely accurate:
            # redo those (few) columns with log1p(-e^{-N C}) (Maechler 2012)
            cols = np.flatnonzero(C[s:e] > -_LOG_HALF / Nk[-1, 0]) + s
            if cols.size:
                nc = Nk * C[cols]
                y[:, cols - s] = np.where(nc > -_LOG_HALF, np.log1p(-np.exp(-nc)),
                                          y[:, cols - s])
            z = np.multiply(Nk, A[s:e])
            y -= z                                             # log d
            np.exp(y, out=z)                                   # d
            y -= logq[s:e]                                     # t = log(d/q)
            sums[:k] += z @ uw[s:e]
            y *= z
            kl[:k] += y.sum(axis=1)
            np.abs(y, out=y)
            kl_abs[:k] += y.sum(axis=1)
            s = e
    out = np.empty((3 + uw.shape[1], R))
    out[0, order] = kl
    out[3, order] = kl_abs
    out[1, order] = sums[:, 0]
    out[2, order] = sums[:, 1]
    out[4:, order] = sums[:, 2:].T
    return out


def bon_kl_estimator(eps, n=None, *, log_n=None):
    """Beirami et al. (2024) per-sample BoN KL estimate ``D_hat(eps)``, ``eps = p(y)``.

    ``D_hat = (1-eps)^N [log N + (N-1) log(1-eps) - (N-1)/N]
    + (1 - (1-eps)^N) log((1 - (1-eps)^N)/eps)``, with
    ``0 <= D_hat <= log N - (N-1)/N``.

    Examples
    --------
    >>> round(float(bon_kl_estimator(1e-12, n=8)), 9)   # tiny eps: the bound
    1.204441542
    """
    ln = _resolve_log_n(n, log_n)
    eps = np.asarray(eps, dtype=float)
    if np.isnan(eps).any() or (eps <= 0).any() or (eps > 1).any():
        raise ValueError("eps must lie in (0, 1]")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        l1m = np.log1p(-eps)                              # log(1 - eps), -inf at eps = 1
        a = _times_n(ln, l1m)                             # N log(1 - eps)
        A = np.exp(a)
        B = -np.expm1(a)
        frac = -np.expm1(-ln)                             # (N-1)/N
        nm1_l1m = np.where(ln > 0, _times_n(np.log(-np.expm1(-ln)) + ln, l1m), 0.0)
        inner = ln + nm1_l1m - frac
        term1 = np.where(A > 0, A * inner, 0.0)
        term2 = np.where(B > 0, B * (np.log(B) - np.log(eps)), 0.0)
    out = np.maximum(term1 + term2, 0.0)
    return float(out) if out.ndim == 0 else out


def bon_kl_estimate(ref: Reference, n=None, *, log_n=None, samples=None):
    """Average of :func:`bon_kl_estimator` over BoN outputs.

    With ``samples=None`` the average is exact: ``sum_y pi_N(y) D_hat(p(y))``.
    Otherwise ``samples`` are outcome indices drawn from BoN and the sample
    mean is returned.  Compare with the exact ``best_of_n(...).kl``.

    Examples
    --------
    >>> ref = Reference([0.0, 1.0, 2.0], probs=[0.5, 0.3, 0.2])
    >>> round(bon_kl_estimate(ref, n=4), 6) > best_of_n(ref, n=4).kl
    True
    """
    ln = float(_resolve_log_n(n, log_n))
    on = ref.level_index >= 0
    if samples is None:
        pol = best_of_n(ref, log_n=ln)
        lp = pol.logprobs[on]
        est = bon_kl_estimator(np.exp(ref.logprobs[on]), log_n=ln)
        return float(np.exp(lp) @ est)
    idx = np.asarray(samples)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError("samples must be a non-empty 1-D array of outcome indices")
    if (idx < 0).any() or (idx >= ref.size).any() or not on[idx].all():
        raise ValueError("samples contains indices outside the support of ref")
    return float(np.mean(bon_kl_estimator(np.exp(ref.logprobs[idx]), log_n=ln)))
