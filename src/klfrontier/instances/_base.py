"""The :class:`Instance` record: a named reference model with its provenance."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import NotOnLatticeError
from ..lattice import RTOL, check_span
from ..policy import level_expect
from ..reference import Reference

__all__ = ["Instance", "lattice_span"]

#: How many argmax words ``to_dict()`` lists (the argmax set is usually tiny).
_MAX_LISTED = 20


def lattice_span(rewards, h, rtol=RTOL):
    """Maximal span of the lattice ``hℤ`` on which ``rewards`` lie, or ``None``.

    Returns ``h * g`` where ``g`` is the gcd of the integer grid indices'
    differences (so the result is the maximal span of the reward law's
    lattice), ``h`` itself when the rewards are all equal, and ``None`` when a
    reward is off the grid ``hℤ``: further than ``rtol`` times the extent of
    the rewards and 0 (the policy of :mod:`klfrontier.lattice`, whose
    :func:`~klfrontier.lattice.check_span` this wraps).

    >>> lattice_span([0.0, 0.2, -0.4], 0.1)
    0.2
    >>> lattice_span([0.0, 0.25], 0.1) is None
    True
    """
    try:
        return float(check_span(rewards, h, origin=0.0, rtol=rtol).h)
    except NotOnLatticeError:
        return None


@dataclass(frozen=True, eq=False)
class Instance:
    """A real (or built-in) reference model with named outcomes.

    Attributes
    ----------
    ref : Reference
        The law ``p`` over the outcomes and their rewards ``r``.
    words : list of str
        Outcome labels, aligned with ``ref.rewards`` / ``ref.logprobs``.
    name : str
        Registry name (``klfrontier.instances.load(name)`` rebuilds it).
    description : str
        One paragraph saying what ``p`` and ``r`` are.
    source : dict of str to str
        Packages the data came from, with their installed versions
        (empty for built-in instances).
    lattice : float or None
        Span ``h`` of the lattice ``hℤ`` the rewards lie on (the maximal span
        for this reward law; offset 0), or ``None`` for non-lattice rewards.
        Rewards are stored as the nearest doubles to ``k h``.
    meta : dict
        Build parameters and data facts (lexicon sizes, entries used, ...).
    """

    ref: Reference
    words: list
    name: str
    description: str
    source: dict = field(default_factory=dict)
    lattice: float | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if len(self.words) != self.ref.size:
            raise ValueError(f"words has {len(self.words)} entries but ref has {self.ref.size} outcomes")

    @property
    def size(self) -> int:
        """Number of outcomes K."""
        return self.ref.size

    def lattice_indices(self):
        """Integer grid indices ``k`` with ``r = k * lattice``.

        Raises
        ------
        ValueError
            If the instance has no lattice.
        """
        if self.lattice is None:
            raise ValueError(f"instance {self.name!r} has no lattice (lattice=None)")
        return np.rint(self.ref.rewards / self.lattice).astype(np.int64)

    def reward_of(self, word: str) -> float:
        """Reward of one outcome label (``KeyError`` if it is not an outcome)."""
        try:
            i = self._index[word]
        except KeyError:
            raise KeyError(f"{word!r} is not an outcome of instance {self.name!r}") from None
        return float(self.ref.rewards[i])

    @property
    def _index(self):
        # frozen dataclass: cache via object.__setattr__ on first use.
        idx = self.__dict__.get("_index_cache")
        if idx is None:
            idx = {w: i for i, w in enumerate(self.words)}
            object.__setattr__(self, "_index_cache", idx)
        return idx

    def to_dict(self) -> dict:
        """Headline facts: K, levels, ``p(r = 0)``, ``p(A)``, argmax words, ``kl_max``.

        ``argmax_words`` lists at most 20 words of ``A = argmax r`` by
        decreasing probability; ``n_argmax`` counts them all.  When the
        reference carries gold scores, ``mean_gold`` (``E_p g``) and
        ``gold_on_argmax`` (``E_p[g | A]``) are added.
        """
        ref = self.ref
        zero = np.flatnonzero(ref.level_values == 0.0)
        p_zero = float(np.exp(ref.level_logq[zero[0]])) if zero.size else 0.0
        top = ref.n_levels - 1
        in_a = np.flatnonzero(ref.level_index == top)
        in_a = in_a[np.argsort(-ref.logprobs[in_a], kind="stable")]
        out = {
            "name": self.name,
            "K": ref.size,
            "levels": ref.n_levels,
            "r_min": ref.r_min,
            "r_max": ref.r_max,
            "mean_reward": ref.mean_reward,
            "p_reward_zero": p_zero,
            "p_argmax": float(np.exp(ref.log_p_argmax)),
            "log_p_argmax": ref.log_p_argmax,
            "kl_max": ref.kl_max,
            "n_argmax": int(in_a.size),
            "argmax_words": [self.words[i] for i in in_a[:_MAX_LISTED]],
            "lattice": self.lattice,
            "source": dict(self.source),
        }
        if ref.level_gold is not None:
            out["mean_gold"] = level_expect(ref.level_logq, ref.level_gold)
            out["gold_on_argmax"] = float(ref.level_gold[-1])
        return out

    def __repr__(self):
        lat = "None" if self.lattice is None else f"{self.lattice:g}"
        return f"Instance({self.name!r}, K={self.size}, levels={self.ref.n_levels}, lattice={lat})"
