"""Real and built-in reference models, loadable by name (theory §10).

>>> from klfrontier import instances
>>> sorted(instances.available())
['bernoulli', 'three-letter', 'unigram-afinn', 'unigram-vader', 'unigram-vader-afinn']
>>> instances.load("three-letter").ref.size
3

``unigram-vader`` / ``unigram-afinn`` / ``unigram-vader-afinn`` need the data
extra (``pip install "klfrontier[data]"``); ``three-letter`` and ``bernoulli``
need nothing.  Importing this package imports no optional dependency.
``unigram-vader-afinn`` is the proxy-versus-gold instance (theory §9): VADER is
the reward policies select with, and its reference carries the AFINN score of
every word as ``gold=``, so each policy reports ``policy.gold``.
"""

from __future__ import annotations

import inspect

from ._base import Instance, lattice_span
from .builtin import bernoulli, three_letter

__all__ = [
    "Instance",
    "UnknownInstanceError",
    "available",
    "bernoulli",
    "bigram_vader",
    "lattice_span",
    "load",
    "three_letter",
    "unigram_proxy_gold",
    "unigram_sentiment",
]


class UnknownInstanceError(KeyError, ValueError):
    """Unknown instance name (a ``ValueError`` and, for dict-like callers, a ``KeyError``)."""

    def __str__(self):  # KeyError would repr-quote the message
        return str(self.args[0]) if self.args else ""


def unigram_sentiment(top_n=50_000, reward="vader", lang="en") -> Instance:
    # Thin forwarder so that importing klfrontier.instances does not even
    # import the module that imports wordfreq.
    from .unigram import unigram_sentiment as _build

    return _build(top_n=top_n, reward=reward, lang=lang)


unigram_sentiment.__doc__ = """Unigram LM (wordfreq) with a sentiment-lexicon reward (VADER or AFINN).

See :func:`klfrontier.instances.unigram.unigram_sentiment` for the full
description; needs ``pip install "klfrontier[data]"``.
"""


def unigram_proxy_gold(top_n=50_000, proxy="vader", gold="afinn", lang="en") -> Instance:
    # Thin forwarder, as unigram_sentiment above.
    from .unigram import unigram_proxy_gold as _build

    return _build(top_n=top_n, proxy=proxy, gold=gold, lang=lang)


unigram_proxy_gold.__doc__ = """Unigram LM (wordfreq): one lexicon as the proxy reward, another as gold.

The reference of ``unigram_sentiment(top_n, reward=proxy)`` with ``gold=``
the other lexicon's score (0 for words without one); see
:func:`klfrontier.instances.unigram.unigram_proxy_gold`.  Needs
``pip install "klfrontier[data]"``.
"""


def bigram_vader(min_count=2, *, length=200, discount=0.75):
    # Thin forwarder (a Markov reference, not an Instance: see klfrontier.instances.bigram);
    # `klfrontier demo --instance bigram` runs it (klfrontier.jobs_markov).
    from .bigram import bigram_vader as _build

    return _build(min_count=min_count, length=length, discount=discount)


bigram_vader.__doc__ = """Bigram model of gensim's Lee corpus (Kneser–Ney), VADER reward: a Markov reference.

See :func:`klfrontier.instances.bigram.bigram_vader`; needs
``pip install "klfrontier[data]"``.
"""


def _unigram(reward):
    def build(top_n=50_000, lang="en"):
        return unigram_sentiment(top_n=top_n, reward=reward, lang=lang)

    return build


#: name -> (builder, one-line description, extra needed or None)
_REGISTRY = {
    "unigram-vader": (
        _unigram("vader"),
        "wordfreq English unigram law (top 50k words) with VADER valence reward; lattice h=0.1",
        "data",
    ),
    "unigram-afinn": (
        _unigram("afinn"),
        "wordfreq English unigram law (top 50k words) with AFINN-165 score reward; lattice h=1",
        "data",
    ),
    "unigram-vader-afinn": (
        lambda top_n=50_000, lang="en": unigram_proxy_gold(top_n=top_n, lang=lang),
        "wordfreq English unigram law (top 50k words): VADER valence selects (the reward), "
        "AFINN-165 score judges (ref.gold)",
        "data",
    ),
    "three-letter": (
        three_letter,
        "p=(0.5, 0.3, 0.2), r=(0, 1, sqrt 2): the theory §6 example (non-lattice)",
        None,
    ),
    "bernoulli": (
        bernoulli,
        "p=(0.7, 0.3), r=(0, 1): reward 1 with probability p=0.3 (lattice h=1)",
        None,
    ),
}


def available() -> dict[str, str]:
    """Instance names with a one-line description (``[needs klfrontier[data]]`` where so).

    >>> available()["bernoulli"]
    'p=(0.7, 0.3), r=(0, 1): reward 1 with probability p=0.3 (lattice h=1)'
    """
    out = {}
    for name, (_, desc, extra) in _REGISTRY.items():
        out[name] = desc if extra is None else f"{desc} [needs klfrontier[{extra}]]"
    return out


def load(name: str, **kwargs) -> Instance:
    """Build the instance ``name`` (see :func:`available`) with keyword overrides.

    Parameters
    ----------
    name : str
        ``"unigram-vader"``, ``"unigram-afinn"``, ``"unigram-vader-afinn"``
        (keywords ``top_n``, ``lang``), ``"three-letter"`` or ``"bernoulli"``
        (keyword ``p``).

    Raises
    ------
    UnknownInstanceError
        (a ``ValueError`` and a ``KeyError``) for an unknown name.
    ImportError
        When the instance needs the data extra and it is not installed.

    >>> load("bernoulli", p=0.25).ref.probs.round(2).tolist()
    [0.75, 0.25]
    """
    try:
        build = _REGISTRY[name][0]
    except (KeyError, TypeError):
        raise UnknownInstanceError(f"unknown instance {name!r}; available: {', '.join(_REGISTRY)}") from None
    try:
        inspect.signature(build).bind(**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad keyword arguments for instance {name!r}: {exc}") from None
    return build(**kwargs)
