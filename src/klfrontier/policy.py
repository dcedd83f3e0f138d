"""Policy objects: a law on the reference's outcomes plus what was measured on it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .reference import Reference

__all__ = ["Policy", "level_kl", "level_win_rate"]


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
    """

    ref: Reference
    method: str
    level_logprobs: np.ndarray
    kl: float
    reward: float
    params: dict = field(default_factory=dict)

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

    @property
    def win_rate(self) -> float:
        """Win rate against the reference: ``P(r(Y_phi) > r(Y)) + P(=)/2``."""
        return level_win_rate(self.ref, self.level_logprobs)

    @property
    def reward_gain(self) -> float:
        """``E_phi r - E_p r``."""
        return self.reward - self.ref.mean_reward

    def summary(self) -> dict:
        """Plain-Python summary of the headline numbers."""
        out = {"method": self.method, "kl": self.kl, "reward": self.reward,
               "win_rate": self.win_rate}
        out.update({k: (float(v) if np.ndim(v) == 0 and v is not None and not isinstance(v, bool) else v)
                    for k, v in self.params.items()})
        return out

    def __repr__(self):
        extra = ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in self.params.items())
        return (f"Policy({self.method}, kl={self.kl:.6g}, reward={self.reward:.6g}"
                + (f", {extra}" if extra else "") + ")")
