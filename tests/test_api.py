"""The API conventions of docs/conventions.md, checked on every public name.

Keyword-only method parameters, one name per idea (``lam``, ``length``,
``seed``, ``to_dict``), typed policies with real attributes, and a
``Reference`` that owns its (read-only) state.
"""

import dataclasses
import inspect
import math
from fractions import Fraction

import mpmath as mp
import numpy as np
import pytest

import klfrontier as kf
import klfrontier.sequences as ks
from klfrontier.policy import BestOfNPolicy, Policy, SoftBestOfNPolicy, TiltedPolicy

REF = kf.Reference([0.0, 1.0, 1.0, 2.5], probs=[0.4, 0.1, 0.2, 0.3])

#: Parameters that tune a method: never positional.
METHOD_PARAMS = {
    "lam",
    "beta",
    "log_n",
    "lattice",
    "method",
    "seed",
    "alpha",
    "axis",
    "form",
    "order",
    "normalize",
    "logprobs",
    "policy_logprobs",
    "samples",
}
#: Functions *of* lam (its cumulants, its conversion): there lam is the subject.
LAM_IS_THE_SUBJECT = {"cumulants", "Reference.lam_to_u", "Lattice.stats"}
#: Old names of ideas that have one name now.
RETIRED_NAMES = {"rng", "m", "policy_probs", "params"}


def _public_callables():
    seen = set()
    for mod in (kf, ks):
        for name in mod.__all__:
            obj = getattr(mod, name)
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if inspect.isfunction(obj):
                yield name, obj
            elif inspect.isclass(obj) and not issubclass(obj, BaseException):
                if not dataclasses.is_dataclass(obj):
                    yield f"{name}.__init__", obj.__init__
                for attr, fn in vars(obj).items():
                    if inspect.isfunction(fn) and not attr.startswith("_"):
                        yield f"{name}.{attr}", fn


PUBLIC = dict(_public_callables())


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_method_parameters_are_keyword_only(name):
    sig = inspect.signature(PUBLIC[name])
    positional = [
        p.name for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    allowed = {"lam"} if name in LAM_IS_THE_SUBJECT else set()
    assert not (set(positional) & METHOD_PARAMS) - allowed, (name, str(sig))


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_one_name_per_idea_in_signatures(name):
    params = set(inspect.signature(PUBLIC[name]).parameters)
    assert not params & RETIRED_NAMES, (name, params & RETIRED_NAMES)


def test_results_use_to_dict_only():
    classes = [getattr(m, n) for m in (kf, ks) for n in m.__all__ if inspect.isclass(getattr(m, n))]
    classes += [TiltedPolicy, BestOfNPolicy, SoftBestOfNPolicy]
    for cls in classes:
        assert not hasattr(cls, "summary") and not hasattr(cls, "as_dict"), cls.__name__
    for cls in (
        kf.Policy,
        kf.Optimality,
        kf.RewardLaw,
        kf.ConvergenceTable,
        kf.Analysis,
        ks.SequenceTilted,
        ks.SequenceBoN,
        ks.MarkovTilted,
        ks.MarkovBoN,
    ):
        assert callable(getattr(cls, "to_dict", None)), cls.__name__


# ------------------------------------------------------------------ typed policies
def _policies():
    return [
        kf.tilted(REF, kl=0.2),
        kf.tilted(REF, lam=0.0),
        kf.tilted(REF, kl=50.0),
        kf.best_of_n(REF, n=3),
        kf.soft_best_of_n(REF, n=3, lam=1.5),
    ]


def test_each_method_returns_its_typed_policy():
    kinds = [type(p) for p in _policies()]
    assert kinds == [TiltedPolicy] * 3 + [BestOfNPolicy, SoftBestOfNPolicy]
    for pol in _policies():
        assert isinstance(pol, Policy)
        assert kf.TiltedPolicy is TiltedPolicy and kf.BestOfNPolicy is BestOfNPolicy


@pytest.mark.parametrize(
    "cls, own",
    [
        (TiltedPolicy, {"lam", "saturated", "kl_budget", "regularized_value"}),
        (BestOfNPolicy, {"n", "log_n", "kl_bound", "lam_same_kl", "lam_same_reward"}),
        (SoftBestOfNPolicy, {"n", "log_n", "lam", "sum_error"}),
    ],
)
def test_policy_fields_are_real_documented_attributes(cls, own):
    names = {f.name for f in dataclasses.fields(cls)}
    assert names == {"ref", "level_logprobs", "kl", "reward", "reward_gain"} | own
    doc = inspect.getdoc(cls)
    for name in own:
        assert f"{name} :" in doc, (cls.__name__, name)  # numpydoc Attributes entry
    pol = next(p for p in _policies() if type(p) is cls)
    assert own <= set(dir(pol))
    for name in own:
        getattr(pol, name)  # no __getattr__ indirection
    with pytest.raises(AttributeError):
        pol.params  # noqa: B018


def test_policies_are_immutable():
    for pol in _policies():
        with pytest.raises(dataclasses.FrozenInstanceError):
            pol.kl = 0.0
        with pytest.raises(ValueError, match="read-only"):
            pol.level_logprobs[0] = 0.0


def test_policy_to_dict_matches_attributes_and_is_plain():
    for pol in _policies():
        d = pol.to_dict()
        assert d["method"] == pol.method and d["kl"] == pol.kl and d["reward"] == pol.reward
        assert d["win_rate"] == pol.win_rate
        own = {f.name for f in dataclasses.fields(pol)} - {f.name for f in dataclasses.fields(Policy)}
        assert set(d) == {"method", "kl", "reward", "win_rate"} | own
        for k in own:
            v = getattr(pol, k)
            assert d[k] == v or (v is not None and math.isnan(v) and math.isnan(d[k]))
            assert d[k] is None or type(d[k]) in (float, bool)


def test_base_policy_validates_its_inputs():
    with pytest.raises(ValueError, match=r"level_logprobs must have shape \(3,\)"):
        Policy(ref=REF, level_logprobs=[0.0], kl=0.0, reward=1.0)
    with pytest.raises(ValueError, match="ref must be a klfrontier.Reference"):
        Policy(ref=[0.0, 1.0], level_logprobs=[0.0], kl=0.0, reward=1.0)
    with pytest.raises(TypeError):
        Policy(REF, REF.level_logq, 0.0, 1.0)  # fields are keyword-only


def test_tilted_fields_against_mpmath():
    pol = kf.tilted(REF, lam=0.7)
    with mp.workdps(40):
        w = [mp.mpf(p) * mp.exp(mp.mpf("0.7") * mp.mpf(r)) for p, r in zip(REF.probs, REF.rewards)]
        z = mp.fsum(w)
        value = mp.log(z) / mp.mpf("0.7")  # beta Lambda(1/beta)
        mean = mp.fsum(wi * mp.mpf(r) for wi, r in zip(w, REF.rewards)) / z
        gain = mean - mp.fsum(mp.mpf(p) * mp.mpf(r) for p, r in zip(REF.probs, REF.rewards))
    assert pol.lam == 0.7 and not pol.saturated and pol.kl_budget is None
    assert pol.beta == pytest.approx(1 / 0.7, rel=1e-15)
    assert pol.regularized_value == pytest.approx(float(value), rel=1e-14)
    assert pol.reward_gain == pytest.approx(float(gain), rel=1e-13)
    sat = kf.tilted(REF, kl=50.0)
    assert sat.saturated and sat.lam == math.inf and sat.beta == 0.0 and sat.kl_budget == 50.0
    assert sat.regularized_value is None
    zero = kf.tilted(REF, lam=0.0)
    assert zero.beta == math.inf and zero.regularized_value is None and zero.reward_gain == 0.0


# -------------------------------------------------------------- renamed signatures
def test_soft_best_of_n_takes_log_n_and_keyword_lam():
    a = kf.soft_best_of_n(REF, 3, lam=1.5)
    b = kf.soft_best_of_n(REF, log_n=math.log(3), lam=1.5)
    np.testing.assert_allclose(b.level_probs, a.level_probs, rtol=1e-12)
    assert b.log_n == math.log(3) and a.log_n == math.log(3)
    assert kf.soft_best_of_n(REF, log_n=math.inf, lam=1.5).n == math.inf
    with pytest.raises(TypeError):
        kf.soft_best_of_n(REF, 3, 1.5)  # lam is keyword-only
    with pytest.raises(ValueError, match="give exactly one of n= or log_n="):
        kf.soft_best_of_n(REF, 3, log_n=1.0, lam=1.5)
    with pytest.raises(ValueError, match="log_n must be >= 0"):
        kf.soft_best_of_n(REF, log_n=-1.0, lam=1.5)
    with pytest.raises(ValueError, match="log_n = 800 is too large"):
        kf.soft_best_of_n(REF, log_n=800.0, lam=1.5)


def test_optimality_takes_a_policy_or_an_array():
    bon = kf.best_of_n(REF, n=4)
    a, b = kf.optimality(REF, bon), kf.optimality(REF, bon.probs)
    da, db = a.to_dict(), b.to_dict()
    assert da.keys() == db.keys()
    for k in da:
        assert da[k] == pytest.approx(db[k], rel=1e-14, abs=1e-15), k
    assert kf.optimality(REF, policy=bon).kl == a.kl
    with pytest.raises(ValueError, match="policy contains NaN"):
        kf.optimality(REF, [0.5, np.nan, 0.2, 0.3])


def test_beirami_names_say_what_they_compute():
    # bon_kl_from_eps: the closed form at given eps; bon_kl_beirami: its mean under pi_N
    n, eps = 4, Fraction(1, 4)
    c = 1 - eps
    want = float(c**n) * (math.log(n) + (n - 1) * math.log(c) - (n - 1) / n) + float(1 - c**n) * math.log(
        float((1 - c**n) / eps)
    )
    assert kf.bon_kl_from_eps(0.25, n=4) == pytest.approx(want, rel=1e-14)
    bon = kf.best_of_n(REF, n=4)
    mean = float(bon.probs @ kf.bon_kl_from_eps(REF.probs, n=4))
    assert kf.bon_kl_beirami(REF, n=4) == pytest.approx(mean, rel=1e-13)
    assert not hasattr(kf, "bon_kl_estimate") and not hasattr(kf, "bon_kl_estimator")


def test_seed_not_rng():
    a = REF.sample(50, seed=3)
    assert np.array_equal(a, REF.sample(50, seed=np.random.default_rng(3)))
    mc = kf.bon_monte_carlo(REF, 5, n=4, size=100, seed=1)
    assert mc.mean == kf.bon_monte_carlo(REF, 5, n=4, size=100, seed=1).mean
    with pytest.raises(TypeError):
        REF.sample(5, rng=0)


def test_divergence_parameters_are_keywords():
    p, q = [0.25, 0.75], [0.5, 0.5]
    assert kf.renyi_divergence(p, q, alpha=1.0) == pytest.approx(kf.kl(p, q), rel=1e-15)
    with pytest.raises(TypeError):
        kf.renyi_divergence(p, q, 2.0)
    with pytest.raises(TypeError):
        kf.kl(p, q, -1)


# ------------------------------------------------------ sequence results, one protocol
def test_sequence_results_share_the_policy_names():
    seq = kf.Memoryless(kf.Reference([0.0, 1.0], probs=[0.7, 0.3]), length=20)
    mk = kf.Markov([0.5, 0.5], [[0.9, 0.1], [0.2, 0.8]], [0.0, 1.0], length=20)
    single = kf.tilted(kf.Reference([0.0, 1.0], probs=[0.7, 0.3]), lam=0.5)
    for res in (seq.tilted(lam=0.5), mk.tilted(lam=0.5)):
        d = res.to_dict()
        for k in ("kl", "reward", "lam", "saturated", "kl_budget", "length"):
            assert k in d and hasattr(single, k) or k == "length", k
            assert d[k] == getattr(res, k)
    bon_single = kf.best_of_n(kf.Reference([0.0, 1.0], probs=[0.7, 0.3]), n=4)
    for res in (seq.best_of_n(n=4), mk.best_of_n(n=4)):
        d = res.to_dict()
        for k in ("kl", "reward", "lam", "n", "log_n", "kl_bound"):
            assert d[k] == getattr(res, k)
            assert k == "lam" or hasattr(bon_single, k)
        assert res.n == 4.0 and res.log_n == pytest.approx(math.log(4), rel=1e-15)


def test_reward_law_to_dict():
    law = kf.reward_law(kf.Reference([0.0, 1.0], probs=[0.5, 0.5]), 3)
    d = law.to_dict()
    assert d["values"] == [0.0, 1.0, 2.0, 3.0] and d["length"] == 3
    np.testing.assert_allclose(np.exp(d["logpmf"]), [1 / 8, 3 / 8, 3 / 8, 1 / 8], rtol=1e-14)
    assert d["mean"] == pytest.approx(1.5, rel=1e-15)


# ------------------------------------------------------ the reference owns its state
@pytest.mark.parametrize(
    "attr", ["rewards", "logprobs", "level_values", "level_logq", "level_u", "level_index", "gold"]
)
def test_reference_arrays_are_read_only(attr):
    ref = kf.Reference([0.0, 2.0, 2.0, 5.0], probs=[0.1, 0.2, 0.3, 0.4], gold=[1.0, 2.0, 3.0, 4.0])
    a = getattr(ref, attr)
    with pytest.raises(ValueError, match="read-only"):
        a[0] = a[-1]
    with pytest.raises(ValueError, match="read-only"):
        a += a


def test_reference_does_not_share_the_callers_array():
    r = np.array([0.0, 1.0, 3.0])
    ref = kf.Reference(r, probs=[0.2, 0.3, 0.5])
    r[0] = 100.0
    assert ref.rewards.tolist() == [0.0, 1.0, 3.0] and ref.r_min == 0.0
    assert r.flags.writeable  # the caller's array is left alone


def test_half_range_and_unit_conversions_exact():
    ref = kf.Reference([-3.0, 0.5, 5.0], probs=[0.2, 0.3, 0.5])
    assert ref.half_range == 4.0
    # u = (r - r_max) / (r_max - r_min), exactly for dyadic values
    for r in (-3.0, 0.5, 5.0, 1.0):
        assert ref.to_u(r) == float((Fraction(r) - 5) / 8)
        assert ref.to_reward(ref.to_u(r)) == r
    np.testing.assert_array_equal(ref.to_u(ref.level_values), ref.level_u)
    huge = kf.Reference([-1.5e308, 1.5e308], probs=[0.5, 0.5])
    assert huge.half_range == 1.5e308 and huge.to_u(0.0) == -0.5  # no overflow
    const = kf.Reference([2.0, 2.0], probs=[0.5, 0.5])
    assert const.half_range == 0.0 and const.to_u([2.0, 2.0]).tolist() == [0.0, 0.0]


def test_no_module_reads_private_reference_state():
    import pathlib

    src = pathlib.Path(kf.__file__).parent
    for path in src.rglob("*.py"):
        if path.name == "reference.py":
            continue
        assert "._half_range" not in path.read_text(), path


def test_sequence_names_load_on_first_use():
    """``import klfrontier`` leaves the sequence engines unloaded; their public names still work."""
    import subprocess
    import sys

    code = (
        "import sys, klfrontier as kf; "
        "assert 'klfrontier.sequences' not in sys.modules, 'sequences loaded eagerly'; "
        "assert kf.Markov.__name__ == 'Markov' and 'klfrontier.sequences' in sys.modules; "
        "from klfrontier import convergence, Memoryless; "
        "assert callable(convergence) and Memoryless.__name__ == 'Memoryless'; "
        "assert {'Markov', 'convergence', 'reward_law'} <= set(dir(kf))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        kf.nonexistent  # noqa: B018
