"""Estimators from samples: the per-prompt kernels (against brute force and the exact engines), analyze, its intervals and its trust rule."""

import itertools
import json
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq

import klfrontier as kf
from klfrontier import Reference, best_of_n, frontier, jeffreys, soft_best_of_n, tilted
from klfrontier.empirical import (
    analyze,
    kl_trust_limit,
    tilted_gain_cov,
    unbiased_bon_gold,
    unbiased_bon_reward,
)
from klfrontier.empirical import kernels as K
from klfrontier.io import SampleSet


# ----------------------------------------------------------------------------- unbiased BoN
@pytest.mark.parametrize("seed", range(4))
def test_unbiased_matches_enumeration_of_subsets(seed):
    """Brute force: the mean of max over all C(n, N) subsets, exact in rationals."""
    rng = np.random.default_rng(seed)
    n = 9
    r = rng.integers(-3, 4, size=n).astype(float)  # ties on purpose
    if seed % 2:
        r = rng.normal(size=n)
    for big_n in range(1, n + 1):
        subsets = list(itertools.combinations(r.tolist(), big_n))
        brute = float(sum(Fraction(max(s)) for s in subsets) / len(subsets))
        assert unbiased_bon_reward(r, big_n) == pytest.approx(brute, rel=1e-13, abs=1e-13)


def test_unbiased_closed_form_at_one_million():
    """Ranks 1..n: E[max of N drawn without replacement] = N (n + 1) / (N + 1), exactly."""
    n = 10**6
    r = np.arange(1, n + 1, dtype=float)[::-1].copy()  # order must not matter
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
    assert out[1, 1] == pytest.approx(5.0 - 2.0)  # all mass on the max
    with pytest.raises(ValueError, match="lam"):
        tilted_gain_cov(r, -1.0)


def test_kl_trust_limit():
    assert kl_trust_limit(np.e**3, margin=1.0) == pytest.approx(2.0)


# ----------------------------------------------------------------------------- gold
@pytest.mark.parametrize("seed", range(3))
def test_unbiased_gold_matches_enumeration_with_uniform_tie_break(seed):
    """Brute force over all N-subsets; a subset's winner is uniform over its tied maxima."""
    rng = np.random.default_rng(seed)
    n = 8
    proxy = rng.integers(0, 3, size=n).astype(float)  # many ties in the proxy
    gold = rng.normal(size=n)
    for big_n in range(1, n + 1):
        tot, cnt = Fraction(0), 0
        for sub in itertools.combinations(range(n), big_n):
            top = max(proxy[i] for i in sub)
            win = [i for i in sub if proxy[i] == top]
            tot += sum(Fraction(gold[i]) for i in win) / len(win)
            cnt += 1
        assert unbiased_bon_gold(proxy, gold, big_n) == pytest.approx(float(tot / cnt), rel=1e-12, abs=1e-13)
    np.testing.assert_allclose(
        unbiased_bon_gold(proxy, proxy, [1, 3]), unbiased_bon_reward(proxy, [1, 3]), rtol=1e-14
    )
    with pytest.raises(ValueError, match="gold must have the length"):
        unbiased_bon_gold(proxy, gold[:-1], 1)


# ----------------------------------------------------------------------------- kernels
def _sorted_rows(seed, rows=3, n=12, ties=True):
    rng = np.random.default_rng(seed)
    r = rng.integers(-2, 3, size=(rows, n)).astype(float) if ties else rng.normal(size=(rows, n))
    return np.sort(r, axis=1)


@pytest.mark.parametrize("ties", [True, False])
def test_bon_plugin_matches_exact_engine_on_the_empirical_law(ties):
    r = _sorted_rows(1, ties=ties)
    ns = np.array([1.0, 2.0, 3.5, 12.0, 40.0])
    out = K.bon_plugin(r, ns, gold=2 * r + 1)
    for b in range(r.shape[0]):
        ref = Reference.from_samples(r[b])
        for m, N in enumerate(ns):
            pol = best_of_n(ref, n=N)
            assert out["reward"][b, m] == pytest.approx(pol.reward, rel=1e-12, abs=1e-13)
            assert out["kl"][b, m] == pytest.approx(pol.kl, rel=1e-10, abs=1e-13)
            assert out["win_rate"][b, m] == pytest.approx(pol.win_rate, rel=1e-12)
            assert out["gold"][b, m] == pytest.approx(2 * pol.reward + 1, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("ties", [True, False])
def test_bon_kl_jackknife_matches_brute_force_leave_one_out(ties):
    r = _sorted_rows(2, rows=2, n=9, ties=ties)
    ns = np.array([1.0, 2.0, 5.0])
    out = K.bon_plugin(r, ns, jackknife=True)
    n = r.shape[1]
    for b in range(r.shape[0]):
        loo = np.array([K.bon_plugin(np.delete(r[b], i)[None, :], ns)["kl"][0] for i in range(n)])
        mu = loo.mean(axis=0)
        np.testing.assert_allclose(out["kl_bias"][b], (n - 1) * (mu - out["kl"][b]), atol=1e-12)
        np.testing.assert_allclose(
            out["kl_jkvar"][b], (n - 1) / n * ((loo - mu) ** 2).sum(axis=0), atol=1e-13
        )


def test_unbiased_jackknife_matches_brute_force():
    r = _sorted_rows(3, rows=2, n=10)
    for N in (1, 2, 5, 9):
        loo = K.unbiased_jackknife(r, N)
        for b in range(2):
            want = [unbiased_bon_reward(np.delete(r[b], j), N) for j in range(10)]
            np.testing.assert_allclose(loo[b], want, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("lam", [0.0, 1e-6, 0.4, 3.0, 200.0])
def test_tilt_rows_match_exact_engine_and_brute_force_jackknife(lam):
    r = _sorted_rows(4, rows=2, n=11)
    g = np.cos(r) + r
    out = K.tilt_rows(r, np.array([lam]), gold=g, jackknife=True)
    n = r.shape[1]
    for b in range(2):
        ref = Reference.from_samples(r[b])
        pol = tilted(ref, lam=lam)
        assert out["reward"][b, 0] == pytest.approx(pol.reward, rel=1e-12, abs=1e-14)
        assert out["kl"][b, 0] == pytest.approx(pol.kl, rel=1e-8, abs=1e-15)
        w = np.exp(lam * (r[b] - r[b].max()))
        assert out["gold"][b, 0] == pytest.approx(w @ g[b] / w.sum(), rel=1e-12)
        assert out["ess"][b, 0] == pytest.approx(w.sum() ** 2 / (w * w).sum(), rel=1e-12)
        assert out["logmgf"][b, 0] == pytest.approx(np.log(np.mean(np.exp(lam * r[b]))), rel=1e-12, abs=1e-15)
        if lam in (0.4, 3.0):
            loo = [
                K.tilt_rows(np.delete(r[b], i)[None, :], np.array([lam]), gold=np.delete(g[b], i)[None, :])
                for i in range(n)
            ]
            for key in ("reward", "kl", "gold"):
                vals = np.array([o[key][0, 0] for o in loo])
                full = out[key][b, 0]
                assert out[key + "_bias"][b, 0] == pytest.approx((n - 1) * (vals.mean() - full), abs=1e-11)
                assert out[key + "_jkvar"][b, 0] == pytest.approx(
                    (n - 1) / n * ((vals - vals.mean()) ** 2).sum(), rel=1e-9
                )


def test_tilt_rows_small_lam_keeps_relative_accuracy():
    """KL ~ lam^2 var / 2 at lam = 1e-7 on rewards near -1e6: no difference of rounded rewards."""
    rng = np.random.default_rng(5)
    r = -1e6 + 1e-3 * rng.normal(size=(1, 200))
    out = K.tilt_rows(r, np.array([1e-7]))
    v = np.var(r[0] - r[0].mean())
    assert out["kl"][0, 0] == pytest.approx(1e-14 * v / 2, rel=1e-6)
    gain = out["reward"][0, 0] - r[0].mean()
    assert gain == pytest.approx(1e-7 * v, rel=1e-2)  # rounding of r.mean() itself dominates here


# ----------------------------------------------------------------------------- analyze
def _data(seed, P=6, ties=True, uneven=True):
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(P):
        n = int(rng.integers(6, 30)) if uneven else 20
        x = rng.normal(size=n) * (1 + i % 3) + i % 2
        out[f"q{i}"] = np.round(x, 1) if ties else x
    return out


def test_analyze_point_estimates_match_the_exact_engines():
    data = _data(1)
    budgets = np.array([0.0, 0.05, 0.3, 1.0, 1.5])
    res = analyze(data, n_values=[1, 2, 4, 6], kl_values=budgets, lam_values=[0.0, 0.7], interval="none")
    refs = [Reference.from_samples(v) for v in data.values()]

    def mean_kl(lam):
        return np.mean([tilted(r, lam=lam).kl for r in refs])

    for D, R, lam in zip(res.frontier.kl, res.frontier.reward, res.frontier.lam):
        if D == 0:
            assert R == pytest.approx(np.mean([r.mean_reward for r in refs]), rel=1e-13)
            continue
        want = brentq(lambda x, D=D: mean_kl(x) - D, 1e-9, 100.0, xtol=1e-15)
        assert lam == pytest.approx(want, rel=1e-8)
        assert R == pytest.approx(np.mean([tilted(r, lam=want).reward for r in refs]), rel=1e-10)
    eq = [np.mean([frontier(r, [D]).reward[0] for r in refs]) for D in budgets]
    np.testing.assert_allclose(res.frontier_equal.reward, eq, rtol=1e-6)
    assert np.all(res.frontier.reward >= res.frontier_equal.reward - 1e-9)
    for g, lam in enumerate(res.tilt.lam):
        assert res.tilt.reward[g] == pytest.approx(
            np.mean([tilted(r, lam=lam).reward for r in refs]), rel=1e-12
        )
        assert res.tilt.kl[g] == pytest.approx(
            np.mean([tilted(r, lam=lam).kl for r in refs]), rel=1e-9, abs=1e-15
        )
    for i, N in enumerate(res.bon.n):
        use = [(v, r) for v, r in zip(data.values(), refs) if len(v) >= N]
        assert res.bon.prompts[i] == len(use)
        assert res.bon.reward[i] == pytest.approx(
            np.mean([unbiased_bon_reward(v, N) for v, _ in use]), rel=1e-12
        )
        assert res.bon.kl[i] == pytest.approx(
            np.mean([best_of_n(r, n=N).kl for _, r in use]), rel=1e-10, abs=1e-14
        )


def test_uneven_counts_exclude_small_prompts_and_never_leak_nan():
    data = _data(2, P=5)
    data["one"] = [3.0]
    data["three"] = [0.0, 1.0, 2.0]
    res = analyze(data, n_values=[1, 2, 4, 8], interval="t")
    assert res.excluded == [("one", 1)]
    assert res.info["prompts"] == 6
    assert res.bon.prompts.tolist() == [6, 6, 5, 5]  # 'three' has 3 < 4 samples
    assert np.isfinite(res.bon.reward).all() and np.isfinite(res.bon.reward_lo).all()
    text = json.dumps(res.to_dict(), allow_nan=False)  # strict JSON
    assert "NaN" not in text and "Infinity" not in text
    with pytest.raises(ValueError, match="two or more samples"):
        analyze({"a": [1.0], "b": [2.0]})


def test_interval_method_is_chosen_by_the_number_of_prompts():
    rng = np.random.default_rng(3)
    one = analyze({"a": rng.normal(size=40)}, n_values=[1, 4], kl_values=[0.3], lam_values=[0.5])
    assert one.info["interval"] == "jackknife"
    assert np.isfinite(one.bon.reward_lo).all()  # U_N: exact leave-one-out values
    assert np.isnan(one.bon.reward_plugin).sum() == 0
    few = analyze({f"q{i}": rng.normal(size=20) for i in range(12)}, n_values=[2], kl_values=[0.3])
    assert few.info["interval"] == "t" and few.methods["bon"].startswith("Student-t over 12 prompts")

    def many_prompts():
        return {f"q{i}": np.random.default_rng(100 + i).normal(size=20) for i in range(40)}

    many = analyze(many_prompts(), n_values=[2], kl_values=[0.3], n_boot=200, seed=4)
    assert many.info["interval"] == "bootstrap" and "BCa" in many.methods["bon"]
    again = analyze(many_prompts(), n_values=[2], kl_values=[0.3], n_boot=200, seed=4)
    np.testing.assert_array_equal(again.frontier.reward_lo, many.frontier.reward_lo)  # seeded
    other = analyze(many_prompts(), n_values=[2], kl_values=[0.3], n_boot=200, seed=5)
    assert other.frontier.reward_lo[0] != many.frontier.reward_lo[0]
    for res in (one, few, many):
        assert res.bon.reward_lo[0] < res.bon.reward[0] < res.bon.reward_hi[0]
        assert res.frontier.reward_lo[0] < res.frontier.reward_debiased[0] < res.frontier.reward_hi[0]


def test_continuous_bon_kl_is_never_trusted_and_discrete_is():
    """No ties: the BoN KL estimate is the same for every prompt and biased, so no honest interval."""
    rng = np.random.default_rng(6)
    cont = analyze({f"q{i}": rng.normal(size=64) for i in range(20)}, n_values=[1, 2, 4])
    assert cont.bon.kl_trusted.tolist() == [True, False, False]  # N = 1: KL = 0 exactly
    disc = analyze(
        {f"q{i}": rng.integers(0, 4, size=64).astype(float) for i in range(20)}, n_values=[1, 2, 4, 8]
    )
    assert disc.bon.kl_trusted.tolist() == [True, True, False, False]  # N <= n / 32
    # the interval is for the true KL, around the jackknife-corrected estimate
    assert disc.bon.kl_lo[1] < disc.bon.kl_debiased[1] < disc.bon.kl_hi[1]


def test_argument_errors_name_the_argument():
    data = _data(7)
    for kwargs, match in [
        ({"interval": "magic"}, "interval"),
        ({"confidence": 1.5}, "confidence"),
        ({"n_boot": -1}, "n_boot"),
        ({"n_boot": 10**9}, "n_boot"),
        ({"n_values": [0]}, "n_values"),
        ({"kl_values": [np.nan]}, "kl_values"),
        ({"lam_values": [-1.0]}, "lam_values"),
        ({"min_ess": -1}, "min_ess"),
        ({"progress": 3}, "progress"),
    ]:
        with pytest.raises(ValueError, match=match):
            analyze(data, **kwargs)
    with pytest.raises(ValueError, match="base must be"):
        analyze(3.0)


def test_inputs_path_table_and_sampleset_agree(tmp_path):
    pa = pytest.importorskip("pyarrow")
    from klfrontier.io import write_samples

    data = _data(8, P=4)
    s = SampleSet.from_dict(data)
    path = tmp_path / "s.csv"
    write_samples(path, s)
    cols = s.columns()
    table = pa.table({"prompt_id": cols["prompt_id"], "reward": cols["reward"]})
    kw = dict(n_values=[1, 3], kl_values=[0.2], lam_values=[0.5], interval="t")
    a, b, c, d = (analyze(x, **kw) for x in (data, s, path, table))
    for other in (b, c, d):
        np.testing.assert_allclose(other.frontier.reward, a.frontier.reward, rtol=1e-13)
        np.testing.assert_allclose(other.bon.reward_hi, a.bon.reward_hi, rtol=1e-13)


def test_gold_column():
    rng = np.random.default_rng(9)
    data = {
        f"q{i}": {"reward": np.round(rng.normal(size=30), 1), "gold": rng.normal(size=30)} for i in range(8)
    }
    res = analyze(data, n_values=[1, 4], lam_values=[0.0, 1.0], interval="t")
    means = np.mean([v["gold"].mean() for v in data.values()])
    assert res.bon.gold[0] == pytest.approx(means, rel=1e-12)
    assert res.tilt.gold[0] == pytest.approx(means, rel=1e-12)
    want = np.mean([unbiased_bon_gold(v["reward"], v["gold"], 4) for v in data.values()])
    assert res.bon.gold[1] == pytest.approx(want, rel=1e-12)
    same = analyze(
        {k: {"reward": v["reward"], "gold": v["reward"]} for k, v in data.items()},
        n_values=[1, 4],
        lam_values=[1.0],
        interval="t",
    )
    np.testing.assert_allclose(same.bon.gold, same.bon.reward, rtol=1e-12)
    np.testing.assert_allclose(same.tilt.gold, same.tilt.reward, rtol=1e-12)


def _policy_samples(ref, pol, prompts, n, rng):
    """Samples of a level-symmetric policy on a discrete reference, with exact log-probabilities."""
    probs = np.exp(pol.level_logprobs)
    levels = ref.level_values
    out = {}
    for p in prompts:
        lev = rng.choice(levels.size, size=n, p=probs / probs.sum())
        # log pi(y) - log p(y) depends only on the level: log(pi(level)/q(level))
        lr = pol.level_logprobs[lev] - ref.level_logq[lev]
        ref_lp = ref.level_logq[lev] - 5.0  # any outcome inside the level
        out[p] = {"reward": levels[lev], "logprob": ref_lp + lr, "ref_logprob": ref_lp}
    return out


def test_policies_against_the_optimum():
    """A tilted policy sits on the optimum (KL to it ~ 0); best-of-N sits below it."""
    rng = np.random.default_rng(10)
    ref = Reference([0.0, 1.0, 2.0, 3.0], probs=[0.4, 0.3, 0.2, 0.1])
    prompts = [f"q{i}" for i in range(40)]
    base = {p: ref.level_values[rng.choice(4, size=400, p=[0.4, 0.3, 0.2, 0.1])] for p in prompts}
    tilt_pol = tilted(ref, lam=0.8)
    bon_pol = best_of_n(ref, n=4)
    pols = {
        "tilt": _policy_samples(ref, tilt_pol, prompts, 400, rng),
        "bon4": _policy_samples(ref, bon_pol, prompts, 400, rng),
    }
    res = analyze(base, policies=pols, n_values=[1, 4], kl_values=[0.2], n_boot=300, seed=1)
    t, b = res.policies["tilt"], res.policies["bon4"]

    def within(tab, key, truth, k=2.0):  # |estimate - truth| <= k half-widths (~4 s.e.)
        half = 0.5 * (getattr(tab, key + "_hi")[0] - getattr(tab, key + "_lo")[0])
        assert 0 < half < 0.05
        assert abs(getattr(tab, key)[0] - truth) <= k * half

    within(t, "kl", tilt_pol.kl)
    within(t, "reward", tilt_pol.reward)
    within(t, "kl_to_optimal", 0.0)
    within(b, "kl", bon_pol.kl)
    assert t.optimal_reward[0] == pytest.approx(tilt_pol.reward, abs=0.05)
    within(b, "kl_to_optimal", kf.optimality(ref, bon_pol).kl_to_optimal)
    # the reward gap to the optimum at the policy's own KL, with its interval
    within(t, "gap", 0.0)
    within(b, "gap", kf.optimality(ref, bon_pol).reward_gap)
    assert kf.optimality(ref, bon_pol).reward_gap > 0
    assert b.bon_n_same_kl[0] == pytest.approx(4.0, rel=0.15)
    assert int(t.prompts[0]) == 40
    with pytest.raises(ValueError, match="not among the base prompts"):
        analyze(base, policies={"x": {"zz": pols["tilt"]["q0"]}})
    with pytest.raises(ValueError, match="ref_logprob"):
        analyze(base, policies={"x": {"q0": {"reward": [1.0, 2.0]}}})


# ----------------------------------------------------------------------------- the optimum dominates
@st.composite
def _empirical_prompts(draw):
    P = draw(st.integers(1, 4))
    out = []
    for _ in range(P):
        n = draw(st.integers(2, 9))
        vals = draw(st.lists(st.integers(-4, 4), min_size=n, max_size=n))
        out.append(np.array(vals, dtype=float) * draw(st.sampled_from([0.5, 1.0, 3.0])))
    return out


@settings(max_examples=60, deadline=None)
@given(_empirical_prompts(), st.data())
def test_any_per_prompt_policies_lie_on_or_below_the_average_kl_optimum(samples, data):
    """SPEC §9: (mean KL, mean reward) of per-prompt BoN / soft BoN / tilts <= R*_avg(mean KL)."""
    refs = [Reference.from_samples(x) for x in samples]
    kls, rews = [], []
    for ref in refs:
        kind = data.draw(st.sampled_from(["bon", "soft", "tilt"]))
        if ref.is_constant:
            kls.append(0.0)
            rews.append(ref.mean_reward)
            continue
        if kind == "bon":
            pol = best_of_n(ref, n=data.draw(st.floats(1.0, 30.0)))
        elif kind == "soft":
            pol = soft_best_of_n(ref, data.draw(st.integers(1, 8)), lam=data.draw(st.floats(0.0, 5.0)))
        else:
            pol = tilted(ref, lam=data.draw(st.floats(0.0, 8.0)))
        kls.append(pol.kl)
        rews.append(pol.reward)
    K, R = float(np.mean(kls)), float(np.mean(rews))
    res = analyze(
        {f"q{i}": x for i, x in enumerate(samples)},
        n_values=[1],
        kl_values=[K],
        lam_values=[],
        interval="none",
    )
    scale = max(float(np.ptp(np.concatenate(samples))), 1.0)
    assert R <= res.frontier.reward[0] + 1e-9 * scale


# ----------------------------------------------------------------------------- tail diagnostic
@pytest.mark.parametrize("shape", [0.2, 0.5, 1.0])
def test_pareto_khat_agrees_with_scipy_maximum_likelihood(shape):
    """Zhang-Stephens k_hat on the M-largest exceedances vs scipy's genpareto MLE on the same tail."""
    from scipy.stats import genpareto

    rng = np.random.default_rng(int(shape * 10))
    x = np.sort(genpareto.rvs(shape, size=20000, random_state=rng))
    k = K.pareto_khat(np.log(x)[None, :])[0]
    M = int(np.ceil(min(0.2 * x.size, 3 * np.sqrt(x.size))))
    mle, _, _ = genpareto.fit(x[-M:] - x[-M - 1], floc=0.0)
    assert k == pytest.approx(mle, abs=0.08)
    assert k == pytest.approx(shape, abs=0.15)


def test_heavy_tailed_tilts_are_untrusted():
    """Student-t(3) rewards: the tilt is dominated by rewards never sampled; k_hat says so."""
    rng = np.random.default_rng(12)
    heavy = {f"q{i}": rng.standard_t(3, size=256) for i in range(20)}
    light = {f"q{i}": rng.normal(size=256) for i in range(20)}
    lam = [0.5]
    assert not analyze(heavy, n_values=[1], lam_values=lam, kl_values=[]).tilt.reward_trusted[0]
    assert analyze(light, n_values=[1], lam_values=lam, kl_values=[]).tilt.reward_trusted[0]


# ----------------------------------------------------------------------------- the prompt bootstrap
@pytest.mark.parametrize("method", ["BCa", "percentile"])
def test_prompt_bootstrap_equals_scipy_bootstrap(method):
    """Same generator -> the same replications and intervals as scipy.stats.bootstrap."""
    from scipy.stats import bootstrap

    from klfrontier.empirical.resample import counts_from_index, prompt_bootstrap

    rng = np.random.default_rng(3)
    P = 57
    vals = rng.standard_t(3, size=(P, 3))
    w = rng.uniform(0.5, 2.0, size=P)

    def stat_c(c):  # linear, a ratio, and a nonlinear function of a mean
        m = (c @ vals) / c.sum(axis=1, keepdims=True)
        return np.column_stack([m, (c @ (vals[:, 0] * w)) / (c @ w), np.exp(m[:, 0])])

    def stat_idx(idx, axis=-1):
        flat = idx.reshape(-1, idx.shape[-1])
        out = stat_c(counts_from_index(flat, P))
        return np.moveaxis(out.reshape(idx.shape[:-1] + (out.shape[1],)), -1, 0)

    ref = bootstrap(
        (np.arange(P),),
        stat_idx,
        n_resamples=999,
        vectorized=True,
        confidence_level=0.9,
        method=method,
        rng=np.random.default_rng(5),
        batch=100,
    )
    got = prompt_bootstrap(
        stat_c, P, n_resamples=999, confidence=0.9, seed=np.random.default_rng(5), method=method
    )
    np.testing.assert_array_equal(got.distribution, np.asarray(ref.bootstrap_distribution))
    np.testing.assert_allclose(got.low, ref.confidence_interval.low, rtol=0, atol=1e-14)
    np.testing.assert_allclose(got.high, ref.confidence_interval.high, rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="method"):
        prompt_bootstrap(stat_c, P, n_resamples=9, confidence=0.9, seed=rng, method="basic")


def test_pareto_khat_with_tied_weights_stays_finite_and_bounded():
    """Top weights tied with the cut: the quartile exceedance is 0 (was a division by zero, k = 10.6)."""
    r = np.sort(np.r_[np.zeros(90), np.ones(8), [2.0, 3.0]])[None, :]
    k = K.pareto_khat(r * 3.0)
    assert np.isfinite(k).all() and -0.5 < k[0] < 2.0


def test_a_policy_beyond_the_base_samples_reach_is_saturated_and_untrusted():
    """A policy KL above log n - log #top: the optimum is p_hat(. | top), its distance infinite."""
    rng = np.random.default_rng(4)
    base = {f"q{i}": rng.normal(size=16) for i in range(40)}
    pol = {
        p: {
            "reward": np.full(8, r.max() - 0.1),
            "logprob": np.full(8, -1.0),
            "ref_logprob": np.full(8, -30.0),
        }
        for p, r in base.items()
    }  # KL 29 nats
    t = analyze(base, policies={"far": pol}, n_values=[1, 2], kl_values=[0.5], n_boot=200).policies["far"]
    assert bool(t.saturated[0]) and not bool(t.trusted[0]) and not bool(t.gap_trusted[0])
    assert np.isinf(t.kl_to_optimal[0])
    assert t.gap[0] == pytest.approx(0.1, abs=1e-9)  # r_top - (r_top - 0.1) on every prompt
