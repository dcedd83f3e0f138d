"""Single-prompt estimators on one array of samples (theory §9)."""

from __future__ import annotations

import numpy as np

from .._engine import cap_shift
from .._validate import float_or_array
from . import kernels as _k

__all__ = ["unbiased_bon_reward", "unbiased_bon_gold", "tilted_gain_cov", "kl_trust_limit"]


def _check_rewards(rewards, name="rewards"):
    r = np.asarray(rewards, dtype=float)
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array")
    if not np.isfinite(r).all():
        raise ValueError(f"{name} contain NaN or inf")
    return r


def _check_int_n(n, n_max):
    arr = np.asarray(n, dtype=float)
    if arr.size == 0 or np.isnan(arr).any() or (arr != np.round(arr)).any():
        raise ValueError("n must be integers")
    if (arr < 1).any() or (arr > n_max).any():
        raise ValueError(f"n must lie in [1, number of samples = {n_max}]")
    return arr.astype(np.int64)


def _unbiased(sorted_values, ns):
    top = sorted_values[-1]
    out = np.empty(ns.shape)
    for pos, big_n in np.ndenumerate(ns):
        w = _k.unbiased_weights(sorted_values.size, int(big_n))
        out[pos] = top + w @ (sorted_values - top)
    return float_or_array(out)


def unbiased_bon_reward(rewards, n):
    """Unbiased estimate of the best-of-N reward from ``n_s`` samples drawn without replacement.

    Parameters
    ----------
    rewards : (n_s,) array_like
        Samples of the reward under the reference.
    n : int or array_like of int
        ``N`` with ``1 <= N <= n_s``.

    Returns
    -------
    float or ndarray

    Notes
    -----
    With the samples sorted ascending,

    .. math:: U_N = \\sum_{i=N}^{n_s} r_{(i)} \\binom{i-1}{N-1} / \\binom{n_s}{N},

    the average of the maximum over all ``C(n_s, N)`` subsets of size ``N``;
    its expectation over i.i.d. samples is ``E[max of N]`` exactly.

    Examples
    --------
    >>> unbiased_bon_reward([3.0, 1.0, 2.0], [1, 2, 3]).round(12).tolist()
    [2.0, 2.666666666667, 3.0]
    """
    r = np.sort(_check_rewards(rewards))
    return _unbiased(r, _check_int_n(n, r.size))


def unbiased_bon_gold(proxy, gold, n):
    """Unbiased gold reward of best-of-N chosen by the proxy (ties in the proxy broken uniformly).

    Parameters
    ----------
    proxy, gold : (n_s,) array_like
        Proxy reward (used to select) and gold reward of each sample.
    n : int or array_like of int

    Notes
    -----
    Sort by the proxy, replace the gold values within each tie group of the
    proxy by the group mean ``g_bar``, then
    ``sum_i g_bar_(i) C(i-1, N-1)/C(n_s, N)`` (theory §9).  With a uniform
    tie-break the winner of a subset is uniform over its tied top samples,
    and averaging over all subsets gives each tie group's mean.

    Examples
    --------
    >>> float(unbiased_bon_gold([0.0, 1.0, 1.0], [5.0, 1.0, 3.0], 3))   # the tied top: (1+3)/2
    2.0
    """
    r = _check_rewards(proxy, "proxy")
    g = _check_rewards(gold, "gold")
    if g.shape != r.shape:
        raise ValueError("gold must have the length of proxy")
    order = np.argsort(r, kind="stable")
    rs, gs = r[order][None, :], g[order][None, :]
    a, b = _k.tie_bounds(rs)
    return _unbiased(_k.tie_mean(gs, a, b)[0], _check_int_n(n, r.size))


def tilted_gain_cov(rewards, lam):
    """Tilted reward gain in covariance form, from base samples.

    Notes
    -----
    .. math:: E_{\\phi_\\lambda} r - E_p r
              = \\frac{\\mathrm{Cov}_p(r, e^{\\lambda r})}{E_p e^{\\lambda r}}
              = \\frac{\\sum_i w_i (r_i - \\bar r)}{\\sum_i w_i}

    with ``w`` formed relative to the sample mean (``1 + expm1``) and the sum
    taken as ``sum_i (w_i - w_bar)(r_i - r_bar)``, so the rounding of ``r_bar``
    cancels and a gain far below the reward's magnitude keeps its digits.

    Examples
    --------
    >>> round(tilted_gain_cov([0.0, 1.0], 1.0), 12)   # e/(1+e) - 1/2
    0.23105857863
    """
    r = _check_rewards(rewards)
    lams = np.asarray(lam, dtype=float)
    if np.isnan(lams).any() or (lams < 0).any() or np.isinf(lams).any():
        raise ValueError("lam must be finite and >= 0")
    d = r - r.mean()
    gain = np.zeros(lams.shape)
    for pos, lam_v in np.ndenumerate(lams):
        if lam_v > 0:
            c = float(cap_shift(float(d.max()), lam_v))
            e = np.expm1(lam_v * (d - c))
            # sum (w - mean w) d: the rounding of the sample mean (a common offset of d) cancels
            gain[pos] = float((e - e.mean()) @ d / (d.size + e.sum()))
    return float_or_array(gain)


def kl_trust_limit(n, margin=1.0):
    """Largest plug-in KL (nats) trusted with ``n`` samples: ``log n - margin``.

    >>> round(kl_trust_limit(1000), 6)
    5.907755
    """
    return float(np.log(n) - margin)
