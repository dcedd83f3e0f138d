"""Estimators from samples: unbiased BoN, plug-in curves, covariance form, bootstrap, trust."""

import itertools
import json
from fractions import Fraction

import numpy as np
import pytest
from scipy import integrate, stats

from klfrontier import Reference, best_of_n, bon_curve, bon_kl_bound, frontier, jeffreys, tilted
from klfrontier.empirical import (
    _bon_from_counts,
    _frontier_from_counts,
    _masses,
    _tilt_from_counts,
    _unbiased_from_counts,
    analyze_samples,
    kl_trust_limit,
    tilted_gain_cov,
    unbiased_bon_reward,
)
from klfrontier.io import SampleSet
from klfrontier.tilt import tilt_stats


def levels(r):
    v, k = np.unique(r, return_counts=True)
    return v, k


# ----------------------------------------------------------------------------- unbiased BoN
@pytest.mark.parametrize("seed", range(4))
def test_unbiased_matches_enumeration_of_subsets(seed):
    """Brute force: the mean of max over all C(n, N) subsets, exact in rationals."""
    rng = np.random.default_rng(seed)
    n = 9
    r = rng.integers(-3, 4, size=n).astype(float)           # ties on purpose
    if seed % 2:
        r = rng.normal(size=n)
    for big_n in range(1, n + 1):
        subsets = list(itertools.combinations(r.tolist(), big_n))
        brute = float(sum(Fraction(max(s)) for s in subsets) / len(subsets))
        assert unbiased_bon_reward(r, big_n) == pytest.approx(brute, rel=1e-13, abs=1e-13)


def test_unbiased_closed_form_at_one_million():
    """Ranks 1..n: E[max of N drawn without replacement] = N (n + 1) / (N + 1), exactly."""
    n = 10**6
    r = np.arange(1, n + 1, dtype=float)[::-1].copy()       # order must not matter
    ns = np.array([1, 2, 10, 1000, 500_000, n - 1, n])
    got = unbiased_bon_reward(r, ns)
    want = ns * (n + 1) / (ns + 1)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_unbiased_limits_and_errors():
    r = np.array([3.0, -1.0, 2.0, 2.0])
    assert unbiased_bon_reward(r, 1) == pytest.approx(r.mean(), rel=1e-15)
    assert unbiased_bon_reward(r, 4) == 3.0
    assert isinstance(unbiased_bon_reward(r, 2), float)
    with pytest.raises(ValueError, match="n must lie in"):
        unbiased_bon_reward(r, 5)
    with pytest.raises(ValueError, match="integers"):
        unbiased_bon_reward(r, 1.5)
    with pytest.raises(ValueError, match="NaN or inf"):
        unbiased_bon_reward([1.0, np.nan], 1)


def test_unbiased_is_unbiased_in_expectation():
    """Average over every sample of size n from a small discrete law = exact BoN reward."""
    p = np.array([0.5, 0.3, 0.2])
    vals = np.array([0.0, 1.0, 2.5])
    n, big_n = 4, 3
    truth = best_of_n(Reference(vals, probs=p), n=big_n).reward
    mean = 0.0
    for idx in itertools.product(range(3), repeat=n):
        mean += np.prod(p[list(idx)]) * unbiased_bon_reward(vals[list(idx)], big_n)
    assert mean == pytest.approx(truth, rel=1e-13)


def test_unbiased_from_counts_matches_sorted_form():
    rng = np.random.default_rng(3)
    r = rng.integers(0, 6, size=40).astype(float)
    v, k = levels(r)
    ns = np.array([1, 2, 7, 40, 41])
    counts = np.vstack([k, rng.multinomial(40, k / 40, size=5)])
    got = _unbiased_from_counts(v, counts, 40, ns)
    for row, cnt in zip(got, counts):
        sample = np.repeat(v, cnt)
        np.testing.assert_allclose(row[:4], unbiased_bon_reward(sample, ns[:4]), rtol=1e-12)
        assert np.isnan(row[4])


# ----------------------------------------------------------------------------- plug-in BoN
def test_plugin_bon_matches_best_of_n():
    rng = np.random.default_rng(5)
    r = np.round(rng.normal(size=30), 1)                      # ties
    ref = Reference.from_samples(r)
    ns = np.array([1, 2, 3, 8, 30, 100])
    curve = bon_curve(ref, n=ns)
    for i, big_n in enumerate(ns):
        pol = best_of_n(ref, n=big_n)
        assert curve.reward[i] == pytest.approx(pol.reward, rel=1e-12)
        assert curve.kl[i] == pytest.approx(pol.kl, rel=1e-10, abs=1e-15)
    v, k = levels(r)
    counts = np.vstack([k, rng.multinomial(30, k / 30, size=4)])
    rw, kl, win = _bon_from_counts(v, counts, 30, ns)
    for t, cnt in enumerate(counts):
        c = bon_curve(Reference.from_samples(np.repeat(v, cnt)), n=ns)
        np.testing.assert_allclose(rw[t], c.reward, rtol=1e-12)
        np.testing.assert_allclose(kl[t], c.kl, rtol=1e-10, atol=1e-15)
        np.testing.assert_allclose(win[t], c.win_rate, rtol=1e-12)


# ----------------------------------------------------------------------------- tilt
@pytest.mark.parametrize("lam", [0.0, 1e-4, 0.3, 1.0, 7.0, 60.0])
def test_covariance_form_equals_plugin_tilt(lam):
    """Cov(r, e^{lam r}) / E e^{lam r} = E_phi r - E_p r = [KL(phi||p) + KL(p||phi)] / lam on p_hat."""
    rng = np.random.default_rng(11)
    r = np.round(rng.gamma(2.0, size=50), 2)
    ref = Reference.from_samples(r)
    gain = tilted_gain_cov(r, lam)
    pol = tilted(ref, lam=lam)
    assert gain == pytest.approx(pol.reward - ref.mean_reward, rel=1e-10, abs=1e-14)
    if lam > 0:
        phi = np.exp(pol.level_logprobs)
        q = np.exp(ref.level_logq)
        assert gain == pytest.approx(jeffreys(phi, q) / lam, rel=1e-9)


def test_covariance_form_vectorised_and_checked():
    r = [0.0, 1.0, 5.0]
    lams = np.array([[0.0, 1.0], [2.0, 1e3]])
    out = tilted_gain_cov(r, lams)
    assert out.shape == (2, 2)
    assert out[1, 1] == pytest.approx(5.0 - 2.0)                # all mass on the max
    with pytest.raises(ValueError, match="lam"):
        tilted_gain_cov(r, -1.0)


def test_tilt_and_frontier_kernels_match_exact_engines():
    rng = np.random.default_rng(2)
    r = np.round(rng.normal(size=60), 1)
    ref = Reference.from_samples(r)
    v, k = levels(r)
    counts = np.vstack([k, rng.multinomial(60, k / 60, size=6)])
    lam = np.array([0.0, 0.01, 0.5, 2.0, 20.0])
    budgets = np.array([0.0, 1e-4, 0.05, 0.5, 1.5, 2.5, 10.0])
    for cnt in counts:
        sub = Reference.from_samples(np.repeat(v, cnt))
        logW = _masses(cnt[None, :], 60)
        mean, kl = _tilt_from_counts(ref.level_u, logW, ref.lam_to_u(lam))
        st = tilt_stats(sub, sub.lam_to_u(lam))
        np.testing.assert_allclose(ref.to_reward(mean[0]), sub.to_reward(st.mean), rtol=1e-12,
                                   atol=1e-13)
        np.testing.assert_allclose(kl[0], st.kl, rtol=1e-10, atol=1e-16)
        fm, sat = _frontier_from_counts(ref.level_u, logW, budgets)
        fr = frontier(sub, budgets)
        np.testing.assert_allclose(ref.to_reward(fm[0]), fr.reward, rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(sat[0], fr.saturated)


# ----------------------------------------------------------------------------- analysis
def small_data(P=6, n=40, seed=0):
    rng = np.random.default_rng(seed)
    return {f"q{i}": np.round(rng.normal(rng.normal(), 1.0, size=n), 2) for i in range(P)}


def test_analysis_point_estimates_and_shapes():
    data = small_data()
    ns, budgets, lams = [1, 2, 8, 40, 64], [0.0, 0.3, 1.0, 3.5], [0.0, 0.5, 2.0]
    res = analyze_samples(data, n_values=ns, kl_values=budgets, lam_values=lams, n_boot=30, rng=4)
    pp, agg = res.per_prompt, res.aggregate
    assert pp.bon_reward_plugin.value.shape == (6, 5)
    assert pp.tilt_kl.value.shape == (6, 3)
    assert pp.frontier_reward.value.shape == (6, 4)
    assert pp.base_reward.value.shape == (6,) and agg.base_reward.value.shape == ()
    for x, r in enumerate(data.values()):
        ref = Reference.from_samples(r)
        assert pp.base_reward.value[x] == pytest.approx(r.mean())
        c = bon_curve(ref, n=ns)
        np.testing.assert_allclose(pp.bon_reward_plugin.value[x], c.reward, rtol=1e-12)
        np.testing.assert_allclose(pp.bon_kl_plugin.value[x], c.kl, rtol=1e-12)
        np.testing.assert_allclose(pp.bon_reward_unbiased.value[x, :4],
                                   unbiased_bon_reward(r, ns[:4]), rtol=1e-12)
        np.testing.assert_allclose(pp.frontier_reward.value[x], frontier(ref, budgets).reward,
                                   rtol=1e-12)
        np.testing.assert_allclose(pp.tilt_gain.value[x], pp.tilt_reward.value[x] - r.mean(),
                                   rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(agg.bon_reward_plugin.value, pp.bon_reward_plugin.value.mean(0))
    np.testing.assert_allclose(res.bon_kl_bound, bon_kl_bound(np.array(ns, dtype=float)))
    # N > n is undefined for the unbiased estimator and untrusted for both
    assert np.isnan(pp.bon_reward_unbiased.value[:, 4]).all()
    assert np.isnan(agg.bon_reward_unbiased.value[4])
    assert not pp.bon_reward_plugin.trusted[:, 4].any()
    # KL trust rule: log n - 1
    lim = kl_trust_limit(40)
    np.testing.assert_array_equal(pp.frontier_reward.trusted,
                                  np.broadcast_to(np.array(budgets) <= lim, (6, 4)))
    np.testing.assert_array_equal(pp.tilt_kl.trusted, pp.tilt_kl.value <= lim)
    assert (pp.bon_kl_plugin.trusted[:, :3] == (pp.bon_kl_plugin.value[:, :3] <= lim)).all()
    assert agg.frontier_reward.trusted.tolist() == [True, True, True, False]
    # intervals bracket the point estimates where defined
    for est in (agg.bon_reward_unbiased, agg.tilt_reward, agg.frontier_reward):
        ok = ~np.isnan(est.value)
        assert (est.lo[ok] <= est.value[ok] + 1e-12).all() and (est.value[ok] <= est.hi[ok] + 1e-12).all()
    json.dumps(res.as_dict(), allow_nan=False)


def test_analysis_reproducible_and_seeded():
    data = small_data(P=4, n=20)
    kw = dict(n_values=[1, 4], kl_values=[0.5], lam_values=[1.0], n_boot=40)
    a = analyze_samples(data, rng=1, **kw).as_dict()
    b = analyze_samples(data, rng=1, **kw).as_dict()
    c = analyze_samples(data, rng=2, **kw).as_dict()
    assert a == b
    assert a["aggregate"]["bon_reward_unbiased"]["lo"] != c["aggregate"]["bon_reward_unbiased"]["lo"]
    none = analyze_samples(data, rng=1, **{**kw, "n_boot": 0})
    assert none.aggregate.base_reward.lo is None
    np.testing.assert_allclose(none.aggregate.frontier_reward.value,
                               analyze_samples(data, rng=1, **kw).aggregate.frontier_reward.value)


def test_analysis_progress_defaults_and_sampleset():
    data = SampleSet.from_dict(small_data(P=3, n=16))
    seen = []
    res = analyze_samples(data, n_boot=10, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert res.n_values.tolist() == [1, 2, 4, 8, 16]
    assert res.kl_values[0] == 0 and res.kl_values[-1] == pytest.approx(np.log(16))
    assert res.lam_values[0] == 0 and res.lam_values.size == 34
    assert res.bon_kl_beirami is None


def test_analysis_edge_cases():
    data = {"const": [2.0, 2.0, 2.0], "one": [5.0], "two": [0.0, 1.0]}
    res = analyze_samples(data, n_values=[1, 2], kl_values=[0.0, 0.5], lam_values=[0.0, 3.0],
                          n_boot=20, rng=0)
    pp = res.per_prompt
    assert pp.bon_reward_plugin.value[0].tolist() == [2.0, 2.0]
    assert pp.frontier_reward.value[0].tolist() == [2.0, 2.0]
    assert pp.tilt_kl.value[0].tolist() == [0.0, 0.0]
    assert pp.bon_reward_plugin.lo[0].tolist() == [2.0, 2.0]
    assert np.isnan(pp.bon_reward_unbiased.value[1, 1])
    assert pp.frontier_reward.value[2].tolist()[1] == pytest.approx(frontier(
        Reference.from_samples([0.0, 1.0]), [0.5]).reward[0])


def test_analysis_argument_errors():
    data = small_data(P=2, n=8)
    with pytest.raises(ValueError, match="n_values"):
        analyze_samples(data, n_values=[1.5])
    with pytest.raises(ValueError, match="kl_values"):
        analyze_samples(data, kl_values=[-1.0])
    with pytest.raises(ValueError, match="lam_values"):
        analyze_samples(data, lam_values=[np.inf])
    with pytest.raises(ValueError, match="n_boot"):
        analyze_samples(data, n_boot=-1)
    with pytest.raises(ValueError, match="confidence"):
        analyze_samples(data, confidence=1.5)


def test_beirami_estimate_with_logprobs():
    rng = np.random.default_rng(8)
    r = np.round(rng.normal(size=32), 1)
    tiny = SampleSet.from_dict({"a": {"reward": r, "logprob": np.full(32, -1000.0)}})
    res = analyze_samples(tiny, n_values=[1, 2, 8], kl_values=[], lam_values=[], n_boot=0)
    # p(y) -> 0: D_hat is the bound log N - (N-1)/N for every output
    np.testing.assert_allclose(res.bon_kl_beirami[0], bon_kl_bound(np.array([1.0, 2.0, 8.0])),
                               rtol=1e-12, atol=1e-15)
    big = SampleSet.from_dict({"a": {"reward": r, "logprob": np.log(rng.uniform(0.01, 0.3, 32))}})
    est = analyze_samples(big, n_values=[4, 16], kl_values=[], lam_values=[], n_boot=0)
    assert ((0 <= est.bon_kl_beirami) & (est.bon_kl_beirami <= bon_kl_bound(np.array([4.0, 16.0])))).all()


# ----------------------------------------------------------------------------- coverage
def expected_max_std_normal(n):
    f = lambda x: x * n * stats.norm.pdf(x) * stats.norm.cdf(x) ** (n - 1)   # noqa: E731
    return integrate.quad(f, -np.inf, np.inf)[0]


def test_two_level_bootstrap_covers_at_nominal_rate():
    """Prompt means mu ~ N(0, 1), rewards ~ N(mu, 1): the aggregate BoN-4 reward is E max of 4
    standard normals and the base reward is 0.  95% intervals must cover in >= 85 of 100 runs."""
    truth_bon = expected_max_std_normal(4)
    cover_bon = cover_base = 0
    for seed in range(100):
        rng = np.random.default_rng(1000 + seed)
        mu = rng.normal(size=12)
        data = {f"p{i}": rng.normal(m, 1.0, size=24) for i, m in enumerate(mu)}
        res = analyze_samples(data, n_values=[4], kl_values=[], lam_values=[], n_boot=200,
                              rng=seed)
        agg = res.aggregate
        cover_bon += agg.bon_reward_unbiased.lo[0] <= truth_bon <= agg.bon_reward_unbiased.hi[0]
        cover_base += agg.base_reward.lo <= 0.0 <= agg.base_reward.hi
    assert cover_bon >= 85, cover_bon
    assert cover_base >= 85, cover_base


def test_within_prompt_bootstrap_covers_at_nominal_rate():
    truth = expected_max_std_normal(4)
    cover = 0
    for seed in range(100):
        r = np.random.default_rng(seed).normal(size=60)
        res = analyze_samples({"x": r}, n_values=[4], kl_values=[], lam_values=[], n_boot=200,
                              rng=seed)
        est = res.per_prompt.bon_reward_unbiased
        cover += est.lo[0, 0] <= truth <= est.hi[0, 0]
    assert cover >= 85, cover
