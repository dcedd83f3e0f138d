"""Large deviations of the summed reward and the BoN–RL equivalence (theory §5–§6).

Memoryless reference ``p^m``, linear reward ``S_m = r(Y_1) + ... + r(Y_m)``,
KL budget ``Δ = m δ`` and best-of-N with ``N = e^{m δ}``.

* :func:`rate_function` — Cramér rate ``I_0(x) = sup_t [t x - Λ(t)]`` of
  ``S_m/m`` under ``p`` and ``I_λ(x) = I_0(x) - λ x + Λ(λ)`` under ``φ_λ``.
* :func:`scgf` — scaled cumulant generating function of ``S_m`` under
  ``φ_λ``, also in the Rényi cross-entropy form of theory §5.
* :func:`cumulants` — ``Λ^{(j)}(λ)``: the j-th cumulant of ``S_m`` under
  ``φ_Δ`` is ``m Λ^{(j)}(λ)``.
* :func:`equivalence` — ``λ_δ``, ``x*(δ) = R*(δ)``, ``σ² = Λ''(λ_δ)``, the
  lattice of the rewards, and second-order predictions of the BoN reward gap
  and of ``KL(π_N || φ_Δ)`` (non-lattice and lattice forms; the derivation is
  in ``docs/second_order.md``).

Everything runs on reward levels in standardised units ``u`` in ``[-1, 0]``
(see :class:`~klfrontier.reference.Reference`); rate functions and ``λ m gap``
are invariant under that change of units.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import logsumexp

from ._logspace import kl_terms, level_expect, log1mexp, log_neg_log1mexp
from ._validate import real_array, real_scalar
from .lattice import RTOL, resolve_lattice
from .reference import Reference, check_reference
from .tilt import ConvergenceError, solve_lam_for_kl
from .tilt import _SERIES_LAM, level_cumulants
from .tilt import _centres as _tilt_centres

__all__ = [
    "rate_function",
    "scgf",
    "cumulants",
    "equivalence",
    "Equivalence",
    "detect_lattice",
]

# Rows x levels processed at once by the tilt kernels.
_CHUNK_ELEMENTS = 2**22
# beta = lambda h below which the lattice is invisible: the oscillation of
# lambda m gap has amplitude 2 sqrt(beta) exp(-pi^2 / beta) and the mean
# correction is log(sinh(beta/2) / (beta/2)) ~ beta^2 / 24.
_BETA_SMOOTH = 1e-3
_BETA_SUM = 1e-2


# ----------------------------------------------------------------- validation
def _out(a):
    a = np.asarray(a, dtype=float)
    return float(a) if a.ndim == 0 else a


# ----------------------------------------------------------------- kernels
def _to_u(ref, x):
    """Reward -> standardised units, ``(x - r_max) / (r_max - r_min)``, overflow-free."""
    return (x / 2 - ref.r_max / 2) / ref._half_range


def _centres(ref, t_u):
    """Centre for each tilt (:func:`klfrontier.tilt._centres`: the p-mean for small
    ``|t|``, the active end otherwise), so that level log-ratios ``t (u_i - u_j)``
    keep full accuracy even when ``|t|`` is ``1e10``."""
    return _tilt_centres(np.asarray(t_u, dtype=float), ref.mean_u)


def _centred_cgf(logq, u, t, c):
    """``K_c(t) = log Σ_j q_j e^{x_j}``, ``x_j = t (u_j - c)``, per row ``(t, c)``.

    Returns ``(K, x)``; rows with ``|t| <= 0.1`` use ``log1p(Σ q expm1(x))``,
    which keeps ``K`` accurate as ``t -> 0``.
    """
    t = np.atleast_1d(t)
    x = t[:, None] * (u[None, :] - np.atleast_1d(c)[:, None])
    k = logsumexp(logq[None, :] + x, axis=1)
    small = np.abs(t) <= 0.1
    if small.any():
        k[small] = np.log1p(np.expm1(x[small]) @ np.exp(logq))
    return k, x


def _cgf_about(ref, t_u, c):
    """``K_c(t) = log E_p e^{t (u - c)}`` (``log1p`` form for small ``|t|``)."""
    return _centred_cgf(ref.level_logq, ref.level_u, t_u, c)[0]


def _mean_from_ends(phi, u):
    """``(E(-u), E(1 + u), E u)`` under the level law ``phi`` (last axis).

    The distances of the mean to the two ends are sums of non-negative terms
    (full relative accuracy); the mean is taken from the nearer end.
    """
    dtop = phi @ (-u)
    dbot = phi @ (1.0 + u)
    return dtop, dbot, np.where(dtop <= dbot, -dtop, dbot - 1.0)


def _level_logphi(ref, t_u):
    """Log level law of ``φ_t`` and ``Λ_u(t)`` (one finite ``t_u``)."""
    c = float(_centres(ref, t_u))
    k = float(_cgf_about(ref, t_u, c)[0])
    return ref.level_logq + t_u * (ref.level_u - c) - k, k + t_u * c


@dataclass
class _Rows:
    """Statistics of ``φ_t`` for a batch of ``t`` (standardised units).

    ``dtop = E(-u)`` and ``dbot = E(1 + u)`` are the distances of the mean to
    the two ends (sums of non-negative terms: full relative accuracy);
    ``kl`` holds ``KL(φ_t || φ_λ)`` for each requested ``λ``.
    """

    t: np.ndarray
    dtop: np.ndarray
    dbot: np.ndarray
    var: np.ndarray
    mean: np.ndarray
    kl: list


def _rows(ref, t_u, kl_to=()):
    """Tilt statistics at many ``t_u``, in chunks of rows; ``kl_to`` lists ``λ_u``.

    With the row's centre ``c`` and ``K_c`` as in :func:`_cgf_about`,
    ``KL(φ_t || φ_λ) = (t - λ)(Λ'(t) - c) - K_c(t) + K_c(λ)``; rows where that
    difference loses more than 4 digits are redone in the non-negative
    ``sum q h`` form of ``klfrontier._logspace.kl_terms``.
    """
    u, logq = ref.level_u, ref.level_logq
    t_all = np.atleast_1d(np.asarray(t_u, dtype=float))
    c_all = _centres(ref, t_all)
    n = t_all.size
    out = {k: np.empty(n) for k in ("dtop", "dbot", "var", "mean")}
    kls = [np.empty(n) for _ in kl_to]
    # K_c(λ) for each target and each centre in use; the target's log-law
    centres = np.unique(c_all)
    targets = [(lv, _cgf_about(ref, np.full(centres.size, lv), centres), _level_logphi(ref, lv)[0])
               for lv in kl_to]
    for sl in _chunks(n, ref.n_levels):
        t = t_all[sl]
        c = c_all[sl]
        k, x = _centred_cgf(logq, u, t, c)
        logphi = logq[None, :] + x - k[:, None]
        phi = np.exp(logphi)
        dtop, dbot, mean = _mean_from_ends(phi, u)
        near_top = dtop <= dbot
        d = u[None, :] - mean[:, None]
        out["var"][sl] = np.einsum("ij,ij->i", phi, d * d)
        out["dtop"][sl], out["dbot"][sl], out["mean"][sl] = dtop, dbot, mean
        mc = np.where(near_top, -dtop - c, dbot - (1.0 + c))     # mean - c, accurately
        which = np.searchsorted(centres, c)
        for dst, (lv, k_l_by_c, logphi_l) in zip(kls, targets):
            k_l = k_l_by_c[which]
            val = (t - lv) * mc - k + k_l
            scale = np.abs((t - lv) * mc) + np.abs(k) + np.abs(k_l)
            bad = ~(val > 1e-4 * scale)
            if bad.any():
                val[bad] = kl_terms(logphi[bad], logphi_l[None, :]).sum(axis=1)
            dst[sl] = np.maximum(val, 0.0)
    return _Rows(t_all, kl=kls, **out)


def _chunks(n, L):
    step = max(1, _CHUNK_ELEMENTS // max(L, 1))
    for s in range(0, n, step):
        yield slice(s, min(n, s + step))


def _ends(ref, x):
    """``(x - r_min, r_max - x) / (r_max - r_min)``: the distances to the ends, in reward units.

    ``1 + x_u`` from standardised units keeps only ``eps`` absolutely: a point
    ``1e-12`` above ``r_min`` on a range of 2 lost four digits there.
    """
    x = np.asarray(x, dtype=float)
    h = ref._half_range
    return (x / 2 - ref.r_min / 2) / h, (ref.r_max / 2 - x / 2) / h


def _solve_t(ref, x_u, max_iter=200, ends=None):
    """``t_u`` with ``Λ_u'(t) = x_u`` for ``-1 < x_u < 0`` (any sign of t).

    Safeguarded Newton on ``log E_t(-u) = log(-x)`` (upper half) or
    ``log E_t(1+u) = log(1+x)`` (lower half): both are close to linear in t
    far out in the tails, where the plain equation is flat.  Steps are capped
    at ``10 + 2|t|`` and fall back to bisection once bracketed.
    """
    x_u = np.asarray(x_u, dtype=float)
    top = x_u >= -0.5
    with np.errstate(divide="ignore"):
        if ends is None:
            ltar = np.where(top, np.log(-x_u), np.log1p(x_u))
        else:                       # the distances to the ends, accurate near either end
            ltar = np.where(top, np.log(ends[1]), np.log(ends[0]))
    sgn = np.where(top, -1.0, 1.0)   # sgn * (log d - ltar) increases with t
    var0 = max(float(_rows(ref, [0.0]).var[0]), 1e-300)
    t = np.clip((x_u - ref.mean_u) / var0, -50.0, 50.0)
    lo = np.full(t.size, -np.inf)
    hi = np.full(t.size, np.inf)
    out = np.full(t.size, np.nan)
    active = np.arange(t.size)
    tol_g = 8 * np.finfo(float).eps * np.maximum(1.0, np.abs(ltar))
    for _ in range(max_iter):
        st = _rows(ref, t[active])
        with np.errstate(divide="ignore"):
            ld = np.where(top[active], np.log(st.dtop), np.log(st.dbot))
        g = sgn[active] * (ld - ltar[active])
        dist = np.where(top[active], st.dtop, st.dbot)
        gp = st.var / np.maximum(dist, 1e-320)
        ta = t[active]
        hi[active] = np.where(g > 0, np.minimum(hi[active], ta), hi[active])
        lo[active] = np.where(g < 0, np.maximum(lo[active], ta), lo[active])
        with np.errstate(divide="ignore", invalid="ignore"):
            step = -g / gp
        cap = 10.0 + 2.0 * np.abs(ta)
        step = np.where(np.isfinite(step), np.clip(step, -cap, cap), np.where(g > 0, -cap, cap))
        cand = ta + step
        # (a bracket narrower than 1e-12 |t| also ends it: where g is only known to ~1e-14 -- a
        # step-like mean, t ~ -90 -- Newton hops inside that noise band for ever; t enters
        # the rate only at second order.  Found by sweep_numerics.)
        done = ((np.abs(g) <= tol_g[active]) | (np.abs(step) <= 4e-16 * np.abs(ta)) | (g == 0)
                | (hi[active] - lo[active] <= 1e-12 * np.maximum(1.0, np.abs(ta))))
        out[active[done]] = np.where(np.isfinite(cand[done]), cand[done], ta[done])
        l, h = lo[active], hi[active]
        inside = (cand > l) & (cand < h)
        with np.errstate(invalid="ignore"):
            mid = 0.5 * (l + h)
        t[active] = np.where(inside, cand, np.where(np.isfinite(mid), mid, cand))
        active = active[~done]
        if active.size == 0:
            return out
    raise ConvergenceError(f"t(x) solver did not converge for {active.size} points",
                           partial=t.copy())


def _interior(ref, x_u, lams=(0.0,), ends=None):
    """Rate functions ``I_λ`` (and tilt data) at interior points ``-1 < x_u < 0``.

    Returns ``(rates, t, var)``, one rate array per ``λ_u`` in ``lams``; each is
    ``KL(φ_t || φ_λ) + (t - λ)(x - Λ'(t))``: the sup in
    ``I_λ(x) = sup_s [s x - Λ_λ(s)]`` evaluated at the solved ``s = t - λ``,
    so the solver's error enters only at second order.
    """
    t = _solve_t(ref, x_u, ends=ends)
    st = _rows(ref, t, kl_to=lams)
    if ends is None:
        miss = x_u - st.mean
    else:                           # x - Lambda'(t) as a difference of distances to one end
        miss = np.where(x_u >= -0.5, st.dtop - ends[1], ends[0] - st.dbot)
    rates = [np.maximum(k + (t - lv) * miss, 0.0) for k, lv in zip(st.kl, lams)]
    return rates, t, st.var


def _lam_logphi(ref, lam):
    """Standardised ``λ_u`` and the level log-law of ``φ_λ`` (``±inf`` allowed)."""
    if np.isinf(lam):
        lev = np.full(ref.n_levels, -np.inf)
        lev[-1 if lam > 0 else 0] = 0.0
        return (np.inf if lam > 0 else -np.inf), lev
    lam_u = float(ref.lam_to_u(lam))
    if not np.isfinite(lam_u):
        raise ValueError("lam * (r_max - r_min) overflows")
    return lam_u, _level_logphi(ref, lam_u)[0]


# ------------------------------------------------------------ rate function
def rate_function(ref: Reference, x, lam=0.0):
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
        return _out(out.reshape(xa.shape))
    lam_u, logphi_lam = _lam_logphi(ref, lam)
    xu = _to_u(ref, flat)
    out[xu == 0.0] = -logphi_lam[-1]
    out[xu == -1.0] = -logphi_lam[0]
    inner = (xu > -1.0) & (xu < 0.0)
    if inner.any() and np.isfinite(lam_u):
        lo, hi = _ends(ref, flat[inner])
        out[inner] = _interior(ref, xu[inner], (lam_u,), ends=(lo, hi))[0][0]
    return _out(out.reshape(xa.shape))


# --------------------------------------------------------------------- SCGF
def scgf(ref: Reference, t, lam=0.0, form="cgf"):
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
        return _out((flat * r0).reshape(ta.shape))
    lam_u, logphi = _lam_logphi(ref, lam)
    if form == "renyi":
        return _out(_scgf_renyi(ref, flat, logphi).reshape(ta.shape))
    u = ref.level_u
    phi = np.exp(logphi)
    c = float(_mean_from_ends(phi, u)[2])
    t_u = np.atleast_1d(ref.lam_to_u(flat))
    out = np.empty(flat.size)
    tiny = np.abs(t_u) <= _SERIES_LAM
    if tiny.any():
        # t E_phi r + sum_j kappa_j t^j / j!: the cumulant series of the tilt engine.  The
        # direct sum keeps the first moment's rounding, t_u * eps, against a CGF ~ t_u^2 var
        # (relative 1.8e-4 at t = 5e-19 on rewards +-1e6).
        k = level_cumulants(logphi, u, c)
        fact = (1.0, 1.0, 2.0, 6.0, 24.0, 120.0, 720.0)
        tu = t_u[tiny]
        out[tiny] = flat[tiny] * level_expect(logphi, ref.level_values) + sum(
            k[j] * tu ** j / fact[j] for j in range(2, 7))
    rest = np.flatnonzero(~tiny)
    for sl in _chunks(rest.size, ref.n_levels):
        idx = rest[sl]
        k, _ = _centred_cgf(logphi, u, t_u[idx], c)
        out[idx] = flat[idx] * ref.to_reward(c) + k
    out[flat == 0] = 0.0
    return _out(out.reshape(ta.shape))


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
        out[i] = 0.0 if ti == 0 else ti * log_z - ti * renyi_cross_entropy(phi, q_r, 1.0 + ti)
    return out


# --------------------------------------------------------------- cumulants
def cumulants(ref: Reference, lam, order=4):
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
        c = float(_mean_from_ends(phi, u)[2])
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
            res[i, j - 1] = _to_reward_power(kap[j], ref.reward_scale, j)
    return res.reshape(la.shape + (order,))


def _to_reward_power(x, scale, j):
    """``x · scale**j`` (a standardised quantity of degree ``j`` in reward units): ``±inf`` where
    it exceeds the float range (e.g. a variance of rewards spread beyond ~1e154), 0 for ``x = 0``,
    never an OverflowError or a NaN.

    >>> [_to_reward_power(0.25, 1e300, 2), _to_reward_power(0.0, float("inf"), 2),
    ...  _to_reward_power(-0.5, 2.0, 3)]
    [inf, 0.0, -4.0]
    """
    if x == 0:
        return 0.0
    with np.errstate(over="ignore"):
        return float(x * np.float64(scale) ** j)


def _binom(n, k):
    from math import comb

    return float(comb(n, k))


# ---------------------------------------------------------------- lattices
def detect_lattice(ref: Reference, lattice=None, rtol=RTOL):
    """The lattice ``a + hℤ`` carrying the reward levels, or ``None``.

    A thin wrapper of :func:`klfrontier.lattice.resolve_lattice` (its module
    notes give the tolerance policy, shared with :mod:`klfrontier.sequences`).

    Parameters
    ----------
    ref : Reference
    lattice : None, False or float
        ``None``: detect from the level values; ``False``: treat as
        non-lattice; a positive span ``h``: check that every level lies on
        ``r_min + hℤ`` and return the maximal span (``h`` times the gcd of the
        level indices).
    rtol : float, default 1e-12
        Tolerance on ``|v_j - a - k_j h|`` relative to ``r_max - r_min``.

    Returns
    -------
    (a, h) or None
        ``a = r_min`` and the maximal span ``h`` (``None`` for a constant
        reward, or when no lattice with at most ``2^16`` steps across
        ``[r_min, r_max]`` fits: finer lattices have ``β = λh`` too small for
        their corrections to matter at ordinary ``λ``).

    Examples
    --------
    >>> detect_lattice(Reference([0.0, 0.5, 2.0], probs=[0.2, 0.3, 0.5]))
    (0.0, 0.5)
    >>> detect_lattice(Reference([0.0, 1.0, 2 ** 0.5], probs=[0.5, 0.3, 0.2])) is None
    True
    """
    check_reference(ref)
    fit = resolve_lattice(ref.level_values, lattice, rtol=rtol)
    return None if fit is None else (fit.a, fit.h)


# ------------------------------------------------------- BoN–RL equivalence
@dataclass
class Equivalence:
    """The BoN–RL equivalence at per-token budget δ (theory §6).

    Attributes
    ----------
    delta : float
        Per-token KL budget δ (``Δ = m δ``, ``N = e^{m δ}``).
    lam : float
        ``λ_δ`` with ``D(λ) = λΛ'(λ) - Λ(λ) = δ`` (reward units).
    x_star : float
        ``x*(δ)`` solving ``I_0(x*) = δ``; equal to ``R*(δ)``.
    frontier_reward : float
        ``R*(δ) = Λ'(λ_δ)``.
    sigma2 : float
        ``Λ''(λ_δ)``, the per-token reward variance under ``φ_δ`` (``inf``
        when it exceeds the float range, for rewards spread beyond about
        1e154; the predictions work in standardised units and stay finite).
    lattice : (a, h) or None
        Rewards on ``a + hℤ`` with maximal span ``h``, or ``None``.
    I0_at_x_star : float
        ``I_0(x*)`` evaluated by :func:`rate_function` (equals δ).

    Notes
    -----
    ``gap_prediction(m)`` predicts ``R*(δ) - E_{π_N}[S_m]/m`` and
    ``kl_to_optimal_prediction(m)`` predicts ``KL(π_N || φ_Δ)`` for BoN with
    ``N = e^{m δ}``; see those methods and ``docs/second_order.md``.
    """

    delta: float
    lam: float
    x_star: float
    frontier_reward: float
    sigma2: float
    lattice: tuple | None
    I0_at_x_star: float
    _ref: Reference = field(repr=False)
    _lam_u: float = field(repr=False)
    _var_u: float = field(repr=False)
    _dbot: float = field(repr=False)      # x*_u + 1, accurately

    def as_dict(self):
        """Public fields as a plain dict (``lattice`` as a list or ``None``)."""
        return {"delta": self.delta, "lam": self.lam, "x_star": self.x_star,
                "frontier_reward": self.frontier_reward, "sigma2": self.sigma2,
                "lattice": None if self.lattice is None else list(self.lattice),
                "I0_at_x_star": self.I0_at_x_star}

    # ------------------------------------------------------------- helpers
    @property
    def beta(self):
        """``λ h`` (dimensionless lattice span; ``None`` without a lattice)."""
        return None if self.lattice is None else self.lam * self.lattice[1]

    def _h_u(self):
        return self.lattice[1] / self._ref.reward_scale

    def _ell(self, m):
        """``log(λσ√(2πm))``: the non-lattice location offset times λ."""
        return 0.5 * np.log(2 * np.pi * m * self._lam_u**2 * self._var_u)

    def _mean_entropy(self):
        """Phase average of the discretised-Gumbel entropy (independent of m)."""
        if "_ent_avg" not in self.__dict__:
            f = (np.arange(64) + 0.5) / 64           # periodic: midpoint rule is spectral
            self.__dict__["_ent_avg"] = float(np.mean([_discrete_gumbel(x, self.beta)[1] for x in f]))
        return self.__dict__["_ent_avg"]

    def _check_m(self, m, need_int):
        ma = real_array(m, "m")
        if not np.isfinite(ma).all() or (ma < 1).any():
            raise ValueError("m must be finite and >= 1")
        if need_int and (np.rint(ma) != ma).any():
            raise ValueError("m must be an integer for the lattice forms 'leading' and 'saddlepoint'")
        return ma

    def _form(self, form):
        if form not in ("leading", "averaged", "saddlepoint"):
            raise ValueError(f"form must be 'leading', 'averaged' or 'saddlepoint', got {form!r}")
        beta = self.beta
        if beta is None:
            return "continuous", form
        if form == "saddlepoint":
            return ("lattice" if beta >= _BETA_SUM else "continuous"), form
        if form == "leading" and beta < _BETA_SMOOTH:
            return "lattice", "averaged"
        return "lattice", form

    def _predict(self, m, form):
        kind, form = self._form(form)
        ma = self._check_m(m, kind == "lattice" and form != "averaged")
        flat = ma.ravel()
        gl = np.empty(flat.size)          # λ m gap
        kl = np.empty(flat.size)
        for i, mi in enumerate(flat):
            gl[i], kl[i] = self._predict_one(float(mi), kind, form)
        return ma, gl.reshape(ma.shape), kl.reshape(ma.shape)

    def _predict_one(self, m, kind, form):
        ell = self._ell(m)
        if kind == "continuous":
            if form == "saddlepoint":
                g = _continuous_saddlepoint(self, m)
            else:
                g = ell - np.euler_gamma
            return g, g - 1.0
        beta = self.beta
        # location of the max: λ(m x* - μ) = ℓ - log(β / (1 - e^{-β}))
        ell_lat = ell - np.log(beta / -np.expm1(-beta))
        if form == "averaged":
            g = ell - np.euler_gamma + np.log(np.sinh(beta / 2) / (beta / 2))
            return g, -self._mean_entropy() + ell - np.log(beta)
        if form == "leading":
            z = m * self._dbot / self._h_u() - ell_lat / beta
            f = z - np.floor(z)
            mfloor, ent = _discrete_gumbel(f, beta)
            return ell_lat + beta * (f - mfloor), -ent + ell - np.log(beta)
        return _lattice_saddlepoint(self, m, ell_lat)

    # --------------------------------------------------------- predictions
    def gap_prediction(self, m, form="leading"):
        """Predicted BoN reward gap ``R*(δ) - E_{π_N}[S_m]/m`` with ``N = e^{m δ}``.

        Parameters
        ----------
        m : int or array_like
            Sequence length(s), ``m >= 1`` (integers for the lattice forms
            ``"leading"`` and ``"saddlepoint"``).
        form : {"leading", "averaged", "saddlepoint"}
            ``"leading"``: non-lattice ``[½ log(2π m λ² σ²) - γ] / (m λ)``;
            lattice: ``[ℓ_h + β (f_m - E⌊f_m + G/β⌋)] / (m λ)`` with
            ``ℓ_h = ½ log(2π m λ² σ²) - log(β / (1 - e^{-β}))``, ``β = λh``,
            ``G`` standard Gumbel and ``f_m`` the phase of the Gumbel
            location on the lattice, which moves with ``m``: the prediction
            oscillates with ``m`` as the exact gap does.
            ``"averaged"``: the lattice form averaged over the phase,
            ``[½ log(2π m λ² σ²) - γ + log(sinh(β/2)/(β/2))] / (m λ)``
            (non-lattice: same as ``"leading"``).
            ``"saddlepoint"``: the law of the maximum built from the
            Bahadur–Rao tail ``T(s)`` with the local tilt ``t(s/m)`` at
            every lattice point (or, non-lattice, by quadrature) and
            ``P(max < s) = (1 - T(s))^N``.

        Returns
        -------
        float or ndarray
            Reward units (``±inf`` where the gap exceeds the float range,
            for rewards spread near float max).

        Notes
        -----
        Errors (``docs/second_order.md``): ``"leading"`` is off by
        ``O((log m)^2/m)`` in ``m λ gap`` (relative ``O(log m / m)``),
        ``"saddlepoint"`` by ``O(1/m)``.  Both need ``m δ`` large (``N``
        large), ``2π m λ² σ² ≫ 1`` and, for lattice rewards, ``m σ²/h² ≫ 1``
        (the law of ``S_m`` under ``φ_Δ`` must look locally Gaussian): close
        to saturation (``δ → -log p(A)``, ``σ → 0``) this takes very long
        sequences.  Non-lattice rewards whose top levels are far apart on
        the scale ``1/λ`` behave like a lattice until ``m`` is large.
        Lattices with ``β < 10^{-3}`` use the averaged form (the
        oscillation is ``~e^{-2π²/β}``), and ``β < 10^{-2}`` the
        non-lattice saddle point.

        Examples
        --------
        >>> eq = equivalence(Reference([0.0, 1.0], probs=[0.7, 0.3]), 0.8)
        >>> eq.gap_prediction([100, 101, 102]).round(6).tolist()   # exact: 0.009679, 0.009353, 0.009126
        [0.009599, 0.009233, 0.008949]
        >>> eq.gap_prediction([100, 101, 102], "saddlepoint").round(6).tolist()
        [0.009657, 0.009329, 0.009099]
        """
        ma, gl, _ = self._predict(m, form)
        with np.errstate(over="ignore", divide="ignore"):    # inf only where the gap passes float max
            return _out(gl / (ma * self.lam))

    def kl_to_optimal_prediction(self, m, form="leading"):
        """Predicted total ``KL(π_N || φ_Δ)`` for BoN with ``N = e^{m δ}``.

        Parameters
        ----------
        m, form
            As in :meth:`gap_prediction`.

        Returns
        -------
        float or ndarray
            Nats (total over the sequence, not per token).

        Notes
        -----
        Non-lattice, leading: ``½ log(2π m λ² σ²) - γ - 1``.  Lattice,
        leading: ``log(σ√(2πm)/h) - H_β(f_m)``, with ``H_β(f)`` the Shannon
        entropy of ``⌊f + G/β⌋`` (oscillating with ``m``; ``"averaged"``
        averages it over the phase ``f``).  ``"saddlepoint"``: the KL of the
        saddle-point law of the maximum to the local-limit law of ``S_m``
        under ``φ_Δ`` (lattice), or ``λ m gap - 1`` (non-lattice, where
        ``E[N(1 - F(max))] = 1``).  All forms satisfy theory §2's identity
        ``KL(π_N||φ_Δ) = [KL(π_N||p^m) - mδ] + λ m gap`` with their own
        ``KL(π_N||p^m)``.

        Examples
        --------
        >>> import numpy as np
        >>> eq = equivalence(Reference([0.0, 1.0, np.sqrt(2)], probs=[0.5, 0.3, 0.2]), 0.1)
        >>> round(eq.kl_to_optimal_prediction(400), 4)              # exact: 1.5374
        1.5009
        >>> round(eq.kl_to_optimal_prediction(400, "saddlepoint"), 4)
        1.5246
        """
        _, _, kl = self._predict(m, form)
        return _out(kl)


def _discrete_gumbel(f, beta):
    """Mean of ``floor(f + G/β)`` and its Shannon entropy, ``G`` standard Gumbel.

    ``P(floor = k) = exp(-a_{k+1}) - exp(-a_k)``, ``a_k = e^{-β(k - f)}``;
    ``k`` runs over ``[-4/β - 2, 42/β + 2]`` (tails below 1e-18).
    """
    k = np.arange(-np.ceil(4 / beta) - 2, np.ceil(42 / beta) + 3)
    with np.errstate(over="ignore"):          # a = inf far below: P(floor = k) = 0
        a = np.exp(-beta * (k - f))
        a1 = np.exp(-beta * (k + 1 - f))
        logd = -a1 + log1mexp(-a * -np.expm1(-beta))
    d = np.exp(logd)
    with np.errstate(invalid="ignore"):       # d = 0 where logd = -inf: 0 · -inf is masked out
        ent = -float(np.sum(np.where(d > 0, d * logd, 0.0)))
    return float(d @ k), ent


def _lattice_saddlepoint(eq, m, ell_lat):
    """λ m gap and KL(π_N || φ_Δ) from a sum over lattice points (see module docs)."""
    ref = eq._ref
    h = eq._h_u()
    n_span = int(round(1.0 / h))
    beta = eq.beta
    lam_u = eq._lam_u
    logphi_lam = _level_logphi(ref, lam_u)[0]
    kstar = m * eq._dbot / h                  # m x* in lattice index units (from r_min)
    z = kstar - ell_lat / beta
    lo_pad = np.ceil(8 / beta) + 2
    kmax = m * n_span
    log_n = m * eq.delta
    for _ in range(12):
        k0 = max(0, int(np.floor(z - lo_pad)))
        k1 = min(kmax, int(np.ceil(z + 45 / beta)))
        k = np.arange(k0, k1 + 1, dtype=float)
        x_u = -1.0 + h * k / m
        logT = np.zeros(k.size)
        logp = np.empty(k.size)                # log P_p(S = s), local limit
        logg = np.empty(k.size)                # log P_{φ_λ}(S = s)
        inner = (k > 0) & (k < kmax)
        if inner.any():
            (i0, il), t, var = _interior(ref, x_u[inner], (0.0, lam_u))
            base = np.log(h) - 0.5 * np.log(2 * np.pi * m * var)
            logp[inner] = -m * i0 + base
            logg[inner] = -m * il + base
            with np.errstate(divide="ignore"):
                tail = np.where(t > 0, logp[inner] - log1mexp(-t * h), 0.0)
            logT[inner] = np.minimum(tail, 0.0)
        if k[-1] == kmax:                      # S = m r_max: exact
            logT[-1] = m * ref.level_logq[-1]
            logg[-1] = m * logphi_lam[-1]
        if k[0] == 0:
            logT[0] = 0.0
            logg[0] = m * logphi_lam[0]
        # A_j = log P(max < s_j) = N log(1 - T_j)
        A = -np.exp(log_n + log_neg_log1mexp(logT))
        low_ok = k0 == 0 or A[0] < -40
        high_ok = k1 == kmax or A[-1] > -1e-17
        if low_ok and high_ok:
            break
        lo_pad *= 2
    else:  # pragma: no cover - the window always closes within a few doublings
        raise ConvergenceError("lattice saddle-point window did not close")
    A_next = np.append(A[1:], 0.0)
    with np.errstate(invalid="ignore"):
        diff = np.where(np.isneginf(A_next), -np.inf, np.minimum(A - A_next, 0.0))
    logd = np.where(np.isneginf(A_next), -np.inf, A_next + log1mexp(diff))
    d = np.exp(logd)
    g = beta * float(d @ (kstar - k))
    on = d > 0
    kl = float(np.sum(d[on] * (logd[on] - logg[on])))
    return g, kl


def _continuous_saddlepoint(eq, m):
    """λ m gap from ``∫ P(max < s) ds`` with the non-lattice Bahadur–Rao tail.

    Parameterised by the tilt: ``s = m Λ_u'(t)``, ``ds = m Λ_u''(t) dt``, so
    no root solving is needed; piecewise Gauss–Legendre on each side of
    ``t = λ`` (where ``s = m x*``).
    """
    ref = eq._ref
    lam_u, var_u = eq._lam_u, eq._var_u
    log_n = m * eq.delta
    xs, ws = np.polynomial.legendre.leggauss(16)
    ell = eq._ell(m)
    w_lo = (ell + 12.0) / lam_u / (m * var_u)
    w_hi = 48.0 / lam_u / (m * var_u)

    def integral(a, b, below):
        edges = np.linspace(a, b, 17)
        mids = 0.5 * (edges[1:] + edges[:-1])[:, None]
        half = 0.5 * (edges[1:] - edges[:-1])[:, None]
        t = (mids + half * xs[None, :]).ravel()
        w = (half * ws[None, :]).ravel()
        st = _rows(ref, t, kl_to=(0.0,))
        D = st.kl[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            logT = -m * D - np.log(t) - 0.5 * np.log(2 * np.pi * m * st.var)
        logT = np.where(t > 0, np.minimum(logT, 0.0), 0.0)
        A = -np.exp(log_n + log_neg_log1mexp(logT))   # log P(max < s)
        vals = (np.exp(A) if below else -np.expm1(A)) * m * st.var
        return float(np.sum(w * vals)), vals[0], vals[-1]

    for _ in range(12):
        a = max(lam_u - w_lo, 0.0)
        below, v_lo, _ = integral(a, lam_u, True)
        above, _, v_hi = integral(lam_u, lam_u + w_hi, False)
        # integrand (ds/dt-weighted) negligible at both ends of the window
        if (a == 0.0 or v_lo * w_lo < 1e-16) and v_hi * w_hi < 1e-16:
            return lam_u * (below - above)
        w_lo *= 2
        w_hi *= 2
    raise ConvergenceError("continuous saddle-point window did not close")  # pragma: no cover


def equivalence(ref: Reference, delta, *, lattice=None) -> Equivalence:
    """The BoN–RL equivalence at per-token budget δ and its second-order terms.

    Parameters
    ----------
    ref : Reference
        Per-token reference law and reward (memoryless model, linear reward).
    delta : float
        Per-token KL budget, ``0 < δ < -log p(A)``.
    lattice : None, False or float
        Lattice handling, as in ``detect_lattice``.

    Returns
    -------
    Equivalence

    Notes
    -----
    As ``m → ∞`` with ``Δ = m δ`` and ``N = e^{mδ}``:
    ``E_{π_N}[S_m]/m → x*(δ) = R*(δ)`` and ``KL(π_N||φ_Δ)/m → 0``
    (theory §6).  Second order, non-lattice, with ``σ² = Λ''(λ_δ)``::

        R*(δ) - E[S_m]/m ≈ [½ log(2π m λ² σ²) - γ] / (m λ)
        KL(π_N || φ_Δ)   ≈ ½ log(2π m λ² σ²) - γ - 1

    Lattice rewards (span ``h``, ``β = λh``): the maximum is a discretised
    Gumbel variable whose phase on the lattice moves with ``m``; averaged
    over the phase the gap gains ``log(sinh(β/2)/(β/2)) / (mλ)``.

    Examples
    --------
    >>> import numpy as np
    >>> ref = Reference([0.0, 1.0, np.sqrt(2)], probs=[0.5, 0.3, 0.2])
    >>> eq = equivalence(ref, 0.1)
    >>> eq.lattice is None, round(eq.I0_at_x_star, 12)
    (True, 0.1)
    >>> round(eq.gap_prediction(200), 6)       # exact gap: 0.014582
    0.014187
    >>> equivalence(Reference([0.0, 1.0], probs=[0.7, 0.3]), 0.1).lattice
    (0.0, 1.0)

    A :class:`~klfrontier.Markov` reference is handed to
    ``klfrontier.sequences.markov.markov_equivalence`` (Perron root).
    """
    from .sequences.markov import Markov, markov_equivalence

    if isinstance(ref, Markov):
        return markov_equivalence(ref, delta, lattice=lattice)
    check_reference(ref)
    d = real_scalar(delta, "delta", allow_inf=True)
    if not (0 < d < ref.kl_max):
        raise ValueError(
            f"delta must lie in (0, -log p(A)) = (0, {ref.kl_max:.6g}) for the equivalence, got {d}"
        )
    lat = detect_lattice(ref, lattice)
    lam = float(solve_lam_for_kl(ref, d))
    lam_u = float(ref.lam_to_u(lam))
    st = _rows(ref, [lam_u])
    x_u = float(st.mean[0])
    var_u = float(st.var[0])
    x_star = ref.to_reward(x_u)
    i0 = float(rate_function(ref, x_star))
    return Equivalence(delta=d, lam=lam, x_star=x_star, frontier_reward=x_star,
                       sigma2=_to_reward_power(var_u, ref.reward_scale, 2), lattice=lat, I0_at_x_star=i0,
                       _ref=ref, _lam_u=lam_u, _var_u=var_u, _dbot=float(st.dbot[0]))
