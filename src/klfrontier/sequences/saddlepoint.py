"""Saddle-point approximations to the law of ``S_m`` (approximate; theory §7).

For rewards that are neither on a lattice nor few enough for type
enumeration.  With the per-token CGF ``Λ`` (standardised units), the saddle
point ``t`` of ``x = s/m`` solves ``Λ'(t) = x``; ``I(x) = t x - Λ(t)`` is
the tilted KL, ``w = sign(t) sqrt(2 m I)`` and ``v = t sqrt(m Λ''(t))``.

* Daniels density: ``f(s) ≈ exp(-m I(x)) / sqrt(2π m Λ''(t))``.
* Lugannani–Rice tail: ``P(S_m > s) ≈ Φ̄(w) + φ(w) (1/v - 1/w)``.

Both have relative error ``O(1/m)`` (uniformly in the large-deviation
range); neither sees atoms, so for discrete rewards they approximate a
smoothed law.  Everything built on them is labelled ``exact=False``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erfcx

from .._engine import solve_mean, tilt_stats
from .._logspace import log1mexp
from ..reference import Reference

__all__ = ["solve_saddle", "saddlepoint_logdensity", "saddlepoint_logsf", "saddlepoint_grid"]

_LOG_SQRT_2PI = 0.5 * np.log(2 * np.pi)


def solve_saddle(ref: Reference, x_u, tol=1e-14, max_iter=300):
    """Tilt ``t`` (standardised units) with ``Λ_u'(t) = x_u`` for ``-1 < x_u < 0``.

    >>> ref = Reference([0.0, 1.0], probs=[0.5, 0.5])
    >>> float(solve_saddle(ref, [-0.5])[0])
    0.0
    """
    x = np.atleast_1d(np.asarray(x_u, dtype=float))
    if ((x <= -1) | (x >= 0)).any():
        raise ValueError("saddle points exist only strictly inside the reward range")

    law = ref.level_law

    def mean_var(t, rows):
        st = tilt_stats(law, t)
        return st.mean, st.var

    return solve_mean(mean_var, x, tol=tol, max_iter=max_iter, strict=False, name="saddle point")


def _pieces(ref, m, su):
    su = np.atleast_1d(np.asarray(su, dtype=float))
    t = solve_saddle(ref, su / m)
    st = tilt_stats(ref.level_law, t)
    return t, st


def saddlepoint_logdensity(ref: Reference, m: int, su):
    """Daniels log density of ``Σ_i u_i`` (standardised units) at ``su``.

    ``log f = -m I(x) - ½ log(2π m Λ''(t))``, ``x = su/m``.

    Examples
    --------
    >>> ref = Reference([0.0, 1.0], probs=[0.5, 0.5])
    >>> # -½ log(2π 25): the density of N(-50, 25) at its mean
    >>> round(float(saddlepoint_logdensity(ref, 100, [-50.0])[0]), 6)
    -2.528376
    """
    t, st = _pieces(ref, m, su)
    return -m * st.kl - _LOG_SQRT_2PI - 0.5 * np.log(m * st.var)


def _log_lr_bracket(w, v):
    """``log[M(|w|) - 1/|w| + 1/|v|]``, ``M`` the Mills ratio; small ``|w|`` by the limit."""
    aw = np.abs(w)
    av = np.abs(v)
    mills = np.sqrt(np.pi / 2) * erfcx(aw / np.sqrt(2))
    with np.errstate(divide="ignore", invalid="ignore"):
        br = mills - 1.0 / aw + 1.0 / av
    return np.log(np.maximum(br, 1e-300))


def saddlepoint_logsf(ref: Reference, m: int, su):
    """Lugannani–Rice ``log P(Σ u > su)`` (standardised units).

    Examples
    --------
    >>> ref = Reference([0.0, 1.0], probs=[0.5, 0.5])
    >>> round(float(np.exp(saddlepoint_logsf(ref, 100, [-50.0])[0])), 6)
    0.5
    """
    su = np.atleast_1d(np.asarray(su, dtype=float))
    t, st = _pieces(ref, m, su)
    w = np.sign(t) * np.sqrt(2 * m * st.kl)
    v = t * np.sqrt(m * st.var)
    rho = st.k3 / st.var**1.5 / np.sqrt(m)
    logphi_w = -0.5 * w * w - _LOG_SQRT_2PI
    near = np.abs(w) < 1e-4
    out = np.empty(su.size)
    # near the mean: Φ̄(w) - φ(w) ρ/6 (the w -> 0 limit of Lugannani–Rice)
    if near.any():
        from scipy.special import ndtr

        p = ndtr(-w[near]) - np.exp(logphi_w[near]) * rho[near] / 6.0
        out[near] = np.log(p)
    far = ~near
    if far.any():
        lt = logphi_w[far] + _log_lr_bracket(w[far], v[far])  # log of the small tail
        up = w[far] > 0
        res = np.where(up, lt, log1mexp(np.minimum(lt, 0.0)))
        out[far] = res
    return out


def saddlepoint_grid(ref: Reference, m: int, lo, hi, size):
    """``(su, log density, log sf)`` on a uniform grid of ``size`` points in ``[lo, hi]``."""
    su = np.linspace(lo, hi, int(size))
    t, st = _pieces(ref, m, su)
    logf = -m * st.kl - _LOG_SQRT_2PI - 0.5 * np.log(m * st.var)
    return su, logf, saddlepoint_logsf(ref, m, su)
