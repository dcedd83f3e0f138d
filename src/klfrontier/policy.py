"""Policy objects: a law on the reference's outcomes plus what was measured on it.

:class:`Policy` is the generic level-symmetric policy (its density ratio to
``p`` depends on the reward only); :class:`TiltedPolicy`,
:class:`BestOfNPolicy` and :class:`SoftBestOfNPolicy` add the parameters of
the method that made them as typed, read-only attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import ClassVar

import numpy as np

from ._logspace import kl_terms, level_expect
from ._validate import float_or_array
from .reference import Reference, check_reference

__all__ = [
    "Policy",
    "TiltedPolicy",
    "BestOfNPolicy",
    "SoftBestOfNPolicy",
    "level_expect",
    "level_kl",
    "level_win_rate",
]


def level_kl(ref: Reference, level_logprobs) -> float:
    """``KL(phi || p)`` for a level-symmetric policy given by its level law."""
    return float(np.sum(kl_terms(level_logprobs, ref.level_logq)))


def level_win_rate(ref: Reference, level_logprobs) -> float:
    """``P(r(Y_phi) > r(Y)) + P(r(Y_phi) = r(Y))/2`` with ``Y ~ p`` independent."""
    _, logFm, _ = ref.level_log_cdf
    phi = np.exp(level_logprobs)
    return float(phi @ (np.exp(logFm) + 0.5 * np.exp(ref.level_logq)))


def _plain(v):
    """A NumPy scalar as a Python one (``None``, bools and strings unchanged)."""
    if v is None or isinstance(v, (bool, str)):
        return v
    return float_or_array(v)


@dataclass(frozen=True, eq=False, kw_only=True)
class Policy:
    r"""A policy whose density ratio to ``p`` depends only on the reward.

    The base of :class:`TiltedPolicy`, :class:`BestOfNPolicy` and
    :class:`SoftBestOfNPolicy`; it is the law alone, with no method
    parameters.  Instances are immutable (``level_logprobs`` is read-only).

    Parameters
    ----------
    ref : Reference
    level_logprobs : (L,) array_like
        Log-law of the reward level under the policy, aligned with
        ``ref.level_values``.
    kl : float
        ``KL(phi || p)`` in nats.
    reward : float
        ``E_phi r``.
    reward_gain : float, optional
        ``E_phi r - E_p r`` as the engine formed it (for the tilt a centred
        covariance, not a difference of two rounded rewards); by default
        ``reward - ref.mean_reward``.

    Attributes
    ----------
    method : str
        ``"policy"``, ``"tilted"``, ``"best_of_n"`` or ``"soft_best_of_n"``
        (a class constant).

    Notes
    -----
    Every quantity on outcomes comes from the level law: ``phi(y) = p(y)
    phi_j / q_j`` for ``r(y) = v_j`` (theory §1).

    Examples
    --------
    >>> import klfrontier as kf
    >>> ref = kf.Reference([0.0, 1.0], probs=[0.5, 0.5])
    >>> pol = kf.Policy(ref=ref, level_logprobs=np.log([0.25, 0.75]),
    ...                 kl=kf.kl([0.25, 0.75], [0.5, 0.5]), reward=0.75)
    >>> pol.probs.tolist(), pol.reward_gain, pol.win_rate
    ([0.25, 0.75], 0.25, 0.625)
    """

    method: ClassVar[str] = "policy"

    ref: Reference = field(repr=False)
    level_logprobs: np.ndarray = field(repr=False)
    kl: float
    reward: float
    reward_gain: float | None = field(default=None, repr=False)

    def __post_init__(self):
        check_reference(self.ref)
        lev = np.asarray(self.level_logprobs, dtype=float)
        if lev.shape != (self.ref.n_levels,):
            raise ValueError(
                f"level_logprobs must have shape ({self.ref.n_levels},) like "
                f"ref.level_values, got {lev.shape}"
            )
        if lev.flags.writeable:
            lev = lev.view()  # a read-only view: no copy of an (L,) law
            lev.flags.writeable = False
        object.__setattr__(self, "level_logprobs", lev)
        object.__setattr__(self, "kl", float(self.kl))
        object.__setattr__(self, "reward", float(self.reward))
        gain = self.reward - self.ref.mean_reward if self.reward_gain is None else self.reward_gain
        object.__setattr__(self, "reward_gain", float(gain))

    @property
    def logprobs(self):
        """Log-probabilities of the K outcomes (``-inf`` where zero)."""
        return self.ref.to_outcomes(self.level_logprobs)

    @property
    def probs(self):
        """Probabilities of the K outcomes."""
        return np.exp(self.logprobs)

    @property
    def level_probs(self):
        """Law of the reward level (aligned with ``ref.level_values``)."""
        return np.exp(self.level_logprobs)

    def expect(self, values) -> float:
        r"""``E_phi[values]`` for a per-outcome array, exactly, through the reward levels.

        Parameters
        ----------
        values : (K,) array_like
            A finite number per outcome, aligned with ``ref.rewards`` (the
            order the :class:`~klfrontier.Reference` was built in): a gold
            reward, an indicator, a second score.

        Returns
        -------
        float

        Raises
        ------
        ValueError
            Naming ``values``: wrong shape or length, NaN or inf.

        Notes
        -----
        The policy's density ratio to ``p`` depends on ``r(y)`` only, so
        within a reward level it is proportional to ``p`` and (theory §9)

        .. math:: E_\phi[x] = \sum_j \phi(r = v_j)\, E_p[x \mid r = v_j].

        The conditional means come from :meth:`Reference.level_mean` and the
        sum over levels from ``level_expect`` (both centred and corrected
        once, so the error is relative to the spread of ``x``, not its size).
        ``expect(ref.rewards)`` equals ``reward`` and ``expect(ones)`` is 1.

        Examples
        --------
        >>> import klfrontier as kf
        >>> ref = kf.Reference([0, 1, 1], probs=[0.5, 0.25, 0.25])
        >>> b = kf.best_of_n(ref, n=2)        # levels: phi = (0.25, 0.75)
        >>> b.expect([0.0, 2.0, 4.0])         # 0.75 * (2 + 4) / 2
        2.25
        >>> b.expect(ref.rewards) == b.reward
        True
        """
        return level_expect(self.level_logprobs, self.ref.level_mean(values))

    @property
    def gold(self):
        """``E_phi[gold]`` when the reference carries ``gold=`` scores, else ``None``.

        The policy selects with the proxy reward ``r`` (``reward``) and is
        judged by the gold one (theory §9): see :meth:`expect`.

        >>> import klfrontier as kf
        >>> ref = kf.Reference([0, 1, 1], probs=[0.5, 0.25, 0.25], gold=[0, 2, 4])
        >>> kf.best_of_n(ref, n=2).gold
        2.25
        >>> kf.best_of_n(kf.Reference([0, 1], probs=[0.5, 0.5]), n=2).gold is None
        True
        """
        if self.ref.gold is None:
            return None
        return level_expect(self.level_logprobs, self.ref.level_gold)

    @property
    def win_rate(self) -> float:
        """Win rate against the reference: ``P(r(Y_phi) > r(Y)) + P(=)/2``."""
        return level_win_rate(self.ref, self.level_logprobs)

    def _parameters(self) -> dict:
        """The method's own fields (those beyond :class:`Policy`'s), in declaration order."""
        base = {f.name for f in fields(Policy)}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in base}

    def to_dict(self) -> dict:
        """Headline numbers as plain Python: ``method``, ``kl``, ``reward``, ``win_rate``,
        ``gold`` (with gold scores) and the method's parameters.

        JSON-ready through ``klfrontier._json`` (infinities as strings).

        >>> import klfrontier as kf
        >>> ref = kf.Reference([0.0, 1.0], probs=[0.5, 0.5])
        >>> sorted(kf.best_of_n(ref, n=2).to_dict())
        ['kl', 'kl_bound', 'lam_same_kl', 'lam_same_reward', 'log_n', 'method', 'n', 'reward', 'win_rate']
        """
        out = {"method": self.method, "kl": self.kl, "reward": self.reward, "win_rate": self.win_rate}
        if self.ref.gold is not None:
            out["gold"] = self.gold
        out.update({k: _plain(v) for k, v in self._parameters().items()})
        return out

    def __repr__(self):
        extra = "".join(
            f", {k}={v:.6g}" if isinstance(v, float) else f", {k}={v}" for k, v in self._parameters().items()
        )
        return f"{type(self).__name__}(kl={self.kl:.6g}, reward={self.reward:.6g}{extra})"


@dataclass(frozen=True, eq=False, kw_only=True, repr=False)
class TiltedPolicy(Policy):
    r"""The optimal KL-constrained policy ``phi_lam(y) = p(y) e^{lam r(y) - Lambda(lam)}`` (theory §2).

    Made by :func:`klfrontier.tilted`.

    Attributes
    ----------
    lam : float
        Inverse temperature ``lam >= 0`` in reward units (``inf`` when
        saturated).
    saturated : bool
        The budget reached ``-log p(A)``: the policy is ``p(. | A)``,
        ``A = argmax r`` (the budget is not used up).
    kl_budget : float or None
        The budget ``Δ`` asked for (``tilted(ref, kl=Δ)``), else ``None``.
    regularized_value : float or None
        ``max_phi E_phi r - beta KL(phi || p) = beta Lambda(1/beta)`` with
        ``beta = 1/lam``, when ``0 < lam < inf``; else ``None``.

    Examples
    --------
    >>> import math
    >>> import klfrontier as kf
    >>> pol = kf.tilted(kf.Reference([0.0, 1.0], probs=[0.5, 0.5]), lam=1.0)
    >>> pol.method, abs(pol.regularized_value - math.log((1 + math.e) / 2)) < 1e-15
    ('tilted', True)
    >>> pol.beta
    1.0
    """

    method: ClassVar[str] = "tilted"

    lam: float
    saturated: bool = False
    kl_budget: float | None = None
    regularized_value: float | None = None

    @property
    def beta(self) -> float:
        """``1 / lam``: the weight of the KL penalty in ``max E r - beta KL`` (``inf`` at ``lam = 0``)."""
        return np.inf if self.lam == 0 else 1.0 / self.lam


@dataclass(frozen=True, eq=False, kw_only=True, repr=False)
class BestOfNPolicy(Policy):
    """Best-of-N with uniform tie-breaking (theory §3); made by :func:`klfrontier.best_of_n`.

    Attributes
    ----------
    n : float
        ``N`` (``inf`` when ``log_n > 709`` or ``N = inf``).
    log_n : float
        ``log N``, exact for any ``N``.
    kl_bound : float
        ``log N - (N - 1)/N``, the usual formula (an upper bound).
    lam_same_kl : float
        ``lam`` of the tilted policy with the same KL.
    lam_same_reward : float
        ``lam`` of the tilted policy with the same reward (``inf`` when BoN
        reaches ``r_max``): with ``lam_same_kl``, the BoN <-> RLHF dictionary.

    Examples
    --------
    >>> import klfrontier as kf
    >>> b = kf.best_of_n(kf.Reference([0.0, 1.0], probs=[0.5, 0.5]), n=2)
    >>> b.method, b.n, b.reward
    ('best_of_n', 2.0, 0.75)
    """

    method: ClassVar[str] = "best_of_n"

    n: float
    log_n: float
    kl_bound: float
    lam_same_kl: float
    lam_same_reward: float


@dataclass(frozen=True, eq=False, kw_only=True, repr=False)
class SoftBestOfNPolicy(Policy):
    """Soft best-of-N (theory §4); made by :func:`klfrontier.soft_best_of_n`.

    Attributes
    ----------
    n : float
        ``N`` (``inf`` gives the tilted policy).
    log_n : float
        ``log N``.
    lam : float
        Inverse temperature of the selection weights ``e^{lam r}`` (reward
        units; ``inf`` gives best-of-N).
    sum_error : float
        ``|sum_y pi(y) - 1|`` of the quadrature before the final
        renormalisation (``0.0`` for the closed-form limits).

    Examples
    --------
    >>> import klfrontier as kf
    >>> s = kf.soft_best_of_n(kf.Reference([0.0, 1.0], probs=[0.5, 0.5]), n=2, lam=np.inf)
    >>> s.method, s.n, s.lam, s.reward
    ('soft_best_of_n', 2.0, inf, 0.75)
    """

    method: ClassVar[str] = "soft_best_of_n"

    n: float
    log_n: float
    lam: float
    sum_error: float = 0.0
