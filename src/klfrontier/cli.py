"""Command line interface: a thin layer over the public API (no mathematics here).

One error boundary (:func:`friendly`, :class:`_OneLineErrors`): every expected
failure is one line on stderr and exit code 2; an unexpected exception is one
line naming it, a hint to rerun with ``--debug`` for the traceback, and exit
code 1.  User data and paths are printed as literal text, never as console
markup.  See ``docs/cli.md``.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup, TyperOption

try:  # typer >= 0.20 carries its own copy of click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - older typer on click
    from click.exceptions import (  # type: ignore[assignment]  # same classes, older typer
        ClickException,
        NoArgsIsHelpError,
        UsageError,
    )


class _OneLineErrors(TyperGroup):
    """Usage errors (unknown option, bad value) as one line on stderr with exit code 2, not a box."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError:
            return super().main(args, prog_name, complete_var, standalone_mode=True, **extra)
        except UsageError as exc:
            where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            _say_error(exc.format_message() + where)
            sys.exit(2)
        except ClickException as exc:
            _say_error(exc.format_message())
            sys.exit(exc.exit_code)
        except typer.Abort:
            _say_error("aborted")
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) and not isinstance(rv, bool) else 0)


def _flags_without_metavar():
    """Typer 0.29 with click 8.5 shows a flag as ``--json <bool>``; a flag takes no value."""
    show = TyperOption.display_type_rich
    if getattr(show, "_klfrontier", False):
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag and self.metavar is None else show(self, ctx)

    display_type_rich._klfrontier = True
    TyperOption.display_type_rich = display_type_rich


_flags_without_metavar()

app = typer.Typer(
    cls=_OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_show_locals=False,
    help="Reward-KL geometry of language-model alignment: the optimal KL-constrained "
    "policy, exact best-of-N and soft best-of-N, and their asymptotics.",
)
# Tables are wide: when stdout is not a terminal (pipes, CI logs) do not squeeze
# them into rich's default 80 columns.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

#: Set by the global ``--debug``: let exceptions through with their traceback.
_DEBUG = False
#: Report-folder locks taken by ``--out`` checks, released when the command ends.
_LOCKS: list = []


def _print_version(value: bool):
    if value:
        from . import __version__

        console.print(Text(f"klfrontier {__version__}"), highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
    ),
    debug: bool = typer.Option(
        False,
        "--debug",
        help="On an unexpected error, show the full traceback (and let expected errors through with theirs).",
    ),
):
    """Reward-KL geometry of language-model alignment."""
    global _DEBUG
    _DEBUG = debug


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _one_line(msg) -> str:
    """A message on one line: its lines joined, surrounding blanks dropped."""
    return " ".join(part.strip() for part in str(msg).splitlines() if part.strip())


def _say_error(msg):
    """One line on stderr; the message is data, never console markup."""
    err_console.print(
        Text.assemble(("error:", "bold red"), " ", _one_line(msg)), highlight=False, soft_wrap=True
    )


def _say_note(msg):
    """One informational line on stderr (literal text)."""
    err_console.print(Text.assemble(("note:", "cyan"), " ", _one_line(msg)), highlight=False, soft_wrap=True)


def _expected(exc) -> str | None:
    """The one-line message of an expected failure, or None for a bug."""
    from .errors import KlfrontierError

    if isinstance(exc, (CLIError, KlfrontierError)):
        return str(exc)
    if isinstance(exc, OSError):
        name = exc.filename
        if isinstance(exc, FileNotFoundError) and name is not None:
            return f"{name}: no such file"
        if isinstance(exc, IsADirectoryError) and name is not None:
            return f"{name}: is a directory, not a file"
        if isinstance(exc, PermissionError) and name is not None:
            return f"{name}: permission denied"
        text = exc.strerror or (str(exc.args[0]) if len(exc.args) == 1 else str(exc)) or type(exc).__name__
        return f"{name}: {text}" if name is not None else text
    if isinstance(exc, KeyError):
        return str(exc.args[0]) if exc.args else "missing key"
    if isinstance(exc, (ValueError, ImportError, EOFError)):
        if len(exc.args) == 1 and isinstance(exc.args[0], str) and not isinstance(exc, UnicodeError):
            return exc.args[0]
        return str(exc) or type(exc).__name__
    if isinstance(exc, MemoryError):
        return (
            "out of memory: the request needs more memory than this machine has; "
            "use fewer or smaller values (see the limits in `klfrontier COMMAND --help`)"
        )
    if isinstance(exc, RecursionError):
        return "input nested too deeply to process"
    return None


def friendly(fn):
    """The error boundary of every command: expected failures are one line on stderr and exit
    code 2; anything else one line, a hint to rerun with --debug, and exit code 1.  Report-folder
    locks the command took are released on the way out."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, ClickException):
            raise
        except KeyboardInterrupt:
            _say_error("interrupted")
            raise typer.Exit(code=130) from None
        except Exception as exc:
            if _DEBUG:
                raise
            msg = _expected(exc)
            if msg is not None:
                _say_error(msg)
                raise typer.Exit(code=2) from None
            _say_error(
                f"unexpected {type(exc).__name__}: {_one_line(exc) or 'no message'} "
                "— this is a bug in klfrontier; rerun with --debug for the traceback"
            )
            raise typer.Exit(code=1) from None
        finally:
            while _LOCKS:
                _LOCKS.pop().release()

    return wrapper


#: Largest even grid of `frontier --points`.
MAX_POINTS = 100_000
#: Most values one comma-separated option takes (each is a separate computation and table row).
MAX_VALUES = 10_000
#: Memory of one value of a list option or one grid point, as measured on `frontier --points`
#: (the result arrays, the table row and its JSON): about 1 KB.
_BYTES_PER_POINT = 1_000


def _memory(nbytes: float) -> str:
    """``1.5 GB``-style size (powers of 1000).

    >>> _memory(8e9), _memory(2.5e6), _memory(512)
    ('8 GB', '2.5 MB', '512 bytes')
    """
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if nbytes >= size:
            return f"{nbytes / size:.3g} {unit}"
    return f"{nbytes:.0f} bytes"


def _too_big(option: str, count: float, limit: int, per_item: float, what: str) -> CLIError:
    """The error for a request past a resource limit, stating the memory it would need."""
    return CLIError(
        f"{option}: {count:,.0f} {what} would need about {_memory(count * per_item)} of memory "
        f"(about {_memory(per_item)} per {what.rstrip('s')}); the limit is {limit:,}"
    )


def parse_floats(text: str, name: str) -> list[float]:
    """Comma-separated numbers: at least one, at most :data:`MAX_VALUES`."""
    parts = [x for x in text.replace(";", ",").split(",") if x.strip()]
    if not parts:
        raise CLIError(f"{name}: give at least one number (comma separated), got {text!r}")
    if len(parts) > MAX_VALUES:
        raise _too_big(name, len(parts), MAX_VALUES, _BYTES_PER_POINT, "values")
    try:
        return [float(x) for x in parts]
    except ValueError:
        raise CLIError(f"{name}: expected comma-separated numbers, got {text!r}") from None


def _read_table(path: Path, reward_col: str, prob_col: str):
    """Read (rewards, probs) from a CSV or JSON file: :func:`klfrontier.io.read_reference`
    (streamed, bounded records; CSV with a ``reward_col``/``prob_col`` header or two headerless
    columns, JSON as an object of two lists, a list of records or of ``[reward, prob]`` pairs)."""
    from .io import SampleFileError, read_reference

    try:
        return read_reference(path, reward_col=reward_col, prob_col=prob_col)
    except FileNotFoundError:
        raise CLIError(f"{path}: no such file") from None
    except SampleFileError as exc:
        raise CLIError(str(exc)) from None


def _reference(rewards, probs, normalize):
    """``Reference(rewards, probs=probs)``, its errors phrased for the command line."""
    from . import Reference

    try:
        return Reference(rewards, probs=probs, normalize=normalize, copy=False)  # the arrays are ours
    except ValueError as exc:
        raise CLIError(str(exc).replace("pass normalize=True", "pass --normalize")) from None


def load_reference(
    source: str | None,
    rewards: str | None,
    probs: str | None,
    reward_col: str = "reward",
    prob_col: str = "prob",
    normalize: bool = False,
):
    """Build a Reference from inline lists, a CSV/JSON file or a built-in name."""
    if rewards is not None or probs is not None:
        if source is not None:
            raise CLIError("give either --ref or --rewards/--probs, not both")
        if rewards is None or probs is None:
            raise CLIError("--rewards and --probs go together")
        return _reference(parse_floats(rewards, "--rewards"), parse_floats(probs, "--probs"), normalize)
    from .instances import available, load

    if source is None:
        source = DEFAULT_REF
        _say_note(f"no --ref given: using the built-in reference {source!r} ({available()[source]})")
    path = Path(source)
    if source not in available() and (path.suffix.lower() in (".csv", ".json") or path.exists()):
        r, p = _read_table(path, reward_col, prob_col)
        return _reference(r, p, normalize)
    if source not in available():
        raise CLIError(
            f"unknown reference {source!r}: give a CSV/JSON file or one of {', '.join(available())}"
        )
    return load(source).ref


#: The reference the single-token commands use without --ref (they say so on stderr).
DEFAULT_REF = "three-letter"
RefOpt = typer.Option(
    None,
    "--ref",
    "-r",
    help="Instance name (see `klfrontier instances`) or a CSV/JSON "
    "file with reward and prob columns (default: the built-in 'three-letter').",
)
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
            return "—"  # no value (e.g. no interval): never print nan
        if np.isinf(x):
            return "∞" if x > 0 else "−∞"
        # mypy joins abs(float | np.floating) to object; it is a float either way
        if x == int(x) and abs(x) < 1e15:  # type: ignore[operator]
            return f"{int(x)}"
        return f"{x:.6g}"
    return str(x)


@app.command()
@friendly
def frontier(
    ref: str | None = RefOpt,
    rewards: str | None = RewardsOpt,
    probs: str | None = ProbsOpt,
    normalize: bool = NormOpt,
    reward_col: str = RewardColOpt,
    prob_col: str = ProbColOpt,
    kl: str | None = typer.Option(None, "--kl", help="Budgets (nats), comma separated."),
    kl_max: float | None = typer.Option(None, help="Largest budget for an even grid (default: -log p(A))."),
    points: int = typer.Option(11, help="Grid size when --kl is not given (2 to 100,000)."),
    as_json: bool = JsonOpt,
):
    """The reward-KL frontier R*(Δ) of the optimal KL-constrained policy."""
    from . import frontier as _frontier

    if points < 2:
        raise CLIError(f"--points must be >= 2, got {points}")
    if points > MAX_POINTS:
        raise _too_big("--points", points, MAX_POINTS, _BYTES_PER_POINT, "points")
    kl_values = parse_floats(kl, "--kl") if kl is not None else None
    reference = load_reference(ref, rewards, probs, reward_col, prob_col, normalize=normalize)
    budgets = (
        kl_values
        if kl_values is not None
        else np.linspace(0.0, kl_max if kl_max is not None else reference.kl_max * 1.05, points)
    )
    fr = _frontier(reference, budgets)
    rows = [[d, u, r, l, s] for d, u, r, l, s in zip(fr.kl, fr.kl_used, fr.reward, fr.lam, fr.saturated)]
    _print_table(
        f"Frontier R*(Δ) — {reference!r}",
        ["KL budget Δ", "KL used", "R*(Δ)", "λ", "saturated"],
        rows,
        as_json,
        fr.to_dict(),
    )


@app.command()
@friendly
def bon(
    ref: str | None = RefOpt,
    rewards: str | None = RewardsOpt,
    probs: str | None = ProbsOpt,
    normalize: bool = NormOpt,
    reward_col: str = RewardColOpt,
    prob_col: str = ProbColOpt,
    n: str | None = typer.Option(None, "--n", help="Values of N (real >= 1), comma separated."),
    log_n: str | None = typer.Option(None, "--log-n", help="Values of log N instead of N."),
    as_json: bool = JsonOpt,
):
    """Exact best-of-N: KL (vs the usual log N - (N-1)/N), reward, win rate, and the λ dictionary."""
    from . import best_of_n, bon_kl_beirami
    from . import frontier as _frontier

    if n is not None and log_n is not None:
        raise CLIError("give --n or --log-n, not both")
    if log_n is not None:
        specs = [{"log_n": v} for v in parse_floats(log_n, "--log-n")]
    else:
        specs = [
            {"n": v} for v in (parse_floats(n, "--n") if n is not None else [1, 2, 4, 8, 16, 64, 256, 1024])
        ]
    reference = load_reference(ref, rewards, probs, reward_col, prob_col, normalize=normalize)
    rows, payload = [], []
    for spec in specs:
        b = best_of_n(reference, **spec)
        est = bon_kl_beirami(reference, **spec)
        star = float(_frontier(reference, [b.kl]).reward[0])
        rows.append(
            [b.n, b.kl, b.kl_bound, est, b.reward, star, b.win_rate, b.lam_same_kl, b.lam_same_reward]
        )
        payload.append({**b.to_dict(), "kl_estimate_beirami": est, "frontier_reward_at_kl": star})
    _print_table(
        f"Best-of-N — {reference!r}",
        [
            "N",
            "KL exact",
            "log N-(N-1)/N",
            "Beirami D̂",
            "reward",
            "R*(KL)",
            "win rate",
            "λ same KL",
            "λ same reward",
        ],
        rows,
        as_json,
        {"best_of_n": payload},
    )


@app.command("soft-bon")
@friendly
def soft_bon(
    ref: str | None = RefOpt,
    rewards: str | None = RewardsOpt,
    probs: str | None = ProbsOpt,
    normalize: bool = NormOpt,
    reward_col: str = RewardColOpt,
    prob_col: str = ProbColOpt,
    n: str = typer.Option("1,2,4,8,16,64", "--n", help="Values of N, comma separated."),
    lam: float = typer.Option(1.0, "--lam", help="Inverse temperature λ of the weights e^{λ r}."),
    as_json: bool = JsonOpt,
):
    """Exact soft best-of-N (sampling ∝ e^{λ r} among N draws)."""
    from . import frontier as _frontier
    from .soft_bon import soft_best_of_n

    n_values = parse_floats(n, "--n")
    reference = load_reference(ref, rewards, probs, reward_col, prob_col, normalize=normalize)
    rows, payload = [], []
    for nv in n_values:
        s = soft_best_of_n(reference, n=nv, lam=lam)
        star = float(_frontier(reference, [s.kl]).reward[0])
        rows.append([nv, s.kl, s.reward, star, s.win_rate])
        payload.append({**s.to_dict(), "frontier_reward_at_kl": star})
    _print_table(
        f"Soft best-of-N, λ = {lam:g} — {reference!r}",
        ["N", "KL", "reward", "R*(KL)", "win rate"],
        rows,
        as_json,
        {"soft_best_of_n": payload},
    )


@app.command()
@friendly
def convergence(
    ref: str | None = RefOpt,
    rewards: str | None = RewardsOpt,
    probs: str | None = ProbsOpt,
    normalize: bool = NormOpt,
    reward_col: str = RewardColOpt,
    prob_col: str = ProbColOpt,
    delta: str = typer.Option("0.1", "--delta", help="Per-token KL budgets δ, comma separated."),
    lengths: str = typer.Option(
        "10,100,1000,10000,100000", "--lengths", help="Sequence lengths m, comma separated."
    ),
    as_json: bool = JsonOpt,
):
    """Exact best-of-N with N = e^{mδ} against KL-RL with budget mδ, as m grows (theory §6)."""
    from . import equivalence
    from .jobs import SECOND_ORDER_RULE, shown_predictions
    from .sequences import convergence as _convergence

    ms = _lengths(lengths)
    deltas = parse_floats(delta, "--delta")
    reference = load_reference(ref, rewards, probs, reward_col, prob_col, normalize=normalize)
    _check_budgets(deltas, reference.kl_max, "--delta", "a per-token KL budget")
    tables = []
    for d in deltas:
        t = _convergence(reference, d, lengths=ms)
        t.rows = shown_predictions(t, equivalence(reference, d).sigma2)
        tables.append(t)
    if as_json:
        from ._json import dumps

        out = [
            {
                **t.to_dict(),
                "prediction_shown": [r["prediction_shown"] for r in t.rows],
                "prediction_rule": SECOND_ORDER_RULE,
            }
            for t in tables
        ]
        sys.stdout.write(dumps({"convergence": out}, indent=2) + "\n")
        return
    for t in tables:
        rows = [
            [
                r["m"],
                r["reward_per_token"],
                r["optimal_reward"],
                r["gap"],
                r["gap_prediction"],
                r["gap_ratio"],
                r["kl_per_token"],
                r["kl_to_optimal"],
                r["kl_to_optimal_prediction"],
                r["kl_to_optimal_per_token"],
                r["method"] + ("" if r["exact"] else " (approx)"),
            ]
            for r in t.rows
        ]
        _print_table(
            f"δ = {t.delta:g}, λ_δ = {t.lam:.6g}, R*(δ) = {t.optimal_reward:.10g} — {reference!r}",
            [
                "m",
                "E[S_m]/m",
                "R*(δ)",
                "gap",
                "predicted",
                "ratio",
                "KL(π_N‖p)/m",
                "KL(π_N‖φ_Δ)",
                "predicted",
                "KL(π_N‖φ_Δ)/m",
                "engine",
            ],
            rows,
            False,
            {},
        )
    if any(not r["prediction_shown"] for t in tables for r in t.rows):
        _say_note("predictions left blank (—) where they do not hold: " + SECOND_ORDER_RULE)


#: Longest sequence of `--lengths`: beyond it N = e^{mδ} and S_m leave double precision's range
#: of exact integers (2^53 ≈ 9e15) well behind, and the engines fall back to approximations.
MAX_LENGTH = 10**12


def _lengths(text: str, option: str = "--lengths") -> list[int]:
    """Sequence lengths: integers in [1, MAX_LENGTH]."""
    ms = parse_floats(text, option)
    if any(not np.isfinite(m) or m != int(m) or m < 1 for m in ms):
        raise CLIError(f"{option} must be positive integers, got {text!r}")
    if max(ms) > MAX_LENGTH:
        raise CLIError(
            f"{option}: m = {max(ms):.3g} is past the limit {MAX_LENGTH:.0e}: beyond it the sums "
            "of m rewards and N = e^(mδ) leave the range where double precision counts exactly"
        )
    return [int(m) for m in ms]


def _check_budgets(values, kl_max, option, what):
    """Every budget in (0, -log p(A)), with the limit explained in words."""
    for d in values:
        if not (np.isfinite(d) and 0 < d < kl_max):
            raise CLIError(
                f"{option} {d:g}: {what} must lie strictly between 0 and {kl_max:.4g} nats. "
                f"{kl_max:.4g} = −log p(top) is the KL of the policy that puts all its probability on the "
                "highest-reward outcome(s) (p(top) is their probability under the reference): no policy "
                "spends more KL, so larger budgets buy nothing"
            )


@app.command("instances")
@friendly
def list_instances():
    """List the built-in and real reference instances."""
    from .instances import available

    _print_table("Instances", ["name", "description"], [[k, v] for k, v in available().items()], False, {})


def run_job(job, out: Path | None, as_json: bool, figure_formats=("png", "svg")):
    """Print a job's headline table (or its JSON) and write its report (atomically, see
    :func:`klfrontier.report.write_report`; ``--out`` was locked by :func:`check_out_dir`)."""
    from ._json import dumps
    from .report import write_report

    if out is not None:
        index = write_report(
            out,
            job.title,
            job.sections,
            job.summary,
            lead=job.lead,
            extra_files=getattr(job, "extra_files", None) or None,
            figure_formats=figure_formats,
        )
    if as_json:
        sys.stdout.write(dumps(job.summary, indent=2) + "\n")
        return
    table = Table(title=Text(job.title))
    table.add_column("quantity", justify="left")
    table.add_column("value", justify="right")
    table.add_column("note", justify="left")
    for q, v, note in job.headline:
        table.add_row(Text(str(q)), Text(_fmt(v)), Text(str(note)))
    console.print(table)
    if out is not None:
        console.print(
            Text.assemble("report: ", (str(index), "bold"), " (figures, tables and summary.json beside it)"),
            highlight=False,
        )


def _stage_printer():
    def progress(label):
        err_console.print(Text(f"· {label}…", style="dim"), highlight=False)

    return progress


#: Where `demo` writes its report without --out (the Makefile's `make demo` folder).
DEMO_OUT = "out/demo"


@app.command()
@friendly
def demo(
    instance: str = typer.Option(
        "unigram-vader", "--instance", "-i", help="Reference instance (see `klfrontier instances`)."
    ),
    reward: str | None = typer.Option(
        None, "--reward", help="Shortcut: 'vader' or 'afinn' picks unigram-<reward>."
    ),
    top_n: int = typer.Option(50_000, "--top-n", help="Vocabulary size of the unigram instances."),
    delta: str = typer.Option("0.05,0.2,1.0", "--delta", help="Per-token budgets δ, comma separated."),
    lengths: str = typer.Option(
        "10,30,100,300,1000,3000,10000", "--lengths", help="Sequence lengths m, comma separated."
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Write index.html, figures (PNG, SVG), tables "
        f"and summary.json here (default: {DEMO_OUT}; with --json, none "
        "unless given).",
    ),
    as_json: bool = JsonOpt,
):
    """The main job on a real instance: frontier, best-of-N, rate functions, and BoN → KL-RL as m grows."""
    from .jobs import demo_job

    if reward is not None:
        if reward not in ("vader", "afinn"):
            raise CLIError(f"--reward must be 'vader' or 'afinn', got {reward!r}")
        instance = f"unigram-{reward}"
    ms = _lengths(lengths)
    deltas = parse_floats(delta, "--delta")
    if instance != "bigram":
        _check_demo_instance(instance, top_n, deltas)
    if out is None and not as_json:
        out = Path(DEMO_OUT)
    check_out_dir(out)
    job = demo_job(
        instance,
        top_n=top_n,
        deltas=tuple(deltas),
        lengths=tuple(ms),
        progress=None if as_json else _stage_printer(),
    )
    run_job(job, out, as_json)


def _check_demo_instance(instance: str, top_n: int, deltas):
    """Load the demo's reference (cheap) and refuse, before any work, what it cannot do."""
    from .instances import available, load

    if instance not in available():
        raise CLIError(f"--instance {instance!r}: unknown; available: {', '.join(available())}")
    kw = {}
    if instance.startswith("unigram"):
        if top_n < 2:
            raise CLIError(f"--top-n must be >= 2 words, got {top_n}")
        kw["top_n"] = top_n
    ref = load(instance, **kw).ref
    if ref.is_constant:
        raise CLIError(
            f"--top-n {top_n}: the {top_n:,} most frequent words all have the same reward "
            f"({float(ref.rewards[0]):g}): with one reward level there is nothing to optimise; "
            "take more words (e.g. --top-n 1000) so that some carry a sentiment score"
        )
    _check_budgets(
        deltas,
        ref.kl_max,
        "--delta",
        f"for {instance}"
        + (f" with its {top_n:,} most frequent words" if "top_n" in kw else "")
        + ", a per-token KL budget",
    )


def check_out_dir(out: Path | None):
    """Before any work: lock ``--out`` for this command (another run on it fails at once), finish
    or clean up what an interrupted earlier write left, and create it; fail with one line when it
    cannot hold a report.  The lock is released when the command ends (:func:`friendly`)."""
    if out is None:
        return
    import os

    from .report import ReportBusyError, prepare_report_dir

    try:
        _LOCKS.append(prepare_report_dir(out))
    except ReportBusyError as exc:
        raise CLIError(f"--out {exc}") from None
    except ValueError as exc:
        raise CLIError(f"--out {exc}") from None
    except OSError as exc:
        raise CLIError(
            f"--out {out}: cannot create it or the lock beside it "
            f"({exc.strerror or exc}{': ' + str(exc.filename) if exc.filename else ''})"
        ) from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise CLIError(f"--out {out}: not writable")


def _check_input_file(path: Path, option: str = ""):
    """The input exists and is a file or a sample store; the real reason otherwise (a symlink loop
    is not "no such file")."""
    import os

    where = f"{option} " if option else ""
    try:
        os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise CLIError(f"{where}{path}: a symbolic link to a file that does not exist") from None
        raise CLIError(f"{where}{path}: no such file") from None
    except OSError as exc:
        raise CLIError(f"{where}{path}: {exc.strerror or exc}") from None
    if path.is_dir() and not (path / "manifest.json").is_file():
        raise CLIError(
            f"{where}{path}: is a directory and not a sample store (no manifest.json); "
            f"give a JSONL, CSV or Parquet file or a store written by `klfrontier sample`"
        )


def _file_provenance(path: Path) -> dict:
    """Size and sha256 of an input file; for a sample store, of its manifest (which lists every
    shard's sha256) and the shards' total size."""
    from ._atomic import sha256_file

    if path.is_dir():
        manifest = path / "manifest.json"
        total = sum(f.stat().st_size for f in path.glob("*.parquet"))
        info = _file_provenance(manifest)
        return {"path": str(path), "store": True, "bytes": total, "manifest_sha256": info["sha256"]}
    if not path.is_file():  # a pipe or FIFO was read once already: reopening it would hang
        return {"path": str(path), "stream": True}
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


class _BackgroundProvenance:
    """:func:`_file_provenance` of each path on a daemon thread, while the files are read.

    hashlib releases the GIL on large blocks, so the sha256 runs on the second core; a daemon
    thread never holds up the exit of a run that fails before the result is needed.
    """

    def __init__(self, paths):
        import threading

        from ._atomic import sha256_file  # noqa: F401  (imported here, not on the thread)

        self._paths = list(paths)
        self._out: list = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="klfrontier-sha256", daemon=True)
        self._thread.start()

    def _run(self):
        try:
            for p in self._paths:
                self._out.append(_file_provenance(p))
        except BaseException as exc:  # re-raised on the caller's thread by result()
            self._error = exc

    def result(self, i):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._out[i]


@app.command()
@friendly
def analyze(
    samples: Path = typer.Argument(
        ..., help="Base samples from the reference: JSONL, CSV or Parquet, one row per sample."
    ),
    policy: list[str] | None = typer.Option(
        None,
        "--policy",
        help=(
            "NAME=FILE: samples of an aligned policy with 'logprob' (policy) and 'ref_logprob' "
            "(reference) columns. Repeatable; names differing only in numbers (step100, step200) "
            "form a path."
        ),
    ),
    gold_col: str | None = typer.Option(
        None, "--gold-col", help="Column of a gold reward: select with --reward-col, measure this."
    ),
    prompt_col: str = typer.Option("prompt_id", help="Column holding the prompt id."),
    reward_col: str = typer.Option(
        "reward", help="Column holding the reward (the proxy when --gold-col is given)."
    ),
    logprob_col: str = typer.Option(
        "logprob", help="Column holding log-probabilities (policy files: under the policy)."
    ),
    ref_logprob_col: str = typer.Option(
        "ref_logprob", help="Column holding log p under the reference (policy files)."
    ),
    text_col: str = typer.Option("text", help="Column holding the text (optional, not kept)."),
    fmt: str | None = typer.Option(
        None, "--format", help="jsonl, csv or parquet (default: from the suffix)."
    ),
    strict: bool = typer.Option(False, "--strict", help="Fail on the first bad row instead of skipping it."),
    n: str | None = typer.Option(None, "--n", help="Best-of-N sizes (integers), comma separated."),
    kl: str | None = typer.Option(None, "--kl", help="Average KL budgets for the frontier, comma separated."),
    lam: str | None = typer.Option(
        None, "--lam", help="Inverse temperatures λ of the tilted policy, comma separated."
    ),
    n_boot: int = typer.Option(
        1000, "--n-boot", help="Prompt-bootstrap replications (used from 30 prompts on)."
    ),
    interval: str = typer.Option("auto", "--interval", help="auto, t, bootstrap or none."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    tables: str = typer.Option(
        "parquet", "--tables", help="Format of the per-prompt table beside the report: parquet or csv."
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Write index.html, figures (PNG; SVG with --svg), tables (CSV) and summary.json here.",
    ),
    svg: bool = typer.Option(False, "--svg/--no-svg", help="Also write every figure as SVG beside its PNG."),
    max_record_bytes: int = typer.Option(
        16 << 20,
        "--max-record-bytes",
        help="Longest record (JSONL line, CSV record) read; a longer one is a bad row, never held in memory.",
    ),
    as_json: bool = JsonOpt,
):
    """Best-of-N, the average-KL optimum, aligned policies and proxy-vs-gold, from your own samples."""
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in locals().items()}
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from .io import read_samples
    from .jobs import analyze_job

    if n_boot < 0:
        raise CLIError(f"--n-boot must be >= 0 (0: no bootstrap), got {n_boot}")
    if n_boot > MAX_N_BOOT:
        raise CLIError(
            f"--n-boot {n_boot:,}: the bootstrap keeps every replication of every reported "
            f"statistic, 8 bytes each: {_memory(8 * n_boot)} per statistic and about "
            f"{_memory(8 * n_boot * _BOOT_STATISTICS)} for a default report's ~{_BOOT_STATISTICS} "
            f"statistics; the limit is {MAX_N_BOOT:,} (1000 is plenty for 95% intervals)"
        )
    if interval not in ("auto", "t", "bootstrap", "none"):
        raise CLIError(f"--interval must be auto, t, bootstrap or none, got {interval!r}")
    if tables not in ("parquet", "csv"):
        raise CLIError(f"--tables must be parquet or csv, got {tables!r}")
    n_values = None
    if n is not None:
        n_values = parse_floats(n, "--n")
        if any(not np.isfinite(v) or v != int(v) or v < 1 for v in n_values):
            raise CLIError(f"--n must be positive integers, got {n!r}")
        n_values = [int(v) for v in n_values]
    kl_values = parse_floats(kl, "--kl") if kl is not None else None
    lam_values = parse_floats(lam, "--lam") if lam is not None else None
    _check_input_file(samples)
    pol_files = {}
    for spec in policy or []:
        name, sep, file = spec.partition("=")
        if not sep or not name or not file:
            raise CLIError(f"--policy expects NAME=FILE, got {spec!r}")
        if name in pol_files:
            raise CLIError(f"--policy {name!r} given twice")
        _check_input_file(Path(file), f"--policy {name}:")
        pol_files[name] = Path(file)
    check_out_dir(out)
    # the base samples' log-probabilities are not used by the analysis: not read (memory)
    base_cols = {
        "prompt_id": prompt_col,
        "reward": reward_col,
        "logprob": None,
        "text": text_col,
        "ref_logprob": None,
    }
    if gold_col is not None:
        base_cols["gold"] = gold_col
    pol_cols = dict(base_cols, logprob=logprob_col, ref_logprob=ref_logprob_col)
    stages = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=as_json or not err_console.is_terminal,
    ) as bar:

        def reader(label):  # a task description is console markup: escape the user's names
            task = bar.add_task(escape(label), total=None)
            return task, (lambda rows: bar.update(task, completed=rows))

        hashing = _BackgroundProvenance([samples, *pol_files.values()])
        task, cb = reader(f"reading {samples.name}")
        data = read_samples(
            samples,
            columns=base_cols,
            strict=strict,
            format=fmt,
            progress=cb,
            max_record_bytes=max_record_bytes,
        )
        bar.update(task, visible=False)
        pol_data = {}
        for name, pol_path in pol_files.items():
            task, cb = reader(f"reading policy {name}")
            pol_data[name] = read_samples(
                pol_path,
                columns=pol_cols,
                strict=strict,
                format=fmt,
                progress=cb,
                max_record_bytes=max_record_bytes,
            )
            bar.update(task, visible=False)
        _release_arrow_memory()
        if out is not None:  # the report draws figures: import matplotlib while computing
            from . import empirical  # noqa: F401  (the analysis's own imports come first)
            from .plots import preload

            preload()

        def progress(stage, done, total):
            if stage not in stages:
                stages[stage] = bar.add_task(escape(stage), total=total)
            bar.update(stages[stage], completed=done, total=total)

        provenance = {
            "command": "klfrontier analyze",
            "options": options,
            "seed": seed,
            "files": [hashing.result(0)]
            + [dict(hashing.result(i), policy=k) for i, k in enumerate(pol_files, start=1)],
            "rows": {"base": data.n_samples, **{k: v.n_samples for k, v in pol_data.items()}},
        }
        job = analyze_job(
            data,
            policies=pol_data or None,
            gold_col=gold_col,
            n_values=n_values,
            kl_values=kl_values,
            lam_values=lam_values,
            n_boot=n_boot,
            seed=seed,
            interval=interval,
            columns=base_cols,
            progress=progress,
            provenance=provenance,
            table_format=tables,
        )
    for label, d in [("base", data)] + list(pol_data.items()):
        if d.n_bad_rows and not as_json:
            f, line, reason = d.bad_rows[0]
            _say_warning(f"{label}: skipped {d.n_bad_rows} bad row(s); first: {f}:{line}: {reason}")
    excluded = job.summary["analysis"]["n_excluded_prompts"]
    if excluded and not as_json:
        _say_warning(f"{excluded} prompt(s) with fewer than two samples left out")
    run_job(job, out, as_json, figure_formats=("png", "svg") if svg else ("png",))


#: Most bootstrap replications, and about how many statistics a default analyze report bootstraps.
MAX_N_BOOT = 100_000
_BOOT_STATISTICS = 100


def _release_arrow_memory():
    """Hand pyarrow's pooled buffers back to the system once the files are read."""
    try:
        import pyarrow
    except ImportError:
        return
    pyarrow.default_memory_pool().release_unused()


def _say_warning(msg):
    from rich.text import Text

    err_console.print(
        Text.assemble(("warning:", "yellow"), " ", _one_line(msg)), highlight=False, soft_wrap=True
    )


#: `samples`: most rows (--prompts × --n) and words per sample; memory per row and per word,
#: as measured (1M rows of 12 words: 0.4 GB peak).
MAX_SAMPLE_ROWS = 10_000_000
MAX_SAMPLE_LENGTH = 10_000
_SAMPLE_ROW_BYTES, _SAMPLE_WORD_BYTES = 250, 15


@app.command("samples")
@friendly
def make_samples(
    out: Path = typer.Argument(..., help="File to write (.jsonl, .csv or .parquet)."),
    instance: str = typer.Option("unigram-vader", "--instance", "-i", help="Word-level instance."),
    prompts: int = typer.Option(40, "--prompts", help="Number of prompts."),
    n: int = typer.Option(64, "--n", help="Samples per prompt."),
    length: int = typer.Option(12, "--length", help="Words per sample."),
    seed: int = typer.Option(0, "--seed", help="Seed of the draws."),
):
    """Write a sample file drawn from a real unigram instance (to try `klfrontier analyze`)."""
    from .instances.samples import unigram_samples
    from .io import write_samples

    for value, option in ((prompts, "--prompts"), (n, "--n"), (length, "--length")):
        if value < 1:
            raise CLIError(f"{option} must be a positive integer, got {value}")
    if seed < 0:
        raise CLIError(f"--seed must be >= 0, got {seed}")
    per_row = _SAMPLE_ROW_BYTES + _SAMPLE_WORD_BYTES * length
    if prompts * n > MAX_SAMPLE_ROWS:
        raise _too_big("--prompts × --n", prompts * n, MAX_SAMPLE_ROWS, per_row, "rows")
    if length > MAX_SAMPLE_LENGTH:
        raise _too_big("--length", length, MAX_SAMPLE_LENGTH, _SAMPLE_WORD_BYTES * prompts * n, "words")
    if out.is_dir():
        raise CLIError(f"{out}: is a directory; give a file name ending in .jsonl, .csv or .parquet")
    data = unigram_samples(instance, n_prompts=prompts, n_samples=n, length=length, seed=seed)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"{out.parent}: cannot create it ({exc.strerror or exc})") from None
    try:
        write_samples(out, data)
    except OSError as exc:
        raise CLIError(f"{out}: cannot write it ({exc.strerror or exc})") from None
    console.print(
        Text.assemble(
            f"wrote {data.n_samples:,} samples for {data.n_prompts} prompts to ", (str(out), "bold")
        ),
        highlight=False,
    )


from . import cli_lm  # noqa: E402,F401  (registers the lm commands)


def main():  # console-script entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
