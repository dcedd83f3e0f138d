"""Tests for klfrontier.instances (theory §10).

The unigram instances need the ``data`` extra (wordfreq, vaderSentiment,
afinn), which ``make test`` installs.  Those tests are *not* skipped when the
packages are missing: they fail with a message saying what to install, so a
broken CI environment cannot pass silently.
"""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from math import gcd

import numpy as np
import pytest

from klfrontier import Reference
from klfrontier.instances import (
    Instance,
    UnknownInstanceError,
    available,
    bernoulli,
    lattice_span,
    load,
    three_letter,
    unigram_proxy_gold,
    unigram_sentiment,
)

DATA_PACKAGES = ("wordfreq", "vaderSentiment", "afinn")
MISSING = [m for m in DATA_PACKAGES if importlib.util.find_spec(m) is None]


@pytest.fixture(scope="module")
def data_extra():
    if MISSING:
        pytest.fail(
            f"the data extra is not installed (missing: {', '.join(MISSING)}); "
            f'run `pip install -e ".[data]"` (make test does this)',
            pytrace=False,
        )


needs_data = pytest.mark.usefixtures("data_extra")


@pytest.fixture(scope="module")
def vader(data_extra):
    return unigram_sentiment(top_n=50_000, reward="vader")


@pytest.fixture(scope="module")
def afinn(data_extra):
    return unigram_sentiment(top_n=50_000, reward="afinn")


def _independent_lattice_check(rewards, h, tol=1e-9):
    """gcd of grid indices, written without the library's helper."""
    k = rewards / h
    assert np.max(np.abs(k - np.round(k))) < tol
    ks = sorted(set(np.round(k).astype(int).tolist()))
    g = 0
    for a in ks[1:]:
        g = gcd(g, a - ks[0])
    return g


# ---------------------------------------------------------------- no extras
def test_import_klfrontier_does_not_import_optional_packages():
    code = (
        "import sys, klfrontier, klfrontier.instances, klfrontier.instances.unigram\n"
        "bad = [m for m in ('wordfreq', 'vaderSentiment', 'afinn', 'requests') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_available_lists_all_names_with_descriptions():
    names = available()
    assert set(names) == {
        "unigram-vader",
        "unigram-afinn",
        "unigram-vader-afinn",
        "three-letter",
        "bernoulli",
    }
    for desc in names.values():
        assert isinstance(desc, str) and desc and "\n" not in desc
    assert "klfrontier[data]" in names["unigram-vader"]
    assert "klfrontier[data]" in names["unigram-vader-afinn"]
    assert "klfrontier[data]" not in names["three-letter"]


def test_three_letter_is_spec_example():
    inst = load("three-letter")
    assert three_letter().ref.rewards.tolist() == inst.ref.rewards.tolist()
    assert isinstance(inst, Instance)
    np.testing.assert_allclose(inst.ref.probs, [0.5, 0.3, 0.2], rtol=1e-15)
    np.testing.assert_array_equal(inst.ref.rewards, [0.0, 1.0, math.sqrt(2.0)])
    assert inst.lattice is None
    assert lattice_span(inst.ref.rewards, 1.0) is None
    s = inst.to_dict()
    assert s["K"] == 3 and s["levels"] == 3
    assert s["argmax_words"] == ["c"] and s["n_argmax"] == 1
    assert s["p_reward_zero"] == pytest.approx(0.5, rel=1e-14)
    assert s["p_argmax"] == pytest.approx(0.2, rel=1e-14)
    assert s["kl_max"] == pytest.approx(math.log(5.0), rel=1e-14)
    with pytest.raises(ValueError, match="lattice"):
        inst.lattice_indices()


def test_bernoulli_default_and_keyword():
    inst = load("bernoulli")
    np.testing.assert_allclose(inst.ref.probs, [0.7, 0.3], rtol=1e-15)
    np.testing.assert_array_equal(inst.ref.rewards, [0.0, 1.0])
    assert inst.lattice == 1.0
    assert inst.lattice_indices().tolist() == [0, 1]
    assert inst.to_dict()["kl_max"] == pytest.approx(-math.log(0.3), rel=1e-14)
    tiny = load("bernoulli", p=1e-300)
    assert tiny.ref.kl_max == pytest.approx(300 * math.log(10), rel=1e-14)
    assert tiny.ref.logprobs[0] == pytest.approx(-1e-300, rel=1e-12)  # 1 - p not rounded to 1


@pytest.mark.parametrize("p", [0.0, 1.0, -0.1, 1.5, float("nan"), True, "0.3"])
def test_bernoulli_rejects_bad_p(p):
    with pytest.raises(ValueError, match="p must"):
        bernoulli(p)


def test_load_unknown_name_and_bad_keywords():
    with pytest.raises(ValueError, match="unknown instance 'nope'"):
        load("nope")
    with pytest.raises(KeyError):  # the CLI relies on KeyError for fallbacks
        load("nope")
    with pytest.raises(UnknownInstanceError):
        load(None)
    with pytest.raises(ValueError, match="bad keyword arguments for instance 'three-letter'"):
        load("three-letter", top_n=10)


def test_lattice_span_helper():
    assert lattice_span([0.0, 0.1, 0.3], 0.1) == 0.1
    assert lattice_span([0.0, 0.2, -0.4], 0.1) == pytest.approx(0.2)
    assert lattice_span([1.0, 1.0], 0.5) == 0.5  # constant: the grid itself
    # tolerance: rewards one ulp-scale off the grid are still detected
    assert lattice_span(np.array([0.0, 0.1, 0.7]) + 1e-14, 0.1) == 0.1
    assert lattice_span([0.0, 0.15], 0.1) is None
    with pytest.raises(ValueError, match="h must be positive"):
        lattice_span([0.0], 0.0)


def test_instance_checks_word_count():
    with pytest.raises(ValueError, match="words has 2 entries"):
        Instance(ref=Reference([0, 1, 2], probs=[0.2, 0.3, 0.5]), words=["a", "b"], name="x", description="x")


# -------------------------------------------------- argument validation
@pytest.mark.parametrize("top_n", [0, -5, 1.5, True, "100", np.float64(10)])
def test_top_n_validation(top_n):
    # rejected before any data is touched: no extra needed
    with pytest.raises(ValueError, match="top_n"):
        unigram_sentiment(top_n=top_n)


@needs_data
def test_top_n_larger_than_word_list():
    with pytest.raises(ValueError, match=r"top_n=1000000000 exceeds the \d+ words"):
        unigram_sentiment(top_n=10**9)


@pytest.mark.parametrize("reward", ["textblob", "", None, 3])
def test_unknown_reward(reward):
    with pytest.raises(ValueError, match="reward must be one of vader, afinn"):
        unigram_sentiment(top_n=100, reward=reward)


@pytest.mark.parametrize(
    ("reward", "lang"), [("vader", "da"), ("vader", "xx"), ("afinn", "fr"), ("afinn", None)]
)
def test_unsupported_lang(reward, lang):
    with pytest.raises(ValueError, match="lang"):
        unigram_sentiment(top_n=100, reward=reward, lang=lang)


def test_missing_packages_name_the_extra(monkeypatch):
    from klfrontier.instances import unigram

    with pytest.raises(ImportError, match=r'pip install "klfrontier\[data\]"'):
        unigram._package_dir("klfrontier_no_such_package")
    monkeypatch.setitem(sys.modules, "wordfreq", None)  # makes `import wordfreq` fail
    unigram._vocabulary.cache_clear()
    with pytest.raises(ImportError, match=r"'wordfreq'.*klfrontier\[data\]"):
        unigram._vocabulary("en", 123)


# ------------------------------------------------------- data instances
@needs_data
@pytest.mark.parametrize("name", ["vader", "afinn"])
def test_probabilities_sum_to_one_and_order(name, request):
    inst = request.getfixturevalue(name)
    p = inst.ref.probs
    assert inst.size == len(inst.words) == 50_000
    assert math.fsum(p) == pytest.approx(1.0, abs=1e-12)
    assert inst.words[0] == "the"
    assert np.all(np.diff(inst.ref.logprobs) <= 0)  # wordfreq order is by frequency
    assert len(set(inst.words)) == inst.size
    # binned frequencies: far fewer distinct probabilities than words
    assert np.unique(inst.ref.logprobs).size < 1000


@needs_data
def test_frequencies_match_wordfreq(vader):
    import wordfreq

    words = vader.words
    assert words == wordfreq.top_n_list("en", 50_000)
    # word_frequency rounds to 3 significant digits; our p is the exact bin
    # value 10**(-cB/100), renormalised over the kept words.
    mass = vader.meta["mass_kept_unnormalised"]
    for i in [0, 1, 10, 100, 1000, 10_000, 49_999]:
        wf = wordfreq.word_frequency(words[i], "en")
        assert vader.ref.probs[i] * mass == pytest.approx(wf, rel=6e-3)


@needs_data
def test_known_vader_rewards(vader):
    assert vader.reward_of("good") == 1.9
    assert vader.reward_of("bad") == -2.5
    assert vader.reward_of("love") == 3.2
    assert vader.reward_of("hate") == -2.7
    assert vader.reward_of("the") == 0.0
    assert vader.reward_of("lol") == 1.8  # duplicated in the file: the last entry wins


@needs_data
def test_known_afinn_rewards(afinn):
    assert afinn.reward_of("good") == 3.0
    assert afinn.reward_of("bad") == -3.0
    assert afinn.reward_of("love") == 3.0
    assert afinn.reward_of("hate") == -3.0
    assert afinn.reward_of("the") == 0.0


@needs_data
def test_rewards_equal_package_lexicons(vader, afinn):
    """Every word's reward is what the package's own scorer looks up."""
    from afinn import Afinn
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    vlex = SentimentIntensityAnalyzer().lexicon
    expect = np.array([vlex.get(w.lower(), 0.0) for w in vader.words])
    np.testing.assert_array_equal(vader.ref.rewards, expect)
    alex = Afinn(language="en")._dict
    expect = np.array([float(alex.get(w.lower(), 0)) for w in afinn.words])
    np.testing.assert_array_equal(afinn.ref.rewards, expect)


@needs_data
@pytest.mark.parametrize(("name", "h", "levels"), [("vader", 0.1, 74), ("afinn", 1.0, 11)])
def test_lattice_property_and_detection(name, h, levels, request):
    inst = request.getfixturevalue(name)
    r = inst.ref.rewards
    assert inst.lattice == h
    # exactly the doubles nearest to k*h (k/10 for VADER)
    k = inst.lattice_indices()
    np.testing.assert_array_equal(r, k / round(1 / h))
    # independent detection with a tolerance: maximal span is h itself
    assert _independent_lattice_check(r, h) == 1
    assert lattice_span(r, h) == h
    assert lattice_span(r * (1 + 1e-13), h) == h  # tolerant to rounding noise
    assert inst.ref.n_levels == levels


@needs_data
def test_vader_headline_facts(vader):
    s = vader.to_dict()
    assert s["K"] == 50_000
    assert 0.90 < s["p_reward_zero"] < 0.95  # measured 0.9254 (wordfreq 3.1.1)
    assert s["p_argmax"] == pytest.approx(1.2186e-6, rel=0.05)  # theory §10: ≈1.2e-6
    assert s["kl_max"] == pytest.approx(13.62, abs=0.05)
    assert s["r_max"] == 3.4 and s["r_min"] == -3.9
    assert set(s["argmax_words"]) == {"magnificently", "aml"}
    assert s["source"] == vader.source and set(s["source"]) == {"wordfreq", "vaderSentiment"}


@needs_data
def test_afinn_headline_facts(afinn):
    s = afinn.to_dict()
    assert 0.91 < s["p_reward_zero"] < 0.96  # measured 0.9349
    assert s["p_argmax"] == pytest.approx(5.684e-5, rel=0.05)
    assert s["r_max"] == 5.0 and s["r_min"] == -5.0
    assert "outstanding" in s["argmax_words"] and "superb" in s["argmax_words"]
    assert s["n_argmax"] == len(s["argmax_words"]) == 5


@needs_data
def test_load_by_name_matches_builder(vader):
    small = load("unigram-afinn", top_n=500)
    assert small.size == 500 and small.name == "unigram-afinn"
    assert small.words == load("unigram-vader", top_n=500).words
    assert load("unigram-vader", top_n=500).ref.rewards.tolist() == vader.ref.rewards[:500].tolist()


@needs_data
def test_multiword_and_emoticons_documented_handling(vader, afinn):
    # multi-word entries can never be a unigram outcome; they are counted and dropped
    assert vader.meta["lexicon_multiword_dropped"] == 4
    assert afinn.meta["lexicon_multiword_dropped"] == 30
    assert vader.meta["lexicon_uppercase_dropped"] > 0  # ":D", "O.o", ...
    assert not any(" " in w for w in vader.words)


@needs_data
def test_small_and_full_sizes():
    one = unigram_sentiment(top_n=1)
    assert one.words == ["the"] and one.ref.probs.tolist() == [1.0]
    assert one.ref.is_constant and one.lattice == 0.1


@needs_data
def test_build_time_and_no_vader_module_import():
    code = (
        "import sys, time\n"
        "t = time.perf_counter()\n"
        "from klfrontier.instances import unigram_sentiment\n"
        "unigram_sentiment(50_000, 'vader'); unigram_sentiment(50_000, 'afinn')\n"
        "dt = time.perf_counter() - t\n"
        "assert dt < 5.0, dt\n"
        "assert 'vaderSentiment.vaderSentiment' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- proxy vs gold (theory §9)
@needs_data
def test_proxy_gold_is_the_vader_law_with_afinn_gold(vader, afinn):
    inst = unigram_proxy_gold()
    assert inst.name == "unigram-vader-afinn" and inst.words == vader.words
    # the same law and proxy reward as unigram-vader, bit for bit; gold = the AFINN rewards
    np.testing.assert_array_equal(inst.ref.logprobs, vader.ref.logprobs)
    np.testing.assert_array_equal(inst.ref.rewards, vader.ref.rewards)
    np.testing.assert_array_equal(inst.ref.gold, afinn.ref.rewards)
    assert inst.lattice == vader.lattice and inst.meta["gold_lattice"] == 1.0
    assert inst.meta["proxy"] == "vader" and inst.meta["gold"] == "afinn"
    assert inst.meta["words_with_gold"] == afinn.meta["words_with_reward"]
    both = int(np.count_nonzero((vader.ref.rewards != 0) & (afinn.ref.rewards != 0)))
    assert inst.meta["words_with_both"] == both and 0 < both < inst.meta["words_with_gold"]
    assert set(inst.source) == {"wordfreq", "vaderSentiment", "afinn"}
    with pytest.raises(ValueError):
        inst.ref.gold[0] = 1.0
    s = inst.to_dict()
    # E_p g is the mean reward of unigram-afinn; the top VADER words have no AFINN entry
    assert s["mean_gold"] == pytest.approx(afinn.ref.mean_reward, rel=1e-12)
    assert s["gold_on_argmax"] == 0.0
    assert {"magnificently", "aml"} <= set(s["argmax_words"])
    assert "mean_gold" not in vader.to_dict()


@needs_data
def test_proxy_gold_policies_against_outcome_sums():
    """Gold of a proxy-chosen policy = sum over words of pi(w) AFINN(w) (the outcome law)."""
    import klfrontier as kf

    inst = load("unigram-vader-afinn", top_n=3000)
    ref = inst.ref
    g = ref.gold
    for pol in (kf.tilted(ref, kl=1.0), kf.best_of_n(ref, n=64), kf.soft_best_of_n(ref, n=16, lam=2.0)):
        pi = pol.probs
        direct = math.fsum((pi * g).tolist()) / math.fsum(pi.tolist())
        assert pol.gold == pytest.approx(direct, rel=1e-12)
        assert pol.expect(ref.rewards) == pytest.approx(pol.reward, rel=1e-12)


@needs_data
def test_proxy_gold_options_and_errors():
    swapped = unigram_proxy_gold(top_n=500, proxy="afinn", gold="vader")
    assert swapped.name == "unigram-afinn-vader"
    np.testing.assert_array_equal(swapped.ref.rewards, unigram_sentiment(500, "afinn").ref.rewards)
    np.testing.assert_array_equal(swapped.ref.gold, unigram_sentiment(500, "vader").ref.rewards)
    same = unigram_proxy_gold(top_n=500, proxy="vader", gold="vader")
    np.testing.assert_array_equal(same.ref.gold, same.ref.rewards)
    assert load("unigram-vader-afinn", top_n=500).size == 500
    with pytest.raises(ValueError, match="proxy must be one of"):
        unigram_proxy_gold(top_n=100, proxy="sentiwordnet")
    with pytest.raises(ValueError, match="gold must be one of"):
        unigram_proxy_gold(top_n=100, gold=3)
    with pytest.raises(ValueError, match="lang 'da' is not available for proxy 'vader'"):
        unigram_proxy_gold(top_n=100, lang="da")
    with pytest.raises(ValueError, match="top_n"):
        unigram_proxy_gold(top_n=0)
    with pytest.raises(ValueError, match="bad keyword arguments"):
        load("unigram-vader-afinn", proxy="afinn")
