"""Exact soft best-of-N by one-dimensional quadrature (theory §4).

Draw N i.i.d. samples from ``p`` and return sample ``i`` with probability
``w(Y_i) / sum_k w(Y_k)``, ``w = e^{lam r}``.  With ``1/a = int_0^inf e^{-as} ds``
the law is, per reward level ``j`` (mass ``q_j``, weight ``w_j``),

    pi_j = N q_j w_j int_0^inf e^{-s w_j} M(s)^{N-1} ds,   M(s) = sum_k q_k e^{-s w_k}.

Weights are taken in standardised units, ``w_j = e^{a u_j}`` with
``a = lam (r_max - r_min)`` and ``u_j in [-1, 0]``: ``max w = 1`` and
``log w_j = a u_j`` is exact even where ``w_j`` underflows (``a = 1000``).

Quadrature.  With ``s = e^x`` and ``z = s w_j``, level ``j`` integrates
``z e^{-z} c(x)`` in ``x``: a Gumbel bump in ``x + log w_j`` times the
decreasing factor ``c(x) = M(e^x)^{N-1}``.  For integer ``N`` the integrand is
entire and ``|c(x + iy)| <= c(x + log cos y)`` (as ``|M(s)| <= M(Re s)``), so
the trapezoid rule of step ``h = 0.2`` has relative error below
``2 e^{-2 pi d / h} / cos d`` (``d -> pi/2``: ``~1e-19``) for every level
alike.  Non-integer ``N`` adds branch points at the complex zeros of ``M``;
there the grid is refined until the law stops moving (:func:`_trapezoid`).

The grid spans ``[-log(1 + (N-1) E w) - 40, -log w_min + 4]``.  Level ``j``
is summed directly only where ``z in [0.1, e^4]``; to the left ``e^{-z}`` is a
13-term alternating series whose coefficients are prefix sums over nodes, to
the right ``e^{-z} < 2e-24``.  ``log M`` at the nodes is built the same way
(levels with ``z < 0.1`` by a series in prefix moments ``sum q w^m``, levels
with huge ``z`` by their tail mass), as ``log1p(-D)`` with ``D = 1 - M`` a sum
of non-negative terms wherever ``M > 1/2``, so that ``(N - 1) log M`` stays
accurate for ``N = 10^8``.  Work: about 80 kernel evaluations per level plus
``O(nodes)``, ``nodes ~ (a + 45 + log N) / h``, in blocks of ``2^19``.  For
``a <= 2`` the deviation form of :func:`_soft_bon_small_a` keeps
``pi_j / q_j - 1`` to full relative accuracy as ``lam -> 0`` or ``N -> 1``.
"""

from __future__ import annotations

import math

import numpy as np

from ._logspace import kl_terms, logsumexp
from ._validate import log_n_from, real_scalar
from .bon import best_of_n
from .errors import ConvergenceError
from .policy import SoftBestOfNPolicy
from .reference import Reference, check_reference
from .tilt import tilted

__all__ = ["soft_best_of_n"]

#: |sum pi - 1| above which the quadrature is declared failed.
SUM_TOL = 1e-8

_H = 0.2  # trapezoid step in x = log s
_LOG_EPS = math.log(0.1)  # z = s w < 0.1: handled by series
_T_HI = 4.0  # log z > 4: e^{-z} < 2e-24, dropped
_LEFT = 40.0  # x_lo = -log(1 + (N-1) E w) - 40: left tail < e^-40
_NSER = 13  # series terms m = 0..12: 0.1^13 / 13! < 2e-23
_BLOCK = 2**19  # elements per work block
_SMALL_A = 2.0  # a = lam (r_max - r_min) up to this: deviation form
_REFINE_TOL = 1e-12  # non-integer N: per-level log change that stops refinement
_MAX_GRIDS = 128  # at most h / 128
_REFINE_FAIL = 1e-10  # ... and ConvergenceError if it still moves more than this
_MAX_NODES = 2_000_000  # grid size refused beyond this (a > ~4e5)
_LOG_FACT = np.array([math.lgamma(m + 1.0) for m in range(_NSER + 1)])


# Products by einsum rather than BLAS: a threaded BLAS matvec on a loaded
# 2-core machine was measured 100x slower than this single-threaded loop.
def _mv(a, v):
    return np.einsum("ij,j->i", a, v)


def _dot(a, b):
    return float(np.einsum("i,i->", a, b))


def _check_n(n, log_n):
    """``(N, log N)`` from exactly one of ``n`` and ``log_n`` (``N`` must be a finite float or inf)."""
    n_val = None if n is None else real_scalar(n, "n", allow_inf=True)
    if log_n is not None:
        real_scalar(log_n, "log_n", allow_inf=True)
    ln = log_n_from(n_val, log_n)
    if n_val is not None:
        return n_val, ln
    with np.errstate(over="ignore"):
        n_val = math.exp(ln) if ln < 709.0 else float(np.exp(ln))
    if np.isinf(n_val) and np.isfinite(ln):
        raise ValueError(
            f"log_n = {ln:g} is too large: soft best-of-N needs N as a finite "
            f"float (log_n <= 709) or log_n = inf"
        )
    return n_val, ln


def _check_lam(lam):
    val = real_scalar(lam, "lam", allow_inf=True)
    if val < 0:
        raise ValueError("lam must be >= 0")
    return val


def _log_prefix_at(a, idx):
    """``log sum_{j < k} exp(a_j)`` for every ``k`` in ``idx`` (``0 <= k <= len(a)``).

    One log-sum-exp per segment between consecutive distinct ``k`` (shifted
    by the segment max), then a log-space cumulative sum over the segments.
    """
    idx = np.asarray(idx, dtype=np.intp)
    step = np.diff(idx)
    if idx.size and ((step >= 0).all() or (step <= 0).all()):
        # monotone queries (the usual case here): distinct values without a sort
        order = slice(None) if idx[-1] >= idx[0] else slice(None, None, -1)
        mono = idx[order]
        change = np.concatenate([[True], mono[1:] != mono[:-1]])
        uk = mono[change]
        inv = (np.cumsum(change) - 1)[order]
    else:
        uk, inv = np.unique(idx, return_inverse=True)
    out = np.full(uk.size, -np.inf)
    starts = np.concatenate([[0], uk[:-1]])
    keep = uk > starts
    if keep.any():
        s = starts[keep]
        stop = int(uk[-1])
        seg = a[:stop]
        mx = np.maximum.reduceat(seg, s)
        lengths = np.diff(np.append(s, stop))
        shifted = np.exp(seg - np.repeat(mx, lengths))
        with np.errstate(divide="ignore"):
            logseg = mx + np.log(np.add.reduceat(shifted, s))
        out[keep] = logseg
    out = np.logaddexp.accumulate(out)
    return out[inv]


def _level_chunks(ell, width_nodes):
    """Split ascending levels into runs of log-weight span <= 1 and bounded size."""
    L = ell.size
    gid = np.floor(ell - ell[0]).astype(np.intp)
    starts = np.flatnonzero(np.concatenate([[True], gid[1:] != gid[:-1]]))
    ends = np.append(starts[1:], L)
    per = max(1, _BLOCK // max(width_nodes, 1))
    out = []
    for s, e in zip(starts.tolist(), ends.tolist()):
        for b in range(s, e, per):
            out.append((b, min(b + per, e)))
    return out


def _log_m(x, ell, logq, log_nm1):
    """``log M(e^x)`` at the nodes ``x`` (ascending), ``M(s) = sum_k q_k e^{-s w_k}``.

    Per node the levels split into frozen (``z = s w < 0.1``: a series in the
    prefix moments ``W_m = sum q w^m``), direct (computed exactly) and dead
    (``z`` so large that ``q e^{-z}`` is below ``e^-40 / (N - 1)`` of the
    bottom level's term; they count only in ``D = 1 - M``).
    """
    Q, L = x.size, ell.size
    z_dead = 95.0 + max(log_nm1, 0.0) + max(-float(logq[0]), 0.0)
    lo = np.searchsorted(ell, _LOG_EPS - x, side="left")  # first z >= eps
    hi = np.searchsorted(ell, math.log(z_dead) - x, side="right")  # first z > z_dead
    # node groups spanning <= 1 in x share one frozen / direct / dead split, so
    # direct terms have z >= eps/e and 1 - e^{-z} loses < 4e-15 relatively.
    g = max(1, int(round(1.0 / _H)))
    cstart = np.arange(0, Q, g)
    cend = np.minimum(cstart + g, Q) - 1
    lo_c = lo[cend]
    hi_c = hi[cstart]
    reps = cend - cstart + 1

    # frozen levels j < lo_c: D_f = Q_f * R, R = sum_m (-1)^{m+1} s^m W_m / (m! W_0)
    # with prefix moments W_m = sum_{j < lo_c} q_j w_j^m (one per node group).
    logW0 = np.repeat(_log_prefix_at(logq, lo_c), reps)
    has_frozen = np.isfinite(logW0)
    R = np.zeros(Q)
    if has_frozen.any():
        xf, w0 = x[has_frozen], logW0[has_frozen]
        acc = np.zeros(xf.size)
        for m in range(1, _NSER + 1):
            logWm = np.repeat(_log_prefix_at(logq + m * ell, lo_c), reps)[has_frozen]
            term = np.exp(m * xf + logWm - w0 - _LOG_FACT[m])
            acc += term if m % 2 else -term
        R[has_frozen] = acc
    with np.errstate(divide="ignore"):
        D = np.where(has_frozen, np.exp(logW0) * R, 0.0)
        logF = np.where(has_frozen, logW0 + np.log1p(-R), -np.inf)
    # dead levels j >= hi_c count fully in D.
    logdead = np.repeat(_log_prefix_at(logq[::-1], L - hi_c), reps)
    D = D + np.exp(logdead)
    logB = np.full(Q, -np.inf)

    for c in np.flatnonzero(hi_c > lo_c):
        ia, ib = int(cstart[c]), int(cend[c]) + 1
        j0, j1 = int(lo_c[c]), int(hi_c[c])
        xs = x[ia:ib]
        sI = np.exp(xs + ell[j0])  # z at level j0 (<= eps)
        per = max(1, _BLOCK // (ib - ia))
        dsum = np.zeros(ib - ia)
        for b0 in range(j0, j1, per):
            b1 = min(b0 + per, j1)
            lq = logq[b0:b1]
            lqmax = lq.max()
            Z = np.multiply.outer(sI, np.exp(ell[b0:b1] - ell[j0]))
            em1 = np.expm1(-Z)
            dsum -= np.exp(lqmax) * _mv(em1, np.exp(lq - lqmax))
        D[ia:ib] += dsum
        need = D[ia:ib] >= 0.5
        if need.any():
            # log sum_j q_j e^{-z_ij} over the direct levels, shifted by the row max.
            rows = np.flatnonzero(need)
            Z = np.multiply.outer(sI[rows], np.exp(ell[j0:j1] - ell[j0]))
            E = logq[j0:j1] - Z
            mx = E.max(axis=1)
            logB[ia + rows] = mx + np.log(np.exp(E - mx[:, None]).sum(axis=1))
    with np.errstate(divide="ignore"):
        direct = np.log1p(-np.minimum(D, 0.5))
    return np.where(D < 0.5, direct, np.logaddexp(logF, logB))


def _soft_bon_log_ratio(ell, logq, n, offset=0.0):
    """``log(pi_j / q_j)`` before normalisation (``ell = log w``, ascending)."""
    nm1 = n - 1.0
    log_nm1 = math.log(nm1)
    log_m1 = float(logsumexp(logq + ell))
    x_lo = -float(np.logaddexp(0.0, log_nm1 + log_m1)) - _LEFT - offset
    h = _H
    # the node count is checked in floating point before any cast to an index:
    # lam (r_max - r_min) beyond ~1e18 does not fit an intp
    q_nodes = (_T_HI - float(ell[0]) - x_lo) / h + 2.0  # may be inf: compared as a float
    if not q_nodes <= _MAX_NODES:
        raise ValueError(
            f"lam is too large for the exact quadrature ({q_nodes:.6g} nodes for lam*(r_max-r_min) = "
            f"{-ell[0]:.6g}), and the law is not certified equal to best-of-N (that needs an "
            f"integer n and lam times every gap between neighbouring reward levels above "
            f"~40 + log n(n-1)); lam=inf gives best-of-N"
        )
    i0 = np.ceil((_LOG_EPS - ell - x_lo) / h).astype(np.intp)  # first direct node
    i1 = np.floor((_T_HI - ell - x_lo) / h).astype(np.intp) + 1  # last direct node
    Q = int(i1.max()) + 1
    x = x_lo + h * np.arange(Q)
    with np.errstate(over="ignore"):
        # (N - 1) log M overflows only for N > ~1e305, where c = 0 anyway
        logc = np.maximum(nm1 * _log_m(x, ell, logq, log_nm1), -1e300)

    chunks = _level_chunks(ell, int((_T_HI - _LOG_EPS + 1.0) / h) + 3)
    tops = np.array([e - 1 for _, e in chunks], dtype=np.intp)
    i0c = i0[tops]
    # prefix moments P_m(i) = sum_{i' < i} h s^{m+1} c over nodes, at each chunk's start
    base = math.log(h) + x + logc
    logP = np.stack([_log_prefix_at(base + m * x, i0c) for m in range(_NSER)])
    out = np.empty(ell.size)
    for k, (j0, j1) in enumerate(chunks):
        a0, a1 = int(i0c[k]), int(i1[j0]) + 1
        lj = ell[j0:j1]
        xr = -ell[j1 - 1]
        xs = x[a0:a1]
        sigma = logc[a0]
        K = np.exp(math.log(h) + xs - xr + logc[a0:a1] - sigma)
        Z = np.multiply.outer(np.exp(lj + xr), np.exp(xs - xr))
        np.negative(Z, out=Z)
        np.exp(Z, out=Z)
        with np.errstate(divide="ignore"):
            logB = np.log(_mv(Z, K)) + lj + xr + sigma
        lp0 = logP[0, k]
        if np.isfinite(lp0):
            m = np.arange(_NSER)[:, None]
            terms = np.exp(m * lj[None, :] + (logP[:, k] - lp0 - _LOG_FACT[:_NSER])[:, None])
            sgn = np.where(m % 2 == 0, 1.0, -1.0)
            logA = lj + lp0 + np.log((sgn * terms).sum(axis=0))
        else:
            logA = np.full(lj.size, -np.inf)
        out[j0:j1] = np.logaddexp(logA, logB)
    return math.log(n) + out


def _soft_bon_small_a(ell, logq, n, offset=0.0):
    """``log(pi_j / q_j)`` before normalisation when ``a = -ell[0] <= 2``.

    Here ``pi_j / q_j - 1`` can be tiny (``O(a)``, or ``O(N - 1)``) and the
    direct form would give it only ``1e-16 / a`` relative accuracy.  Writing
    ``M(s) = e^{-s m_1 + g(s)}`` with ``m_1 = E w`` and
    ``g(s) = log E e^{-s (w - m_1)} >= 0`` splits the integral exactly into a
    closed form plus a non-negative term of second order:

        pi_j / q_j = G0_j (1 + b_j I_j),   b_j = w_j + (N - 1) m_1,
        G0_j = N w_j / b_j,   I_j = int_0^inf e^{-s b_j} expm1((N - 1) g(s)) ds,

    with ``w_j - m_1`` formed from ``expm1`` without cancellation.  ``g`` is a
    cumulant-like series while ``s max|w - m_1| <= 0.1`` and a direct sum
    beyond; ``I_j`` is a series in prefix moments of the nodes while
    ``s b_j <= 0.1`` and a direct sum beyond.
    """
    nm1 = n - 1.0
    q = np.exp(logq)
    w = np.exp(ell)
    em = np.expm1(ell)
    m1m1 = _dot(q, em)  # m_1 - 1
    delta = em - m1m1  # w_j - m_1
    m1 = 1.0 + m1m1
    b = w + nm1 * m1
    log_g0 = -np.log1p(-nm1 * delta / (n * w))
    h = _H
    # integrand ~ s^3 on the left (cut at s b_max = e^-14: e^-42 relative) and
    # below e^{-s N w_min} on the right (cut at s N w_min = 75).
    x_a = -math.log(1.0 + nm1 * m1) - 14.0 - offset
    x_b = math.log(75.0 / (n * w[0]))
    x = x_a + h * np.arange(int(math.ceil((x_b - x_a) / h)) + 1)
    s = np.exp(x)
    L = ell.size

    # g(s) = log1p(E expm1(-s delta)); for s max|delta| <= 0.1 by the series
    # sum_{k>=2} (-s)^k mu_k / k! in central moments (ratio of terms <= 0.034).
    dmax = float(np.abs(delta).max())
    n_ser = int(np.searchsorted(s * dmax, 0.1, side="right"))
    gsum = np.zeros(x.size)
    if n_ser:
        sl = -s[:n_ser]
        dk = delta * delta
        mu = []
        for k in range(2, _NSER + 2):
            mu.append(_dot(q, dk) / math.factorial(k))
            dk = dk * delta
        acc = np.zeros(n_ser)
        for c in reversed(mu):  # Horner in -s, from s^2 up
            acc = acc * sl + c
        gsum[:n_ser] = acc * sl * sl
    if n_ser < x.size:
        sd = s[n_ser:]
        per = max(1, _BLOCK // sd.size)
        for j0 in range(0, L, per):
            j1 = min(j0 + per, L)
            gsum[n_ser:] += _mv(np.expm1(np.multiply.outer(sd, -delta[j0:j1])), q[j0:j1])
    F = h * s * np.expm1(nm1 * np.log1p(gsum))  # >= 0

    # I_j = sum_i F_i e^{-s_i b_j}: nodes with s b_max < 0.1 by the series
    # sum_m (-b_j)^m P_m / m!,  P_m = sum_{i < i0} F_i s_i^m.
    i0 = int(np.searchsorted(s * b.max(), 0.1, side="left"))
    I = np.zeros(L)
    if i0:
        sp = s[:i0]
        coef = [_dot(F[:i0], sp**m) / math.factorial(m) for m in range(_NSER)]
        for c in reversed(coef):  # Horner in -b_j
            I = I * -b + c
    sd, Fd = s[i0:], F[i0:]
    per = max(1, _BLOCK // max(sd.size, 1))
    for j0 in range(0, L, per):
        j1 = min(j0 + per, L)
        Z = np.multiply.outer(-b[j0:j1], sd)
        np.exp(Z, out=Z)
        I[j0:j1] += _mv(Z, Fd)
    return log_g0 + np.log1p(b * I)


def _soft_bon_near_one(ell, logq, n, offset=0.0):
    """``log(pi_j / q_j)`` before normalisation for ``N`` close to 1 (any ``a``).

    ``pi_j / q_j - 1`` is ``O(N - 1)``, below the absolute accuracy of the
    direct forms.  With ``M^{N-1} = 1 + expm1((N - 1) log M)``,

        pi_j / q_j = N (1 + w_j J_j),   J_j = int_0^inf e^{-s w_j} expm1((N - 1) log M(s)) ds,

    where the integrand has one sign (``M <= 1``), so ``w_j J_j = O(N - 1)``
    keeps its relative accuracy and ``log(pi_j/q_j) = log1p(N - 1) +
    log1p(w_j J_j)``.  The trapezoid rule in ``x = log s`` (step ``h``) spans
    ``s max w = e^-20`` (the integrand is ``O(s^2)`` there) to
    ``s min w = 75``.
    """
    nm1 = n - 1.0
    log_nm1 = math.log(nm1)
    h = _H
    x_lo = -20.0 - offset
    x_hi = math.log(75.0) - float(ell[0])
    Q = int(math.ceil((x_hi - x_lo) / h)) + 1
    if Q > _MAX_NODES:
        raise ValueError(f"lam is too large for the exact quadrature ({Q} nodes)")
    x = x_lo + h * np.arange(Q)
    F = h * np.exp(x) * np.expm1(nm1 * _log_m(x, ell, logq, log_nm1))  # <= 0
    L = ell.size
    J = np.empty(L)
    per = max(1, _BLOCK // Q)
    s = np.exp(x)
    for j0 in range(0, L, per):
        j1 = min(j0 + per, L)
        Z = np.multiply.outer(-np.exp(ell[j0:j1]), s)
        np.exp(Z, out=Z)
        J[j0:j1] = _mv(Z, F)
    return math.log1p(nm1) + np.log1p(np.exp(ell) * J)


# Below this N - 1 the deviation form of _soft_bon_near_one is used for a > _SMALL_A.
_NEAR_ONE = 1e-2


def _trapezoid(engine, ell, logq, n):
    """Run ``engine`` on one grid, refining for non-integer ``N``.

    For integer ``N`` the integrand is entire in ``x`` and one grid of step
    ``h`` is exact to rounding.  For non-integer ``N``, ``M^{N-1}`` has branch
    points at the complex zeros of ``M``; near a crossing of two groups of
    levels with mass ratio ``R`` they lie only about ``pi / log R`` from the
    real axis, and the error ``~ exp(-2 pi d / h)`` can reach ``1e-5`` for the
    levels whose integrand lives there while ``sum pi`` stays within
    ``1e-11`` of 1.  So the grid is halved (the old nodes plus the midpoints:
    the mean of ``2^k`` shifted grids) until every level's log-ratio moves by
    less than ``_REFINE_TOL (1 + |t_j|)``; the last move is returned as
    ``refine_error``.

    Returns ``t, refine_error, n_grids``.
    """
    t = engine(ell, logq, n, 0.0)
    if float(n).is_integer():
        return t, 0.0, 1
    grids = 1
    while True:
        offsets = _H * (2 * np.arange(grids) + 1) / (2 * grids)
        new = np.stack([engine(ell, logq, n, float(o)) for o in offsets])
        # mean of 2 * grids evaluations, in log space; where every |t| < 1 as log1p of the mean
        # of expm1 (a logaddexp would round a t ~ 1e-9 to eps absolutely: 1e-7 relative)
        t_log = np.logaddexp(t + math.log(grids), logsumexp(new, axis=0)) - math.log(2 * grids)
        near = (np.abs(t) < 1.0) & np.all(np.abs(new) < 1.0, axis=0)
        t_lin = np.log1p(
            (grids * np.expm1(np.where(near, t, 0.0)) + np.expm1(np.where(near, new, 0.0)).sum(axis=0))
            / (2 * grids)
        )
        t_new = np.where(near, t_lin, t_log)
        err = float(np.max(np.abs(t_new - t) / (1.0 + np.abs(t_new))))
        t, grids = t_new, 2 * grids
        if err <= _REFINE_TOL or grids >= _MAX_GRIDS:
            return t, err, grids


# log of the per-level relative difference from best-of-N below which
# soft_best_of_n returns the best-of-N law (e^-40 = 4e-18: below one ulp).
_LOG_BON_CERT = -40.0


def _bon_limit_certified(ref, lam_u, n):
    """True when soft best-of-N equals best-of-N to ``e^-40`` relative at every level.

    Integer ``n`` only.  With ``d_j`` the best-of-N level law, ``g`` the gaps
    between neighbouring levels (standardised units) and ``F_j`` the CDF:
    given that the top draw is at level ``j``, a lower level is kept with
    probability at most ``(n-1) e^{-lam g_j}``; a higher top draw keeps level
    ``j`` with probability at most ``(n-1) e^{-lam g_{j+1}}``, on an event of
    probability at most ``n q_j``; and ``q_j / d_j <= F_j^{-(n-1)}``
    (``(1 - q/F)^n <= 1 - q/F``).  So the relative difference is at most
    ``(n-1) e^{-lam g_j} + n (n-1) e^{-lam g_{j+1}} F_j^{-(n-1)}``, each term
    required below ``e^-40 / 2``.
    """
    if not float(n).is_integer() or ref.n_levels < 2:
        return False
    gaps = lam_u * np.diff(ref.level_u)  # lam (v_{j+1} - v_j) >= 0
    log_nm1 = math.log(n - 1.0)
    logF = ref.level_log_cdf[0]
    below = log_nm1 - gaps  # level j+1: a lower draw kept
    above = math.log(n) + log_nm1 - gaps - (n - 1.0) * logF[:-1]  # level j: a higher top
    # both terms can hit one level: each below e^-40 / 2
    return bool(max(below.max(), above.max()) <= _LOG_BON_CERT - math.log(2.0))


def _make_policy(ref, lev, n, log_n, lam, sum_error, log_ratio=None):
    if log_ratio is None:
        kl = float(np.sum(kl_terms(lev, ref.level_logq)))
    else:
        # sum_j q_j h(t_j) from the exact log-ratios t_j: no cancellation in
        # lev - log q when pi is within 1e-8 of p.
        kl = _dot(np.exp(ref.level_logq), kl_terms(log_ratio, 0.0))
    reward = ref.to_reward(_dot(np.exp(lev), ref.level_u))
    return SoftBestOfNPolicy(
        ref=ref, level_logprobs=lev, kl=kl, reward=reward, n=n, log_n=log_n, lam=lam, sum_error=sum_error
    )


def soft_best_of_n(ref: Reference, n=None, *, log_n=None, lam) -> SoftBestOfNPolicy:
    r"""Exact law of soft best-of-N: N draws from ``p``, one kept with probability ``∝ e^{lam r}``.

    Parameters
    ----------
    ref : Reference
    n : float, optional
        Number of draws, real ``n >= 1`` (``inf`` gives the tilted policy).
    log_n : float, optional
        ``log N`` instead of ``n`` (exactly one of the two; ``log_n <= 709``
        or ``inf``).
    lam : float
        Inverse temperature ``lam >= 0`` in reward units (``0`` gives ``p``,
        ``inf`` gives best-of-N with uniform tie-breaking).

    Returns
    -------
    SoftBestOfNPolicy
        With ``n``, ``log_n``, ``lam`` and ``sum_error``
        (``|sum_y pi(y) - 1|`` of the quadrature before the final
        renormalisation; ``0.0`` for the closed-form limits).

    Raises
    ------
    ValueError
        Bad ``n``, ``log_n`` or ``lam`` (not a real scalar, NaN, both or neither
        of ``n`` and ``log_n``, ``n < 1``, ``log_n < 0``, ``lam < 0``),
        or ``lam (r_max - r_min)`` above about ``4e5`` (the grid would exceed
        ``2e6`` nodes; ``lam=inf`` gives best-of-N) unless the law is
        certified to equal best-of-N (below).
    ConvergenceError
        ``sum_error > 1e-8``, or (non-integer ``n``) the law still moving by
        more than ``1e-10`` on the finest grid; ``.partial`` holds the
        renormalised policy.

    Notes
    -----
    With ``w = e^{lam r}`` and ``M(s) = E_p e^{-s w(Y)}``,

    .. math:: \pi_{N,\lambda}(y) = N\, p(y)\, w(y) \int_0^\infty e^{-s w(y)} M(s)^{N-1}\, ds,

    from ``1/a = int_0^inf e^{-as} ds`` applied to ``w(Y_1) / sum_k w(Y_k)``;
    for real ``N`` this integral is the definition.  Limits: ``N = 1`` or
    ``lam = 0`` give ``p``; ``lam -> inf`` gives best-of-N; ``N -> inf`` gives
    the tilted policy ``phi_lam``.  The integral is computed per reward level
    in ``x = log s`` by the trapezoid rule in log space (module docstring);
    the level law is accurate to about ``1e-14`` relative, every level alike,
    and ``sum_y pi(y) = 1`` is checked.  For integer ``n``, when the gaps
    between neighbouring reward levels are so wide (``lam`` times the gap
    beyond ``40 + log n(n-1) + (n-1) log(1/F)``) that the law provably equals
    best-of-N to ``e^-40`` relative at every level, the best-of-N law is
    returned (``sum_error = 0``): this is also how ``lam (r_max - r_min) >
    4e5`` is handled for well-separated rewards.  KL is ``sum_j q_j h(t_j)`` with
    ``t_j = log(pi_j / q_j)`` (``klfrontier._logspace.kl_terms``), so it
    keeps its relative accuracy as ``lam -> 0``; ``E r = sum_j pi_j v_j``.
    Cost: about 0.15 s for ``10^5`` distinct levels (twice that for
    non-integer ``n``, more near pathological mass ratios).

    Examples
    --------
    >>> ref = Reference([0.0, 1.0, 2.0], probs=[0.5, 0.3, 0.2])
    >>> soft = soft_best_of_n(ref, n=4, lam=2.0)
    >>> soft.level_probs.round(6).tolist()
    [0.138396, 0.342577, 0.519027]
    >>> round(soft.reward, 6), round(soft.kl, 6), soft.sum_error < 1e-12
    (1.380631, 0.362661, True)

    For ``N = 2`` the law is ``q_j sum_k q_k 2 w_j / (w_j + w_k)``:

    >>> q, w = np.array([0.5, 0.3, 0.2]), np.exp([0.0, 1.0, 2.0])
    >>> exact = q * ((2 * w[:, None] / (w[:, None] + w)) @ q)
    >>> np.allclose(soft_best_of_n(ref, n=2, lam=1.0).level_probs, exact, rtol=1e-14, atol=0)
    True
    """
    check_reference(ref)
    n_val, ln = _check_n(n, log_n)
    lam_val = _check_lam(lam)
    if ref.is_constant or lam_val == 0.0 or n_val == 1.0:
        return _make_policy(ref, ref.level_logq, n_val, ln, lam_val, 0.0)
    if np.isinf(n_val):
        lev = tilted(ref, lam=lam_val).level_logprobs
        return _make_policy(ref, lev, n_val, ln, lam_val, 0.0)
    lam_u = ref.lam_to_u(lam_val)
    if np.isinf(lam_u) or _bon_limit_certified(ref, lam_u, n_val):
        # every gap between distinct levels is (in effect) infinitely wide: best-of-N
        # is the law to below one ulp per level (_bon_limit_certified).
        lev = best_of_n(ref, log_n=ln).level_logprobs
        return _make_policy(ref, lev, n_val, ln, lam_val, 0.0)
    ell = lam_u * ref.level_u
    logq = ref.level_logq
    engine = (
        _soft_bon_small_a
        if lam_u <= _SMALL_A
        else _soft_bon_near_one
        if n_val - 1.0 <= _NEAR_ONE
        else _soft_bon_log_ratio
    )
    t, refine_error, n_grids = _trapezoid(engine, ell, logq, n_val)
    # sum_j q_j (pi_j/q_j - 1), summed from expm1 terms: exact to ~1e-16.
    excess = _dot(np.exp(logq), np.expm1(t))
    sum_error = abs(excess)
    t = t - math.log1p(excess)
    pol = _make_policy(ref, logq + t, n_val, ln, lam_val, sum_error, log_ratio=t)
    if not sum_error <= SUM_TOL:
        raise ConvergenceError(
            f"soft best-of-N quadrature: |sum pi - 1| = {sum_error:.3g} exceeds {SUM_TOL:g}",
            partial=pol,
        )
    if not refine_error <= _REFINE_FAIL:
        raise ConvergenceError(
            f"soft best-of-N quadrature (non-integer n): the level law still moved by "
            f"{refine_error:.3g} (relative) on the finest grid (step {_H / n_grids:.3g})",
            partial=pol,
        )
    return pol
