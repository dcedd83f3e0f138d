"""Small built-in instances that need no optional package."""

from __future__ import annotations

import math
from numbers import Real

from ..reference import Reference
from ._base import Instance

__all__ = ["three_letter", "bernoulli"]


def three_letter() -> Instance:
    """theory §6 example: ``p = (0.5, 0.3, 0.2)``, ``r = (0, 1, √2)``.

    The rewards are not on a lattice (``√2`` is irrational), so the
    second-order BoN asymptotics of theory §6 apply in their non-lattice form.

    >>> inst = three_letter()
    >>> inst.words, inst.lattice, round(inst.ref.kl_max, 6)
    (['a', 'b', 'c'], None, 1.609438)
    """
    ref = Reference([0.0, 1.0, math.sqrt(2.0)], probs=[0.5, 0.3, 0.2])
    return Instance(
        ref=ref,
        words=["a", "b", "c"],
        name="three-letter",
        description=(
            "Three outcomes with p = (0.5, 0.3, 0.2) and rewards (0, 1, sqrt 2) "
            "(theory §6 example; non-lattice)."
        ),
        source={},
        lattice=None,
        meta={"spec": "§6"},
    )


def bernoulli(p: float = 0.3) -> Instance:
    """Two outcomes: reward 1 with probability ``p``, reward 0 otherwise.

    Parameters
    ----------
    p : float, default 0.3
        Probability of the rewarded outcome, ``0 < p < 1``.

    >>> inst = bernoulli()
    >>> inst.words, inst.lattice, round(inst.ref.kl_max, 6)
    (['0', '1'], 1.0, 1.203973)
    """
    if isinstance(p, bool) or not isinstance(p, Real) or not (0.0 < float(p) < 1.0):
        raise ValueError(f"p must be a real number with 0 < p < 1, got {p!r}")
    p = float(p)
    # log1p keeps 1 - p exact for tiny p.
    ref = Reference([0.0, 1.0], logprobs=[math.log1p(-p), math.log(p)])
    return Instance(
        ref=ref,
        words=["0", "1"],
        name="bernoulli",
        description=f"Bernoulli reward: r = 1 with probability {p:g}, else 0 (lattice h = 1).",
        source={},
        lattice=1.0,
        meta={"p": p},
    )
