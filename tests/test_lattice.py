"""The lattice kernel (klfrontier.lattice): detection, given spans, tolerance policy."""

from __future__ import annotations

import numpy as np
import pytest

from klfrontier import NotOnLatticeError, Reference
from klfrontier.lattice import (
    MAX_STEPS,
    RTOL,
    LatticeFit,
    check_span,
    find_lattice,
    resolve_lattice,
)

# VADER's valence levels: decimals k/10 from -3.9 to 3.4, as the lexicon parses them
VADER_LIKE = np.array([float(f"{k / 10:.1f}") for k in range(-39, 35)])


# ----------------------------------------------------------------- detection
@pytest.mark.parametrize("irr", [np.sqrt(2), np.pi, np.e, (1 + np.sqrt(5)) / 2, np.sqrt(3) - 1])
def test_irrational_levels_rejected(irr):
    assert find_lattice([0.0, 1.0, irr]) is None
    assert find_lattice([-2.0, 0.0, 2.0 * irr]) is None


def test_random_levels_rarely_pass():
    # Dirichlet: a search to N steps at tolerance rtol passes a random level with
    # probability ~ rtol N^2 (4e-3 for the policy); with two free levels, ~never.
    rng = np.random.default_rng(20240607)
    three = sum(find_lattice([0.0, rng.uniform(0.01, 0.99), 1.0]) is not None for _ in range(300))
    four = sum(find_lattice([0.0, *rng.uniform(0.01, 0.99, 2), 1.0]) is not None for _ in range(300))
    assert three <= 5 and four == 0


def test_decimal_grids_accepted_despite_float_error():
    fit = find_lattice(VADER_LIKE)
    assert fit.a == -3.9 and fit.h == pytest.approx(0.1, rel=1e-14)
    assert fit.ks.tolist() == list(range(74))
    # the same grid computed in floats (0.1 * k is off k/10 by up to 4e-16)
    computed = np.arange(-39, 35) * 0.1
    assert np.abs(computed - VADER_LIKE).max() > 0
    fit2 = find_lattice(computed)
    assert fit2.ks.tolist() == list(range(74)) and fit2.h == pytest.approx(0.1, rel=1e-14)
    # accumulated rounding: 0.1 + 0.2 is not 0.3
    assert find_lattice([0.0, 0.1 + 0.2, 0.7]).ks.tolist() == [0, 3, 7]


def test_offsets():
    fit = find_lattice([7.25, 8.75, 9.25])  # 7.25 + 0.5 {0, 3, 4}
    assert (fit.a, fit.h, fit.ks.tolist()) == (7.25, 0.5, [0, 3, 4])
    fit = find_lattice([-0.7, 0.5, 2.3])  # -0.7 + 0.6 {0, 2, 5}
    assert fit.a == -0.7 and fit.h == pytest.approx(0.6, rel=1e-14) and fit.ks.tolist() == [0, 2, 5]
    # an offset that is not on the span's multiples: a = 1/3
    fit = find_lattice(np.array([1.0, 4.0, 10.0]) / 3.0)
    assert fit.h == pytest.approx(1.0, rel=1e-14) and fit.ks.tolist() == [0, 1, 3]


def test_single_level():
    assert find_lattice([2.5]) is None
    assert find_lattice([2.5, 2.5, 2.5]) is None
    fit = check_span([2.5, 2.5], 0.5)  # the grid itself
    assert (fit.a, fit.h, fit.ks.tolist()) == (2.5, 0.5, [0, 0])
    assert resolve_lattice([2.5], 0.5) is None  # a constant reward has no lattice to use
    assert resolve_lattice([2.5], None) is None


def test_gcd_gives_maximal_span():
    fit = find_lattice([0.0, 0.6, 0.9])
    assert fit.ks.tolist() == [0, 2, 3] and fit.h == pytest.approx(0.3, rel=1e-14)
    fit = find_lattice([0.0, 2.0, 6.0])
    assert (fit.h, fit.ks.tolist()) == (2.0, [0, 1, 3])
    # a given span finer than needed: h times the gcd of the indices
    fit = check_span([0.0, 2.0, 6.0], 0.5)
    assert (fit.h, fit.ks.tolist()) == (2.0, [0, 1, 3])
    fit = check_span([0.0, 0.2, 0.6], 0.1)
    assert fit.h == pytest.approx(0.2) and fit.ks.tolist() == [0, 1, 3]
    # on the grid h Z, the maximal span of the values' own lattice
    assert check_span([0.1, 0.3, 0.7], 0.1, origin=0.0).h == pytest.approx(0.2)
    assert check_span([0.0, 0.2, -0.4], 0.1, origin=0.0).h == pytest.approx(0.2)


def test_repeats_and_order_keep_alignment():
    vals = [0.9, 0.0, 0.6, 0.9, 0.0]
    fit = find_lattice(vals)
    assert fit.ks.tolist() == [3, 0, 2, 3, 0]
    np.testing.assert_allclose(fit.a + fit.h * fit.ks, vals, rtol=0, atol=1e-15)
    assert check_span(vals, 0.1).ks.tolist() == [3, 0, 2, 3, 0]


def test_max_steps():
    assert find_lattice([0.0, 1.0, float(MAX_STEPS)]).ks.tolist() == [0, 1, MAX_STEPS]
    assert find_lattice([0.0, 1.0, MAX_STEPS + 1.0]) is None
    assert find_lattice([0.0, 1.0, MAX_STEPS + 1.0], max_steps=10**5).h == 1.0
    assert find_lattice([0.0, 0.3, 1.0], max_steps=9) is None
    # a given span is not limited by max_steps, only by what the tolerance resolves
    assert check_span([0.0, 1.0, 1e6 + 1.0], 1.0).ks.tolist() == [0, 1, 1_000_001]


# ------------------------------------------------------------ tolerance policy
def test_tolerance_is_relative_to_the_range():
    base = np.array([0.0, 3.0, 10.0])  # range 10, span 1
    assert find_lattice(base + [0, 5e-12, 0]).h == pytest.approx(1.0)  # 5e-13 of the range
    assert find_lattice(base + [0, 1e-9, 0]) is None  # 1e-10 of the range
    assert check_span(base + [0, 5e-12, 0], 1.0).h == 1.0
    with pytest.raises(NotOnLatticeError, match="off the grid"):
        check_span(base + [0, 1e-9, 0], 1.0)
    # the same relative offsets after scaling the rewards by 1e6: same verdicts
    assert find_lattice((base + [0, 5e-12, 0]) * 1e6) is not None
    assert find_lattice((base + [0, 1e-9, 0]) * 1e6) is None
    assert RTOL == 1e-12


def test_distinct_values_on_one_grid_point():
    vals = [0.3, 0.1 + 0.2, 0.6]  # two distinct levels 6e-17 apart
    assert find_lattice(vals) is None
    with pytest.raises(NotOnLatticeError, match="same grid point"):
        check_span(vals, 0.1)


def test_extreme_values():
    fit = find_lattice([-1e300, 0.0, 1e300])
    assert (fit.a, fit.h, fit.ks.tolist()) == (-1e300, 1e300, [0, 1, 2])
    assert find_lattice([-1.5e308, 1.5e308]) is None  # the span overflows
    fit = check_span([-1e300, 0.0, 1e300], 5e299)
    assert (fit.h, fit.ks.tolist()) == (1e300, [0, 1, 2])
    assert find_lattice([0.0, 1e-300, 3e-300]).ks.tolist() == [0, 1, 3]


# -------------------------------------------------------------------- errors
@pytest.mark.parametrize("h", [0.0, -1.0, np.nan, np.inf, "x", None, True, [0.1, 0.2]])
def test_bad_h_names_h(h):
    with pytest.raises(ValueError, match="h must be positive"):
        check_span([0.0, 1.0], h)
    with pytest.raises(ValueError, match="^span must be positive"):
        check_span([0.0, 1.0], h, name="span")


def test_off_grid_h_names_h_and_value():
    with pytest.raises(NotOnLatticeError, match=r"h=0.15: the values do not lie on min\(values\) \+ 0.15 Z"):
        check_span([0.0, 0.2, 0.6], 0.15)
    with pytest.raises(ValueError, match=r"h=0.1: .* on 0.0 \+ 0.1 Z"):
        check_span([0.05, 0.15], 0.1, origin=0.0)  # on 0.05 + 0.1Z but not on 0.1Z
    assert check_span([0.05, 0.15], 0.1).h == 0.1
    with pytest.raises(NotOnLatticeError, match="cannot resolve"):
        check_span([0.0, 1.0], 1e-10)  # 1e10 steps: tolerance > 1e-3 step


def test_bad_values_and_options():
    with pytest.raises(ValueError, match="values is empty"):
        find_lattice([])
    with pytest.raises(ValueError, match="values must be finite"):
        find_lattice([0.0, np.nan])
    with pytest.raises(ValueError, match="values must be finite"):
        check_span([0.0, np.inf], 1.0)
    with pytest.raises(ValueError, match="rtol"):
        find_lattice([0.0, 1.0], rtol=0.0)
    with pytest.raises(ValueError, match="max_steps"):
        find_lattice([0.0, 1.0], max_steps=0)
    with pytest.raises(ValueError, match="origin"):
        check_span([0.0, 1.0], 1.0, origin=np.nan)


def test_resolve_lattice_argument():
    vals = [0.0, 1.0, 2.0]
    assert resolve_lattice(vals).h == 1.0 and resolve_lattice(vals).ks.tolist() == [0, 1, 2]
    assert resolve_lattice(vals, False) is None
    assert resolve_lattice(vals, 0.5).h == 1.0
    with pytest.raises(ValueError, match=r"lattice must be None, False or a positive span \(got True\)"):
        resolve_lattice(vals, True)
    with pytest.raises(ValueError, match="lattice must be None, False or a positive span, got 'x'"):
        resolve_lattice(vals, "x")
    with pytest.raises(ValueError, match="lattice must be a positive span, got -1.0"):
        resolve_lattice(vals, -1.0)
    with pytest.raises(ValueError, match="lattice=0.3"):
        resolve_lattice(vals, 0.3)
    with pytest.raises(ValueError, match="^span="):
        resolve_lattice(vals, 0.3, name="span")


# ------------------------------------------------ one policy for every engine
@pytest.mark.parametrize(
    "vals",
    [
        VADER_LIKE,
        [0.0, 1.0],
        [-0.3, 0.2, 0.7, 1.0],
        [0.0, 0.6, 0.9],
        np.arange(-5, 6) * 1.0,
        np.arange(81) * 0.1 - 4.0,
    ],
)
def test_detected_span_passes_its_own_check(vals):
    fit = find_lattice(vals)
    again = check_span(vals, fit.h)
    assert isinstance(again, LatticeFit)
    assert again.h == fit.h and again.ks.tolist() == fit.ks.tolist()


def test_detect_lattice_and_instances_agree():
    from klfrontier.instances import lattice_span
    from klfrontier.lattice import detect_lattice

    for vals in (VADER_LIKE, [0.1 * k for k in (-3, 2, 7, 10)], [0.0, 1.0, np.sqrt(2)]):
        ref = Reference(vals, probs=np.full(len(vals), 1.0 / len(vals)))
        seq = detect_lattice(ref)
        if seq is None:
            continue
        # sequences.convergence hands its span to equivalence: it must pass unchanged
        again = detect_lattice(ref, lattice=seq.h)
        assert (again.a, again.h) == (seq.a, seq.h)
        assert again.ks.tolist() == seq.ks.tolist()
    assert lattice_span(VADER_LIKE, 0.1) == 0.1
