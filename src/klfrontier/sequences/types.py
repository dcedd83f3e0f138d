"""Exact law of ``S_m`` by enumerating types (small K, any rewards; theory §7).

A *type* is the vector of counts ``(n_1, ..., n_K)``, ``Σ n_j = m``, of the
reward levels in a sequence.  ``S_m = Σ_j n_j v_j`` depends on the sequence
only through its type, whose probability is multinomial:

    log P(type) = log m! - Σ_j log n_j! + Σ_j n_j log q_j.

There are ``C(m + K - 1, K - 1)`` types; equal sums (ties, e.g. partial
lattices) are grouped.  For best-of-N at large ``m`` only the types whose sum
lies in a window around the BoN location, and whose counts are typical under
the tilted law ``φ_λ`` there, matter; :func:`types_window` enumerates exactly
those and bounds what it leaves out.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import numpy as np
from scipy.special import gammaln

from .._engine import log_tilt
from .._logspace import kl_terms
from ..reference import Reference

__all__ = ["types_count", "compositions", "types_law", "types_window", "TypesWindow"]

#: Enumerations larger than this are refused (memory: ~ K * 8 bytes per type).
MAX_TYPES = 4_000_000


def types_count(m: int, K: int) -> int:
    """Number of types ``C(m + K - 1, K - 1)``.

    >>> types_count(200, 3)
    20301
    """
    return comb(int(m) + int(K) - 1, int(K) - 1)


def compositions(m: int, K: int) -> np.ndarray:
    """All ``(n_1, ..., n_K)`` with ``n_j >= 0`` and ``Σ n_j = m`` (rows, lexicographic).

    >>> compositions(2, 3).tolist()
    [[0, 0, 2], [0, 1, 1], [0, 2, 0], [1, 0, 1], [1, 1, 0], [2, 0, 0]]
    """
    rows = np.zeros((1, 0), dtype=np.int64)
    rem = np.array([m], dtype=np.int64)
    for _ in range(K - 1):
        reps = rem + 1
        total = int(reps.sum())
        starts = np.repeat(np.cumsum(reps) - reps, reps)
        val = np.arange(total, dtype=np.int64) - starts
        rows = np.concatenate([np.repeat(rows, reps, axis=0), val[:, None]], axis=1)
        rem = np.repeat(rem, reps) - val
    return np.concatenate([rows, rem[:, None]], axis=1)


def _log_multinomial(n, m, logq):
    return gammaln(m + 1.0) - gammaln(n + 1.0).sum(axis=1) + n @ logq


def _group(su, logp, tol):
    """Sort by the sum and merge sums closer than ``tol`` (log-space segment sums)."""
    order = np.argsort(su, kind="stable")
    su = su[order]
    logp = logp[order]
    starts = np.flatnonzero(np.concatenate([[True], np.diff(su) > tol]))
    seg_max = np.maximum.reduceat(logp, starts)
    seg_id = np.repeat(np.arange(starts.size), np.diff(np.append(starts, su.size)))
    tot = np.add.reduceat(np.exp(logp - seg_max[seg_id]), starts)
    return su[starts], seg_max + np.log(tot)


def _tol(m, K):
    # rounding of Σ n_j u_j is below K m ulp; distinct sums of the cases this
    # engine is meant for are separated by far more.
    return 16.0 * K * m * np.finfo(float).eps


def types_law(ref: Reference, m: int, *, max_types=MAX_TYPES):
    """Exact law of ``S_m`` by full type enumeration.

    Parameters
    ----------
    ref : Reference
    m : int
    max_types : int
        Refuse (``ValueError``) enumerations larger than this.

    Returns
    -------
    su, logpmf : ndarrays
        Distinct sums in standardised units (``Σ u``, ascending) and their
        log-probabilities; ``S_m = m r_max + (r_max - r_min) Σ u``.

    Notes
    -----
    ``log P(n) = gammaln(m+1) - Σ gammaln(n_j+1) + Σ n_j log q_j``; sums that
    agree to ``16 K m`` ulp are one value.

    Examples
    --------
    >>> ref = Reference([0.0, 1.0, 2 ** 0.5], probs=[0.5, 0.3, 0.2])
    >>> su, lp = types_law(ref, 2)
    >>> su.size, round(float(np.exp(lp).sum()), 12)
    (6, 1.0)
    """
    K = ref.n_levels
    count = types_count(m, K)
    if count > max_types:
        raise ValueError(f"type enumeration needs {count} types (> max_types={max_types})")
    n = compositions(m, K)
    logp = _log_multinomial(n.astype(float), m, ref.level_logq)
    su = n.astype(float) @ ref.level_u
    return _group(su, logp, _tol(m, K))


@dataclass
class TypesWindow:
    """Exact law of ``S_m`` restricted to sums in ``[lo, hi]`` (standardised units).

    ``log_missing`` bounds (log) the total untilted probability of types with
    sums in the window that were not enumerated (their counts are atypical
    under ``φ_λ``); ``count`` is the number of enumerated types.
    """

    su: np.ndarray
    logpmf: np.ndarray
    lo: float
    hi: float
    log_missing: float
    count: int


def _binary_kl(x, p):
    """``KL(Bern(x) || Bern(p))`` (arrays), non-negative form."""
    x = np.asarray(x, dtype=float)
    with np.errstate(divide="ignore"):
        la = np.stack([np.log(x), np.log1p(-x)])
        lb = np.stack([np.full_like(x, np.log(p)), np.full_like(x, np.log1p(-p))])
    return kl_terms(la, lb).sum(axis=0)


def _count_box(m, p, E):
    """Counts ``[lo, hi]`` of ``Bin(m, p)`` outside which each tail is ``<= e^{-E}`` (Chernoff)."""
    mean = m * p
    sd = np.sqrt(m * p * (1 - p))

    def edge(direction):
        a, b = mean, (m if direction > 0 else 0.0)
        if m * _binary_kl(b / m, p) < E:
            return b
        # bisection on x with m KL(x/m || p) = E
        for _ in range(200):
            c = 0.5 * (a + b)
            if m * _binary_kl(c / m, p) < E:
                a = c
            else:
                b = c
            if abs(b - a) < 0.5:
                break
        return b

    hi = int(np.ceil(edge(+1)))
    lo = int(np.floor(edge(-1)))
    return max(0, lo), min(m, hi), sd


def types_window(
    ref: Reference, m: int, lam_u: float, lo: float, hi: float, *, E=70.0, max_types=20_000_000
) -> TypesWindow:
    """Types with sum ``Σu`` in ``[lo, hi]`` that are typical under ``φ_λ``.

    Parameters
    ----------
    ref : Reference
    m : int
    lam_u : float
        Tilt (standardised units) whose law puts the window in its bulk.
    lo, hi : float
        Window on the standardised sum ``Σ u``.
    E : float
        Each count ``n_j`` (``j`` not the slack level) is restricted to the
        range outside which ``Bin(m, φ_j)`` has at most ``e^{-E}`` per tail.

    Notes
    -----
    The level with the largest ``φ_λ`` mass is the slack (``n = m - Σ
    others``); one more level is solved from the window; the rest are
    enumerated over their boxes.  Every enumerated type has exactly its
    multinomial probability; the untilted mass of the omitted types with sums
    in the window is at most ``2(K-1) e^{-E} e^{-λ lo + m Λ(λ)}``
    (``log_missing``), because ``P(type) = P_λ(type) e^{-λ Σu + m Λ(λ)}``.
    """
    u, logq = ref.level_u, ref.level_logq
    K = u.size
    lp, kap = log_tilt(logq, u, [lam_u])
    logphi, cgf = lp[0], float(kap[0])
    phi = np.exp(logphi)
    j0 = int(np.argmax(phi))
    others = [j for j in range(K) if j != j0]
    boxes = {j: _count_box(m, min(max(phi[j], 1e-300), 1 - 1e-16), E) for j in others}
    du = u - u[j0]
    j1 = max(others, key=lambda j: (boxes[j][1] - boxes[j][0] + 1) * abs(du[j]))
    free = [j for j in others if j != j1]
    # enumerate free coordinates progressively, pruning infeasible partial sums
    cols = np.zeros((1, 0), dtype=np.int64)
    used = np.zeros(1, dtype=np.int64)
    part = np.zeros(1)
    for j in free:
        a, b, _ = boxes[j]
        width = b - a + 1
        cols = np.repeat(cols, width, axis=0)
        vals = np.tile(np.arange(a, b + 1, dtype=np.int64), used.size)
        used = np.repeat(used, width) + vals
        part = np.repeat(part, width) + vals * du[j]
        cols = np.concatenate([cols, vals[:, None]], axis=1)
        ok = used <= m
        # the remaining levels can move Σu by at most (m - used) * max|du|
        span = (m - used) * np.abs(du).max()
        base = m * u[j0] + part
        ok &= (base - span <= hi) & (base + span >= lo)
        cols, used, part = cols[ok], used[ok], part[ok]
        if cols.shape[0] > max_types:
            raise ValueError("windowed type enumeration too large")
    base = m * u[j0] + part
    a1, b1, _ = boxes[j1]
    rem = m - used
    d1 = du[j1]
    with np.errstate(divide="ignore", invalid="ignore"):
        lo_n = (lo - base) / d1
        hi_n = (hi - base) / d1
    if d1 < 0:
        lo_n, hi_n = hi_n, lo_n
    slack = 1e-9 * (1.0 + np.abs(lo_n))
    n_lo = np.maximum(np.maximum(np.ceil(lo_n - slack), a1), 0).astype(np.int64)
    n_hi = np.minimum(np.minimum(np.floor(hi_n + slack), b1), rem).astype(np.int64)
    cnt = np.maximum(n_hi - n_lo + 1, 0)
    total = int(cnt.sum())
    if total > max_types:
        raise ValueError("windowed type enumeration too large")
    idx = np.repeat(np.arange(cnt.size), cnt)
    starts = np.repeat(np.cumsum(cnt) - cnt, cnt)
    n1 = n_lo[idx] + (np.arange(total, dtype=np.int64) - starts)
    n = np.zeros((total, K))
    for c, j in enumerate(free):
        n[:, j] = cols[idx, c]
    n[:, j1] = n1
    n[:, j0] = rem[idx] - n1
    su = base[idx] + n1 * d1
    keep = (su >= lo) & (su <= hi)
    n, su = n[keep], su[keep]
    logp = _log_multinomial(n, m, logq)
    su, logp = _group(su, logp, _tol(m, K)) if su.size else (su, logp)
    log_missing = np.log(2 * (K - 1)) - E - lam_u * lo + m * cgf
    return TypesWindow(su=su, logpmf=logp, lo=lo, hi=hi, log_missing=float(log_missing), count=int(total))
