"""`klfrontier analyze` at scale: 1M and 10M sample rows, against a read-and-average floor.

Rows (one per sample file; see benchmarks/README.md for what each one measures):

* ``1M``  -- 10,000 prompts x 100 samples, JSONL and Parquet;
* ``10M`` -- 100,000 prompts x 100 samples, JSONL and Parquet (skipped by ``--quick``).

Each file is written once, seeded, into a cache directory (``--data-dir``,
default ``$TMPDIR/klfrontier-bench``) and reused while its generator version,
size and seed are unchanged.  Columns: ``prompt_id`` (strings), ``reward``
(a third of the prompts on a 0.05 grid, a third integers with most mass at 0,
a third continuous: many ties) and ``logprob`` (finite, < 0); rows shuffled.

Both sides run in their own subprocess, started by a fresh small wrapper that
reports the wall time (spawn to exit) and the child's peak RSS from
``os.wait4`` (``ru_maxrss``; cross-checked against ``VmHWM`` polled from
``/proc/<pid>/status``):

* the **floor**: pyarrow reads the file (``pyarrow.json.read_json`` with the
  schema given, or ``pyarrow.parquet.read_table``), the prompt ids are
  hash-encoded (``pyarrow.compute.dictionary_encode``) and the per-prompt mean
  reward is two ``np.bincount`` calls;
* **ours**: ``klfrontier analyze FILE --n-boot 1000 --seed 0 --out DIR``;
  at 1M rows also the same analysis without a report (``--json`` to a file:
  no figures, HTML or tables), and the **fixed cost**: the same command on a
  3,000-row file of the same generator and format (start-up, imports, the
  report), printed beside the row (not goals; the fixed cost over the floor
  bounds the ratio from below).

Goals: at 1M rows ours <= 5x the floor's wall time; at 10M rows ours' peak
RSS < 1.5 GB; ``summary.json`` <= 2 MB everywhere (GB and MB are 10^9 and
10^6 bytes).

Usage::

    python benchmarks/bench_analyze.py                 # 1M and 10M rows (generation ~1 min once)
    python benchmarks/bench_analyze.py --quick         # 1M rows only
    python benchmarks/bench_analyze.py --generate-only # write the sample files and stop
    python benchmarks/bench_analyze.py --sizes 10M --formats parquet --out /tmp/a.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_OUT = HERE / "results" / "analyze.json"
DEFAULT_DATA = Path(os.environ.get("TMPDIR") or tempfile.gettempdir()) / "klfrontier-bench"

#: Bump when the generator's output changes: cached files of another version are rewritten.
GENERATOR_VERSION = 1
SIZES = {"1M": (10_000, 100), "10M": (100_000, 100)}  # label -> (prompts, samples per prompt)
FORMATS = ("jsonl", "parquet")
CHUNK_ROWS = 1_000_000  # rows formatted / written at a time

GOAL_RATIO_1M = 5.0  # ours wall <= 5 x floor wall at 1M rows
GOAL_RSS_10M = 1.5e9  # ours peak RSS < 1.5 GB at 10M rows
GOAL_SUMMARY = 2e6  # summary.json <= 2 MB


# ----------------------------------------------------------------- generator
def sample_columns(n_prompts, per_prompt, seed=0):
    """The seeded sample columns: prompt codes, rewards and log-probabilities.

    Prompt ``i`` (code ``i``, id ``prompt-%06d``) has ``per_prompt`` samples;
    its rewards are ``mu_i + sigma_i z`` rounded to a 0.05 grid when
    ``i % 3 == 0``, integers ``0`` with probability ``p0_i`` in [0.5, 0.9] and
    ``1 + Poisson(2)`` otherwise when ``i % 3 == 1``, and continuous when
    ``i % 3 == 2``.  Log-probabilities are ``-Gamma(4, 25)`` (finite, < 0).
    Rows come in a random order.

    Returns
    -------
    codes : int64 array, rewards : float64 array, logprobs : float64 array
    """
    rng = np.random.default_rng([seed, n_prompts, per_prompt, GENERATOR_VERSION])
    n = n_prompts * per_prompt
    codes = np.repeat(np.arange(n_prompts, dtype=np.int64), per_prompt)
    mu = rng.standard_normal(n_prompts)
    sigma = rng.lognormal(-0.5, 0.5, n_prompts)
    p0 = rng.uniform(0.5, 0.9, n_prompts)
    kind = np.arange(n_prompts) % 3

    rewards = mu[codes] + sigma[codes] * rng.standard_normal(n)
    grid = kind[codes] == 0
    rewards[grid] = np.round(rewards[grid] * 20.0) / 20.0  # k / 20: prints as "0.35"
    ints = kind[codes] == 1
    hits = rng.random(n) >= p0[codes]
    counts = (1.0 + rng.poisson(2.0, n)) * hits
    rewards[ints] = counts[ints]
    rewards += 0.0  # no "-0" in the file
    logprobs = -rng.gamma(4.0, 25.0, n)
    logprobs = np.minimum(logprobs, -1e-12)

    order = rng.permutation(n)
    return codes[order], rewards[order], logprobs[order]


def _prompt_strings(codes):
    import pyarrow as pa
    import pyarrow.compute as pc

    digits = pc.utf8_lpad(pc.cast(pa.array(codes), pa.string()), 6, "0")
    return pc.binary_join_element_wise("prompt-", digits, "")


def _write_jsonl_chunk(fh, codes, rewards, logprobs):
    """Format one chunk of rows as JSON lines with pyarrow kernels and write it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    pids = _prompt_strings(codes)
    r = pc.cast(pa.array(rewards), pa.string())  # shortest round-trip repr
    lp = pc.cast(pa.array(logprobs), pa.string())
    lines = pc.binary_join_element_wise(
        '{"prompt_id": "', pids, '", "reward": ', r, ', "logprob": ', lp, "}\n", ""
    )
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)
    offsets = offsets[lines.offset : lines.offset + len(lines) + 1]
    data = memoryview(lines.buffers()[2])
    fh.write(data[offsets[0] : offsets[-1]])


def generate(label, data_dir, *, seed=0, log=print):
    """Write (once) the JSONL and Parquet sample files for ``label`` ("1M" or "10M").

    Returns a dict with the two paths, rows, prompts and the generation time;
    files already in ``data_dir`` with a matching ``.meta.json`` are reused.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    n_prompts, per_prompt = SIZES[label]
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    stem = f"samples-{label}-seed{seed}-v{GENERATOR_VERSION}"
    paths = {"jsonl": data_dir / f"{stem}.jsonl", "parquet": data_dir / f"{stem}.parquet"}
    meta_path = data_dir / f"{stem}.meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if all(p.exists() and p.stat().st_size == meta["bytes"][f] for f, p in paths.items()):
            return {**meta, "paths": {f: str(p) for f, p in paths.items()}, "cached": True}

    log(f"generating {label}: {n_prompts} prompts x {per_prompt} samples -> {data_dir}", flush=True)
    t0 = time.perf_counter()
    codes, rewards, logprobs = sample_columns(n_prompts, per_prompt, seed)
    n = codes.size
    schema = pa.schema([("prompt_id", pa.string()), ("reward", pa.float64()), ("logprob", pa.float64())])
    tmp = {f: p.with_name(p.name + ".part") for f, p in paths.items()}
    with open(tmp["jsonl"], "wb") as fh, pq.ParquetWriter(tmp["parquet"], schema) as pw:
        for lo in range(0, n, CHUNK_ROWS):
            sl = slice(lo, min(lo + CHUNK_ROWS, n))
            _write_jsonl_chunk(fh, codes[sl], rewards[sl], logprobs[sl])
            pw.write_table(
                pa.table(
                    [_prompt_strings(codes[sl]), pa.array(rewards[sl]), pa.array(logprobs[sl])], schema=schema
                )
            )
    for f in FORMATS:
        os.replace(tmp[f], paths[f])
    few = codes < 300  # ties on the first 300 prompts
    few_codes, few_rewards = codes[few], rewards[few]
    distinct = [np.unique(few_rewards[few_codes == i]).size for i in range(min(n_prompts, 300))]
    meta = {
        "label": label,
        "rows": int(n),
        "prompts": int(n_prompts),
        "per_prompt": per_prompt,
        "seed": seed,
        "generator_version": GENERATOR_VERSION,
        "generate_s": round(time.perf_counter() - t0, 2),
        "bytes": {f: paths[f].stat().st_size for f in FORMATS},
        "distinct_rewards_per_prompt_first300": {
            "grid": float(np.mean(distinct[0::3])),
            "integer": float(np.mean(distinct[1::3])),
            "continuous": float(np.mean(distinct[2::3])),
        },
    }
    meta_path.write_text(json.dumps(meta, indent=2))
    log(
        f"  wrote {n} rows in {meta['generate_s']} s "
        f"(jsonl {meta['bytes']['jsonl'] / 1e6:.0f} MB, parquet {meta['bytes']['parquet'] / 1e6:.0f} MB)"
    )
    return {**meta, "paths": {f: str(p) for f, p in paths.items()}, "cached": False}


def write_small(path, fmt, *, n_prompts=30, per_prompt=100, seed=0):
    """A small file of the same generator and format (the fixed-cost run): 30 x 100 rows by default.

    Thirty prompts keep ``analyze`` on its prompt bootstrap, as on the large files.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    codes, rewards, logprobs = sample_columns(n_prompts, per_prompt, seed)
    if fmt == "jsonl":
        with open(path, "wb") as fh:
            _write_jsonl_chunk(fh, codes, rewards, logprobs)
    else:
        pq.write_table(
            pa.table({"prompt_id": _prompt_strings(codes), "reward": rewards, "logprob": logprobs}), path
        )
    return path


# ------------------------------------------------------------------- floor
# Run as `python -c FLOOR_SRC FILE OUT.npz`: imports numpy and pyarrow only.
FLOOR_SRC = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
path, out = sys.argv[1], sys.argv[2]
t1 = time.perf_counter()
if path.endswith(".parquet"):
    import pyarrow.parquet as pq
    table = pq.read_table(path)
else:
    import pyarrow.json as pj
    schema = pa.schema([("prompt_id", pa.string()), ("reward", pa.float64()),
                        ("logprob", pa.float64())])
    table = pj.read_json(path, parse_options=pj.ParseOptions(explicit_schema=schema))
t2 = time.perf_counter()
enc = pc.dictionary_encode(table.column("prompt_id").combine_chunks())
codes = enc.indices.to_numpy()
reward = table.column("reward").to_numpy()
count = np.bincount(codes)
means = np.bincount(codes, weights=reward) / count
t3 = time.perf_counter()
np.savez(out, prompt=np.asarray(enc.dictionary.to_pylist(), dtype=object), mean=means, n=count)
print(json.dumps({"rows": int(codes.size), "prompts": int(count.size), "import_s": t1 - t0,
                  "read_s": t2 - t1, "group_s": t3 - t2}))
"""

# ---------------------------------------------------------------- wrapper
# Run as `python -c WRAP_SRC LIMIT_S STDOUT STDERR CMD...`: spawns CMD, and prints one JSON
# line with the wall time, os.wait4's ru_maxrss of CMD (bytes; an upper bound that may
# include this small wrapper's own RSS at spawn time, reported as wrapper_rss) and the
# largest VmHWM polled from /proc.
WRAP_SRC = r"""
import json, os, resource, signal, sys, threading, time
limit, out_path, err_path, cmd = float(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
wrapper_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
acts = [(os.POSIX_SPAWN_OPEN, 1, out_path, flags, 0o644),
        (os.POSIX_SPAWN_OPEN, 2, err_path, flags, 0o644)]
hwm = [0]
done = threading.Event()
t0 = time.perf_counter()
pid = os.posix_spawnp(cmd[0], cmd, os.environ, file_actions=acts)
def poll():
    while not done.is_set():
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        hwm[0] = max(hwm[0], int(line.split()[1]) * 1024)
        except OSError:
            pass
        done.wait(0.02)
threading.Thread(target=poll, daemon=True).start()
timed_out = [False]
def kill():
    timed_out[0] = True
    os.kill(pid, signal.SIGKILL)
timer = threading.Timer(limit, kill)
timer.start()
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t0
timer.cancel()
done.set()
print(json.dumps({"wall_s": wall, "rc": os.waitstatus_to_exitcode(status),
                  "timed_out": timed_out[0], "maxrss_bytes": ru.ru_maxrss * 1024,
                  "vmhwm_bytes": hwm[0], "wrapper_rss_bytes": wrapper_rss,
                  "user_s": ru.ru_utime, "sys_s": ru.ru_stime}))
"""


def measure(cmd, log_stem, timeout_s):
    """Run ``cmd`` under a fresh wrapper; its wall time, peak RSS and exit code."""
    out, err = f"{log_stem}.stdout", f"{log_stem}.stderr"
    proc = subprocess.run(
        [sys.executable, "-c", WRAP_SRC, str(timeout_s), out, err, *map(str, cmd)],
        capture_output=True,
        text=True,
        check=True,
    )
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["peak_rss_bytes"] = res["maxrss_bytes"]
    res["cpu_s"] = res["user_s"] + res["sys_s"]
    res["stdout"], res["stderr"] = out, err
    return res


def _klfrontier_exe(given):
    if given:
        return given
    exe = REPO / ".venv" / "bin" / "klfrontier"
    if exe.exists():
        return str(exe)
    found = shutil.which("klfrontier")
    if found:
        return found
    raise SystemExit("klfrontier executable not found: pass --klfrontier PATH")


def _tail(path, n=20):
    """The last ``n`` non-blank lines of a log (a traceback's last line is its error)."""
    try:
        lines = [ln.rstrip() for ln in Path(path).read_text(errors="replace").splitlines()]
    except OSError:
        return ""
    return "\n".join([ln for ln in lines if ln.strip()][-n:])


def check_per_prompt(out_dir, floor_npz):
    """Largest |ours - floor| per-prompt mean reward, from ours' per-prompt table.

    The table is looked for as ``per_prompt.parquet`` or ``per_prompt.csv`` in
    ``out_dir`` or ``out_dir/tables``; None when there is none (or it lacks the
    ``prompt`` and ``mean_reward`` columns).
    """
    import csv

    out_dir = Path(out_dir)
    found = [out_dir / d / f"per_prompt.{ext}" for d in ("", "tables") for ext in ("parquet", "csv")]
    found = [p for p in found if p.exists()]
    if not found:
        return None
    table = found[0]
    if table.suffix == ".parquet":
        import pyarrow.parquet as pq

        names = pq.read_schema(table).names
        if "prompt" not in names or "mean_reward" not in names:
            return None
        t = pq.read_table(table, columns=["prompt", "mean_reward"])
        pids, means = t.column("prompt").to_pylist(), t.column("mean_reward").to_pylist()
    else:
        with open(table, newline="") as fh:
            rows = list(csv.DictReader(fh))
        if not rows or "prompt" not in rows[0] or "mean_reward" not in rows[0]:
            return None
        pids, means = [r["prompt"] for r in rows], [float(r["mean_reward"]) for r in rows]
    floor = np.load(floor_npz, allow_pickle=True)
    want = dict(zip(floor["prompt"].tolist(), floor["mean"].tolist()))
    missing = sum(p not in want for p in pids)
    worst = max((abs(m - want[p]) for p, m in zip(pids, means) if p in want), default=float("nan"))
    return {
        "table": str(table),
        "max_abs_diff_mean_reward": worst,
        "prompts_compared": len(pids),
        "prompts_in_floor": len(want),
        "prompts_unknown_to_floor": missing,
    }


def run_row(label, fmt, gen, args, exe):
    path = gen["paths"][fmt]
    name = Path(path).name
    work = Path(args.data_dir) / "runs" / f"{label}-{fmt}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    print(f"{name}: floor ...", flush=True)
    npz = work / "floor_means.npz"
    floor = measure([sys.executable, "-c", FLOOR_SRC, path, npz], work / "floor", args.timeout)
    if floor["rc"] == 0:
        floor["phases"] = json.loads(Path(floor["stdout"]).read_text().strip().splitlines()[-1])
    else:
        floor["error"] = _tail(floor["stderr"])
    print(
        f"  floor {floor['wall_s']:.2f} s, {floor['peak_rss_bytes'] / 1e6:.0f} MB; "
        f"ours (n_boot={args.n_boot}) ...",
        flush=True,
    )
    out_dir = work / "analyze"
    cmd = [exe, "analyze", path, "--n-boot", str(args.n_boot), "--seed", str(args.seed), "--out", out_dir]
    ours = measure(cmd, work / "ours", args.timeout)
    ours["cmd"] = " ".join(map(str, cmd))
    if ours["rc"] != 0:
        ours["error"] = "timed out" if ours["timed_out"] else _tail(ours["stderr"])
    summary = out_dir / "summary.json"
    summary_bytes = summary.stat().st_size if ours["rc"] == 0 and summary.exists() else None
    print(
        f"  ours {ours['wall_s']:.2f} s, {ours['peak_rss_bytes'] / 1e6:.0f} MB, rc {ours['rc']}", flush=True
    )

    ratio = ours["wall_s"] / floor["wall_s"] if ours["rc"] == 0 and floor["rc"] == 0 else None
    bare = fixed = None
    if gen["rows"] == 1_000_000:
        # the fixed cost: the same command on 3,000 rows (start-up, imports, the report's figures and
        # pages), which no implementation of the per-row work can remove; over the floor, a lower
        # bound on the ratio
        small = write_small(work / f"small.{fmt}", fmt, seed=args.seed)
        cmd_small = [exe, "analyze", small, "--n-boot", str(args.n_boot), "--seed", str(args.seed)]
        fixed = measure(cmd_small + ["--out", work / "analyze_small"], work / "ours_small", args.timeout)
        fixed["cmd"] = " ".join(map(str, cmd_small + ["--out", work / "analyze_small"]))
        fixed["ratio"] = fixed["wall_s"] / floor["wall_s"] if fixed["rc"] == 0 and floor["rc"] == 0 else None
        print(
            f"  fixed cost (the same command on 3,000 rows) {fixed['wall_s']:.2f} s, rc {fixed['rc']}",
            flush=True,
        )
        # the same analysis with no report (figures, HTML, tables): --json
        cmd_bare = [exe, "analyze", path, "--n-boot", str(args.n_boot), "--seed", str(args.seed), "--json"]
        bare = measure(cmd_bare, work / "ours_json", args.timeout)
        bare["cmd"] = " ".join(map(str, cmd_bare))
        bare["ratio"] = bare["wall_s"] / floor["wall_s"] if bare["rc"] == 0 and floor["rc"] == 0 else None
        print(f"  ours without a report (--json) {bare['wall_s']:.2f} s, rc {bare['rc']}", flush=True)
    goals = []
    if gen["rows"] == 1_000_000:
        goals.append(("ratio <= 5", ratio is not None and ratio <= GOAL_RATIO_1M))
    if gen["rows"] == 10_000_000:
        goals.append(("RSS < 1.5 GB", ours["rc"] == 0 and ours["peak_rss_bytes"] < GOAL_RSS_10M))
    goals.append(("summary <= 2 MB", summary_bytes is not None and summary_bytes <= GOAL_SUMMARY))
    return {
        "row": f"{label}-{fmt}",
        "file": path,
        "format": fmt,
        "rows": gen["rows"],
        "prompts": gen["prompts"],
        "file_bytes": gen["bytes"][fmt],
        "floor": floor,
        "ours": ours,
        "ratio": ratio,
        "ours_without_report": bare,
        "ours_fixed_cost": fixed,
        "summary_bytes": summary_bytes,
        "goal": ", ".join(g for g, _ in goals),
        "goals": {g: bool(m) for g, m in goals},
        "met": all(m for _, m in goals),
        "check": check_per_prompt(out_dir, npz) if ours["rc"] == 0 and floor["rc"] == 0 else None,
    }


# ------------------------------------------------------------------ output
def print_table(rows, machine, quick=False):
    header = [
        "file",
        "rows",
        "prompts",
        "floor wall",
        "floor RSS",
        "ours wall",
        "ours RSS",
        "ratio",
        "summary.json",
        "goal",
        "met",
    ]

    def mb(b):
        return "-" if b is None else f"{b / 1e6:,.0f} MB"

    lines = []
    for r in rows:
        f, o = r["floor"], r["ours"]
        ours_wall = f"{o['wall_s']:.2f} s" + (
            "" if o["rc"] == 0 else (" (timeout)" if o["timed_out"] else f" (rc {o['rc']})")
        )
        lines.append(
            [
                f"{r['rows'] // 10**6}M {r['format']}",
                f"{r['rows']:,}",
                f"{r['prompts']:,}",
                f"{f['wall_s']:.2f} s",
                mb(f["peak_rss_bytes"]),
                ours_wall,
                mb(o["peak_rss_bytes"]),
                "-" if r["ratio"] is None else f"{r['ratio']:.2f}x",
                "-" if r["summary_bytes"] is None else f"{r['summary_bytes'] / 1e3:,.0f} kB",
                r["goal"],
                "yes" if r["met"] else "NO",
            ]
        )
    note = (
        f"{machine.get('cpu_model', machine['processor'])}, {machine['cpu_count']} cpus, "
        f"{machine.get('mem_total_gb', '?')} GB RAM, pyarrow {machine.get('pyarrow', '?')}, "
        f"load average {machine.get('loadavg_start', '?')} -> {machine.get('loadavg_end', '?')}"
    )
    title = "klfrontier analyze at scale (ratio = ours wall / floor wall; MB = 10^6 bytes)"
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, caption=note)
        for h in header:
            table.add_column(h)
        for line in lines:
            table.add_row(*line)
        Console(width=max(160, Console().width)).print(table)
    except ImportError:
        widths = [max(len(h), *(len(ln[i]) for ln in lines)) for i, h in enumerate(header)]
        print(title)
        print(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
        print("-+-".join("-" * w for w in widths))
        for line in lines:
            print(" | ".join(c.ljust(w) for c, w in zip(line, widths)))
        print(note)
    for r in rows:
        extra = []
        if r["check"]:
            extra.append(
                f"per-prompt mean vs floor: max |diff| "
                f"{r['check']['max_abs_diff_mean_reward']:.1e} over "
                f"{r['check']['prompts_compared']} prompts"
            )
        for side in ("ours", "floor"):
            if r[side].get("error"):
                last = r[side]["error"].splitlines()[-1].strip(" │")
                extra.append(f"{side} failed: {last} (log: {r[side]['stderr']})")
        extra.append(f"CPU s (user + sys): floor {r['floor']['cpu_s']:.2f}, ours {r['ours']['cpu_s']:.2f}")
        bare = r.get("ours_without_report")
        if bare and bare.get("ratio") is not None:
            extra.append(
                f"ours without a report (--json, no figures): {bare['wall_s']:.2f} s = {bare['ratio']:.2f}x"
            )
        fixed = r.get("ours_fixed_cost")
        if fixed and fixed.get("ratio") is not None:
            extra.append(
                f"fixed cost (the same command on 3,000 rows): {fixed['wall_s']:.2f} s = {fixed['ratio']:.2f}x "
                "the floor, a lower bound on the ratio"
            )
        ph = r["floor"].get("phases")
        if ph:
            extra.append(
                f"floor phases: import {ph['import_s']:.2f} s, read {ph['read_s']:.2f} s, "
                f"group {ph['group_s']:.2f} s"
            )
        if extra:
            print(f"* {r['row']}: " + "; ".join(extra))


def _loadavg():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _machine():
    sys.path.insert(0, str(HERE))
    from _common import machine_info

    info = machine_info()
    try:
        import pyarrow

        info["pyarrow"] = pyarrow.__version__
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as fh:
            info["mem_total_gb"] = round(int(fh.readline().split()[1]) * 1024 / 1e9, 1)
    except (OSError, ValueError, IndexError):
        pass
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the 1M-row files only")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results path")
    ap.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA,
        help="cache of sample files and run outputs (default $TMPDIR/klfrontier-bench)",
    )
    ap.add_argument("--sizes", default=None, help="comma-separated subset of 1M,10M")
    ap.add_argument("--formats", default="jsonl,parquet", help="comma-separated subset of jsonl,parquet")
    ap.add_argument("--n-boot", type=int, default=1000, help="bootstrap replications (default 1000)")
    ap.add_argument("--seed", type=int, default=0, help="generator and bootstrap seed")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per subprocess")
    ap.add_argument("--klfrontier", default=None, help="the klfrontier executable (default .venv/bin)")
    ap.add_argument("--generate-only", action="store_true", help="write the sample files and stop")
    args = ap.parse_args(argv)
    sizes = (args.sizes or ("1M" if args.quick else "1M,10M")).split(",")
    formats = args.formats.split(",")
    for s in sizes:
        if s not in SIZES:
            ap.error(f"--sizes: unknown size {s!r} (choose from {', '.join(SIZES)})")
    for f in formats:
        if f not in FORMATS:
            ap.error(f"--formats: unknown format {f!r} (choose from {', '.join(FORMATS)})")

    gens = {s: generate(s, args.data_dir, seed=args.seed) for s in sizes}
    if args.generate_only:
        for g in gens.values():
            print(json.dumps({k: v for k, v in g.items()}, indent=2))
        return 0
    exe = _klfrontier_exe(args.klfrontier)
    load0 = _loadavg()
    rows = [run_row(s, f, gens[s], args, exe) for s in sizes for f in formats]
    machine = _machine()
    machine["loadavg_start"], machine["loadavg_end"] = load0, _loadavg()
    print_table(rows, machine, quick=args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "bench_analyze",
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "config": {
            "n_boot": args.n_boot,
            "seed": args.seed,
            "sizes": sizes,
            "formats": formats,
            "data_dir": str(args.data_dir),
            "klfrontier": exe,
            "timeout_s": args.timeout,
            "goals": {
                "ratio_1M": GOAL_RATIO_1M,
                "rss_10M_bytes": GOAL_RSS_10M,
                "summary_bytes": GOAL_SUMMARY,
            },
        },
        "data": {s: {k: v for k, v in g.items()} for s, g in gens.items()},
        "machine": machine,
        "rows": rows,
    }
    args.out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {args.out}")
    # unmet goals are reported, not an error; a run that crashed is
    return 0 if all(r["ours"]["rc"] == 0 and r["floor"]["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
