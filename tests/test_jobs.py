"""The demo job end to end: numbers agree with the API, the report is complete."""

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

import klfrontier as kf
from klfrontier import instances
from klfrontier.cli import app
from klfrontier.jobs import demo_job
from klfrontier.report import to_jsonable


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
        assert row["reward"] <= row["frontier_reward"] + 1e-12  # nothing beats the frontier
        assert row["kl"] <= row["kl_bound"] + 1e-12
    conv = s["convergence"]["0.1"]
    api = kf.convergence(ref, 0.1, lengths=[10, 100, 1000])
    np.testing.assert_allclose(conv["gap"], [r["gap"] for r in api.rows], rtol=1e-12)
    assert s["scgf"]["max_abs_difference"] < 1e-10
    assert len(job.sections) == 4 and len(job.headline) >= 7


def test_demo_cli_writes_report(tmp_path):
    out = tmp_path / "rep"
    res = CliRunner().invoke(
        app,
        [
            "demo",
            "--reward",
            "afinn",
            "--top-n",
            "3000",
            "--delta",
            "0.2",
            "--lengths",
            "10,100",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "klfrontier demo" in res.output
    for name in (
        "index.html",
        "summary.json",
        "frontier.png",
        "bon_kl.png",
        "rate_functions.png",
        "scgf.png",
        "convergence.png",
        "proxy_gold.png",
    ):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["instance"]["name"] == "unigram-afinn"
    assert summary["proxy_gold"]["instance"] == "unigram-vader-afinn"
    html = (out / "index.html").read_text()
    assert html.count("<img ") == 6 and "Convergence table" in html
    assert "Proxy versus gold (VADER selects, AFINN judges)" in html


def test_demo_json_and_errors():
    r = CliRunner().invoke(app, ["demo", "-i", "bernoulli", "--delta", "0.1", "--lengths", "10", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["instance"]["name"] == "bernoulli"
    assert "proxy_gold" not in json.loads(r.output)  # a built-in instance has no gold
    bad = CliRunner().invoke(app, ["demo", "--reward", "nope"])
    assert bad.exit_code == 2 and "--reward" in bad.output


# ---------------------------------------------------------------- proxy versus gold (section 4)
def _outcome_gold(pol, gold):
    """``sum_y pi(y) g(y)`` over the outcomes: the definition, not the level formula."""
    pi = pol.probs
    return math.fsum((pi * gold).tolist()) / math.fsum(pi.tolist())


def test_demo_proxy_gold_numbers_match_the_api(job):
    s = job.summary["proxy_gold"]
    assert (s["instance"], s["proxy"], s["gold"]) == ("unigram-vader-afinn", "VADER", "AFINN")
    ref = instances.unigram_proxy_gold(top_n=5000).ref
    gold = instances.load("unigram-afinn", top_n=5000).ref.rewards  # AFINN, word by word
    t = s["tilted"]
    assert t["kl_budget"][0] == 0.0 and t["gold"][0] == pytest.approx(s["mean_gold_reference"], rel=1e-12)
    for d, kl, proxy, g in list(zip(t["kl_budget"], t["kl"], t["proxy"], t["gold"]))[::4]:
        pol = kf.tilted(ref, kl=d)
        assert kl == pytest.approx(pol.kl, rel=1e-12, abs=1e-15)
        assert proxy == pytest.approx(pol.reward, rel=1e-12)
        assert g == pytest.approx(_outcome_gold(pol, gold), rel=1e-10, abs=1e-14)
    assert t["kl"][-1] == pytest.approx(ref.kl_max, rel=1e-12)  # the grid ends at saturation
    b = s["best_of_n"]
    assert b["n"][0] == 1.0 and b["gold"][0] == pytest.approx(s["mean_gold_reference"], rel=1e-12)
    for n, g in list(zip(b["n"], b["gold"]))[::5]:
        assert g == pytest.approx(_outcome_gold(kf.best_of_n(ref, n=n), gold), rel=1e-10, abs=1e-14)
    soft = s["soft_best_of_n"]
    n, g = soft["n"][3], soft["gold"][3]
    assert g == pytest.approx(_outcome_gold(kf.soft_best_of_n(ref, n=n, lam=soft["lam"]), gold), rel=1e-10)
    assert max(soft["kl"]) <= soft["kl_limit"] * (1 + 1e-9)
    for series in (t, b, soft):
        # nothing beats the gold frontier (tilting by gold) at its own KL; proxy is monotone in KL
        assert all(gg <= fr + 1e-12 for gg, fr in zip(series["gold"], series["gold_frontier"]))
        order = np.argsort(series["kl"])
        assert np.all(np.diff(np.asarray(series["proxy"])[order]) >= -1e-12)
        assert series["peak"]["gold"] == max(series["gold"])
    json.dumps(to_jsonable(job.summary), allow_nan=False)  # strict JSON, every number


def test_demo_proxy_gold_section_says_what_the_numbers_show(job):
    sec = job.sections[3]
    assert sec.heading == "4 · Proxy versus gold (VADER selects, AFINN judges)"
    peak = job.summary["proxy_gold"]["tilted"]["peak"]
    assert f"rises to {peak['gold']:.3f} at KL ≈ {peak['kl']:.2f} nats" in sec.text
    assert [f[0] for f in sec.figures] == ["proxy_gold"]
    ((caption, cols, rows),) = sec.tables
    assert len(rows) == sum(
        len(job.summary["proxy_gold"][k]["kl"]) for k in ("tilted", "best_of_n", "soft_best_of_n")
    )
    assert any(q.startswith("AFINN peak, tilted by VADER") for q, _, _ in job.headline)


def test_demo_proxy_gold_over_optimises():
    """The 50k-word section: the gold reward peaks, then falls to ~0 at saturation."""
    from klfrontier.jobs import proxy_gold_section

    inst = instances.unigram_proxy_gold()
    s = proxy_gold_section(inst).summary["proxy_gold"]
    for key in ("tilted", "best_of_n"):
        g, peak = s[key]["gold"], s[key]["peak"]
        assert 2.0 < peak["gold"] < 3.5 and 3.0 < peak["kl"] < 8.0  # measured 2.67 near 5.3 nats
        assert g[-1] < 1e-3 and s[key]["kl"][-1] == pytest.approx(inst.ref.kl_max, rel=1e-6)
    assert s["gold_on_argmax"] == 0.0  # 'magnificently', 'aml': no AFINN entry


def test_checkpoint_paths_order_by_the_numbers_values():
    """Names differing only in numbers form one run, ordered by value (0.25 before 0.5, 20 before 100)."""
    from klfrontier.jobs import _checkpoint_paths

    runs = _checkpoint_paths(["lam=0.5", "lam=0.25", "lam=1", "step100", "step20", "base", "lr3e-5"])
    assert runs == [["lam=0.25", "lam=0.5", "lam=1"], ["step20", "step100"]]
