"""The BoN–RL equivalence, computed: exact sequence-level BoN against ``φ_Δ`` as ``m`` grows.

Theory §6: with ``Δ = mδ`` and ``N = e^{mδ}``, as ``m → ∞``

    E_{π_N}[S_m]/m → R*(δ),   KL(π_N || p^m)/m → δ,   KL(π_N || φ_Δ)/m → 0,

and, to second order (non-lattice),
``R*(δ) - E[S_m]/m ≈ [½ log(2π m λ²σ²) - γ]/(mλ)`` and
``KL(π_N||φ_Δ) ≈ ½ log(2π m λ²σ²) - γ - 1`` (lattice forms oscillate; they
come from :func:`klfrontier.equivalence`).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from .._logspace import unit_exponent
from .._validate import real_scalar
from ..reference import Reference, check_reference
from .memoryless import Memoryless

__all__ = ["convergence", "ConvergenceTable"]

_COLUMNS = (
    "m",
    "log_n",
    "method",
    "exact",
    "reward_per_token",
    "optimal_reward",
    "gap",
    "kl_per_token",
    "kl_to_optimal",
    "kl_to_optimal_per_token",
    "gap_prediction",
    "kl_to_optimal_prediction",
    "gap_ratio",
    "kl_to_optimal_ratio",
    "error_bound",
    "seconds",
)


@dataclass(eq=False)
class ConvergenceTable:
    """Rows of exact sequence-level BoN values at ``N = e^{mδ}``, one per length ``m``.

    Attributes
    ----------
    delta : float
        Per-token budget δ.
    lam : float
        ``λ_δ``.
    optimal_reward : float
        ``R*(δ)`` (per token).
    lattice : (a, h) or None
        Lattice of the rewards (as the exact engine saw it).
    rows : list of dict
        Per ``m``: ``reward_per_token`` (``E[S_m]/m``), ``optimal_reward``
        (``R*(δ)``), ``gap`` (their difference), ``kl_per_token``
        (``KL(π_N||p^m)/m``), ``kl_to_optimal`` (``KL(π_N||φ_Δ)``, total) and
        per token, the second-order predictions and the ratios exact /
        predicted, the engine and whether it is exact.
    predictions : bool
        Whether ``klfrontier.ldp`` supplied the predictions.
    """

    delta: float
    lam: float
    optimal_reward: float
    lattice: tuple | None
    rows: list = field(default_factory=list)
    predictions: bool = True

    def to_dict(self) -> dict:
        """Columns as plain lists (JSON-ready)."""
        out: dict[str, object] = {
            "delta": self.delta,
            "lam": self.lam,
            "optimal_reward": self.optimal_reward,
            "lattice": self.lattice,
        }
        for c in _COLUMNS:
            out[c] = [_plain(r[c]) for r in self.rows]
        return out

    def to_text(self) -> str:
        """A fixed-width table."""
        head = (
            f"{'m':>8} {'E[S]/m':>12} {'R*(δ)':>12} {'gap':>11} {'gap pred':>11} {'ratio':>7} "
            f"{'KL/m':>10} {'KL(π‖φ)':>10} {'pred':>9} {'ratio':>7} {'KL(π‖φ)/m':>10}  method"
        )
        lines = [
            f"δ = {self.delta:g}, λ = {self.lam:.6g}, R*(δ) = {self.optimal_reward:.10g}, "
            f"lattice = {self.lattice}",
            head,
        ]
        for r in self.rows:
            lines.append(
                f"{r['m']:>8d} {r['reward_per_token']:>12.8f} {r['optimal_reward']:>12.8f} "
                f"{r['gap']:>11.4e} {r['gap_prediction']:>11.4e} {r['gap_ratio']:>7.4f} "
                f"{r['kl_per_token']:>10.6f} {r['kl_to_optimal']:>10.5f} "
                f"{r['kl_to_optimal_prediction']:>9.5f} {r['kl_to_optimal_ratio']:>7.4f} "
                f"{r['kl_to_optimal_per_token']:>10.3e}  {r['method']}{'' if r['exact'] else ' (approx)'}"
            )
        return "\n".join(lines)

    def __str__(self):
        return self.to_text()


def _plain(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return v


# below this β = λh the predictions use the non-lattice forms: the phase-averaged lattice
# correction log(sinh(β/2)/(β/2)) ~ β²/24 is < 5e-8, and its Gumbel entropy sums over ~50/β points
_BETA_FINE = 1e-3


def _unit_exponent(values, far=2.0**64):
    """``e`` with ``max|v| 2^e`` in ``[1/2, 1)`` when ``max|v|`` lies outside ``[1/far, far]``, else 0.

    Scaling by a power of two is exact (no level merges or moves, lattices
    keep their indices) short of pushing a value below the normal range,
    and keeps ``r_max - r_min`` and ``λ`` within the float range for rewards
    near ``±1.8e308`` or ``1e-300``.

    Examples
    --------
    >>> _unit_exponent(np.array([-1e308, 0.0, 1e308])), _unit_exponent(np.array([0.0, 3.0]))
    (-1024, 0)
    """
    return -unit_exponent(float(np.max(np.abs(values))), far)


def _predictor(ref, delta, lattice):
    """``klfrontier.equivalence.equivalence`` (imported lazily), or None if unavailable."""
    try:
        from ..equivalence import equivalence
    except ImportError:  # pragma: no cover - ships with klfrontier
        warnings.warn("klfrontier.equivalence is unavailable: no second-order predictions", stacklevel=3)
        return None
    try:
        return equivalence(ref, delta, lattice=lattice)
    except TypeError:  # pragma: no cover - older signature
        return equivalence(ref, delta)


def convergence_row(m, b, reward_per_token, optimal_reward, gap, gp, kp, secs, **extra):
    """One row of a convergence table: best-of-N ``b`` at length ``m`` against the optimum.

    ``reward_per_token``, ``optimal_reward``, ``gap`` are in the caller's reward units; ``gp``
    and ``kp`` are the predicted gap and KL to the optimum (NaN without predictions); their
    ratios to the measured values are NaN where a prediction is 0.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "m": m,
            "log_n": b.log_n,
            "method": b.method,
            "exact": b.exact,
            "reward_per_token": reward_per_token,
            "optimal_reward": optimal_reward,
            "gap": gap,
            "kl_per_token": b.kl_per_token,
            "kl_to_optimal": b.kl_to_optimal,
            "kl_to_optimal_per_token": b.kl_to_optimal_per_token,
            "gap_prediction": gp,
            "kl_to_optimal_prediction": kp,
            "gap_ratio": gap / gp if gp else np.nan,
            "kl_to_optimal_ratio": b.kl_to_optimal / kp if kp else np.nan,
            "error_bound": b.error_bound,
            "seconds": secs,
            **extra,
        }


def convergence(
    ref: Reference,
    delta,
    lengths=(10, 100, 1000, 10_000, 100_000),
    *,
    method="auto",
    lattice=None,
    predictions=True,
) -> ConvergenceTable:
    """Exact sequence-level BoN at ``N = e^{mδ}`` against ``φ_Δ``, ``Δ = mδ``, for several ``m``.

    Parameters
    ----------
    ref : Reference
        Per-token reference and reward.
    delta : float
        Per-token budget, ``0 < δ < -log p(A)``.
    lengths : sequence of int
        Sequence lengths ``m``.
    method, lattice :
        Engine choice, as in :meth:`Memoryless.best_of_n`.
    predictions : bool
        Add the second-order predictions of :func:`klfrontier.equivalence`
        (``gap_prediction(m)``, ``kl_to_optimal_prediction(m)``) and the
        ratios exact / predicted.

    Returns
    -------
    ConvergenceTable

    Notes
    -----
    Every row is exact (``exact=True``) unless the engine had to fall back to
    the saddle-point approximation (many non-lattice levels at large ``m``).
    ``gap = R*(δ) - E[S_m]/m``; ``KL(π_N||φ_Δ)`` is summed term by term in
    the form of theory §2's identity.

    Examples
    --------
    >>> ref = Reference([0.0, 1.0, 2 ** 0.5], probs=[0.5, 0.3, 0.2])
    >>> tab = convergence(ref, 0.1, lengths=[25, 50])
    >>> [round(r["gap_ratio"], 2) for r in tab.rows]
    [1.2, 1.11]

    A :class:`~klfrontier.Markov` reference is handed to
    ``klfrontier.sequences.markov.markov_convergence`` (``method`` and
    ``lattice`` are the chain's own).
    """
    from .markov import Markov, markov_convergence

    if isinstance(ref, Markov):
        return markov_convergence(ref, delta, lengths, predictions=predictions)
    check_reference(ref)
    d = real_scalar(delta, "delta")
    if d <= 0:
        raise ValueError(f"delta must be a positive finite number, got {delta!r}")
    if ref.is_constant or d >= ref.kl_max:
        raise ValueError(f"delta must lie in (0, -log p(A)) = (0, {ref.kl_max:.6g})")
    ms = [int(x) for x in np.atleast_1d(lengths)]
    if not ms or any(x < 1 for x in ms):
        raise ValueError("lengths must be positive integers")
    from ..lattice import Lattice, detect_lattice

    # every reward quantity below is computed in units r' = r * 2^e (exact, KL unchanged) with
    # max |r'| in [1/2, 1) when |r| is far from 1, and mapped back with 2^-e (λ with 2^e)
    # (a Lattice object is bound to ``ref``'s units: kept as given)
    e = 0 if isinstance(lattice, Lattice) else _unit_exponent(ref.level_values)
    if e:
        ref = Reference(np.ldexp(ref.rewards, e), logprobs=ref.logprobs)
        if lattice is not None and lattice is not False:
            lattice = float(np.ldexp(float(lattice), e))
    lat = detect_lattice(ref, lattice=lattice)
    with np.errstate(over="ignore"):  # a span of rewards ±1.8e308 is past float max: inf
        lat_t = None if lat is None else (float(np.ldexp(lat.a, -e)), float(np.ldexp(lat.h, -e)))
    eq = _predictor(ref, d, False if lat is None else lat.h) if predictions else None
    if eq is not None and lat is not None and eq.lam * lat.h < _BETA_FINE:
        # β = λh -> 0: the lattice forms tend to the continuous ones (corrections O(β²))
        eq = _predictor(ref, d, False)
    table = None
    rows = []
    for m in ms:
        t0 = time.perf_counter()
        b = Memoryless(ref, m, lattice=lattice).best_of_n(log_n=m * d, method=method)
        secs = time.perf_counter() - t0
        r_star = float(np.ldexp(b.optimal_reward / m, -e))
        if table is None:
            table = ConvergenceTable(
                delta=d,
                lam=float(np.ldexp(b.lam, e)),
                optimal_reward=r_star,
                lattice=lat_t,
                predictions=eq is not None,
            )
        with np.errstate(over="ignore"):  # past float max in reward units: ±inf
            gp = float(np.ldexp(eq.gap_prediction(m), -e)) if eq is not None else np.nan
            gap = float(np.ldexp(b.reward_gap_per_token, -e))
        kp = float(eq.kl_to_optimal_prediction(m)) if eq is not None else np.nan
        rows.append(convergence_row(m, b, float(np.ldexp(b.reward_per_token, -e)), r_star, gap, gp, kp, secs))
    assert table is not None  # ms is non-empty
    table.rows = rows
    return table
