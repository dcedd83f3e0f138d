"""`klfrontier analyze` end to end: sample files in, report and JSON out."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from klfrontier.cli import app
from klfrontier.empirical import analyze_samples
from klfrontier.instances.samples import unigram_samples
from klfrontier.io import read_samples, write_samples
from klfrontier.jobs import analyze_job

runner = CliRunner()


@pytest.fixture(scope="module")
def sample_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("s") / "samples.jsonl"
    write_samples(path, unigram_samples("unigram-afinn", n_prompts=6, n_samples=32, length=8, top_n=5000))
    return path


def test_unigram_samples_are_consistent():
    s = unigram_samples("three-letter", n_prompts=3, n_samples=50, length=5, seed=3)
    assert s.n_prompts == 3 and s.n_samples == 150 and s.has_logprobs
    # rewards are sums of 5 per-token rewards in {0, 1, sqrt 2}
    r = np.concatenate(list(s.groups.values()))
    assert r.min() >= 0 and r.max() <= 5 * np.sqrt(2) + 1e-9
    again = unigram_samples("three-letter", n_prompts=3, n_samples=50, length=5, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(again.rewards, s.rewards))   # seeded
    with pytest.raises(ValueError, match="n_samples"):
        unigram_samples("three-letter", n_samples=0)


def test_job_matches_analyze_samples(sample_file):
    data = read_samples(sample_file)
    job = analyze_job(data, n_values=[1, 2, 4], n_boot=20, seed=1)
    direct = analyze_samples(data, n_values=[1, 2, 4], n_boot=20, rng=1)
    got = job.summary["analysis"]["aggregate"]["bon_reward_unbiased"]["value"]
    np.testing.assert_allclose(got, direct.aggregate.bon_reward_unbiased.value, rtol=1e-12)
    assert job.summary["input"]["n_samples"] == 6 * 32
    assert [s.heading[:3] for s in job.sections] == ["1 ·", "2 ·", "3 ·"]


def test_cli_analyze_report_and_json(sample_file, tmp_path):
    out = tmp_path / "rep"
    res = runner.invoke(app, ["analyze", str(sample_file), "--n", "1,2,4,8", "--n-boot", "20", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "best-of-2 reward" in res.output
    for name in ("index.html", "summary.json", "empirical.png", "frontier.png"):
        assert (out / name).stat().st_size > 0
    js = runner.invoke(app, ["analyze", str(sample_file), "--n", "2", "--n-boot", "0", "--json"])
    assert js.exit_code == 0, js.output
    assert json.loads(js.output)["input"]["n_prompts"] == 6


def test_cli_analyze_bad_rows_and_custom_columns(tmp_path):
    f = tmp_path / "s.csv"
    f.write_text("q,score\na,1\na,2\nb,x\nb,3\nb,4\n")
    res = runner.invoke(app, ["analyze", str(f), "--prompt-col", "q", "--reward-col", "score",
                              "--n-boot", "0", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["input"]["n_bad_rows"] == 1 and data["input"]["bad_rows"][0][1] == 4
    strict = runner.invoke(app, ["analyze", str(f), "--prompt-col", "q", "--reward-col", "score", "--strict"])
    assert strict.exit_code == 2 and ":4:" in strict.output and "Traceback" not in strict.output
    missing = runner.invoke(app, ["analyze", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2 and "no such file" in missing.output


def test_cli_samples_command(tmp_path):
    out = tmp_path / "x.csv"
    res = runner.invoke(app, ["samples", str(out), "-i", "three-letter", "--prompts", "2", "--n", "5"])
    assert res.exit_code == 0, res.output
    assert read_samples(out).n_samples == 10
