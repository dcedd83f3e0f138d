"""`klfrontier analyze` end to end: sample files in, report, tables and strict JSON out."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from klfrontier.cli import app
from klfrontier.empirical import analyze
from klfrontier.instances.samples import unigram_samples
from klfrontier.io import SampleSet, read_samples, write_samples
from klfrontier.jobs import analyze_job

runner = CliRunner()


def strict_json(text):
    def bad(token):
        raise AssertionError(f"non-strict JSON token {token}")

    return json.loads(text, parse_constant=bad)


@pytest.fixture(scope="module")
def sample_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("s") / "samples.jsonl"
    write_samples(path, unigram_samples("unigram-afinn", n_prompts=6, n_samples=32, length=8, top_n=5000))
    return path


@pytest.fixture(scope="module")
def policy_files(tmp_path_factory):
    """Base samples with a gold column and two checkpoints of a tilted 'policy' (exact log-probs)."""
    from klfrontier import Reference, tilted

    d = tmp_path_factory.mktemp("p")
    rng = np.random.default_rng(0)
    ref = Reference([0.0, 1.0, 2.0, 4.0], probs=[0.5, 0.25, 0.15, 0.1])
    gold_of = np.array([0.0, 1.5, 1.0, -1.0])  # the proxy's best level is bad gold
    prompts = [f"p[{i}]" for i in range(12)]  # brackets: data is never markup
    base = {p: rng.choice(4, size=64, p=[0.5, 0.25, 0.15, 0.1]) for p in prompts}
    write_samples(
        d / "base.csv",
        SampleSet.from_dict(
            {p: {"reward": ref.level_values[k], "gold": gold_of[k]} for p, k in base.items()}
        ),
    )
    files = {}
    for step, lam in (("step100", 0.4), ("step200", 1.0)):
        pol = tilted(ref, lam=lam)
        q = np.exp(pol.level_logprobs)
        out = {}
        for p in prompts:
            k = rng.choice(4, size=48, p=q / q.sum())
            lr = pol.level_logprobs[k] - ref.level_logq[k]
            out[p] = {
                "reward": ref.level_values[k],
                "gold": gold_of[k],
                "logprob": ref.level_logq[k] + lr,
                "ref_logprob": ref.level_logq[k],
            }
        files[step] = d / f"{step}.jsonl"
        write_samples(files[step], SampleSet.from_dict(out))
    return d / "base.csv", files


def test_job_matches_the_api(sample_file):
    data = read_samples(sample_file)
    job = analyze_job(data, n_values=[1, 2, 4], n_boot=50, seed=1)
    direct = analyze(data, n_values=[1, 2, 4], n_boot=50, seed=1)
    got = job.summary["analysis"]["bon"]["reward"]
    np.testing.assert_allclose(got, direct.bon.reward, rtol=1e-12)
    assert [s.heading[:3] for s in job.sections] == ["1 ·", "2 ·", "3 ·", "4 ·", "7 ·"]
    strict_json(json.dumps(job.summary, allow_nan=False, default=str))


def test_cli_analyze_report_tables_and_json(sample_file, tmp_path):
    out = tmp_path / "rep"
    res = runner.invoke(
        app, ["analyze", str(sample_file), "--n", "1,2,4,8", "--n-boot", "50", "--svg", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert "best-of-2 reward" in res.output and "nan" not in res.output.lower()
    for name in (
        "index.html",
        "summary.json",
        "empirical.png",
        "empirical.svg",
        "frontier.png",
        "frontier.svg",
        "per_prompt.parquet",
    ):
        assert (out / name).stat().st_size > 0, name
    assert len(list((out / "tables").glob("*.csv"))) >= 4
    summary = strict_json((out / "summary.json").read_text())
    prov = summary["provenance"]
    assert prov["files"][0]["sha256"] and prov["files"][0]["bytes"] == sample_file.stat().st_size
    assert prov["seed"] == 0 and "analyze" in prov["command"]
    assert summary["analysis"]["methods"]["bon"].startswith("Student-t over 6 prompts")
    js = runner.invoke(app, ["analyze", str(sample_file), "--n", "2", "--n-boot", "0", "--json"])
    assert js.exit_code == 0, js.output
    assert strict_json(js.output)["analysis"]["info"]["prompts"] == 6


def test_cli_analyze_policies_and_gold(policy_files, tmp_path):
    base, files = policy_files
    out = tmp_path / "rep"
    args = [
        "analyze",
        str(base),
        "--gold-col",
        "gold",
        "--n",
        "1,2,4,8",
        "--n-boot",
        "200",
        "--out",
        str(out),
    ]
    for name, f in files.items():
        args += ["--policy", f"{name}={f}"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "policy step200: KL to the optimum" in res.output
    summary = strict_json((out / "summary.json").read_text())
    pols = summary["analysis"]["policies"]
    assert set(pols) == {"step100", "step200"}
    assert pols["step200"]["kl"][0] > pols["step100"]["kl"][0]
    assert abs(pols["step200"]["kl_to_optimal"][0]) < 0.1  # tilted policies sit on the optimum
    bon = summary["analysis"]["bon"]
    assert len(bon["gold"]) == 4 and bon["gold"][3] < bon["gold"][1]  # the gold reward falls
    html = (out / "index.html").read_text()
    assert "Proxy versus gold" in html and "Aligned policies" in html and "p[3]" in html
    assert (out / "overoptimization.png").stat().st_size > 0


def test_cli_analyze_bad_rows_custom_columns_and_errors(tmp_path):
    f = tmp_path / "s.csv"
    f.write_text("q,score\na,1\na,2\nb,x\nb,3\nb,4\nc,5\n")
    res = runner.invoke(
        app, ["analyze", str(f), "--prompt-col", "q", "--reward-col", "score", "--n-boot", "0", "--json"]
    )
    assert res.exit_code == 0, res.output
    data = strict_json(res.output)
    assert data["input"]["n_bad_rows"] == 1 and data["input"]["bad_rows"][0][1] == 4
    assert data["analysis"]["n_excluded_prompts"] == 1  # 'c' has one sample
    strict = runner.invoke(app, ["analyze", str(f), "--prompt-col", "q", "--reward-col", "score", "--strict"])
    assert strict.exit_code == 2 and ":4:" in strict.output and "Traceback" not in strict.output
    for args, needle in [
        ([str(tmp_path / "nope.jsonl")], "no such file"),
        ([str(tmp_path)], "is a directory"),
        ([str(f), "--out", str(f)], "not a directory"),
        ([str(f), "--n", ""], "--n"),
        ([str(f), "--n-boot", "1000000000"], "--n-boot"),
        ([str(f), "--policy", "nameonly"], "NAME=FILE"),
    ]:
        r = runner.invoke(app, ["analyze"] + args)
        assert r.exit_code == 2, (args, r.output)
        assert needle in r.output and "Traceback" not in r.output, (args, r.output)
        assert not r.output.startswith("\n")


def test_cli_markup_in_data_is_literal(tmp_path):
    f = tmp_path / "run[data].jsonl"
    f.write_text(
        '{"prompt_id": "[/red]", "reward": 1}\n{"prompt_id": "[/red]", "reward": "[bold]x"}\n'
        '{"prompt_id": "[/red]", "reward": 2}\n'
    )
    r = runner.invoke(app, ["analyze", str(f), "--n", "1", "--n-boot", "0"])
    assert r.exit_code == 0, r.output
    assert "run[data].jsonl" in r.output and "[bold]x" in r.output


def test_cli_samples_command(tmp_path):
    out = tmp_path / "x.csv"
    res = runner.invoke(app, ["samples", str(out), "-i", "three-letter", "--prompts", "2", "--n", "5"])
    assert res.exit_code == 0, res.output
    assert read_samples(out).n_samples == 10


def test_unigram_samples_are_consistent():
    s = unigram_samples("three-letter", n_prompts=3, n_samples=50, length=5, seed=3)
    assert s.n_prompts == 3 and s.n_samples == 150 and s.has_logprobs
    r = np.concatenate(list(s.groups.values()))
    assert r.min() >= 0 and r.max() <= 5 * np.sqrt(2) + 1e-9
    again = unigram_samples("three-letter", n_prompts=3, n_samples=50, length=5, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(again.rewards, s.rewards))
    with pytest.raises(ValueError, match="n_samples"):
        unigram_samples("three-letter", n_samples=0)
