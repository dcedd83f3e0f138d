"""Rewards on texts and token sequences: sentiment lexicons, token-linear, classifiers, callables.

Every reward here is a callable ``reward(texts) -> numpy.ndarray`` (one finite
float per text); the token-linear one also scores token ids exactly
(``of_ids``), which is what the paper's linear reward is
(``r(y) = Σ_t v(y_t)``, theory §6) and what a tilted sampler needs.

* :func:`lexicon` -- VADER / AFINN valence summed over the words of a text;
  the per-word valences are those of the demo instance
  ``klfrontier.instances.unigram_sentiment`` (same files, same parsing).
* :func:`token_linear` -- the same valences read as one value per token of a
  tokenizer's vocabulary: ``values`` (for a tilt) and ``of_ids`` (the reward).
* :func:`classifier` -- a local sequence-classification model (transformers):
  the log-odds or probability of one label, or any function of the logits.
* :func:`from_callable` -- any ``list[str] -> array`` function, with its
  output checked (length, finiteness).
* :func:`get` -- one of the above from a name (``"vader"``, ``"token-afinn"``,
  a model directory, ...), as the ``klfrontier sample`` command takes it.

The lexicon data come from the data extra (``pip install "klfrontier[data]"``);
torch and transformers, for :func:`token_linear`'s tokenizer and
:func:`classifier`, from the lm extra (``pip install "klfrontier[lm]"``).
Neither is imported by ``import klfrontier`` or ``import klfrontier.rewards``.
"""

from __future__ import annotations

import os
import re
import unicodedata
from functools import cache
from numbers import Integral
from pathlib import Path
from types import MappingProxyType

import numpy as np

from .instances.unigram import REWARDS as LEXICONS
from .instances.unigram import check_reward, lexicon_scores, read_lexicon

__all__ = [
    "LEXICONS",
    "WORD_PATTERN",
    "words",
    "Lexicon",
    "TokenLinear",
    "Classifier",
    "CallableReward",
    "lexicon",
    "token_linear",
    "classifier",
    "from_callable",
    "get",
]

#: A word: a run of letters or digits (Unicode ``[^\W_]``), possibly joined by
#: inner apostrophes (``don't``, ``o'clock``), matched on the lower-cased,
#: NFC-normalised text with the typographic apostrophe ``’`` read as ``'``.
WORD_PATTERN = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def words(text) -> list:
    """The words of a text, as every text reward here reads them.

    Parameters
    ----------
    text : str

    Returns
    -------
    list of str
        The matches of :data:`WORD_PATTERN` in ``text`` after Unicode NFC
        normalisation, lower-casing and mapping ``’`` to ``'``: runs of
        letters and digits with inner apostrophes.  Everything else
        (spaces, punctuation, symbols, the underscore, emoji) separates
        words and is dropped, so hyphenated compounds are two words.

    Raises
    ------
    ValueError
        If ``text`` is not a string.

    Notes
    -----
    This is close to ``wordfreq``'s tokenisation of English, from which the
    demo instance's vocabulary comes: of the 319,938 wordfreq words, the only
    ones with a nonzero lexicon reward that this splitting never produces
    are five VADER emoticons spelled with inner punctuation (``o.o``,
    ``o_o``, ``v.v``, ``0_o``, ``o_0``).  Lexicon entries made of
    punctuation (``:)``, ``<3``) never match, as in the demo instance.

    Examples
    --------
    >>> words("Don’t PANIC: it's a well-being test, naïve_user :)")
    ["don't", 'panic', "it's", 'a', 'well', 'being', 'test', 'naïve', 'user']
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    return WORD_PATTERN.findall(_normalise(text))


def _normalise(text: str) -> str:
    return unicodedata.normalize("NFC", text).lower().replace("\u2019", "'")


def _texts(texts, name="texts") -> list:
    """``texts`` as a list of str, or a ValueError naming ``name``."""
    if isinstance(texts, (str, bytes)):
        raise ValueError(f"{name} must be a sequence of strings, not a single string (wrap it in a list)")
    try:
        out = list(texts)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of strings, got {type(texts).__name__}") from None
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise ValueError(f"{name}[{i}] must be a str, got {type(t).__name__}")
    return out


def _checked(values, n, what):
    """``values`` as a finite float64 array of shape ``(n,)``, or a ValueError saying ``what`` failed."""
    try:
        out = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must return real numbers: {exc}") from None
    if out.ndim == 2 and 1 in out.shape:  # (n, 1) or (1, n): one value per text
        out = out.reshape(-1)
    if out.shape != (n,):
        raise ValueError(f"{what} returned {out.size} values (shape {out.shape}) for {n} texts")
    bad = np.flatnonzero(~np.isfinite(out))
    if bad.size:
        raise ValueError(
            f"{what} returned a non-finite value ({float(out[bad[0]])}) for text {bad[0]}"
            + (f" and {bad.size - 1} others" if bad.size > 1 else "")
        )
    return out


# ------------------------------------------------------------------------------------ lexicons
@cache
def _valences(name: str, lang: str):
    """``({word: valence}, label)``: the demo instance's per-word values for every lexicon key.

    The values are computed by the demo's own :func:`lexicon_scores` on the
    lexicon's keys, so a word's valence here is bit for bit its reward in
    ``unigram_sentiment(reward=name, lang=lang)``.
    """
    lex, _ = read_lexicon(name, lang)
    keys = sorted(lex)
    scores, _, _, _, label = lexicon_scores(name, lang, keys)
    table = {k: float(s) for k, s in zip(keys, scores) if s != 0.0}
    return MappingProxyType(table), label


class Lexicon:
    """A sentiment-lexicon reward on texts: the sum of the valences of their words.

    Made by :func:`lexicon`; see there for the definition.

    Attributes
    ----------
    name : str
        ``"vader"`` or ``"afinn"``.
    lang : str
    valences : Mapping[str, float]
        Read-only ``{word: valence}`` of the words with a nonzero valence.
    description : str
    """

    def __init__(self, name="vader", *, lang="en"):
        self.name = check_reward(name, lang, "name")
        self.lang = lang
        self.valences, label = _valences(self.name, lang)
        self.description = (
            f"sum over the words of the text (lower-cased, punctuation stripped) "
            f"of the {label}; 0 for words without an entry"
        )

    def valence(self, word) -> float:
        """The valence of one word (0 without an entry), looked up lower-cased."""
        if not isinstance(word, str):
            raise ValueError(f"word must be a str, got {type(word).__name__}")
        return self.valences.get(_normalise(word), 0.0)

    def __call__(self, texts) -> np.ndarray:
        texts = _texts(texts)
        get = self.valences.get
        # summed left to right, like TokenLinear.of_ids: adding the zeros of unscored words or
        # tokens changes nothing, so the two agree to the last bit on the same scored words
        return np.array([sum(get(w, 0.0) for w in words(t)) for t in texts], dtype=np.float64)

    def __repr__(self):
        return f"rewards.lexicon({self.name!r}, lang={self.lang!r})"


def lexicon(name="vader", *, lang="en") -> Lexicon:
    """A sentiment-lexicon reward: ``r(text) = Σ_{w ∈ words(text)} L[w]``.

    Parameters
    ----------
    name : {"vader", "afinn"}, default "vader"
        VADER mean valence (``vaderSentiment``'s lexicon, a 0.1 grid in
        [-4, 4]) or AFINN-165 score (integers in [-5, 5]).
    lang : str, default "en"
        ``"en"``; AFINN also has ``"da"``.

    Returns
    -------
    Lexicon
        A callable ``list[str] -> numpy.ndarray`` (float64, one value per text).

    Raises
    ------
    ValueError
        Unknown ``name`` or a ``lang`` the lexicon lacks; later, ``texts``
        that are not a sequence of strings.
    ImportError
        Without the lexicon's package (``pip install "klfrontier[data]"``).

    Notes
    -----
    ``words(text)`` is :func:`words` (lower-cased, NFC, letters and digits
    with inner apostrophes; punctuation stripped) and ``L[w]`` the valence
    the demo instance ``klfrontier.instances.unigram_sentiment`` gives
    the word ``w`` -- same lexicon file, same parsing, same rounding to the
    grid; 0 without an entry.  Multi-word entries (``"can't stand"``) and
    punctuation emoticons never match, as in the demo.  There is no
    negation, intensifier or capitalisation rule: this is the *linear*
    reward of the unigram instance applied word by word, not VADER's
    compound score.  The valences are added in word order (left to right).

    Examples
    --------
    Needs the data extra (``make test`` installs it):

    >>> vader = lexicon("vader")
    >>> vader(["A good, GOOD day!", "bad", "the cat sat"]).tolist()   # 1.9 + 1.9; -2.5
    [3.8, -2.5, 0.0]
    >>> lexicon("afinn")(["good but terrible"]).tolist()                    # 3 - 3
    [0.0]
    """
    return Lexicon(name, lang=lang)


# -------------------------------------------------------------------------------- token-linear
_MARKERS = "\u0120\u2581"  # "Ġ" (byte-level BPE space) and "▁" (sentencepiece space)


def _special_ids(tokenizer) -> set:
    ids = set(getattr(tokenizer, "all_special_ids", ()) or ())
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    ids.update(int(i) for i, tok in added.items() if getattr(tok, "special", False))
    return ids


def _token_texts(tokenizer, size: int) -> list:
    """The text each id decodes to on its own ("" where it cannot be decoded)."""
    kw = {"skip_special_tokens": False, "clean_up_tokenization_spaces": False}
    ids = [[i] for i in range(size)]
    try:
        out = tokenizer.batch_decode(ids, **kw)
    except Exception:  # a hole in the ids: decode one by one and keep the rest
        out = []
        for i in ids:
            try:
                out.append(tokenizer.decode(i, **kw))
            except Exception:
                out.append("")
    return [t if isinstance(t, str) else "" for t in out]


#: Share of the ordinary tokens that carry a word-start marker above which a tokenizer
#: "marks word starts" (GPT-2 style byte-level BPE: about half; word-level: none).
_MARKER_SHARE = 0.01


def _marked(tokenizer, texts) -> list:
    """Per id: does the token start a word (a ``Ġ`` / ``▁`` marker, or a decoded leading space)?"""
    try:
        pieces = tokenizer.convert_ids_to_tokens(list(range(len(texts))))
    except Exception:
        pieces = [None] * len(texts)
    return [(isinstance(p, str) and p[:1] in _MARKERS) or t[:1].isspace() for p, t in zip(pieces, texts)]


def _token_word(text: str):
    """The lexicon key a token spells (markers and surrounding spaces stripped), or None."""
    t = _normalise(text.strip().lstrip(_MARKERS).strip())
    return t if WORD_PATTERN.fullmatch(t) else None


class TokenLinear:
    """A token-linear reward ``r(y) = Σ_t v(y_t)`` over a tokenizer's vocabulary.

    Made by :func:`token_linear`; see there for the definition.

    Attributes
    ----------
    values : numpy.ndarray, shape (vocab_size,)
        Read-only float64 ``v``: one value per token id ``0 .. len(tokenizer)-1``.
    token_words : tuple
        Per id, the lexicon word the token spells (``None`` for tokens that
        spell no whole word, and for special tokens).
    name, lang : str
        The lexicon.
    uses_markers : bool
        Whether the tokenizer marks word starts (``Ġ`` / ``▁``).
    marked_only : bool
        Whether only word-initial (marked) tokens are scored.
    tokenizer
        The tokenizer ``values`` was built from (used by ``__call__``).
    description : str
    """

    def __init__(self, tokenizer, name="vader", *, lang="en", marked_only=None):
        if tokenizer is None or not all(hasattr(tokenizer, a) for a in ("decode", "__len__")):
            raise ValueError(
                f"tokenizer must be a transformers tokenizer (with decode and len), "
                f"got {type(tokenizer).__name__}"
            )
        if marked_only is not None and not isinstance(marked_only, bool):
            raise ValueError(f"marked_only must be None, True or False, got {marked_only!r}")
        lex = Lexicon(name, lang=lang)
        self.name, self.lang, self.tokenizer = lex.name, lex.lang, tokenizer
        size = len(tokenizer)
        if size < 1:
            raise ValueError("tokenizer has an empty vocabulary")
        special = _special_ids(tokenizer)
        texts = _token_texts(tokenizer, size)
        marked = _marked(tokenizer, texts)
        ordinary = [i for i in range(size) if i not in special]
        share = sum(marked[i] for i in ordinary) / max(len(ordinary), 1)
        self.uses_markers = share >= _MARKER_SHARE
        self.marked_only = self.uses_markers if marked_only is None else marked_only
        spelled = [
            None if i in special or (self.marked_only and not marked[i]) else _token_word(t)
            for i, t in enumerate(texts)
        ]
        values = np.array([0.0 if w is None else lex.valences.get(w, 0.0) for w in spelled], dtype=np.float64)
        values.flags.writeable = False
        self.values = values
        self.token_words = tuple(spelled)
        which = "word-initial tokens (with a space marker)" if self.marked_only else "tokens"
        self.description = (
            f"token-linear {self.name}: sum over the generated {which} of the "
            f"{self.name} valence of the whole word each spells (0 for "
            f"sub-word pieces and special tokens); {int(np.count_nonzero(values))} "
            f"of {size} tokens scored"
        )

    def of_ids(self, token_ids) -> np.ndarray:
        """``r(y) = Σ_t v(y_t)`` for each token-id sequence: the reward, exactly.

        Parameters
        ----------
        token_ids : sequence of sequences of int
            One sequence of token ids per sample (lists, tuples, 1-D arrays).

        Returns
        -------
        numpy.ndarray, shape (len(token_ids),)
            float64, each row summed in token order (bit for bit
            ``sum(values[t] for t in ids)``); ``0`` for an empty sequence.  Ids past the end of
            ``values`` (model rows the tokenizer never produces) count ``0``,
            as in :class:`klfrontier.lm.TokenTiltProcessor`.

        Raises
        ------
        ValueError
            A sequence that is not 1-D integers, or a negative id.
        """
        if isinstance(token_ids, (str, bytes)) or not hasattr(token_ids, "__iter__"):
            raise ValueError(
                f"token_ids must be a sequence of token-id sequences, got {type(token_ids).__name__}"
            )
        rows = []
        for k, seq in enumerate(token_ids):
            a = np.asarray(seq)
            if a.size == 0:
                a = a.reshape(0).astype(np.int64)
            if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
                raise ValueError(
                    f"token_ids[{k}] must be a 1-D sequence of integer ids, got {a.dtype} of shape {a.shape}"
                )
            if a.size and a.min() < 0:
                raise ValueError(f"token_ids[{k}] holds a negative id ({int(a.min())})")
            rows.append(a.astype(np.int64, copy=False))
        if not rows:
            return np.zeros(0, dtype=np.float64)
        ids = np.concatenate(rows)
        row = np.repeat(np.arange(len(rows)), [r.size for r in rows])
        inside = ids < self.values.size
        v = np.zeros(ids.size, dtype=np.float64)
        v[inside] = self.values[ids[inside]]
        # bincount adds each row's terms one by one in token order: the same float as a loop
        return np.bincount(row, weights=v, minlength=len(rows)).astype(np.float64, copy=False)

    def __call__(self, texts) -> np.ndarray:
        """The reward of texts, re-tokenised (approximate: prefer :meth:`of_ids`).

        The texts are encoded with ``tokenizer(texts, add_special_tokens=False)``;
        a decoded sample does not always re-encode to the ids that were
        sampled (a word sampled as two pieces may re-encode as one token, and
        the reverse), so this can differ from ``of_ids`` on the sampled ids.
        """
        texts = _texts(texts)
        if not texts:
            return np.zeros(0, dtype=np.float64)
        enc = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return self.of_ids(enc)

    def __repr__(self):
        return (
            f"rewards.token_linear(<{type(self.tokenizer).__name__}, {self.values.size} tokens>, "
            f"{self.name!r}, lang={self.lang!r})"
        )


def token_linear(tokenizer, name="vader", *, lang="en", marked_only=None) -> TokenLinear:
    """The lexicon as a token-linear reward: ``r(y) = Σ_t v(y_t)`` with ``v`` per vocabulary token.

    Parameters
    ----------
    tokenizer : transformers tokenizer
        Any tokenizer with ``len``, ``decode`` / ``batch_decode``,
        ``convert_ids_to_tokens`` and ``all_special_ids`` (fast or slow;
        byte-level BPE, sentencepiece, word-level).
    name : {"vader", "afinn"}, default "vader"
    lang : str, default "en"
    marked_only : bool, optional
        Score only word-initial tokens, those carrying a word-start marker
        (``Ġ``, ``▁`` or a decoded leading space).  Default: ``True`` when
        the tokenizer marks word starts (at least 1% of its ordinary tokens
        carry a marker: GPT-2-style BPE, sentencepiece), ``False`` otherwise
        (a word-level vocabulary, where every token is a word).

    Returns
    -------
    TokenLinear
        ``values`` (``v``, shape ``(len(tokenizer),)``, for a tilt),
        ``of_ids`` (the exact reward of sampled ids) and ``__call__`` on
        texts (re-tokenises: approximate).

    Raises
    ------
    ValueError
        A ``tokenizer`` that is not one, an unknown ``name`` or ``lang``, a
        ``marked_only`` that is not a bool.
    ImportError
        Without the lexicon's package (``pip install "klfrontier[data]"``).

    Notes
    -----
    For each id, ``v(id) = L[w]`` when the token, decoded on its own
    (``tokenizer.decode([id])``, which maps byte-level BPE bytes back to
    text), stripped of surrounding spaces and of a leading ``Ġ`` / ``▁``
    word-start marker, lower-cased, is one whole word ``w`` in the sense of
    :func:`words`; ``L`` is the valence table of :func:`lexicon`.  Every
    other token -- special tokens, punctuation, pieces such as
    ``"appiness"`` -- has ``v = 0``.  Case does not matter (``" Good"``
    scores as ``" good"``).

    With ``marked_only`` (the default for marker tokenizers) a token without
    a marker is read as the continuation of the previous word and scores 0:
    otherwise VADER's chat entries would score common suffixes
    (``"ly"`` +2.6 in every adverb, ``"ability"`` +1.3, ``"ill"`` −1.8).
    The price: a word that follows a newline, a quote or a bracket, which
    byte-level BPE writes without a marker (``"\\n" + "Good"``), scores 0.
    ``marked_only=False`` scores marked and unmarked tokens alike.

    So ``r(y) = Σ_t v(y_t)`` counts a lexicon word only when the model
    emits it as a **single token**: a word the tokenizer splits into several
    tokens (``" unh" + "appiness"``) scores 0.  That is what makes the
    reward *linear in the tokens* -- a sum of one fixed value per token --
    which is the paper's linear reward (theory §6), the form a per-token tilt
    ``p(y_t|·) e^{λ v(y_t)}`` optimises exactly, and why
    :meth:`TokenLinear.of_ids` on the sampled ids, not the text, is the
    reward.  On a text whose lexicon words are all single word-initial
    tokens and that holds no other scored token, it equals :func:`lexicon`
    bit for bit (both add left to right, and zeros change nothing).

    Examples
    --------
    A word-level tokenizer built in memory (needs the lm and data extras):

    >>> from tokenizers import Tokenizer, models, pre_tokenizers
    >>> from transformers import PreTrainedTokenizerFast
    >>> vocab = {"<unk>": 0, "good": 1, "bad": 2, "day": 3, "Happy": 4}
    >>> raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    >>> raw.pre_tokenizer = pre_tokenizers.Whitespace()
    >>> tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>")
    >>> tl = token_linear(tok, "vader")
    >>> tl.values.tolist()                                   # VADER: good 1.9, bad -2.5, happy 2.7
    [0.0, 1.9, -2.5, 0.0, 2.7]
    >>> tl.of_ids([[1, 3, 1], [2, 4], []]).tolist()          # doctest: +NORMALIZE_WHITESPACE
    [3.8, 0.2..., 0.0]
    """
    return TokenLinear(tokenizer, name, lang=lang, marked_only=marked_only)


# ---------------------------------------------------------------------------------- classifier
_TRANSFORMS = ("logit", "prob")


def _logsumexp_rows(z):
    m = z.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]


class Classifier:
    """A sequence-classification model read as a reward. Made by :func:`classifier`.

    Attributes
    ----------
    path : pathlib.Path
    labels : tuple of str
        The model's label names, by index.
    label : int
        The index of the rewarded label.
    transform : str or callable
    model, tokenizer
        The loaded transformers objects (in eval mode).
    batch_size : int
    max_length : int
    description : str
    """

    def __init__(
        self,
        path,
        label=None,
        transform="logit",
        *,
        batch_size=32,
        max_length=None,
        device="cpu",
        trust_remote_code=False,
    ):
        if not isinstance(path, (str, os.PathLike)):
            raise ValueError(f"path must be a local model directory, got {type(path).__name__}")
        folder = Path(path).expanduser()
        if not (folder / "config.json").is_file():
            raise ValueError(
                f"path must be a local transformers model directory with a config.json; {str(path)!r} is not"
            )
        if not (isinstance(transform, str) and transform in _TRANSFORMS or callable(transform)):
            raise ValueError(
                f"transform must be 'logit', 'prob' or a callable on the logits, got {transform!r}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if max_length is not None and (
            isinstance(max_length, bool) or not isinstance(max_length, Integral) or max_length < 1
        ):
            raise ValueError(f"max_length must be a positive integer or None, got {max_length!r}")
        from .lm.model import import_lm

        torch, transformers = import_lm("this reward")
        common = {"local_files_only": True, "trust_remote_code": bool(trust_remote_code)}
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(folder, **common)
        self.model = transformers.AutoModelForSequenceClassification.from_pretrained(folder, **common)
        self.model.eval()
        self.model.to(device)
        if self.tokenizer.pad_token is None:
            # decoder-only classifiers (GPT-2 style) ship without a pad token: pad with EOS
            if self.tokenizer.eos_token is None:
                raise ValueError(
                    f"path: the tokenizer in {str(path)!r} has neither a pad nor an "
                    f"eos token, so texts cannot be batched"
                )
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if getattr(self.model.config, "pad_token_id", None) is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        n_labels = int(self.model.config.num_labels)
        id2label = getattr(self.model.config, "id2label", None) or {}
        self.labels = tuple(str(id2label.get(i, f"LABEL_{i}")) for i in range(n_labels))
        self.label = self._label_index(label)
        self.transform = transform
        self.batch_size = int(batch_size)
        limit = getattr(self.tokenizer, "model_max_length", None)
        if max_length is None:
            max_length = limit if isinstance(limit, int) and 0 < limit <= 1_000_000 else 512
            positions = getattr(self.model.config, "max_position_embeddings", None)
            if isinstance(positions, int) and positions > 0:
                max_length = min(max_length, positions)
        self.max_length = int(max_length)
        self.path = folder
        self._torch = torch
        what = (
            transform
            if isinstance(transform, str)
            else getattr(transform, "__name__", "a function") + " of the logits"
        )
        kind = {"logit": "log-odds", "prob": "probability"}.get(what, what)
        self.description = (
            f"classifier {folder.name}: {kind} of label "
            f"{self.labels[self.label]!r} (index {self.label} of {n_labels})"
        )

    def _label_index(self, label):
        labels, n = self.labels, len(self.labels)
        if label is None:
            if n == 1:
                return 0
            hits = [i for i, s in enumerate(labels) if s.lower() == "positive"]
            if len(hits) == 1:
                return hits[0]
            raise ValueError(
                f"label must be given (a name or an index): the model's labels are "
                f"{list(labels)} and none is 'positive'"
            )
        if isinstance(label, bool):
            raise ValueError(f"label must be a label name or an index, got {label!r}")
        if isinstance(label, Integral):
            if not 0 <= label < n:
                raise ValueError(f"label index {label} is out of range for the model's {n} labels")
            return int(label)
        if isinstance(label, str):
            if label in labels:
                return labels.index(label)
            hits = [i for i, s in enumerate(labels) if s.lower() == label.lower()]
            if len(hits) == 1:
                return hits[0]
            raise ValueError(f"label {label!r} is not one of the model's labels {list(labels)}")
        raise ValueError(f"label must be a label name or an index, got {type(label).__name__}")

    def logits(self, texts) -> np.ndarray:
        """The model's logits, ``(len(texts), num_labels)`` float64, in batches and without gradients."""
        texts = _texts(texts)
        torch = self._torch
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float64)
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                chunk = texts[start : start + self.batch_size]
                enc = self.tokenizer(
                    chunk, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
                ).to(device)
                logits = self.model(**enc).logits
                out[start : start + len(chunk)] = logits.to(torch.float64).cpu().numpy()
        return out

    def __call__(self, texts) -> np.ndarray:
        texts = _texts(texts)
        z = self.logits(texts)
        if callable(self.transform):
            return _checked(self.transform(z), len(texts), "transform")
        k = self.label
        if z.shape[1] == 1:  # one output: the logit of a sigmoid
            value = z[:, 0]
            if self.transform == "prob":
                value = np.exp(-np.logaddexp(0.0, -value))
        elif self.transform == "logit":
            # log p_k - log(1 - p_k) = z_k - logsumexp(z_{j≠k}): no 1 - p_k cancellation
            value = z[:, k] - _logsumexp_rows(np.delete(z, k, axis=1))
        else:
            value = np.exp(z[:, k] - _logsumexp_rows(z))
        return _checked(value, len(texts), "classifier")

    def __repr__(self):
        return (
            f"rewards.classifier({str(self.path)!r}, label={self.labels[self.label]!r}, "
            f"transform={self.transform!r})"
        )


def classifier(
    path,
    label=None,
    transform="logit",
    *,
    batch_size=32,
    max_length=None,
    device="cpu",
    trust_remote_code=False,
) -> Classifier:
    """A local sequence-classification model as a reward: the log-odds (or probability) of a label.

    Parameters
    ----------
    path : str or path-like
        A local transformers model directory (``config.json``, weights,
        tokenizer files) loadable by ``AutoModelForSequenceClassification``
        and ``AutoTokenizer``; read with ``local_files_only=True`` (nothing
        is downloaded; run with ``HF_HUB_OFFLINE=1``).
    label : str or int, optional
        The rewarded label, by name (``config.id2label``; exact, else
        case-insensitive) or index.  Default: the only output of a one-logit
        head, else the label named ``positive`` (any case), else an error.
    transform : {"logit", "prob"} or callable, default "logit"
        ``"logit"``: ``log p(label|x) − log(1 − p(label|x))`` under the
        softmax of the logits; ``"prob"``: ``p(label|x)``; a callable gets
        the ``(n, num_labels)`` float64 logits and returns one value per text.
    batch_size : int, default 32
    max_length : int, optional
        Truncation length in tokens (default: the tokenizer's
        ``model_max_length``, or 512 when it is unset, and at most the
        model's ``max_position_embeddings``).
    device : str, default "cpu"
    trust_remote_code : bool, default False
        Passed to transformers; leave off unless you trust the directory.

    Returns
    -------
    Classifier
        A callable ``list[str] -> numpy.ndarray``; ``.logits(texts)`` gives
        the raw logits.

    Raises
    ------
    ValueError
        ``path`` not a model directory, an unknown ``label``, a bad
        ``transform`` / ``batch_size`` / ``max_length``; on call, a
        ``transform`` output of the wrong length or non-finite.
    ImportError
        Without torch and transformers (``pip install "klfrontier[lm]"``).

    Notes
    -----
    With logits ``z`` and label ``k``, ``"logit"`` is computed as
    ``z_k − log Σ_{j≠k} e^{z_j}`` (for two labels ``z_k − z_other``), which
    avoids forming ``1 − p_k``.  A head with a single output is read as the
    logit of a sigmoid: ``"logit"`` returns ``z`` and ``"prob"``
    ``1/(1+e^{−z})``.  Texts are padded per batch and truncated to
    ``max_length``; the model runs in eval mode under
    ``torch.inference_mode()``.

    Examples
    --------
    ``classifier("models/sst2", label="POSITIVE")(["a fine film"])`` returns
    a length-1 float64 array (see ``tests/test_rewards.py`` for a runnable
    example on a tiny randomly initialised model).
    """
    return Classifier(
        path,
        label,
        transform,
        batch_size=batch_size,
        max_length=max_length,
        device=device,
        trust_remote_code=trust_remote_code,
    )


# ----------------------------------------------------------------------------------- callables
class CallableReward:
    """A user function ``list[str] -> array`` with its output checked. Made by :func:`from_callable`."""

    def __init__(self, fn, *, name=None):
        if not callable(fn):
            raise ValueError(
                f"fn must be callable (list of texts -> one number per text), got {type(fn).__name__}"
            )
        if name is not None and not isinstance(name, str):
            raise ValueError(f"name must be a str or None, got {type(name).__name__}")
        self.fn = fn
        self.name = name if name is not None else getattr(fn, "__name__", type(fn).__name__)
        self.description = f"user reward {self.name}"

    def __call__(self, texts) -> np.ndarray:
        texts = _texts(texts)
        return _checked(self.fn(texts), len(texts), f"reward {self.name!r}")

    def __repr__(self):
        return f"rewards.from_callable({self.name})"


def from_callable(fn, *, name=None) -> CallableReward:
    """Wrap any function of a list of texts as a reward, checking what it returns.

    Parameters
    ----------
    fn : callable
        ``fn(list_of_str)`` returning one real number per text (a list, an
        array of shape ``(n,)`` or ``(n, 1)``, a tensor converted by numpy).
    name : str, optional
        For messages and descriptions (default: ``fn.__name__``).

    Returns
    -------
    CallableReward
        A callable ``list[str] -> numpy.ndarray`` (float64, shape ``(n,)``).

    Raises
    ------
    ValueError
        ``fn`` not callable; on call, ``texts`` not a sequence of strings,
        or ``fn`` returning the wrong number of values, non-numbers, NaN or
        infinity.

    Examples
    --------
    >>> n_chars = from_callable(lambda texts: [len(t) for t in texts], name="length")
    >>> n_chars(["ab", "abcd"]).tolist()
    [2.0, 4.0]
    >>> from_callable(lambda texts: [float("nan")] * len(texts))(["x"])
    Traceback (most recent call last):
    ...
    ValueError: reward '<lambda>' returned a non-finite value (nan) for text 0
    """
    return CallableReward(fn, name=name)


# -------------------------------------------------------------------------------------- lookup
_REWARD_TYPES = (Lexicon, TokenLinear, Classifier, CallableReward)


def get(spec, tokenizer=None):
    """A reward from a specification, as the ``klfrontier sample`` command takes it.

    Parameters
    ----------
    spec : str, path-like, callable or reward
        ``"vader"`` / ``"afinn"``: :func:`lexicon`; ``"token-vader"`` /
        ``"token-afinn"``: :func:`token_linear` on ``tokenizer``; a local
        model directory: :func:`classifier` with its default label; a reward
        made here: itself; any other callable: :func:`from_callable`.
        Names are case-insensitive.
    tokenizer : transformers tokenizer, optional
        Needed by the token-linear names.

    Returns
    -------
    Lexicon, TokenLinear, Classifier or CallableReward

    Raises
    ------
    ValueError
        An unknown ``spec`` (neither a name nor an existing directory), or a
        token-linear name without ``tokenizer``.

    Examples
    --------
    >>> get("AFINN")
    rewards.lexicon('afinn', lang='en')
    >>> get("token-vader")
    Traceback (most recent call last):
    ...
    ValueError: tokenizer is required for the token-linear reward 'token-vader'
    """
    if isinstance(spec, _REWARD_TYPES):
        return spec
    if isinstance(spec, str):
        key = spec.strip().lower()
        if key in LEXICONS:
            return lexicon(key)
        if key.startswith("token-") and key[len("token-") :] in LEXICONS:
            if tokenizer is None:
                raise ValueError(f"tokenizer is required for the token-linear reward {spec!r}")
            return token_linear(tokenizer, key[len("token-") :])
    if isinstance(spec, (str, os.PathLike)):
        if Path(spec).expanduser().is_dir():
            return classifier(spec)
        names = ", ".join([*LEXICONS, *(f"token-{n}" for n in LEXICONS)])
        raise ValueError(
            f"spec must be one of {names}, a local classifier directory or a callable; got {str(spec)!r}"
        )
    if callable(spec):
        return from_callable(spec)
    raise ValueError(
        f"spec must be a reward name, a local classifier directory or a callable, got {type(spec).__name__}"
    )
