"""The fast paths behind benchmarks/bench_single.py agree with the plain ones.

* ``frontier`` with many budgets takes ``_engine.solve_kl_many`` (one exact pass per
  budget, statistics by Taylor updates); the reference is the per-budget
  iteration ``_engine.solve_kl_iter`` plus an exact ``tilt_stats`` evaluation.
* ``bon_curve`` takes the blocked kernel ``_bon_sums_blocked`` for
  ``0.1 <= log N <= 600``; the reference is the per-N log-space law
  ``_bon_kernel.level_logd`` with the ``q h(t)`` KL terms.
* ``Reference._build_levels`` against ``np.unique``.
"""

from __future__ import annotations

import mpmath as mp
import numpy as np
import pytest

import klfrontier._bon_kernel as bon_kernel
import klfrontier._engine as engine
import klfrontier.bon as bon_mod
import klfrontier.tilt as tilt_mod
from klfrontier import Reference, bon_curve, frontier
from klfrontier._logspace import kl_terms
from klfrontier.policy import level_win_rate


def _refs():
    rng = np.random.default_rng(20240401)
    out = []
    for k in range(12):
        K = int(rng.integers(3, 4000))
        kind = k % 4
        if kind == 0:
            r = rng.standard_normal(K)
        elif kind == 1:
            r = rng.integers(0, 6, K).astype(float)  # few levels, heavy ties
        elif kind == 2:
            r = np.round(rng.standard_normal(K), 1)  # lattice
        else:
            r = 1e-8 * rng.standard_normal(K)  # tiny reward scale
        p = rng.exponential(size=K) ** rng.choice([1, 4, 12])  # up to very skewed
        p /= p.sum()
        ref = Reference(r, probs=p)
        if not ref.is_constant:
            out.append(ref)
    return out


REFS = _refs()


@pytest.mark.parametrize("ref", REFS, ids=lambda r: f"K{r.size}-L{r.n_levels}")
def test_frontier_many_budgets_matches_per_budget_solver(ref):
    budgets = np.geomspace(1e-4, 0.999 * ref.kl_max, 60)
    law = ref.level_law
    lam_u, mean_u, kl_u, ok = engine.solve_kl_many(lambda lm: engine.stats4(law, lm), budgets, law.sd)
    assert ok.mean() > 0.8  # the fast path really is exercised
    fr = frontier(ref, budgets)
    lam_ref = engine.solve_kl_iter(lambda lm: engine.tilt_stats(law, lm), budgets, law.sd)
    st = tilt_mod.tilt_stats(ref, lam_ref)
    np.testing.assert_allclose(ref.lam_to_u(fr.lam), lam_ref, rtol=1e-11)
    np.testing.assert_allclose(fr.kl_used, budgets, rtol=1e-12)
    scale = ref.reward_scale
    assert np.max(np.abs(fr.reward - ref.to_reward(st.mean))) <= 1e-12 * scale


def _bon_exact(ref, log_n):
    lnl_f, lnl_c = ref.bon_tail_logs
    lev = bon_kernel.level_logd(ref.level_logq, lnl_f, lnl_c, log_n)
    kl = float(np.sum(kl_terms(lev, ref.level_logq)))
    return kl, ref.to_reward(np.exp(lev) @ ref.level_u), level_win_rate(ref, lev)


@pytest.mark.parametrize("ref", REFS, ids=lambda r: f"K{r.size}-L{r.n_levels}")
def test_bon_curve_blocked_matches_per_n_law(ref, monkeypatch):
    calls = []
    kernel = bon_mod._bon_sums_blocked

    def spy(*args):
        out = kernel(*args)
        calls.append(out)
        return out

    monkeypatch.setattr(bon_mod, "_bon_sums_blocked", spy)
    log_n = np.log([1.0, 1.2, 2.0, 3.7, 10.0, 100.0, 1e3, 1e5, 1e8])
    curve = bon_curve(ref, log_n=log_n)
    assert calls  # the blocked kernel ran
    for i, x in enumerate(log_n):
        kl, rw, win = _bon_exact(ref, x)
        assert curve.kl[i] == pytest.approx(kl, rel=1e-11, abs=1e-300)
        assert abs(curve.reward[i] - rw) <= 1e-13 * ref.reward_scale
        assert curve.win_rate[i] == pytest.approx(win, rel=1e-13)


def test_bon_curve_large_instance_uses_blocked_kernel():
    rng = np.random.default_rng(7)
    K = 200_000
    r = rng.standard_normal(K)
    tied = rng.random(K) < 0.1
    r[tied] = np.round(r[tied], 2)
    ref = Reference(r, probs=rng.exponential(size=K), normalize=True)
    ns = np.geomspace(1, 1e6, 25)
    curve = bon_curve(ref, n=ns)
    for i in (0, 3, 12, 24):
        kl, rw, win = _bon_exact(ref, np.log(ns[i]))
        assert curve.kl[i] == pytest.approx(kl, rel=1e-11, abs=1e-300)
        assert abs(curve.reward[i] - rw) <= 1e-13 * ref.reward_scale
        assert curve.win_rate[i] == pytest.approx(win, rel=1e-13)


def test_build_levels_matches_unique():
    rng = np.random.default_rng(11)
    for _ in range(50):
        K = int(rng.integers(1, 80))
        r = rng.integers(0, int(rng.integers(1, 12)), K).astype(float)
        p = rng.exponential(size=K)
        p[rng.random(K) < 0.2] = 0.0
        if p.sum() == 0:
            p[0] = 1.0
        p /= p.sum()
        ref = Reference(r, probs=p)
        on = p > 0
        vals, inv = np.unique(r[on], return_inverse=True)
        q = np.bincount(inv, weights=p[on])
        np.testing.assert_array_equal(ref.level_values, vals)
        np.testing.assert_allclose(np.exp(ref.level_logq), q / q.sum(), rtol=1e-14)
        idx = np.full(K, -1)
        idx[on] = inv
        np.testing.assert_array_equal(ref.level_index, idx)
        assert np.all(ref.level_logq <= 0.0)


def test_tilt_stats_against_mpmath():
    # mp.mp.dps = 40: D(lam) = lam Lambda'(lam) - Lambda(lam) for p = (0.5, 0.3, 0.2),
    # r = (0, 1, 2), evaluated with mpmath sums (snippet below, kept short).
    ref = Reference([0.0, 1.0, 2.0], probs=[0.5, 0.3, 0.2])
    lams = np.array([-30.0, -2.0, -0.3, 0.002, 0.05, 0.7, 3.0, 40.0, 600.0])
    st = tilt_mod.tilt_stats(ref, ref.lam_to_u(lams))
    with mp.workdps(40):
        for i, lam in enumerate(lams):
            lam = mp.mpf(lam)
            w = [mp.mpf(q) * mp.e ** (lam * r) for q, r in zip(["0.5", "0.3", "0.2"], [0, 1, 2])]
            z = sum(w)
            mean = sum(wi * r for wi, r in zip(w, [0, 1, 2])) / z
            kl = lam * mean - mp.log(z)
            assert float(st.kl[i]) == pytest.approx(float(kl), rel=1e-12, abs=1e-300)
            assert ref.to_reward(st.mean[i]) == pytest.approx(float(mean), rel=1e-13, abs=1e-15)
