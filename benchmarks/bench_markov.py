"""Markov engine (theory §8): sparse + rank-one transitions against a dense-matrix baseline.

Instance: the bigram-VADER model (``klfrontier.instances.bigram_vader``) with
``K = 5,000`` states (the 4,998 most frequent words of gensim's Lee corpus,
``<unk>``, ``</s>``; interpolated Kneser–Ney, so ``P`` is dense but equals a
sparse matrix of ~32k entries plus a rank-one backoff term), length
``m = 1,000``, total KL budget ``Δ = mδ`` with ``δ = 0.2``.

Rows (all in one process, same instance):

* ``sparse_solve`` -- ``Markov(...).tilted(kl=mδ)``: the exact optimal chain
  (solve ``D_m(λ) = Δ``), its reward and KL; the number of backward sweeps
  the solver used is reported.
* ``sparse_sweep`` -- one backward sweep at the solution λ (``log Z``,
  ``E S``, ``Var S``, KL): ``O(m (nnz + K))``.
* ``dense_sweep`` -- the same sweep on the dense ``K × K`` matrix (the
  engine's dense path: one BLAS product per step, ``O(m K²)``); its reward
  and KL against the sparse ones.
* ``dense_solve`` -- the dense solve: extrapolated as sweeps × ``dense_sweep``
  (the solver visits the same λ sequence), or timed with ``--full-dense``.

Usage::

    python benchmarks/bench_markov.py              # m = 1000 (about 2 minutes)
    python benchmarks/bench_markov.py --quick      # m = 200
    python benchmarks/bench_markov.py --full-dense # also time the dense solve itself (~10 min)
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_time, machine_info  # noqa: E402
from klfrontier._atomic import write_text
from klfrontier._json import dumps
from klfrontier.instances.bigram import bigram_vader
from klfrontier.sequences.markov import Markov

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "bench_markov.json"
DELTA = 0.2
SIZES = {"full": {"m": 1000, "repeats": 3}, "quick": {"m": 200, "repeats": 2}}


def rel(a, b):
    return float(abs(a - b) / max(abs(b), 1e-300))


def n_sweeps(mk):
    return sum(1 for k in mk._cache if isinstance(k[0], float))


def run(m, repeats, full_dense):
    inst = bigram_vader(vocab_size=5000, length=m)
    mk = inst.markov
    K, nnz = inst.size, inst.meta["nnz_sparse"]
    rows = []

    def solve():
        fresh = mk.with_length(m)  # empty cache: every sweep is timed
        return fresh, fresh.tilted(kl=m * DELTA)

    t_solve, (fresh, opt) = best_time(solve, repeats)
    sweeps = n_sweeps(fresh)
    rows.append(
        {
            "row": "sparse_solve",
            "seconds": t_solve,
            "sweeps": sweeps,
            "lam": opt.lam,
            "reward_per_token": opt.reward_per_token,
            "kl": opt.kl,
            "kl_error": rel(opt.kl, m * DELTA),
        }
    )
    t_sp, sw_sp = best_time(lambda: mk.with_length(m)._sweep(opt.lam), repeats)
    rows.append({"row": "sparse_sweep", "seconds": t_sp, "reward": sw_sp.mean, "kl": sw_sp.kl})
    dense = Markov(mk.initial, mk._ch.dense_matrix(), mk._ch.R, length=m)
    t_de, sw_de = best_time(lambda: dense.with_length(m)._sweep(opt.lam), 1)
    rows.append(
        {
            "row": "dense_sweep",
            "seconds": t_de,
            "reward": sw_de.mean,
            "kl": sw_de.kl,
            "reward_rel_diff": rel(sw_de.mean, sw_sp.mean),
            "kl_rel_diff": rel(sw_de.kl, sw_sp.kl),
        }
    )
    if full_dense:
        t0 = time.perf_counter()
        dopt = dense.with_length(m).tilted(kl=m * DELTA)
        t_ds = time.perf_counter() - t0
        rows.append(
            {
                "row": "dense_solve",
                "seconds": t_ds,
                "extrapolated": False,
                "lam_rel_diff": rel(dopt.lam, opt.lam),
                "reward_rel_diff": rel(dopt.reward, opt.reward),
            }
        )
    else:
        t_ds = sweeps * t_de
        rows.append({"row": "dense_solve", "seconds": t_ds, "extrapolated": True})
    ratio = {"sweep": t_de / t_sp, "solve": t_ds / t_solve}
    return {"K": K, "nnz_sparse": nnz, "m": m, "delta": DELTA, "rows": rows, "ratio": ratio}


def _note(r):
    if r["row"] == "sparse_solve":
        return (
            f"{r['sweeps']} sweeps, λ = {r['lam']:.6g}, reward/token {r['reward_per_token']:.6f}, "
            f"|KL/Δ - 1| = {r['kl_error']:.1e}"
        )
    if r["row"] == "sparse_sweep":
        return f"reward {r['reward']:.10g}, KL {r['kl']:.10g}"
    if r["row"] == "dense_sweep":
        return f"rel. diff vs sparse: reward {r['reward_rel_diff']:.1e}, KL {r['kl_rel_diff']:.1e}"
    if r["extrapolated"]:
        return "extrapolated: sweeps x dense_sweep"
    return f"timed; λ rel. diff {r['lam_rel_diff']:.1e}"


def table(res, machine):
    print(
        f"K = {res['K']:,} states (sparse part {res['nnz_sparse']:,} non-zeros + rank-one), "
        f"m = {res['m']:,}, δ = {res['delta']}"
    )
    print(f"{'row':<14} | {'seconds':>9} | notes")
    print("-" * 78)
    for r in res["rows"]:
        note = _note(r)
        print(f"{r['row']:<14} | {r['seconds']:>9.3f} | {note}")
    print(f"dense / sparse: {res['ratio']['sweep']:.0f}x per sweep, {res['ratio']['solve']:.0f}x per solve")
    print(
        f"{machine.get('cpu_model', machine['processor'])}, {machine['cpu_count']} cpus, "
        f"load {machine.get('load_average')}"
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="m = 200")
    ap.add_argument("--full-dense", action="store_true", help="time the dense solve instead of extrapolating")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    size = SIZES["quick" if args.quick else "full"]
    machine = machine_info()
    res = run(size["m"], size["repeats"], args.full_dense)
    machine["load_average_after"] = machine_info().get("load_average")
    table(res, machine)
    payload = {
        "benchmark": "bench_markov",
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": machine,
        "size": "quick" if args.quick else "full",
        **res,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, dumps(payload, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
