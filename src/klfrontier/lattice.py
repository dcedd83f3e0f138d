"""The lattice ``a + hℤ`` carrying a set of reward values: detection and checks.

One kernel for every engine that treats rewards on a lattice (the exact
FFT law of ``S_m`` in :mod:`klfrontier.sequences`, the lattice forms of the
second-order terms in :mod:`klfrontier.equivalence`, the ``lattice`` of a shipped
:class:`~klfrontier.instances.Instance`).

* :func:`find_lattice` detects the maximal-span lattice from the values;
* :func:`check_span` checks a span ``h`` that a caller asserts and returns
  the maximal span it implies (``h`` times the gcd of the indices);
* :func:`resolve_lattice` reads the ``lattice=`` argument shared by the
  public API (``None`` detect, ``False`` none, a number a given span);
* :func:`detect_lattice` does the same for a reference and returns the one
  lattice type, :class:`Lattice` (the levels' indices and log-masses, with
  the tilted statistics the FFT engine needs).

Tolerance policy (decided here, once)
-------------------------------------
A value ``v_j`` lies on the lattice when ``|v_j - a - k_j h| <= rtol × E``,
``E`` the extent of the values (``r_max - r_min``; with a fixed ``origin``
the extent of the values and the origin), with ``rtol = RTOL = 1e-12`` for
detection and for a given span alike.  Detection searches at most
``MAX_STEPS = 2**16`` steps across ``[r_min, r_max]``.  Why these numbers:

* decimal data written as doubles (VADER's ``k/10``) sit within a few ulp,
  ``~1e-16 E``, of their grid: ``1e-12`` accepts them with four orders of
  margin, and accumulated rounding of the same order (``0.1 + 0.2``) too;
* any real ``x`` lies within ``1/(nN)`` of some ``k/n`` with ``n <= N``
  (Dirichlet), so a search up to ``N`` steps at tolerance ``rtol`` finds a
  spurious lattice for an irrational level with probability about
  ``rtol N²``: ``1e-12 × 2^32 ≈ 4e-3`` here, whereas ``1e-9`` with ``10^6``
  steps (``rtol N² = 10^3``) would call almost every set of levels a lattice;
* the sequence engine snaps the levels to ``a + k h`` and computes the law
  of ``S_m`` exactly on the snapped values, so the tolerance is a silent
  perturbation of the rewards: ``1e-12`` of the range keeps it far below
  the engine's ``1e-8`` accuracy target;
* :func:`klfrontier.equivalence.equivalence` receives the span that
  :mod:`klfrontier.sequences` detected and re-checks it with the same
  tolerance, so the two always agree.

A given span is checked only where the tolerance is below a thousandth of a
step (at most ``10^{-3}/rtol`` steps), where "on the grid" still means
something.  Two distinct values falling on one grid point are not on the
lattice (they would be merged).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import numpy as np

from ._engine import solve_mean, tilted_mean_var
from .errors import NotOnLatticeError

__all__ = [
    "RTOL",
    "MAX_STEPS",
    "Lattice",
    "LatticeFit",
    "NotOnLatticeError",
    "detect_lattice",
    "find_lattice",
    "check_span",
    "resolve_lattice",
]

#: Tolerance on ``|v - a - k h|`` relative to the values' extent (see module notes).
RTOL = 1e-12
#: Most lattice steps across ``[r_min, r_max]`` that detection considers.
MAX_STEPS = 2**16
# Candidate spans tested per vectorised block in find_lattice (rows x levels).
_BLOCK = 2**20
# A given span must be wider than this many tolerances.
_MIN_STEP_IN_TOLS = 1e3


class LatticeFit(NamedTuple):
    """A lattice ``a + hℤ`` carrying values: ``values[i] ≈ a + h * ks[i]``.

    Attributes
    ----------
    a : float
        The smallest value (index 0).
    h : float
        The maximal span: the indices of the distinct values have gcd 1.
    ks : int64 ndarray
        Index of each input value (aligned with the input, ``min = 0``).
    """

    a: float
    h: float
    ks: np.ndarray


def _levels(values):
    """Sorted distinct values and the index of each input value among them."""
    v = np.asarray(values, dtype=float).ravel()
    if v.size == 0:
        raise ValueError("values is empty")
    if not np.isfinite(v).all():
        raise ValueError("values must be finite")
    if v.size == 1 or bool(np.all(v[1:] > v[:-1])):  # already levels (a Reference's)
        return v, None
    lev, inv = np.unique(v, return_inverse=True)
    return lev, inv.ravel()


def _check_rtol(rtol):
    r = float(rtol)
    if not (np.isfinite(r) and 0 < r <= 1e-3):
        raise ValueError(f"rtol must lie in (0, 1e-3], got {rtol!r}")
    return r


def _fit(lev, inv, k):
    """Indices in units of the maximal span (aligned with the input) and the gcd ``g``.

    ``k`` are the integer grid coordinates of the sorted levels, any origin.
    """
    kk = (k - k[0]).astype(np.int64)
    g = max(int(np.gcd.reduce(kk)), 1)  # 0 for a single value
    ks = kk // g
    return ks if inv is None else ks[inv], g


def find_lattice(values, *, rtol=RTOL, max_steps=MAX_STEPS):
    """Detect the maximal-span lattice ``a + hℤ`` carrying ``values``.

    Parameters
    ----------
    values : array_like
        Finite reals (reward levels; repeats allowed).
    rtol : float, default ``RTOL`` (1e-12)
        Largest ``|v - a - k h|`` accepted, relative to ``max - min``.
    max_steps : int, default ``MAX_STEPS`` (65536)
        Largest number of steps ``L = (max - min)/h`` considered.

    Returns
    -------
    LatticeFit or None
        ``a = min(values)``, ``h = (max - min) / L`` with ``L`` the smallest
        step count that fits (the maximal span), and the indices.  ``None``
        for a single distinct value (no span is defined), when no lattice
        with at most ``max_steps`` steps fits, or when the span overflows.

    Notes
    -----
    In units of the range, ``d_j = (v_j - a)/(max - min)`` must sit within
    ``rtol`` of ``k_j / L``.  The smallest gap ``g`` between levels is a
    whole number ``k`` of steps, so the candidates are ``L = rint(k/g)``,
    ``k = 1, 2, ...`` (``g L <= max_steps``), tested in vectorised blocks;
    the first that fits is the maximal span.  The work is
    ``O(max_steps)`` whatever the number of levels.  The tolerance policy
    is in the module notes.

    Examples
    --------
    >>> fit = find_lattice([0.0, 0.3, 1.0])
    >>> fit.a, round(fit.h, 12), fit.ks.tolist()
    (0.0, 0.1, [0, 3, 10])
    >>> find_lattice([0.0, 1.0, 2 ** 0.5]) is None       # √2: no lattice
    True
    >>> find_lattice([-0.7, 0.5, 2.3]).ks.tolist()       # offset a = -0.7, span 0.6
    [0, 2, 5]
    """
    rtol = _check_rtol(rtol)
    max_steps = int(max_steps)
    if max_steps < 1:
        raise ValueError(f"max_steps must be a positive integer, got {max_steps}")
    lev, inv = _levels(values)
    if lev.size == 1:
        return None
    a = float(lev[0])
    half = lev[-1] / 2 - a / 2  # half range, free of overflow
    d = (lev / 2 - a / 2) / half  # offsets in range units, d[-1] = 1
    gmin = float(np.diff(d).min())
    kmax = int(np.floor(max_steps * gmin + 1e-9))
    block = max(1, _BLOCK // d.size)
    for k0 in range(1, kmax + 1, block):
        n = np.rint(np.arange(k0, min(kmax, k0 + block - 1) + 1) / gmin)  # steps across
        idx = np.rint(d[None, :] * n[:, None])
        ok = (np.abs(d[None, :] - idx / n[:, None]) <= rtol).all(axis=1) & (n <= max_steps)
        if ok.any():
            ks, _ = _fit(lev, inv, idx[int(np.argmax(ok))])
            with np.errstate(over="ignore"):
                h = float(half / int(ks.max()) * 2.0)
            # a span beyond the largest double (values near ±1.8e308) is no use
            return LatticeFit(a=a, h=h, ks=ks) if np.isfinite(h) else None
    return None


def _positive_span(h, name):
    try:
        x = np.asarray(h, dtype=float)
    except (TypeError, ValueError):
        x = np.asarray(np.nan)
    if x.ndim != 0 or isinstance(h, (bool, np.bool_)) or not (np.isfinite(x) and x > 0):
        raise ValueError(f"{name} must be positive and finite (a lattice span), got {h!r}")
    return float(x)


def check_span(values, h, *, origin=None, rtol=RTOL, name="h"):
    """Check that ``values`` lie on ``origin + hℤ`` and return the lattice it implies.

    Parameters
    ----------
    values : array_like
        Finite reals (repeats allowed).
    h : float
        The span asserted by the caller.
    origin : float, optional
        A point of the grid (``0.0``: the grid ``hℤ``); default
        ``min(values)``.
    rtol : float, default ``RTOL`` (1e-12)
        Largest ``|v - origin - k h|`` accepted, relative to the extent of
        the values and the origin.
    name : str, default "h"
        The argument's name in error messages.

    Returns
    -------
    LatticeFit
        ``a = min(values)`` and the maximal span ``h g``, ``g`` the gcd of
        the differences of the grid indices (``h`` itself for a single
        value), with the indices in units of ``h g``.

    Raises
    ------
    ValueError
        ``h`` is not a positive finite number (message names ``name``).
    NotOnLatticeError
        (a ``ValueError``) a value is off the grid, two distinct values fall
        on one grid point, or the grid is too fine for the tolerance
        (more than ``10^{-3}/rtol`` steps).

    Examples
    --------
    >>> fit = check_span([0.0, 0.2, 0.6], 0.1)         # finer than needed
    >>> fit.h, fit.ks.tolist()
    (0.2, [0, 1, 3])
    >>> check_span([0.1, 0.3], 0.1, origin=0.0).h       # on 0.1ℤ; maximal span 0.2
    0.2
    >>> try:
    ...     check_span([0.0, 0.25], 0.1)
    ... except NotOnLatticeError as e:
    ...     print(str(e).split(" (")[1])
    a value is 0.5 steps off the grid)
    """
    h = _positive_span(h, name)
    rtol = _check_rtol(rtol)
    lev, inv = _levels(values)
    o = float(lev[0]) if origin is None else float(origin)
    if not np.isfinite(o):
        raise ValueError(f"origin must be finite, got {origin!r}")
    where = "min(values)" if origin is None else repr(o)
    half_ext = max(float(lev[-1]), o) / 2 - min(float(lev[0]), o) / 2
    steps = half_ext / h * 2.0  # grid steps across the extent
    if steps * rtol > 1.0 / _MIN_STEP_IN_TOLS:
        raise NotOnLatticeError(
            f"{name}={h!r}: {steps:.3g} steps of {h!r} span the values; "
            f"a tolerance of {rtol:g} of the range cannot resolve them"
        )
    x = (lev / 2 - o / 2) / h * 2.0  # grid coordinates, free of overflow
    k = np.rint(x)
    off = float(np.abs(x - k).max())
    if off > rtol * steps:
        raise NotOnLatticeError(
            f"{name}={h!r}: the values do not lie on {where} + {h!r} Z "
            f"(a value is {off:.3g} steps off the grid)"
        )
    same = np.flatnonzero(np.diff(k) == 0)
    if same.size:
        i = int(same[0])
        raise NotOnLatticeError(
            f"{name}={h!r}: the distinct values {lev[i]!r} and {lev[i + 1]!r} fall on the same grid point"
        )
    ks, g = _fit(lev, inv, k)
    return LatticeFit(a=float(lev[0]), h=h * g, ks=ks)


def resolve_lattice(values, lattice=None, *, rtol=RTOL, max_steps=MAX_STEPS, name="lattice"):
    """Read a ``lattice=`` argument: ``None`` detect, ``False`` none, a number a given span.

    Parameters
    ----------
    values : array_like
        Reward levels.
    lattice : None, False or float
        ``None``: :func:`find_lattice`; ``False``: treat as non-lattice; a
        positive span ``h``: :func:`check_span` (the maximal span is
        returned).
    rtol, max_steps
        As in :func:`find_lattice` (``max_steps`` bounds detection only).
    name : str, default "lattice"
        The argument's name in error messages.

    Returns
    -------
    LatticeFit or None
        ``None`` for ``False``, for a single distinct value (a constant
        reward has no lattice to exploit) and when detection finds none.

    Raises
    ------
    ValueError
        ``lattice`` is ``True``, not a number, not positive, or a span that
        does not carry the values (messages name ``name`` and the span).

    Examples
    --------
    >>> resolve_lattice([0.0, 1.0, 2.0], 0.5).h
    1.0
    >>> resolve_lattice([0.0, 1.0, 2.0], False) is None
    True
    """
    if lattice is None:
        return find_lattice(values, rtol=rtol, max_steps=max_steps)
    if lattice is False:
        return None
    if isinstance(lattice, (bool, np.bool_)):
        raise ValueError(f"{name} must be None, False or a positive span (got {lattice!r})")
    try:
        arr = np.asarray(lattice, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be None, False or a positive span, got {lattice!r}") from None
    if arr.ndim != 0 or not (np.isfinite(arr) and arr > 0):
        raise ValueError(f"{name} must be a positive span, got {lattice!r}")
    h = float(arr)
    if _levels(values)[0].size == 1:
        return None
    return check_span(values, h, rtol=rtol, name=name)


@dataclass(frozen=True, eq=False)
class Lattice:
    """A reference's reward levels on a lattice: ``level_values[j] = a + h * ks[j]``.

    The one lattice type of the library: :func:`detect_lattice` returns it,
    the exact FFT engine of :mod:`klfrontier.sequences` runs on it and the
    second-order terms of :mod:`klfrontier.equivalence` read its ``(a, h)``.

    Attributes
    ----------
    a : float
        ``r_min`` (index 0).
    h : float
        The maximal span (the level indices have gcd 1).
    ks : (L,) int64 ndarray
        Lattice index of each reward level, ascending, ``ks[0] = 0``.
    logq : (L,) ndarray
        Log masses of the levels.
    """

    a: float
    h: float
    ks: np.ndarray
    logq: np.ndarray

    @property
    def span(self) -> int:
        """``L``: the top level's index."""
        return int(self.ks[-1])

    def sum_values(self, length, t):
        """Reward values ``m a + h t`` of lattice sums ``t`` of ``m = length`` tokens."""
        return length * self.a + self.h * np.asarray(t, dtype=float)

    # ------------------------------------------------------ tilted statistics
    def stats(self, lam):
        """``κ(λ) = log Σ q e^{λk}``, tilted mean and variance of ``k``, for an array of λ.

        The tilt engine's batch kernel (:func:`klfrontier._engine.tilted_mean_var`).
        """
        return tilted_mean_var(self.logq, self._ks_float, lam)

    @cached_property
    def _ks_float(self):
        return self.ks.astype(float)

    def solve_lam(self, x, tol=1e-15, max_iter=300):
        """λ with tilted mean ``κ'(λ) = x`` for ``0 < x < L`` (array), safeguarded Newton."""
        x = np.atleast_1d(np.asarray(x, dtype=float))
        L = float(self.span)
        if ((x <= 0) | (x >= L)).any():
            raise ValueError("tilted mean must lie strictly inside (0, L)")
        return solve_mean(
            lambda th, _rows: self.stats(th)[1:],
            x,
            tol=tol,
            max_iter=max_iter,
            strict=False,
            name="lattice tilt",
        )

    def log_tail(self, length, t, *, upper=True, lam=0.0):
        """Chernoff bound on ``log P_λ(T_m >= t)`` (``upper``) or ``log P_λ(T_m <= t)``, ``m = length``.

        Under the λ-tilted per-token law:
        ``log P_λ(T >= t) <= m [κ(λ') - κ(λ)] - (λ' - λ) t`` with
        ``κ'(λ') = t/m`` (``λ' >= λ``), and the exact values at the ends of
        the support.  ``lam=0`` bounds the reference law itself.
        """
        m = length
        L = self.span
        mL = m * L
        kap0, mu0, _ = (float(v[0]) for v in self.stats([lam]))
        if upper:
            if t > mL:
                return -np.inf
            if t <= 0 or t <= m * mu0:
                return 0.0
            if t == mL:
                return float(min(0.0, m * (self.logq[-1] + lam * L - kap0)))
        else:
            if t < 0:
                return -np.inf
            if t >= mL or t >= m * mu0:
                return 0.0
            if t == 0:
                return float(min(0.0, m * (self.logq[0] - kap0)))
        th = float(self.solve_lam([t / m])[0])
        kap, _, _ = self.stats([th])
        return float(min(0.0, m * (kap[0] - kap0) - (th - lam) * t))


def detect_lattice(ref, *, lattice=None, rtol=RTOL, max_span=MAX_STEPS):
    """The lattice ``a + hℤ`` carrying a reference's reward levels, or ``None``.

    Parameters
    ----------
    ref : Reference
    lattice : None, False, float or Lattice
        ``None``: detect from the level values (:func:`find_lattice`);
        ``False``: treat as non-lattice; a positive span ``h``: check that
        every level lies on ``r_min + hℤ`` within ``rtol (r_max - r_min)``
        and return the maximal span (``h`` times the gcd of the level
        indices, :func:`check_span`); a :class:`Lattice` is passed through.
    rtol : float, default 1e-12
        Largest ``|v_j - a - k_j h|`` accepted, relative to ``r_max - r_min``
        (see the module notes).  The sequence engine computes the law of
        ``S_m`` exactly on the snapped levels ``a + k_j h``, so this is the
        largest perturbation of the rewards.
    max_span : int, default 65536
        Largest number of lattice steps ``L`` across ``[r_min, r_max]``
        that detection considers.

    Returns
    -------
    Lattice or None
        ``None`` for a constant reward, for ``lattice=False``, or when no
        lattice with at most ``max_span`` steps fits.

    Examples
    --------
    >>> from klfrontier import Reference
    >>> lat = detect_lattice(Reference([0.0, 0.3, 1.0], probs=[0.2, 0.3, 0.5]))
    >>> round(lat.h, 12), lat.ks.tolist()
    (0.1, [0, 3, 10])
    >>> lat = detect_lattice(Reference([0.0, 0.2, 0.6], probs=[0.2, 0.3, 0.5]), lattice=0.1)
    >>> round(lat.h, 12), lat.ks.tolist()        # the maximal span
    (0.2, [0, 1, 3])
    >>> detect_lattice(Reference([0.0, 1.0, 2 ** 0.5], probs=[0.5, 0.3, 0.2])) is None
    True
    """
    if isinstance(lattice, Lattice):
        return None if ref.is_constant else lattice
    fit = resolve_lattice(ref.level_values, lattice, rtol=rtol, max_steps=max_span)
    if fit is None:
        return None
    return Lattice(a=fit.a, h=fit.h, ks=fit.ks, logq=ref.level_logq.copy())
