"""The command line: thin, and fails with one clear line on bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

import klfrontier as kf
from klfrontier.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, list(args))


def test_help_lists_commands():
    res = run("--help")
    assert res.exit_code == 0
    for cmd in ("frontier", "bon", "soft-bon", "demo"):
        assert cmd in res.output


def test_console_script_help():
    out = subprocess.run(
        [sys.executable, "-m", "klfrontier.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "frontier" in out.stdout


def test_frontier_json_matches_api():
    res = run("frontier", "--rewards", "0,1,2", "--probs", "0.5,0.3,0.2", "--kl", "0,0.1,5", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    ref = kf.Reference([0, 1, 2], probs=[0.5, 0.3, 0.2])
    np.testing.assert_allclose(data["reward"], kf.frontier(ref, [0, 0.1, 5]).reward, rtol=1e-12)
    assert data["saturated"] == [False, False, True]


def test_bon_table_and_json():
    res = run("bon", "--ref", "bernoulli", "--n", "1,4", "--json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)["best_of_n"]
    ref = kf.Reference([0, 1], probs=[0.7, 0.3])
    assert rows[1]["kl"] == pytest.approx(kf.best_of_n(ref, n=4).kl, rel=1e-12)
    assert rows[0]["kl"] == 0.0
    res = run("bon", "--ref", "bernoulli", "--n", "2")
    assert res.exit_code == 0 and "Best-of-N" in res.output


def test_reference_from_csv_and_json(tmp_path):
    csv = tmp_path / "ref.csv"
    csv.write_text("reward,prob\n0,0.5\n1,0.5\n")
    res = run("frontier", "--ref", str(csv), "--kl", "0.1", "--json")
    assert res.exit_code == 0, res.output
    js = tmp_path / "ref.json"
    js.write_text(json.dumps({"reward": [0, 1], "prob": [0.5, 0.5]}))
    res2 = run("frontier", "--ref", str(js), "--kl", "0.1", "--json")
    assert json.loads(res2.output)["reward"] == json.loads(res.output)["reward"]


@pytest.mark.parametrize(
    "args, needle",
    [
        (("frontier", "--rewards", "0,1", "--probs", "0.5,0.6"), "not 1; pass --normalize to rescale"),
        (("frontier", "--rewards", "0,nan", "--probs", "0.5,0.5"), "rewards"),
        (("frontier", "--rewards", "0,1", "--probs", "0.5"), "lengths"),
        (("frontier", "--rewards", "0,1"), "go together"),
        (("frontier", "--ref", "nosuch"), "unknown reference"),
        (("frontier", "--ref", "missing.csv"), "no such file"),
        (("frontier", "--ref", "bernoulli", "--kl", "-1"), "kl"),
        (("bon", "--ref", "bernoulli", "--n", "0.5"), "n must be >= 1"),
        (("bon", "--ref", "bernoulli", "--n", "abc"), "--n"),
    ],
)
def test_bad_input_one_line_exit_2(args, needle):
    res = run(*args)
    assert res.exit_code == 2
    assert "Traceback" not in res.output
    assert needle in res.output


def test_bad_csv_row(tmp_path):
    f = tmp_path / "bad.csv"
    f.write_text("reward,prob\n0,0.5\nx,0.5\n")
    res = run("frontier", "--ref", str(f))
    assert res.exit_code == 2 and ":3:" in res.output


def test_convergence_command_matches_api():
    res = run("convergence", "--ref", "bernoulli", "--delta", "0.1", "--lengths", "10,100,1000", "--json")
    assert res.exit_code == 0, res.output
    tab = json.loads(res.output)["convergence"][0]
    ref = kf.Reference([0, 1], probs=[0.7, 0.3])
    api = kf.convergence(ref, 0.1, lengths=[10, 100, 1000])
    np.testing.assert_allclose(tab["gap"], [r["gap"] for r in api.rows], rtol=1e-12)
    np.testing.assert_allclose(tab["kl_to_optimal"], [r["kl_to_optimal"] for r in api.rows], rtol=1e-12)
    table = run("convergence", "--ref", "three-letter", "--lengths", "10,100")
    assert table.exit_code == 0 and "R*(δ) = 0.850786033" in table.output


@pytest.mark.parametrize(
    "args, needle",
    [
        (("convergence", "--ref", "bernoulli", "--lengths", "10,2.5"), "--lengths"),
        (("convergence", "--ref", "bernoulli", "--delta", "5"), "delta"),
    ],
)
def test_convergence_bad_input(args, needle):
    res = run(*args)
    assert res.exit_code == 2 and needle in res.output


def test_instances_command():
    res = run("instances")
    assert res.exit_code == 0 and "unigram-vader" in res.output


def test_reference_file_variants(tmp_path):
    bare = tmp_path / "bare.csv"
    bare.write_text("0,0.5\n1,0.5\n")
    named = tmp_path / "named.csv"
    named.write_text("score,p\n0,0.5\n1,0.5\n")
    pairs = tmp_path / "pairs.json"
    pairs.write_text("[[0, 0.5], [1, 0.5]]")
    outs = [
        run("frontier", "--ref", str(bare), "--kl", "0.1", "--json"),
        run(
            "frontier",
            "--ref",
            str(named),
            "--reward-col",
            "score",
            "--prob-col",
            "p",
            "--kl",
            "0.1",
            "--json",
        ),
        run("frontier", "--ref", str(pairs), "--kl", "0.1", "--json"),
    ]
    assert all(o.exit_code == 0 for o in outs), [o.output for o in outs]
    assert len({json.dumps(json.loads(o.output)["reward"]) for o in outs}) == 1
    three = tmp_path / "three.csv"
    three.write_text("0,0.5,1\n1,0.5,1\n")
    bad = run("frontier", "--ref", str(three))
    assert bad.exit_code == 2 and "two columns" in bad.output
