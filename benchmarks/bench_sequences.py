"""Sequence engine (theory §6–§7) against the baselines a user would write.

Instance: a per-token reward lattice with 81 levels (``-4.0, -3.9, ..., 4.0``,
random masses, seed 1), length ``m``, per-token budget ``δ = 0.1`` and
best-of-N with ``N = e^{mδ}``.

Rows:

* ``fft_pair``  -- one forward + inverse real FFT of length ``m·80`` (the
  yardstick: the goal is ours <= 10x this, and <= 5 s).
* ``exact_bon`` -- ``Memoryless(ref, m).best_of_n(log_n=mδ)``: exact BoN
  reward, ``KL(π_N||p^m)`` and ``KL(π_N||φ_Δ)`` (tilted FFT on the window
  where BoN lives).
* ``full_law``  -- ``reward_law(ref, m)``: the whole law of ``S_m`` (every
  point in the bulk of some tilt), for information.
* ``dp``        -- baseline: the log-space dynamic program for the law of
  ``S_m`` (``O(m² L K)``) at the largest ``m`` it finishes in ~60 s, then
  exact BoN on that law; its error against our engine at that ``m``.
* ``naive_mc``  -- baseline: Monte Carlo drawing ``N·m`` tokens per BoN draw,
  at the largest ``m`` where ~100 draws fit in ~60 s; its error (and 95% CI)
  against our engine.
* ``order_stat_mc`` -- our order-statistic sampler (one uniform per draw) at
  the full ``m``: agreement with the exact reward in standard errors.

Usage::

    python benchmarks/bench_sequences.py            # m = 10^5 (about 3 minutes)
    python benchmarks/bench_sequences.py --quick    # m = 10^4, baselines capped at 10 s
    python benchmarks/bench_sequences.py --out results.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from pathlib import Path

import numpy as np
import scipy.fft as sfft

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_time, machine_info  # noqa: E402
from klfrontier import Reference
from klfrontier.lattice import detect_lattice
from klfrontier.sequences import Memoryless, bon_monte_carlo, naive_bon_monte_carlo, reward_law
from klfrontier.sequences._window import WindowLaw, bon_on_window, tails
from klfrontier.sequences.lattice_engine import lattice_dp
from klfrontier.tilt import solve_lam_for_kl, tilt_stats

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "bench_sequences.json"
DELTA = 0.1

SIZES = {
    "full": {"m": 100_000, "budget_s": 60.0, "repeats": 3, "full_law": True, "mc_draws": 100_000},
    "quick": {"m": 10_000, "budget_s": 10.0, "repeats": 2, "full_law": True, "mc_draws": 20_000},
}


# ---------------------------------------------------------------- helpers
def rel(a, b):
    return float(abs(a - b) / max(abs(b), 1e-300))


def instance(seed=1):
    rng = np.random.default_rng(seed)
    q = rng.random(81) + 0.05
    return Reference(np.round(np.arange(-40, 41) * 0.1, 1), probs=q / q.sum())


def bon_from_law(ref, m, values, logpmf, log_n):
    """Exact BoN (reward, KL to p^m, KL to φ_Δ) on a complete law of S_m."""
    su = (values - m * ref.r_max) / ref.reward_scale
    logsf, logcdf = tails(logpmf, True)
    w = WindowLaw(
        su=su,
        values=values,
        logpmf=logpmf,
        logsf=logsf,
        logcdf=logcdf,
        complete_low=True,
        complete_high=True,
        method="given",
        exact=True,
    )
    lam_u = float(ref.lam_to_u(solve_lam_for_kl(ref, log_n / m)))
    m_cgf = m * float(tilt_stats(ref, [lam_u]).cgf[0])
    out = bon_on_window(w, log_n, lam_u, m_cgf)
    return out.reward, out.kl, out.kl_to_optimal


# ------------------------------------------------------------------- rows
def row_fft(cfg):
    n = cfg["m"] * 80
    x = np.random.default_rng(0).random(n)
    t, _ = best_time(lambda: sfft.irfft(sfft.rfft(x), n), cfg["repeats"])
    return {"row": "fft_pair", "what": f"scipy.fft rfft + irfft, length m*80 = {n}", "seconds": t}


def row_exact(cfg, ref, t_fft):
    m = cfg["m"]
    t, b = best_time(lambda: Memoryless(ref, m).best_of_n(log_n=m * DELTA), cfg["repeats"])
    return {
        "row": "exact_bon",
        "what": f"Memoryless(ref81, m={m}).best_of_n(log_n=m*{DELTA})",
        "seconds": t,
        "ratio_to_fft": t / t_fft,
        "goal": "<= 10x fft_pair and <= 5 s",
        "met": bool(t <= 10 * t_fft and t <= 5.0),
        "reward_per_token": b.reward_per_token,
        "optimal_reward": b.optimal_reward / m,
        "kl_per_token": b.kl_per_token,
        "kl_to_optimal": b.kl_to_optimal,
        "kl_to_optimal_identity": b.details["kl_to_optimal_identity"],
        "error_bound": b.error_bound,
        "tilts": b.details["tilts"],
        "fft_lengths": b.details["fft_lengths"],
        "window_points": b.details["window_size"],
    }


def row_full_law(cfg, ref, exact):
    m = cfg["m"]
    t0 = time.perf_counter()
    law = reward_law(ref, m)
    t_law = time.perf_counter() - t0
    rw, kl, klo = bon_from_law(ref, m, law.values, law.logpmf, m * DELTA)
    return {
        "row": "full_law",
        "what": f"reward_law(ref81, m={m}) (all {law.size} points), then BoN on it",
        "seconds": t_law,
        "tilts": law.info["tilts"],
        "error_estimate": law.error_estimate,
        "diff_vs_exact": {
            "reward": rel(rw, exact["reward_per_token"] * m),
            "kl": rel(kl, exact["kl_per_token"] * m),
            "kl_to_optimal": rel(klo, exact["kl_to_optimal"]),
        },
    }


def row_dp(cfg, ref):
    budget = cfg["budget_s"]
    lat = detect_lattice(ref)
    # growth exponent (at least 2: O(m^2 L K)), then the largest m predicted
    # to finish within 70% of the budget
    times = {}
    for mm in (100, 200):
        t0 = time.perf_counter()
        lattice_dp(lat, mm)
        times[mm] = time.perf_counter() - t0
    k = max(2.0, np.log2(times[200] / times[100]))
    m_dp = int(200 * (0.7 * budget / times[200]) ** (1 / k))
    t0 = time.perf_counter()
    t, lp = lattice_dp(lat, m_dp)
    t_dp = time.perf_counter() - t0
    values = lat.sum_values(m_dp, t)
    rw, kl, klo = bon_from_law(ref, m_dp, values, lp, m_dp * DELTA)
    t0 = time.perf_counter()
    ours = Memoryless(ref, m_dp).best_of_n(log_n=m_dp * DELTA)
    t_ours = time.perf_counter() - t0
    m_full = cfg["m"]
    return {
        "row": "dp",
        "what": "log-space DP for the law of S_m (O(m^2 L K)), then exact BoN",
        "m": m_dp,
        "seconds": t_dp,
        "ours_seconds_same_m": t_ours,
        "extrapolated_seconds_at_full_m": t_dp * (m_full / m_dp) ** 2,
        "error_vs_exact": {
            "reward": rel(rw, ours.reward),
            "kl": rel(kl, ours.kl),
            "kl_to_optimal": rel(klo, ours.kl_to_optimal),
        },
    }


def row_naive(cfg, ref):
    budget = cfg["budget_s"]
    # token rate of the naive sampler
    t0 = time.perf_counter()
    naive_bon_monte_carlo(ref, 100, 2000, size=5, seed=0)
    rate = 5 * 2000 * 100 / (time.perf_counter() - t0)
    draws = 100
    cands = np.arange(10, 400, 5)
    cost = np.exp(cands * DELTA) * cands * draws / rate
    m_mc = int(cands[cost <= 0.8 * budget].max())
    n_int = int(round(np.exp(m_mc * DELTA)))
    t0 = time.perf_counter()
    mc = naive_bon_monte_carlo(ref, m_mc, n_int, size=draws, seed=2024, max_seconds=budget)
    t_mc = time.perf_counter() - t0
    exact = Memoryless(ref, m_mc).best_of_n(n=n_int)
    half = (mc.ci[1] - mc.ci[0]) / 2
    return {
        "row": "naive_mc",
        "what": "Monte Carlo drawing N*m tokens per BoN draw (N = round(e^{m delta}))",
        "m": m_mc,
        "n": n_int,
        "draws": mc.size,
        "seconds": t_mc,
        "tokens": float(n_int) * m_mc * mc.size,
        "tokens_per_second": rate,
        "mean_per_token": mc.mean_per_token,
        "exact_per_token": exact.reward_per_token,
        "error_per_token": abs(mc.mean_per_token - exact.reward_per_token),
        "ci95_halfwidth_per_token": half / m_mc,
        "covers_exact": mc.covers(exact.reward),
        "extrapolated_tokens_at_full_m": f"e^{cfg['m'] * DELTA:.0f} * {cfg['m']} per draw",
    }


def row_order_stat(cfg, ref, exact):
    m = cfg["m"]
    t0 = time.perf_counter()
    mc = bon_monte_carlo(ref, m, log_n=m * DELTA, size=cfg["mc_draws"], seed=7)
    t = time.perf_counter() - t0
    ex = exact["reward_per_token"] * m
    return {
        "row": "order_stat_mc",
        "what": f"bon_monte_carlo (one uniform per BoN draw), m={m}, {mc.size} draws",
        "seconds": t,
        "mean_per_token": mc.mean_per_token,
        "exact_per_token": exact["reward_per_token"],
        "z": (mc.mean - ex) / mc.stderr,
        "covers_exact": mc.covers(ex),
        "outside_window": mc.outside,
    }


# ------------------------------------------------------------------ output
def print_table(rows, machine):
    lines = []
    for r in rows:
        extra = ""
        if r["row"] == "exact_bon":
            extra = (
                f"ratio to FFT {r['ratio_to_fft']:.2f} (goal <= 10, <= 5 s: "
                f"{'met' if r['met'] else 'NOT met'}); E[S]/m {r['reward_per_token']:.10f}, "
                f"KL/m {r['kl_per_token']:.8f}, KL(pi||phi) {r['kl_to_optimal']:.6f}"
            )
        elif r["row"] == "full_law":
            d = r["diff_vs_exact"]
            extra = f"{r['tilts']} tilts; vs exact_bon: " + ", ".join(f"{k} {v:.1e}" for k, v in d.items())
        elif r["row"] == "dp":
            d = r["error_vs_exact"]
            extra = (
                f"m={r['m']} (ours {r['ours_seconds_same_m']:.3f} s at that m; "
                f"~{r['extrapolated_seconds_at_full_m']:.2g} s at full m); error: "
                + ", ".join(f"{k} {v:.1e}" for k, v in d.items())
            )
        elif r["row"] == "naive_mc":
            extra = (
                f"m={r['m']}, N={r['n']}, {r['draws']} draws, {r['tokens']:.2g} tokens; "
                f"error/token {r['error_per_token']:.2e} +- {r['ci95_halfwidth_per_token']:.2e} "
                f"(95%), covers exact: {r['covers_exact']}"
            )
        elif r["row"] == "order_stat_mc":
            extra = (
                f"mean/token {r['mean_per_token']:.8f} vs exact {r['exact_per_token']:.8f} "
                f"(z = {r['z']:+.2f})"
            )
        elif r["row"] == "fft_pair":
            extra = r["what"]
        lines.append((r["row"], f"{r['seconds']:.3f}", extra))
    w0 = max(len(l[0]) for l in lines)
    w1 = max(len(l[1]) for l in lines)
    print(f"{'row'.ljust(w0)} | {'seconds'.rjust(w1)} | notes")
    print("-" * (w0 + w1 + 60))
    for a, b, c in lines:
        print(f"{a.ljust(w0)} | {b.rjust(w1)} | {c}")
    print(
        f"{machine.get('cpu_model', machine['processor'])}, {machine['cpu_count']} cpus, "
        f"numpy {machine['numpy']}, scipy {machine['scipy']}"
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="m = 10^4, baselines capped at 10 s")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results path")
    args = ap.parse_args(argv)
    cfg = SIZES["quick" if args.quick else "full"]
    ref = instance()
    Memoryless(ref, 100).best_of_n(log_n=10.0)  # warm imports / caches
    rows = []
    print("running fft_pair ...", flush=True)
    rows.append(row_fft(cfg))
    print("running exact_bon ...", flush=True)
    rows.append(row_exact(cfg, ref, rows[0]["seconds"]))
    exact = rows[-1]
    if cfg["full_law"]:
        print("running full_law ...", flush=True)
        rows.append(row_full_law(cfg, ref, exact))
    print("running dp baseline ...", flush=True)
    rows.append(row_dp(cfg, ref))
    print("running naive_mc baseline ...", flush=True)
    rows.append(row_naive(cfg, ref))
    print("running order_stat_mc ...", flush=True)
    rows.append(row_order_stat(cfg, ref, exact))
    machine = machine_info()
    print_table(rows, machine)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "bench_sequences",
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "sizes": cfg,
        "delta": DELTA,
        "machine": machine,
        "rows": rows,
    }
    args.out.write_text(json.dumps(payload, indent=2, default=float))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
