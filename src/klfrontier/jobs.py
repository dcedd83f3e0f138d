"""The two main jobs behind ``klfrontier demo`` and ``klfrontier analyze``.

A job strings public API calls together and lays the results out as report
sections and a JSON summary; it holds no mathematics of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .bon import best_of_n, bon_kl_estimate
from .report import Section
from .tilt import frontier

__all__ = ["JobResult", "demo_job", "analyze_job"]


@dataclass
class JobResult:
    """What a job produced: a title, report sections, headline rows, every number."""

    title: str
    lead: str
    sections: list
    headline: list            # rows of (quantity, value, note) for the terminal
    summary: dict = field(default_factory=dict)


def _step(progress, label):
    if progress is not None:
        progress(label)


# ---------------------------------------------------------------------- demo
DEMO_DELTAS = (0.05, 0.2, 1.0)
DEMO_LENGTHS = (10, 30, 100, 300, 1000, 3000, 10_000)
DEMO_N = np.unique(np.round(np.geomspace(2, 1e8, 24)))
DEMO_SOFT = ((2.0, (2, 4, 16, 64, 256, 1024)), (8.0, (2, 4, 16, 64, 256, 1024)))


def demo_job(instance="unigram-vader", *, top_n=50_000, deltas=DEMO_DELTAS, lengths=DEMO_LENGTHS,
             progress: Optional[Callable[[str], None]] = None) -> JobResult:
    """Frontier, best-of-N, soft best-of-N, rate functions, SCGF and the BoN≡RL convergence.

    Parameters
    ----------
    instance : str
        An instance name (``klfrontier.instances.available()``).
    top_n : int
        Vocabulary size for the unigram instances.
    deltas : sequence of float
        Per-token KL budgets δ for the sequence-level part.
    lengths : sequence of int
        Sequence lengths m (BoN uses N = e^{mδ}).
    progress : callable(str), optional
        Called with a label before each stage.
    """
    from . import instances
    from .ldp import equivalence, rate_function, scgf
    from .plots import (bon_kl_figure, convergence_figure, frontier_figure, rate_function_figure,
                        scgf_figure)
    from .sequences import convergence
    from .soft_bon import soft_best_of_n

    _step(progress, "loading the instance")
    kw = {"top_n": top_n} if instance.startswith("unigram") else {}
    inst = instances.load(instance, **kw)
    ref = inst.ref
    facts = inst.summary()
    summary = {"instance": {"name": inst.name, "description": inst.description, **facts}}
    sections = []

    # 1. single-token frontier vs BoN and soft BoN
    _step(progress, "frontier, best-of-N and soft best-of-N")
    grid = np.linspace(0.0, ref.kl_max * 1.02, 240)
    fr = frontier(ref, grid)
    bon_rows, bons = [], []
    for n in DEMO_N:
        b = best_of_n(ref, n=float(n))
        est = bon_kl_estimate(ref, n=float(n))
        star = float(frontier(ref, [b.kl]).reward[0])
        bons.append(b)
        bon_rows.append({"n": float(n), "kl": b.kl, "kl_bound": b.kl_bound, "kl_estimate": est,
                         "reward": b.reward, "frontier_reward": star, "reward_gap": star - b.reward,
                         "win_rate": b.win_rate, "lam_same_kl": b.lam_same_kl,
                         "lam_same_reward": b.lam_same_reward})
    soft = {}
    for theta, ns in DEMO_SOFT:
        pts = [soft_best_of_n(ref, n=n, lam=theta) for n in ns]
        soft[theta] = [{"n": n, "kl": s.kl, "reward": s.reward,
                        "frontier_reward": float(frontier(ref, [s.kl]).reward[0])} for n, s in zip(ns, pts)]
    points = {"best-of-N (N = 2 … 1e8)": ([r["kl"] for r in bon_rows], [r["reward"] for r in bon_rows])}
    for theta, rows in soft.items():
        points[f"soft best-of-N, θ = {theta:g}"] = ([r["kl"] for r in rows], [r["reward"] for r in rows])
    fig_frontier = frontier_figure(fr.kl, fr.reward, points=points, kl_max=ref.kl_max,
                                   title=f"Reward–KL frontier, one token — {inst.name}",
                                   reward_label="expected reward per token")
    n_arr = np.array([r["n"] for r in bon_rows])
    fig_bonkl = bon_kl_figure(n_arr, [r["kl"] for r in bon_rows], [r["kl_bound"] for r in bon_rows],
                              [r["kl_estimate"] for r in bon_rows], kl_max=ref.kl_max)
    summary["frontier"] = fr.as_dict()
    summary["best_of_n"] = bon_rows
    summary["soft_best_of_n"] = {str(k): v for k, v in soft.items()}
    sections.append(Section(
        "1 · One token: how much reward per nat, and how close best-of-N gets",
        f"Reference: {inst.description} The curve is the best reward any policy can reach "
        f"at each KL budget (the exponentially tilted policy); it flattens at "
        f"−log p(argmax) = {ref.kl_max:.3f} nats, where the optimum is p(· | argmax). "
        "Best-of-N and soft best-of-N sit just below it.\n\n"
        "Because most words have reward 0, rewards tie massively, and the usual formula "
        "log N − (N−1)/N overstates best-of-N's KL: the exact KL saturates at −log p(argmax) "
        "while the formula grows without bound.",
        [("frontier", fig_frontier, "Frontier R*(Δ) with exact best-of-N and soft best-of-N points."),
         ("bon_kl", fig_bonkl, "Best-of-N KL: exact (ties counted) vs log N − (N−1)/N and the "
                               "Beirami et al. estimate (its exact mean under best-of-N).")],
        [("Best-of-N ↔ RLHF dictionary",
          ["N", "exact KL", "log N−(N−1)/N", "reward", "R*(same KL)", "gap", "win rate",
           "λ (same KL)", "λ (same reward)"],
          [[r["n"], r["kl"], r["kl_bound"], r["reward"], r["frontier_reward"], r["reward_gap"],
            r["win_rate"], r["lam_same_kl"], r["lam_same_reward"]] for r in bon_rows])]))

    # 2. large deviations: rate functions and the scaled CGF
    _step(progress, "rate functions and the scaled CGF")
    eqs = {d: equivalence(ref, d) for d in deltas}
    x = np.linspace(ref.r_min, ref.r_max, 801)
    i0 = rate_function(ref, x)
    i_lam = {eqs[d].lam: rate_function(ref, x, lam=eqs[d].lam) for d in deltas}
    markers = {f"δ = {d:g}": (eqs[d].x_star, d) for d in deltas}
    xs = [eqs[d].x_star for d in deltas]
    span = max(xs) - ref.mean_reward
    zoom = (ref.mean_reward - 0.6 * span, max(xs) + 0.4 * span, 1.6 * max(deltas))
    fig_rate = rate_function_figure(x, i0, i_lam, markers=markers, zoom=zoom)
    mid = eqs[deltas[len(deltas) // 2]]
    t = np.linspace(-3, 3, 121)
    direct = scgf(ref, t, lam=mid.lam)
    renyi = scgf(ref, t, lam=mid.lam, form="renyi")
    fig_scgf = scgf_figure(t, direct, renyi, lam=mid.lam)
    summary["rate_function"] = {"x": x, "I0": i0, "I_lam": {str(k): v for k, v in i_lam.items()}}
    summary["scgf"] = {"lam": mid.lam, "t": t, "direct": direct, "renyi": renyi,
                       "max_abs_difference": float(np.max(np.abs(direct - renyi)))}
    sections.append(Section(
        "2 · Large deviations of the per-token reward",
        "For a memoryless model with a linear reward, the average reward of a length-m "
        "response obeys a large-deviation principle. Under the reference its rate is I₀; "
        "under the optimal policy φ_λ it is I_λ(x) = I₀(x) − λx + Λ(λ), which vanishes only "
        "at the policy's mean reward. The stars mark I₀(R*(δ)) = δ: the reward level whose "
        "probability under p is e^{−mδ} is exactly the optimal reward at budget mδ — the "
        "reason best-of-N with N = e^{mδ} matches KL-RL.\n\n"
        "The scaled cumulant generating function equals the Rényi cross-entropy form "
        "t log Z_r − t H₁₊ₜ(φ_λ; q_r) (the two curves coincide; max difference "
        f"{summary['scgf']['max_abs_difference']:.2e}).",
        [("rate_functions", fig_rate, "Rate functions I₀ and I_λ (nats per token)."),
         ("scgf", fig_scgf, "Scaled CGF and its Rényi cross-entropy form.")],
        [("Per-token budgets", ["δ", "λ_δ", "R*(δ)", "I₀(R*(δ))", "σ²(λ_δ)"],
          [[d, eqs[d].lam, eqs[d].frontier_reward, eqs[d].I0_at_x_star, eqs[d].sigma2] for d in deltas])]))

    # 3. sequences: BoN with N = e^{mδ} vs KL-RL with budget mδ, exact
    _step(progress, "sequence-level convergence (exact law of S_m)")
    conv = {}
    series = {}
    for d in deltas:
        tab = convergence(ref, d, lengths=list(lengths))
        conv[d] = tab
        rows = tab.rows
        series[d] = {"gap": [r["gap"] for r in rows], "gap_pred": [r["gap_prediction"] for r in rows],
                     "kl_opt": [r["kl_to_optimal_per_token"] for r in rows],
                     "kl_opt_pred": [r["kl_to_optimal_prediction"] / r["m"] for r in rows]}
    fig_conv = convergence_figure(np.array(lengths, dtype=float), series)
    summary["convergence"] = {str(d): conv[d].as_dict() for d in deltas}
    table_rows = []
    for d in deltas:
        for r in conv[d].rows:
            table_rows.append([d, r["m"], r["reward_per_token"], r["optimal_reward"], r["gap"],
                               r["gap_prediction"], r["kl_per_token"], r["kl_to_optimal"],
                               r["kl_to_optimal_prediction"], r["method"]])
    sections.append(Section(
        "3 · Long responses: best-of-N with N = e^{mδ} becomes KL-RL with budget mδ",
        "Exact values over all |V|^m sequences, computed through the exact law of the total "
        "reward S_m (tilted FFT on the reward lattice). As m grows, best-of-N's reward per "
        "token approaches R*(δ), its KL per token approaches δ, and its KL to the optimal "
        "policy per token goes to 0 — the paper's theorem. The dashed lines are the "
        "second-order predictions (beyond the paper): the gap shrinks like (log m)/m while the "
        "total KL between best-of-N and the optimal policy grows like ½ log m.",
        [("convergence", fig_conv, "Reward gap and KL to the optimal policy, per token, against m "
                                   "(log axes); dashed: second-order predictions.")],
        [("Convergence table", ["δ", "m", "BoN reward/token", "R*(δ)", "gap", "predicted gap",
                                "KL(BoN‖p)/m", "KL(BoN‖φ_Δ)", "predicted", "engine"], table_rows)]))

    last = {d: conv[d].rows[-1] for d in deltas}
    headline = [("instance", inst.name, f"K = {ref.size:,}, {ref.n_levels} reward levels"),
                ("p(reward = 0)", facts.get("p_reward_zero"), "mass of words without a lexicon entry"),
                ("−log p(argmax)", ref.kl_max, "nats: KL at which the optimum saturates"),
                ]
    for target in (1e4, n_arr[-1]):
        r = bon_rows[_nearest(n_arr, target)]
        headline.append((f"BoN N = {r['n']:.3g}: exact KL", r["kl"],
                         f"usual formula log N − (N−1)/N = {r['kl_bound']:.3f}; reward {r['reward']:.4f} "
                         f"vs optimal {r['frontier_reward']:.4f} at the same KL"))
    for d in deltas:
        r = last[d]
        headline.append((f"δ = {d:g}: R*(δ) per token", r["optimal_reward"],
                         f"BoN at m = {r['m']:,}: {r['reward_per_token']:.5f} "
                         f"(gap {r['gap']:.2e}, predicted {r['gap_prediction']:.2e})"))
        headline.append((f"δ = {d:g}: KL(BoN‖φ_Δ)/m", r["kl_to_optimal_per_token"],
                         f"total {r['kl_to_optimal']:.3f} nats, predicted {r['kl_to_optimal_prediction']:.3f}"))
    summary["headline"] = [{"quantity": q, "value": v, "note": n} for q, v, n in headline]
    lead = (f"{inst.description} Best-of-N with N = e^(mδ) approaches the optimal KL-constrained "
            "policy with budget mδ as responses get long; below, the exact numbers that show it.")
    return JobResult(title=f"klfrontier demo — {inst.name}", lead=lead, sections=sections,
                     headline=headline, summary=summary)


def _nearest(arr, value):
    return int(np.argmin(np.abs(np.log(arr) - np.log(value))))


# ------------------------------------------------------------------- analyze
def analyze_job(samples, *, n_values=None, kl_values=None, n_boot=200, seed=0,
                progress: Optional[Callable[[int, int], None]] = None, max_prompt_rows=200) -> JobResult:
    """Best-of-N and tilting estimated from a user's samples, with bootstrap CIs.

    Parameters
    ----------
    samples : klfrontier.io.SampleSet
        Rewards (and optional log-probs) per prompt, e.g. from
        :func:`klfrontier.io.read_samples`.
    n_values, kl_values : array_like, optional
        Grids for best-of-N and the frontier (defaults of
        :func:`klfrontier.empirical.analyze_samples`).
    n_boot, seed :
        Bootstrap replications and seed.
    progress : callable(done, total), optional
        Called after each prompt's bootstrap.
    max_prompt_rows : int
        Rows of the per-prompt table shown in the report (all are in the JSON).
    """
    from .empirical import analyze_samples, kl_trust_limit
    from .plots import empirical_figure, frontier_figure

    res = analyze_samples(samples, n_values=n_values, kl_values=kl_values, n_boot=n_boot, rng=seed,
                          progress=progress)
    agg, per = res.aggregate, res.per_prompt
    n_min = int(np.min(res.n_samples))
    trust_kl = kl_trust_limit(n_min, res.trust_margin)
    ns = res.n_values.astype(float)

    def ci(e, i):
        return (float(e.value[i]), None if e.lo is None else float(e.lo[i]),
                None if e.hi is None else float(e.hi[i]))

    sections = []
    bad = samples.bad_rows
    data_rows = [["samples", samples.n_samples], ["prompts", samples.n_prompts],
                 ["samples per prompt (min / median / max)",
                  f"{n_min} / {int(np.median(res.n_samples))} / {int(np.max(res.n_samples))}"],
                 ["log-probabilities", "yes" if samples.has_logprobs else "no"],
                 ["bad rows skipped", samples.n_bad_rows]]
    tables = [("Input", ["", ""], data_rows)]
    if bad:
        tables.append(("First bad rows", ["file", "line", "reason"], [list(b) for b in bad[:20]]))
    sections.append(Section("1 · The samples", f"Source: {samples.source or 'in memory'}.", [], tables))

    band = None if agg.bon_reward_plugin.lo is None else (agg.bon_reward_plugin.lo, agg.bon_reward_plugin.hi)
    tilt_ok = agg.tilt_kl.value.size > 0
    fig_emp = empirical_figure(
        ns, agg.bon_reward_plugin.value, agg.bon_reward_unbiased.value,
        lo=None if band is None else band[0], hi=None if band is None else band[1],
        kl=agg.tilt_kl.value if tilt_ok else None, tilted_reward=agg.tilt_reward.value if tilt_ok else None,
        tilted_lo=agg.tilt_reward.lo if tilt_ok else None, tilted_hi=agg.tilt_reward.hi if tilt_ok else None,
        trust_n=n_min, trust_kl=trust_kl, title="Mean over prompts, with 95% bootstrap intervals")
    figs = [("empirical", fig_emp, "Left: expected best-of-N reward (plug-in on the empirical law, and the "
                                   "unbiased without-replacement estimator). Right: the tilted policy "
                                   "computed from the base samples (plug-in).")]
    if res.kl_values.size:
        fr = agg.frontier_reward
        bands = {} if fr.lo is None else {"frontier": (res.kl_values, fr.lo, fr.hi)}
        figs.append(("frontier", frontier_figure(
            res.kl_values, fr.value, points={"best-of-N (plug-in)": (agg.bon_kl_plugin.value,
                                                                     agg.bon_reward_plugin.value)},
            bands=bands, trust_kl=trust_kl, title="Plug-in frontier (mean over prompts) with best-of-N"),
            f"Frontier at each budget (every prompt gets budget Δ). Estimates beyond KL ≈ "
            f"{trust_kl:.2f} nats (log n − {res.trust_margin:g}) are not trustworthy."))
    bon_rows = []
    for i, n in enumerate(res.n_values):
        v, lo, hi = ci(agg.bon_reward_plugin, i)
        u, ulo, uhi = ci(agg.bon_reward_unbiased, i)
        row = [int(n), v, lo, hi, u, ulo, uhi, float(agg.bon_kl_plugin.value[i]), float(res.bon_kl_bound[i])]
        if res.bon_kl_beirami is not None:
            row.append(float(np.nanmean(res.bon_kl_beirami[:, i])))
        row.append(bool(agg.bon_reward_plugin.trusted[i]))
        bon_rows.append(row)
    bon_cols = ["N", "plug-in reward", "lo", "hi", "unbiased", "lo", "hi", "plug-in KL", "log N−(N−1)/N"]
    if res.bon_kl_beirami is not None:
        bon_cols.append("Beirami D̂")
    bon_cols.append("trusted")
    tilt_rows = [[float(lam), float(agg.tilt_kl.value[g]), float(agg.tilt_reward.value[g]),
                  float(agg.tilt_gain.value[g]), bool(agg.tilt_reward.trusted[g])]
                 for g, lam in enumerate(res.lam_values)]
    sections.append(Section(
        "2 · Aggregate over prompts",
        "Plug-in estimates treat each prompt's samples as the reference law; the unbiased estimator "
        "averages the maximum over all N-subsets drawn without replacement. Intervals come from a "
        "two-level bootstrap (prompts, then samples within each prompt). Rows marked untrusted have "
        "N above the per-prompt sample count or a plug-in KL near log n, where the empirical law "
        "runs out of samples.",
        figs,
        [("Best-of-N", bon_cols, bon_rows),
         ("Tilted policy from base samples", ["λ", "plug-in KL", "reward", "gain (covariance form)",
                                              "trusted"], tilt_rows)]))

    pick = [i for i, n in enumerate(res.n_values) if n in (2, 4, 16, 64)][:3] or [len(res.n_values) - 1]
    cols = ["prompt", "n", "mean reward"] + [f"BoN-{int(res.n_values[i])} unbiased" for i in pick] + \
           [f"BoN-{int(res.n_values[i])} plug-in KL" for i in pick]
    prow = []
    for p, prompt in enumerate(res.prompts[:max_prompt_rows]):
        prow.append([prompt, int(res.n_samples[p]), float(per.base_reward.value[p])]
                    + [float(per.bon_reward_unbiased.value[p, i]) for i in pick]
                    + [float(per.bon_kl_plugin.value[p, i]) for i in pick])
    more = "" if len(res.prompts) <= max_prompt_rows else f" (first {max_prompt_rows} of {len(res.prompts)}; all in summary.json)"
    sections.append(Section("3 · Per prompt", "One row per prompt" + more + ".", [],
                            [("Per-prompt estimates", cols, prow)]))

    summary = {"input": {"source": samples.source, "n_samples": samples.n_samples,
                         "n_prompts": samples.n_prompts, "n_bad_rows": samples.n_bad_rows,
                         "bad_rows": [list(b) for b in bad[:100]]},
               "analysis": res.as_dict(), "kl_trust_limit": trust_kl}
    headline = [("samples / prompts", f"{samples.n_samples:,} / {samples.n_prompts:,}",
                 f"{samples.n_bad_rows} bad rows skipped"),
                ("mean reward", float(agg.base_reward.value), _ci_note(agg.base_reward))]
    for i in pick:
        headline.append((f"best-of-{int(res.n_values[i])} reward (unbiased)",
                         float(agg.bon_reward_unbiased.value[i]), _ci_note(agg.bon_reward_unbiased, i)))
        headline.append((f"best-of-{int(res.n_values[i])} KL (plug-in)", float(agg.bon_kl_plugin.value[i]),
                         f"usual formula {res.bon_kl_bound[i]:.4f}"))
    headline.append(("KL trust limit", trust_kl, f"log(min samples per prompt) − {res.trust_margin:g}"))
    return JobResult(title="klfrontier analyze", lead="Best-of-N and the KL-optimal tilt estimated from "
                     "your samples, with bootstrap confidence intervals.", sections=sections,
                     headline=headline, summary=summary)


def _ci_note(est, i=None):
    if est.lo is None:
        return "no bootstrap"
    lo = est.lo if i is None else est.lo[i]
    hi = est.hi if i is None else est.hi[i]
    return f"95% CI [{float(lo):.4g}, {float(hi):.4g}]"
