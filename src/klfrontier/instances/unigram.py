"""Memoryless LM instance: wordfreq unigram law with a sentiment-lexicon reward.

The reference ``p`` is the ``wordfreq`` unigram distribution of a language
restricted to its ``top_n`` most frequent words and renormalised; the reward
of a word is its valence in a sentiment lexicon shipped inside a PyPI package
(VADER or AFINN), ``0`` for words without an entry.  All data are read from
the installed packages' files: nothing touches the network.

Optional dependencies (``pip install "klfrontier[data]"``): ``wordfreq``
(frequencies), ``vaderSentiment`` (VADER lexicon file) and ``afinn`` (AFINN
word lists).  They are imported, or located, only when an instance is built.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
from functools import cache, lru_cache
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np

from ..reference import Reference
from ._base import Instance, lattice_span

__all__ = ["unigram_sentiment", "unigram_proxy_gold", "REWARDS"]

DATA_EXTRA = 'pip install "klfrontier[data]"'

#: Lexicons: importable package, distribution name (for the version), data file
#: per language, and the grid ``1/den`` the scores lie on.
_LEXICONS: dict[str, dict[str, Any]] = {
    "vader": {
        "package": "vaderSentiment",
        "dist": "vaderSentiment",
        "files": {"en": "vader_lexicon.txt"},
        "den": 10,  # mean valences have one decimal: lattice h = 0.1
        "label": "VADER mean valence (vaderSentiment's vader_lexicon.txt), range [-4, 4]",
    },
    "afinn": {
        "package": "afinn",
        "dist": "afinn",
        "files": {"en": "data/AFINN-en-165.txt", "da": "data/AFINN-da-32.txt"},
        "den": 1,  # integer scores: lattice h = 1
        "label": "AFINN score (afinn's AFINN-{file}), integers in [-5, 5]",
    },
}

#: Reward names accepted by :func:`unigram_sentiment`.
REWARDS = tuple(_LEXICONS)


def _missing(package: str) -> ImportError:
    return ImportError(
        f"klfrontier.instances.unigram_sentiment needs the {package!r} package; "
        f"install the data extra: {DATA_EXTRA}"
    )


def dist_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - odd installs
        return "unknown"


def _package_dir(package: str) -> Path:
    # find_spec locates a top-level package without executing it (vaderSentiment's
    # module imports requests; we only want its data file).
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise _missing(package)
    return Path(next(iter(spec.submodule_search_locations)))


@cache
def read_lexicon(reward: str, lang: str):
    """Parse a lexicon file into ``{key: score}`` plus bookkeeping counts.

    Follows the packages' own readers: the first two tab-separated columns
    (token, mean score); a later duplicate key overrides an earlier one
    (VADER lists ``lol``, ``ok``, ``xd``, ... twice; its dict keeps the last).
    """
    spec = _LEXICONS[reward]
    path = _package_dir(spec["package"]) / spec["files"][lang]
    if not path.is_file():
        raise FileNotFoundError(
            f"{spec['package']} is installed but its lexicon {path} is missing; reinstall it ({DATA_EXTRA})"
        )
    lex: dict[str, float] = {}
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            line = line.strip("\r\n")
            if not line.strip():
                continue
            cols = line.split("\t")
            lex[cols[0].strip()] = float(cols[1])
    n_entries = len(lex)
    # Multi-word entries ("can't stand", "fed up") can never equal one token of a
    # unigram model; drop them.  Their component words keep their own entries.
    multi = sorted(k for k in lex if any(c.isspace() for c in k))
    for k in multi:
        del lex[k]
    # Both packages look up the *lowercased* token, so keys with capitals
    # (VADER emoticons ":D", "O.o", ...) are unreachable there and here.
    unreachable = sorted(k for k in lex if k != k.lower())
    for k in unreachable:
        del lex[k]
    return lex, {
        "lexicon_file": spec["files"][lang],
        "lexicon_entries": n_entries,
        "lexicon_multiword_dropped": len(multi),
        "lexicon_uppercase_dropped": len(unreachable),
    }


@lru_cache(maxsize=8)
def _vocabulary(lang: str, top_n):
    """Top-``top_n`` words and their binned log-frequencies (natural log).

    ``wordfreq`` stores frequencies rounded to centibels: bucket ``i`` holds
    the words of frequency ``10**(-i/100)``, so ``log p = -i ln(10) / 100``
    exactly (and words of one bucket are tied).  The word order and the
    exclusion of multi-digit placeholder tokens ("00", "0000", ...) are those
    of ``wordfreq.top_n_list``; within the last bucket reached, the cut is in
    wordfreq's (alphabetical) order.
    """
    try:
        import wordfreq
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        raise _missing("wordfreq") from exc
    if lang not in wordfreq.available_languages():
        raise ValueError(f"lang {lang!r} has no wordfreq word list")
    buckets = wordfreq.get_frequency_list(lang)
    bucket_of = {w: i for i, bucket in enumerate(buckets) for w in bucket}
    limit = top_n if top_n is not None else len(bucket_of)
    words = wordfreq.top_n_list(lang, limit)
    if top_n is not None and len(words) < top_n:
        raise ValueError(f"top_n={top_n} exceeds the {len(words)} words of wordfreq's {lang!r} list")
    cb = np.fromiter((bucket_of[w] for w in words), dtype=np.int64, count=len(words))
    logp = cb * (-math.log(10.0) / 100.0)
    logp.flags.writeable = False
    return tuple(words), logp, len(bucket_of)


def _check_top_n(top_n):
    if top_n is None:
        return None
    if isinstance(top_n, bool) or not isinstance(top_n, Integral):
        raise ValueError(f"top_n must be a positive integer or None, got {top_n!r}")
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    return int(top_n)


def check_reward(reward, lang, name="reward"):
    """The lowercased lexicon name, after checking it and that it covers ``lang``."""
    if not isinstance(reward, str) or reward.lower() not in _LEXICONS:
        raise ValueError(f"{name} must be one of {', '.join(REWARDS)}, got {reward!r}")
    reward = reward.lower()
    files = _LEXICONS[reward]["files"]
    if not isinstance(lang, str) or lang not in files:
        raise ValueError(
            f"lang {lang!r} is not available for {name} {reward!r} (available: {', '.join(files)})"
        )
    return reward


def lexicon_scores(reward, lang, words):
    """Scores of ``words`` in a lexicon (0 without an entry), snapped to its grid.

    Returns ``(scores, lattice, matched, lexicon meta, label)``: ``lattice``
    is the maximal span (``None`` if a score is off the grid ``1/den``) and
    ``matched`` the number of words with an entry.
    """
    spec = _LEXICONS[reward]
    lex, lex_meta = read_lexicon(reward, lang)
    den = spec["den"]
    scores = np.array([lex.get(w.lower(), 0.0) for w in words], dtype=float)
    lattice = lattice_span(scores, 1.0 / den)
    if lattice is not None:
        scores = np.rint(scores * den) / den  # the double nearest to k/den, as "0.1 k" parses
    matched = int(np.count_nonzero(scores))
    label = spec["label"].format(file=spec["files"][lang].rsplit("AFINN-", 1)[-1])
    return scores, lattice, matched, lex_meta, label


def unigram_sentiment(top_n: int | None = 50_000, reward: str = "vader", lang: str = "en") -> Instance:
    """Unigram LM (wordfreq) with a sentiment-lexicon reward (VADER or AFINN).

    Parameters
    ----------
    top_n : int or None, default 50_000
        Keep the ``top_n`` most frequent words (``None``: the whole list,
        about 321k English words) and renormalise.
    reward : {"vader", "afinn"}
        ``"vader"``: VADER mean valence (on a 0.1 grid, range [-4, 4]);
        ``"afinn"``: AFINN-165 integer score (range [-5, 5]).
    lang : str, default "en"
        Language; VADER is English only, AFINN has ``"en"`` and ``"da"``
        (AFINN-da-32 against wordfreq's small Danish list).

    Returns
    -------
    Instance
        ``lattice`` is the maximal span of the reward lattice (0.1 for VADER
        and 1 for AFINN at the default size).

    Raises
    ------
    ImportError
        If ``wordfreq``, ``vaderSentiment`` or ``afinn`` is missing
        (``pip install "klfrontier[data]"``).
    ValueError
        For a bad ``top_n`` (not a positive integer, or more than the list
        holds), an unknown ``reward`` or an unsupported ``lang``.

    Notes
    -----
    ``p(w) ∝ 10**(-c(w)/100)`` where ``c(w)`` is the word's wordfreq bucket
    (centibels), renormalised over the kept words (``normalize=True``).
    ``r(w) = L[lower(w)]`` for the lexicon ``L``, and ``0`` when absent.
    Matching is exact on the lowercased word, as in the packages' own
    scorers; multi-word lexicon entries ("can't stand", "fed up") are
    dropped because a unigram outcome is one token; entries with capitals
    (VADER emoticons ``:D``, ``O.o``) are dropped because lowercase lookup
    never reaches them; punctuation-only emoticons (``:)``, ``<3``) stay in
    the lexicon but never match, since wordfreq's tokens carry no
    punctuation.  Scores are snapped to their grid (``k/10`` or ``k``) after
    checking that they lie on it, so lattice detection with a tolerance
    succeeds; a score off the grid would leave ``lattice=None``.

    Examples
    --------
    Needs the data extra (``make test`` installs it):

    >>> inst = unigram_sentiment(top_n=1000, reward="afinn")
    >>> inst.words[0], inst.reward_of("good"), inst.lattice
    ('the', 3.0, 1.0)
    """
    top_n = _check_top_n(top_n)
    reward = check_reward(reward, lang)
    spec = _LEXICONS[reward]
    words, logp, n_list = _vocabulary(lang, top_n)
    rewards, lattice, matched, lex_meta, label = lexicon_scores(reward, lang, words)

    ref = Reference(rewards, logprobs=np.array(logp), normalize=True)
    n_txt = "all" if top_n is None else f"top {top_n}"
    meta = {
        "top_n": top_n,
        "reward": reward,
        "lang": lang,
        "wordlist_size": n_list,
        "mass_kept_unnormalised": float(np.exp(logp).sum()),
        "words_with_reward": matched,
        **lex_meta,
    }
    source = {"wordfreq": dist_version("wordfreq"), spec["dist"]: dist_version(spec["dist"])}
    return Instance(
        ref=ref,
        words=list(words),
        name=f"unigram-{reward}",
        description=(
            f"wordfreq {lang!r} unigram law on the {n_txt} words (binned frequencies, "
            f"renormalised); reward = {label}, 0 for the {len(words) - matched} words "
            f"without an entry."
        ),
        source=source,
        lattice=lattice,
        meta=meta,
    )


def unigram_proxy_gold(
    top_n: int | None = 50_000, proxy: str = "vader", gold: str = "afinn", lang: str = "en"
) -> Instance:
    """Two lexicons on the same words: one selects (the proxy reward), the other judges (gold).

    The law ``p`` and the proxy reward ``r`` are those of
    ``unigram_sentiment(top_n, reward=proxy, lang=lang)`` (bit for bit); the
    reference also carries ``gold=`` the other lexicon's score of every word
    (``0`` for words without an entry), so every policy built on it reports
    ``policy.gold = E_pi g`` next to ``policy.reward = E_pi r`` (theory §9).

    Parameters
    ----------
    top_n : int or None, default 50_000
        Vocabulary size, as in :func:`unigram_sentiment`.
    proxy, gold : {"vader", "afinn"}
        The lexicon that rewards (``r``) and the one that judges (``g``).
        Equal names are allowed (then ``g = r``).
    lang : str, default "en"
        A language both lexicons cover (VADER: English only).

    Returns
    -------
    Instance
        Named ``"unigram-<proxy>-<gold>"``; ``lattice`` is the proxy's
        lattice span; ``meta`` adds ``proxy``, ``gold``, ``gold_lattice``,
        ``words_with_gold`` and ``words_with_both``.

    Raises
    ------
    ImportError
        If a data package is missing (``pip install "klfrontier[data]"``).
    ValueError
        Bad ``top_n``, unknown ``proxy`` / ``gold``, or a ``lang`` one of
        them lacks.

    Notes
    -----
    The two lexicons agree on most words (on the top 50k English words the
    correlation of ``r`` and ``g`` under ``p`` is about 0.7) but not at the
    top: the words of highest VADER valence (``magnificently``, ``aml``,
    ``hearts``, ``sweetheart``) have no AFINN entry, so a policy pushed to
    the top of the proxy earns gold 0 — over-optimisation in miniature.

    Examples
    --------
    Needs the data extra (``make test`` installs it):

    >>> inst = unigram_proxy_gold(top_n=2000)
    >>> inst.name, inst.reward_of("good"), float(inst.ref.gold[inst.words.index("good")])
    ('unigram-vader-afinn', 1.9, 3.0)
    """
    top_n = _check_top_n(top_n)
    proxy = check_reward(proxy, lang, "proxy")
    gold = check_reward(gold, lang, "gold")
    base = unigram_sentiment(top_n=top_n, reward=proxy, lang=lang)
    _, logp, _ = _vocabulary(lang, top_n)  # cached: the law base was built from
    g, g_lattice, g_matched, g_meta, g_label = lexicon_scores(gold, lang, base.words)
    # the same arguments as unigram_sentiment's Reference: the same law, bit for bit
    ref = Reference(base.ref.rewards, logprobs=np.array(logp), normalize=True, gold=g)
    both = int(np.count_nonzero((ref.rewards != 0) & (g != 0)))
    meta = {
        **base.meta,
        "proxy": proxy,
        "gold": gold,
        "gold_lattice": g_lattice,
        "words_with_gold": g_matched,
        "words_with_both": both,
        **{f"gold_{k}": v for k, v in g_meta.items()},
    }
    desc = base.description.rstrip(".")
    return Instance(
        ref=ref,
        words=base.words,
        name=f"unigram-{proxy}-{gold}",
        description=(
            f"{desc}; gold = {g_label}, 0 for the {len(base.words) - g_matched} words without "
            f"an entry. Policies select with the first (proxy) and are judged by the second "
            f"(gold); {both} words have both."
        ),
        source={**base.source, _LEXICONS[gold]["dist"]: dist_version(_LEXICONS[gold]["dist"])},
        lattice=base.lattice,
        meta=meta,
    )
