"""`klfrontier.lm.sample` against `model.generate(num_return_sequences=N)`, SmolLM2-135M-Instruct.

Workload: 8 prompts of ~215 tokens each (chat template included: a one-line
instruction and the first 180 tokens of a standard-library module's docstring),
N = 16 samples per prompt, at most 48 new tokens, temperature 1, no top-k, no
top-p (the model's own law).

* **ours**: ``lm.sample(m, prompts, n=16, max_new_tokens=48, batch_prompts=8)``
  -- one prompt pass per prompt, KV cache expanded to the 128 rows, one
  decoding loop recording exact log-probabilities;
* **baseline**: per prompt, ``model.generate(input_ids, do_sample=True,
  num_return_sequences=16, max_new_tokens=48, top_k=0, top_p=1.0,
  temperature=1.0)`` -- what a user writes; ``top_k=0`` because generate's
  default is top-k 50, a different law.

Each side runs in its own subprocess (so that its peak RSS is its own), loads
the model, and is timed on the sampling call only.  Generated tokens count
every token up to and including the first EOS.  Peak RSS is reported twice:
after loading (``VmRSS``) and the high-water mark of the sampling phase
(``VmHWM`` after resetting it through ``/proc/self/clear_refs``; the process
peak ``ru_maxrss`` when the reset is not permitted).

Same law: after timing, each side's samples are scored under the model by
teacher forcing (:func:`klfrontier.lm.score`; ours' recorded ``ref_logprob``
is checked against it), and three per-sample statistics -- the sequence
log-probability, the token-linear VADER reward (``rewards.token_linear``)
and the length -- are compared between the two sides with two-sample
Kolmogorov-Smirnov and Mann-Whitney tests (pooled over prompts: both sides
draw the same number of samples per prompt).

Usage::

    python benchmarks/bench_lm.py                   # the workload above
    python benchmarks/bench_lm.py --quick           # 2 prompts, N = 8, 16 new tokens
    python benchmarks/bench_lm.py --threads 1 --out /tmp/lm.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
DEFAULT_OUT = HERE / "results" / "lm.json"
GOAL_SPEEDUP = 1.5
DOC_MODULES = ("json", "argparse", "subprocess", "doctest", "csv", "re", "heapq", "ast")
INSTRUCTION = "Summarize this documentation in one sentence:\n\n"
DOC_TOKENS = 180


# ----------------------------------------------------------------- worker side
def _status(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return None


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _prompts(tok, count):
    import importlib
    import inspect

    out = {}
    for name in DOC_MODULES[:count]:
        doc = " ".join(inspect.getdoc(importlib.import_module(name)).split())
        ids = tok(doc, add_special_tokens=False)["input_ids"][:DOC_TOKENS]
        out[name] = INSTRUCTION + tok.decode(ids)
    return out


def _cut(row, eos):
    for j, t in enumerate(row):
        if t in eos:
            return row[: j + 1]
    return row


def worker(side, cfg, out_path):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from klfrontier import lm

    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    t0 = time.perf_counter()
    m = lm.load_model("smollm2")
    load_s = time.perf_counter() - t0
    prompts = _prompts(m.tokenizer, cfg["prompts"])
    lengths = [len(m.encode_prompt(p)) for p in prompts.values()]
    rss_loaded = _status("VmRSS")
    reset = _reset_peak()
    n, new = cfg["n"], cfg["max_new_tokens"]
    eos = set(m.eos_token_ids)
    t0 = time.perf_counter()
    if side == "ours":
        res = lm.sample(
            m, prompts, n=n, max_new_tokens=new, seed=cfg["seed"], batch_prompts=8, max_rows=cfg["max_rows"]
        )
        token_ids = res.token_ids
        pids = res.prompt_id
    else:
        torch.manual_seed(cfg["seed"])
        token_ids, pids = [], []
        with torch.inference_mode():
            for pid, text in prompts.items():
                ids = torch.tensor([m.encode_prompt(text)])
                out = m.model.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    do_sample=True,
                    num_return_sequences=n,
                    max_new_tokens=new,
                    top_k=0,
                    top_p=1.0,
                    temperature=1.0,
                    pad_token_id=m.pad_token_id,
                )
                for row in out[:, ids.shape[1] :].tolist():
                    token_ids.append(_cut(row, eos))
                    pids.append(pid)
    wall = time.perf_counter() - t0
    peak = _status("VmHWM") if reset else None
    import resource

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # untimed: score every sample under the model; the token-linear reward
    scored = np.concatenate(
        [lm.score(m, prompts[p], [t for t, q in zip(token_ids, pids) if q == p]) for p in prompts]
    )
    try:
        from klfrontier import rewards

        reward = rewards.token_linear(m.tokenizer, "vader").of_ids(token_ids).tolist()
    except ImportError as exc:  # the data extra is missing
        reward = None
        print(f"token-linear reward skipped: {exc}", file=sys.stderr)
    result = {
        "side": side,
        "load_s": load_s,
        "wall_s": wall,
        "tokens": int(sum(len(t) for t in token_ids)),
        "samples": len(token_ids),
        "prompt_tokens": lengths,
        "rss_after_load": rss_loaded,
        "peak_rss_sampling": peak,
        "peak_rss_process": maxrss,
        "threads": torch.get_num_threads(),
        "logprob": scored.tolist(),
        "reward": reward,
        "length": [len(t) for t in token_ids],
        "ended_with_eos": [t[-1] in eos for t in token_ids],
    }
    if side == "ours":
        result["recorded_vs_scored_max_abs"] = float(np.max(np.abs(res.ref_logprob - scored)))
    Path(out_path).write_text(json.dumps(result))


# ----------------------------------------------------------------- parent side
def _run_side(side, cfg, tmp):
    out = Path(tmp) / f"{side}.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(HERE.parent / "src"))
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        side,
        "--cfg",
        json.dumps(cfg),
        "--worker-out",
        str(out),
    ]
    subprocess.run(cmd, check=True, env=env)
    return json.loads(out.read_text())


def _compare(a, b):
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    return {
        "ours_mean": float(a.mean()),
        "baseline_mean": float(b.mean()),
        "ks_p": float(stats.ks_2samp(a, b).pvalue),
        "mannwhitney_p": float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 prompts, N = 8, 16 new tokens")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch threads on both sides (default: torch's)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--max-rows", type=int, default=None, help="ours: rows per forward pass (default: lm.sample's, 64)"
    )
    ap.add_argument("--sides", default="ours,baseline", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--worker", choices=("ours", "baseline"), help=argparse.SUPPRESS)
    ap.add_argument("--cfg", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, json.loads(args.cfg), args.worker_out)
        return 0
    from _common import machine_info

    cfg = {
        "prompts": 2 if args.quick else 8,
        "n": 8 if args.quick else 16,
        "max_new_tokens": 16 if args.quick else 48,
        "seed": args.seed,
        "threads": args.threads,
        "max_rows": args.max_rows or 64,
    }
    before = machine_info()
    with tempfile.TemporaryDirectory() as tmp:
        sides = {s: _run_side(s, cfg, tmp) for s in ("ours", "baseline")}
    load_after = os.getloadavg()
    rate = {s: r["tokens"] / r["wall_s"] for s, r in sides.items()}
    speedup = rate["ours"] / rate["baseline"]
    dist = {
        "sequence_logprob": _compare(sides["ours"]["logprob"], sides["baseline"]["logprob"]),
        "length": _compare(sides["ours"]["length"], sides["baseline"]["length"]),
    }
    if sides["ours"]["reward"] is not None and sides["baseline"]["reward"] is not None:
        dist["token_linear_vader"] = _compare(sides["ours"]["reward"], sides["baseline"]["reward"])

    def mb(x):
        return "-" if x is None else f"{x / 1e6:,.0f}"

    print(
        f"\nSmolLM2-135M-Instruct: {cfg['prompts']} prompts "
        f"({min(sides['ours']['prompt_tokens'])}-{max(sides['ours']['prompt_tokens'])} tokens), "
        f"N = {cfg['n']}, max_new_tokens = {cfg['max_new_tokens']}, threads = {sides['ours']['threads']}; "
        f"load average {before.get('load_average')} -> {tuple(round(x, 2) for x in load_after)}"
    )
    print(
        f"{'side':<10}{'samples':>8}{'tokens':>8}{'time s':>9}{'tokens/s':>10}"
        f"{'RSS load MB':>13}{'peak sampling MB':>18}"
    )
    for s, r in sides.items():
        print(
            f"{s:<10}{r['samples']:>8}{r['tokens']:>8}{r['wall_s']:>9.1f}{rate[s]:>10.1f}"
            f"{mb(r['rss_after_load']):>13}{mb(r['peak_rss_sampling'] or r['peak_rss_process']):>18}"
        )
    met = speedup >= GOAL_SPEEDUP
    print(
        f"speed-up {speedup:.2f}x (goal >= {GOAL_SPEEDUP}x: {'met' if met else 'NOT met'}); "
        f"ours' recorded log-probs vs teacher forcing: max |diff| = "
        f"{sides['ours']['recorded_vs_scored_max_abs']:.2e}"
    )
    print(f"{'statistic':<22}{'ours mean':>11}{'base mean':>11}{'KS p':>8}{'MW p':>8}")
    for k, d in dist.items():
        print(
            f"{k:<22}{d['ours_mean']:>11.3f}{d['baseline_mean']:>11.3f}{d['ks_p']:>8.3f}"
            f"{d['mannwhitney_p']:>8.3f}"
        )
    record = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": before,
        "load_average_after": list(load_after),
        "config": cfg,
        "ours": {
            k: v
            for k, v in sides["ours"].items()
            if k not in ("logprob", "reward", "length", "ended_with_eos")
        },
        "baseline": {
            k: v
            for k, v in sides["baseline"].items()
            if k not in ("logprob", "reward", "length", "ended_with_eos")
        },
        "tokens_per_s": rate,
        "speedup": speedup,
        "goal_speedup": GOAL_SPEEDUP,
        "goal_met": met,
        "same_distribution": dist,
        "eos_fraction": {s: float(np.mean(r["ended_with_eos"])) for s, r in sides.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
