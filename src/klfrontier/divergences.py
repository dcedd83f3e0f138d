"""Divergences between probability vectors (SPEC §5): array kernels that broadcast.

All functions take probability arrays ``a``, ``b`` (last axis by default) and
return natural-log quantities.  Inputs must be finite and non-negative; they
are not renormalised.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp, rel_entr, xlogy

__all__ = ["kl", "renyi_divergence", "renyi_cross_entropy", "jeffreys"]


def _check(a, b, names=("a", "b")):
    out = []
    for x, name in zip((a, b), names):
        x = np.asarray(x, dtype=float)
        if x.size == 0:
            raise ValueError(f"{name} is empty")
        if not np.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or inf")
        if (x < 0).any():
            raise ValueError(f"{name} contains negative values")
        out.append(x)
    try:
        np.broadcast_shapes(out[0].shape, out[1].shape)
    except ValueError as exc:
        raise ValueError(f"a and b have incompatible shapes {out[0].shape} and {out[1].shape}") from exc
    return out


def _scalar(x):
    return float(x) if np.ndim(x) == 0 else x


def kl(a, b, axis=-1):
    """Kullback-Leibler divergence ``KL(a||b) = sum a log(a/b)`` (nats).

    ``0 log 0 = 0``; ``+inf`` where ``a > 0 = b``.

    Examples
    --------
    >>> round(kl([0.5, 0.5], [0.9, 0.1]), 12)
    0.510825623766
    """
    a, b = _check(a, b)
    return _scalar(np.sum(rel_entr(a, b), axis=axis))


def jeffreys(a, b, axis=-1):
    """Jeffreys divergence ``KL(a||b) + KL(b||a)``.

    Examples
    --------
    >>> round(jeffreys([0.5, 0.5], [0.9, 0.1]), 12)
    0.878889830934
    """
    a, b = _check(a, b)
    return _scalar(np.sum(rel_entr(a, b) + rel_entr(b, a), axis=axis))


def renyi_divergence(a, b, alpha, axis=-1):
    """Rényi divergence ``D_alpha(a||b) = log(sum a^alpha b^(1-alpha)) / (alpha - 1)``.

    ``alpha = 1`` is the KL divergence (the limit), ``alpha = inf`` is
    ``log max(a/b)``; ``alpha = 0`` is ``-log b(supp a)``.

    Examples
    --------
    >>> round(renyi_divergence([0.5, 0.5], [0.9, 0.1], 2.0), 12)   # log(0.25/0.9 + 0.25/0.1)
    1.021651247532
    """
    a, b = _check(a, b)
    alpha = float(alpha)
    if np.isnan(alpha) or alpha < 0:
        raise ValueError("alpha must be >= 0")
    if alpha == 1.0:
        return kl(a, b, axis=axis)
    with np.errstate(divide="ignore"):
        la, lb = np.log(a), np.log(b)
    if np.isinf(alpha):
        r = np.where(a > 0, la - lb, -np.inf)
        return _scalar(np.max(r, axis=axis))
    if alpha == 0.0:
        return _scalar(-logsumexp(np.where(a > 0, lb, -np.inf), axis=axis))
    with np.errstate(invalid="ignore"):
        terms = np.where(a > 0, alpha * la + (1 - alpha) * lb, -np.inf)
    return _scalar(logsumexp(terms, axis=axis) / (alpha - 1))


def renyi_cross_entropy(a, b, alpha, axis=-1):
    """Rényi cross-entropy ``H_alpha(a; b) = log(sum a b^(alpha-1)) / (1 - alpha)``.

    Thierrin, Alajaji & Linder (2022).  ``alpha = 1`` is the Shannon cross
    entropy ``-sum a log b``.  Used in SPEC §5-6: for ``q_r = e^r / Z_r``,
    ``log E_phi e^{t r} = t log Z_r - t H_{1+t}(phi; q_r)``.

    Examples
    --------
    >>> round(renyi_cross_entropy([0.5, 0.5], [0.9, 0.1], 1.0), 12)   # -0.5 log 0.09
    1.203972804326
    >>> round(renyi_cross_entropy([0.5, 0.5], [0.9, 0.1], 1.0 + 1e-9), 6)
    1.203973
    """
    a, b = _check(a, b)
    alpha = float(alpha)
    if np.isnan(alpha) or np.isinf(alpha):
        raise ValueError("alpha must be finite")
    if alpha == 1.0:
        return _scalar(-np.sum(xlogy(a, b), axis=axis))
    with np.errstate(divide="ignore", invalid="ignore"):
        la, lb = np.log(a), np.log(b)
        terms = np.where(a > 0, la + (alpha - 1) * lb, -np.inf)
    return _scalar(logsumexp(terms, axis=axis) / (1 - alpha))
