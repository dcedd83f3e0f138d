"""Argument checks shared by the public functions: one rule, one message per idea.

>>> one_of(kl=None, lam=2.0)
('lam', 2.0)
>>> one_of(kl=1.0, beta=None, lam=2.0)
Traceback (most recent call last):
ValueError: give exactly one of kl=, beta= or lam= (got kl, lam)
>>> float(log_n_from(n=1.0))
0.0
"""

from __future__ import annotations

import numpy as np

__all__ = ["one_of", "real_scalar", "real_array", "prob_array", "float_or_array", "log_n_from"]


def one_of(**kw):
    """``(name, value)`` of the one keyword given (not ``None``); ValueError naming them all otherwise."""
    given = [k for k, v in kw.items() if v is not None]
    if len(given) != 1:
        names = [k + "=" for k in kw]
        listed = ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]
        raise ValueError(f"give exactly one of {listed} (got {', '.join(given) or 'none'})")
    return given[0], kw[given[0]]


def _float_array(x, name):
    """``x`` as a non-empty float array; ValueError naming ``name`` otherwise."""
    try:
        a = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be real numbers, got {x!r}") from exc
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    return a


def real_array(x, name):
    """``x`` as a non-empty float array without NaN; ValueError naming ``name`` otherwise."""
    a = _float_array(x, name)
    if np.isnan(a).any():
        raise ValueError(f"{name} contains NaN" if a.ndim else f"{name} is NaN")
    return a


def prob_array(x, name):
    """``x`` as a non-empty float array of finite, non-negative masses (not renormalised);
    ValueError naming ``name`` otherwise.

    The message says which of NaN (checked first) and inf was found.

    >>> prob_array([0.25, 0.75], "p")
    array([0.25, 0.75])
    >>> prob_array([0.5, -0.5], "p")
    Traceback (most recent call last):
    ValueError: p contains negative values
    >>> prob_array([0.5, np.inf], "p")
    Traceback (most recent call last):
    ValueError: p contains inf
    """
    a = _float_array(x, name)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN" if np.isnan(a).any() else f"{name} contains inf")
    if (a < 0).any():
        raise ValueError(f"{name} contains negative values")
    return a


def float_or_array(x):
    """``float(x)`` for a scalar or a 0-d array, ``x`` unchanged otherwise: the return rule of
    the public functions (a scalar in, a Python float out).

    >>> float_or_array(np.float64(0.5)), float_or_array(np.array(2.0)), float_or_array(np.ones(2))
    (0.5, 2.0, array([1., 1.]))
    """
    return float(x) if np.ndim(x) == 0 else x


def real_scalar(x, name, *, allow_inf=False):
    """``float(x)`` for a real scalar (``±inf`` only with ``allow_inf``); ValueError naming ``name``."""
    try:
        a = np.asarray(x, dtype=float) if x is not None else None
    except (TypeError, ValueError):
        a = None
    if a is None:
        raise ValueError(f"{name} must be a real scalar, got {x!r}")
    if a.ndim != 0:
        raise ValueError(f"{name} must be a scalar, got an array of shape {a.shape}")
    if np.isnan(a):
        raise ValueError(f"{name} is NaN")
    v = float(a)
    if not allow_inf and not np.isfinite(v):
        raise ValueError(f"{name} must be finite")
    return v


def log_n_from(n=None, log_n=None, *, allow_array=False, finite=False):
    """``log N`` from exactly one of ``n >= 1`` and ``log_n >= 0``.

    ``n = inf`` is ``log_n = inf`` (the argmax); with ``finite`` an infinite
    ``N`` is refused (the sequence engines need a finite ``log N``).  With
    ``allow_array`` an array of sizes gives an array.
    """
    name, val = one_of(n=n, log_n=log_n)
    arr = real_array(val, name)
    if not allow_array and arr.ndim != 0:
        raise ValueError(f"{name} must be a scalar, got an array of shape {arr.shape}")
    if name == "n":
        if (arr < 1).any():
            raise ValueError("n must be >= 1")
        if finite and np.isinf(arr).any():
            raise ValueError("n must be finite (pass log_n= for huge N)")
        out = np.log(arr)
    else:
        if (arr < 0).any():
            raise ValueError("log_n must be >= 0")
        if finite and np.isinf(arr).any():
            raise ValueError("log_n must be finite")
        out = arr
    return float_or_array(out)
