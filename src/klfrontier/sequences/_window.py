"""A piece of the law of ``S_m`` and exact best-of-N on it.

Best-of-N over sequences depends on the sequence only through ``S_m``:
with ``F(s) = P(S_m <= s)`` and ``q(s) = P(S_m = s)`` the winner's sum has
law ``d(s) = F(s)^N - F^-(s)^N``, and ``π_N(y^m) = p^m(y^m) d(S)/q(S)``.  So
``KL(π_N || p^m) = Σ_s d log(d/q)`` and, because ``φ_Δ(y^m)/p^m(y^m) =
e^{λ S - m Λ(λ)}``, ``KL(π_N || φ_Δ) = Σ_s d log(d / (q e^{λ s - mΛ(λ)}))``
— the theory §2 identity ``KL(π||p) - λ E S + mΛ(λ)`` summed term by term,
which avoids cancelling two numbers of size ``m δ``.

At ``N = e^{mδ}`` the BoN law occupies a window of a few dozen ``1/λ``
around ``m x*``; the engines deliver the law of ``S_m`` on such a window
(with bounds on what lies outside) instead of on the whole support.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._bon_kernel import level_logd, tail_logs
from .._logspace import kl_terms, log_cdf_levels

#: Bound (log) on the BoN mass allowed outside a window: e^-41.5 ≈ 1e-18.
LOG_OUTSIDE = -41.5
#: N S(s) at the window's lower end must exceed this (BoN mass below < e^-45).
LOG_LOW_ENOUGH = np.log(45.0)


@dataclass(eq=False)
class WindowLaw:
    """Law of ``S_m`` on a window of its support.

    Attributes
    ----------
    su : ndarray
        Sums in standardised units ``Σ u_i`` (ascending).
    values : ndarray
        The same sums in reward units.
    logpmf : ndarray
        ``log P(S_m = s)`` (for ``method='saddlepoint'``: cell masses).
    logsf : ndarray
        ``log P(S_m > s)`` summed from the window's top (plus the exact tail
        above it when ``complete_high``).
    logcdf : ndarray
        ``log P(S_m <= s)``.
    complete_low, complete_high : bool
        Whether the window reaches the ends of the support.
    log_above : float
        Bound on ``log P(S_m > values[-1])`` left out of ``logsf``.
    log_missing : float
        Bound on ``log`` of probability inside the window left out of ``logpmf``.
    log_q_outside : float
        Bound on ``log P(S_m outside the window)`` (NaN: unknown).
    rel_error : float
        Estimated largest relative error of the ``logpmf`` values.
    """

    su: np.ndarray
    values: np.ndarray
    logpmf: np.ndarray
    logsf: np.ndarray
    logcdf: np.ndarray
    complete_low: bool
    complete_high: bool
    method: str
    exact: bool
    log_above: float = -np.inf
    log_missing: float = -np.inf
    log_q_outside: float = np.nan
    rel_error: float = 0.0
    info: dict = field(default_factory=dict)


def tails(logpmf, complete_low=True):
    """``(logsf, logcdf)`` of a window: tails summed from the top / bottom in log space.

    ``log F`` is ``log1p(-S)`` where ``S < 1/2`` and the bottom-up sum
    elsewhere.  When the window does not start at the bottom of the support
    (``complete_low=False``) the bottom-up sums miss ``P(S_m < window)``,
    which the callers bound (Chernoff) and keep negligible where it matters;
    ``1 - S`` there would lose everything below one ulp of 1.
    """
    logcdf, _, logsf = log_cdf_levels(logpmf)
    return logsf, np.minimum(logcdf, 0.0)


@dataclass
class BoNOnWindow:
    """BoN measured on a window law (reward units; KLs in nats)."""

    reward: float
    kl: float
    kl_to_optimal: float
    kl_to_optimal_identity: float
    mean_su: float
    mass: float
    logd: np.ndarray = field(repr=False)


def bon_level_logd(logpmf, logsf, logcdf, log_n):
    """Log-law ``log(F^N - F^-^N)`` of the BoN winner's sum, from ``log N``.

    The best-of-N level-law kernel (:mod:`klfrontier._bon_kernel`, shared
    with single-token best-of-N) on the window's law: ``N log F`` and
    ``N log(F^-/F)`` enter as ``-exp(log N + log(-log F))`` and
    ``-exp(log N + log(-log(1 - q/F)))``, so no step forms ``1 - (tiny)``
    and tails far below ``1e-308`` (``N = e^{10^4}``) keep full relative
    accuracy.  Sums of zero mass keep ``-inf``.

    >>> lp = np.log([0.5, 0.5])
    >>> np.exp(bon_level_logd(lp, np.array([np.log(0.5), -np.inf]), np.log([0.5, 1.0]), np.log(2.0))).tolist()
    [0.25, 0.75]
    """
    logpmf = np.asarray(logpmf, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        lnl_f, lnl_c = tail_logs(logpmf, logcdf, logsf)
        logd = level_logd(logpmf, lnl_f, lnl_c, float(log_n))
    return np.where(np.isneginf(logpmf), -np.inf, logd)


def bon_on_window(w: WindowLaw, log_n: float, lam_u: float, m_cgf_u: float) -> BoNOnWindow:
    """Exact BoN reward and KLs from a window law (see module notes).

    ``lam_u`` and ``m_cgf_u = m Λ_u(λ_u)`` define ``φ_Δ`` in standardised
    units (``lam_u = inf``: saturated, ``KL(π_N || φ_Δ) = inf``).
    """
    logd = bon_level_logd(w.logpmf, w.logsf, w.logcdf, float(log_n))
    d = np.exp(logd)
    mass = float(d.sum())
    on = d > 0
    # locations of the renormalised law, centred at its mode: the window law sums to 1 minus
    # its rounding and lost tail (1.3e-11 at m = 1e5), which on its own would shift E S_m by
    # that share of m * r and swamp a reward gap of 0.09
    k = int(np.argmax(d))
    reward = float(w.values[k] + (d @ (w.values - w.values[k])) / mass)
    mean_su = float(w.su[k] + (d @ (w.su - w.su[k])) / mass)
    if w.complete_low and w.complete_high:
        kl = float(np.sum(kl_terms(logd, w.logpmf)))
    else:
        kl = float(np.sum(d[on] * (logd[on] - w.logpmf[on])))
        # Σ_window q h(log d/q) = KL - (q_out - d_out): no cancellation, so it is the
        # accurate form for tiny KL (N near 1), valid when the q-mass outside is negligible
        k2 = float(np.sum(kl_terms(logd, w.logpmf)))
        err1 = 8 * np.finfo(float).eps * float(np.sum(d[on] * (np.abs(logd[on]) + np.abs(w.logpmf[on]))))
        err2 = np.exp(w.log_q_outside) if not np.isnan(w.log_q_outside) else np.inf
        if err2 < err1:
            kl = k2
    if np.isfinite(lam_u):
        log_opt = w.logpmf + lam_u * w.su - m_cgf_u
        kl_opt = float(np.sum(d[on] * (logd[on] - log_opt[on])))
        kl_id = kl - lam_u * mean_su + m_cgf_u
    else:
        kl_opt = kl_id = np.inf
    return BoNOnWindow(
        reward=reward,
        kl=max(kl, 0.0),
        kl_to_optimal=max(kl_opt, 0.0),
        kl_to_optimal_identity=kl_id,
        mean_su=mean_su,
        mass=mass,
        logd=logd,
    )
