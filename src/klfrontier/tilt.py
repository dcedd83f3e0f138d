"""Optimal KL-constrained RL: the exponentially tilted policy and its frontier.

Theory §2.  With ``Lambda(lam) = log E_p e^{lam r}``,

    phi_lam(y) = p(y) exp(lam r(y) - Lambda(lam)),
    KL(phi_lam || p) = lam Lambda'(lam) - Lambda(lam) =: D(lam),
    E_{phi_lam} r = Lambda'(lam).

All computations run on reward levels in standardised units ``u`` (see
:class:`~klfrontier.reference.Reference`); ``lam_u = lam (r_max - r_min)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _engine
from ._engine import TiltStats
from ._validate import float_or_array, one_of, real_scalar
from .errors import ConvergenceError
from .policy import TiltedPolicy
from .reference import Reference, check_reference

__all__ = [
    "tilted",
    "frontier",
    "Frontier",
    "cgf",
    "tilt_stats",
    "solve_lam_for_kl",
    "solve_lam_for_reward",
    "ConvergenceError",
]


_EPS = float(np.finfo(float).eps)


def tilt_stats(ref: Reference, lam_u, *, accurate=True) -> TiltStats:
    """Cumulants 1..3, KL and gain of the tilted law at standardised inverse temperatures.

    The tilt engine (:func:`klfrontier._engine.tilt_stats`, whose notes give
    the method and the accuracy) on ``ref.level_law``: ``lam_u`` are finite
    inverse temperatures in standardised units (any sign); the result holds
    ``cgf = Lambda_u(lam_u)``, ``mean``, ``var``, ``k3`` of ``u`` under
    ``phi``, ``kl = D`` and the ``gain = E_phi u - E_p u``.

    Examples
    --------
    >>> st = tilt_stats(Reference([0.0, 1.0], probs=[0.5, 0.5]), [0.0, 1.0])
    >>> st.mean.round(12).tolist(), round(float(st.kl[1]), 12)
    ([-0.5, -0.26894142137], 0.110944071672)
    """
    check_reference(ref)
    return _engine.tilt_stats(ref.level_law, lam_u, accurate=accurate)


def cgf(ref: Reference, t):
    """Cumulant generating function ``Lambda(t) = log E_p e^{t r(Y)}``.

    Notes
    -----
    ``Lambda(t) = t r_c + log E e^{t (r - r_c)}``, anchored where the tilted
    law sits (the p-mean for small ``|t|``, the active end otherwise, as in
    the tilt engine); rows where ``t r_c`` and the rest cancel are anchored
    at the tilted law's mode (``klfrontier._engine.cgf_at_mode``).  The
    shortcut ``t r_max + Lambda_u(lam)`` would cancel to
    ``eps |t| (r_max - r_min)`` absolute.

    Examples
    --------
    >>> ref = Reference([0.0, 1.0], probs=[0.5, 0.5])
    >>> round(float(cgf(ref, 1.0)), 12)    # log((1 + e)/2)
    0.620114506958
    """
    check_reference(ref)
    t = np.asarray(t, dtype=float)
    if not np.isfinite(t).all():
        raise ValueError("t must be finite")
    if ref.is_constant:
        out = t * ref.r_max
    else:
        law = ref.level_law
        tt = t.ravel()
        lam = np.atleast_1d(ref.lam_to_u(tt))
        out = np.empty(tt.size)
        tiny = np.abs(lam) <= _engine.SERIES_LAM
        if tiny.any():
            out[tiny] = tt[tiny] * ref.mean_reward + _engine.cgf_series(law.cumulants, lam[tiny])
        rest = np.flatnonzero(~tiny)
        if rest.size:
            mu = law.mean
            for centre, sub, centred in _engine.groups(law, lam[rest]):
                idx = rest[sub]
                lc, _, _ = _engine.tilt_sums(law, lam[idx], centre, centred)
                r_c = ref.mean_reward if centre == mu else ref.to_reward(centre)
                out[idx] = tt[idx] * r_c + lc
                # The anchor can sit far from the tilted law (one outcome of mass
                # 1 - 1e-297 below the top: the active end is chosen, yet the law
                # stays put), and then t r_c + lc cancels: such rows are anchored
                # at the tilted law's mode.
                with np.errstate(invalid="ignore"):
                    cancel = np.abs(out[idx]) < 1e-3 * np.abs(tt[idx] * r_c)
                for i in idx[cancel]:
                    j, rest_j = _engine.cgf_at_mode(law, lam[i])
                    out[i] = float(tt[i] * ref.level_values[j] + rest_j)
        out = out.reshape(t.shape)
    return float_or_array(out)


def _solve_lam_for_gain(law, gap):
    """``lam_u > 0`` with ``E_phi u - E_p u = gap`` (standardised units).

    :func:`~klfrontier._engine.solve_mean` in ``(log lam, log gain)``
    coordinates, where the gain is close to linear at both ends (``gain ~ lam
    var`` at small ``lam``).  ``gap = x - mu`` carries an absolute error of a
    few ``eps``, so ``|log(gain / gap)|`` is only asked down to ``8 eps / gap``.
    """

    def stats(ell, rows):
        lam = np.exp(ell)
        st = _engine.tilt_stats(law, lam, accurate=True)
        # mean - mu, rounded as the target gap = x - mu was: their rounding errors cancel.
        # Where it is not resolved (<= 0) log g is -inf and its slope unknown: the
        # solver then moves up (capped) or bisects.
        g = st.mean - law.mean
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            resolved = g > 0
            f = np.where(resolved, np.log(np.where(resolved, g, 1.0) / gap[rows]), -np.inf)
            return f, np.where(resolved, lam * st.var / g, np.nan)

    start = np.log(gap / max(law.cumulants[2], 1e-300))
    ftol = np.maximum(1e-15, 8 * _EPS / gap)
    ell = _engine.solve_mean(
        stats,
        np.zeros(gap.size),
        t0=np.minimum(start, 700.0),
        lo=-np.inf,
        hi=700.0,
        tol=1e-14,
        ftol=ftol,
        btol=1e-12,
        cap=True,
        max_iter=200,
        name="lambda (reward)",
    )
    return np.exp(ell)


def _stats_fn(law):
    """The statistics callback of :func:`klfrontier._engine.solve_kl` for one level law."""
    return lambda lam: _engine.tilt_stats(law, lam, accurate=True)


def solve_lam_for_kl(ref: Reference, kl):
    """``lam`` (reward units) with ``D(lam) = kl``; ``inf`` when saturated.

    Examples
    --------
    >>> ref = Reference([0.0, 1.0], probs=[0.5, 0.5])
    >>> lam = solve_lam_for_kl(ref, 0.1)
    >>> round(float(tilted(ref, lam=lam).kl), 12)
    0.1
    """
    check_reference(ref)
    kl = np.asarray(kl, dtype=float)
    if np.isnan(kl).any():
        raise ValueError("kl is NaN")
    if (kl < 0).any():
        raise ValueError("kl must be >= 0")
    flat = kl.ravel()
    out = np.zeros(flat.size)
    if not ref.is_constant:
        sat = flat >= ref.kl_max
        out[sat] = np.inf
        mid = (flat > 0) & ~sat
        if mid.any():
            law = ref.level_law
            lam_u, _, _ = _engine.solve_kl(_stats_fn(law), flat[mid], sd=law.sd)
            out[mid] = ref.lam_from_u(lam_u)
    out = out.reshape(kl.shape)
    return float_or_array(out)


def solve_lam_for_reward(ref: Reference, reward):
    """``lam >= 0`` (reward units) with ``Lambda'(lam) = reward``.

    ``reward`` must lie in ``[E_p r, r_max]``; ``r_max`` gives ``inf``.
    """
    check_reference(ref)
    reward = np.asarray(reward, dtype=float)
    flat = reward.ravel()
    if ref.is_constant:
        out = np.zeros(flat.size)
    else:
        x = ref.to_u(flat)  # standardised target (no overflow near float max)
        gap = x - ref.mean_u
        if np.any(gap < -1e-12 * max(1.0, abs(ref.mean_u))) or np.any(x > 1e-15):
            raise ValueError("reward must lie in [E_p r, r_max] for lam >= 0")
        out = np.zeros(flat.size)
        top = x >= 0
        out[top] = np.inf
        mid = (gap > 0) & ~top
        if mid.any():
            out[mid] = ref.lam_from_u(_solve_lam_for_gain(ref.level_law, gap[mid]))
    out = out.reshape(reward.shape)
    return float_or_array(out)


# ------------------------------------------------------------------- policies
def _saturated_policy(ref: Reference, kl_budget):
    lev = np.full(ref.n_levels, -np.inf)
    lev[-1] = 0.0
    return TiltedPolicy(
        ref=ref,
        level_logprobs=lev,
        kl=ref.kl_max,
        reward=ref.r_max,
        lam=np.inf,
        saturated=True,
        kl_budget=kl_budget,
    )


def tilted(ref: Reference, *, kl=None, beta=None, lam=None) -> TiltedPolicy:
    """Optimal KL-constrained policy ``phi_lam(y) = p(y) e^{lam r(y) - Lambda(lam)}``.

    Give exactly one of

    * ``kl``: the budget Δ; solves ``D(lam) = Δ``.  For ``Δ >= -log p(A)`` the
      optimum is ``p(. | A)`` (``saturated=True``, ``lam=inf``; the budget is
      not used up);
    * ``beta``: the KL-regularised form ``max E r - beta KL``, ``lam = 1/beta``;
    * ``lam``: the inverse temperature itself (``inf`` allowed).

    Returns
    -------
    TiltedPolicy
        With ``lam``, ``saturated``, ``kl_budget`` and ``regularized_value``
        (``beta Lambda(1/beta)`` when ``0 < lam < inf``).

    Notes
    -----
    ``KL = lam Lambda'(lam) - Lambda(lam)``, reward ``Lambda'(lam)``; a constant
    reward returns ``p`` with ``lam = 0``.

    Examples
    --------
    >>> ref = Reference([0.0, 1.0, 2.0], probs=[0.5, 0.3, 0.2])
    >>> pol = tilted(ref, kl=0.1)
    >>> round(pol.kl, 12), round(pol.reward, 6), round(pol.lam, 6)
    (0.1, 1.059857, 0.546514)
    >>> tilted(ref, kl=5.0).saturated
    True
    """
    check_reference(ref)
    name, val = one_of(kl=kl, beta=beta, lam=lam)
    val = real_scalar(val, name, allow_inf=True)
    if name == "kl":
        if val < 0:
            raise ValueError("kl must be >= 0")
        # (a constant reward returns p with lam = 0 for every budget, inf included)
        if not ref.is_constant and val >= ref.kl_max:
            return _saturated_policy(ref, val)
        lam_val = float(solve_lam_for_kl(ref, val))
        budget = val
    elif name == "beta":
        if not val > 0:
            raise ValueError("beta must be > 0")
        lam_val = 1.0 / val
        budget = None
    else:
        if val < 0:
            raise ValueError("lam must be >= 0 (negative lam lowers the reward)")
        lam_val = val
        budget = None
    if ref.is_constant or lam_val == 0:
        return TiltedPolicy(
            ref=ref,
            level_logprobs=ref.level_logq,
            kl=0.0,
            reward=ref.mean_reward,
            reward_gain=0.0,
            lam=0.0,
            kl_budget=budget,
        )
    lam_u = ref.lam_to_u(lam_val)
    if not np.isfinite(lam_u) or lam_u > 1e300:
        return _saturated_policy(ref, budget)
    st = tilt_stats(ref, [lam_u])
    lev = ref.level_logq + lam_u * ref.level_u - st.cgf[0]
    regularized_value = None
    if lam_val > 0:
        # beta Lambda(1/beta) = r_max + Lambda_u(lam_u) / lam = r_max + 2 h Lambda_u / lam_u, in
        # halves h: Lambda_u / lam alone overflows for rewards near float max (sweep_numerics)
        c = float(st.cgf[0]) / lam_u
        regularized_value = (ref.r_max + c * ref.half_range) + c * ref.half_range
    # gain_u * (r_max - r_min) through the half range: the range itself overflows for rewards
    # near ±float max, where reward_scale is inf (sweep_numerics)
    gain = float(st.gain[0]) * 2.0 * ref.half_range
    if np.isfinite(gain):
        reward = ref.mean_reward + gain
    else:
        reward = 2.0 * (ref.mean_reward / 2 + float(st.gain[0]) * ref.half_range)
    reward = min(max(reward, ref.r_min), ref.r_max)
    return TiltedPolicy(
        ref=ref,
        level_logprobs=lev,
        kl=float(st.kl[0]),
        reward=reward,
        reward_gain=gain,
        lam=lam_val,
        kl_budget=budget,
        regularized_value=regularized_value,
    )


@dataclass
class Frontier:
    """The reward-KL frontier ``R*(Δ)`` sampled at budgets ``kl``.

    Attributes
    ----------
    kl : ndarray
        Requested budgets Δ.
    kl_used : ndarray
        ``min(Δ, -log p(A))``: the KL the optimal policy actually spends.
    reward : ndarray
        ``R*(Δ) = Lambda'(lam_Δ)``.
    lam : ndarray
        ``lam_Δ`` (``inf`` where saturated); ``dR*/dΔ = 1/lam_Δ``.
    saturated : ndarray of bool
    """

    kl: np.ndarray
    kl_used: np.ndarray
    reward: np.ndarray
    lam: np.ndarray
    saturated: np.ndarray

    @property
    def slope(self):
        """``dR*/dΔ = 1/lam`` (0 where saturated, ``inf`` at Δ = 0)."""
        with np.errstate(divide="ignore"):
            return np.where(self.saturated, 0.0, 1.0 / self.lam)

    def to_dict(self):
        """The arrays as plain Python lists, keyed by field name."""
        return {k: getattr(self, k).tolist() for k in ("kl", "kl_used", "reward", "lam", "saturated")}


def frontier(ref: Reference, kl) -> Frontier:
    """Reward-KL frontier ``R*(Δ)`` at many budgets at once.

    Parameters
    ----------
    ref : Reference
    kl : array_like
        Budgets Δ >= 0 (any shape; flattened).

    Examples
    --------
    >>> ref = Reference([0.0, 1.0, 2.0], probs=[0.5, 0.3, 0.2])
    >>> fr = frontier(ref, [0.0, 0.1, 10.0])
    >>> fr.reward.round(6).tolist(), fr.saturated.tolist()
    ([0.7, 1.059857, 2.0], [False, False, True])
    """
    check_reference(ref)
    budgets = np.asarray(kl, dtype=float).ravel()
    if budgets.size == 0:
        raise ValueError("kl is empty")
    if np.isnan(budgets).any():
        raise ValueError("kl contains NaN")
    if (budgets < 0).any():
        raise ValueError("kl must be >= 0")
    n = budgets.size
    lam = np.zeros(n)
    reward = np.full(n, ref.mean_reward)
    used = np.zeros(n)
    sat = np.zeros(n, dtype=bool)
    if not ref.is_constant:
        sat = budgets >= ref.kl_max
        lam[sat] = np.inf
        reward[sat] = ref.r_max
        used[sat] = ref.kl_max
        mid = (budgets > 0) & ~sat
        if mid.any():
            law = ref.level_law
            # many budgets: one exact pass per budget, statistics returned by the solver
            lam_u, mean_u, kl_u = _engine.solve_kl(
                _stats_fn(law), budgets[mid], sd=law.sd, stats4_fn=lambda lm: _engine.stats4(law, lm)
            )
            lam[mid] = ref.lam_from_u(lam_u)
            reward[mid] = ref.to_reward(mean_u)
            used[mid] = kl_u
    return Frontier(kl=budgets, kl_used=used, reward=reward, lam=lam, saturated=sat)
