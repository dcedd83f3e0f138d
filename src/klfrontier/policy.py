"""Policy objects: a law on the reference's outcomes plus what was measured on it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._logspace import level_expect
from .reference import Reference

__all__ = ["Policy", "level_expect", "level_kl", "level_win_rate"]


def level_kl(ref: Reference, level_logprobs) -> float:
    """``KL(phi || p)`` for a level-symmetric policy given by its level law."""
    from ._logspace import kl_terms

    return float(np.sum(kl_terms(level_logprobs, ref.level_logq)))


def level_win_rate(ref: Reference, level_logprobs) -> float:
    """``P(r(Y_phi) > r(Y)) + P(r(Y_phi) = r(Y))/2`` with ``Y ~ p`` independent."""
    _, logFm, _ = ref.level_log_cdf
    phi = np.exp(level_logprobs)
    return float(phi @ (np.exp(logFm) + 0.5 * np.exp(ref.level_logq)))


@dataclass(eq=False)
class Policy:
    """A policy whose density ratio to ``p`` depends only on the reward.

    Attributes
    ----------
    ref : Reference
    method : str
        ``"tilted"``, ``"best_of_n"`` or ``"soft_best_of_n"``.
    level_logprobs : (L,) ndarray
        Log-law of the reward level under the policy.
    kl : float
        ``KL(phi || p)`` in nats.
    reward : float
        ``E_phi r``.
    params : dict
        Method parameters (``lam``, ``n``, ``log_n``, ...), also exposed as
        attributes.
    gain : float, optional
        ``E_phi r - E_p r`` as its engine formed it (a centred covariance for
        the tilt); ``None``: ``reward - ref.mean_reward``.
    """

    ref: Reference
    method: str
    level_logprobs: np.ndarray
    kl: float
    reward: float
    params: dict = field(default_factory=dict)
    gain: float | None = None

    def __getattr__(self, name):
        params = self.__dict__.get("params", {})
        if name in params:
            return params[name]
        raise AttributeError(f"{type(self).__name__!s} ({self.method}) has no attribute {name!r}")

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

    @property
    def reward_gain(self) -> float:
        """``E_phi r - E_p r`` (for the tilt a centred covariance: no difference of rounded rewards)."""
        return self.gain if self.gain is not None else self.reward - self.ref.mean_reward

    def summary(self) -> dict:
        """Plain-Python summary of the headline numbers."""
        out = {"method": self.method, "kl": self.kl, "reward": self.reward,
               "win_rate": self.win_rate}
        if self.ref.gold is not None:
            out["gold"] = self.gold
        out.update({k: (float(v) if np.ndim(v) == 0 and v is not None and not isinstance(v, bool) else v)
                    for k, v in self.params.items()})
        return out

    def __repr__(self):
        extra = ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in self.params.items())
        return (f"Policy({self.method}, kl={self.kl:.6g}, reward={self.reward:.6g}"
                + (f", {extra}" if extra else "") + ")")
