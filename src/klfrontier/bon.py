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

from ._logspace import kl_terms, log1mexp, log_bon_kl_bound
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


def _log_ratio_cdf(logq, logF):
    """``c_j = log(F^-_j / F_j) = log(1 - q_j / F_j)``; ``-inf`` at the bottom level."""
    return log1mexp(np.minimum(logq - logF, 0.0))


def _bon_level_logd(logq, logF, log_n, c=None):
    """Log-law of the BoN winner's level for scalar ``log_n`` (ascending levels)."""
    if log_n == 0:
        return np.array(logq, dtype=float)   # N = 1 is p, exactly
    if c is None:
        c = _log_ratio_cdf(logq, logF)
    return _times_n(log_n, logF) + log1mexp(_times_n(log_n, c))


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
    logF, _, _ = ref.level_log_cdf
    lev = _bon_level_logd(ref.level_logq, logF, ln)
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

    Examples
    --------
    >>> ref = Reference([0.0, 1.0, 2.0], probs=[0.5, 0.3, 0.2])
    >>> bon_curve(ref, n=[1, 4]).reward.round(6).tolist()
    [0.7, 1.5279]
    """
    ln = np.atleast_1d(_resolve_log_n(n, log_n, allow_array=True)).astype(float).ravel()
    logq, u = ref.level_logq, ref.level_u
    logF, logFm, _ = ref.level_log_cdf
    c = _log_ratio_cdf(logq, logF)
    with np.errstate(divide="ignore"):
        log_neg_logF = np.log(-logF)      # decreasing in j; -inf at the top
    win_w = np.exp(logFm) + 0.5 * np.exp(logq)
    kl = np.empty(ln.size)
    rw = np.empty(ln.size)
    win = np.empty(ln.size)
    for i, x in enumerate(ln):
        # keep j with log N + (N-1) log F_j > -PRUNE  (N-1 = expm1(log N))
        if x > 0:
            log_nm1 = x + np.log(-np.expm1(-x))      # log(N - 1) without overflow
            thresh = np.log(_PRUNE + x) - log_nm1    # prune where log(-log F_j) > thresh
            j0 = int(np.searchsorted(-log_neg_logF, -thresh, side="left"))
        else:
            j0 = 0
        sl = slice(j0, None)
        lev = _bon_level_logd(logq[sl], logF[sl], x, c[sl])
        d = np.exp(lev)
        # In the sum q h(t) form a level with d = 0 contributes q: add the pruned mass.
        kl[i] = np.sum(kl_terms(lev, logq[sl])) + (np.exp(logF[j0 - 1]) if j0 > 0 else 0.0)
        rw[i] = d @ u[sl]
        win[i] = d @ win_w[sl]
    return BoNCurve(log_n=ln, kl=kl, reward=ref.to_reward(rw), win_rate=win,
                    kl_bound=np.asarray(log_bon_kl_bound(ln), dtype=float))


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
