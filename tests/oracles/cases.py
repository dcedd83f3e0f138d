"""The mpmath oracle tables (``tables.json``, written by ``make_tables.py``) as test inputs.

Shared by the tests of the tilted policy and of best-of-N: the cases, the
relative-error measure against an mpmath string, and the Reference of a case.
"""

from __future__ import annotations

import json
from pathlib import Path

import mpmath as mp
import numpy as np

from klfrontier import Reference

TABLES = json.loads((Path(__file__).parent / "tables.json").read_text())
CASES = TABLES["cases"]


def rel(got, exact):
    """``|got - exact| / |exact|`` with ``exact`` an mpmath string (absolute at 0)."""
    exact = mp.mpf(exact)
    got = mp.mpf(float(got)) if np.isfinite(got) else mp.mpf(got)
    if exact == 0:
        return float(abs(got))
    return float(abs(got - exact) / abs(exact))


def ref_of(name):
    """The Reference of the oracle case ``name``."""
    c = CASES[name]
    return Reference(c["rewards"], probs=c["probs"])
