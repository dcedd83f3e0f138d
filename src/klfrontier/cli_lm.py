"""``klfrontier sample``: sample a language model into a crash-safe, resumable store.

Registered on the application of :mod:`klfrontier.cli` when that module is
imported; torch and transformers are imported only when the command runs.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import typer

from ._atomic import sha256_file
from .cli import CLIError, app, console, err_console, friendly

__all__ = ["read_prompts", "best_of_selection"]

_JSONL_SUFFIXES = (".jsonl", ".ndjson")


def _command(name):
    """``app.command(name)``, also on the copy of the app run by ``python -m klfrontier.cli``.

    Run as a script, ``klfrontier/cli.py`` is the module ``__main__``, and the
    ``app`` it calls is not the one of the module ``klfrontier.cli`` imported here.
    """
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    apps = [app]
    if spec is not None and spec.name == "klfrontier.cli" and getattr(main, "app", app) is not app:
        apps.append(main.app)

    def register(fn):
        for a in apps:
            a.command(name)(fn)
        return fn

    return register


def read_prompts(path) -> dict:
    """Prompts of a prompt file, ``{prompt_id: text}`` in file order.

    A ``.jsonl``/``.ndjson`` file has one JSON object per line with a
    ``prompt`` string and optionally a ``prompt_id`` (string or integer;
    default: the line number).  Any other file is plain text: each non-blank
    line is a prompt (surrounding whitespace removed) and its id is its line
    number (1-based).  Blank lines are skipped.

    Raises
    ------
    ValueError
        ``"FILE:LINE: reason"`` for a bad line or a repeated id; a file
        without prompts.
    """
    path = Path(path)
    if not path.exists():
        raise CLIError(f"--prompts {path}: no such file")
    if path.is_dir():
        raise CLIError(f"--prompts {path}: is a directory; give a text or JSONL file")
    out: dict = {}
    jsonl = path.suffix.lower() in _JSONL_SUFFIXES
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"--prompts {path}:{lineno}"
            if jsonl:
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{where}: invalid JSON ({exc.msg})") from None
                if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
                    raise ValueError(f"{where}: expected an object with a string 'prompt'")
                pid = obj.get("prompt_id", lineno)
                if isinstance(pid, bool) or not isinstance(pid, (str, int)) or pid == "":
                    raise ValueError(f"{where}: prompt_id must be a non-empty string or an integer")
                pid, text = str(pid), obj["prompt"]
            else:
                pid, text = str(lineno), line.strip()
            if pid in out:
                raise ValueError(f"{where}: prompt_id {pid!r} occurs twice")
            out[pid] = text
    if not out:
        raise ValueError(f"--prompts {path}: no prompts in the file")
    return out


def best_of_selection(table, *, n, seed):
    """The best-of-``n`` pick of each prompt: the highest-reward sample among its first ``n``.

    Parameters
    ----------
    table : pyarrow.Table
        Rows of a sample store (``prompt_id``, ``sample_index``, ``reward``, ...).
    n : int
        Candidates per prompt: the samples with ``sample_index < n``.
    seed : int
        Ties are broken uniformly at random by a generator seeded with
        ``(seed, position of the prompt)``, so the pick of a prompt does not
        depend on the other prompts.

    Returns
    -------
    list of dict
        One record per prompt, in store order: the picked row's columns
        (``token_ids`` left out) plus ``n_candidates`` and ``n_tied``.

    Examples
    --------
    >>> import pyarrow as pa
    >>> t = pa.table({"prompt_id": ["a"] * 3 + ["b"] * 2, "sample_index": [0, 1, 2, 0, 1],
    ...               "reward": [1.0, 3.0, 9.0, 2.0, 2.0]})
    >>> [(r["prompt_id"], r["sample_index"], r["n_tied"]) for r in best_of_selection(t, n=2, seed=0)]
    [('a', 1, 1), ('b', 1, 2)]
    """
    cols = {c: table.column(c).to_pylist() for c in table.column_names if c != "token_ids"}
    pids, idx = cols["prompt_id"], np.asarray(cols["sample_index"])
    reward = np.asarray(cols["reward"], dtype=float)
    rows_of: dict = {}
    for i, p in enumerate(pids):
        rows_of.setdefault(p, []).append(i)
    out = []
    for position, (pid, rows) in enumerate(rows_of.items()):
        cand = np.asarray([i for i in rows if idx[i] < n])
        if cand.size < n:
            raise ValueError(f"--best-of {n}: prompt {pid!r} has only {cand.size} samples")
        cand = cand[np.argsort(idx[cand], kind="stable")]  # sample order, whatever the rows'
        best = reward[cand].max()
        tied = cand[reward[cand] == best]
        pick = tied[np.random.default_rng([int(seed), position]).integers(tied.size)]
        rec = {c: v[pick] for c, v in cols.items()}
        rec.update(n_candidates=int(n), n_tied=int(tied.size))
        out.append(rec)
    return out


def _model_spec(model: str) -> str:
    """The model as recorded in the store: ``smollm2`` or the directory's absolute path."""
    from .lm.model import SMOLLM2

    if model == SMOLLM2:
        return model
    folder = Path(model).expanduser()
    if not folder.is_dir():
        raise CLIError(f"--model must be {SMOLLM2!r} or a local model directory; {model!r} is neither")
    return str(folder.resolve())


def _write_selected(store, out: Path, *, best_of: int, seed: int):
    from ._atomic import write_text
    from ._json import dumps

    records = best_of_selection(store.read_table(), n=best_of, seed=seed)
    write_text(out / "selected.jsonl", "".join(dumps(r, ensure_ascii=False) + "\n" for r in records))
    return len(records)


@_command("sample")
@friendly
def sample(
    model: str = typer.Option(
        "smollm2",
        "--model",
        help="'smollm2' (SmolLM2-135M-Instruct, bundled) or a local transformers model directory.",
    ),
    prompts: Path = typer.Option(
        ...,
        "--prompts",
        help="Prompt file: one prompt per line, or JSONL (.jsonl) with 'prompt' and optional 'prompt_id'.",
    ),
    n: int = typer.Option(64, "--n", help="Samples per prompt."),
    max_new_tokens: int = typer.Option(
        48, "--max-new-tokens", help="Most tokens per sample (an EOS token ends it earlier)."
    ),
    reward: str = typer.Option(
        "vader", "--reward", help="vader, afinn, token-vader, token-afinn or a local classifier directory."
    ),
    gold_reward: str | None = typer.Option(
        None, "--gold-reward", help="A second reward stored as 'gold' (same choices)."
    ),
    tilt: float | None = typer.Option(
        None, "--tilt", help="λ: sample from p(y) e^{λ v(y)} token by token; needs a token-linear --reward."
    ),
    temperature: float = typer.Option(1.0, "--temperature", help="Temperature of the reference."),
    top_k: int | None = typer.Option(None, "--top-k", help="Top-k truncation of the reference."),
    top_p: float | None = typer.Option(None, "--top-p", help="Top-p (nucleus) truncation of the reference."),
    seed: int = typer.Option(0, "--seed", help="Seed; batch k is drawn from (seed, k) alone."),
    batch_prompts: int = typer.Option(
        8, "--batch-prompts", help="Prompts per batch (the unit of a shard and of resuming)."
    ),
    best_of: int | None = typer.Option(
        None,
        "--best-of",
        help="Also write selected.jsonl: each prompt's highest-reward sample among its first N.",
    ),
    shard: str | None = typer.Option(
        None,
        "--shard",
        help="K/M: compute only the batches with index % M == K, so M processes can fill one store.",
    ),
    out: Path = typer.Option(..., "--out", help="The store directory (created, or resumed when it exists)."),
    threads: int | None = typer.Option(None, "--threads", help="torch threads (default: one per core)."),
):
    """Sample a language model into a resumable store (Parquet shards + manifest).

    Prompts go in fixed consecutive batches of --batch-prompts; each batch is
    committed atomically once sampled, so an interrupted run (even kill -9)
    resumes where it stopped with the same samples: run the same command
    again (bit for bit on the same machine, libraries and --threads).  With
    --shard K/M, M processes fill one store, each the batches whose index is
    K modulo M.  Read the store with `klfrontier.io.read_samples`.
    """
    from rich.text import Text

    from .lm.store import SampleStore, parse_shard

    for value, name in ((n, "--n"), (max_new_tokens, "--max-new-tokens"), (batch_prompts, "--batch-prompts")):
        if value < 1:
            raise CLIError(f"{name} must be >= 1, got {value}")
    if seed < 0:
        raise CLIError(f"--seed must be >= 0, got {seed}")
    if best_of is not None and not 1 <= best_of <= n:
        raise CLIError(f"--best-of must lie in [1, --n] = [1, {n}], got {best_of}")
    if tilt is not None and not reward.strip().lower().startswith("token-"):
        raise CLIError(f"--tilt needs a token-linear --reward (token-vader or token-afinn), got {reward!r}")
    try:
        k, m = parse_shard(shard)
    except ValueError as exc:
        raise CLIError(f"--shard: {exc}") from None
    texts = read_prompts(prompts)
    total = -(-len(texts) // batch_prompts)
    params = {
        "model": _model_spec(model),
        "prompts_sha256": sha256_file(prompts),
        "n_prompts": len(texts),
        "n": n,
        "max_new_tokens": max_new_tokens,
        "seed": seed,
        "batch_prompts": batch_prompts,
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "tilt": tilt,
        "reward": reward,
        "gold_reward": gold_reward,
    }
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out}: exists and is not a directory")
    try:
        store = SampleStore(out, params=params, shard=(k, m)).lock()
    except ValueError as exc:
        raise CLIError(f"--out {exc}") from None
    with store:
        done = store.done_batches()
        todo = [b for b in range(total) if b % m == k and b not in done]
        stats = {"tokens": 0, "batches": 0, "seconds": 0.0}
        if todo:
            _sample_into(
                store,
                texts,
                todo,
                model=model,
                n=n,
                max_new_tokens=max_new_tokens,
                reward=reward,
                gold_reward=gold_reward,
                tilt=tilt,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                seed=seed,
                batch_prompts=batch_prompts,
                threads=threads,
                stats=stats,
            )
        done = store.done_batches()
        rate = stats["tokens"] / stats["seconds"] if stats["tokens"] else 0.0
        line = (
            f"{out}: {len(done)} of {total} batches committed"
            f" ({stats['batches']} by this run, {stats['tokens']:,} tokens, {rate:,.0f} tokens/s)"
        )
        if len(done) < total:
            line += f"; {total - len(done)} left to the other shards"
        elif best_of is not None:
            count = _write_selected(store, out, best_of=best_of, seed=seed)
            line += f"; best-of-{best_of} picks of {count} prompts in {out / 'selected.jsonl'}"
        console.print(Text(line), highlight=False)


def _sample_into(
    store,
    texts,
    todo,
    *,
    model,
    n,
    max_new_tokens,
    reward,
    gold_reward,
    tilt,
    temperature,
    top_k,
    top_p,
    seed,
    batch_prompts,
    threads,
    stats,
):
    """Sample the batches ``todo`` and commit each one as soon as it is drawn."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from . import lm, rewards

    try:  # transformers' "Loading weights" bars would garble ours and pipes' logs
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass  # lm.load_model raises the ImportError naming the extra
    lm_ = lm.load_model(model)
    rw = rewards.get(reward, tokenizer=lm_.tokenizer)
    gold = None if gold_reward is None else rewards.get(gold_reward, tokenizer=lm_.tokenizer)
    tilt_arg = None
    if tilt is not None:
        if getattr(rw, "values", None) is None or not hasattr(rw, "of_ids"):
            raise CLIError(f"--tilt needs a token-linear --reward, and {reward!r} is not one")
        tilt_arg = (tilt, rw.values)
    ids = list(texts)
    n_rows = sum(len(ids[b * batch_prompts : (b + 1) * batch_prompts]) for b in todo) * n
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    ) as bar:
        task = bar.add_task(f"sampling {len(todo)} batches", total=n_rows, rate="")
        t0 = time.perf_counter()  # after loading: tokens/s measures sampling

        def progress(stage, done, total):
            # "tokens": generated so far in this run; "samples": samples finished (the bar and ETA)
            if stage == "tokens":
                dt = time.perf_counter() - t0
                bar.update(task, rate=f"{done / dt:,.0f} tok/s" if dt > 0 else "")
            elif stage == "samples":
                bar.update(task, completed=done)

        for part in lm.sample_batches(
            lm_,
            texts,
            n=n,
            max_new_tokens=max_new_tokens,
            seed=seed,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            tilt=tilt_arg,
            batch_prompts=batch_prompts,
            batches=todo,
            progress=progress,
            threads=threads,
        ):
            (b,) = set(part.batch_index.tolist())
            store.append(b, part, reward=part.rewards(rw), gold=None if gold is None else part.rewards(gold))
            stats["tokens"] += part.n_generated_tokens
            stats["batches"] += 1
            stats["seconds"] = time.perf_counter() - t0
            bar.update(task, description=f"sampling: batch {b} committed ({stats['batches']}/{len(todo)})")


def _lm_demo_defaults():
    from .lm.demo import DEFAULTS  # numpy only: torch is imported when the command runs

    return DEFAULTS


_LM_DEMO = _lm_demo_defaults()


@_command("lm-demo")
@friendly
def lm_demo(
    model: str = typer.Option(
        "smollm2",
        "--model",
        help="'smollm2' (SmolLM2-135M-Instruct, bundled) or a local transformers model directory.",
    ),
    prompts: Path | None = typer.Option(
        None, "--prompts", help="Prompt file (as for `klfrontier sample`); default: the 32 built-in prompts."
    ),
    n: int = typer.Option(
        _LM_DEMO["n"], "--n", help="Base samples per prompt (the frontier, best-of-N, soft best-of-N)."
    ),
    tilt_n: int = typer.Option(_LM_DEMO["tilt_n"], "--tilt-n", help="Samples per prompt of each token tilt."),
    max_new_tokens: int = typer.Option(
        _LM_DEMO["max_new_tokens"], "--max-new-tokens", help="Most tokens per sample."
    ),
    lams: str = typer.Option(
        ",".join(f"{x:g}" for x in _LM_DEMO["lams"]), "--lams", help="Token tilts λ > 0, comma separated."
    ),
    lexicon: str = typer.Option(
        _LM_DEMO["lexicon"], "--lexicon", help="Lexicon of the token-linear reward: vader or afinn."
    ),
    seed: int = typer.Option(_LM_DEMO["seed"], "--seed", help="Seed of the samples and of the bootstrap."),
    threads: int | None = typer.Option(
        _LM_DEMO["threads"],
        "--threads",
        help="torch threads while sampling (1: steadiest on a shared machine).",
    ),
    out: Path = typer.Option(
        Path("out/lm-demo"), "--out", help="Write index.html, figures, tables and summary.json here."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON instead of a table."),
):
    """Best-of-N, soft best-of-N and token tilts on a real LM against the optimum: the myopia gap.

    Draws --n base samples per prompt and --tilt-n samples per prompt from
    the token-level tilt at each λ of --lams, with the token-linear reward,
    then runs `klfrontier analyze` on them and adds soft best-of-N.  The
    headline: how far token tilting falls below the sequence-level optimum at
    the same KL (the myopia gap), with an interval.  See docs/lm.md.
    """
    from .cli import check_out_dir, parse_floats, run_job
    from .lm.demo import lm_demo_job

    if lexicon not in ("vader", "afinn"):
        raise CLIError(f"--lexicon must be 'vader' or 'afinn', got {lexicon!r}")
    if threads is not None and threads < 1:
        raise CLIError(f"--threads must be >= 1, got {threads}")
    for value, name in ((n, "--n"), (tilt_n, "--tilt-n")):
        if value < 2:
            raise CLIError(f"{name} must be >= 2, got {value}")
    if max_new_tokens < 1:
        raise CLIError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    if seed < 0:
        raise CLIError(f"--seed must be >= 0, got {seed}")
    lam_list = parse_floats(lams, "--lams")
    if (
        not lam_list
        or any(not np.isfinite(x) or x <= 0 for x in lam_list)
        or len(set(lam_list)) < len(lam_list)
    ):
        raise CLIError(f"--lams must be distinct numbers > 0, got {lams!r}")
    texts = None if prompts is None else read_prompts(prompts)
    spec = _model_spec(model)
    check_out_dir(out)
    try:  # transformers' own loading bars would garble ours
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass  # lm.load_model raises the ImportError naming the extra
    with _stage_bars() as progress:
        job = lm_demo_job(
            spec,
            texts,
            n=n,
            tilt_n=tilt_n,
            max_new_tokens=max_new_tokens,
            lams=lam_list,
            lexicon=lexicon,
            seed=seed,
            threads=threads,
            progress=progress,
        )
    run_job(job, out, as_json)


class _stage_bars:
    """A progress bar per stage of a job (``progress(stage, done, total)``), on a terminal only."""

    def __enter__(self):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err_console,
            disable=not err_console.is_terminal,
        )
        self.tasks = {}
        self.bar.__enter__()
        return self

    def __call__(self, stage, done, total):
        if stage not in self.tasks:
            self.tasks[stage] = self.bar.add_task(stage, total=total)
        self.bar.update(self.tasks[stage], completed=done, total=total)

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)
