"""The numerical sweep, seeded and small: references across the float range through every public
function, warnings as errors, every identity within its tolerance (see benchmarks/sweep_numerics.py;
the benchmark runs 300 references with K up to 1e5)."""

import sys
from pathlib import Path

import pytest

import klfrontier as kf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import sweep_numerics as sweep  # noqa: E402


@pytest.fixture(scope="module")
def swept():
    rec = sweep.sweep(examples=30, seed=20240611, max_k=400, log=lambda *a, **k: None)
    return rec, sweep.summarize(rec)


def test_no_identity_fails_and_nothing_warns(swept):
    rec, rows = swept
    assert sweep.unknown_failures(rec, rows) == []


def test_the_sweep_reaches_every_part(swept):
    rec, rows = swept
    assert rec.references == 30
    ran = {r["identity"] for r in rows if r["cases"]}
    # identities that need a non-constant reference with K <= 6 (sequences) may draw no case in 30;
    # everything else must have run
    assert {
        "tilted.kl_identity",
        "frontier.concave",
        "bon.kl_bound",
        "bon_curve.matches",
        "soft_bon.sum_to_one",
        "optimality.identity",
        "divergence.kl_mpmath",
        "ldp.rate_at_x_star",
        "ldp.scgf_cgf",
        "equivalence.consistent",
        "bon_kl_bound.mpmath",
        "bon_kl_from_eps.mpmath",
    } <= ran
    called = set(rec.calls)
    public = {
        "tilted",
        "frontier",
        "cgf",
        "solve_lam_for_kl",
        "solve_lam_for_reward",
        "best_of_n",
        "bon_curve",
        "bon_kl_bound",
        "bon_kl_from_eps",
        "bon_kl_beirami",
        "soft_best_of_n",
        "optimality",
        "kl",
        "renyi_divergence",
        "renyi_cross_entropy",
        "jeffreys",
        "rate_function",
        "scgf",
        "cumulants",
        "equivalence",
        "Reference",
    }
    assert public <= called, public - called
    assert public <= set(kf.__all__) | {"Reference"}


def test_the_checks_can_fail():
    """The recorder flags an identity past its tolerance and a warning as an error."""
    rec = sweep.Recorder()
    rec.check("bon.kl_bound", 1e-6, {"case": 1})
    rec.check("bon.kl_bound", float("nan"), {"case": 2})

    def warns():
        import warnings

        warnings.warn("overflow", RuntimeWarning, stacklevel=2)

    rec.call("tilted", warns, case={"case": 3})
    rows = sweep.summarize(rec)
    bad = sweep.unknown_failures(rec, rows)
    assert "bon.kl_bound" in bad and any("RuntimeWarning" in b for b in bad)
