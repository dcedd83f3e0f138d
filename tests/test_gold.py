"""Proxy versus gold (theory §9): ``Policy.expect``, ``Reference(gold=)``, ``Reference.level_mean``.

A policy selects with the proxy reward ``r`` and is judged by a gold score
``g``.  Oracles, all in mpmath at 50 digits and sharing no code with
klfrontier:

* best-of-N: enumeration of all K^N draws, the winner drawn uniformly among
  the *draws* tied at the top proxy value (so tied outcomes with different
  gold values are weighted by how often each is drawn);
* best-of-N for real N: the theory §3 level law ``F^N - F^-^N`` times the
  conditional gold means, both from the outcomes;
* soft best-of-N: enumeration of all K^N draws, draw i kept with
  probability ``w_i / sum_k w_k``;
* the tilted policy: the direct sum ``sum p e^{lam r} g / sum p e^{lam r}``.

Relative error <= 1e-10 everywhere (observed: <= 3e-14, the largest at real N = 1e12).
"""

import dataclasses
import itertools
import json
import math

import mpmath as mp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import klfrontier as kf
from klfrontier.policy import level_expect
from klfrontier.report import to_jsonable
from klfrontier.testing import references

RTOL = 1e-10

# Small cases: ties in the proxy with different gold values everywhere; a zero-probability
# outcome whose (huge) gold value must carry no weight; gold of both signs.
CASES = {
    "tied-top": dict(rewards=[0.0, 1.0, 2.0, 2.0], probs=[0.4, 0.3, 0.2, 0.1], gold=[1.0, -2.0, 5.0, -3.0]),
    "tied-middle": dict(
        rewards=[-1.0, 0.5, 0.5, 0.5, 3.0],
        probs=[0.3, 0.1, 0.25, 0.15, 0.2],
        gold=[0.25, 7.0, -1.5, 2.0, -0.75],
    ),
    "all-tied": dict(rewards=[1.0, 1.0, 1.0], probs=[0.2, 0.5, 0.3], gold=[3.0, -1.0, 10.0]),
    "zero-prob": dict(rewards=[0.0, 2.0, 1.0, 2.0], probs=[0.5, 0.2, 0.0, 0.3], gold=[0.5, 1.0, 1e6, 4.0]),
    "irrational": dict(
        rewards=[0.0, 1.0, math.sqrt(2.0), 1.0],
        probs=[0.35, 0.25, 0.2, 0.2],
        gold=[math.pi, -math.e, 0.1, 1.0 / 3.0],
    ),
}


def _ref(case):
    c = CASES[case]
    return kf.Reference(c["rewards"], probs=c["probs"], gold=c["gold"])


def _mp(case):
    c = CASES[case]
    p = [mp.mpf(x) for x in c["probs"]]
    tot = mp.fsum(p)
    return [mp.mpf(x) for x in c["rewards"]], [x / tot for x in p], [mp.mpf(x) for x in c["gold"]]


def _rel(got, exact):
    """``|got - exact| / |exact|`` at 50 digits (whatever precision other tests left set)."""
    with mp.workdps(50):
        exact = mp.mpf(exact)
        if exact == 0:
            return abs(float(got))
        return float(abs(mp.mpf(float(got)) - exact) / abs(exact))


# ----------------------------------------------------------------- oracles
def _bon_brute(case, n):
    """E[g(winner)] over all K^n draws; ties broken uniformly among the tied draws."""
    with mp.workdps(50):
        r, p, g = _mp(case)
        total = mp.mpf(0)
        for draw in itertools.product(range(len(r)), repeat=n):
            pr = mp.fprod(p[i] for i in draw)
            if pr == 0:
                continue
            top = max(r[i] for i in draw)
            tied = [i for i in draw if r[i] == top]
            total += pr * mp.fsum(g[i] for i in tied) / len(tied)
        return total


def _bon_levels(case, n):
    """theory §3 level law ``F(v)^N - F^-(v)^N`` times ``E_p[g | r = v]`` (real N)."""
    with mp.workdps(50):
        r, p, g = _mp(case)
        n = mp.mpf(n)
        vals = sorted({r[i] for i in range(len(r)) if p[i] > 0})
        total = mp.mpf(0)
        for v in vals:
            q = mp.fsum(p[i] for i in range(len(r)) if r[i] == v)
            mean = mp.fsum(p[i] * g[i] for i in range(len(r)) if r[i] == v) / q
            F = mp.fsum(p[i] for i in range(len(r)) if r[i] <= v)
            Fm = mp.fsum(p[i] for i in range(len(r)) if r[i] < v)
            total += (F**n - Fm**n) * mean
        return total


def _soft_brute(case, n, lam):
    """E[g(kept)] over all K^n draws; draw i kept with probability w_i / sum w."""
    with mp.workdps(50):
        r, p, g = _mp(case)
        w = [mp.exp(mp.mpf(lam) * x) for x in r]
        total = mp.mpf(0)
        for draw in itertools.product(range(len(r)), repeat=n):
            pr = mp.fprod(p[i] for i in draw)
            if pr == 0:
                continue
            sw = mp.fsum(w[i] for i in draw)
            total += pr * mp.fsum(w[i] * g[i] for i in draw) / sw
        return total


def _tilted_direct(case, lam):
    """``sum p e^{lam r} g / sum p e^{lam r}`` (``lam = inf``: ``E_p[g | argmax]``)."""
    with mp.workdps(50):
        r, p, g = _mp(case)
        idx = [i for i in range(len(r)) if p[i] > 0]
        if math.isinf(lam):
            top = max(r[i] for i in idx)
            idx = [i for i in idx if r[i] == top]
            w = [p[i] for i in idx]
        else:
            top = max(r[i] for i in idx)
            w = [p[i] * mp.exp(mp.mpf(lam) * (r[i] - top)) for i in idx]
        return mp.fsum(wi * g[i] for wi, i in zip(w, idx)) / mp.fsum(w)


# ----------------------------------------------------------------- oracle tests
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_best_of_n_gold_against_enumeration(case, n):
    b = kf.best_of_n(_ref(case), n=n)
    exact = _bon_brute(case, n)
    assert _rel(b.gold, exact) <= RTOL
    assert _rel(b.expect(CASES[case]["gold"]), exact) <= RTOL
    # the level formula agrees with the enumeration (the oracle checks itself, at 50 digits)
    with mp.workdps(50):
        assert abs(_bon_levels(case, n) - exact) <= mp.mpf(10) ** -40 * abs(exact)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("n", [1.5, 2.5, 37.0, 1e3, 1e12])
def test_best_of_n_gold_real_n_against_level_law(case, n):
    b = kf.best_of_n(_ref(case), n=n)
    assert _rel(b.gold, _bon_levels(case, n)) <= RTOL


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("n,lam", [(2, 0.7), (3, 3.0), (4, 1.3)])
def test_soft_best_of_n_gold_against_enumeration(case, n, lam):
    s = kf.soft_best_of_n(_ref(case), n=n, lam=lam)
    assert _rel(s.gold, _soft_brute(case, n, lam)) <= RTOL


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("lam", [0.0, 0.3, 2.0, 25.0, 400.0, math.inf])
def test_tilted_gold_against_direct_sum(case, lam):
    t = kf.tilted(_ref(case), lam=lam)
    assert _rel(t.gold, _tilted_direct(case, lam)) <= RTOL


@pytest.mark.parametrize("case", ["tied-top", "zero-prob"])
def test_saturated_tilt_is_the_gold_mean_on_the_argmax_set(case):
    ref = _ref(case)
    t = kf.tilted(ref, kl=ref.kl_max + 1.0)
    assert t.saturated
    assert _rel(t.gold, _tilted_direct(case, math.inf)) <= RTOL
    # best-of-N as N -> inf reaches the same law
    assert _rel(kf.best_of_n(ref, log_n=math.inf).gold, _tilted_direct(case, math.inf)) <= RTOL


# ----------------------------------------------------------------- identities
def _policies(ref):
    yield kf.tilted(ref, kl=0.0)
    yield kf.tilted(ref, lam=0.8)
    if not ref.is_constant:
        yield kf.tilted(ref, kl=min(0.3, 0.5 * ref.kl_max))
        yield kf.tilted(ref, kl=2 * ref.kl_max)
    for n in (1, 2, 7.5, 1e6):
        yield kf.best_of_n(ref, n=n)
    yield kf.soft_best_of_n(ref, n=5, lam=1.5)


@pytest.mark.parametrize("case", sorted(CASES))
def test_identities(case):
    ref = _ref(case)
    for pol in _policies(ref):
        assert pol.expect(ref.rewards) == pytest.approx(pol.reward, rel=1e-13, abs=1e-15)
        assert pol.expect(np.ones(ref.size)) == 1.0
        assert pol.expect(np.full(ref.size, 0.1)) == 0.1  # a constant is itself
        gold_is_proxy = kf.Reference(ref.rewards, logprobs=ref.logprobs, gold=ref.rewards)
        # same levels, same law: the gold of "gold = proxy" is the policy's reward
        same = dataclasses.replace(pol, ref=gold_is_proxy)
        assert same.gold == pytest.approx(pol.reward, rel=1e-13, abs=1e-15)
        # linearity: E[a g + b] = a E[g] + b
        g = np.asarray(CASES[case]["gold"])
        assert pol.expect(2.5 * g - 4.0) == pytest.approx(2.5 * pol.gold - 4.0, rel=1e-13, abs=1e-13)


@given(references(max_size=8), st.data())
def test_expect_equals_the_outcome_sum(ref, data):
    """``expect`` (through levels) equals ``sum_y pi(y) g(y)`` over the outcomes, in mpmath."""
    g = np.asarray(data.draw(st.lists(st.floats(-1e3, 1e3), min_size=ref.size, max_size=ref.size)))
    for pol in (
        kf.tilted(ref, lam=data.draw(st.floats(0.0, 50.0)) / max(ref.reward_scale, 1e-300)),
        kf.best_of_n(ref, n=data.draw(st.floats(1.0, 1e4))),
    ):
        pi = pol.probs
        with mp.workdps(50):
            terms = [mp.mpf(float(a)) * mp.mpf(float(b)) for a, b in zip(pi, g)]
            exact = mp.fsum(terms) / mp.fsum(mp.mpf(float(a)) for a in pi)
            spread = mp.fsum(abs(t) for t in terms)
        # error relative to sum |pi g| (the outcome law's own rounding is ~ K eps of it)
        assert abs(mp.mpf(pol.expect(g)) - exact) <= 1e-12 * spread + 1e-300
        assert pol.expect(ref.rewards) == pytest.approx(
            pol.reward, rel=1e-12, abs=1e-13 * max(abs(ref.r_min), abs(ref.r_max))
        )


# ----------------------------------------------------------------- level_mean
def test_level_mean_against_mpmath_with_tiny_masses():
    # a level made of outcomes of probability ~1e-300: its conditional mean is as accurate as any
    rewards = [0.0, 1.0, 1.0, 1.0, 2.0]
    logp = [math.log1p(-3e-300), math.log(1e-300), math.log(1.5e-300), math.log(0.5e-300), -800.0]
    x = [1.0, 3.0, -7.0, 11.0, 5.0]
    ref = kf.Reference(rewards, logprobs=logp, normalize=True)
    got = ref.level_mean(x)
    with mp.workdps(50):
        p = [mp.exp(mp.mpf(v)) for v in logp]
        exact1 = mp.fsum(p[i] * x[i] for i in (1, 2, 3)) / mp.fsum(p[i] for i in (1, 2, 3))
    assert got[0] == 1.0 and got[2] == 5.0
    assert _rel(got[1], exact1) <= 1e-13
    # and the tilted policy that moves the mass onto that level sees it
    t = kf.tilted(ref, lam=650.0)
    with mp.workdps(60):
        w = [p[i] * mp.exp(650 * (mp.mpf(rewards[i]) - 2)) for i in range(5)]
        exact = mp.fsum(wi * xi for wi, xi in zip(w, x)) / mp.fsum(w)
    assert _rel(t.expect(x), exact) <= RTOL


def test_level_mean_huge_values_of_both_signs_do_not_overflow():
    ref = kf.Reference([0.0, 0.0, 1.0, 1.0], probs=[0.25, 0.25, 0.25, 0.25])
    x = [1.5e308, -1.7e308, 1.7976931348623157e308, 1.7976931348623157e308]
    m = ref.level_mean(x)
    assert m[0] == pytest.approx(-1e307, rel=1e-14)
    assert m[1] == 1.7976931348623157e308  # a level of equal values: exact
    b = kf.best_of_n(ref, n=2)  # levels: (0.25, 0.75)
    assert b.expect(x) == pytest.approx(0.25 * -1e307 + 0.75 * 1.7976931348623157e308, rel=1e-14)
    tiny = ref.level_mean([1e-310, 3e-310, -2e-300, 4e-300])  # subnormals and tiny values
    assert tiny[0] == pytest.approx(2e-310, rel=1e-6) and tiny[1] == pytest.approx(1e-300, rel=1e-14)


def test_level_mean_is_centred_within_a_level():
    # values 1e8 + small: the first-pass sum would round the small parts; the corrected pass keeps them
    rng = np.random.default_rng(7)
    k = 10_000
    rewards = rng.integers(0, 3, k).astype(float)
    probs = rng.random(k)
    probs /= probs.sum()
    x = 1e8 + rng.standard_normal(k)
    ref = kf.Reference(rewards, probs=probs, normalize=True)
    got = ref.level_mean(x)
    with mp.workdps(40):
        for j, v in enumerate(ref.level_values):
            sel = np.flatnonzero(rewards == v)
            pw = [mp.mpf(float(probs[i])) for i in sel]
            exact = mp.fsum(a * mp.mpf(float(x[i])) for a, i in zip(pw, sel)) / mp.fsum(pw)
            # correctly rounded up to eps times the spread (~1) of x within the level, not
            # times its size (1e8); a plain weighted bincount is off by several ulps here
            assert abs(mp.mpf(got[j]) - exact) <= 0.5 * np.spacing(got[j]) + 1e-13


def test_level_expect_limits():
    assert level_expect([0.0], [4.25]) == 4.25
    assert level_expect([-np.inf, 0.0, -np.inf], [1e300, -2.0, np.nan]) == -2.0  # unreached levels ignored
    assert level_expect(np.log([0.5, 0.5]), [0.0, 0.0]) == 0.0


# ----------------------------------------------------------------- the gold argument
def test_reference_gold_is_validated_copied_and_read_only():
    g = np.array([1.0, 2.0, 3.0])
    ref = kf.Reference([0.0, 1.0, 2.0], probs=[0.5, 0.3, 0.2], gold=g)
    g[0] = 99.0
    assert ref.gold.tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError):
        ref.gold[0] = 5.0
    with pytest.raises(ValueError):
        ref.level_gold[0] = 5.0
    assert kf.Reference([0.0, 1.0], probs=[0.5, 0.5]).gold is None
    for bad, match in (
        ([1.0, 2.0], "gold must have one entry per outcome"),
        ([1.0, np.nan, 2.0], "gold contains NaN"),
        ([1.0, np.inf, 2.0], "gold contains inf"),
        ([[1.0, 2.0, 3.0]], "gold must be one-dimensional"),
        (["a", "b", "c"], "gold must be an array of real numbers"),
    ):
        with pytest.raises(ValueError, match=match):
            kf.Reference([0.0, 1.0, 2.0], probs=[0.5, 0.3, 0.2], gold=bad)
    with pytest.raises(ValueError, match="gold"):
        kf.Reference([0.0, 1.0, 2.0], logprobs=np.log([0.5, 0.3, 0.2]), gold=[1.0])


def test_expect_errors_name_values():
    pol = kf.best_of_n(_ref("tied-top"), n=3)
    for bad, match in (
        ([1.0, 2.0], "values must have one entry per outcome \\(4\\), got 2"),
        ([1.0, np.nan, 2.0, 0.0], "values contains NaN"),
        ([1.0, -np.inf, 2.0, 0.0], "values contains inf"),
        (np.ones((2, 2)), "values must be one-dimensional"),
        ([], "values is empty"),
    ):
        with pytest.raises(ValueError, match=match):
            pol.expect(bad)
        with pytest.raises(ValueError, match=match):
            pol.ref.level_mean(bad)


def test_gold_without_gold_is_none_and_to_dict_carries_it():
    plain = kf.best_of_n(kf.Reference([0.0, 1.0], probs=[0.5, 0.5]), n=4)
    assert plain.gold is None and "gold" not in plain.to_dict()
    pol = kf.best_of_n(_ref("tied-top"), n=4)
    s = pol.to_dict()
    assert s["gold"] == pol.gold
    json.dumps(to_jsonable(s), allow_nan=False)


def test_from_samples_with_gold():
    r, g = [0.0, 1.0, 1.0, 2.0], [3.0, 1.0, 5.0, -1.0]
    ref = kf.Reference.from_samples(r, gold=g)
    assert ref.level_gold.tolist() == [3.0, 3.0, -1.0]
    # weighted samples: the gold mean of the tied level is weighted too
    w = kf.Reference.from_samples(r, weights=[1.0, 1.0, 3.0, 1.0], gold=g)
    assert w.level_gold[1] == pytest.approx(4.0, rel=1e-15)
    # theory §9 from samples: best-of-N chosen by the proxy on the empirical law, by enumeration
    b = kf.best_of_n(ref, n=2)
    exact = sum(
        0.25 * 0.25 * (np.mean([g[i] for i in (a, c) if r[i] == max(r[a], r[c])]))
        for a in range(4)
        for c in range(4)
    )
    assert b.gold == pytest.approx(exact, rel=1e-14)
    with pytest.raises(ValueError, match="gold must have one entry per outcome"):
        kf.Reference.from_samples(r, gold=[1.0])
