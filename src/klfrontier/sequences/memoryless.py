"""Memoryless reference of length ``m``: the law of ``S_m``, the optimal policy, exact BoN.

Theory §6–§7.  ``p(y^m) = Π p(y_i)``, ``S_m = Σ r(y_i)``, KL budget ``Δ = mδ``,
best-of-N with ``N = e^{mδ}``.

* :func:`reward_law` — the exact law of ``S_m`` (lattice rewards: tilted FFT;
  few levels: type enumeration; otherwise a labelled saddle-point
  approximation; ``method="direct"``: the log-space dynamic program).
* :class:`Memoryless` — ``.tilted`` (the optimal policy ``φ_Δ``, a product of
  per-token tilts) and ``.best_of_n`` (exact sequence-level BoN from the law
  of ``S_m`` on the window where BoN lives, with bounds on the rest).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .._bon_kernel import log_neg_log_cdf
from .._logspace import log1mexp, log_bon_kl_bound, log_cdf_levels
from .._validate import log_n_from, one_of, real_scalar
from ..errors import ConvergenceError, WindowTooLargeError
from ..lattice import Lattice, detect_lattice
from ..reference import Reference, check_reference
from ..tilt import solve_lam_for_kl, tilt_stats
from ..tilt import tilted as _tilted
from . import saddlepoint as _sp
from ._window import LOG_LOW_ENOUGH, LOG_OUTSIDE, WindowLaw, bon_on_window, tails
from .lattice_engine import LatticeEngine, lattice_dp
from .types import MAX_TYPES, types_count, types_law, types_window

__all__ = ["RewardLaw", "reward_law", "Memoryless", "SequenceTilted", "SequenceBoN"]

_METHODS = ("auto", "lattice-fft", "types", "saddlepoint", "direct")
#: Largest full lattice law (points) that reward_law builds.
_MAX_FULL_LATTICE = 2**27


# ---------------------------------------------------------------- validation
def check_length(length):
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)):
        if isinstance(length, float) and length.is_integer():
            length = int(length)
        else:
            raise ValueError(f"length must be a positive integer, got {length!r}")
    if length < 1:
        raise ValueError(f"length must be a positive integer, got {length}")
    return int(length)


def _check_method(method):
    if method not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, _METHODS))}; got {method!r}")
    return method


def _values_from_su(ref, m, su):
    """``S_m = m r_max + (r_max - r_min) Σu`` without overflow of the range."""
    return m * ref.r_max + (2.0 * np.asarray(su, dtype=float)) * ref.half_range


# ------------------------------------------------------------------ the law
@dataclass(eq=False)
class RewardLaw:
    """Law of ``S_m``, the sum of ``m`` i.i.d. per-token rewards.

    Attributes
    ----------
    length : int
        ``m``.
    values : ndarray
        Ascending support of ``S_m`` (reward units; for ``method="saddlepoint"``
        a grid).
    logpmf : ndarray
        ``log P(S_m = s)``.
    logsf : ndarray
        ``log P(S_m > s)``, summed from the top in log space.
    exact : bool
        False only for the saddle-point approximation.
    method : str
        ``"lattice-fft"``, ``"types"``, ``"saddlepoint"`` or ``"direct"``.
    lattice : (a, h) or None
        Per-token rewards on ``a + hℤ`` (maximal span); ``S_m`` then lives
        on ``m a + hℤ``.
    error_estimate : float
        Estimated largest relative error of ``exp(logpmf)`` (rounding; NaN
        for the saddle-point approximation, whose error is ``O(1/m)``).
    info : dict
        Engine details (tilts used, FFT lengths, normalisation).
    """

    length: int
    values: np.ndarray
    logpmf: np.ndarray
    logsf: np.ndarray
    exact: bool
    method: str
    lattice: tuple | None
    error_estimate: float = 0.0
    info: dict = field(default_factory=dict)

    @cached_property
    def logcdf(self):
        """``log P(S_m <= s)`` (from whichever tail is accurate)."""
        return log_cdf_levels(self.logpmf)[0]

    @property
    def size(self) -> int:
        """Number of support points."""
        return int(self.values.size)

    @property
    def probs(self):
        """``P(S_m = s)``."""
        return np.exp(self.logpmf)

    @property
    def mean(self) -> float:
        """``E S_m`` under the law."""
        return float(np.exp(self.logpmf) @ self.values)

    def to_dict(self) -> dict:
        """The law as plain Python: the scalar fields, ``mean``, ``values`` and ``logpmf`` as lists.

        >>> d = reward_law(Reference([0.0, 1.0], probs=[0.5, 0.5]), 2).to_dict()
        >>> d["values"], d["mean"], d["method"]
        ([0.0, 1.0, 2.0], 1.0, 'lattice-fft')
        """
        return {
            "length": self.length,
            "method": self.method,
            "exact": self.exact,
            "lattice": None if self.lattice is None else list(self.lattice),
            "error_estimate": float(self.error_estimate),
            "size": self.size,
            "mean": self.mean,
            "values": self.values.tolist(),
            "logpmf": self.logpmf.tolist(),
        }

    def as_reference(self) -> Reference:
        """The law as a :class:`~klfrontier.Reference` over the values of ``S_m``.

        Best-of-N over sequences depends on ``y^m`` only through ``S_m``, so
        ``best_of_n(law.as_reference(), log_n=...)`` gives the exact BoN
        reward and ``KL(π_N || p^m)``.
        """
        return Reference(self.values, logprobs=self.logpmf)

    def __repr__(self):
        return (
            f"RewardLaw(m={self.length}, method={self.method!r}, exact={self.exact}, "
            f"size={self.size}, lattice={self.lattice})"
        )


def _lattice_tuple(lat):
    return None if lat is None else (float(lat.a), float(lat.h))


# lattices of this many steps or more are fine (see fine_lattice)
FINE_SPAN = 4096
# ... and with at most this many levels on such a lattice, the law of the sum is too jagged for FFT tilts
FEW_LEVELS = 8


def fine_lattice(lat):
    """Whether the lattice has at least ``FINE_SPAN`` steps: exact types are tried before FFT tilts.

    With few levels on a fine lattice (e.g. rewards ``k / 54176``) the
    possible sums of ``m`` draws, at most ``C(m + L - 1, L - 1)`` (the
    types) of the ``m s + 1`` lattice points, are isolated and their law is
    jagged on the lattice: no FFT tilt trusts them, and covering them tilt by
    tilt is slow.  Type enumeration (all types, or the typical ones in a
    window) touches only those sums, exactly; the lattice engine is the
    fallback where the typical types are too many.

    >>> fine_lattice(detect_lattice(Reference([0.0, 2714 / 54176, 1.0], probs=[0.2, 0.3, 0.5])))
    True
    >>> fine_lattice(detect_lattice(Reference([0.0, 1.0, 2.0], probs=[0.2, 0.3, 0.5])))
    False
    """
    return lat is not None and lat.span >= FINE_SPAN


def _pick_method(ref, m, method, lat, max_types):
    if method != "auto":
        if method in ("lattice-fft", "direct") and lat is None:
            raise ValueError(f"method={method!r} needs lattice rewards (none detected; pass lattice=h)")
        return method
    if lat is not None and not (fine_lattice(lat) and types_count(m, ref.n_levels) <= max_types):
        return "lattice-fft"
    if types_count(m, ref.n_levels) <= max_types:
        return "types"
    return "saddlepoint"


def reward_law(
    ref: Reference, length: int, *, lattice=None, method="auto", grid=4097, max_types=MAX_TYPES
) -> RewardLaw:
    """Law of ``S_m = r(Y_1) + … + r(Y_m)``, ``Y_i`` i.i.d. from the reference.

    Parameters
    ----------
    ref : Reference
        Per-token reference law and reward.
    length : int
        ``m >= 1``.
    lattice : None, False or float
        ``None``: detect a lattice ``a + hℤ`` from the levels (tolerance
        ``1e-12`` of the range); ``False``: treat as non-lattice; ``h``: use
        span ``h`` (every level must lie on ``r_min + hℤ``).
    method : {"auto", "lattice-fft", "types", "saddlepoint", "direct"}
        ``"auto"``: lattice → tilted FFT; else type enumeration when there are
        at most ``max_types`` types; else saddle point.  ``"direct"`` is the
        log-space dynamic program (lattice only, ``O(m² L K)``).
    grid : int
        Grid size of the saddle-point approximation.
    max_types : int
        Largest type enumeration attempted.

    Returns
    -------
    RewardLaw

    Notes
    -----
    Lattice rewards ``r = a + hk``: ``log P(T = t) = log P_θ(T = t) - θt +
    mκ(θ)`` with ``P_θ`` computed by FFT under tilts ``θ`` placed so that every
    support point sits in the bulk of one of them (relative error ~1e-11
    measured against a log-space DP and 50-digit brute force).  Types:
    ``log P(n) = log m! - Σ log n_j! + Σ n_j log q_j``.  Saddle point: Daniels
    density (times the grid cell, renormalised) and Lugannani–Rice tail,
    ``exact=False``.

    Examples
    --------
    >>> ref = Reference([0.0, 1.0], probs=[0.7, 0.3])
    >>> law = reward_law(ref, 3)
    >>> law.method, law.values.tolist()
    ('lattice-fft', [0.0, 1.0, 2.0, 3.0])
    >>> np.exp(law.logpmf).round(6).tolist()          # Binomial(3, 0.3)
    [0.343, 0.441, 0.189, 0.027]
    >>> law3 = reward_law(Reference([0.0, 1.0, 2 ** 0.5], probs=[0.5, 0.3, 0.2]), 2)
    >>> law3.method, law3.size, law3.exact
    ('types', 6, True)
    """
    check_reference(ref)
    m = check_length(length)
    method = _check_method(method)
    t0 = time.perf_counter()
    if ref.is_constant:
        v = np.array([m * ref.r_max])
        return RewardLaw(
            m, v, np.zeros(1), np.full(1, -np.inf), True, "types" if method == "auto" else method, None
        )
    lat = detect_lattice(ref, lattice=lattice)
    method = _pick_method(ref, m, method, lat, max_types)
    info: dict[str, object] = {}
    err = 0.0
    exact = True
    if method == "lattice-fft":
        if m * lat.span + 1 > _MAX_FULL_LATTICE:
            raise ValueError(
                f"the full law has {m * lat.span + 1} points; too many "
                "(Memoryless.best_of_n works on the window where BoN lives)"
            )
        eng = LatticeEngine(lat, m)
        t, lp, sc = eng.law(0, m * lat.span)
        values = lat.sum_values(m, t)
        err = float(eng.rel_error(sc).max())
        info.update(tilts=len(eng.blocks), fft_lengths=eng.fft_lengths, support=eng.support.kind)
    elif method == "direct":
        t, lp = lattice_dp(lat, m)
        values = lat.sum_values(m, t)
        err = 4.0 * m * np.finfo(float).eps
    elif method == "types":
        su, lp = types_law(ref, m, max_types=max_types)
        values = _values_from_su(ref, m, su)
        err = 8.0 * np.finfo(float).eps * (abs(float(lp.min())) + 10.0)
        info.update(types=types_count(m, ref.n_levels))
    else:
        G = int(grid)
        if G < 3:
            raise ValueError("grid must be >= 3")
        su = -m + m * (np.arange(G) + 0.5) / G
        su, logf, logsf_ = _sp.saddlepoint_grid(ref, m, su[0], su[-1], G)
        lp = logf + np.log(m / G)
        from scipy.special import logsumexp

        c = float(logsumexp(lp))
        lp = lp - c
        values = _values_from_su(ref, m, su)
        info.update(log_norm=c)
        exact = False
        err = np.nan
        info["seconds"] = time.perf_counter() - t0
        return RewardLaw(m, values, lp, logsf_, exact, method, _lattice_tuple(lat), err, info)
    logsf = log_cdf_levels(lp)[2]
    info["seconds"] = time.perf_counter() - t0
    return RewardLaw(m, values, lp, logsf, exact, method, _lattice_tuple(lat), err, info)


# ------------------------------------------------------------ tilted policy
class PerToken:
    """``reward`` and ``kl`` of a length-``length`` sequence policy, per token."""

    # supplied by the dataclass subclasses (annotations only: no fields here)
    reward: float
    kl: float
    length: int

    @property
    def reward_per_token(self) -> float:
        return self.reward / self.length

    @property
    def kl_per_token(self) -> float:
        return self.kl / self.length


@dataclass(eq=False)
class SequenceTilted(PerToken):
    """The optimal KL-constrained policy over length-``m`` sequences.

    ``φ_Δ(y^m) = Π_i φ_λ(y_i)`` with ``D(λ) = Δ/m`` (theory §6): a product of
    per-token tilts, so reward and KL are ``m`` times the per-token ones.

    Attributes
    ----------
    length : int
    per_token : Policy
        The per-token tilted policy ``φ_λ``.
    reward : float
        ``E_{φ_Δ} S_m = m R*(δ)``.
    kl : float
        ``KL(φ_Δ || p^m) = m D(λ)``.
    lam : float
        ``λ`` (reward units; ``inf`` when saturated).
    saturated : bool
        ``Δ/m >= -log p(A)``: the optimum is ``p(· | A)^m``.
    kl_budget : float or None
        The total budget Δ when given.
    """

    length: int
    per_token: object = field(repr=False)
    reward: float
    kl: float
    lam: float
    saturated: bool
    kl_budget: float | None = None

    def to_dict(self) -> dict:
        """The scalar fields plus per-token values, as plain Python (``per_token`` omitted)."""
        keys = ("length", "lam", "reward", "kl", "saturated", "kl_budget")
        out = {k: getattr(self, k) for k in keys}
        out.update(reward_per_token=self.reward_per_token, kl_per_token=self.kl_per_token)
        return out


# --------------------------------------------------------------------- BoN
@dataclass(eq=False)
class SequenceBoN(PerToken):
    """Exact best-of-N over length-``m`` sequences (sequence-level BoN).

    Attributes
    ----------
    length : int
    n, log_n : float
        ``N`` (``inf`` when it overflows) and ``log N``.
    delta : float
        ``log N / m``: the per-token budget of the optimal policy compared with.
    reward : float
        ``E_{π_N} S_m``.
    kl : float
        ``KL(π_N || p^m)`` (at most ``log N - (N-1)/N``).
    kl_to_optimal : float
        ``KL(π_N || φ_Δ)``, ``Δ = log N``: BoN against the optimal policy of
        the same budget (``inf`` when that optimum is saturated).
    lam : float
        Per-token ``λ`` of ``φ_Δ`` (``D(λ) = δ``).
    optimal_reward : float
        ``E_{φ_Δ} S_m = m R*(δ)``.
    kl_bound : float
        ``log N - (N-1)/N``.
    exact : bool
        False only for the saddle-point approximation.
    method : str
        Engine: ``"lattice-fft"``, ``"types"`` (``details['window']`` tells
        whether a window was enumerated) or ``"saddlepoint"``.
    error_bound : float
        Estimated relative error (rounding of the law) plus the BoN mass left
        outside the window (bounded).
    details : dict
        ``kl_to_optimal_identity`` (the theory §2 identity
        ``KL(π_N||p^m) - λ E S + mΛ(λ)``, a check), BoN mass, window size,
        tilts, timings.
    """

    length: int
    n: float
    log_n: float
    delta: float
    reward: float
    kl: float
    kl_to_optimal: float
    lam: float
    optimal_reward: float
    kl_bound: float
    exact: bool
    method: str
    error_bound: float = 0.0
    details: dict = field(default_factory=dict, repr=False)

    @property
    def kl_to_optimal_per_token(self) -> float:
        return self.kl_to_optimal / self.length

    @property
    def reward_gap(self) -> float:
        """``m R*(δ) - E_{π_N} S_m`` (total)."""
        return self.optimal_reward - self.reward

    @property
    def reward_gap_per_token(self) -> float:
        """``R*(δ) - E_{π_N}[S_m]/m``."""
        return self.reward_gap / self.length

    def to_dict(self) -> dict:
        """The scalar fields plus per-token values, as plain Python (``details`` omitted)."""
        out = {
            k: getattr(self, k)
            for k in (
                "length",
                "n",
                "log_n",
                "delta",
                "reward",
                "kl",
                "kl_to_optimal",
                "lam",
                "optimal_reward",
                "kl_bound",
                "exact",
                "method",
                "error_bound",
            )
        }
        out.update(
            reward_per_token=self.reward_per_token,
            kl_per_token=self.kl_per_token,
            kl_to_optimal_per_token=self.kl_to_optimal_per_token,
            reward_gap_per_token=self.reward_gap_per_token,
        )
        return out


def _trusted_interval(eng: LatticeEngine, blk):
    with np.errstate(divide="ignore"):
        score = np.where(blk.p > 0, np.log(np.where(blk.p > 0, blk.p, 1.0)) - blk.log_peak, -np.inf)
    ok = np.flatnonzero(score >= -blk.tau)
    A = max(0, blk.o + int(ok[0]))
    B = min(eng.mL, blk.o + int(ok[-1]))
    return A, B


def _lattice_window(ref, lat: Lattice, m, log_n, lam, saturated, max_rounds=60):
    eng = LatticeEngine(lat, m)
    mL = eng.mL
    lam_k = eng.lam_for_mean(mL - 1.0) if saturated else float(lam) * lat.h
    blk = eng.block(lam_k)
    A, B = _trusted_interval(eng, blk)
    for _ in range(max_rounds):
        t, lp, sc = eng.law(A, B)
        complete_low, complete_high = A == 0, B >= mL
        logsf, logcdf = tails(lp, complete_low)
        log_above = -np.inf if complete_high else lat.log_tail(m, B + 1, upper=True)
        ok_hi = complete_high or log_n + log_above <= LOG_OUTSIDE
        ok_lo = complete_low or log_n + logsf[0] >= LOG_LOW_ENOUGH
        if not ok_lo:
            # small N: bound P(max < A) = F(A-1)^N by the Chernoff bound on F(A-1)
            log_below = lat.log_tail(m, A - 1, upper=False)
            # (and P(S_m < A) itself negligible: the window's bottom-up F omits it)
            ok_lo = log_below <= LOG_OUTSIDE and log_n + np.log(-log_below) >= np.log(-LOG_OUTSIDE)
        if ok_hi and ok_lo:
            break
        grow = max((B - A) // 2, lat.span, 16)
        if not ok_hi:
            B = min(mL, B + grow)
        if not ok_lo:
            A = max(0, A - grow)
    else:  # pragma: no cover - windows close within a few rounds
        raise ConvergenceError("lattice BoN window did not close", partial=(A, B))
    su = (t - mL) / lat.span
    log_below = -np.inf if complete_low else lat.log_tail(m, A - 1, upper=False)
    w = WindowLaw(
        su=su,
        values=lat.sum_values(m, t),
        logpmf=lp,
        logsf=logsf,
        logcdf=logcdf,
        complete_low=complete_low,
        complete_high=complete_high,
        method="lattice-fft",
        exact=True,
        log_above=log_above,
        log_q_outside=float(np.logaddexp(log_below, log_above)),
        rel_error=float(eng.rel_error(sc).max()),
        info={
            "tilts": len(eng.blocks),
            "fft_lengths": list(eng.fft_lengths),
            "window": (int(A), int(B)),
            "support": eng.support.kind,
        },
    )
    return w


def _types_full_window(ref, m):
    su, lp = types_law(ref, m)
    logsf, logcdf = tails(lp, True)
    return WindowLaw(
        su=su,
        values=_values_from_su(ref, m, su),
        logpmf=lp,
        logsf=logsf,
        logcdf=logcdf,
        complete_low=True,
        complete_high=True,
        method="types",
        exact=True,
        rel_error=8 * np.finfo(float).eps * (abs(float(lp.min())) + 10),
        info={"types": su.size, "window": False},
    )


def _types_window(ref, m, log_n, lam_u, x_u, m_cgf, max_rounds=40):
    c = m * x_u
    lo = max(-m, c - (12.0 + 0.5 * np.log(m)) / lam_u)
    hi = min(0.0, c + (-LOG_OUTSIDE + 8.0) / lam_u)
    E = 70.0
    for _ in range(max_rounds):
        tw = types_window(ref, m, lam_u, lo, hi, E=E)
        complete_low = lo <= -m
        if tw.su.size == 0:
            lo = max(-m, lo - 10.0 / lam_u)
            continue
        logsf, logcdf = tails(tw.logpmf, complete_low)
        log_above = -np.inf if hi >= 0 else min(0.0, -lam_u * hi + m_cgf)
        ok_hi = log_n + log_above <= LOG_OUTSIDE
        ok_miss = log_n + tw.log_missing <= LOG_OUTSIDE
        ok_lo = complete_low or log_n + logsf[0] >= LOG_LOW_ENOUGH
        if ok_hi and ok_lo and ok_miss:
            break
        if not ok_hi:
            hi = min(0.0, hi + 10.0 / lam_u)
        if not ok_lo:
            lo = max(-m, lo - 10.0 / lam_u)
        if not ok_miss:
            E += 20.0
    else:  # pragma: no cover
        raise ConvergenceError("windowed type enumeration did not close", partial=(lo, hi))
    return WindowLaw(
        su=tw.su,
        values=_values_from_su(ref, m, tw.su),
        logpmf=tw.logpmf,
        logsf=logsf,
        logcdf=logcdf,
        complete_low=complete_low,
        complete_high=hi >= 0,
        method="types",
        exact=True,
        log_above=log_above,
        log_missing=tw.log_missing,
        rel_error=8 * np.finfo(float).eps * (abs(float(tw.logpmf.min())) + 10),
        info={"types": tw.count, "window": (float(lo), float(hi)), "E": E},
    )


def _saddle_bon(ref, m, log_n, lam_u, x_u, m_cgf, grid=4001):
    """Continuous (saddle-point) BoN: ``E max = lo + ∫ (1 - F^N)``, KL = ``log N - (N-1)/N``."""
    from scipy.integrate import simpson

    c = m * x_u
    lo = max(-m * (1 - 1e-9), c - (14.0 + 0.5 * np.log(m)) / lam_u)
    hi = min(-m * 1e-9, c + 60.0 / lam_u)
    for _ in range(30):
        su, logf, logsf = _sp.saddlepoint_grid(ref, m, lo, hi, grid)
        logcdf = log1mexp(np.minimum(logsf, 0.0))
        A = -np.exp(log_n + log_neg_log_cdf(logsf, logcdf))  # log F(s)^N
        ok_lo = A[0] < -45 or lo <= -m * (1 - 1e-9)
        ok_hi = log_n + logsf[-1] <= LOG_OUTSIDE or hi >= -m * 1e-9
        if ok_lo and ok_hi:
            break
        if not ok_lo:
            lo = max(-m * (1 - 1e-9), lo - 10.0 / lam_u)
        if not ok_hi:
            hi = min(-m * 1e-9, hi + 10.0 / lam_u)
    one_minus = -np.expm1(A)
    mean_su = lo + float(simpson(one_minus, x=su))
    kl = float(log_bon_kl_bound(log_n))
    kl_opt = kl - lam_u * mean_su + m_cgf
    # cell masses of the approximate law (for sampling and display)
    lp = np.concatenate(
        [
            [np.log1p(-min(np.exp(logsf[0]), 1 - 1e-16))],
            logsf[:-1] + log1mexp(np.minimum(logsf[1:] - logsf[:-1], 0.0)),
        ]
    )
    w = WindowLaw(
        su=su,
        values=_values_from_su(ref, m, su),
        logpmf=lp,
        logsf=logsf,
        logcdf=logcdf,
        complete_low=False,
        complete_high=False,
        method="saddlepoint",
        exact=False,
        rel_error=np.nan,
        info={"grid": int(grid), "window": (float(lo), float(hi))},
    )
    return w, mean_su, kl, kl_opt


def sequence_bon(ref, m, log_n, method="auto", lattice=None, max_types=MAX_TYPES):
    """Core of :meth:`Memoryless.best_of_n`; returns ``(SequenceBoN, WindowLaw or None)``."""
    t0 = time.perf_counter()
    method = _check_method(method)
    n_val = float(np.exp(log_n)) if log_n < 709 else np.inf
    delta = log_n / m
    kl_bound = float(log_bon_kl_bound(log_n))
    if ref.is_constant or log_n == 0:
        r = m * (ref.r_max if ref.is_constant else ref.mean_reward)
        return SequenceBoN(
            m,
            n_val,
            log_n,
            delta,
            r,
            0.0,
            0.0,
            0.0,
            r,
            kl_bound,
            True,
            "types" if method == "auto" else method,
            details={"kl_to_optimal_identity": 0.0},
        ), None
    saturated = delta >= ref.kl_max
    if saturated:
        lam, lam_u, m_cgf, x_u = np.inf, np.inf, np.nan, 0.0
        opt_reward = m * ref.r_max
    else:
        lam = float(solve_lam_for_kl(ref, delta))
        lam_u = float(ref.lam_to_u(lam))
        st = tilt_stats(ref, [lam_u])
        m_cgf = m * float(st.cgf[0])
        x_u = float(st.mean[0])
        opt_reward = float(_values_from_su(ref, m, m * x_u))
    lat = detect_lattice(ref, lattice=lattice)
    if method == "direct":
        raise ValueError(
            "method='direct' is a reward_law engine; best_of_n uses "
            "'auto', 'lattice-fft', 'types' or 'saddlepoint'"
        )
    auto = method == "auto"
    if auto:
        few = types_count(m, ref.n_levels) <= max_types
        if lat is not None and not (fine_lattice(lat) and (few or not saturated)):
            method = "lattice-fft"
        elif few or (not saturated and (ref.n_levels <= 4 or lat is not None)):
            # (a fine lattice: its typical types, windowed, before FFT tilts)
            method = "types"
        else:
            method = "saddlepoint"
    if method == "lattice-fft" and lat is None:
        raise ValueError("method='lattice-fft' needs lattice rewards (none detected; pass lattice=h)")
    window = None
    fft_tried = method == "lattice-fft"
    if method == "lattice-fft":
        try:
            window = _lattice_window(ref, lat, m, log_n, lam, saturated)
        except WindowTooLargeError:
            if not auto:
                raise
            # a lattice too fine for FFT windows: exact types if few levels, else approximate
            method = "types" if ref.n_levels <= 4 and not saturated else "saddlepoint"
    if method == "types" and window is None:
        if types_count(m, ref.n_levels) <= max_types:
            window = _types_full_window(ref, m)
        elif saturated:
            raise ValueError("windowed type enumeration needs log_n/m < -log p(A)")
        else:
            try:
                window = _types_window(ref, m, log_n, lam_u, x_u, m_cgf)
            except ValueError:
                if not auto:
                    raise
                # too many typical types: the lattice engine if there is one and its law of the
                # sum is smooth enough for FFT tilts (not few levels on a fine lattice), else approximate
                method = "saddlepoint"
                jagged = fine_lattice(lat) and ref.n_levels <= FEW_LEVELS
                if lat is not None and not fft_tried and not jagged:
                    try:
                        window = _lattice_window(ref, lat, m, log_n, lam, saturated)
                        method = "lattice-fft"
                    except WindowTooLargeError:
                        pass
    if method == "saddlepoint":
        if saturated:
            raise ValueError("the saddle-point BoN needs log_n/m < -log p(A) (use an exact engine)")
        window, mean_su, kl, kl_opt = _saddle_bon(ref, m, log_n, lam_u, x_u, m_cgf)
        reward = float(_values_from_su(ref, m, mean_su))
        res = SequenceBoN(
            m,
            n_val,
            log_n,
            delta,
            reward,
            kl,
            max(kl_opt, 0.0),
            lam,
            opt_reward,
            kl_bound,
            False,
            "saddlepoint",
            np.nan,
            details={
                "kl_to_optimal_identity": kl_opt,
                "window_size": window.su.size,
                "seconds": time.perf_counter() - t0,
                **window.info,
            },
        )
        return res, window
    b = bon_on_window(window, log_n, lam_u, m_cgf)
    outside = np.exp(log_n + max(window.log_above, window.log_missing))
    err = window.rel_error + outside
    details = {
        "kl_to_optimal_identity": b.kl_to_optimal_identity,
        "mass": b.mass,
        "window_size": int(window.su.size),
        "log_above": window.log_above,
        "log_missing": window.log_missing,
        "seconds": time.perf_counter() - t0,
        **window.info,
    }
    res = SequenceBoN(
        m,
        n_val,
        log_n,
        delta,
        b.reward,
        b.kl,
        b.kl_to_optimal,
        lam,
        opt_reward,
        kl_bound,
        True,
        method,
        float(err),
        details=details,
    )
    return res, window


# -------------------------------------------------------------- the object
class Memoryless:
    """Memoryless reference ``p^m`` over length-``m`` sequences with reward ``Σ r(y_i)``.

    Parameters
    ----------
    ref : Reference
        Per-token law and reward.
    length : int
        ``m >= 1``.
    lattice : None, False or float
        Lattice handling for the exact engines (see :func:`reward_law`).

    Examples
    --------
    >>> ref = Reference([0.0, 1.0], probs=[0.7, 0.3])
    >>> seq = Memoryless(ref, length=100)
    >>> opt = seq.tilted(kl=100 * 0.1)
    >>> round(opt.reward_per_token, 6), round(opt.kl, 12)
    (0.514629, 10.0)
    >>> b = seq.best_of_n(log_n=100 * 0.1)
    >>> round(b.reward_per_token, 6), round(b.kl_per_token, 6), round(b.kl_to_optimal, 4)
    (0.492886, 0.089483, 0.9178)
    """

    def __init__(self, ref: Reference, length: int, *, lattice=None):
        check_reference(ref)
        self.ref = ref
        self.length = check_length(length)
        self.lattice = lattice

    def __repr__(self):
        return f"Memoryless(length={self.length}, ref={self.ref!r})"

    def reward_law(self, *, method="auto", **kwargs) -> RewardLaw:
        """Law of ``S_m`` (see :func:`reward_law`)."""
        return reward_law(
            self.ref, self.length, lattice=kwargs.pop("lattice", self.lattice), method=method, **kwargs
        )

    def tilted(self, *, kl=None, beta=None, lam=None) -> SequenceTilted:
        """Optimal policy over sequences: total budget ``kl = Δ``, or ``lam``/``beta``.

        ``φ_Δ = φ_λ^{⊗m}`` with ``D(λ) = Δ/m``; exact.  ``beta`` is the
        KL-regularised form ``max E S_m - β KL(φ || p^m)``, ``λ = 1/β``.
        """
        one_of(kl=kl, beta=beta, lam=lam)
        m = self.length
        if kl is not None:
            kv = real_scalar(kl, "kl", allow_inf=True)
            pol = _tilted(self.ref, kl=kv / m)
        elif lam is not None:
            pol = _tilted(self.ref, lam=lam)
        else:
            pol = _tilted(self.ref, beta=beta)
        return SequenceTilted(
            length=m,
            per_token=pol,
            reward=m * pol.reward,
            kl=m * pol.kl,
            lam=float(pol.lam),
            saturated=bool(pol.saturated),
            kl_budget=None if kl is None else float(kl),
        )

    def best_of_n(self, n=None, *, log_n=None, method="auto") -> SequenceBoN:
        """Exact best-of-N over whole sequences (ties broken uniformly).

        Parameters
        ----------
        n : float, optional
            ``N >= 1`` (real N allowed).
        log_n : float, optional
            ``log N`` (``log_n = m δ`` for the equivalence regime).
        method : {"auto", "lattice-fft", "types", "saddlepoint"}
            Engine for the law of ``S_m``; ``"auto"`` takes the exact one that
            applies (saddle point only for many non-lattice levels).

        Returns
        -------
        SequenceBoN

        Notes
        -----
        ``d(s) = F(s)^N - F^-(s)^N`` on the window of ``S_m`` where BoN lives
        (the mass outside is bounded below ``1e-18``);
        ``E S = Σ s d(s)``, ``KL(π_N||p^m) = Σ d log(d/q)``,
        ``KL(π_N||φ_Δ) = Σ d log(d/(q e^{λs - mΛ(λ)}))`` with ``Δ = log N``.
        """
        ln = log_n_from(n, log_n, finite=True)
        return sequence_bon(self.ref, self.length, ln, method, self.lattice)[0]
