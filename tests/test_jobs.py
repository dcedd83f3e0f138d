"""The demo job end to end: numbers agree with the API, the report is complete."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import klfrontier as kf
from klfrontier import instances
from klfrontier.cli import app
from klfrontier.jobs import demo_job


@pytest.fixture(scope="module")
def job():
    return demo_job("unigram-afinn", top_n=5000, deltas=(0.1, 0.5), lengths=(10, 100, 1000))


def test_demo_numbers_match_the_api(job):
    ref = instances.load("unigram-afinn", top_n=5000).ref
    s = job.summary
    assert s["instance"]["K"] == 5000
    for row in s["best_of_n"][::5]:
        b = kf.best_of_n(ref, n=row["n"])
        assert row["kl"] == pytest.approx(b.kl, rel=1e-12)
        assert row["reward"] <= row["frontier_reward"] + 1e-12      # nothing beats the frontier
        assert row["kl"] <= row["kl_bound"] + 1e-12
    conv = s["convergence"]["0.1"]
    api = kf.convergence(ref, 0.1, lengths=[10, 100, 1000])
    np.testing.assert_allclose(conv["gap"], [r["gap"] for r in api.rows], rtol=1e-12)
    assert s["scgf"]["max_abs_difference"] < 1e-10
    assert len(job.sections) == 3 and len(job.headline) >= 5


def test_demo_cli_writes_report(tmp_path):
    out = tmp_path / "rep"
    res = CliRunner().invoke(app, ["demo", "--reward", "afinn", "--top-n", "3000", "--delta", "0.2",
                                   "--lengths", "10,100", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "klfrontier demo" in res.output
    for name in ("index.html", "summary.json", "frontier.png", "bon_kl.png", "rate_functions.png",
                 "scgf.png", "convergence.png"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["instance"]["name"] == "unigram-afinn"
    html = (out / "index.html").read_text()
    assert html.count("<img ") == 5 and "Convergence table" in html


def test_demo_json_and_errors():
    r = CliRunner().invoke(app, ["demo", "-i", "bernoulli", "--delta", "0.1", "--lengths", "10", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["instance"]["name"] == "bernoulli"
    bad = CliRunner().invoke(app, ["demo", "--reward", "nope"])
    assert bad.exit_code == 2 and "--reward" in bad.output
