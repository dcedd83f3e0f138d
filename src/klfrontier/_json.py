"""The one strict-JSON conversion of the library.

Rule: NaN (an undefined or absent value) becomes ``null``; ``+inf``/``-inf``
become the strings ``"inf"``/``"-inf"``; numpy scalars and arrays become
Python numbers and lists.  The result always passes
``json.dumps(..., allow_nan=False)``.
"""

from __future__ import annotations

import json
import math

import numpy as np

__all__ = ["jsonable", "dumps"]


def jsonable(x):
    """Convert numpy values (and NaN / infinities) into strict-JSON-safe Python values.

    >>> jsonable({"a": np.array([1.0, np.nan, np.inf]), "b": np.int64(3), "c": (True,)})
    {'a': [1.0, None, 'inf'], 'b': 3, 'c': [True]}
    """
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return [jsonable(v) for v in x.tolist()]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        v = float(x)
        if math.isnan(v):
            return None
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    if x is None or isinstance(x, str):
        return x
    return str(x)


def dumps(x, **kwargs) -> str:
    """``json.dumps`` of :func:`jsonable` ``(x)`` that refuses NaN/Infinity tokens."""
    return json.dumps(jsonable(x), allow_nan=False, **kwargs)
