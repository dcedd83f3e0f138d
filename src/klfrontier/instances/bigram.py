"""Markov LM instance: a smoothed bigram model of gensim's Lee news corpus with a VADER reward.

theory §10.  The corpus is ``lee_background.cor`` from gensim's test data (300
Australian news articles, one per line, ~62k word tokens); only its file is
read (``importlib.util.find_spec`` locates the installed package without
importing it: gensim itself is heavy).

Tokenisation (documented rule)
------------------------------
Lowercase each article; tokens are the matches of
``[a-z]+(?:'[a-z]+)?`` (words, with one internal apostrophe: ``don't``,
``australia's``) and of ``[.!?]``, which become the sentence-end token
``</s>``.  Digits and other punctuation are dropped; every article starts
after a ``</s>`` and ends with one (added if missing).  Periods of
abbreviations (``u.s.``, ``mr.``) count as sentence ends.

Vocabulary: the words seen at least ``min_count`` times (default 2: 4,041
words), plus ``<unk>`` for every other word and ``</s>``.

Smoothing (interpolated Kneser–Ney, one discount)
-------------------------------------------------
With bigram counts ``c(w, w')`` and ``c(w) = Σ_{w'} c(w, w')``::

    P(w' | w) = max(c(w, w') - D, 0) / c(w)  +  D N₁₊(w ·) / c(w) · P_cont(w')
    P_cont(w') = (N₁₊(· w') + 1) / (Σ_v N₁₊(· v) + K)

``D = 0.75``; ``N₁₊(w ·)`` counts the distinct successors of ``w`` and
``N₁₊(· w')`` the distinct predecessors of ``w'`` (the Kneser–Ney
continuation count), plus one so that every state is reachable from every
state (the chain is irreducible and aperiodic).  ``P`` is dense, but it is
the sum of a sparse matrix (the discounted observed bigrams, ~31k entries)
and the rank-one term ``weight(w) P_cont(w')``: a
:class:`~klfrontier.sequences.markov.BackoffTransition`, which the Markov
engine handles exactly at ``O(nnz + K)`` per step.  The first token follows
``</s>``: ``μ = P(· | </s>)``.

Reward: the VADER mean valence of each word (``vaderSentiment``'s
``vader_lexicon.txt``, read as in :mod:`klfrontier.instances.unigram`),
``0`` for words without an entry, ``<unk>`` and ``</s>``; on the 0.1 grid
(lattice ``h = 0.1``).

Needs ``pip install "klfrontier[data]"`` (gensim and vaderSentiment).
"""

from __future__ import annotations

import importlib.util
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..reference import Reference
from ..sequences.markov import BackoffTransition, Markov
from ._base import Instance
from .unigram import DATA_EXTRA, dist_version, lexicon_scores

__all__ = ["BigramInstance", "bigram_vader", "TOKEN_PATTERN", "END", "UNK", "DISCOUNT"]

#: Word and sentence-end tokens (applied to lowercased text).
TOKEN_PATTERN = re.compile(r"[a-z]+(?:'[a-z]+)?|[.!?]")
#: Sentence end (also the context of a sentence's first word).
END = "</s>"
#: Out-of-vocabulary words.
UNK = "<unk>"
#: Kneser–Ney absolute discount.
DISCOUNT = 0.75
_CORPUS = ("test", "test_data", "lee_background.cor")


def _corpus_path() -> Path:
    try:
        spec = importlib.util.find_spec("gensim")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"the bigram instance reads gensim's test corpus; install the data extra: {DATA_EXTRA}"
        )
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*_CORPUS)
    if not path.is_file():
        raise FileNotFoundError(f"gensim is installed but {path} is missing; reinstall it ({DATA_EXTRA})")
    return path


def tokenize(text: str) -> list:
    """Tokens of one article by the module's rule (``[.!?]`` become ``</s>``).

    >>> tokenize("The U.S. won't pay $5! OK")
    ['the', 'u', '</s>', 's', '</s>', "won't", 'pay', '</s>', 'ok', '</s>']
    """
    toks = [END if t in ".!?" else t for t in TOKEN_PATTERN.findall(text.lower())]
    if not toks or toks[-1] != END:
        toks.append(END)
    return toks


@dataclass(frozen=True, eq=False)
class BigramInstance(Instance):
    """A real Markov reference: an :class:`~klfrontier.instances.Instance` whose ``ref`` is memoryless.

    Attributes
    ----------
    markov : Markov
        The bigram chain with its per-token VADER reward, at the default
        length; states are ``words`` (``</s>`` and ``<unk>`` included).
    ref : Reference
        The memoryless approximation: the chain's stationary unigram law
        with the same per-token reward (what the memoryless theory of the
        paper would be applied to).
    words, name, description, source, lattice, meta
        As in :class:`~klfrontier.instances.Instance` (``meta`` adds the
        corpus and model facts: tokens, sentences, vocabulary, discount,
        non-zeros, words with a reward).
    """

    # always given; the default only satisfies dataclass field order (Instance's defaults)
    markov: Markov = None  # type: ignore[assignment]

    def decode(self, seq) -> str:
        """Text of a state sequence: words joined, ``</s>`` rendered as ``.`` and a line break.

        >>> inst = bigram_vader(min_count=30)
        >>> inst.decode([inst.words.index(w) for w in ("the", "police", END, "the")])
        'the police .\\nthe'
        """
        out: list[str] = []
        line: list[str] = []
        for i in np.asarray(seq).ravel():
            w = self.words[int(i)]
            if w == END:
                out.append(" ".join(line + ["."]))
                line = []
            else:
                line.append(w)
        if line:
            out.append(" ".join(line))
        return "\n".join(out)

    def to_dict(self) -> dict:
        """:meth:`Instance.to_dict` of the stationary law, plus the chain's facts."""
        return {
            **super().to_dict(),
            "length": self.markov.length,
            "transition": self.markov.transition_kind,
            **self.meta,
        }

    def __repr__(self):
        return f"BigramInstance({self.name!r}, K={self.size}, length={self.markov.length})"


@lru_cache(maxsize=4)
def _counts(min_count: int, vocab_size):
    text = _corpus_path().read_text(encoding="utf-8")
    docs = [tokenize(line) for line in text.splitlines() if line.strip()]
    freq = Counter(t for d in docs for t in d if t != END)
    vocab = sorted((w for w, c in freq.items() if c >= min_count), key=lambda w: (-freq[w], w))
    if vocab_size is not None:
        vocab = sorted(freq, key=lambda w: (-freq[w], w))[: vocab_size - 2]
    words = [END, UNK] + vocab
    index = {w: i for i, w in enumerate(words)}
    rows, cols = [], []
    for d in docs:
        ids = [index.get(t, 1) for t in [END] + d]
        rows.extend(ids[:-1])
        cols.extend(ids[1:])
    K = len(words)
    C = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(K, K))
    C.sum_duplicates()
    n_tokens = sum(len(d) for d in docs)
    n_sent = sum(d.count(END) for d in docs)
    return (
        words,
        C,
        {
            "documents": len(docs),
            "tokens": n_tokens,
            "sentences": n_sent,
            "distinct_words": len(freq),
            "unk_tokens": int(sum(c for w, c in freq.items() if w not in index)),
        },
    )


def _kneser_ney(C, discount):
    """Interpolated Kneser–Ney as ``BackoffTransition(S, weight, P_cont)`` (see module notes)."""
    K = C.shape[0]
    c_row = np.asarray(C.sum(axis=1)).ravel()
    n_succ = np.diff(C.indptr)
    n_pred = np.bincount(C.indices, minlength=K)
    cont = (n_pred + 1.0) / (n_pred.sum() + K)
    S = C.copy()
    S.data = np.maximum(S.data - discount, 0.0) / np.repeat(c_row, n_succ)
    S.eliminate_zeros()
    weight = discount * n_succ / c_row
    return BackoffTransition(S, weight, cont)


def bigram_vader(
    min_count: int = 2, *, length: int = 200, discount: float = DISCOUNT, vocab_size: int | None = None
) -> BigramInstance:
    """The bigram model of gensim's Lee corpus with the VADER valence reward.

    Parameters
    ----------
    min_count : int, default 2
        Words seen fewer times are ``<unk>`` (2: 4,043 states).
    length : int, default 200
        Sequence length ``m`` of the returned :class:`Markov`.
    discount : float, default 0.75
        Kneser–Ney absolute discount ``D`` (``0 < D < 1``).
    vocab_size : int, optional
        Number of states ``K`` instead: the ``K - 2`` most frequent words
        (ties alphabetically), plus ``<unk>`` and ``</s>``; overrides
        ``min_count`` (at most 7,190: every word of the corpus).

    Returns
    -------
    BigramInstance

    Raises
    ------
    ImportError
        Without gensim or vaderSentiment (``pip install "klfrontier[data]"``).

    Examples
    --------
    >>> inst = bigram_vader()
    >>> inst.size, inst.lattice, inst.markov.transition_kind
    (4043, 0.1, 'backoff')
    """
    if isinstance(min_count, bool) or not isinstance(min_count, (int, np.integer)) or min_count < 1:
        raise ValueError(f"min_count must be a positive integer, got {min_count!r}")
    d = float(discount)
    if not 0 < d < 1:
        raise ValueError(f"discount must lie in (0, 1), got {discount!r}")
    if vocab_size is not None:
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 3:
            raise ValueError(f"vocab_size must be an integer >= 3, got {vocab_size!r}")
        vocab_size = int(vocab_size)
    words, C, facts = _counts(int(min_count), vocab_size)
    if vocab_size is not None and len(words) < vocab_size:
        raise ValueError(f"vocab_size={vocab_size} exceeds the corpus' {len(words)} states")
    P = _kneser_ney(C, d)
    rewards, lattice, matched, lex_meta, label = lexicon_scores("vader", "en", words)
    start = P.sparse[0].toarray().ravel() + P.weight[0] * P.backoff
    mk = Markov(start, P, rewards, length=length)
    pi = mk.perron(0.0).stationary
    ref = Reference(rewards, probs=pi / pi.sum())
    meta = {
        **facts,
        "min_count": None if vocab_size else int(min_count),
        "discount": d,
        "K": len(words),
        "nnz_sparse": int(P.sparse.nnz),
        "bigram_types": int(C.nnz),
        "words_with_reward": matched,
        **lex_meta,
    }
    return BigramInstance(
        markov=mk,
        words=list(words),
        ref=ref,
        name="bigram-vader",
        description=(
            f"Bigram model of gensim's Lee news corpus ({facts['documents']} articles, "
            f"{facts['tokens']:,} tokens): the {len(words) - 2:,} "
            + (f"words seen at least {min_count} times" if vocab_size is None else "most frequent words")
            + " plus <unk> and the sentence end </s>; interpolated "
            f"Kneser–Ney smoothing (D = {d:g}); reward = {label}, 0 for the "
            f"{len(words) - matched} states without an entry."
        ),
        source={"gensim": dist_version("gensim"), "vaderSentiment": dist_version("vaderSentiment")},
        lattice=lattice,
        meta=meta,
    )
