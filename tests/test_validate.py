"""The shared argument checks (klfrontier._validate): one rule and one message per idea."""

import math

import numpy as np
import pytest

from klfrontier._validate import float_or_array, prob_array, real_array, real_scalar
from klfrontier.divergences import kl


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
        ([0.5, np.nan], "p contains NaN or inf"),
        ([0.5, np.inf], "p contains NaN or inf"),
        ([0.5, -1e-300], "p contains negative values"),
        (["a", "b"], "p must be real numbers"),
    ],
)
def test_prob_array_names_the_argument(x, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        prob_array(x, "p")


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
