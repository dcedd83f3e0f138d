"""Near-optimality of any policy: reward gap and KL to the optimal policy (theory §2).

For any policy ``phi << p`` and any ``lam >= 0`` with ``Δ = D(lam)``,

    KL(phi || phi_lam) = KL(phi || p) - lam E_phi r + Lambda(lam)
                       = [KL(phi || p) - Δ] + lam [R*(Δ) - E_phi r].

:func:`optimality` evaluates both sides at the budget the policy itself spends,
``Δ = KL(phi || p)``: the first bracket vanishes and the KL from ``phi`` to
the optimal policy of the same KL is ``lam_Δ`` times its reward gap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._logspace import kl_terms, log_total, log_total_probs
from ._validate import one_of, prob_array
from .policy import Policy, TiltedPolicy
from .reference import SUM_TOL, Reference, check_reference
from .tilt import tilted

__all__ = ["optimality", "Optimality"]


@dataclass(eq=False)
class Optimality:
    """How far a policy sits from the reward-KL frontier (theory §2).

    Attributes
    ----------
    kl : float
        ``KL(phi || p)`` (nats): the budget ``Δ`` the policy spends.
    reward : float
        ``E_phi r``.
    frontier_reward : float
        ``R*(Δ)``, the best reward any policy with ``KL <= Δ`` reaches.
    reward_gap : float
        ``R*(Δ) - E_phi r >= 0`` (up to rounding), computed in the reference's
        standardised units, then scaled to reward units.
    lam : float
        ``lam_Δ`` in reward units (``inf`` when saturated, 0 for a constant
        reward or ``Δ = 0``).
    saturated : bool
        ``Δ >= -log p(A)``: the optimal policy is ``p(. | A)``.
    optimal : TiltedPolicy
        The optimal policy ``phi_Δ`` of the same KL.
    kl_optimal : float
        ``KL(phi_Δ || p)``: equals ``Δ`` up to the solver's tolerance, except
        when saturated (``-log p(A)``) or for a constant reward (0).
    kl_to_optimal : float
        ``KL(phi || phi_Δ)`` computed directly from the two laws.
    kl_to_optimal_identity : float
        ``[Δ - kl_optimal] + lam * reward_gap``, the right-hand side of the
        identity (with ``inf * 0 = 0``).
    identity_residual : float
        ``kl_to_optimal - kl_to_optimal_identity`` (0 when both are ``inf``).

    Notes
    -----
    Saturation.  When ``Δ >= -log p(A)``, ``phi_Δ = p(. | A)`` and
    ``lam = inf``.  If ``phi`` is supported on ``A`` its reward is ``r_max``,
    the gap is 0 and ``kl_to_optimal = Δ + log p(A)`` (finite); otherwise the
    gap is positive and ``kl_to_optimal = inf``.  The identity holds in both
    cases with the convention ``inf * 0 = 0``, and ``identity_residual`` is 0
    when both sides are ``inf``.

    Constant reward.  Every policy has the same reward, ``phi_Δ = p``,
    ``lam = 0``, the gap is 0 and ``kl_to_optimal = Δ``.
    """

    kl: float
    reward: float
    frontier_reward: float
    reward_gap: float
    lam: float
    saturated: bool
    optimal: TiltedPolicy
    kl_optimal: float
    kl_to_optimal: float
    kl_to_optimal_identity: float
    identity_residual: float

    def bound(self, eps1=0.0, eps2=None) -> float:
        """The theorem's bound ``eps1 + lam_Δ eps2`` on ``KL(· || phi_Δ)``.

        Any policy whose KL exceeds ``Δ = self.kl`` by at most ``eps1 >= 0``
        and whose reward falls short of ``R*(Δ)`` by at most ``eps2 >= 0`` is
        within ``eps1 + lam_Δ eps2`` of ``phi_Δ`` in KL.  With the defaults
        (``eps1 = 0``, ``eps2 = reward_gap``) the bound is attained by this
        policy: it equals ``kl_to_optimal_identity`` up to the solver's
        tolerance on ``kl_optimal``.  ``inf * 0 = 0``.

        Examples
        --------
        >>> ref = Reference([0.0, 1.0, 2.0], probs=[0.5, 0.3, 0.2])
        >>> opt = optimality(ref, [0.4, 0.1, 0.5])
        >>> abs(opt.bound() - opt.kl_to_optimal) < 1e-12
        True
        >>> round(opt.bound(0.01, 0.02), 6) == round(0.01 + opt.lam * 0.02, 6)
        True
        """
        if eps2 is None:
            eps2 = max(self.reward_gap, 0.0)
        eps1, eps2 = float(eps1), float(eps2)
        for name, v in (("eps1", eps1), ("eps2", eps2)):
            if not v >= 0:  # also rejects NaN
                raise ValueError(f"{name} must be >= 0, got {v!r}")
        return eps1 + _times(self.lam, eps2)

    def to_dict(self) -> dict:
        """The headline numbers as plain Python (every field except ``optimal``)."""
        keys = (
            "kl",
            "reward",
            "frontier_reward",
            "reward_gap",
            "lam",
            "saturated",
            "kl_optimal",
            "kl_to_optimal",
            "kl_to_optimal_identity",
            "identity_residual",
        )
        return {k: getattr(self, k) for k in keys}

    def __repr__(self):
        return (
            f"Optimality(kl={self.kl:.6g}, reward={self.reward:.6g}, "
            f"frontier_reward={self.frontier_reward:.6g}, reward_gap={self.reward_gap:.6g}, "
            f"lam={self.lam:.6g}, kl_to_optimal={self.kl_to_optimal:.6g}"
            + (", saturated" if self.saturated else "")
            + ")"
        )


def _times(lam, x):
    """``lam * x`` with ``inf * 0 = 0``."""
    return 0.0 if x == 0 else lam * x


def _policy_logprobs(ref: Reference, policy, policy_logprobs):
    """Validate the policy and return its exactly normalised log-law on outcomes."""
    one_of(policy=policy, policy_logprobs=policy_logprobs)
    if isinstance(policy, Policy):
        if policy.ref.size != ref.size:
            raise ValueError(f"policy is a Policy on {policy.ref.size} outcomes, ref has {ref.size}")
        policy_logprobs, policy = policy.logprobs, None
    name = "policy" if policy is not None else "policy_logprobs"
    try:
        x = np.asarray(policy if policy is not None else policy_logprobs, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be an array of real numbers") from exc
    if x.ndim != 1 or x.size != ref.size:
        raise ValueError(f"{name} must have shape ({ref.size},) like ref, got {x.shape}")
    if name == "policy":
        x = prob_array(x, name)
        with np.errstate(divide="ignore"):
            lp = np.log(x)
    else:
        if np.isnan(x).any():
            raise ValueError(f"{name} contains NaN")
        if np.isposinf(x).any():
            raise ValueError("policy_logprobs contains +inf")
        lp = x
    if np.isneginf(lp).all():
        raise ValueError(f"{name}: every outcome has probability zero")
    total = log_total_probs(x) if name == "policy" else log_total(lp)
    if abs(np.expm1(total)) > SUM_TOL:
        raise ValueError(f"{name} sum to {np.exp(total):.12g}, not 1 (tolerance {SUM_TOL:g})")
    off = np.isneginf(ref.logprobs) & ~np.isneginf(lp)
    if off.any():
        raise ValueError(
            f"{name} is not absolutely continuous w.r.t. p: positive mass on outcomes "
            f"with p(y) = 0 (indices {np.flatnonzero(off)[:10].tolist()})"
        )
    # Differences from 1 within SUM_TOL are rounding; remove them exactly so
    # that the non-negative KL form sum b h(log(a/b)) applies.
    return lp - total


def optimality(ref: Reference, policy=None, *, policy_logprobs=None) -> Optimality:
    """Reward gap of a policy and its KL to the optimal policy of the same KL.

    Parameters
    ----------
    ref : Reference
    policy : Policy or (K,) array_like
        A :class:`~klfrontier.policy.Policy` on ``ref``'s outcomes (read
        through its log-law), or the probabilities of any law ``phi`` on
        ``ref``'s K outcomes: finite, ``>= 0``, summing to 1 within ``1e-9``
        (the rounding is removed exactly), and absolutely continuous w.r.t.
        ``p`` (no mass where ``p(y) = 0``).
    policy_logprobs : (K,) array_like, optional
        ``log phi`` instead of ``policy`` (``-inf`` allowed); exactly one of
        the two.

    Returns
    -------
    Optimality

    Raises
    ------
    ValueError
        If the policy is malformed (naming ``policy`` or ``policy_logprobs``).

    Notes
    -----
    With ``Δ = KL(phi || p)``, ``lam = lam_Δ`` and ``phi_Δ = phi_lam``:

        KL(phi || phi_Δ) = [KL(phi || p) - D(lam)] + lam [R*(Δ) - E_phi r].

    Both sides are reported: ``kl_to_optimal`` sums ``phi log(phi/phi_Δ)``
    over outcomes (as the non-negative terms of
    ``klfrontier._logspace.kl_terms``); ``kl_to_optimal_identity`` is the
    right-hand side, with the reward gap and ``lam`` in standardised units
    (their product is unit-free).  Consequence (the theorem): a policy whose
    KL exceeds Δ by at most ``eps1`` and whose reward falls short of
    ``R*(Δ)`` by at most ``eps2`` is within ``eps1 + lam_Δ eps2`` of
    ``phi_Δ`` in KL; see :meth:`Optimality.bound`.  See :class:`Optimality`
    for saturation (``lam = inf``) and constant rewards.

    Examples
    --------
    >>> from klfrontier.bon import best_of_n
    >>> ref = Reference([0.0, 1.0, 2.0], probs=[0.5, 0.3, 0.2])
    >>> opt = optimality(ref, best_of_n(ref, n=4))
    >>> round(opt.kl, 6), round(opt.reward, 4), round(opt.frontier_reward, 6)
    (0.559751, 1.5279, 1.550165)
    >>> round(opt.reward_gap, 6), round(opt.lam, 6), round(opt.kl_to_optimal, 6)
    (0.022265, 1.384401, 0.030824)
    >>> abs(opt.identity_residual) < 1e-12
    True
    >>> optimality(ref, tilted(ref, kl=0.3)).kl_to_optimal < 1e-12
    True
    """
    check_reference(ref)
    lphi = _policy_logprobs(ref, policy, policy_logprobs)
    on = ref.level_index >= 0
    # standardised reward per outcome (0 off the support, where phi = 0 too)
    u = np.zeros(ref.size)
    u[on] = ref.level_u[ref.level_index[on]]
    phi = np.exp(lphi)
    # u <= 0 everywhere: the sum has no cancellation.
    mean_u = float(phi @ u)
    kl = float(np.sum(kl_terms(lphi[on], ref.logprobs[on])))

    opt = tilted(ref, kl=kl)
    saturated = bool(opt.saturated)
    lam = float(opt.lam)
    lev = opt.level_logprobs
    opt_mean_u = float(np.exp(lev) @ ref.level_u)
    if ref.is_constant:
        gap_u = 0.0
    elif saturated:
        gap_u = 0.0 - mean_u  # r_max sits at u = 0
    else:
        gap_u = opt_mean_u - mean_u
    lam_u = ref.lam_to_u(lam) if np.isfinite(lam) else np.inf

    kl_to_opt = float(np.sum(kl_terms(lphi[on], ref.to_outcomes(lev)[on])))
    identity = (kl - opt.kl) + _times(lam_u, gap_u)
    if np.isinf(kl_to_opt) and np.isinf(identity):
        residual = 0.0
    else:
        residual = kl_to_opt - identity
    return Optimality(
        kl=kl,
        reward=ref.to_reward(mean_u),
        frontier_reward=float(opt.reward),
        reward_gap=float((2.0 * gap_u) * ref.half_range),
        lam=lam,
        saturated=saturated,
        optimal=opt,
        kl_optimal=float(opt.kl),
        kl_to_optimal=kl_to_opt,
        kl_to_optimal_identity=float(identity),
        identity_residual=float(residual),
    )
