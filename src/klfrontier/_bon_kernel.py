"""The best-of-N level-law kernel: one home for ``log(-log F)`` and ``log(-log(F^-/F))``.

Theory §3.  Best-of-N with uniform tie-breaking puts mass
``d_j = F_j^N - (F^-_j)^N`` on level ``j`` (``F_j = P(r <= v_j)``,
``F^-_j = P(r < v_j)``).  With ``A_j = -log F_j`` and
``C_j = -log(F^-_j / F_j)``,

    log d_j = -N A_j + log(1 - e^{-N C_j}),

and both ``A`` and ``C`` are held as logarithms, so ``N`` only ever appears
in an exponent (``log N`` up to ``1e300``).  ``A_j`` is taken from the
survival ``S_j = 1 - F_j`` where ``S_j < 1/2`` (``-log(1 - S)`` keeps the
tails far below ``e^{-745}`` exact) and from ``log F`` elsewhere.

Used by single-token best-of-N (:mod:`klfrontier.bon`), the sequence
window laws (:mod:`klfrontier.sequences._window`) and the saddle-point
best-of-N (:mod:`klfrontier.sequences.memoryless`).  The empirical
estimators (:mod:`klfrontier.empirical.kernels`) use
:func:`count_level_logd`, the same law written on the integer counts of an
empirical law.

>>> import numpy as np
>>> logq = np.log([0.5, 0.5])
>>> lnl_f, lnl_c = tail_logs(logq, np.log([0.5, 1.0]), np.array([np.log(0.5), -np.inf]))
>>> np.exp(level_logd(logq, lnl_f, lnl_c, np.log(2.0))).tolist()     # N = 2: [1/4, 3/4]
[0.25, 0.75]
"""

from __future__ import annotations

import numpy as np

from ._logspace import log1mexp, log_neg_log1mexp

__all__ = ["log_neg_log_cdf", "tail_logs", "level_logd", "count_level_logd"]

#: Below this log survival, ``-log F`` is formed from the survival side.
_LOG_HALF = -float(np.log(2.0))


def log_neg_log_cdf(logsf, logcdf):
    """``log(-log F)`` from ``log S`` and ``log F`` (``S = 1 - F``), tail-exact.

    ``log_neg_log1mexp(log S)`` where ``S < 1/2`` (exact when ``S`` is far
    below ``e^{-745}``: the result is ``log S + log1p(S/2 + ...)``),
    ``log(-log F)`` elsewhere.  ``-inf`` where ``S = 0`` (the top).

    >>> float(log_neg_log_cdf(np.array(-800.0), np.array(0.0)))
    -800.0
    """
    logsf = np.asarray(logsf, dtype=float)
    logcdf = np.asarray(logcdf, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(logsf < _LOG_HALF, log_neg_log1mexp(np.minimum(logsf, 0.0)), np.log(-logcdf))


def tail_logs(logq, logcdf, logsf):
    """``(log(-log F_j), log(-log(F^-_j / F_j)))`` at the levels.

    Parameters
    ----------
    logq, logcdf, logsf : array_like
        Log mass, log CDF ``log F_j`` and log survival ``log(1 - F_j)`` of
        each level (ascending).

    Returns
    -------
    lnl_f, lnl_c : ndarrays
        ``-inf`` at the top level for the first, ``+inf`` at the bottom level
        for the second (``F^- = 0``).

    Notes
    -----
    ``-log(F^-_j/F_j) = -log(1 - q_j/F_j)``: formed as
    ``log_neg_log1mexp(log q_j - log F_j)``, exact when ``q_j / F_j`` is tiny.

    >>> logsf = np.array([np.log(0.5), -np.inf])
    >>> [round(float(x), 6) for x in tail_logs(np.log([0.5, 0.5]), np.log([0.5, 1.0]), logsf)[1]]
    [inf, -0.366513]
    """
    logq = np.asarray(logq, dtype=float)
    logcdf = np.asarray(logcdf, dtype=float)
    lnl_f = log_neg_log_cdf(logsf, logcdf)
    with np.errstate(divide="ignore", invalid="ignore"):
        lnl_c = log_neg_log1mexp(np.minimum(logq - logcdf, 0.0))
    return lnl_f, lnl_c


def level_logd(logq, lnl_f, lnl_c, log_n):
    """Log-law of the best-of-N winner's level: ``-N A_j + log(1 - e^{-N C_j})``.

    Parameters
    ----------
    logq : array_like
        Log masses (returned unchanged for ``log_n = 0``: ``N = 1`` is ``q``).
    lnl_f, lnl_c : array_like
        ``log A`` and ``log C`` from :func:`tail_logs`.
    log_n : float or array_like
        ``log N`` (broadcast against the levels).

    >>> logq = np.log([0.5, 0.5])
    >>> tails = tail_logs(logq, np.log([0.5, 1.0]), np.array([np.log(0.5), -np.inf]))
    >>> np.exp(level_logd(logq, *tails, 0.0)).tolist()
    [0.5, 0.5]
    """
    if np.ndim(log_n) == 0 and log_n == 0:
        return np.array(logq, dtype=float)
    with np.errstate(over="ignore"):
        return -np.exp(log_n + lnl_f) + log1mexp(-np.exp(log_n + lnl_c))


def count_level_logd(c_hi, k, n, log_n):
    """Log-law of the best-of-N winner's level on an empirical law: ``log[(c/n)^N - ((c-k)/n)^N]``.

    Parameters
    ----------
    c_hi : array_like
        Cumulative count ``c`` of the level (samples at or below it), ``1 <= c <= n``.
    k : array_like
        Samples at the level, ``1 <= k <= c`` (broadcast against ``c_hi``).
    n : int or float
        Number of samples.
    log_n : float
        ``log N`` (``N = e^{log_n}`` finite; real ``N`` allowed).

    Returns
    -------
    ndarray
        ``N log(c/n) + log(1 - (1 - k/c)^N)``, same shape as ``c_hi`` and ``k``
        broadcast together.

    Notes
    -----
    The level law of :func:`level_logd` with ``F = c/n``, ``F^- = (c-k)/n``
    and ``q = k/n``, formed on the counts: ``(1 - k/c)^N =
    exp(N log1p(-k/c))``, so ``-expm1`` keeps the mass exact when
    ``(c - k)/c`` is close to one, and the bottom level (``k = c``) is
    ``N log(c/n)`` with no difference formed.  It agrees with :func:`level_logd` up to rounding.

    >>> np.exp(count_level_logd(np.array([1.0, 2.0]), np.array([1.0, 1.0]), 2, np.log(2.0))).tolist()
    [0.25, 0.75]
    """
    with np.errstate(divide="ignore"):
        big_n = np.exp(log_n)
        log_f = np.log(c_hi) - np.log(n)
        # (1 - k/c)^N = exp(N log1p(-k/c)); 0 at the bottom level (k = c)
        ratio = np.where(c_hi > k, big_n * np.log1p(-k / np.maximum(c_hi, 1)), -np.inf)
        return big_n * log_f + np.log(-np.expm1(ratio))
