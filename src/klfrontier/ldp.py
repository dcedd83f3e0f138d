"""Large deviations of the summed reward (theory §5).

Memoryless reference ``p^m``, linear reward ``S_m = r(Y_1) + ... + r(Y_m)``,
KL budget ``Δ = m δ`` and best-of-N with ``N = e^{m δ}``.

* :func:`rate_function` — Cramér rate ``I_0(x) = sup_t [t x - Λ(t)]`` of
  ``S_m/m`` under ``p`` and ``I_λ(x) = I_0(x) - λ x + Λ(λ)`` under ``φ_λ``.
* :func:`scgf` — scaled cumulant generating function of ``S_m`` under
  ``φ_λ``, also in the Rényi cross-entropy form of theory §5.
* :func:`cumulants` — ``Λ^{(j)}(λ)``: the j-th cumulant of ``S_m`` under
  ``φ_Δ`` is ``m Λ^{(j)}(λ)``.

The BoN–RL equivalence and its second-order terms are in
:mod:`klfrontier.equivalence`.

Everything runs on reward levels in standardised units ``u`` in ``[-1, 0]``
(see :class:`~klfrontier.reference.Reference`); rate functions and ``λ m gap``
are invariant under that change of units.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from ._engine import (
    SERIES_LAM,
    centred_cgf,
    cgf_series,
    chunks,
    interior_rates,
    level_cumulants,
    level_logphi,
    mean_from_ends,
)
from ._logspace import level_expect
from ._validate import float_or_array, real_array, real_scalar
from .reference import Reference, check_reference

__all__ = [
    "rate_function",
    "scgf",
    "cumulants",
]


# ----------------------------------------------------------------- kernels
def _ends(ref, x):
    """``(x - r_min, r_max - x) / (r_max - r_min)``: the distances to the ends, in reward units.

    ``1 + x_u`` from standardised units keeps only ``eps`` absolutely: a point
    ``1e-12`` above ``r_min`` on a range of 2 lost four digits there.
    """
    x = np.asarray(x, dtype=float)
    h = ref.half_range
    return (x / 2 - ref.r_min / 2) / h, (ref.r_max / 2 - x / 2) / h


def _lam_logphi(ref, lam):
    """Standardised ``λ_u`` and the level log-law of ``φ_λ`` (``±inf`` allowed)."""
    if np.isinf(lam):
        lev = np.full(ref.n_levels, -np.inf)
        lev[-1 if lam > 0 else 0] = 0.0
        return (np.inf if lam > 0 else -np.inf), lev
    lam_u = float(ref.lam_to_u(lam))
    if not np.isfinite(lam_u):
        raise ValueError("lam * (r_max - r_min) overflows")
    return lam_u, level_logphi(ref.level_law, lam_u)[0]


# ------------------------------------------------------------ rate function
def rate_function(ref: Reference, x, *, lam=0.0):
    """Cramér rate function of ``S_m / m`` under ``p`` (``lam=0``) or ``φ_λ``.

    Parameters
    ----------
    ref : Reference
    x : array_like
        Per-token rewards (any shape).
    lam : float, default 0
        Inverse temperature of the tilted law ``φ_λ`` (reward units, any
        sign; ``±inf`` is the point mass on the top / bottom level).

    Returns
    -------
    float or ndarray
        ``I_λ(x)`` (nats per token), ``+inf`` outside ``[r_min, r_max]``.

    Notes
    -----
    ``I_0(x) = sup_t [t x - Λ(t)] = KL(φ_{t(x)} || p)`` with
    ``Λ'(t(x)) = x`` (``t(x) < 0`` below the mean), and
    ``I_λ(x) = I_0(x) - λ x + Λ(λ) = KL(φ_{t(x)} || φ_λ)``, which vanishes
    only at ``x = Λ'(λ)``.  At the ends ``I_λ(r_max) = -log φ_λ(A)`` and
    ``I_λ(r_min) = -log φ_λ(argmin)`` (so ``I_0(r_max) = -log p(A)``).
    ``t(x)`` is found by a safeguarded Newton iteration and the KL is summed
    in the non-negative form of ``klfrontier._logspace.kl_terms``, so
    small rates keep their relative accuracy.  By theory §6,
    ``I_0(R*(δ)) = δ``.

    Examples
    --------
    >>> ref = Reference([0.0, 1.0], probs=[0.5, 0.5])
    >>> round(rate_function(ref, 0.75), 12)     # KL(Bern(3/4) || Bern(1/2))
    0.130812035941
    >>> rate_function(ref, [0.5, 1.0, 1.5]).round(6).tolist()
    [0.0, 0.693147, inf]
    """
    check_reference(ref)
    xa = real_array(x, "x")
    lam = real_scalar(lam, "lam", allow_inf=True)
    flat = xa.ravel()
    out = np.full(flat.size, np.inf)
    if ref.is_constant:
        out[flat == ref.r_max] = 0.0
        return float_or_array(out.reshape(xa.shape))
    lam_u, logphi_lam = _lam_logphi(ref, lam)
    xu = ref.to_u(flat)
    out[xu == 0.0] = -logphi_lam[-1]
    out[xu == -1.0] = -logphi_lam[0]
    inner = (xu > -1.0) & (xu < 0.0)
    if inner.any() and np.isfinite(lam_u):
        lo, hi = _ends(ref, flat[inner])
        out[inner] = interior_rates(ref.level_law, xu[inner], (lam_u,), ends=(lo, hi))[0][0]
    return float_or_array(out.reshape(xa.shape))


# --------------------------------------------------------------------- SCGF
def scgf(ref: Reference, t, *, lam=0.0, form="cgf"):
    """Scaled CGF of ``S_m`` under ``φ_λ``: ``(1/m) log E e^{t S_m} = Λ(λ+t) - Λ(λ)``.

    Parameters
    ----------
    ref : Reference
    t : array_like
        Real arguments (reward units, any sign).
    lam : float, default 0
        Inverse temperature of ``φ_λ`` (``±inf``: point mass on the top /
        bottom level, where the SCGF is ``t r_max`` / ``t r_min``).
    form : {"cgf", "renyi"}
        ``"cgf"``: ``t Λ'(λ) + log E_{φ_λ} e^{t (r - Λ'(λ))}`` (centred, with
        ``log1p``/``expm1`` for small ``t``).  ``"renyi"``: theory §5's
        ``t log Z_r - t H_{1+t}(φ_λ; q_r)`` with ``q_r = e^r / Z_r`` over the
        support and :func:`~klfrontier.renyi_cross_entropy`; it
        forms ``e^r`` as probabilities, so it needs ``r_max - r_min < 700``
        and finite ``lam``; meant as a cross-check.

    Returns
    -------
    float or ndarray
        Same shape as ``t``; ``t = 0`` gives 0.

    Notes
    -----
    ``S_m`` is a sum of ``m`` i.i.d. rewards under ``φ_λ^{⊗m}``, so
    ``log E e^{t S_m} = m [Λ(λ+t) - Λ(λ)]`` exactly, for every ``m``.

    Examples
    --------
    >>> ref = Reference([0.0, 1.0], probs=[0.5, 0.5])
    >>> round(scgf(ref, 1.0), 12)                       # log((1 + e)/2)
    0.620114506958
    >>> round(scgf(ref, 1.0, form="renyi"), 12)
    0.620114506958
    """
    check_reference(ref)
    ta = real_array(t, "t")
    if not np.isfinite(ta).all():
        raise ValueError("t must be finite")
    lam = real_scalar(lam, "lam", allow_inf=True)
    if form not in ("cgf", "renyi"):
        raise ValueError(f"form must be 'cgf' or 'renyi', got {form!r}")
    flat = ta.ravel()
    if ref.is_constant or np.isinf(lam):
        r0 = ref.r_max if (ref.is_constant or lam > 0) else ref.r_min
        if form == "renyi" and not ref.is_constant:
            raise ValueError("form='renyi' needs a finite lam")
        return float_or_array((flat * r0).reshape(ta.shape))
    lam_u, logphi = _lam_logphi(ref, lam)
    if form == "renyi":
        return float_or_array(_scgf_renyi(ref, flat, logphi).reshape(ta.shape))
    u = ref.level_u
    phi = np.exp(logphi)
    c = float(mean_from_ends(phi, u)[2])
    t_u = np.atleast_1d(ref.lam_to_u(flat))
    out = np.empty(flat.size)
    tiny = np.abs(t_u) <= SERIES_LAM
    if tiny.any():
        # t E_phi r + sum_j kappa_j t^j / j!: the cumulant series of the tilt engine.  The
        # direct sum keeps the first moment's rounding, t_u * eps, against a CGF ~ t_u^2 var
        # (relative 1.8e-4 at t = 5e-19 on rewards +-1e6).
        k = level_cumulants(logphi, u, c)
        out[tiny] = flat[tiny] * level_expect(logphi, ref.level_values) + cgf_series(k, t_u[tiny])
    rest = np.flatnonzero(~tiny)
    for sl in chunks(rest.size, ref.n_levels):
        idx = rest[sl]
        k, _ = centred_cgf(logphi, u, t_u[idx], np.full(idx.size, c))
        out[idx] = flat[idx] * ref.to_reward(c) + k
    out[flat == 0] = 0.0
    return float_or_array(out.reshape(ta.shape))


def _scgf_renyi(ref, t, logphi_levels):
    from .divergences import renyi_cross_entropy

    if not ref.reward_scale < 700:
        raise ValueError("form='renyi' needs r_max - r_min < 700 (it forms e^r as probabilities)")
    on = ref.level_index >= 0
    phi = np.exp(ref.to_outcomes(logphi_levels)[on])
    r = ref.rewards[on]
    log_z = logsumexp(r)
    q_r = np.exp(r - log_z)
    out = np.empty(t.size)
    for i, ti in enumerate(t):
        out[i] = 0.0 if ti == 0 else ti * log_z - ti * renyi_cross_entropy(phi, q_r, alpha=1.0 + ti)
    return out


# --------------------------------------------------------------- cumulants
def cumulants(ref: Reference, lam, *, order=4):
    """Derivatives ``Λ^{(j)}(λ)``, ``j = 1..order``: the cumulants of ``r`` under ``φ_λ``.

    Parameters
    ----------
    ref : Reference
    lam : float or array_like
        Inverse temperature(s), reward units (any sign; ``±inf`` gives the
        point mass: ``(r_max, 0, 0, ...)`` / ``(r_min, 0, ...)``).
    order : int, default 4
        Highest derivative, ``1 <= order <= 20``.

    Returns
    -------
    ndarray
        Shape ``np.shape(lam) + (order,)``.  The j-th cumulant of ``S_m``
        under ``φ_Δ = φ_λ^{⊗m}`` is ``m Λ^{(j)}(λ)``.  A cumulant beyond
        the float range (order ``j >= 2`` when the rewards spread over more
        than about ``1e308^{1/j}``, e.g. a variance of rewards near 1e300) is
        ``±inf``, never an error or NaN.

    Notes
    -----
    Central moments of the standardised reward under ``φ_λ`` (centred at its
    accurately computed mean) are turned into cumulants by
    ``κ_n = μ_n - Σ_{k=2}^{n-2} C(n-1, k-1) κ_k μ_{n-k}`` and rescaled by
    ``(r_max - r_min)^j``.  High orders lose relative accuracy to
    cancellation in this recursion (as they would in any moment-based
    formula).

    Examples
    --------
    >>> ref = Reference([0.0, 1.0], probs=[0.5, 0.5])
    >>> cumulants(ref, 0.0).round(12).tolist()       # Bernoulli(1/2)
    [0.5, 0.25, 0.0, -0.125]
    """
    check_reference(ref)
    la = real_array(lam, "lam")
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)):
        raise ValueError(f"order must be an integer, got {order!r}")
    order = int(order)
    if not 1 <= order <= 20:
        raise ValueError(f"order must lie in [1, 20], got {order}")
    flat = la.ravel()
    res = np.zeros((flat.size, order))
    for i, lv in enumerate(flat):
        if ref.is_constant:
            res[i, 0] = ref.r_max
            continue
        lam_u, logphi = _lam_logphi(ref, lv)
        u = ref.level_u
        phi = np.exp(logphi)
        c = float(mean_from_ends(phi, u)[2])
        d = u - c
        mu = [1.0, 0.0] + [float(phi @ d**k) for k in range(2, order + 1)]
        kap = [0.0] * (order + 1)
        for n in range(2, order + 1):
            s = mu[n]
            for k in range(2, n - 1):
                s -= _binom(n - 1, k - 1) * kap[k] * mu[n - k]
            kap[n] = s
        res[i, 0] = ref.to_reward(c)
        for j in range(2, order + 1):
            res[i, j - 1] = to_reward_power(kap[j], ref.reward_scale, j)
    return res.reshape(la.shape + (order,))


def to_reward_power(x, scale, j):
    """``x · scale**j`` (a standardised quantity of degree ``j`` in reward units): ``±inf`` where
    it exceeds the float range (e.g. a variance of rewards spread beyond ~1e154), 0 for ``x = 0``,
    never an OverflowError or a NaN.

    >>> [to_reward_power(0.25, 1e300, 2), to_reward_power(0.0, float("inf"), 2),
    ...  to_reward_power(-0.5, 2.0, 3)]
    [inf, 0.0, -4.0]
    """
    if x == 0:
        return 0.0
    with np.errstate(over="ignore"):
        return float(x * np.float64(scale) ** j)


def _binom(n, k):
    from math import comb

    return float(comb(n, k))
