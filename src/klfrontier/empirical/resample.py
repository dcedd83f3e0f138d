"""The prompt bootstrap: percentile and BCa intervals of statistics of prompt weights.

A statistic of prompts is a function of the resample *counts*: replication
``b`` draws ``P`` prompts with replacement and gives prompt ``x`` the weight
``c_bx`` (the number of times it was drawn).  Linear statistics are then
matrix products ``c @ values``; the frontier re-solves its shared λ on the
weighted mean curves.

This is :func:`scipy.stats.bootstrap` (``vectorized=True``) on the data
``arange(P)``, computed on counts instead of index arrays: the resamples,
the BCa bias correction and acceleration (Efron & Tibshirani 1993, §14.3 and
Eq. 14.15) and the ``linear`` quantiles are the same, so that with the same
seed the intervals agree with scipy's to rounding
(``tests/test_empirical.py`` checks it).  It exists because ``import
scipy.stats`` costs about a second, which on a million-row file is a third of
all of ``analyze``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr, ndtri

__all__ = ["counts_from_index", "prompt_bootstrap", "BootstrapResult"]

# Elements of a (replications x prompts) weight matrix formed at once.
_BLOCK = 1 << 22


def counts_from_index(idx, P):
    """Resample counts ``(B, P)`` (float) from resampled prompt indices ``(B, P')``.

    >>> counts_from_index(np.array([[0, 0, 2]]), 3)
    array([[2., 0., 1.]])
    """
    B = idx.shape[0]
    flat = (idx + P * np.arange(B)[:, None]).ravel()
    return np.bincount(flat, minlength=B * P).reshape(B, P).astype(float)


class BootstrapResult:
    """``low``, ``high`` (``(S,)``), ``distribution`` (``(S, n_resamples)``) and ``method``."""

    def __init__(self, low, high, distribution, method):
        self.low, self.high, self.distribution, self.method = low, high, distribution, method


def _linear_quantile(sorted_dist, q):
    """Quantile ``q`` (``(S,)``) of each row of ``sorted_dist`` (``(S, B)``), numpy's ``linear`` rule."""
    S, B = sorted_dist.shape
    pos = np.clip(q, 0.0, 1.0) * (B - 1)
    lo = np.floor(pos).astype(np.int64)
    lo = np.clip(lo, 0, B - 1)
    hi = np.minimum(lo + 1, B - 1)
    frac = pos - lo
    rows = np.arange(S)
    a, b = sorted_dist[rows, lo], sorted_dist[rows, hi]
    with np.errstate(invalid="ignore"):
        return np.where(frac == 0, a, a + frac * (b - a))


def prompt_bootstrap(statistic, P, *, n_resamples, confidence, seed, method="BCa", progress=None):
    """Two-sided bootstrap interval of a statistic of prompt weights.

    Parameters
    ----------
    statistic : callable
        ``statistic(c)`` with ``c`` a ``(B, P)`` float array of prompt weights
        returns ``(B, S)``: ``S`` statistics per weighting.  ``c = 1`` is the
        observed data.
    P : int
        Number of prompts.
    n_resamples : int
    confidence : float
    seed : int, numpy.random.Generator or None
        Anything ``numpy.random.default_rng`` accepts; resamples are
        ``rng.integers(0, P, (b, P))`` in batches, as scipy draws them.
    method : {"BCa", "percentile"}
    progress : callable(done, total), optional

    Returns
    -------
    BootstrapResult

    Notes
    -----
    Percentile: the ``α/2`` and ``1 − α/2`` quantiles of the replications.
    BCa: with ``z0 = Φ⁻¹(#(θ* < θ̂)/2B + #(θ* ≤ θ̂)/2B)`` and the jackknife
    acceleration ``a = Σ U³ / (6 (Σ U²)^{3/2})``, ``U_x = (P−1)(θ̄_(·) − θ_(−x))``,
    the quantiles ``Φ(z0 + (z0 + z)/(1 − a(z0 + z)))`` at ``z = ±Φ⁻¹(1 − α/2)``.

    Examples
    --------
    >>> v = np.arange(40.0)[:, None]
    >>> mean = lambda c: (c @ v) / c.sum(axis=1, keepdims=True)
    >>> res = prompt_bootstrap(mean, 40, n_resamples=2000, confidence=0.95,
    ...                        seed=0)
    >>> bool(15.0 < res.low[0] < 19.5 < res.high[0] < 24.0)
    True
    """
    if method not in ("BCa", "percentile"):
        raise ValueError(f"method must be 'BCa' or 'percentile', got {method!r}")
    rng = np.random.default_rng(seed)
    batch = max(1, min(n_resamples, _BLOCK // max(P, 1)))
    reps = []
    done = 0
    while done < n_resamples:
        b = min(batch, n_resamples - done)
        reps.append(np.asarray(statistic(counts_from_index(rng.integers(0, P, (b, P)), P)), float))
        done += b
        if progress is not None:
            progress(done, n_resamples)
    dist = np.concatenate(reps, axis=0).T  # (S, B)
    S, B = dist.shape
    alpha = (1.0 - confidence) / 2.0
    z = float(ndtri(alpha))
    if method == "BCa":
        theta = np.asarray(statistic(np.ones((1, P))), float)[0]
        with np.errstate(invalid="ignore"):
            pct = ((dist < theta[:, None]).sum(axis=1) + (dist <= theta[:, None]).sum(axis=1)) / (2.0 * B)
        z0 = ndtri(pct)
        jack = np.empty((P, S))
        step = max(1, _BLOCK // max(P, 1))
        for s0 in range(0, P, step):
            rows = np.arange(s0, min(P, s0 + step))
            c = np.ones((rows.size, P))
            c[np.arange(rows.size), rows] = 0.0
            jack[rows] = statistic(c)
        U = (P - 1.0) * (jack.mean(axis=0) - jack)
        with np.errstate(invalid="ignore", divide="ignore"):
            a_hat = (np.sum(U**3, axis=0) / P**3) / 6.0 / (np.sum(U**2, axis=0) / P**2) ** 1.5
            n1, n2 = z0 + z, z0 - z
            q_lo = ndtr(z0 + n1 / (1.0 - a_hat * n1))
            q_hi = ndtr(z0 + n2 / (1.0 - a_hat * n2))
    else:
        q_lo, q_hi = np.full(S, alpha), np.full(S, 1.0 - alpha)
    srt = np.sort(dist, axis=1)  # NaN replications sort last; quantiles through them are NaN
    nan_rows = np.isnan(dist).any(axis=1)
    low = np.where(np.isnan(q_lo) | nan_rows, np.nan, _linear_quantile(srt, np.nan_to_num(q_lo)))
    high = np.where(np.isnan(q_hi) | nan_rows, np.nan, _linear_quantile(srt, np.nan_to_num(q_hi)))
    return BootstrapResult(low, high, dist, method)
