"""The crash-safe sample store (klfrontier.lm.store) and `klfrontier sample`.

The store tests use synthetic batches (no torch); the command-line tests build
a tiny random Llama model on disk and are skipped without torch/transformers.
The kill -9 test starts `python -m klfrontier.cli sample` as a subprocess, kills
it at seeded random moments, resumes, and compares with an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow")

from klfrontier.io import read_samples  # noqa: E402
from klfrontier.lm.store import MANIFEST, SampleStore  # noqa: E402

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _batch(b, *, prompts_per_batch=2, n=3, seed=0):
    """A synthetic batch: the columns `lm.sample` produces, plus a reward."""
    rng = np.random.default_rng([seed, b])
    pids = [f"p{b * prompts_per_batch + j}" for j in range(prompts_per_batch) for _ in range(n)]
    idx = [i for _ in range(prompts_per_batch) for i in range(n)]
    lengths = rng.integers(1, 6, size=len(pids))
    tokens = [rng.integers(0, 1000, size=k).tolist() for k in lengths]
    lp = -rng.exponential(3.0, size=len(pids))
    return {
        "prompt_id": pids,
        "sample_index": idx,
        "text": [" ".join(map(str, t)) for t in tokens],
        "token_ids": tokens,
        "n_tokens": lengths,
        "logprob": lp,
        "ref_logprob": lp - 0.25,
        "kl_steps": rng.random(len(pids)),
        "reward": rng.normal(size=len(pids)),
    }


def _files(path):
    return sorted(p.name for p in Path(path).iterdir() if not p.name.endswith(".lock"))


# ---------------------------------------------------------------------------- store basics
def test_round_trip_in_batch_order_and_exact(tmp_path):
    path = tmp_path / "s"
    with SampleStore(path, params={"seed": 0, "n": 3}) as store:
        for b in (2, 0, 3, 1):  # committed out of order
            entry = store.append(b, _batch(b))
            assert entry["batch"] == b and entry["rows"] == 6
    store = SampleStore(path, create=False)
    assert store.done_batches() == {0, 1, 2, 3}
    table = store.read_table()
    want = {
        k: [
            x
            for b in range(4)
            for x in (np.asarray(_batch(b)[k]).tolist() if k != "token_ids" else _batch(b)[k])
        ]
        for k in _batch(0)
    }
    for k, v in want.items():
        assert table.column(k).to_pylist() == v, k  # floats bit for bit, lists exact
    s = store.read()
    assert s.prompts == [f"p{i}" for i in range(8)]
    assert s.has_logprobs and s.has_ref_logprobs and not s.has_gold
    np.testing.assert_array_equal(s.groups["p5"], np.asarray(_batch(2)["reward"][3:6]))
    assert s.texts[0] == _batch(0)["text"][:3]
    # a file-less view: read_samples reads a store directory too
    r = read_samples(path, keep_text=True)
    assert r.prompts == s.prompts and r.texts == s.texts
    np.testing.assert_array_equal(np.concatenate(r.ref_logprobs), np.concatenate(s.ref_logprobs))


def test_manifest_lists_rows_and_checksums(tmp_path):
    import hashlib

    with SampleStore(tmp_path / "s", params={"model": "m"}) as store:
        store.append(0, _batch(0))
        store.append(1, _batch(1))
    m = json.loads((tmp_path / "s" / MANIFEST).read_text())
    assert m["params"] == {"model": "m"}
    assert [e["batch"] for e in m["batches"]] == [0, 1]
    for e in m["batches"]:
        assert e["file"].startswith(f"shard-{e['batch']:06d}-") and e["file"].endswith(".parquet")
        assert e["sha256"] == hashlib.sha256((tmp_path / "s" / e["file"]).read_bytes()).hexdigest()
        assert e["rows"] == 6
    assert _files(tmp_path / "s") == sorted([MANIFEST] + [e["file"] for e in m["batches"]])


def test_gold_column_and_read_samples_roles(tmp_path):
    b = _batch(0)
    gold = np.arange(6.0)
    with SampleStore(tmp_path / "s") as store:
        store.append(0, {k: v for k, v in b.items() if k != "reward"}, reward=b["reward"], gold=gold)
    s = SampleStore(tmp_path / "s").read()
    assert s.has_gold and s.gold[1].tolist() == [3.0, 4.0, 5.0]
    assert not read_samples(tmp_path / "s").has_gold  # as for files: gold on request
    g = read_samples(tmp_path / "s", columns={"gold": "gold"})
    assert g.gold[0].tolist() == [0.0, 1.0, 2.0]
    by_gold = read_samples(tmp_path / "s", columns={"reward": "gold", "logprob": None, "ref_logprob": None})
    assert by_gold.rewards[0].tolist() == [0.0, 1.0, 2.0] and not by_gold.has_logprobs
    with pytest.raises(ValueError, match="no column 'score'"):
        read_samples(tmp_path / "s", columns={"reward": "score"})
    with pytest.raises(ValueError, match="unknown keys"):
        read_samples(tmp_path / "s", columns={"rewards": "reward"})


def test_append_twice_is_refused(tmp_path):
    with SampleStore(tmp_path / "s") as store:
        store.append(0, _batch(0))
        with pytest.raises(ValueError, match="batch_index 0 is already committed"):
            store.append(0, _batch(0))
    with SampleStore(tmp_path / "s") as other:  # another writer, later
        with pytest.raises(ValueError, match="already committed"):
            other.append(0, _batch(0))
    assert SampleStore(tmp_path / "s").read().n_samples == 6


def test_bad_appends(tmp_path):
    with SampleStore(tmp_path / "s", shard="1/2") as store:
        with pytest.raises(ValueError, match="outside this writer's shard 1/2"):
            store.append(0, _batch(0))
        with pytest.raises(ValueError, match="batch_index must be an integer >= 0"):
            store.append(-1, _batch(0))
        b = _batch(1)
        with pytest.raises(ValueError, match="lack the column.*reward"):
            store.append(1, {k: v for k, v in b.items() if k != "reward"})
        with pytest.raises(ValueError, match="reward given twice"):
            store.append(1, b, reward=b["reward"])
        with pytest.raises(ValueError, match="differ in length"):
            store.append(1, dict(b, reward=b["reward"][:-1]))
        with pytest.raises(ValueError, match="logprob contains NaN"):
            store.append(1, dict(b, logprob=np.full(6, np.nan)))
        with pytest.raises(ValueError, match="pair occurs twice"):
            store.append(1, dict(b, sample_index=[0] * 6))
        store.append(1, b)
        with pytest.raises(ValueError, match="columns .* differ from the store's"):
            store.append(3, {k: v for k, v in _batch(3).items() if k != "kl_steps"})
    # failed appends leave nothing behind
    assert len([f for f in _files(tmp_path / "s") if f.endswith(".parquet")]) == 1


def test_parameters_must_match(tmp_path):
    SampleStore(tmp_path / "s", params={"model": "smollm2", "seed": 0, "tilt": None})
    with pytest.raises(ValueError, match=r"seed: store has 0, given 1\)"):
        SampleStore(tmp_path / "s", params={"model": "smollm2", "seed": 1, "tilt": None})
    with pytest.raises(ValueError, match=r'tilt: store has null, given 0.5; top_k: store has "<absent>"'):
        SampleStore(tmp_path / "s", params={"model": "smollm2", "seed": 0, "tilt": 0.5, "top_k": 4})
    assert SampleStore(tmp_path / "s").params["model"] == "smollm2"  # params=None: any
    with pytest.raises(ValueError, match="params must be JSON values"):
        SampleStore(tmp_path / "t", params={"x": float("nan")})


def test_open_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        SampleStore(tmp_path / "missing", create=False)
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match="not a sample store"):
        SampleStore(tmp_path / "d", create=False)
    (tmp_path / "d" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not a sample store .*'notes.txt'"):
        SampleStore(tmp_path / "d")
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        SampleStore(tmp_path / "f")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / MANIFEST).write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        SampleStore(tmp_path / "m")
    with pytest.raises(ValueError, match="shard must look like K/M"):
        SampleStore(tmp_path / "x", shard="2")
    with pytest.raises(ValueError, match="0 <= K < M"):
        SampleStore(tmp_path / "x", shard="2/2")
    with pytest.raises(ValueError, match="no committed batch yet"):
        SampleStore(tmp_path / "x").read()


def test_damaged_or_missing_shard_is_reported(tmp_path):
    with SampleStore(tmp_path / "s") as store:
        e = store.append(0, _batch(0))
        store.append(1, _batch(1))
    shard = tmp_path / "s" / e["file"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum differs"):
        SampleStore(tmp_path / "s").read()
    shard.unlink()
    with pytest.raises(ValueError, match="shard .* of batch 0 is missing"):
        SampleStore(tmp_path / "s").read()


# ---------------------------------------------------------------------------- crash states
def test_crash_between_shard_and_manifest_leaves_an_ignored_orphan(tmp_path, monkeypatch):
    """A writer dies after renaming batch 1's shard, before the manifest lists it."""
    path = tmp_path / "s"
    with SampleStore(path) as store:
        store.append(0, _batch(0))

        def die(self, manifest):
            raise KeyboardInterrupt("killed")

        monkeypatch.setattr(SampleStore, "_write_manifest", die)
        with pytest.raises(KeyboardInterrupt):
            store.append(1, _batch(1))
        monkeypatch.undo()
    orphans = [f for f in _files(path) if f.startswith("shard-000001-")]
    assert len(orphans) == 1  # the renamed shard is there...
    reader = SampleStore(path, create=False)
    assert reader.done_batches() == {0}  # ...but not committed
    assert reader.read().n_samples == 6
    assert orphans[0] in _files(path)  # readers never delete
    with SampleStore(path) as writer:  # a writer removes it, then redoes it
        writer.lock()
        assert orphans[0] not in _files(path)
        writer.append(1, _batch(1))
    assert SampleStore(path).read().n_samples == 12


def test_stale_temporaries_are_removed_by_the_range_writer(tmp_path):
    path = tmp_path / "s"
    with SampleStore(path) as store:
        store.append(0, _batch(0))
    junk = [
        f".tmp-shard-000003-{'a' * 32}.parquet",
        f".tmp-shard-000004-{'b' * 32}.parquet",
        ".manifest.json.x1y2.tmp",
    ]
    for name in junk:
        (path / name).write_bytes(b"half a file")
    with SampleStore(path, shard="1/2") as w:
        w.lock()  # batch 3 is in range 1/2, batch 4 is not
    assert set(_files(path)) & set(junk) == {junk[1]}
    with SampleStore(path, shard="0/2") as w:
        w.lock()
    assert not set(_files(path)) & set(junk)
    assert SampleStore(path).read().n_samples == 6


def test_torn_manifest_temporary_never_replaces_the_manifest(tmp_path, monkeypatch):
    """A crash while the new manifest is being written leaves the old one in force."""
    import klfrontier._atomic as atomic

    path = tmp_path / "s"
    with SampleStore(path) as store:
        store.append(0, _batch(0))
        real_replace = os.replace

        def crash_on_manifest(src, dst):
            if str(dst).endswith(MANIFEST):
                raise KeyboardInterrupt("killed")
            return real_replace(src, dst)

        monkeypatch.setattr(atomic.os, "replace", crash_on_manifest)
        with pytest.raises(KeyboardInterrupt):
            store.append(1, _batch(1))
        monkeypatch.undo()
    assert SampleStore(path).done_batches() == {0}
    with SampleStore(path) as w:
        w.append(1, _batch(1))
    assert SampleStore(path).done_batches() == {0, 1}
    assert len([f for f in _files(path) if f.endswith(".parquet")]) == 2


# ---------------------------------------------------------------------------- locks
def test_locks_keep_two_writers_out_of_one_range(tmp_path):
    path = tmp_path / "s"
    a = SampleStore(path, shard="0/2").lock()
    with pytest.raises(ValueError, match="another process is writing shard 0/2"):
        SampleStore(path, shard="0/2").lock()
    b = SampleStore(path, shard="1/2").lock()  # the other range is free
    with pytest.raises(ValueError, match="shards K/2; use the same M"):
        SampleStore(path, shard="0/3").lock()
    with pytest.raises(ValueError, match="K/2"):
        SampleStore(path).append(0, _batch(0))  # the whole range (0/1) overlaps
    a.append(0, _batch(0))
    b.append(1, _batch(1))
    a.close()
    b.close()
    with SampleStore(path, shard="0/3") as c:  # free again once closed
        c.append(3, _batch(3))
    assert SampleStore(path).done_batches() == {0, 1, 3}


def test_lock_dies_with_its_process(tmp_path):
    path = tmp_path / "s"
    SampleStore(path)
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {SRC!r})
        from klfrontier.lm.store import SampleStore
        s = SampleStore({str(path)!r}).lock()
        print("locked", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(ValueError, match="another process is writing shard 0/1"):
            SampleStore(path).lock()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    SampleStore(path).lock().close()  # the kernel dropped the lock


def test_concurrent_writers_merge_their_commits(tmp_path):
    """Two processes fill the two halves of one store at the same time."""
    path = tmp_path / "s"
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {SRC!r}); sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_store import _batch
        from klfrontier.lm.store import SampleStore
        k = int(sys.argv[1])
        with SampleStore({str(path)!r}, params={{"n": 3}}, shard=f"{{k}}/2") as s:
            for b in range(k, 40, 2):
                s.append(b, _batch(b))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(k)]) for k in (0, 1)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    store = SampleStore(path)
    assert store.done_batches() == set(range(40))
    s = store.read()
    assert s.prompts == [f"p{i}" for i in range(80)] and s.n_samples == 240


# ---------------------------------------------------------------------------- `klfrontier sample`
# A tiny random Llama model with a word-level tokenizer over words the VADER
# lexicon scores, so that token-vader is a real token-linear reward here.
_WORDS = (
    "good bad happy sad love hate great terrible nice awful the a cat dog is was very not and "
    "movie food day night friend enemy best worst fun boring"
).split()
# Sampling settings shared by the command-line tests: 12 prompts, one per batch.
_N, _NEW, _BATCH, _SEED, _LAM, _BEST = 8, 16, 1, 3, 0.5, 4


def _build_tiny_model(path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<pad>", "<s>", "</s>"]
    vocab = {w: i for i, w in enumerate(specials + list(_WORDS))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=1,
    )
    LlamaForCausalLM(cfg).save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model directory, prompt file) for the command-line tests."""
    pytest.importorskip("klfrontier.rewards")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root = tmp_path_factory.mktemp("tiny")
    model = _build_tiny_model(root / "model")
    prompts = root / "prompts.txt"
    openings = ["the movie was", "a day is", "the food was very", "my friend is not"]
    prompts.write_text("".join(f"{openings[i % 4]} {_WORDS[i]}\n" for i in range(12)))
    return model, prompts


def _args(tiny, out, *extra):
    model, prompts = tiny
    return [
        "sample",
        "--model",
        str(model),
        "--prompts",
        str(prompts),
        "--n",
        str(_N),
        "--max-new-tokens",
        str(_NEW),
        "--batch-prompts",
        str(_BATCH),
        "--seed",
        str(_SEED),
        "--reward",
        "token-vader",
        "--gold-reward",
        "vader",
        "--tilt",
        str(_LAM),
        "--best-of",
        str(_BEST),
        "--threads",
        "1",
        "--out",
        str(out),
        *extra,
    ]


def _invoke(args):
    """Run the command in this process (the resumes: no second start-up of torch)."""
    from typer.testing import CliRunner

    from klfrontier.cli import app

    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output


_COMPARED = (
    "prompt_id",
    "sample_index",
    "text",
    "token_ids",
    "n_tokens",
    "finished",
    "logprob",
    "ref_logprob",
    "kl_steps",
    "reward",
    "gold",
)


def _rows(path):
    """``{(prompt_id, sample_index): row}`` of a store, checking each pair occurs once."""
    t = SampleStore(path, create=False).read_table(columns=list(_COMPARED)).to_pylist()
    keys = [(r["prompt_id"], r["sample_index"]) for r in t]
    assert len(set(keys)) == len(keys), "a (prompt_id, sample_index) pair occurs twice"
    return dict(zip(keys, t))


def _subprocess_env():
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    return env


@pytest.fixture(scope="module")
def baseline(tiny, tmp_path_factory):
    """One uninterrupted run in a subprocess, with its timings."""
    out = tmp_path_factory.mktemp("baseline") / "store"
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "klfrontier.cli", *_args(tiny, out)],
        env=_subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    commits, state = [], (None, 0)  # when each batch lands
    while proc.poll() is None:
        seen = state[1]
        state = _committed(out, state)
        commits += [time.monotonic() - t0] * (state[1] - seen)
        time.sleep(0.001)
    stdout, stderr = proc.communicate()
    assert proc.returncode == 0, stderr
    assert "12 of 12 batches committed" in stdout
    gaps = np.diff(commits) if len(commits) > 1 else [0.05]
    return {
        "store": out,
        "rows": _rows(out),
        "startup": commits[0] if commits else 5.0,
        "batch": max(float(np.median(gaps)), 0.005),
        "selected": (out / "selected.jsonl").read_text(),
    }


def test_sample_command_writes_a_complete_store(tiny, baseline):
    rows = baseline["rows"]
    assert len(rows) == 12 * _N
    assert {k[0] for k in rows} == {str(i) for i in range(1, 13)}  # ids: line numbers
    s = read_samples(baseline["store"], columns={"gold": "gold"}, keep_text=True)
    assert s.n_prompts == 12 and set(s.counts) == {_N} and s.has_gold and s.has_ref_logprobs
    r = next(iter(rows.values()))
    assert r["logprob"] != r["ref_logprob"] and r["kl_steps"] > 0  # the tilt is on
    # token-vader is token-linear: the stored reward is Σ_t v(y_t) of the stored tokens
    from klfrontier import lm, rewards

    m = lm.load_model(tiny[0])
    tl = rewards.get("token-vader", tokenizer=m.tokenizer)
    for r in list(rows.values())[:20]:
        assert r["reward"] == pytest.approx(float(tl.of_ids([r["token_ids"]])[0]), abs=1e-12)
    # selected.jsonl: the highest reward among each prompt's first _BEST samples
    sel = [json.loads(line) for line in baseline["selected"].splitlines()]
    assert len(sel) == 12
    for rec in sel:
        cands = [rows[(rec["prompt_id"], i)]["reward"] for i in range(_BEST)]
        assert rec["sample_index"] < _BEST and rec["reward"] == max(cands)
        assert rec["n_tied"] == cands.count(max(cands))
        assert rec["text"] == rows[(rec["prompt_id"], rec["sample_index"])]["text"]


def test_sample_command_resumes_and_shards_to_the_same_samples(tiny, baseline, tmp_path):
    out = tmp_path / "s"
    # two shard processes (run one after the other here) fill one store
    code, text = _invoke(_args(tiny, out, "--shard", "1/3"))
    assert code == 0 and "4 of 12 batches committed" in text and "8 left to the other shards" in text
    assert SampleStore(out).done_batches() == {1, 4, 7, 10}
    assert not (out / "selected.jsonl").exists()
    code, text = _invoke(_args(tiny, out, "--shard", "0/3"))
    assert code == 0 and "8 of 12" in text
    code, text = _invoke(_args(tiny, out))  # the rest, unsharded; then selected.jsonl
    assert code == 0 and "12 of 12 batches committed (4 by this run" in text
    assert _rows(out) == baseline["rows"]
    assert (out / "selected.jsonl").read_text() == baseline["selected"]
    code, text = _invoke(_args(tiny, out))  # nothing left to do: no model loaded
    assert code == 0 and "(0 by this run" in text


def test_sample_command_errors_are_one_line(tiny, tmp_path):
    out = tmp_path / "s"
    cases = [
        (_args(tiny, out, "--n", "0"), "--n must be >= 1"),
        (_args(tiny, out, "--best-of", "9"), "--best-of must lie in [1, --n] = [1, 8]"),
        (_args(tiny, out, "--reward", "vader"), "--tilt needs a token-linear --reward"),
        (_args(tiny, out, "--shard", "3/3"), "--shard: shard K/M needs"),
        (_args(tiny, out, "--model", str(tmp_path / "nope")), "--model must be 'smollm2' or a local"),
    ]
    for args, message in cases:
        code, text = _invoke(args)
        assert code == 2 and message in text and len(text.strip().splitlines()) == 1, text
    missing = list(_args(tiny, out))
    missing[missing.index("--prompts") + 1] = str(tmp_path / "none.txt")
    code, text = _invoke(missing)
    assert code == 2 and "none.txt: no such file" in text
    assert not out.exists()
    code, _ = _invoke(_args(tiny, out, "--shard", "0/12"))
    assert code == 0
    code, text = _invoke(_args(tiny, out, "--seed", "4"))
    assert code == 2 and "written with other parameters (seed: store has 3, given 4)" in text
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(
        '{"prompt_id": "x", "prompt": "the cat"}\n{"prompt": "a dog"}\n{"prompt_id": "x", "prompt": "nice"}\n'
    )
    bad = list(_args(tiny, tmp_path / "t"))
    bad[bad.index("--prompts") + 1] = str(jsonl)
    code, text = _invoke(bad)
    assert code == 2 and "p.jsonl:3: prompt_id 'x' occurs twice" in text


def test_read_prompts(tmp_path):
    from klfrontier.cli_lm import read_prompts

    (tmp_path / "p.txt").write_text("  first prompt \n\nsecond\n")
    assert read_prompts(tmp_path / "p.txt") == {"1": "first prompt", "3": "second"}
    (tmp_path / "p.jsonl").write_text('{"prompt_id": 7, "prompt": "a"}\n\n{"prompt": "b"}\n')
    assert read_prompts(tmp_path / "p.jsonl") == {"7": "a", "3": "b"}
    (tmp_path / "bad.jsonl").write_text('{"prompt_id": "x"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: expected an object with a string 'prompt'"):
        read_prompts(tmp_path / "bad.jsonl")
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(ValueError, match="no prompts"):
        read_prompts(tmp_path / "empty.txt")


def test_best_of_selection_breaks_ties_uniformly():
    pa = pytest.importorskip("pyarrow")
    from klfrontier.cli_lm import best_of_selection

    # 400 prompts, each with samples 0 and 2 tied for the best of the first 3
    t = pa.table(
        {
            "prompt_id": [f"p{i}" for i in range(400) for _ in range(4)],
            "sample_index": [0, 1, 2, 3] * 400,
            "reward": [5.0, 1.0, 5.0, 9.0] * 400,
        }
    )
    picks = [r["sample_index"] for r in best_of_selection(t, n=3, seed=0)]
    assert set(picks) == {0, 2} and 160 < picks.count(0) < 240  # Binomial(400, 1/2): ±4 sd
    assert picks == [r["sample_index"] for r in best_of_selection(t, n=3, seed=0)]
    assert picks != [r["sample_index"] for r in best_of_selection(t, n=3, seed=1)]


# ---------------------------------------------------------------------------- kill -9
_TRIALS = 20


def _committed(out, last=None):
    """``(manifest stamp, committed batches)``; the manifest is parsed only when it changed."""
    try:
        st = os.stat(out / MANIFEST)
    except FileNotFoundError:
        return None, 0
    stamp = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)  # each commit renames a new file
    if last is not None and stamp == last[0]:
        return last
    return stamp, len(SampleStore(out).done_batches())


def _wait_for_commits(out, proc, target):
    """Poll (cheaply: a stat per millisecond) until ``target`` batches are committed or ``proc`` exits."""
    state = (None, 0)
    while proc.poll() is None:
        state = _committed(out, state)
        if state[1] >= target:
            return
        time.sleep(0.001)


def _kill_phase(trial, tiny, out, startup, batch):
    """Start `python -m klfrontier.cli sample` and SIGKILL it at a seeded random moment (once
    or twice); returns a description of the kills."""
    rng = np.random.default_rng([20240, trial])
    kills = 1 + int(rng.random() < 0.25)
    moments = []
    for _ in range(kills):
        before = len(SampleStore(out).done_batches()) if (out / MANIFEST).exists() else 0
        if before == 12:
            break
        # a quarter of the kills fall anywhere in the start-up (before this process's first
        # commit); the others a uniform fraction of a batch after j more commits (j = all that
        # are left: while selected.jsonl is written or the process exits)
        j = 0 if rng.random() < 0.25 else int(rng.integers(1, 12 - before + 1))
        delay = float(rng.uniform(0, startup if j == 0 else batch))
        proc = subprocess.Popen(
            [sys.executable, "-m", "klfrontier.cli", *_args(tiny, out)],
            env=_subprocess_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if j:
            _wait_for_commits(out, proc, before + j)
        time.sleep(delay)
        finished = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        after = len(SampleStore(out).done_batches()) if (out / MANIFEST).exists() else 0
        # debris of the crash (removed by the next writer): temporaries, unlisted shards
        listed = (
            {e["file"] for e in SampleStore(out).manifest()["batches"]}
            if (out / MANIFEST).exists()
            else set()
        )
        debris = (
            [
                p.name
                for p in out.iterdir()
                if p.name.endswith(".tmp")
                or p.name.startswith(".tmp-")
                or (p.name.startswith("shard-") and p.name not in listed)
            ]
            if out.exists()
            else []
        )
        moments.append(
            f"{j} commits + {delay:.3f}s: {before}->{after} batches"
            + (f", debris {debris}" if debris else "")
            + (" (it had exited)" if finished else "")
        )
    return moments


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_gives_the_uninterrupted_samples(tiny, baseline, tmp_path):
    """20 seeded trials: `klfrontier sample` killed with SIGKILL (once or twice) at a random
    moment, then resumed; the store ends with every sample exactly once, identical to the
    uninterrupted run's.  Two trials are killed at a time (the start-up of torch dominates)."""
    from concurrent.futures import ThreadPoolExecutor

    want = baseline["rows"]
    report = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [
            pool.submit(_kill_phase, t, tiny, tmp_path / f"trial{t}", baseline["startup"], baseline["batch"])
            for t in range(_TRIALS)
        ]
        for trial, fut in enumerate(futures):
            moments = fut.result()
            out = tmp_path / f"trial{trial}"
            if (out / MANIFEST).exists() and SampleStore(out).done_batches():
                got = _rows(out)  # what a kill leaves reads, and is already final
                assert all(got[k] == want[k] for k in got)
            code, text = _invoke(_args(tiny, out))  # resume
            assert code == 0, text
            got = _rows(out)
            assert len(got) == len(want) == 12 * _N  # each pair exactly once
            assert got == want  # text, tokens, logprobs, ...
            assert (out / "selected.jsonl").read_text() == baseline["selected"]
            listed = {e["file"] for e in SampleStore(out).manifest()["batches"]}
            assert not [
                p.name
                for p in out.iterdir()
                if p.name.startswith(".tmp-") or (p.name.startswith("shard-") and p.name not in listed)
            ]
            report.append(f"trial {trial:2d}: " + "; ".join(moments) + " -> resumed, identical")
    print(
        f"\n(start-up {baseline['startup']:.2f}s, one batch {baseline['batch']:.3f}s)\n" + "\n".join(report)
    )
