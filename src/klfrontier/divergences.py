"""Divergences between probability vectors (theory §5): array kernels that broadcast.

All functions take probability arrays ``a``, ``b`` (last axis by default) and
return natural-log quantities.  Inputs must be finite and non-negative; they
are not renormalised.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp, xlogy

from ._logspace import kl_terms_linear
from ._validate import float_or_array, prob_array, real_scalar

__all__ = ["kl", "renyi_divergence", "renyi_cross_entropy", "jeffreys"]


def _check(a, b, axis, names=("a", "b")):
    """Validate two probability arrays; the summed ``axis`` must not be broadcast.

    Other axes broadcast as usual (a batch of laws against one law), but a law
    of length 1 stretched against one of length K is a mistake, not a batch.
    """
    out = [prob_array(x, name) for x, name in zip((a, b), names)]
    try:
        shape = np.broadcast_shapes(out[0].shape, out[1].shape)
    except ValueError as exc:
        raise ValueError(f"a and b have incompatible shapes {out[0].shape} and {out[1].shape}") from exc
    nd = max(len(shape), 1)
    if not -nd <= axis < nd:
        raise ValueError(f"axis {axis} is out of range for shapes {out[0].shape} and {out[1].shape}")
    lengths = [((1,) * (nd - x.ndim) + x.shape)[axis] for x in out]
    if lengths[0] != lengths[1]:
        raise ValueError(f"a and b have different lengths along axis {axis} ({lengths[0]} and {lengths[1]})")
    return out


def _log_ratio(a, b):
    """``log(a/b)``, as ``log1p((a - b)/b)`` when ``a/b`` is in ``[1/2, 2]`` (exact difference)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        near = (a <= 2 * b) & (b <= 2 * a)
        return np.where(near, np.log1p((a - b) / np.where(near, b, 1.0)), np.log(a) - np.log(b))


def _log_sum_a_exp(a, x, axis):
    """``log sum_{a>0} a e^x`` along ``axis``.

    When every ``|x| <= 1`` the sum is ``1 + s`` with
    ``s = (sum a - 1) + sum a expm1(x)`` and ``log1p(s)`` keeps full relative
    accuracy as ``s -> 0`` (alpha -> 1, or near-equal laws); otherwise
    ``logsumexp``.
    """
    a, x = np.broadcast_arrays(a, x)
    pos = a > 0
    x = np.where(pos, x, 0.0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        lse = logsumexp(np.where(pos, np.log(a) + x, -np.inf), axis=axis)
        small = np.all((np.abs(x) <= 1.0) | np.isinf(x), axis=axis)
        s = np.sum(a * np.expm1(x), axis=axis) + (np.sum(a, axis=axis) - 1.0)
        near = np.log1p(s)
    return np.where(small & ~np.isneginf(lse), near, lse)


def kl(a, b, *, axis=-1):
    """Kullback-Leibler divergence ``KL(a||b) = sum a log(a/b)`` (nats).

    ``0 log 0 = 0``; ``+inf`` where ``a > 0 = b``.

    Examples
    --------
    >>> round(kl([0.5, 0.5], [0.9, 0.1]), 12)
    0.510825623766
    """
    a, b = _check(a, b, axis)
    a, b = np.broadcast_arrays(a, b)
    t = _log_ratio(a, b)
    # sum a log(a/b) = sum b h(t) + sum (a - b): non-negative terms plus exact
    # differences, so near-equal laws keep full relative accuracy (the plain sum
    # cancels to ~1e-16 absolute; its KL of 1e-18 came out with 2e-7 relative error)
    return float_or_array(np.sum(kl_terms_linear(t, a, b), axis=axis) + np.sum(a - b, axis=axis))


def jeffreys(a, b, *, axis=-1):
    """Jeffreys divergence ``KL(a||b) + KL(b||a)``.

    Examples
    --------
    >>> round(jeffreys([0.5, 0.5], [0.9, 0.1]), 12)
    0.878889830934
    """
    a, b = _check(a, b, axis)
    a, b = np.broadcast_arrays(a, b)
    # sum (a - b) log(a/b): every term >= 0, exact differences, accurate log-ratios
    with np.errstate(invalid="ignore"):
        terms = (a - b) * _log_ratio(a, b)
    return float_or_array(np.sum(np.where(a == b, 0.0, terms), axis=axis))


def renyi_divergence(a, b, *, alpha, axis=-1):
    """Rényi divergence ``D_alpha(a||b) = log(sum a^alpha b^(1-alpha)) / (alpha - 1)``.

    ``alpha = 1`` is the KL divergence (the limit), ``alpha = inf`` is
    ``log max(a/b)``; ``alpha = 0`` is ``-log b(supp a)``.

    Examples
    --------
    >>> round(renyi_divergence([0.5, 0.5], [0.9, 0.1], alpha=2.0), 12)   # log(0.25/0.9 + 0.25/0.1)
    1.021651247532
    """
    a, b = _check(a, b, axis)
    alpha = real_scalar(alpha, "alpha", allow_inf=True)
    if alpha < 0:
        raise ValueError("alpha must be >= 0")
    if alpha == 1.0:
        return kl(a, b, axis=axis)
    with np.errstate(divide="ignore"):
        la, lb = np.log(a), np.log(b)
    if np.isinf(alpha):
        r = np.where(a > 0, la - lb, -np.inf)
        return float_or_array(np.max(r, axis=axis))
    if alpha == 0.0:
        return float_or_array(-logsumexp(np.where(a > 0, lb, -np.inf), axis=axis))
    # sum a^alpha b^(1-alpha) = sum a e^{(alpha-1) log(a/b)}
    x = (alpha - 1) * _log_ratio(a, b)
    return float_or_array(_log_sum_a_exp(a, x, axis) / (alpha - 1))


def renyi_cross_entropy(a, b, *, alpha, axis=-1):
    """Rényi cross-entropy ``H_alpha(a; b) = log(sum a b^(alpha-1)) / (1 - alpha)``.

    Thierrin, Alajaji & Linder (2022).  ``alpha = 1`` is the Shannon cross
    entropy ``-sum a log b``.  Used in theory §5-6: for ``q_r = e^r / Z_r``,
    ``log E_phi e^{t r} = t log Z_r - t H_{1+t}(phi; q_r)``.

    Examples
    --------
    >>> round(renyi_cross_entropy([0.5, 0.5], [0.9, 0.1], alpha=1.0), 12)   # -0.5 log 0.09
    1.203972804326
    >>> round(renyi_cross_entropy([0.5, 0.5], [0.9, 0.1], alpha=1.0 + 1e-9), 6)
    1.203973
    """
    a, b = _check(a, b, axis)
    alpha = float(alpha)
    if np.isnan(alpha) or np.isinf(alpha):
        raise ValueError("alpha must be finite")
    if alpha == 1.0:
        return float_or_array(-np.sum(xlogy(a, b), axis=axis))
    with np.errstate(divide="ignore", invalid="ignore"):
        x = (alpha - 1) * np.log(b)
    return float_or_array(_log_sum_a_exp(a, x, axis) / (1 - alpha))
