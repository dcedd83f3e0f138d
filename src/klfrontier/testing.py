"""Hypothesis strategies for property tests of code built on klfrontier.

Requires the ``dev`` extra (``pip install "klfrontier[dev]"``), which provides
`Hypothesis <https://hypothesis.readthedocs.io>`_.

Every float drawn here is normal (no subnormals, no NaN, no inf); probability
weights are at least ``1e-12`` before normalisation, so every generated law is
a law that the library must handle to full accuracy.

Examples
--------
>>> from hypothesis import given
>>> from klfrontier import frontier
>>> from klfrontier.testing import references
>>> @given(references(max_size=6))
... def test_frontier_starts_at_the_mean(ref):
...     assert frontier(ref, [0.0]).reward[0] == ref.mean_reward
"""

from __future__ import annotations

import numpy as np

try:
    from hypothesis import assume
    from hypothesis import strategies as st
except ImportError as exc:  # tested by simulating a missing hypothesis
    raise ImportError(
        'klfrontier.testing needs Hypothesis, which comes with the dev extra: pip install "klfrontier[dev]"'
    ) from exc

from ._logspace import logsumexp
from .reference import Reference

__all__ = ["references", "prob_vectors", "policies_on", "reward_vectors"]

#: Smallest probability weight drawn before normalisation.
MIN_WEIGHT = 1e-12

# Reward scales: rewards are drawn in [-1, 1] (plus a shift), then scaled.
_SCALES = (1e-8, 1e-3, 1.0, 7.0, 1e3, 1e8)
_SHIFTS = (0.0, 0.0, 1.0, -3.0, 100.0)
# Anything below this in magnitude is flushed to 0 (keeps scaled values normal).
_FLUSH = 1e-280


def _weights(min_size, max_size, *, allow_zero=False):
    """Lists of positive weights, mixing uniform and log-uniform draws."""
    w = st.one_of(
        st.floats(MIN_WEIGHT, 1.0, allow_subnormal=False),
        st.floats(np.log10(MIN_WEIGHT), 0.0, allow_subnormal=False).map(lambda e: 10.0**e),
    )
    if allow_zero:
        w = st.one_of(st.just(0.0), w)
    return st.lists(w, min_size=min_size, max_size=max_size)


def _normalise(w):
    w = np.asarray(w, dtype=float)
    return w / w.sum()


@st.composite
def prob_vectors(draw, size, *, allow_zero=False):
    """Probability vectors of length ``size`` (a NumPy array summing to 1).

    Entries are positive weights in ``[1e-12, 1]`` (uniform or log-uniform)
    divided by their sum; with ``allow_zero=True`` some entries are exactly 0
    (at least one stays positive).

    Examples
    --------
    >>> from hypothesis import given
    >>> from klfrontier import kl
    >>> @given(prob_vectors(4), prob_vectors(4))
    ... def test_gibbs(a, b):
    ...     assert kl(a, b) >= -1e-15
    """
    size = int(size)
    if size < 1:
        raise ValueError("size must be >= 1")
    w = draw(_weights(size, size, allow_zero=allow_zero))
    assume(any(x > 0 for x in w))
    return _normalise(w)


@st.composite
def reward_vectors(draw, size, *, ties=True):
    """Finite reward vectors of length ``size`` on a random scale.

    Values in ``[-1, 1]`` plus a shift, times a scale from ``1e-8`` to
    ``1e8``.  With ``ties=True`` the values are drawn from a small pool, so
    tied rewards are common; with ``ties=False`` they are all distinct.
    """
    size = int(size)
    base = st.floats(-1.0, 1.0, allow_nan=False, allow_subnormal=False)
    scale = draw(st.sampled_from(_SCALES))
    shift = draw(st.sampled_from(_SHIFTS))
    if ties:
        pool = draw(st.lists(base, min_size=1, max_size=size, unique=True))
        idx = draw(st.lists(st.integers(0, len(pool) - 1), min_size=size, max_size=size))
        x = np.asarray(pool)[idx]
    else:
        x = np.asarray(draw(st.lists(base, min_size=size, max_size=size, unique=True)))
    r = (x + shift) * scale
    r[np.abs(r) < _FLUSH] = 0.0
    if not ties:
        assume(np.unique(r).size == size)  # scaling may merge neighbours
    return r


@st.composite
def references(draw, min_size=1, max_size=12, ties=True, *, allow_zero=False):
    """:class:`~klfrontier.reference.Reference` objects with K in ``[min_size, max_size]``.

    Parameters
    ----------
    min_size, max_size : int
        Range of the number of outcomes K.
    ties : bool
        Allow (and favour) tied rewards; ``False`` gives distinct rewards.
    allow_zero : bool
        Let some outcomes have ``p(y) = 0`` (at least one stays positive).

    Notes
    -----
    Probabilities are weights in ``[1e-12, 1]`` normalised by their sum;
    rewards come from :func:`reward_vectors` (scales ``1e-8`` to ``1e8``).

    Examples
    --------
    >>> from hypothesis.strategies import SearchStrategy
    >>> isinstance(references(max_size=5, ties=False), SearchStrategy)
    True
    """
    if not 1 <= min_size <= max_size:
        raise ValueError("need 1 <= min_size <= max_size")
    k = draw(st.integers(min_size, max_size))
    p = draw(prob_vectors(k, allow_zero=allow_zero))
    r = draw(reward_vectors(k, ties=ties))
    if not ties:
        # distinct on the support too (zero-probability outcomes are dropped)
        assume(np.unique(r[p > 0]).size == np.count_nonzero(p))
    return Reference(r, probs=p)


@st.composite
def policies_on(draw, ref: Reference):
    """Probability vectors on ``ref``'s outcomes, absolutely continuous w.r.t. ``p``.

    A mix of: independent weights on the support (some may be 0), small
    multiplicative perturbations of ``p``, and point masses on one outcome
    of the support.  Zero where ``p(y) = 0``.

    Examples
    --------
    >>> ref = Reference([0.0, 1.0, 2.0], probs=[0.5, 0.5, 0.0])
    >>> from hypothesis import given
    >>> @given(policies_on(ref))
    ... def test_support(phi):
    ...     assert phi[2] == 0.0
    """
    support = np.flatnonzero(ref.level_index >= 0)
    kind = draw(st.sampled_from(("weights", "perturb", "point")))
    phi = np.zeros(ref.size)
    if kind == "point":
        phi[draw(st.sampled_from(support.tolist()))] = 1.0
        return phi
    if kind == "perturb":
        f = draw(st.lists(st.floats(0.25, 4.0), min_size=support.size, max_size=support.size))
        logw = ref.logprobs[support] + np.log(f)  # log space: p may be tiny
        phi[support] = np.exp(logw - logsumexp(logw))
        return phi
    w = np.asarray(draw(_weights(support.size, support.size, allow_zero=True)))
    assume((w > 0).any())
    phi[support] = _normalise(w)
    return phi
