"""`analyze` on extreme reward scales (no warnings, exact equivariance), its fast kernel paths against
the plain ones, the early stop of the Pareto k-hat fit against the full fit, and no figure left open."""

import sys
import warnings

import numpy as np
import pytest

from klfrontier.empirical import analyze
from klfrontier.empirical import kernels as K
from klfrontier.empirical.analysis import _Prompts, reward_scale

REWARD_UNITS = {"reward", "reward_lo", "reward_hi", "reward_plugin", "reward_debiased", "gain", "beta"}


def _two_prompts(scale):
    rng = np.random.default_rng(1)
    return {"p0": rng.choice([-3, 7], 16) * scale, "p1": rng.choice([-3, 7], 16) * scale}


def _analyze_strict(data, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any RuntimeWarning fails the test
        return analyze(data, **kw)


@pytest.mark.parametrize("scale", [1.0, 1e300, 1e-300])
def test_two_level_rewards_at_any_scale_warn_nothing(scale):
    res = _analyze_strict(_two_prompts(scale), n_values=[1, 2, 4], n_boot=0, interval="none")
    assert np.isfinite(res.frontier.reward).all() and np.isfinite(res.frontier_equal.reward).all()
    assert np.isfinite(res.bon.reward).all() and np.isfinite(res.tilt.reward).all()


@pytest.mark.parametrize("scale", [2.0**997, 2.0**-997, 1e300, 1e-300])
def test_results_are_equivariant_under_reward_scaling(scale):
    """Oracle: r -> s r multiplies rewards (and 1/λ) by s and leaves every KL as it is."""
    rng = np.random.default_rng(4)
    base = {f"q{i}": np.round(rng.normal(size=int(rng.integers(20, 40))), 1) for i in range(12)}
    kw = dict(n_values=[1, 2, 4, 8], kl_values=[0.0, 0.3, 1.0], n_boot=0, interval="t")
    ref = _analyze_strict(base, lam_values=[0.0, 0.5, 2.0], **kw)
    res = _analyze_strict(
        {k: v * scale for k, v in base.items()}, lam_values=[0.0, 0.5 / scale, 2.0 / scale], **kw
    )
    for name, tab in ref.tables().items():
        for col in tab.columns:
            a, b = np.asarray(tab.data[col]), np.asarray(res.tables()[name].data[col])
            if a.dtype.kind != "f":
                np.testing.assert_array_equal(a, b, err_msg=f"{name}.{col}")
                continue
            f = scale if col in REWARD_UNITS else (1.0 / scale if col == "lam" else 1.0)
            np.testing.assert_allclose(b, a * f, rtol=1e-12, atol=0, err_msg=f"{name}.{col}")
    np.testing.assert_allclose(res.per_prompt.mean_reward, ref.per_prompt.mean_reward * scale, rtol=1e-14)
    assert res.info["reward_sd"] == pytest.approx(ref.info["reward_sd"] * scale, rel=1e-14)


def test_reward_scale_is_a_power_of_two_only_outside_the_safe_range():
    assert reward_scale(1.0) == reward_scale(2.0**100) == reward_scale(2.0**-100) == 1.0
    for top in (7e300, 3e-300, 2.0**101, 5e-324):
        s = reward_scale(top)
        assert np.frexp(s)[0] == 0.5 and s <= top < 2 * s  # 2^floor(log2 top)
    assert reward_scale(0.0) == reward_scale(np.inf) == 1.0


# ----------------------------------------------------------------------------- kernel fast paths
@pytest.mark.parametrize("levels", [3, 12, None])
def test_bon_plugin_table_path_equals_the_direct_path(levels):
    """Many rows take the (n+1)^2 table of tie groups; one row at a time takes the direct path."""
    rng = np.random.default_rng(levels or 0)
    n = 24
    r = rng.normal(size=(400, n)) if levels is None else rng.integers(0, levels, size=(400, n)).astype(float)
    r.sort(axis=1)
    gold = rng.normal(size=r.shape)
    ns = np.array([1.0, 2.0, 3.5, 8.0, 24.0])
    assert 4 * (n + 1) ** 2 <= r.size  # the batch is on the table path
    batch = K.bon_plugin(r, ns, gold=gold, jackknife=True)
    for i in range(0, 400, 37):
        one = K.bon_plugin(r[i : i + 1], ns, gold=gold[i : i + 1], jackknife=True)
        for key, v in one.items():
            np.testing.assert_array_equal(batch[key][i : i + 1], v, err_msg=key)


def test_tilt_rows_batched_equals_row_by_row_across_the_cap_shift():
    """Rows with and without the cap shift, and with and without a dominant weight, in one batch or alone."""
    rng = np.random.default_rng(2)
    r = rng.normal(size=(60, 30)) * np.geomspace(1e-3, 10, 60)[:, None]
    lams = np.array([0.0, 1e-3, 0.02, 0.3, 5.0])
    batch = K.tilt_rows(r, lams, jackknife=True, variances=True)
    for i in range(60):
        one = K.tilt_rows(r[i : i + 1], lams, jackknife=True, variances=True)
        for key, v in one.items():
            np.testing.assert_array_equal(batch[key][i : i + 1], v, err_msg=key)


def test_tied_prompts_tilted_on_levels_give_the_numbers_of_their_samples(monkeypatch):
    """Prompts with many ties are tilted on (level, count) pairs: every table as from the samples."""
    import klfrontier.empirical.analysis as A
    from klfrontier.io import SampleSet

    rng = np.random.default_rng(5)
    data = {}
    for i in range(60):
        n = int(rng.integers(8, 80))
        draw = (rng.integers(0, 3, n), np.round(rng.normal(size=n), 1), rng.normal(size=n))[i % 3]
        data[f"q{i}"] = draw.astype(float)
    pr = A._Prompts(SampleSet.from_dict(data), np.array([1, 2]), None)
    on_levels = sum(counts is not None for _, _, counts, _ in pr._tilt_jobs)
    assert 0 < on_levels < len(pr._tilt_jobs)  # both kinds of batch
    kw = dict(n_boot=200, seed=1, lam_values=[0.0, 0.1, 1.0, 5.0, 40.0])
    res = analyze(data, **kw)
    monkeypatch.setattr(A, "_TIE_SHARE", -1.0)  # every prompt sample by sample
    ref = analyze(data, **kw)
    for name, tab in ref.tables().items():
        for col in tab.columns:
            a, b = np.asarray(tab.data[col]), np.asarray(res.tables()[name].data[col])
            if a.dtype.kind != "f":
                np.testing.assert_array_equal(b, a, err_msg=f"{name}.{col}")
            else:
                np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12, err_msg=f"{name}.{col}")


def test_hermite_solve_finds_the_cubic_root_to_rounding():
    """Newton steps inside a bracket against the cubic itself, flat and non-monotone pieces included."""
    from klfrontier.empirical.analysis import _hermite_solve

    rng = np.random.default_rng(6)
    B, H = 300, 12
    u = np.cumsum(rng.uniform(0.2, 1.0, H))
    K = np.cumsum(rng.exponential(size=(B, H)) * (rng.random((B, H)) < 0.8), axis=1)  # flat steps too
    dK = rng.exponential(size=(B, H)) * 2.0  # not K's slope: some cubics overshoot and turn back
    R, dR = rng.normal(size=(B, H)), rng.normal(size=(B, H))
    budgets = np.linspace(-0.5, K.max() + 0.5, 23)
    us, rs = _hermite_solve(u, K, dK, R, dR, budgets)

    def cubic(t, y0, y1, m0, m1):
        return (
            (2 * t**3 - 3 * t**2 + 1) * y0
            + (t**3 - 2 * t**2 + t) * m0
            + (-2 * t**3 + 3 * t**2) * y1
            + (t**3 - t**2) * m1
        )

    Km = np.maximum.accumulate(K, axis=1)
    for b in range(B):
        for i, target in enumerate(budgets):
            j = int(np.sum(Km[b] < target))
            if j == 0:
                assert us[b, i] == -np.inf
                continue
            if j == H:
                assert us[b, i] == np.inf
                continue
            h = u[j] - u[j - 1]
            t = (us[b, i] - u[j - 1]) / h
            assert -1e-12 <= t <= 1 + 1e-12
            k = cubic(t, Km[b, j - 1], Km[b, j], dK[b, j - 1] * h, dK[b, j] * h)
            assert abs(k - target) <= 1e-12 * max(1.0, abs(target)), (b, i)
            r = cubic(t, R[b, j - 1], R[b, j], dR[b, j - 1] * h, dR[b, j] * h)
            assert abs(rs[b, i] - r) <= 1e-12 * max(1.0, abs(r))


def test_khat_early_stop_decides_every_column_as_the_full_fit_does():
    """A column stops fitting k-hat once > 5% of the prompts are bad: its trust is already decided."""
    rng = np.random.default_rng(3)
    P, n = 600, 60
    data = {f"p{i}": (rng.standard_t(2.5, size=n) if i % 4 else rng.normal(size=n)) for i in range(P)}
    from klfrontier.io import SampleSet

    s = SampleSet.from_dict(data)
    pr = _Prompts(s, np.array([1, 2]), None, threads=2)
    lams = np.array([0.0, 0.02, 0.1, 0.3, 1.0, 3.0])
    tl = pr.tilt_at(lams, trust=(1.0, 10.0))
    full = np.full((P, lams.size), np.nan)
    for _n, rows, r, _ in pr.groups:
        full[rows] = K.tilt_khat(r, lams, np.ones((rows.size, lams.size), bool))
    gate = (tl["kl"] <= np.log(pr.n)[:, None] - 1.0) & (tl["ess"] >= 10.0)
    kmax = K.khat_threshold(pr.n)[:, None]

    def trusted(khat):
        return (~(gate & (khat <= kmax))).sum(axis=0) <= 0.05 * P

    stopped = np.isnan(tl["khat"]) & gate
    assert stopped.any()  # the early stop happened somewhere
    np.testing.assert_array_equal(trusted(tl["khat"]), trusted(full))
    done = ~np.isnan(tl["khat"])
    np.testing.assert_array_equal(tl["khat"][done], full[done])  # fitted values are the full fit's


# ----------------------------------------------------------------------------- figures
def test_analyze_without_a_report_leaves_no_figure_open(tmp_path):
    from typer.testing import CliRunner

    from klfrontier.cli import app
    from klfrontier.io import write_samples
    from klfrontier.jobs import analyze_job

    rng = np.random.default_rng(0)
    data = {f"q{i}": rng.normal(size=32) for i in range(8)}
    plt = pytest.importorskip("matplotlib.pyplot")
    plt.close("all")
    analyze(data, n_boot=0)
    job = analyze_job(data, n_boot=0)
    assert plt.get_fignums() == []
    assert all(callable(f) for sec in job.sections for _, f, _ in sec.figures)  # drawn on writing only
    path = tmp_path / "s.jsonl"
    from klfrontier.io import SampleSet

    write_samples(path, SampleSet.from_dict(data))
    out = CliRunner().invoke(app, ["analyze", str(path), "--n-boot", "0"])
    assert out.exit_code == 0, out.output
    out = CliRunner().invoke(app, ["analyze", str(path), "--n-boot", "0", "--out", str(tmp_path / "r")])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "r" / "empirical.png").stat().st_size > 1000
    assert plt.get_fignums() == []


def test_a_job_shown_on_the_console_never_imports_matplotlib():
    import subprocess

    code = (
        "import sys, numpy as np; from klfrontier.jobs import analyze_job; "
        "rng = np.random.default_rng(0); "
        "analyze_job({f'q{i}': rng.normal(size=32) for i in range(8)}, n_boot=0); "
        "print(sorted(m for m in sys.modules if m.startswith('matplotlib')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_frontier_grid_skips_only_nodes_below_every_budget():
    """Nodes whose KL bound lam^2 span^2 / 8 is under half the smallest budget change no solve."""
    from klfrontier.empirical.analysis import _equal_budget, _Frontier
    from klfrontier.io import SampleSet

    rng = np.random.default_rng(5)
    data = {f"p{i}": np.round(rng.normal(size=int(rng.integers(8, 40))) * (1 + i % 3), 1) for i in range(50)}
    pr = _Prompts(SampleSet.from_dict(data), np.array([1, 2]), None, threads=1)
    budgets = np.array([0.0, 0.05, 0.3, 1.0, 2.5])
    full = _Frontier(pr, pr.sd_pool)
    part = _Frontier(pr, pr.sd_pool, kl_min=0.05)
    assert part.skipped > 0 and full.skipped == 0
    # the bound holds where nodes were skipped (the oracle for skipping them)
    assert (full.K[:, : part.skipped] < 0.5 * 0.05).all()
    weights = np.vstack([np.ones(pr.P), rng.multinomial(pr.P, np.full(pr.P, 1 / pr.P), size=30)]).astype(
        float
    )
    for a, b in zip(full.solve(weights, budgets), part.solve(weights, budgets)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(_equal_budget(pr, full, budgets), _equal_budget(pr, part, budgets))


def test_preload_imports_matplotlib_in_the_background_and_drawing_waits_for_it():
    import subprocess

    code = (
        "import sys, threading; from klfrontier import plots; plots.preload(); "
        "t = plots._PRELOAD[0]; fig = plots.empirical_figure([1, 2], [0.0, 0.5], [0.0, 0.6]); "
        "print(t.name, t.is_alive(), type(fig).__name__, 'matplotlib.pyplot' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["klfrontier-import-matplotlib", "False", "Figure", "False"], out.stdout
