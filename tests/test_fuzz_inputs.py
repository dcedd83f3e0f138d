"""No input takes the command line down (issue 10): the fuzz corpus through every command.

Every case of ``test_io_corpus.py`` (hostile files of issue 10, seeded random
files, file-system oddities) and Hypothesis-generated JSONL and CSV files go
through ``klfrontier analyze``, ``analyze --strict`` and every command that
reads ``--ref`` (``frontier``, ``bon``, ``soft-bon``, ``convergence``), in
process.  Per run: exit code 0 or 2, no traceback, no warning, and stderr one
``error:`` line (exit 2) or only one-line ``warning:``/``note:`` messages
(exit 0).  A few cases run as real processes: a device, a FIFO, a pipe, and a
1 GB line streamed through a FIFO with the peak memory measured.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.main import get_command

from klfrontier.cli import app
from test_io_corpus import GENERATED, SMALL_LIMIT, build_corpus, generated_file

runner = CliRunner()
# built once: typer's CliRunner rebuilds the click command on every call (15 ms, x 3,000 runs)
COMMAND = get_command(app)


def commands(path, case_name=""):
    """``(label, argv)`` of every command run on one input."""
    limit = ["--max-record-bytes", str(SMALL_LIMIT)] if "long" in case_name else []
    analyze = ["analyze", path, "--json", "--n-boot", "0", "--interval", "none", *limit]
    return [
        ("analyze", analyze),
        ("analyze --strict", [*analyze, "--strict"]),
        ("frontier", ["frontier", "--ref", path, "--json", "--kl", "0.1"]),
        ("bon", ["bon", "--ref", path, "--json", "--n", "1,4"]),
        ("soft-bon", ["soft-bon", "--ref", path, "--json", "--n", "2"]),
        # m = 1, 2: longer lengths can take minutes on a non-lattice reference (sequences/lattice_engine.py)
        ("convergence", ["convergence", "--ref", path, "--json", "--lengths", "1,2"]),
    ]


def _strict_json(text):
    """Whether ``text`` is strict JSON (no NaN or Infinity literals)."""

    def refuse(name):
        raise ValueError(name)

    try:
        json.loads(text, parse_constant=refuse)
    except ValueError:
        return False
    return True


def check_run(label, argv, where):
    """Run one command in process; return what is wrong with it (a list of strings)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = runner.invoke(COMMAND, argv)
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        plt.close("all")  # analyze builds figures that only a report saves; one process, many runs
    out, err = res.stdout, res.stderr
    lines = [x for x in err.splitlines() if x.strip()]
    problems = []
    if res.exit_code not in (0, 2):
        problems.append(f"exit code {res.exit_code}: {err.strip()[:200]}")
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        problems.append(f"exception {type(res.exception).__name__}: {res.exception}")
    if "Traceback" in out + err:
        problems.append("a traceback")
    if caught:
        kinds = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
        problems.append(f"{len(caught)} warnings: " + "; ".join(kinds)[:300])
    if res.exit_code == 2 and (len(lines) != 1 or not lines[0].startswith("error: ")):
        problems.append(f"stderr is not one error line: {lines!r}")
    if res.exit_code == 0 and not all(x.startswith(("warning: ", "note: ")) for x in lines):
        problems.append(f"stderr has more than one-line messages: {lines!r}")
    if res.exit_code == 0 and not _strict_json(out):
        problems.append("stdout is not strict JSON (NaN or Infinity)")
    return [f"{where} | {label}: {x}" for x in problems]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return root, build_corpus(root)


def test_every_case_through_every_command(corpus):
    root, cases = corpus
    failures, runs = [], 0
    for case in cases:
        path = os.path.join(root, case.path)
        for label, argv in commands(path, case.name):
            failures += check_run(label, argv, case.name)
            runs += 1
    print(f"{len(cases)} cases, {runs} runs, {len(failures)} failures")
    assert not failures, f"{len(failures)} problems in {runs} runs:\n" + "\n".join(failures[:40])
    assert len(cases) >= 500 and runs >= 6 * 500


def test_the_hostile_cases_say_what_is_wrong(corpus):
    """The one line names the problem (spot checks of issue 10's list)."""
    root, _ = corpus
    expect = {
        "zero.jsonl": "is a device",
        "a-directory.jsonl": "is a directory",
        "loop-a.jsonl": "symbolic link",
        "dangling.jsonl": "symbolic link",
        "absent.jsonl": "no such file",
        "plain-named.jsonl.gz": "not a valid gzip file",
        "truncated.jsonl.gz": "truncated gzip",
        "utf16-bom.jsonl": "UTF-16",
        "utf16-nobom.jsonl": "NUL byte",
        "binary-png.jsonl": "NUL byte",
        "dup-header.csv": "ambiguous",
        "empty.jsonl": "no valid rows",
        "deep-only.jsonl": "nested deeper",
        "long-no-newline.jsonl": "record longer than",
        "not-parquet.parquet": "Parquet",
        "dup-columns.parquet": "ambiguous",
        "wrong-suffix.txt": "--format",
    }
    for name, needle in expect.items():
        limit = ["--max-record-bytes", str(SMALL_LIMIT)] if "long" in name else []
        res = runner.invoke(
            COMMAND,
            ["analyze", os.path.join(root, name), "--json", "--n-boot", "0", "--interval", "none", *limit],
        )
        assert res.exit_code == 2 and needle.lower() in res.stderr.lower(), (name, res.stderr)
    for name, needle in {
        "ref-dup-reward.csv": "ambiguous",
        "ref-bools.json": "not a number",
        "ref-deep.json": "nested deeper",
        "ref-bom.csv": None,
        "ref-utf16.csv": "UTF-16",
        "ref-dup-key.json": "given twice",
        "ref-bad-cell.csv": ":3:",
    }.items():
        res = runner.invoke(COMMAND, ["frontier", "--ref", os.path.join(root, name), "--json"])
        if needle is None:
            assert res.exit_code == 0, (name, res.stderr)
        else:
            assert res.exit_code == 2 and needle in res.stderr, (name, res.stderr)


def test_strict_names_the_first_bad_row(corpus):
    root, _ = corpus
    res = runner.invoke(
        COMMAND, ["analyze", os.path.join(root, "invalid-utf8-pid.jsonl"), "--strict", "--json"]
    )
    assert res.exit_code == 2 and "invalid-utf8-pid.jsonl:25: prompt_id is not valid UTF-8" in res.stderr
    res = runner.invoke(
        COMMAND,
        [
            "analyze",
            os.path.join(root, "invalid-utf8-unused.jsonl"),
            "--strict",
            "--json",
            "--n-boot",
            "0",
            "--interval",
            "none",
        ],
    )
    assert res.exit_code == 0, res.stderr


@pytest.mark.parametrize("suffix, files", GENERATED, ids=[s for s, _ in GENERATED])
@settings(max_examples=30)
@given(data=st.data())
def test_generated_files_through_every_command(suffix, files, data):
    with generated_file(data.draw(files), suffix) as path:
        problems = [p for label, argv in commands(path) for p in check_run(label, argv, "generated")]
        assert not problems, problems


# ----------------------------------------------------------------------------- real processes
CLI = [sys.executable, "-m", "klfrontier.cli"]


def run_cli(args, stdin=None, timeout=120):
    """Run the CLI in a process: ``(exit code, stdout, stderr, seconds)``."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    p = subprocess.run(
        [*CLI, *args],
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        env=env,
        timeout=timeout,
    )
    return p.returncode, p.stdout.decode(), p.stderr.decode(), time.perf_counter() - t0


# A small wrapper that spawns the CLI and reports the CLI's rusage.  The measured process must not be
# a child of pytest itself: a child spawned with vfork (as subprocess and posix_spawn do) records the
# high-water RSS of the address space it borrowed, pytest's, when it execs, so ``ru_maxrss`` would be
# at least pytest's own peak (1066 MiB once, for a CLI run that peaks at 836 MiB).  The wrapper is a
# fresh ~20 MB interpreter, so the CLI's number is its own.
_MEASURE_WRAPPER = r"""
import json, os, sys
out_path, err_path, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
acts = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, out_path, flags, 0o600),
        (os.POSIX_SPAWN_OPEN, 2, err_path, flags, 0o600)]
pid = os.posix_spawnp(cmd[0], cmd, os.environ, file_actions=acts)
_, status, ru = os.wait4(pid, 0)
print(json.dumps({"rc": os.waitstatus_to_exitcode(status), "maxrss": ru.ru_maxrss * 1024}))
"""


def run_measured(args, timeout=300):
    """Like :func:`run_cli`, with the CLI's own peak RSS (``os.wait4`` in a small wrapper process)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out, err = os.path.join(tmp, "out"), os.path.join(tmp, "err")
        cmd = [sys.executable, "-c", _MEASURE_WRAPPER, out, err, *CLI, *args]
        p = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env, start_new_session=True
        )
        try:
            report, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)  # the wrapper and the CLI it spawned
            p.communicate()
            raise TimeoutError(args) from None
        res = json.loads(report.decode().strip().splitlines()[-1])
        with open(out, "rb") as fo, open(err, "rb") as fe:
            stdout, stderr = fo.read().decode(), fe.read().decode()
    return res["rc"], stdout, stderr, res["maxrss"], time.perf_counter() - t0


def feed_fifo(path, chunks):
    """Write ``chunks`` (an iterable of bytes) into the FIFO ``path`` from a thread."""

    def write():
        try:
            with open(path, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
        except BrokenPipeError:
            pass

    t = threading.Thread(target=write, daemon=True)
    t.start()
    return t


def one_error_line(err):
    lines = [x for x in err.splitlines() if x.strip()]
    return len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err


def test_processes_device_pipe_and_fifo(tmp_path):
    from test_io_corpus import GOOD_CSV

    zero = tmp_path / "z.jsonl"
    os.symlink("/dev/zero", zero)
    code, _, err, seconds = run_cli(["analyze", str(zero)])
    assert code == 2 and one_error_line(err) and "is a device" in err and seconds < 60
    # a CSV on a pipe: read once, by the standard library (pyarrow would seek)
    r, w = os.pipe()
    os.write(w, GOOD_CSV)
    os.close(w)
    code, out, err, _ = run_cli(
        ["analyze", "/dev/stdin", "--format", "csv", "--json", "--n-boot", "0", "--interval", "none"], stdin=r
    )
    os.close(r)
    assert code == 0 and json.loads(out)["klfrontier_version"], err
    # a named FIFO .csv is opened once (twice would hang)
    fifo = tmp_path / "f.csv"
    os.mkfifo(fifo)
    writer = feed_fifo(fifo, [GOOD_CSV])
    code, out, err, _ = run_cli(
        ["analyze", str(fifo), "--json", "--n-boot", "0", "--interval", "none"], timeout=60
    )
    writer.join(5)
    assert code == 0 and json.loads(out)["klfrontier_version"], err
    # a FIFO fed zeros without end: refused at its first bytes
    nul = tmp_path / "n.jsonl"
    os.mkfifo(nul)
    feed_fifo(nul, iter(lambda: b"\0" * 65536, None))
    code, _, err, _ = run_cli(["analyze", str(nul)], timeout=60)
    assert code == 2 and one_error_line(err) and "NUL byte" in err


@pytest.mark.slow
def test_a_1gb_line_costs_bounded_memory(tmp_path):
    """A 1 GB line with no newline streamed through a FIFO: one line, exit 2, memory bounded."""
    small = tmp_path / "small.jsonl"
    small.write_bytes(b'{"prompt_id": "a", "reward": 1}\n' * 4)
    _, _, _, base_rss, _ = run_measured(["analyze", str(small), "--json", "--n-boot", "0"])
    fifo = tmp_path / "huge.jsonl"
    os.mkfifo(fifo)
    size, piece = 1 << 30, b"a" * (1 << 20)
    writer = feed_fifo(fifo, (piece for _ in range(size // len(piece))))
    code, _, err, rss, seconds = run_measured(["analyze", str(fifo), "--json"])
    writer.join(10)
    assert code == 2 and one_error_line(err), err
    assert "no valid rows (1 bad rows; first: line 1: record longer than 16777216 bytes" in err
    # the record limit (16 MiB) and a few 4 MiB blocks, never the gigabyte
    assert rss - base_rss < 100 << 20, (rss, base_rss)
    print(f"1 GB line: {seconds:.1f} s, peak RSS {rss / 1e6:.0f} MB (a 4-row file: {base_rss / 1e6:.0f} MB)")
