"""Command line interface: a thin layer over the public API (no mathematics here)."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Reward-KL geometry of language-model alignment: the optimal KL-constrained "
    "policy, exact best-of-N and soft best-of-N, and their asymptotics.",
)
# Tables are wide: when stdout is not a terminal (pipes, CI logs) do not squeeze
# them into rich's default 80 columns.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _say_error(msg):
    """One line on stderr; the message is data, never console markup."""
    from rich.text import Text

    err_console.print(Text.assemble(("error:", "bold red"), " ", str(msg)), highlight=False)


def _friendly(fn):
    """Turn library errors into one clear line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, CLIError, FileNotFoundError, ImportError, KeyError) as exc:
            msg = exc.args[0] if exc.args else str(exc)
            if isinstance(exc, FileNotFoundError) and exc.filename is not None:
                msg = f"{exc.filename}: no such file"
            _say_error(msg)
            raise typer.Exit(code=2) from None
        except IsADirectoryError as exc:
            _say_error(f"{exc.filename}: is a directory, not a file")
            raise typer.Exit(code=2) from None
        except PermissionError as exc:
            _say_error(f"{exc.filename}: permission denied")
            raise typer.Exit(code=2) from None
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            _say_error(f"{where}{exc.strerror or exc}")
            raise typer.Exit(code=2) from None

    return wrapper


def _floats(text: str, name: str) -> list[float]:
    try:
        return [float(x) for x in text.replace(";", ",").split(",") if x.strip()]
    except ValueError:
        raise CLIError(f"{name}: expected comma-separated numbers, got {text!r}") from None


def _read_table(path: Path, reward_col: str, prob_col: str):
    """Read (rewards, probs) from a CSV or JSON file.

    CSV: a header naming ``reward_col`` and ``prob_col``, or no header and two
    columns (reward, prob).  JSON: an object of two lists, a list of records,
    or a list of ``[reward, prob]`` pairs.
    """
    if not path.exists():
        raise CLIError(f"{path}: no such file")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise CLIError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
        if isinstance(data, dict):
            if reward_col not in data or prob_col not in data:
                raise CLIError(f"{path}: JSON object needs keys {reward_col!r} and {prob_col!r}")
            return data[reward_col], data[prob_col]
        if isinstance(data, list) and all(isinstance(x, dict) for x in data):
            try:
                return [x[reward_col] for x in data], [x[prob_col] for x in data]
            except KeyError as exc:
                raise CLIError(f"{path}: a record lacks key {exc.args[0]!r}") from None
        if isinstance(data, list) and all(isinstance(x, list) and len(x) == 2 for x in data):
            return [x[0] for x in data], [x[1] for x in data]
        raise CLIError(f"{path}: expected an object of two lists, a list of records or of [reward, prob] pairs")
    import csv

    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise CLIError(f"{path}: empty file")
    header = [h.strip() for h in rows[0]]
    if reward_col in header and prob_col in header:
        ir, ip, body, first = header.index(reward_col), header.index(prob_col), rows[1:], 2
    else:
        try:
            [float(x) for x in rows[0]]
        except ValueError:
            raise CLIError(f"{path}: CSV header must contain {reward_col!r} and {prob_col!r} "
                           f"(found {header}), or give two headerless columns reward,prob") from None
        if len(rows[0]) != 2:
            raise CLIError(f"{path}: a headerless CSV needs exactly two columns (reward, prob)")
        ir, ip, body, first = 0, 1, rows, 1
    rewards, probs = [], []
    for lineno, row in enumerate(body, start=first):
        if not row:
            continue
        try:
            rewards.append(float(row[ir]))
            probs.append(float(row[ip]))
        except (IndexError, ValueError):
            raise CLIError(f"{path}:{lineno}: expected numbers in the reward and prob columns") from None
    return rewards, probs


def _reference(rewards, probs, normalize):
    """``Reference(rewards, probs=probs)``, its errors phrased for the command line."""
    from . import Reference

    try:
        return Reference(rewards, probs=probs, normalize=normalize)
    except ValueError as exc:
        raise CLIError(str(exc).replace("pass normalize=True", "pass --normalize")) from None


def load_reference(source: Optional[str], rewards: Optional[str], probs: Optional[str],
                   reward_col: str = "reward", prob_col: str = "prob", normalize: bool = False):
    """Build a Reference from inline lists, a CSV/JSON file or a built-in name."""
    if rewards is not None or probs is not None:
        if source is not None:
            raise CLIError("give either --ref or --rewards/--probs, not both")
        if rewards is None or probs is None:
            raise CLIError("--rewards and --probs go together")
        return _reference(_floats(rewards, "--rewards"), _floats(probs, "--probs"), normalize)
    from .instances import available, load

    source = source or "three-letter"
    path = Path(source)
    if source not in available() and (path.suffix.lower() in (".csv", ".json") or path.exists()):
        r, p = _read_table(path, reward_col, prob_col)
        return _reference(r, p, normalize)
    if source not in available():
        raise CLIError(f"unknown reference {source!r}: give a CSV/JSON file or one of "
                       f"{', '.join(available())}")
    return load(source).ref


RefOpt = typer.Option(None, "--ref", "-r", help="Instance name (see `klfrontier instances`) or a CSV/JSON file with reward and prob columns.")
RewardsOpt = typer.Option(None, "--rewards", help="Inline rewards, comma separated.")
ProbsOpt = typer.Option(None, "--probs", help="Inline probabilities, comma separated.")
NormOpt = typer.Option(False, "--normalize", help="Rescale probabilities to sum to one.")
RewardColOpt = typer.Option("reward", "--reward-col", help="Reward column/key in a --ref file.")
ProbColOpt = typer.Option("prob", "--prob-col", help="Probability column/key in a --ref file.")
JsonOpt = typer.Option(False, "--json", help="Print JSON to stdout instead of a table.")


def _print_table(title: str, columns: list[str], rows: list[list], as_json: bool, payload: dict):
    if as_json:
        from ._json import dumps

        sys.stdout.write(dumps(payload, indent=2) + "\n")
        return
    from rich.text import Text

    table = Table(title=Text(title))
    for c in columns:
        table.add_column(Text(str(c)), justify="right")
    for row in rows:
        table.add_row(*[Text(_fmt(x)) for x in row])
    console.print(table)


def _fmt(x) -> str:
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else ""
    if isinstance(x, (float, np.floating)):
        if np.isnan(x):
            return "—"          # no value (e.g. no interval): never print nan
        if np.isinf(x):
            return "∞" if x > 0 else "−∞"
        if x == int(x) and abs(x) < 1e15:
            return f"{int(x)}"
        return f"{x:.6g}"
    return str(x)


@app.command()
@_friendly
def frontier(ref: Optional[str] = RefOpt, rewards: Optional[str] = RewardsOpt,
             probs: Optional[str] = ProbsOpt, normalize: bool = NormOpt,
             reward_col: str = RewardColOpt, prob_col: str = ProbColOpt,
             kl: Optional[str] = typer.Option(None, "--kl", help="Budgets (nats), comma separated."),
             kl_max: Optional[float] = typer.Option(None, help="Largest budget for an even grid (default: -log p(A))."),
             points: int = typer.Option(11, help="Grid size when --kl is not given."),
             as_json: bool = JsonOpt):
    """The reward-KL frontier R*(Δ) of the optimal KL-constrained policy."""
    from . import frontier as _frontier

    reference = load_reference(ref, rewards, probs, reward_col, prob_col, normalize=normalize)
    if points < 2:
        raise CLIError("--points must be >= 2")
    budgets = (_floats(kl, "--kl") if kl is not None
               else np.linspace(0.0, kl_max if kl_max is not None else reference.kl_max * 1.05, points))
    fr = _frontier(reference, budgets)
    rows = [[d, u, r, l, s] for d, u, r, l, s in zip(fr.kl, fr.kl_used, fr.reward, fr.lam, fr.saturated)]
    _print_table(f"Frontier R*(Δ) — {reference!r}", ["KL budget Δ", "KL used", "R*(Δ)", "λ", "saturated"],
                 rows, as_json, fr.as_dict())


@app.command()
@_friendly
def bon(ref: Optional[str] = RefOpt, rewards: Optional[str] = RewardsOpt,
        probs: Optional[str] = ProbsOpt, normalize: bool = NormOpt,
             reward_col: str = RewardColOpt, prob_col: str = ProbColOpt,
        n: Optional[str] = typer.Option(None, "--n", help="Values of N (real >= 1), comma separated."),
        log_n: Optional[str] = typer.Option(None, "--log-n", help="Values of log N instead of N."),
        as_json: bool = JsonOpt):
    """Exact best-of-N: KL (vs the usual log N - (N-1)/N), reward, win rate, and the λ dictionary."""
    from . import best_of_n, bon_kl_estimate, frontier as _frontier

    reference = load_reference(ref, rewards, probs, reward_col, prob_col, normalize=normalize)
    if n is not None and log_n is not None:
        raise CLIError("give --n or --log-n, not both")
    if log_n is not None:
        specs = [{"log_n": v} for v in _floats(log_n, "--log-n")]
    else:
        specs = [{"n": v} for v in (_floats(n, "--n") if n is not None else [1, 2, 4, 8, 16, 64, 256, 1024])]
    rows, payload = [], []
    for spec in specs:
        b = best_of_n(reference, **spec)
        est = bon_kl_estimate(reference, **spec)
        star = float(_frontier(reference, [b.kl]).reward[0])
        rows.append([b.n, b.kl, b.kl_bound, est, b.reward, star, b.win_rate, b.lam_same_kl, b.lam_same_reward])
        payload.append({**b.summary(), "kl_estimate_beirami": est, "frontier_reward_at_kl": star})
    _print_table(f"Best-of-N — {reference!r}",
                 ["N", "KL exact", "log N-(N-1)/N", "Beirami D̂", "reward", "R*(KL)", "win rate",
                  "λ same KL", "λ same reward"], rows, as_json, {"best_of_n": payload})


@app.command("soft-bon")
@_friendly
def soft_bon(ref: Optional[str] = RefOpt, rewards: Optional[str] = RewardsOpt,
             probs: Optional[str] = ProbsOpt, normalize: bool = NormOpt,
             reward_col: str = RewardColOpt, prob_col: str = ProbColOpt,
             n: str = typer.Option("1,2,4,8,16,64", "--n", help="Values of N, comma separated."),
             lam: float = typer.Option(1.0, "--lam", help="Inverse temperature θ of the weights e^{θ r}."),
             as_json: bool = JsonOpt):
    """Exact soft best-of-N (sampling ∝ e^{θ r} among N draws)."""
    from . import frontier as _frontier
    from .soft_bon import soft_best_of_n

    reference = load_reference(ref, rewards, probs, reward_col, prob_col, normalize=normalize)
    rows, payload = [], []
    for nv in _floats(n, "--n"):
        s = soft_best_of_n(reference, n=nv, lam=lam)
        star = float(_frontier(reference, [s.kl]).reward[0])
        rows.append([nv, s.kl, s.reward, star, s.win_rate])
        payload.append({**s.summary(), "frontier_reward_at_kl": star})
    _print_table(f"Soft best-of-N, θ = {lam:g} — {reference!r}",
                 ["N", "KL", "reward", "R*(KL)", "win rate"], rows, as_json, {"soft_best_of_n": payload})


@app.command()
@_friendly
def convergence(ref: Optional[str] = RefOpt, rewards: Optional[str] = RewardsOpt,
                probs: Optional[str] = ProbsOpt, normalize: bool = NormOpt,
             reward_col: str = RewardColOpt, prob_col: str = ProbColOpt,
                delta: str = typer.Option("0.1", "--delta", help="Per-token KL budgets δ, comma separated."),
                lengths: str = typer.Option("10,100,1000,10000,100000", "--lengths",
                                            help="Sequence lengths m, comma separated."),
                as_json: bool = JsonOpt):
    """Exact best-of-N with N = e^{mδ} against KL-RL with budget mδ, as m grows (SPEC §6)."""
    from . import convergence as _convergence

    reference = load_reference(ref, rewards, probs, reward_col, prob_col, normalize=normalize)
    ms = _floats(lengths, "--lengths")
    if any(m != int(m) or m < 1 for m in ms):
        raise CLIError("--lengths must be positive integers")
    tables = [_convergence(reference, d, lengths=[int(m) for m in ms]) for d in _floats(delta, "--delta")]
    if as_json:
        from ._json import dumps

        sys.stdout.write(dumps({"convergence": [t.as_dict() for t in tables]}, indent=2) + "\n")
        return
    for t in tables:
        rows = [[r["m"], r["reward_per_token"], r["optimal_reward"], r["gap"], r["gap_prediction"],
                 r["gap_ratio"], r["kl_per_token"], r["kl_to_optimal"], r["kl_to_optimal_prediction"],
                 r["kl_to_optimal_per_token"], r["method"] + ("" if r["exact"] else " (approx)")]
                for r in t.rows]
        _print_table(f"δ = {t.delta:g}, λ_δ = {t.lam:.6g}, R*(δ) = {t.optimal_reward:.10g} — {reference!r}",
                     ["m", "E[S_m]/m", "R*(δ)", "gap", "predicted", "ratio", "KL(π_N‖p)/m",
                      "KL(π_N‖φ_Δ)", "predicted", "KL(π_N‖φ_Δ)/m", "engine"], rows, False, {})


@app.command("instances")
@_friendly
def list_instances():
    """List the built-in and real reference instances."""
    from .instances import available

    _print_table("Instances", ["name", "description"], [[k, v] for k, v in available().items()], False, {})


def _run_job(job, out: Optional[Path], as_json: bool):
    """Print a job's headline table (or its JSON) and write its report."""
    from rich.text import Text

    from ._json import dumps
    from .report import write_report

    if out is not None:
        index = write_report(out, job.title, job.sections, job.summary, lead=job.lead,
                             extra_files=getattr(job, "extra_files", None) or None)
    if as_json:
        sys.stdout.write(dumps(job.summary, indent=2) + "\n")
        return
    table = Table(title=Text(job.title))
    for c, j in (("quantity", "left"), ("value", "right"), ("note", "left")):
        table.add_column(c, justify=j)
    for q, v, note in job.headline:
        table.add_row(Text(str(q)), Text(_fmt(v)), Text(str(note)))
    console.print(table)
    if out is not None:
        console.print(Text.assemble("report: ", (str(index), "bold"), " (figures, tables and summary.json beside it)"))


def _stage_printer():
    def progress(label):
        err_console.print(f"[dim]· {label}…[/]", highlight=False)
    return progress


@app.command()
@_friendly
def demo(instance: str = typer.Option("unigram-vader", "--instance", "-i",
                                      help="Reference instance (see `klfrontier instances`)."),
         reward: Optional[str] = typer.Option(None, "--reward",
                                              help="Shortcut: 'vader' or 'afinn' picks unigram-<reward>."),
         top_n: int = typer.Option(50_000, "--top-n", help="Vocabulary size of the unigram instances."),
         delta: str = typer.Option("0.05,0.2,1.0", "--delta", help="Per-token budgets δ, comma separated."),
         lengths: str = typer.Option("10,30,100,300,1000,3000,10000", "--lengths",
                                     help="Sequence lengths m, comma separated."),
         out: Optional[Path] = typer.Option(None, "--out", help="Write index.html, PNG figures and summary.json here."),
         as_json: bool = JsonOpt):
    """The main job on a real instance: frontier, best-of-N, rate functions, and BoN → KL-RL as m grows."""
    from .jobs import demo_job

    if reward is not None:
        if reward not in ("vader", "afinn"):
            raise CLIError("--reward must be 'vader' or 'afinn'")
        instance = f"unigram-{reward}"
    ms = _floats(lengths, "--lengths")
    if any(m != int(m) or m < 1 for m in ms):
        raise CLIError("--lengths must be positive integers")
    _check_out_dir(out)
    job = demo_job(instance, top_n=top_n, deltas=tuple(_floats(delta, "--delta")),
                   lengths=tuple(int(m) for m in ms), progress=None if as_json else _stage_printer())
    _run_job(job, out, as_json)


def _check_out_dir(out: Optional[Path]):
    """Fail before any work when ``--out`` cannot hold a report."""
    if out is None:
        return
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out}: exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"--out {out}: cannot create it ({exc.strerror or exc})") from None
    import os

    if not os.access(out, os.W_OK | os.X_OK):
        raise CLIError(f"--out {out}: not writable")


def _check_input_file(path: Path, option: str = ""):
    where = f"{option} " if option else ""
    if not path.exists():
        raise CLIError(f"{where}{path}: no such file")
    if path.is_dir() and not (path / "manifest.json").is_file():
        raise CLIError(f"{where}{path}: is a directory and not a sample store (no manifest.json); "
                       f"give a JSONL, CSV or Parquet file or a store written by `klfrontier sample`")


def _file_provenance(path: Path) -> dict:
    """Size and sha256 of an input file; for a sample store, of its manifest (which lists every
    shard's sha256) and the shards' total size."""
    from ._atomic import sha256_file

    if path.is_dir():
        manifest = path / "manifest.json"
        total = sum(f.stat().st_size for f in path.glob("*.parquet"))
        info = _file_provenance(manifest)
        return {"path": str(path), "store": True, "bytes": total, "manifest_sha256": info["sha256"]}
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


@app.command()
@_friendly
def analyze(samples: Path = typer.Argument(..., help="Base samples from the reference: JSONL, CSV or Parquet, one row per sample."),
            policy: Optional[list[str]] = typer.Option(None, "--policy", help="NAME=FILE: samples of an aligned policy with 'logprob' (policy) and 'ref_logprob' (reference) columns. Repeatable; names differing only in numbers (step100, step200) form a path."),
            gold_col: Optional[str] = typer.Option(None, "--gold-col", help="Column of a gold reward: select with --reward-col, measure this."),
            prompt_col: str = typer.Option("prompt_id", help="Column holding the prompt id."),
            reward_col: str = typer.Option("reward", help="Column holding the reward (the proxy when --gold-col is given)."),
            logprob_col: str = typer.Option("logprob", help="Column holding log-probabilities (policy files: under the policy)."),
            ref_logprob_col: str = typer.Option("ref_logprob", help="Column holding log p under the reference (policy files)."),
            text_col: str = typer.Option("text", help="Column holding the text (optional, not kept)."),
            fmt: Optional[str] = typer.Option(None, "--format", help="jsonl, csv or parquet (default: from the suffix)."),
            strict: bool = typer.Option(False, "--strict", help="Fail on the first bad row instead of skipping it."),
            n: Optional[str] = typer.Option(None, "--n", help="Best-of-N sizes (integers), comma separated."),
            kl: Optional[str] = typer.Option(None, "--kl", help="Average KL budgets for the frontier, comma separated."),
            lam: Optional[str] = typer.Option(None, "--lam", help="Inverse temperatures λ of the tilted policy, comma separated."),
            n_boot: int = typer.Option(1000, "--n-boot", help="Prompt-bootstrap replications (used from 30 prompts on)."),
            interval: str = typer.Option("auto", "--interval", help="auto, t, bootstrap or none."),
            seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
            tables: str = typer.Option("parquet", "--tables", help="Format of the per-prompt table beside the report: parquet or csv."),
            out: Optional[Path] = typer.Option(None, "--out", help="Write index.html, figures (PNG, SVG), tables (CSV) and summary.json here."),
            as_json: bool = JsonOpt):
    """Best-of-N, the average-KL optimum, aligned policies and proxy-vs-gold, from your own samples."""
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in locals().items()}
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    from .io import read_samples
    from .jobs import analyze_job

    _check_input_file(samples)
    if not 0 <= n_boot <= 100_000:
        raise CLIError(f"--n-boot must lie in [0, 100000] (got {n_boot}); 1000 is plenty for 95% intervals")
    if interval not in ("auto", "t", "bootstrap", "none"):
        raise CLIError(f"--interval must be auto, t, bootstrap or none, got {interval!r}")
    if tables not in ("parquet", "csv"):
        raise CLIError(f"--tables must be parquet or csv, got {tables!r}")
    n_values = None
    if n is not None:
        n_values = _floats(n, "--n")
        if not n_values:
            raise CLIError("--n: give at least one size, e.g. --n 1,2,4,8")
        if any(v != int(v) or v < 1 for v in n_values):
            raise CLIError("--n must be positive integers")
        n_values = [int(v) for v in n_values]
    kl_values = _floats(kl, "--kl") if kl is not None else None
    lam_values = _floats(lam, "--lam") if lam is not None else None
    pol_files = {}
    for spec in policy or []:
        name, sep, file = spec.partition("=")
        if not sep or not name or not file:
            raise CLIError(f"--policy expects NAME=FILE, got {spec!r}")
        if name in pol_files:
            raise CLIError(f"--policy {name!r} given twice")
        _check_input_file(Path(file), f"--policy {name}:")
        pol_files[name] = Path(file)
    _check_out_dir(out)
    # the base samples' log-probabilities are not used by the analysis: not read (memory)
    base_cols = {"prompt_id": prompt_col, "reward": reward_col, "logprob": None, "text": text_col,
                 "ref_logprob": None}
    if gold_col is not None:
        base_cols["gold"] = gold_col
    pol_cols = dict(base_cols, logprob=logprob_col, ref_logprob=ref_logprob_col)
    stages = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=err_console, transient=True,
                  disable=as_json or not err_console.is_terminal) as bar:
        def reader(label):
            task = bar.add_task(label, total=None)
            return task, (lambda rows: bar.update(task, completed=rows))

        task, cb = reader(f"reading {samples.name}")
        data = read_samples(samples, columns=base_cols, strict=strict, format=fmt, progress=cb)
        bar.update(task, visible=False)
        pol_data = {}
        for name, file in pol_files.items():
            task, cb = reader(f"reading policy {name}")
            pol_data[name] = read_samples(file, columns=pol_cols, strict=strict, format=fmt, progress=cb)
            bar.update(task, visible=False)
        _release_arrow_memory()

        def progress(stage, done, total):
            if stage not in stages:
                stages[stage] = bar.add_task(stage, total=total)
            bar.update(stages[stage], completed=done, total=total)

        provenance = {"command": "klfrontier analyze", "options": options, "seed": seed,
                      "files": [_file_provenance(samples)] + [dict(_file_provenance(f), policy=k)
                                                             for k, f in pol_files.items()],
                      "rows": {"base": data.n_samples, **{k: v.n_samples for k, v in pol_data.items()}}}
        job = analyze_job(data, policies=pol_data or None, gold_col=gold_col, n_values=n_values,
                          kl_values=kl_values, lam_values=lam_values, n_boot=n_boot, seed=seed,
                          interval=interval, columns=base_cols, progress=progress, provenance=provenance,
                          table_format=tables)
    for label, d in [("base", data)] + list(pol_data.items()):
        if d.n_bad_rows and not as_json:
            f, line, reason = d.bad_rows[0]
            _say_warning(f"{label}: skipped {d.n_bad_rows} bad row(s); first: {f}:{line}: {reason}")
    excluded = job.summary["analysis"]["n_excluded_prompts"]
    if excluded and not as_json:
        _say_warning(f"{excluded} prompt(s) with fewer than two samples left out")
    _run_job(job, out, as_json)


def _release_arrow_memory():
    """Hand pyarrow's pooled buffers back to the system once the files are read."""
    try:
        import pyarrow
    except ImportError:
        return
    pyarrow.default_memory_pool().release_unused()


def _say_warning(msg):
    from rich.text import Text

    err_console.print(Text.assemble(("warning:", "yellow"), " ", str(msg)), highlight=False)


@app.command("samples")
@_friendly
def make_samples(out: Path = typer.Argument(..., help="File to write (.jsonl, .csv or .parquet)."),
                 instance: str = typer.Option("unigram-vader", "--instance", "-i", help="Word-level instance."),
                 prompts: int = typer.Option(40, "--prompts", help="Number of prompts."),
                 n: int = typer.Option(64, "--n", help="Samples per prompt."),
                 length: int = typer.Option(12, "--length", help="Words per sample."),
                 seed: int = typer.Option(0, "--seed", help="Seed of the draws.")):
    """Write a sample file drawn from a real unigram instance (to try `klfrontier analyze`)."""
    from .instances.samples import unigram_samples
    from .io import write_samples

    data = unigram_samples(instance, n_prompts=prompts, n_samples=n, length=length, seed=seed)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"{out.parent}: cannot create it ({exc.strerror or exc})") from None
    try:
        write_samples(out, data)
    except OSError as exc:
        raise CLIError(f"{out}: cannot write it ({exc.strerror or exc})") from None
    console.print(f"wrote {data.n_samples:,} samples for {data.n_prompts} prompts to [bold]{out}[/]")


from . import cli_lm  # noqa: E402,F401  (registers the lm commands)


def main():  # console-script entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
