"""The command line's manners: one error boundary, flags, limits before work, reports whole.

Every expected failure is one line on stderr with exit code 2; a bug is one
line naming it with a hint to rerun with ``--debug`` (exit code 1); user data
and paths are printed literally; resource limits and budget limits are refused
before any work with the memory or the limit in words; ``--out`` is locked,
checked and created before the computation, and the report in it is replaced
whole (see docs/cli.md).
"""

import fcntl
import json
import os
import re
import time

import numpy as np
import pytest
from typer.testing import CliRunner

import klfrontier as kf
from klfrontier import cli
from klfrontier.cli import app
from klfrontier.jobs import shown_predictions
from klfrontier.report import MANIFEST, check_report, lock_path

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(res, code=2):
    """Exit ``code``, nothing on stdout, one line on stderr starting 'error:'; returns that line."""
    assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr)
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output
    return lines[0]


# ------------------------------------------------------------------------------ flags and help
def test_version_and_short_help():
    res = run("--version")
    assert res.exit_code == 0 and res.stdout.strip() == f"klfrontier {kf.__version__}"
    for args in (("-h",), ("bon", "-h"), ("analyze", "-h")):
        res = run(*args)
        assert res.exit_code == 0 and "Usage:" in res.stdout, args


def test_json_is_a_flag():
    res = run("bon", "--help")
    line = next(x for x in res.stdout.splitlines() if "--json" in x)
    assert "<bool>" not in line and "Print JSON" in line
    assert "<bool>" not in run("--help").stdout
    msg = one_line_error(run("bon", "--ref", "bernoulli", "--json", "true"))
    assert "unexpected extra argument" in msg and "(true)" in msg


def test_usage_errors_are_one_line():
    msg = one_line_error(run("bon", "--no-such-option"))
    assert "No such option: --no-such-option" in msg and "--help" in msg
    one_line_error(run("frontier", "--points", "many"))


# ------------------------------------------------------------------------------ defaults said aloud
def test_default_reference_is_named_on_stderr():
    res = run("frontier", "--kl", "0.1", "--json")
    assert res.exit_code == 0
    assert json.loads(res.stdout)["kl"] == [0.1]  # stdout stays pure JSON
    note = res.stderr.strip().splitlines()
    assert len(note) == 1 and "no --ref given" in note[0] and "'three-letter'" in note[0]
    res = run("frontier", "--ref", "bernoulli", "--kl", "0.1", "--json")
    assert res.exit_code == 0 and res.stderr == ""


def test_demo_without_out_writes_the_default_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = run("demo", "-i", "bernoulli", "--delta", "0.1", "--lengths", "10")
    assert res.exit_code == 0, res.output
    index = tmp_path / "out" / "demo" / "index.html"
    assert f"report: {os.path.realpath(index)}" in res.stdout.replace("\n", "")
    assert check_report(index.parent)["files"]["index.html"]["bytes"] == index.stat().st_size
    # with --json and no --out: the JSON only, no folder written
    res = run("demo", "-i", "three-letter", "--delta", "0.1", "--lengths", "10", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["instance"]["name"] == "three-letter"
    assert check_report(index.parent)["title"] == "klfrontier demo — bernoulli"


# ------------------------------------------------------------------------------ refused before any work
def test_top_n_and_delta_limits_in_words():
    t0 = time.perf_counter()
    msg = one_line_error(run("demo", "--top-n", "5", "--json"))
    assert "5 most frequent words all have the same reward" in msg and "--top-n" in msg
    msg = one_line_error(run("demo", "--delta", "20", "--json"))
    m = re.search(r"between 0 and ([0-9.]+) nats", msg)
    from klfrontier.instances import load

    assert m and float(m.group(1)) == pytest.approx(load("unigram-vader").ref.kl_max, rel=1e-3)
    assert "highest-reward" in msg and "p(A)" not in msg and " A " not in msg  # words, not "A"
    msg = one_line_error(run("convergence", "--ref", "bernoulli", "--delta", "0.1,2"))
    assert "--delta 2:" in msg and "1.204 nats" in msg
    assert time.perf_counter() - t0 < 30  # no frontier, no BoN, no FFT ran


def test_empty_and_zero_counts_name_the_option(tmp_path):
    assert "--n: give at least one number" in one_line_error(run("bon", "--ref", "bernoulli", "--n", ""))
    assert "--kl" in one_line_error(run("frontier", "--ref", "bernoulli", "--kl", " , "))
    msg = one_line_error(run("samples", tmp_path / "s.jsonl", "--n", "0"))
    assert msg.startswith("error: --n must be a positive integer") and "n_samples" not in msg
    assert not (tmp_path / "s.jsonl").exists()
    assert "--prompts" in one_line_error(run("samples", tmp_path / "s.jsonl", "--prompts", "-1"))
    assert "--n must be positive integers" in one_line_error(
        run("analyze", tmp_path / "x.jsonl", "--n", "1,inf")
    )


@pytest.mark.parametrize(
    "args, needle, memory",
    [
        (
            ("analyze", "nonexistent.jsonl", "--n-boot", "1000000000"),
            "--n-boot 1,000,000,000",
            "8 GB per statistic",
        ),
        (
            ("frontier", "--ref", "bernoulli", "--points", "1000000000"),
            "--points: 1,000,000,000 points",
            "1 TB",
        ),
        (("bon", "--ref", "bernoulli", "--n", ",".join(["2"] * 20_001)), "--n: 20,001 values", "20 MB"),
        (
            ("samples", "s.jsonl", "--prompts", "1000000", "--n", "1000000"),
            "--prompts × --n: 1,000,000,000,000 rows",
            "430 TB",
        ),
    ],
)
def test_resource_limits_state_the_memory(args, needle, memory):
    msg = one_line_error(run(*args))
    assert needle in msg and memory in msg and "the limit is" in msg


def test_lengths_past_double_precision_are_refused():
    msg = one_line_error(run("convergence", "--ref", "bernoulli", "--lengths", "10,1e13"))
    assert "--lengths" in msg and "1e+12" in msg
    assert "positive integers" in one_line_error(
        run("convergence", "--ref", "bernoulli", "--lengths", "10,inf")
    )


# ------------------------------------------------------------------------------ second-order predictions
def _oracle_valid(m, delta, lam, sigma2, span):
    """docs/second_order.md §5, written out again: mδ ≥ 1, 2π m λ²σ² ≥ e², m σ²/h² ≥ 1."""
    ok = m * delta >= 1 and np.log(2 * np.pi * m * lam * lam * sigma2) >= 2
    return ok and (span is None or m * sigma2 >= span * span)


@pytest.mark.parametrize(
    "rewards, probs, delta",
    [
        ([0.0, 1.0, 2**0.5], [0.5, 0.3, 0.2], 0.1),  # non-lattice (theory §6)
        ([0.0, 1.0], [0.7, 0.3], 1.2),  # lattice near saturation (table G): σ² tiny
        ([0.0, 1.0, 2.0], [0.5, 0.3, 0.2], 0.1),  # lattice
    ],
)
def test_predictions_shown_only_where_they_hold(rewards, probs, delta):
    ref = kf.Reference(rewards, probs=probs)
    lengths = [1, 2, 5, 10, 30, 100, 400, 1000]
    tab = kf.convergence(ref, delta, lengths=lengths)
    raw = [dict(r) for r in tab.rows]
    eq = kf.equivalence(ref, delta)
    rows = shown_predictions(tab, eq.sigma2)
    span = None if tab.lattice is None else tab.lattice[1]
    for r0, r in zip(raw, rows):
        valid = _oracle_valid(r["m"], delta, eq.lam, eq.sigma2, span)
        assert r["prediction_shown"] == valid
        for key, ratio in (
            ("gap_prediction", "gap_ratio"),
            ("kl_to_optimal_prediction", "kl_to_optimal_ratio"),
        ):
            if valid and r0[key] > 0:
                assert r[key] == r0[key] and r[ratio] == r0[ratio]
            else:
                assert np.isnan(r[key]) and np.isnan(r[ratio])
    assert any(
        r0["gap_prediction"] < 0 or r0["kl_to_optimal_prediction"] < 0 for r0 in raw
    )  # the case exists
    assert all(not (r["gap_prediction"] <= 0) for r in rows)  # never shown


def test_convergence_command_blanks_invalid_predictions():
    res = run("convergence", "--lengths", "1,2,100", "--json")
    assert res.exit_code == 0
    t = json.loads(res.stdout)["convergence"][0]
    assert t["gap_prediction"][:2] == [None, None] and t["gap_prediction"][2] > 0
    assert t["prediction_shown"] == [False, False, True] and "m δ ≥ 1" in t["prediction_rule"]
    res = run("convergence", "--lengths", "1,2,100")
    assert "-0.65" not in res.stdout and "−0.65" not in res.stdout
    assert "predictions left blank" in res.stderr


def test_convergence_figure_draws_no_dive():
    import matplotlib

    matplotlib.use("Agg")
    from klfrontier.plots import convergence_figure

    m = np.array([1.0, 2.0, 10.0, 100.0])
    fig = convergence_figure(
        m,
        {
            0.1: {
                "gap": [0.2, 0.19, 0.1, 0.02],
                "gap_pred": [-0.65, -0.1, np.nan, 0.024],
                "kl_opt": [0.07, 0.06, 0.03, 0.009],
                "kl_opt_pred": [-1.5, -1.1, 0.0, 0.008],
            }
        },
    )
    dashed = [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert len(dashed) == 2
    for ln in dashed:
        y = np.asarray(ln.get_ydata(), dtype=float)
        assert np.isnan(y[:2]).all() and (y[np.isfinite(y)] > 0).all()


# ------------------------------------------------------------------------------ the error boundary
def test_unexpected_error_is_one_line_with_debug_hint(monkeypatch):
    def broken(*a, **k):
        raise ZeroDivisionError("boom\nsecond line")

    monkeypatch.setattr(kf, "frontier", broken)
    msg = one_line_error(run("frontier", "--ref", "bernoulli"), code=1)
    assert "unexpected ZeroDivisionError: boom second line" in msg and "--debug" in msg
    res = run("--debug", "frontier", "--ref", "bernoulli")
    assert isinstance(res.exception, ZeroDivisionError)  # the traceback is the user's


def test_expected_os_errors_are_one_line(tmp_path):
    loop = tmp_path / "loop.jsonl"
    os.symlink(loop, loop)
    msg = one_line_error(run("analyze", loop))
    assert "symbolic links" in msg and "no such file" not in msg
    dangling = tmp_path / "dangling.jsonl"
    os.symlink(tmp_path / "gone", dangling)
    assert "symbolic link to a file that does not exist" in one_line_error(run("analyze", dangling))
    assert "is a directory" in one_line_error(run("analyze", tmp_path))


def test_memory_and_recursion_errors_are_expected(monkeypatch):
    for exc, needle in (
        (MemoryError(), "out of memory"),
        (RecursionError("deep"), "nested too deeply"),
        (EOFError("Compressed file ended before the end-of-stream marker was reached"), "end-of-stream"),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "invalid start byte"),
    ):

        def raising(*a, _exc=exc, **k):
            raise _exc

        monkeypatch.setattr(kf, "frontier", raising)
        assert needle in one_line_error(run("frontier", "--ref", "bernoulli"))


@pytest.mark.parametrize("name", ["[/x]", "[bold]b[/bold]", "[link=x]y"])
def test_user_text_is_never_markup(tmp_path, name):
    res = run("frontier", "--ref", tmp_path / f"{name}.csv")
    assert f"{name}.csv: no such file" in one_line_error(res)
    out = tmp_path / f"{name}.jsonl"
    res = run("samples", out, "--prompts", "2", "--n", "2", "--length", "2")
    assert res.exit_code == 0, res.output
    assert str(out) in res.stdout.replace("\n", "")
    bad = tmp_path / f"{name}.csv"
    bad.write_text("reward,prob\n0,0.5\nx,0.5\n")
    assert f"{name}.csv:3:" in one_line_error(run("frontier", "--ref", bad))


# ------------------------------------------------------------------------------ --out: lock, checks, swap
@pytest.fixture
def small_samples(tmp_path):
    path = tmp_path / "s.jsonl"
    res = run("samples", path, "--prompts", "40", "--n", "8", "--length", "4")
    assert res.exit_code == 0, res.output
    return path


def test_out_checked_before_any_work(tmp_path, small_samples):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert "exists and is not a directory" in one_line_error(run("analyze", small_samples, "--out", afile))
    msg = one_line_error(run("analyze", small_samples, "--out", afile / "sub"))
    assert msg.startswith(f"error: --out {afile / 'sub'}: cannot create it")
    assert "holds the current directory" in one_line_error(
        run("analyze", small_samples, "--out", os.getcwd())
    )


def test_second_run_on_a_locked_out_fails_at_once(tmp_path, small_samples):
    out = tmp_path / "rep"
    fd = os.open(lock_path(out), os.O_RDWR | os.O_CREAT)  # another holder of the lock
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        t0 = time.perf_counter()
        msg = one_line_error(run("analyze", small_samples, "--out", out))
        assert "another klfrontier run" in msg and "wait for it" in msg
        assert time.perf_counter() - t0 < 10 and not out.exists()
    finally:
        os.close(fd)
    res = run("analyze", small_samples, "--n-boot", "20", "--out", out)  # the lock is free again
    assert res.exit_code == 0, res.output
    fd = os.open(lock_path(out), os.O_RDWR)  # and released by the command
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_analyze_png_by_default_svg_on_request_no_stale_files(tmp_path, small_samples):
    out = tmp_path / "rep"
    res = run("analyze", small_samples, "--n-boot", "20", "--svg", "--out", out)
    assert res.exit_code == 0, res.output
    first = check_report(out)
    assert {f for f in first["files"] if f.endswith(".svg")} == {"empirical.svg", "frontier.svg"}
    res = run("analyze", small_samples, "--n-boot", "20", "--out", out)
    assert res.exit_code == 0, res.output
    second = check_report(out)
    assert second["run_id"] != first["run_id"]
    assert not list(out.glob("*.svg"))  # the earlier run's SVGs are gone
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert on_disk == set(second["files"]) | {MANIFEST}
    html = (out / "index.html").read_text()
    assert "href='frontier.png'" in html and ".svg" not in html
    assert f"<meta name='klfrontier-run-id' content='{second['run_id']}'>" in html
    assert json.loads((out / "summary.json").read_text())["run_id"] == second["run_id"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".rep.new-")]


def test_messages_are_joined_into_one_line(capsys):
    cli._say_error("first\n  second\n\nthird")
    assert capsys.readouterr().err == "error: first second third\n"
