"""The shared argument checks (klfrontier._validate): one rule and one message per idea."""

import math

import numpy as np
import pytest

from klfrontier._validate import float_or_array, prob_array, real_array, real_scalar
from klfrontier.bon import bon_kl_bound, bon_kl_from_eps
from klfrontier.divergences import kl
from klfrontier.empirical.single import tilted_gain_cov, unbiased_bon_reward
from klfrontier.optimality import optimality
from klfrontier.reference import Reference

REF = Reference([0.0, 1.0], probs=[0.5, 0.5])


@pytest.mark.parametrize("x", [0.5, np.float64(0.5), np.array(0.5), np.float32(0.5), 1])
def test_float_or_array_gives_a_python_float_for_a_scalar(x):
    out = float_or_array(x)
    assert type(out) is float and out == float(x)


def test_float_or_array_leaves_arrays_alone():
    a = np.array([1.0, 2.0])
    assert float_or_array(a) is a
    b = np.ones((2, 0))
    assert float_or_array(b) is b


@pytest.mark.parametrize(
    "x, message",
    [
        ([], "p is empty"),
        ([0.5, np.nan], "p contains NaN"),
        ([0.5, np.inf], "p contains inf"),
        ([0.5, -1e-300], "p contains negative values"),
        (["a", "b"], "p must be real numbers"),
    ],
)
def test_prob_array_names_the_argument(x, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        prob_array(x, "p")


@pytest.mark.parametrize(
    "x, message",
    [
        ([0.5, np.nan], "p contains NaN"),
        ([0.5, np.inf], "p contains inf"),
        ([np.inf, np.nan], "p contains NaN"),
        ([0.5, -np.inf], "p contains inf"),
        ([0.5, -1e-300], "p contains negative values"),
        ([], "p is empty"),
    ],
)
def test_prob_array_names_nan_and_inf_apart(x, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        prob_array(x, "p")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Reference([0.0, 1.0], probs=[0.5, np.inf]), "^probs contains inf$"),
        (lambda: Reference([0.0, 1.0], probs=[np.nan, 0.5]), "^probs contains NaN$"),
        (lambda: Reference([0.0, 1.0], probs=[1.5, -0.5]), "^probs contains negative values$"),
        (lambda: Reference([0.0, 1.0], probs=[0.0, 0.0]), "^probs: every outcome has probability zero$"),
        (lambda: Reference.from_samples([0.0, 1.0], weights=[1.0, -np.inf]), "^weights contains inf$"),
        (lambda: optimality(REF, policy=[0.5, np.inf]), "^policy contains inf$"),
        (lambda: optimality(REF, policy=[np.nan, 0.5]), "^policy contains NaN$"),
        (lambda: optimality(REF, policy=[1.5, -0.5]), "^policy contains negative values$"),
        (lambda: optimality(REF, policy_logprobs=[np.nan, 0.0]), "^policy_logprobs contains NaN$"),
    ],
)
def test_mass_checks_of_the_models_go_through_prob_array(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_prob_array_keeps_values_and_does_not_renormalise():
    out = prob_array([[0.2, 0.3], [0.0, 7.0]], "p")
    assert out.dtype == np.float64 and out.tolist() == [[0.2, 0.3], [0.0, 7.0]]


def test_real_array_and_real_scalar_messages():
    with pytest.raises(ValueError, match="^x is empty$"):
        real_array([], "x")
    with pytest.raises(ValueError, match="^x contains NaN$"):
        real_array([1.0, math.nan], "x")
    with pytest.raises(ValueError, match="^x must be a scalar"):
        real_scalar([1.0, 2.0], "x")
    with pytest.raises(ValueError, match="^x must be finite$"):
        real_scalar(math.inf, "x")
    assert real_scalar(math.inf, "x", allow_inf=True) == math.inf


def test_public_functions_return_python_floats_through_the_shared_rule():
    out = kl([0.5, 0.5], [0.9, 0.1])
    assert type(out) is float
    assert out == pytest.approx(0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1), rel=1e-14)
    batch = kl(np.full((3, 2), 0.5), [0.9, 0.1])
    assert isinstance(batch, np.ndarray) and batch.shape == (3,)


@pytest.mark.parametrize(
    "fn",
    [
        REF.to_u,
        REF.to_reward,
        REF.lam_to_u,
        REF.lam_from_u,
        bon_kl_bound,
        lambda x: bon_kl_from_eps(np.clip(np.abs(x), 1e-3, 1.0), n=4),
        lambda n: unbiased_bon_reward([0.0, 1.0, 3.0], np.clip(np.abs(n), 1, 3).round()),
        lambda lam: tilted_gain_cov([0.0, 1.0, 3.0], np.abs(lam)),
    ],
)
@pytest.mark.parametrize("scalar", [2.0, np.float64(2.0), np.array(2.0)])
def test_model_functions_return_floats_for_scalars_and_arrays_for_arrays(fn, scalar):
    out = fn(scalar)
    assert type(out) is float
    arr = fn(np.array([2.0, 3.0]))
    assert isinstance(arr, np.ndarray) and arr.shape == (2,)
    assert arr[0] == out


def test_policy_to_dict_holds_plain_python_values():
    from klfrontier.bon import best_of_n

    d = best_of_n(REF, n=np.float64(2.0)).to_dict()
    assert d["method"] == "best_of_n"
    for k, v in d.items():
        assert v is None or type(v) in (float, int, bool, str), (k, type(v))
