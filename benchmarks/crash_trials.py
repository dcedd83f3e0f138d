"""Crash trials: ``kill -9`` of ``klfrontier analyze`` at random moments never loses a report.

Each trial starts ``klfrontier analyze FILE --out DIR`` on a folder that holds
a complete earlier report, kills it with SIGKILL at a seeded random moment,
and checks the folder:

* it holds one complete report -- the old one or a new one -- and nothing
  else: :func:`klfrontier.report.check_report` passes (every file the
  manifest lists exists with its size and sha256, ``summary.json`` and
  ``index.html`` carry the manifest's run id) and the folder holds exactly
  the manifest's files;
* no file in it is 0 bytes;
* its run id is the previous trial's or a new one (never an older one);
* the lock is free (``flock`` succeeds at once), so a new run can start.

Leftover ``.<name>.new-*`` folders beside it are counted (a kill during the
write leaves one; the next run deletes it).  A last run after all trials must
succeed and leave no leftover.

Kill moments: half uniform over the whole run, half uniform over the write
phase (from the moment the temporary folder appears to the end of the run,
both measured on a calibration run, widened by 0.1 s on each side).

Usage::

    python benchmarks/crash_trials.py                    # 50 trials, the 1M-row JSONL of bench_analyze
    python benchmarks/crash_trials.py --trials 5 --file samples.jsonl --out /tmp/c.json

The 1M-row file is made by ``python benchmarks/bench_analyze.py --generate-only``
(in ``$TMPDIR/klfrontier-bench``); this script generates it when missing.
Results: a table and ``benchmarks/results/crash_trials.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_OUT = HERE / "results" / "crash_trials.json"
DEFAULT_DATA = Path(os.environ.get("TMPDIR") or tempfile.gettempdir()) / "klfrontier-bench"
DEFAULT_FILE = DEFAULT_DATA / "samples-1M-seed0-v1.jsonl"
TRIALS = 50


def _exe(explicit=None):
    if explicit:
        return [explicit]
    venv = REPO / ".venv" / "bin" / "klfrontier"
    return [str(venv)] if venv.exists() else [sys.executable, "-m", "klfrontier.cli"]


def inspect_folder(out: Path) -> dict:
    """What a reader finds in ``out``: complete or not, run id, 0-byte files, extra files, lock, leftovers."""
    from klfrontier.report import MANIFEST, check_report, lock_path

    res = {
        "complete": False,
        "run_id": None,
        "problem": None,
        "zero_byte": [],
        "extra": [],
        "lock_free": _lock_free(lock_path(out)),
        "leftovers": sorted(
            p.name
            for p in out.parent.iterdir()
            if p.name.startswith(f".{out.name}.new-") or p.name.startswith(f".{out.name}.old-")
        ),
    }
    if not out.is_dir():
        res["problem"] = "folder missing"
        return res
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    res["zero_byte"] = sorted(f for f in on_disk if (out / f).stat().st_size == 0)
    try:
        manifest = check_report(out)
    except ValueError as exc:
        res["problem"] = str(exc)
        return res
    res["run_id"] = manifest["run_id"]
    res["extra"] = sorted(on_disk - set(manifest["files"]) - {MANIFEST})
    res["complete"] = not res["zero_byte"] and not res["extra"]
    if not res["complete"]:
        res["problem"] = f"0-byte {res['zero_byte']} or files not of the report {res['extra']}"
    return res


def _lock_free(path: Path) -> bool:
    import fcntl

    if not path.exists():
        return True
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # also releases the probe's lock
    return True


def _command(exe, sample_file, out, extra):
    return [*exe, "analyze", str(sample_file), "--out", str(out), *extra]


def calibrate(exe, sample_file, out, extra, env, timeout):
    """One full run into ``out``: its wall time and when its temporary folder first appeared."""
    prefix = f".{out.name}.new-"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        _command(exe, sample_file, out, extra), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    t_write = None
    while proc.poll() is None:
        if t_write is None and any(n.startswith(prefix) for n in os.listdir(out.parent)):
            t_write = time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout:
            proc.kill()
            raise RuntimeError(f"calibration run took longer than {timeout} s")
        time.sleep(0.002)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode("utf-8", "replace")
    proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"calibration run failed (exit {proc.returncode}): {err.strip()[-500:]}")
    return wall, (t_write if t_write is not None else wall)


def run_trials(
    sample_file,
    work_dir,
    *,
    trials=TRIALS,
    seed=0,
    exe=None,
    extra=("--n-boot", "200"),
    timeout=600.0,
    log=print,
):
    """Run the crash trials; returns a dict with every trial and the counts."""
    work_dir = Path(work_dir)
    if work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    out = work_dir / "report"
    exe = _exe(exe)
    extra = list(extra)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))

    wall, t_write = calibrate(exe, sample_file, out, extra, env, timeout)
    first = inspect_folder(out)
    if not first["complete"]:
        raise RuntimeError(f"the calibration run left no complete report: {first['problem']}")
    log(f"calibration: full run {wall:.2f} s, write phase from {t_write:.2f} s; trials: {trials}")
    rng = np.random.default_rng(seed)
    seen, current = {first["run_id"]}, first["run_id"]
    rows = []
    for i in range(trials):
        phase_aimed = "any" if i % 2 == 0 else "write"
        lo, hi = (0.05, wall + 0.1) if phase_aimed == "any" else (max(0.05, t_write - 0.1), wall + 0.1)
        kill_at = float(rng.uniform(lo, hi))
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            _command(exe, sample_file, out, extra),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        time.sleep(max(0.0, kill_at - (time.perf_counter() - t0)))
        exited_before = proc.poll() is not None
        if not exited_before:
            os.kill(proc.pid, signal.SIGKILL)
        rc = proc.wait(timeout=timeout)
        state = inspect_folder(out)
        new_id = state["run_id"] is not None and state["run_id"] != current
        ok = (
            state["complete"]
            and state["lock_free"]
            and (state["run_id"] == current or state["run_id"] not in seen)
        )
        row = {
            "trial": i,
            "aimed": phase_aimed,
            "kill_at_s": round(kill_at, 3),
            "phase": ("exited" if exited_before else "write" if kill_at >= t_write else "compute"),
            "rc": rc,
            "ok": bool(ok),
            "report": "new" if new_id else "old",
            "run_id": state["run_id"],
            "leftovers": len(state["leftovers"]),
            "zero_byte": state["zero_byte"],
            "extra": state["extra"],
            "lock_free": state["lock_free"],
            "problem": state["problem"],
        }
        rows.append(row)
        if state["run_id"]:
            seen.add(state["run_id"])
            current = state["run_id"]
        log(
            f"  trial {i:2d}: kill at {kill_at:6.3f} s ({row['phase']:7s}) -> {row['report']} report, "
            f"{'ok' if ok else 'FAILED: ' + str(state['problem'])}"
            + (f", {row['leftovers']} leftover folder(s)" if row["leftovers"] else "")
        )

    # a new run after all the kills: succeeds, cleans the leftovers, leaves a complete report
    final = subprocess.run(
        _command(exe, sample_file, out, extra), capture_output=True, env=env, timeout=timeout
    )
    after = inspect_folder(out)
    final_ok = (
        final.returncode == 0 and after["complete"] and not after["leftovers"] and after["run_id"] not in seen
    )
    counts = {
        "trials": trials,
        "survived": sum(r["ok"] for r in rows),
        "failed": sum(not r["ok"] for r in rows),
        "killed_in_compute": sum(r["phase"] == "compute" for r in rows),
        "killed_in_write": sum(r["phase"] == "write" for r in rows),
        "exited_before_kill": sum(r["phase"] == "exited" for r in rows),
        "old_report_after": sum(r["report"] == "old" for r in rows),
        "new_report_after": sum(r["report"] == "new" for r in rows),
        "zero_byte_files": sum(len(r["zero_byte"]) for r in rows),
        "trials_with_leftovers": sum(r["leftovers"] > 0 for r in rows),
        "lock_held_after": sum(not r["lock_free"] for r in rows),
        "final_run_ok": bool(final_ok),
    }
    return {
        "calibration": {"full_run_s": round(wall, 3), "write_phase_from_s": round(t_write, 3)},
        "counts": counts,
        "trials": rows,
        "final_run": {
            "rc": final.returncode,
            "run_id": after["run_id"],
            "leftovers": after["leftovers"],
            "stderr_tail": final.stderr.decode("utf-8", "replace")[-300:],
        },
    }


def print_table(res):
    c = res["counts"]
    cal = res["calibration"]
    print()
    print(
        f"kill -9 crash trials: full run {cal['full_run_s']} s, write phase from {cal['write_phase_from_s']} s"
    )
    print(f"{'':34s}{'count':>8s}")
    for key, label in (
        ("trials", "trials"),
        ("survived", "report whole afterwards"),
        ("failed", "report damaged or mixed"),
        ("killed_in_compute", "killed while computing"),
        ("killed_in_write", "killed while writing the report"),
        ("exited_before_kill", "finished before the kill"),
        ("old_report_after", "old report in place"),
        ("new_report_after", "new report in place"),
        ("zero_byte_files", "0-byte files"),
        ("trials_with_leftovers", "left a temporary folder"),
        ("lock_held_after", "lock still held after"),
        ("final_run_ok", "next run succeeds and cleans"),
    ):
        print(f"{label:34s}{str(c[key]):>8s}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=TRIALS, help=f"number of kills (default {TRIALS})")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    ap.add_argument(
        "--file",
        type=Path,
        default=None,
        help="sample file (default: the 1M-row JSONL of bench_analyze, generated if missing)",
    )
    ap.add_argument("--work-dir", type=Path, default=DEFAULT_DATA / "crash-trials", help="scratch folder")
    ap.add_argument("--n-boot", type=int, default=200, help="--n-boot of the analyze runs")
    ap.add_argument("--klfrontier", default=None, help="the klfrontier executable (default .venv/bin)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results path")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from _common import machine_info

    sample_file = args.file
    if sample_file is None:
        sample_file = DEFAULT_FILE
        if not sample_file.exists():
            from bench_analyze import generate

            sample_file = Path(generate("1M", DEFAULT_DATA)["paths"]["jsonl"])
    load0 = os.getloadavg()
    res = run_trials(
        sample_file,
        args.work_dir,
        trials=args.trials,
        seed=args.seed,
        exe=args.klfrontier,
        extra=("--n-boot", str(args.n_boot)),
    )
    print_table(res)
    machine = machine_info()
    machine["loadavg_start"], machine["loadavg_end"] = load0, os.getloadavg()
    payload = {
        "benchmark": "crash_trials",
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "config": {
            "trials": args.trials,
            "seed": args.seed,
            "file": str(sample_file),
            "rows": sum(1 for _ in open(sample_file, "rb")) if sample_file.suffix == ".jsonl" else None,
            "n_boot": args.n_boot,
        },
        "machine": machine,
        **res,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {args.out}")
    return 0 if res["counts"]["failed"] == 0 and res["counts"]["final_run_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
