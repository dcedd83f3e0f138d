"""The BoN–RL equivalence, computed exactly up to m = 10^5 (theory §6)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from klfrontier import Reference
from klfrontier.sequences import Memoryless, convergence
from klfrontier.tilt import solve_lam_for_kl, tilt_stats

SQRT2 = 2**0.5
THREE = Reference([0.0, 1.0, SQRT2], probs=[0.5, 0.3, 0.2])
BERN = Reference([0.0, 1.0], probs=[0.7, 0.3])
LENGTHS = [10, 100, 1000, 10_000, 100_000]


def _second_order_gap(ref, delta, m):
    """theory §6 non-lattice prediction, from the per-token λ and σ² alone."""
    lam = float(solve_lam_for_kl(ref, delta))
    lam_u = float(ref.lam_to_u(lam))
    var = float(tilt_stats(ref, [lam_u]).var[0]) * ref.reward_scale**2
    return (0.5 * np.log(2 * np.pi * m * lam**2 * var) - np.euler_gamma) / (m * lam)


def test_spec_second_order_ratios():
    """theory §6: exact gap / prediction = 1.20, 1.11, 1.05, 1.03 at m = 25, 50, 100, 200."""
    ratios = []
    for m in (25, 50, 100, 200):
        b = Memoryless(THREE, m).best_of_n(log_n=0.1 * m)
        assert b.method == "types" and b.exact
        ratios.append(b.reward_gap_per_token / _second_order_gap(THREE, 0.1, m))
    assert np.round(ratios, 2).tolist() == [1.20, 1.11, 1.05, 1.03]
    tab = convergence(THREE, 0.1, lengths=[25, 50, 100, 200])
    assert np.round([r["gap_ratio"] for r in tab.rows], 2).tolist() == [1.20, 1.11, 1.05, 1.03]


def _check_limits(tab, delta):
    rows = tab.rows
    gaps = np.array([r["gap"] for r in rows])
    klm = np.array([r["kl_per_token"] for r in rows])
    klo = np.array([r["kl_to_optimal_per_token"] for r in rows])
    assert all(r["exact"] for r in rows)
    assert (gaps > 0).all() and (np.diff(gaps) < 0).all()  # E[S]/m -> R*(delta) from below
    assert gaps[-1] < gaps[0] / 100
    assert (klm < delta).all() and (np.diff(klm) > 0).all()  # KL/m -> delta from below
    assert delta - klm[-1] < 2e-4
    assert (np.diff(klo) < 0).all() and klo[-1] < 1e-4  # KL(pi_N || phi)/m -> 0
    totals = np.array([r["kl_to_optimal"] for r in rows])
    assert (np.diff(totals) > 0).all()  # ... while the total grows ~ ½ log m


def test_equivalence_bernoulli_exact_to_1e5():
    tab = convergence(BERN, 0.1, lengths=LENGTHS)
    assert [r["method"] for r in tab.rows] == ["lattice-fft"] * 5
    _check_limits(tab, 0.1)
    # second order (lattice form from klfrontier.ldp): ratio -> 1
    for r in tab.rows[2:]:
        assert abs(r["gap_ratio"] - 1) < 0.01
        assert abs(r["kl_to_optimal_ratio"] - 1) < 0.01


def test_equivalence_three_letters_exact_to_1e5():
    tab = convergence(THREE, 0.1, lengths=LENGTHS)
    assert [r["method"] for r in tab.rows] == ["types"] * 5
    _check_limits(tab, 0.1)
    for r in tab.rows[2:]:
        assert abs(r["gap_ratio"] - 1) < 0.01
        assert abs(r["kl_to_optimal_ratio"] - 1) < 0.01
    # the non-lattice prediction computed here from λ and σ² agrees with ldp's
    for r in tab.rows:
        assert r["gap_prediction"] == pytest.approx(_second_order_gap(THREE, 0.1, r["m"]), rel=1e-9)


def test_equivalence_81_level_lattice_to_1e5():
    rng = np.random.default_rng(1)
    q = rng.random(81) + 0.05
    ref = Reference(np.round(np.arange(-40, 41) * 0.1, 1), probs=q / q.sum())
    tab = convergence(ref, 0.1, lengths=LENGTHS)
    _check_limits(tab, 0.1)
    assert max(r["seconds"] for r in tab.rows) < 5.0


def test_table_outputs():
    tab = convergence(BERN, 0.2, lengths=[10, 100])
    d = tab.to_dict()
    json.dumps(d)
    assert d["m"] == [10, 100] and d["delta"] == 0.2 and d["lattice"] == (0.0, 1.0)
    assert "lattice-fft" in tab.to_text() and str(tab) == tab.to_text()
    assert tab.optimal_reward == pytest.approx(tab.rows[0]["optimal_reward"])
    nop = convergence(BERN, 0.2, lengths=[10], predictions=False)
    assert np.isnan(nop.rows[0]["gap_prediction"]) and not nop.predictions


def test_convergence_errors():
    with pytest.raises(ValueError, match="delta"):
        convergence(BERN, 0.0)
    with pytest.raises(ValueError, match="delta"):
        convergence(BERN, 5.0)  # beyond -log p(A): no equivalence
    with pytest.raises(ValueError, match="lengths"):
        convergence(BERN, 0.1, lengths=[0])
