"""Log-space kernels shared by every engine.

One kernel per convention lives here: ``log(1 - e^x)``, the top-down tail sum,
the ``x log x - x + 1`` divergence term.  Nothing else in the package may
re-implement them.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy.special import logsumexp

__all__ = [
    "level_expect",
    "total_rest",
    "logsumexp",
    "log1mexp",
    "log_neg_log1mexp",
    "log_cumsum",
    "log_cdf_levels",
    "kl_terms",
    "kl_terms_linear",
    "log_bon_kl_bound",
    "log_total",
    "log_total_probs",
]

_LOG_HALF = -np.log(2.0)

#: Elements per chunk of :func:`_chunked` kernels.
_ELEMENT_CHUNK = 1 << 14


def _chunked(kernel):
    """Run an elementwise kernel chunk by chunk on large (broadcast) inputs.

    The kernels evaluate both branches of ``np.where`` and make several
    temporaries; beyond a few 10^4 elements those leave the cache (and fresh
    memory costs page faults), so chunks of 2^14 are 2-6x faster at 10^7
    elements.  Results are identical: the kernels are elementwise.
    """

    @functools.wraps(kernel)
    def wrapper(*args):
        arrs = [np.asarray(a, dtype=float) for a in args]
        shape = np.broadcast_shapes(*(a.shape for a in arrs))
        size = math.prod(shape)
        if size <= _ELEMENT_CHUNK:
            return kernel(*arrs)
        flat = [np.broadcast_to(a, shape).reshape(-1) for a in arrs]
        out = np.empty(size)
        for s in range(0, size, _ELEMENT_CHUNK):
            out[s : s + _ELEMENT_CHUNK] = kernel(*(f[s : s + _ELEMENT_CHUNK] for f in flat))
        return out.reshape(shape)

    return wrapper


@_chunked
def log1mexp(x):
    """Return ``log(1 - exp(x))`` for ``x <= 0`` without cancellation.

    Uses ``log(-expm1(x))`` for ``x > -log 2`` and ``log1p(-exp(x))`` below
    (Mächler 2012).  ``log1mexp(0) = -inf`` and ``log1mexp(-inf) = 0``.

    Examples
    --------
    >>> float(log1mexp(np.log(0.25)))   # log(0.75)
    -0.2876820724517809
    """
    x = np.asarray(x, dtype=float)
    with np.errstate(divide="ignore"):
        out = np.where(
            x > _LOG_HALF,
            np.log(-np.expm1(np.minimum(x, 0.0))),
            np.log1p(-np.exp(np.minimum(x, _LOG_HALF))),
        )
    return out[()] if out.ndim == 0 else out


@_chunked
def log_neg_log1mexp(a):
    """Return ``log(-log(1 - e^a))`` for ``a <= 0``, accurate for ``a -> -inf``.

    For tiny ``x = e^a``, ``-log(1 - x) = x (1 + x/2 + ...)``, so the result is
    ``a + log1p(x/2 + x^2/3)``: it stays exact when ``e^a`` underflows (tails
    like ``e^{-10^4}`` in sequence-level best-of-N).  ``a = 0`` gives ``+inf``
    and ``a = -inf`` gives ``-inf``.

    Examples
    --------
    >>> float(log_neg_log1mexp(-800.0))
    -800.0
    >>> round(float(log_neg_log1mexp(np.log(0.5))), 12)   # log(log 2)
    -0.366512920582
    """
    a = np.asarray(a, dtype=float)
    tiny = a < -20.0
    with np.errstate(divide="ignore", over="ignore"):
        x = np.exp(np.where(tiny, a, -20.0))
        series = a + np.log1p(x * (0.5 + x / 3.0))
        direct = np.log(-log1mexp(np.where(tiny, -1.0, np.minimum(a, 0.0))))
    out = np.where(tiny, series, direct)
    return out[()] if out.ndim == 0 else out


def log_cumsum(logx, out=None):
    """Log of the inclusive prefix sums ``log sum_{k<=j} x_k`` of ``x = e^{logx}``.

    Parameters
    ----------
    logx : (L,) array
        Log-values (``-inf`` allowed); any magnitude.
    out : (L,) array, optional
        Where to write the result (may be ``logx`` itself, or a reversed view).

    Notes
    -----
    Summed in linear space block by block (:data:`_CUMSUM_BLOCK` entries),
    each block shifted by its own maximum; the block totals are carried in log
    space and each prefix is ``e^s (e^{m_b - s} P + e^{c_b - s})`` with ``P``
    the block-local sum, ``m_b`` the block's shift, ``c_b`` the carry and
    ``s = max(m_b, c_b)``.  A block whose finite entries span more than 700
    nats (so that shifted terms could underflow) is accumulated with
    ``np.logaddexp.accumulate`` instead.  All terms are positive, so the
    relative error is at most ``(B + L/B + R) eps`` with ``R`` the block's
    range in nats (``x - shift`` rounds to ``eps R``), ``~10^-12`` at
    ``L = 10^7``, and far less in practice, at a few passes over memory
    rather than one sequential ``logaddexp`` per entry.

    Examples
    --------
    >>> np.exp(log_cumsum(np.log([0.5, 0.3, 0.2]))).round(12).tolist()
    [0.5, 0.8, 1.0]
    >>> log_cumsum(np.array([-1000.0, -1e5, -1000.0])).round(6).tolist()
    [-1000.0, -1000.0, -999.306853]
    """
    logx = np.asarray(logx, dtype=float)
    n = logx.size
    if out is None:
        out = np.empty(n)
    if out is not logx:
        out[...] = logx
    if n == 0:
        return out
    b = min(_CUMSUM_BLOCK, n)
    full = (n // b) * b
    # full blocks as a (blocks, b) view of out, the partial last block as (1, rest)
    views = [out[:full].reshape(-1, b)] + ([out[full:].reshape(1, -1)] if full < n else [])
    local = [_cumsum_local(v) for v in views]
    total = np.concatenate([t for _, t, _ in local])
    carry = np.empty(total.size)  # log of everything before a block
    carry[0] = -np.inf
    np.logaddexp.accumulate(total[:-1], out=carry[1:])
    start = 0
    for v, (shift, _, wide) in zip(views, local):
        c = carry[start : start + v.shape[0]]
        start += v.shape[0]
        # prefix = e^c + e^shift P = e^s (e^{shift-s} P + e^{c-s}), s = the larger
        sc = np.maximum(shift, c)
        sc[~np.isfinite(sc)] = 0.0
        lin = np.ones(v.shape[0], dtype=bool)
        lin[list(wide)] = False
        rows = v if lin.all() else v[lin]
        rows *= np.exp(shift - sc)[lin, None]
        rows += np.exp(c - sc)[lin, None]
        with np.errstate(divide="ignore"):
            np.log(rows, out=rows)
        rows += sc[lin, None]
        if rows is not v:
            v[lin] = rows
        for i, lw in wide.items():
            v[i] = np.logaddexp(lw, c[i])
    return out


def _cumsum_local(v):
    """In place: block-local prefix sums of ``e^v`` per row, ``e^{-shift}``-scaled.

    Returns ``(shift, log of each row's total, {row: log-space prefix sums})``,
    the last for rows spanning more than :data:`_CUMSUM_RANGE` nats (their
    entries in ``v`` are left for the caller to overwrite).
    """
    top = v.max(axis=1)
    shift = np.where(np.isfinite(top), top, 0.0)
    low = v.min(axis=1)
    for i in np.flatnonzero(np.isneginf(low) & np.isfinite(top)):  # ignore -inf entries
        low[i] = v[i][np.isfinite(v[i])].min()
    with np.errstate(invalid="ignore"):  # -inf - -inf: an all-zero block
        wide = {int(i): np.logaddexp.accumulate(v[i]) for i in np.flatnonzero(top - low > _CUMSUM_RANGE)}
    v -= shift[:, None]
    np.exp(v, out=v)
    np.cumsum(v, axis=1, out=v)
    with np.errstate(divide="ignore"):
        total = np.log(v[:, -1]) + shift
    for i, lw in wide.items():
        total[i] = lw[-1]
    return shift, total, wide


#: Block length and the largest within-block range (nats) of :func:`log_cumsum`'s
#: linear-space pass (``e^{-700}`` is still a normal double).  A prefix far below
#: its block's maximum inherits the rounding of ``x - shift``: an absolute error
#: of up to ``eps x range`` in the log (measured 54 eps at a range of 129).  Capping
#: the range at 32 removed that but moved the sequence engine's tails to the
#: sequential path: slower, and no more accurate there (its BoN moved by 2.5e-12).
_CUMSUM_BLOCK = 2048
_CUMSUM_RANGE = 700.0


def log_cdf_levels(logq):
    """Log CDF, log left-limit CDF and log survival of an ordered level law.

    Parameters
    ----------
    logq : (L,) array
        Log-masses of reward levels sorted by increasing reward; they sum to 1.

    Returns
    -------
    logF, logFminus, logS : (L,) arrays
        ``log P(r <= v_j)``, ``log P(r < v_j)`` and ``log P(r > v_j)``.

    Notes
    -----
    The survival ``S_j = sum_{k>j} q_k`` is summed from the top (never
    ``1 - cumsum``) and ``F_j`` from the bottom; ``log F_j`` is taken from
    whichever side is accurate: ``log1p(-S_j)`` when ``S_j < 1/2`` and the
    bottom-up sum otherwise.  Both partial sums are :func:`log_cumsum`.
    ``logF`` and ``logFminus`` are overlapping views of one buffer (one
    level-sized array fewer): treat them as read-only.

    Examples
    --------
    >>> F, Fm, S = log_cdf_levels(np.log([0.5, 0.3, 0.2]))
    >>> np.exp(F).round(12).tolist(), np.exp(S).round(12).tolist()
    ([0.5, 0.8, 1.0], [0.5, 0.2, 0.0])
    """
    logq = np.asarray(logq, dtype=float)
    n = logq.size
    # log F^- is log F shifted by one: both are views of one buffer
    buf = np.empty(n + 1)
    buf[0] = -np.inf
    logF, logFminus = buf[1:], buf[:-1]
    log_cumsum(logq, out=logF)  # log sum_{k<=j} q_k
    logS = np.empty(n)
    logS[-1] = -np.inf
    log_cumsum(logq[:0:-1], out=logS[-2::-1])  # log sum_{k>j} q_k
    # where S < 1/2 (a suffix: S decreases), F = 1 - S from the top (rounding can
    # put log S_0 a hair above 0 when q_0 is tiny; that entry has S >= 1/2)
    below = logS < _LOG_HALF
    k = int(np.argmax(below))
    tail = np.exp(logS[k:])
    np.negative(tail, out=tail)
    np.log1p(tail, out=logF[k:])
    logF[-1] = 0.0
    return logF, logFminus, logS


@_chunked
def kl_terms(loga, logb):
    """Return the terms ``b h(log(a/b))`` of ``KL(a||b)``, ``h(t) = e^t (t-1) + 1``.

    When ``a`` and ``b`` both sum to one, ``KL(a||b) = sum_j b_j h(t_j)`` with
    ``t_j = log(a_j / b_j)``; in that form every term is non-negative, so a
    small divergence keeps full relative accuracy (the usual
    ``sum a log(a/b)`` cancels).  For ``|t| < 0.1`` the Taylor series
    ``h(t) = sum_{k>=2} (k-1) t^k / k!`` replaces the closed form, which is
    evaluated as ``a (t - 1) + b`` so that ``e^t`` never overflows.
    Conventions: ``a = 0`` gives ``b``; ``b = 0 < a`` gives ``+inf``;
    ``a = b = 0`` gives 0.

    Examples
    --------
    >>> round(float(kl_terms(np.log(0.2), np.log(0.1))), 12)   # 0.2 log 2 - 0.1
    0.038629436112
    """
    loga, logb = np.broadcast_arrays(np.asarray(loga, dtype=float), np.asarray(logb, dtype=float))
    both_zero = np.isneginf(loga) & np.isneginf(logb)
    with np.errstate(invalid="ignore"):
        t = np.where(both_zero, 0.0, loga - logb)
    small = np.abs(t) < 0.1
    series = _h_series(np.where(small, t, 0.0)) * np.exp(logb)
    with np.errstate(invalid="ignore", over="ignore"):
        a = np.exp(loga)
        b = np.exp(logb)
        direct = np.where(np.isneginf(loga), b, a * (t - 1.0) + b)
    out = np.where(small, series, direct)
    out = np.where(both_zero, 0.0, out)
    out = np.where(np.isneginf(logb) & ~np.isneginf(loga), np.inf, out)
    return out[()] if out.ndim == 0 else out


@_chunked
def kl_terms_linear(t, a, b):
    """:func:`kl_terms` from ``t = log(a/b)`` and the probabilities ``a, b >= 0`` themselves.

    For callers that hold ``a`` and ``b`` (zeros are true zeros) and an
    accurate ``t`` (e.g. ``log1p((a - b)/b)`` for near-equal entries, where
    ``log a - log b`` would round to ``eps |log a|``).  Same conventions.

    Examples
    --------
    >>> round(float(kl_terms_linear(np.log(2.0), 0.2, 0.1)), 12)
    0.038629436112
    """
    t, a, b = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (t, a, b)))
    small = np.abs(t) < 0.1
    series = _h_series(np.where(small, t, 0.0)) * b
    with np.errstate(invalid="ignore", over="ignore"):
        direct = np.where(a == 0, b, a * (t - 1.0) + b)
    out = np.where(small, series, direct)
    out = np.where((a == 0) & (b == 0), 0.0, out)
    out = np.where((b == 0) & (a > 0), np.inf, out)
    return out[()] if out.ndim == 0 else out


def _h_series(ts):
    """``h(t) = e^t (t - 1) + 1 = sum_{k>=2} (k-1) t^k / k!`` for ``|t| < 0.1``."""
    series = np.zeros_like(ts)
    for c in reversed(_H_COEF):
        series = (series + c) * ts
    return series * ts


# (k - 1)/k! for k = 2..11: truncation below 1e-18 relative when |t| < 0.1.
_H_COEF = [(k - 1) / float(np.prod(np.arange(1, k + 1))) for k in range(2, 12)]


def log_bon_kl_bound(log_n):
    """Return ``log n - (n - 1)/n`` as a function of ``log n``, accurately.

    For small ``x = log n`` the two terms cancel to ``x^2/2 - x^3/6 + ...``;
    a series is used there.

    Examples
    --------
    >>> float(log_bon_kl_bound(np.log(2.0)))   # log 2 - 1/2
    0.1931471805599453
    """
    x = np.asarray(log_n, dtype=float)
    small = np.abs(x) < 1e-2
    xs = np.where(small, x, 0.0)
    # x + expm1(-x) = sum_{k>=2} (-1)^k x^k / k!
    series = np.zeros_like(xs)
    for k in range(9, 1, -1):
        series = (series + (-1.0) ** k / float(np.prod(np.arange(1, k + 1)))) * xs
    series = series * xs
    direct = x + np.expm1(-np.where(small, 1.0, x))
    out = np.where(small, series, direct)
    return out[()] if out.ndim == 0 else out


def log_total(lp):
    """``log sum e^lp`` of a 1-D ``lp`` without NaN or +inf, not all ``-inf``.

    ``top + log1p(rest)`` with ``rest = sum_{k != argmax} e^{lp_k - top}``
    (as scipy's ``logsumexp``: a law ``1, 1e-100`` totals ``1e-100``, not 0),
    summed chunk by chunk: no K-sized temporary (``logsumexp`` makes several,
    0.3 s at K = 10^7).

    Examples
    --------
    >>> float(log_total(np.array([0.0, np.log(1e-100)])))
    1e-100
    """
    i = int(np.argmax(lp))
    return float(lp[i]) + float(np.log1p(total_rest(lp, i)))


def total_rest(lp, i):
    """``sum_{k != i} e^{lp_k - lp_i}``, chunk by chunk.

    With ``i`` the argmax, ``-log1p(total_rest)`` is the normalised log-mass of
    the largest entry with full relative accuracy (``lp_i - log_total(lp)``
    keeps only ``eps * |lp_i|`` absolutely: 3e-9 relative for a mass ``1 - 1e-6``
    given as ``1e-6, 1e-12``).

    >>> float(total_rest(np.log(np.array([1.0, 0.5, 0.25])), 0))
    0.75
    """
    top = float(lp[i])
    rest = 0.0
    for s in range(0, lp.size, _ELEMENT_CHUNK):
        e = np.exp(lp[s : s + _ELEMENT_CHUNK] - top)
        if s <= i < s + _ELEMENT_CHUNK:
            e[i - s] = 0.0
        rest += float(e.sum())
    return rest


def log_total_probs(p):
    """``log sum p`` for valid ``p`` with a positive entry: ``log top + log1p(rest / top)``.

    ``rest`` excludes the largest entry so that a law ``1, 1e-100`` totals
    ``1e-100`` exactly; falls back to :func:`log_total` when a sum overflows.

    Examples
    --------
    >>> float(log_total_probs(np.array([0.25, 0.5, 0.25])))
    0.0
    """
    i = int(np.argmax(p))
    top = float(p[i])
    with np.errstate(over="ignore"):
        rest = float(np.sum(p[:i])) + float(np.sum(p[i + 1 :]))
    if not np.isfinite(rest):
        with np.errstate(divide="ignore"):
            return log_total(np.log(p))
    return float(np.log(top)) + float(np.log1p(rest / top))


def level_expect(level_logprobs, level_means) -> float:
    r"""``sum_j phi_j m_j``: an expectation from a level law and per-level means.

    Parameters
    ----------
    level_logprobs : (L,) array_like
        ``log phi_j`` (``-inf`` for levels the policy never reaches).
    level_means : (L,) array_like
        Finite ``m_j``, e.g. :meth:`Reference.level_mean` of a per-outcome array.

    Notes
    -----
    .. math:: E_\phi[x] = \frac{\sum_j \phi_j m_j}{\sum_j \phi_j}

    The division removes the law's rounding off 1 (so a constant comes out
    as itself).  The means are divided by a power of two (exact; no
    overflow near ``1e308``), centred on the mean of the most likely level,
    summed pairwise, and corrected once by the sum of the residuals
    ``m_j - E``: the error is of order ``eps`` times ``sum_j phi_j |m_j - E|``,
    not times the terms' magnitude.  The result lies in ``[min m_j, max m_j]``
    over the reached levels (clipped to it).

    >>> level_expect(np.log([0.25, 0.75]), [1.0, 3.0])
    2.5
    """
    lq = np.asarray(level_logprobs, dtype=float)
    m = np.asarray(level_means, dtype=float)
    phi = np.exp(lq)
    reached = phi > 0
    if not reached.all():
        phi, m = phi[reached], m[reached]
    lo, hi = float(np.min(m)), float(np.max(m))
    scale = float(np.ldexp(1.0, np.frexp(max(-lo, hi))[1] - 1))
    ms = m / scale
    total = np.sum(phi)
    e = ms[np.argmax(phi)]
    e += np.sum(phi * (ms - e)) / total
    e += np.sum(phi * (ms - e)) / total
    return float(min(max(e, lo / scale), hi / scale) * scale)


def unit_exponent(top, far=2.0**64):
    """``e`` with ``top 2^-e`` in ``[1/2, 1)`` when ``top > 0`` lies outside ``[1/far, far]``, else 0.

    Dividing rewards by ``2^e`` is exact (a power of two), and brings a
    magnitude near ``1e300`` or ``1e-300`` to order one, where squares and
    ``λ`` stay in the float range.  ``0`` (no scaling) for ``top`` inside
    the band, zero, or not finite.

    >>> unit_exponent(3.0), unit_exponent(1e300), unit_exponent(2.0**-70), unit_exponent(0.0)
    (0, 997, -69, 0)
    """
    top = float(top)
    if not (math.isfinite(top) and top > 0) or 1.0 / far <= top <= far:
        return 0
    return math.frexp(top)[1]
