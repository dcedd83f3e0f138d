"""Coverage of the intervals ``kf.analyze`` prints, by simulation against exact truth.

For every cell (reward law, prompts P, samples per prompt n) the true law of
each prompt is fixed once (seeded); every replication draws n samples per
prompt from those laws, runs ``kf.analyze`` and records, for each table row
the study tracks, the estimate, its nominal 95% interval and the row's trust
flag (the column's own ``reward_trusted`` / ``kl_trusted`` where the table has
one).  The truth is computed by the library's exact engines on the true
references:

* ``bon_reward``  -- ``mean_x best_of_n(ref_x, n=N).reward`` vs ``res.bon.reward``
  (computed by ``bon_curve``, the same engine at many N);
* ``bon_kl``      -- ``mean_x best_of_n(ref_x, n=N).kl`` vs ``res.bon.kl_debiased``;
* ``tilt_reward`` -- ``mean_x tilted(ref_x, lam=lam).reward`` vs ``res.tilt.reward``
  (``tilt_kl`` likewise with ``.kl``), lam = c / sd_pool for c in ``LAM_UNITS``;
* ``frontier``    -- ``mean_x R_x(lam)`` with ONE lam solving
  ``mean_x KL_x(lam) = Delta`` (brentq on log lam) vs ``res.frontier.reward``.

Reward laws (``LAWS``):

* ``normal`` / ``t3`` -- a :class:`~klfrontier.Reference` of ``K = 2**16``
  equal-mass atoms ``F^{-1}((i - 1/2)/K)`` (standard normal, Student-t with 3
  d.o.f.), shifted and scaled per prompt (``mu_x ~ N(0, 1)``,
  ``s_x = exp(U(-0.5, 0.5))``); samples are uniform atom indices, so the
  truth is exact for the law the samples come from.
* ``vader`` -- prompt x's response is ``m_x`` words (``m_x`` uniform on
  2..8) of the built-in unigram x VADER instance (top 2000 words); its reward
  is the sum of the words' valences, whose exact law is
  ``kf.reward_law(inst.ref, m_x)`` (lattice FFT).  61-88% of the mass sits on
  reward 0 and 66-90% on three levels: heavy ties.

``sd_pool`` is the within-prompt pooled sd, ``sqrt(mean_x Var_x r)``.

``--prompts random`` redraws the P prompts' parameters in every replication
and takes as truth the *population* mean over the prompt distribution
(``population_prompts``: Gauss-Legendre in ``log s``, the 7 lengths of
vader): the quantity a prompt bootstrap / Student-t over prompts estimates.
With fixed prompts those intervals also carry the between-prompt spread and
are conservative for the fixed prompts' mean.

Usage::

    python benchmarks/bench_coverage.py            # full study (about 12 min on 2 cores)
    python benchmarks/bench_coverage.py --prompts random   # prompts redrawn (P >= 10; 12 min)
    python benchmarks/bench_coverage.py --quick    # 100 replications (a few minutes)
    python benchmarks/bench_coverage.py --laws normal --P 10 --n 64 --reps 200
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # one BLAS thread per worker process

import argparse  # noqa: E402
import datetime as _dt  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from concurrent.futures import ProcessPoolExecutor, as_completed  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy import optimize, stats  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import klfrontier as kf  # noqa: E402
from _common import machine_info  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = {
    "fixed": HERE / "results" / "coverage.json",
    "random": HERE / "results" / "coverage_random.json",
}

LAWS = ("normal", "t3", "vader")
K_ATOMS = 2**16
VADER_TOP_N = 2000
VADER_LENGTHS = (2, 8)  # m_x uniform on this closed range
LAM_UNITS = (0.5, 1.0)  # lam = c / sd_pool
KL_BUDGETS = (0.25, 1.0)  # nats, below log(16) - 1 = 1.77
CONFIDENCE = 0.95
QUANTITIES = ("bon_reward", "bon_kl", "tilt_reward", "tilt_kl", "frontier", "policy_gap")
# The aligned policy of the policy cells: the exact tilt of each prompt's law at its own lam,
# c_x / sd_pool with c_x alternating over the prompts (unequal budgets: below the optimum).
POLICY_UNITS = (0.25, 1.0)
PROMPT_MODES = ("fixed", "random")

SIZES = {
    "full": {"P": (1, 10, 100), "n": (16, 64, 256), "reps": 1000, "n_boot": 999},
    "quick": {"P": (1, 10, 100), "n": (16, 64, 256), "reps": 100, "n_boot": 999},
}

# Row status (see benchmarks/README.md): the band is for P >= 10; FAIL is a
# row the trust rule let through (trusted in >= half the replications) whose
# coverage is below 0.90.
BAND = (0.93, 0.97)
FAIL_BELOW = 0.90
FAIL_TRUSTED = 0.5


def n_grid(n):
    """``N`` in ``{1, 2, 4, ..., n/2}``."""
    return tuple(2**k for k in range(int(math.log2(n // 2)) + 1))


# ------------------------------------------------------------------- laws
_ATOMS = {}
_VADER = {}


def quantile_atoms(law, K=K_ATOMS):
    """``F^{-1}((i - 1/2)/K)``, ``i = 1..K``: equal-mass mid-quantile atoms."""
    key = (law, K)
    if key not in _ATOMS:
        u = (np.arange(K) + 0.5) / K
        dist = {"normal": stats.norm, "t3": stats.t(3)}[law]
        _ATOMS[key] = dist.ppf(u)
    return _ATOMS[key]


def vader_law(m, top_n=VADER_TOP_N):
    """Exact law of the summed VADER valence of ``m`` i.i.d. unigram words."""
    key = (m, top_n)
    if key not in _VADER:
        from klfrontier import instances

        inst = instances.load("unigram-vader", top_n=top_n)
        law = kf.reward_law(inst.ref, m)
        probs = np.exp(law.logpmf)
        cdf = np.cumsum(probs)
        _VADER[key] = (law, cdf / cdf[-1])
    return _VADER[key]


@dataclass
class Prompt:
    """One prompt's true law (what :func:`sample_data` draws from) as a Reference."""

    ref: kf.Reference
    values: np.ndarray  # outcome rewards the sampler indexes
    cdf: np.ndarray | None  # None: equal masses (uniform indices)
    label: str


def draw_params(law, P, rng):
    """Per-prompt parameters: ``(mu, s)`` arrays (normal, t3) or lengths ``m`` (vader)."""
    if law in ("normal", "t3"):
        mu = rng.standard_normal(P)
        s = np.exp(rng.uniform(-0.5, 0.5, P))
        return mu, s
    if law == "vader":
        lo, hi = VADER_LENGTHS
        return rng.integers(lo, hi + 1, size=P)
    raise ValueError(f"law must be one of {', '.join(LAWS)}, got {law!r}")


def sample_data(law, params, rng, n, K=K_ATOMS):
    """One replication's samples ``{prompt id: (n,) rewards}`` for the prompts ``params``.

    Equal-mass atoms: ``mu_x + s_x * atoms[idx]`` with uniform ``idx`` (the very
    floats of the prompt's Reference); vader: inverse-CDF draws from the law of
    ``S_{m_x}``.
    """
    if law in ("normal", "t3"):
        atoms = quantile_atoms(law, K)
        mu, s = params
        idx = rng.integers(K, size=(mu.size, n))
        vals = mu[:, None] + s[:, None] * atoms[idx]
        return {f"x{x}": vals[x] for x in range(mu.size)}
    out = {}
    for x, m in enumerate(params):
        rl, cdf = vader_law(int(m))
        idx = np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), rl.values.size - 1)
        out[f"x{x}"] = rl.values[idx]
    return out


def make_prompts(law, P, seed, K=K_ATOMS):
    """The P true prompt laws of a cell, from ``draw_params`` with ``seed``."""
    return make_prompts_from(law, draw_params(law, P, np.random.default_rng(seed)), K)


def make_prompts_from(law, params, K=K_ATOMS):
    """``(prompts, params)``: a :class:`Prompt` (its true Reference) per parameter."""
    out = []
    if law in ("normal", "t3"):
        atoms = quantile_atoms(law, K)
        mu, s = params
        for x in range(mu.size):
            vals = mu[x] + s[x] * atoms  # the same floats sample_data returns
            ref = kf.Reference(vals, probs=np.full(vals.size, 1.0 / vals.size))
            out.append(Prompt(ref, vals, None, f"mu={mu[x]:.3f} s={s[x]:.3f}"))
    else:
        for m in params:
            rl, cdf = vader_law(int(m))
            out.append(Prompt(rl.as_reference(), rl.values, cdf, f"m={m}"))
    return out, params


def population_prompts(law, K=K_ATOMS, nodes=32):
    """Prompts and weights whose weighted mean is the expectation over ``draw_params``.

    ``random`` mode's truth.  Atoms: ``mu_x`` enters every tracked reward
    additively and no KL (so its mean 0 drops out) and ``log s_x`` is uniform
    on ``[-1/2, 1/2]``: Gauss-Legendre in ``log s`` (the integrands are
    analytic in it; 32 nodes agree with 64 to ~1e-12).  Vader: ``m_x`` uniform
    on ``VADER_LENGTHS``, enumerated.
    """
    if law in ("normal", "t3"):
        t, w = np.polynomial.legendre.leggauss(nodes)
        params = (np.zeros(nodes), np.exp(0.5 * t))
        out, _ = make_prompts_from(law, params, K)
        return out, w / w.sum()
    lo, hi = VADER_LENGTHS
    out, _ = make_prompts_from(law, np.arange(lo, hi + 1), K)
    return out, None


# ------------------------------------------------------------------ truth
def frontier_lam(refs, kl, weights=None):
    """The ONE lam with ``mean_x KL(phi_x,lam || p_x) = kl`` (brentq on log lam)."""

    def g(loglam):
        lam = math.exp(loglam)
        return np.average([kf.tilted(r, lam=lam).kl for r in refs], weights=weights) - kl

    lo, hi = -2.0, 0.0
    while g(lo) > 0:
        lo -= 2.0
    while g(hi) < 0:
        hi += 2.0
        if hi > 60:
            raise ValueError(f"kl={kl} is not reachable (mean kl_max too small)")
    return math.exp(optimize.brentq(g, lo, hi, xtol=1e-13, rtol=1e-13))


def cell_truth(prompts, n, weights=None, lam_units=LAM_UNITS, kl_budgets=KL_BUDGETS):
    """Exact truth for every tracked row of a cell: means over ``prompts`` (weighted by ``weights``).

    Returns ``(truth, info)``: ``truth`` maps ``(quantity, grid value)`` to the
    true value; ``info`` holds the lam values, the frontier's lam and
    ``sd_pool``.
    """
    refs = [p.ref for p in prompts]
    mean = lambda v: float(np.average(v, weights=weights))
    Ns = n_grid(n)
    truth = {}
    # bon_curve is best_of_n at many N in one pass (tests/test_coverage.py checks they agree)
    curves = [kf.bon_curve(r, n=list(Ns)) for r in refs]
    for j, N in enumerate(Ns):
        truth[("bon_reward", N)] = mean([c.reward[j] for c in curves])
        truth[("bon_kl", N)] = mean([c.kl[j] for c in curves])
    var = [float(np.exp(r.logprobs) @ (r.rewards - r.mean_reward) ** 2) for r in refs]
    sd_pool = math.sqrt(mean(var))
    lams = {c: c / sd_pool for c in lam_units}
    for c, lam in lams.items():
        pols = [kf.tilted(r, lam=lam) for r in refs]
        truth[("tilt_reward", c)] = mean([p.reward for p in pols])
        truth[("tilt_kl", c)] = mean([p.kl for p in pols])
    f_lam = {}
    for d in kl_budgets:
        lam = frontier_lam(refs, d, weights)
        f_lam[d] = lam
        truth[("frontier", d)] = mean([kf.tilted(r, lam=lam).reward for r in refs])
    return truth, {
        "Ns": list(Ns),
        "lam": {str(c): v for c, v in lams.items()},
        "sd_pool": sd_pool,
        "frontier_lam": {str(d): v for d, v in f_lam.items()},
    }


def policy_truth(prompts, sd_pool, units=POLICY_UNITS):
    """The policy's laws and its exact gap ``R*_avg(KL_pi) - E_pi r`` (means over ``prompts``).

    Prompt ``x`` is tilted at ``units[x % len(units)] / sd_pool``.  Returns
    ``(gap, info, samplers)``; ``samplers[x]`` is ``(level values, policy cdf,
    log pi, log p)`` over the prompt's reward levels (the density ratio of a
    tilt depends only on the level).
    """
    refs = [p.ref for p in prompts]
    pols = [kf.tilted(r, lam=units[x % len(units)] / sd_pool) for x, r in enumerate(refs)]
    kl_pi = float(np.mean([q.kl for q in pols]))
    reward_pi = float(np.mean([q.reward for q in pols]))
    lam = frontier_lam(refs, kl_pi)
    optimum = float(np.mean([kf.tilted(r, lam=lam).reward for r in refs]))
    samplers = []
    for r, q in zip(refs, pols):
        logpi = np.asarray(q.level_logprobs, dtype=float)
        cdf = np.cumsum(np.exp(logpi - logpi.max()))
        samplers.append(
            (
                np.asarray(r.level_values, dtype=float),
                cdf / cdf[-1],
                logpi,
                np.asarray(r.level_logq, dtype=float),
            )
        )
    return (
        optimum - reward_pi,
        {
            "policy_kl": kl_pi,
            "policy_reward": reward_pi,
            "policy_optimum": optimum,
            "policy_lam_star": lam,
            "policy_units": list(units),
        },
        samplers,
    )


def sample_policy(samplers, rng, m):
    """``{prompt id: {reward, logprob, ref_logprob}}``: ``m`` draws from each prompt's policy."""
    from klfrontier.io import SampleSet

    out = {}
    for x, (values, cdf, logpi, logp) in enumerate(samplers):
        k = np.minimum(np.searchsorted(cdf, rng.random(m), side="right"), values.size - 1)
        out[f"x{x}"] = {"reward": values[k], "logprob": logpi[k], "ref_logprob": logp[k]}
    return SampleSet.from_dict(out)


# --------------------------------------------------------------- analyze
def _find(col, value):
    col = np.asarray(col, dtype=float)
    hit = np.flatnonzero(np.isclose(col, value, rtol=1e-9, atol=0.0))
    return int(hit[0]) if hit.size else None


def _row(table, i, col):
    """``(estimate, lo, hi, trusted, plug-in)`` of column ``col`` in row ``i``.

    The estimate is ``{col}_debiased`` where the table has it (the intervals are
    built on the jackknife-corrected values); the flag is the column's own
    ``{col}_trusted`` where the table has one, else the row's ``trusted``.
    """
    if i is None:
        return (np.nan, np.nan, np.nan, False, np.nan)
    cols = table.columns
    est = f"{col}_debiased" if f"{col}_debiased" in cols else col
    flag = f"{col}_trusted" if f"{col}_trusted" in cols else "trusted"
    return (
        float(getattr(table, est)[i]),
        float(getattr(table, f"{col}_lo")[i]),
        float(getattr(table, f"{col}_hi")[i]),
        bool(getattr(table, flag)[i]),
        float(getattr(table, col)[i]),
    )


def extract_rows(res, keys, info):
    """``(estimate, lo, hi, trusted, plug-in)`` for each tracked row key of one result."""
    out = []
    for q, g in keys:
        if q in ("bon_reward", "bon_kl"):
            t = res.bon
            i = _find(t.n, g)
            col = "reward" if q == "bon_reward" else "kl"
        elif q in ("tilt_reward", "tilt_kl"):
            t = res.tilt
            i = _find(t.lam, info["lam"][str(g)])
            col = "reward" if q == "tilt_reward" else "kl"
        elif q == "policy_gap":
            t = res.policies["pi"]
            i, col = 0, "gap"
        else:
            t = res.frontier
            i = _find(t.kl, g)
            col = "reward"
        out.append(_row(t, i, col))
    return out


def covered(truth, lo, hi):
    """``lo <= truth <= hi`` up to rounding (1e-9 of the magnitude)."""
    tol = 1e-9 * np.maximum(1.0, np.abs(truth))
    with np.errstate(invalid="ignore"):
        return (lo - tol <= truth) & (truth <= hi + tol)


def summarise_row(truth, arr, P):
    """Coverage, trust and width statistics of one row over the replications.

    ``arr``: (reps, 4 or 5) of estimate, lo, hi, trusted (, plug-in value).
    """
    est, lo, hi = arr[:, 0], arr[:, 1], arr[:, 2]
    tr = np.nan_to_num(arr[:, 3]).astype(bool)
    plug = arr[:, 4] if arr.shape[1] > 4 else est
    has = np.isfinite(lo) & np.isfinite(hi)
    cov = covered(truth, lo, hi) & has
    reps = arr.shape[0]
    tw = tr & has
    m_t, m_a = int(tw.sum()), int(has.sum())
    c_t = float(cov[tw].mean()) if m_t else None
    c_a = float(cov[has].mean()) if m_a else None
    # Monte-Carlo se of a coverage c from m replications, with the Agresti-Coull
    # centre (k + 2)/(m + 4) so that c = 0 or 1 does not report se = 0
    se = lambda c, m: (
        None if c is None else math.sqrt((c * m + 2) / (m + 4) * (1 - (c * m + 2) / (m + 4)) / m)
    )
    width_t = float(np.mean(hi[tw] - lo[tw])) if m_t else None
    width_a = float(np.mean(hi[has] - lo[has])) if m_a else None
    fin = np.isfinite(est)
    row = {
        "truth": truth,
        "reps": reps,
        "trusted_frac": float(tr.mean()),
        "trusted_no_interval": int((tr & ~has).sum()),
        "coverage_trusted": c_t,
        "coverage_trusted_se": se(c_t, m_t),
        "n_trusted": m_t,
        "coverage_all": c_a,
        "coverage_all_se": se(c_a, m_a),
        "n_interval": m_a,
        "width_trusted": width_t,
        "width_all": width_a,
        "mean_estimate": float(est[fin].mean()) if fin.any() else None,
        "bias": float(est[fin].mean() - truth) if fin.any() else None,
        "sd_estimate": float(est[fin].std(ddof=1)) if fin.sum() > 1 else None,
        "bias_plugin": (float(plug[np.isfinite(plug)].mean() - truth) if np.isfinite(plug).any() else None),
        "below": float(np.mean(hi[tw] < truth)) if m_t else None,  # interval entirely below
        "above": float(np.mean(lo[tw] > truth)) if m_t else None,
    }
    row["status"] = row_status(row, P)
    return row


def row_status(row, P):
    """``ok`` / ``high`` / ``low`` / ``FAIL`` / ``untrusted`` / ``rare``.

    * ``untrusted``: never trusted (nothing to check: ok by the rule);
    * ``FAIL``: trusted in >= half the replications and coverage < 0.90;
    * ``rare``: coverage < 0.90 among the few (< half) trusted replications;
    * ``ok``: coverage in [0.93, 0.97]; ``high`` above; ``low`` in [0.90, 0.93).
    The [0.93, 0.97] band is the goal for P >= 10; P = 1 rows are labelled the
    same way but held only to the FAIL rule.
    """
    c, tf = row["coverage_trusted"], row["trusted_frac"]
    if tf == 0 or c is None:
        return "untrusted"
    if c < FAIL_BELOW:
        return "FAIL" if tf >= FAIL_TRUSTED else "rare"
    if c < BAND[0]:
        return "low"
    if c > BAND[1]:
        return "high"
    return "ok"


@dataclass
class Cell:
    law: str
    P: int
    n: int
    reps: int
    n_boot: int
    seed: int = 20260101
    prompts: str = "fixed"
    K: int = K_ATOMS  # atoms of the normal / t3 laws
    policy: bool = False  # also an aligned policy (n samples a prompt) and its gap

    @property
    def name(self):
        return (
            f"{self.law}-P{self.P}-n{self.n}"
            + ("-rand" if self.prompts == "random" else "")
            + ("-pol" if self.policy else "")
        )

    def seeds(self):
        law_id = LAWS.index(self.law)
        mode = PROMPT_MODES.index(self.prompts)
        ss = np.random.SeedSequence([self.seed, law_id, self.P, self.n, mode])
        law_ss, rep_ss = ss.spawn(2)
        return law_ss, rep_ss


def run_cell(cell: Cell, analyze_kwargs=None):
    """Simulate one cell; returns a JSON-ready dict with a summary per row.

    ``cell.prompts == "fixed"``: the P prompt laws are drawn once and the truth
    is their mean; ``"random"``: every replication draws new prompts and the
    truth is the population mean (:func:`population_prompts`).
    """
    if cell.prompts not in PROMPT_MODES:
        raise ValueError(f"cell.prompts must be one of {PROMPT_MODES}, got {cell.prompts!r}")
    if cell.policy and cell.prompts != "fixed":
        raise ValueError("policy cells need fixed prompts (the policy is defined per prompt)")
    t0 = time.perf_counter()
    law_ss, rep_ss = cell.seeds()
    if cell.prompts == "fixed":
        prompts, params = make_prompts(cell.law, cell.P, law_ss, K=cell.K)
        truth, info = cell_truth(prompts, cell.n)
        labels = [p.label for p in prompts[:10]]
        samplers = None
        if cell.policy:
            truth[("policy_gap", "tilt")], pinfo, samplers = policy_truth(prompts, info["sd_pool"])
            info.update(pinfo)
    else:
        prompts, weights = population_prompts(cell.law, K=cell.K)
        truth, info = cell_truth(prompts, cell.n, weights)
        labels = ["random"]
    del prompts  # the samplers need only params: free the References
    t_truth = time.perf_counter() - t0
    keys = list(truth)
    lam_values = [info["lam"][str(c)] for c in LAM_UNITS]
    arr = np.full((cell.reps, len(keys), 5), np.nan)
    rng = np.random.default_rng(rep_ss)
    seeds = rng.integers(2**31, size=cell.reps)
    errors = []
    kw = dict(
        n_values=list(info["Ns"]),
        kl_values=list(KL_BUDGETS),
        lam_values=lam_values,
        n_boot=cell.n_boot,
        confidence=CONFIDENCE,
    )
    kw.update(analyze_kwargs or {})
    for r in range(cell.reps):
        if cell.prompts == "random":
            params = draw_params(cell.law, cell.P, rng)
        data = sample_data(cell.law, params, rng, cell.n, K=cell.K)
        policies = {"pi": sample_policy(samplers, rng, cell.n)} if cell.policy else None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = kf.analyze(data, policies=policies, seed=int(seeds[r]), **kw)
        except Exception as exc:  # recorded, counted, never hidden
            errors.append(f"rep {r}: {type(exc).__name__}: {exc}")
            arr[r, :, 3] = 0
            continue
        arr[r] = np.array(extract_rows(res, keys, info), dtype=float)
    wall = time.perf_counter() - t0
    rows = []
    for j, (q, g) in enumerate(keys):
        s = summarise_row(truth[(q, g)], arr[:, j, :], cell.P)
        rows.append(
            {
                "law": cell.law,
                "P": cell.P,
                "n": cell.n,
                "prompts": cell.prompts,
                "quantity": q,
                "grid": g,
                **s,
            }
        )
    return {
        "cell": cell.name,
        "law": cell.law,
        "P": cell.P,
        "n": cell.n,
        "reps": cell.reps,
        "prompt_mode": cell.prompts,
        "n_boot": cell.n_boot,
        "truth_info": info,
        "prompts": labels,
        "truth_s": t_truth,
        "wall_s": wall,
        "errors": errors[:20],
        "n_errors": len(errors),
        "rows": rows,
    }


def _cost(cell):
    return cell.reps * cell.P * (cell.n + 50) * (1 + (cell.P >= 30) * 3)


def run_study(cells, workers=2, progress=True):
    """Run the cells, largest first, on ``workers`` processes (1: in process)."""
    cells = sorted(cells, key=_cost, reverse=True)
    out = []
    if workers <= 1:
        for c in cells:
            out.append(run_cell(c))
            if progress:
                print(f"  {c.name}: {out[-1]['wall_s']:.1f} s", flush=True)
    else:
        with ProcessPoolExecutor(workers) as ex:
            futs = {ex.submit(run_cell, c): c for c in cells}
            for f in as_completed(futs):
                out.append(f.result())
                if progress:
                    print(f"  {futs[f].name}: {out[-1]['wall_s']:.1f} s", flush=True)
    out.sort(key=lambda r: (PROMPT_MODES.index(r["prompt_mode"]), LAWS.index(r["law"]), r["P"], r["n"]))
    return out


# ------------------------------------------------------------------ output
def _pct(x):
    return "-" if x is None else f"{100 * x:.1f}"


def _num(x, spec=".3g"):
    return "-" if x is None else format(x, spec)


def _grid_label(q, g):
    return {
        "bon_reward": f"N={g}",
        "bon_kl": f"N={g}",
        "tilt_reward": f"lam={g}/sd",
        "tilt_kl": f"lam={g}/sd",
        "frontier": f"KL={g}",
        "policy_gap": g,
    }[q]


def table_lines(cells):
    header = [
        "cell",
        "quantity",
        "grid",
        "truth",
        "cov|trusted %",
        "se",
        "trusted %",
        "width",
        "cov all %",
        "bias",
        "status",
    ]
    lines = []
    for c in cells:
        for r in c["rows"]:
            lines.append(
                [
                    c["cell"],
                    r["quantity"],
                    _grid_label(r["quantity"], r["grid"]),
                    _num(r["truth"], ".4g"),
                    _pct(r["coverage_trusted"]),
                    _pct(r["coverage_trusted_se"]),
                    _pct(r["trusted_frac"]),
                    _num(r["width_all"]),
                    _pct(r["coverage_all"]),
                    _num(r["bias"], ".2g"),
                    r["status"],
                ]
            )
    return header, lines


def lost(row):
    """A row trusted in < half the replications whose intervals cover >= 93% regardless."""
    return (
        row["trusted_frac"] < FAIL_TRUSTED
        and row["coverage_all"] is not None
        and row["coverage_all"] >= BAND[0]
        and row["n_interval"] >= 0.9 * row["reps"]
    )


def summary_lines(cells):
    """One line per (cell, quantity): coverage range over its rows trusted in >= half the reps."""
    header = [
        "cell",
        "quantity",
        "rows",
        "trusted>=50%",
        "coverage|trusted % (min-max)",
        "FAIL",
        "never trusted",
        "distrusted, covers>=93%",
    ]
    lines = []
    for c in cells:
        for q in QUANTITIES:
            rows = [r for r in c["rows"] if r["quantity"] == q]
            if not rows:
                continue
            held = [
                r for r in rows if r["trusted_frac"] >= FAIL_TRUSTED and r["coverage_trusted"] is not None
            ]
            cov = [r["coverage_trusted"] for r in held]
            span = f"{_pct(min(cov))}-{_pct(max(cov))}" if cov else "-"
            lines.append(
                [
                    c["cell"],
                    q,
                    str(len(rows)),
                    str(len(held)),
                    span,
                    str(sum(r["status"] == "FAIL" for r in rows)),
                    str(sum(r["status"] == "untrusted" for r in rows)),
                    str(sum(lost(r) for r in rows)),
                ]
            )
    return header, lines


def _print_grid(header, lines):
    widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(header)]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("-+-".join("-" * w for w in widths))
    prev = None
    for line in lines:
        if prev is not None and line[0] != prev:
            print("-+-".join("-" * w for w in widths))
        prev = line[0]
        print(" | ".join(c.ljust(w) for c, w in zip(line, widths)))


def failures(cells):
    return [(c["cell"], r) for c in cells for r in c["rows"] if r["status"] == "FAIL"]


def print_table(cells, machine, wall, quick=False, prompts="fixed"):
    header, lines = table_lines(cells)
    note = f"{machine.get('cpu_model', machine['processor'])}, {machine['cpu_count']} cpus; wall {wall:.0f} s"
    title = (
        "coverage of kf.analyze's nominal 95% intervals (percent; se = Monte-Carlo se); "
        + {
            "fixed": "prompt laws fixed per cell, truth = their mean",
            "random": "prompts redrawn every replication, truth = population mean",
        }[prompts]
    )
    if quick:
        title += " -- --quick: few replications, wide Monte-Carlo error"
    print(title)
    _print_grid(header, lines)
    print(note)
    print("\nsummary per cell and quantity (rows trusted in >= 50% of the replications)")
    _print_grid(*summary_lines(cells))
    counts = {}
    for c in cells:
        for r in c["rows"]:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
    print("row status counts:", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    fails = failures(cells)
    if fails:
        print(
            f"TRUST-RULE FAILURES ({len(fails)}): trusted in >= {FAIL_TRUSTED:.0%} of "
            f"replications, coverage < {FAIL_BELOW:.0%}"
        )
        for name, r in fails:
            print(
                f"  {name} {r['quantity']} {_grid_label(r['quantity'], r['grid'])}: coverage "
                f"{_pct(r['coverage_trusted'])}% (se {_pct(r['coverage_trusted_se'])}), trusted "
                f"{_pct(r['trusted_frac'])}%, truth {r['truth']:.4g}, mean estimate "
                f"{_num(r['mean_estimate'], '.4g')}, interval below truth "
                f"{_pct(r['below'])}% / above {_pct(r['above'])}%"
            )
    else:
        print("no trust-rule failures")
    errs = [(c["cell"], c["n_errors"], c["errors"][:1]) for c in cells if c["n_errors"]]
    for name, k, e in errs:
        print(f"  {name}: {k} replications raised, e.g. {e}")


def library_fingerprint():
    """sha256 (first 12 hex) of each ``klfrontier/empirical`` source: which ``analyze`` ran."""
    import hashlib

    root = Path(kf.__file__).resolve().parent / "empirical"
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:12] for p in sorted(root.glob("*.py"))}


def build_cells(laws, Ps, ns, reps, n_boot, seed, prompts="fixed", policy=False):
    """The grid of cells; ``random`` prompts skip P = 1 (its interval is for its one prompt)."""
    return [
        Cell(law, P, n, reps, n_boot, seed, prompts, policy=policy)
        for law in laws
        for P in Ps
        for n in ns
        if not (prompts == "random" and P < 2)
    ]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer replications (minutes)")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON results path (default results/coverage.json, "
        "results/coverage_random.json with --prompts random)",
    )
    ap.add_argument(
        "--prompts",
        choices=PROMPT_MODES,
        default="fixed",
        help="fixed: prompt laws drawn once per cell, truth = their mean (default); "
        "random: new prompts every replication, truth = the population mean",
    )
    ap.add_argument("--laws", default=",".join(LAWS), help="comma-separated subset of " + ",".join(LAWS))
    ap.add_argument("--P", default=None, help="comma-separated prompt counts (default 1,10,100)")
    ap.add_argument("--n", default=None, help="comma-separated samples per prompt (default 16,64,256)")
    ap.add_argument("--reps", type=int, default=None, help="replications per cell")
    ap.add_argument("--n-boot", type=int, default=None, help="bootstrap resamples (default 999)")
    ap.add_argument("--workers", type=int, default=2, help="processes (cells run in parallel)")
    ap.add_argument("--seed", type=int, default=20260101)
    ap.add_argument(
        "--policy",
        action="store_true",
        help="add an aligned policy (exact tilts at unequal per-prompt lam) and track "
        "its reward gap to the optimum (fixed prompts)",
    )
    args = ap.parse_args(argv)
    if args.policy and args.prompts != "fixed":
        ap.error("--policy needs --prompts fixed")
    mode = "quick" if args.quick else "full"
    cfg = dict(SIZES[mode])
    if args.P:
        cfg["P"] = tuple(int(v) for v in args.P.split(","))
    if args.n:
        cfg["n"] = tuple(int(v) for v in args.n.split(","))
    if args.reps:
        cfg["reps"] = args.reps
    if args.n_boot:
        cfg["n_boot"] = args.n_boot
    laws = tuple(v.strip() for v in args.laws.split(","))
    for law in laws:
        if law not in LAWS:
            ap.error(f"--laws: unknown law {law!r}")
    cells = build_cells(
        laws, cfg["P"], cfg["n"], cfg["reps"], cfg["n_boot"], args.seed, args.prompts, policy=args.policy
    )
    out_path = args.out or (
        HERE / "results" / "coverage_policy.json" if args.policy else DEFAULT_OUT[args.prompts]
    )
    print(
        f"{len(cells)} cells x {cfg['reps']} replications, n_boot={cfg['n_boot']}, "
        f"{args.workers} workers ...",
        flush=True,
    )
    load0 = os.getloadavg()[0]
    fingerprint = library_fingerprint()  # before the run: the sources the workers import
    t0 = time.perf_counter()
    results = run_study(cells, workers=args.workers)
    wall = time.perf_counter() - t0
    machine = machine_info()
    machine["loadavg_start"], machine["loadavg_end"] = load0, os.getloadavg()[0]
    print_table(results, machine, wall, quick=args.quick, prompts=args.prompts)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "bench_coverage",
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "mode": mode,
        "sizes": {
            **cfg,
            "laws": list(laws),
            "K_atoms": K_ATOMS,
            "vader_top_n": VADER_TOP_N,
            "vader_lengths": list(VADER_LENGTHS),
            "lam_units": list(LAM_UNITS),
            "kl_budgets": list(KL_BUDGETS),
            "confidence": CONFIDENCE,
            "seed": args.seed,
            "prompts": args.prompts,
            "policy": args.policy,
            "policy_units": list(POLICY_UNITS),
        },
        "rules": {"band": list(BAND), "fail_below": FAIL_BELOW, "fail_trusted": FAIL_TRUSTED},
        "machine": machine,
        "library_sources": fingerprint,
        "wall_s": wall,
        "failures": [{"cell": name, **r} for name, r in failures(results)],
        "cells": results,
    }
    out_path.write_text(json.dumps(payload, indent=1, allow_nan=False))
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
