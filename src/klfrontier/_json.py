"""The one strict-JSON conversion of the library.

Rule: NaN (an undefined or absent value) becomes ``null``; ``+inf``/``-inf``
become the strings ``"inf"``/``"-inf"``; numpy scalars and arrays become
Python numbers and lists.  The result always passes
``json.dumps(..., allow_nan=False)``.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

__all__ = ["jsonable", "dumps"]


def jsonable(x):
    """Convert numpy values (and NaN / infinities) into strict-JSON-safe Python values.

    Mappings get string keys; tuples, lists and arrays are converted element
    by element; objects with a ``to_dict()`` method through it; paths become
    strings; anything else non-JSON becomes its ``str``.

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
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    if callable(getattr(x, "to_dict", None)):
        return jsonable(x.to_dict())
    return str(x)


def dumps(x, **kwargs) -> str:
    """``json.dumps`` of :func:`jsonable` ``(x)`` that refuses NaN/Infinity tokens.

    >>> dumps({"a": [1.0, float("inf"), float("nan")]})
    '{"a": [1.0, "inf", null]}'
    """
    return json.dumps(jsonable(x), allow_nan=False, **kwargs)
