"""The two main jobs behind ``klfrontier demo`` and ``klfrontier analyze``.

A job strings public API calls together and lays the results out as report
sections and a JSON summary; it holds no mathematics of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from .bon import best_of_n, bon_kl_beirami
from .report import Section
from .tilt import frontier

__all__ = [
    "JobResult",
    "SectionPart",
    "demo_job",
    "frontier_section",
    "large_deviations_section",
    "convergence_section",
    "proxy_gold_section",
    "analyze_job",
    "shown_predictions",
    "SECOND_ORDER_RULE",
]


@dataclass
class JobResult:
    """What a job produced: a title, report sections, headline rows, every number."""

    title: str
    lead: str
    sections: list
    headline: list  # rows of (quantity, value, note) for the terminal
    summary: dict = field(default_factory=dict)
    extra_files: dict = field(default_factory=dict)  # name -> callable(path) writing a file beside the report


#: When a second-order prediction of the BoN-RL convergence is shown (docs/second_order.md §5).
SECOND_ORDER_RULE = (
    "a prediction is shown at length m only if m δ ≥ 1 (N = e^{mδ} ≥ e), "
    "2π m λ² σ² ≥ e² (the maximum lies in the large-deviation tail), m σ²/h² ≥ 1 for "
    "rewards on a lattice of span h (S_m locally Gaussian on the lattice), and the "
    "prediction itself is positive (a gap and a KL are); elsewhere it is left blank."
)


def shown_predictions(table, sigma2):
    """Rows of a :class:`~klfrontier.ConvergenceTable` with the second-order predictions blanked
    (NaN, and their ratios with them) where :data:`SECOND_ORDER_RULE` says they do not hold.

    Parameters
    ----------
    table : ConvergenceTable
        Its ``delta``, ``lam``, ``lattice`` and rows (``m``, ``gap_prediction``,
        ``kl_to_optimal_prediction``).
    sigma2 : float
        ``σ² = Λ''(λ_δ)``, e.g. ``klfrontier.equivalence(ref, delta).sigma2``.

    Returns
    -------
    list of dict
        Copies of the rows with a boolean ``prediction_shown`` (the regime
        holds at this ``m``); a prediction outside it, or not positive, is NaN.

    Examples
    --------
    >>> import klfrontier as kf
    >>> ref = kf.Reference([0.0, 1.0, 2 ** 0.5], probs=[0.5, 0.3, 0.2])
    >>> tab = kf.convergence(ref, 0.1, lengths=[1, 2, 100])
    >>> [round(r["gap_prediction"], 3) for r in tab.rows]                # m = 1, 2: negative
    [-0.652, -0.098, 0.024]
    >>> rows = shown_predictions(tab, kf.equivalence(ref, 0.1).sigma2)
    >>> [r["prediction_shown"] for r in rows], [round(r["gap_prediction"], 3) for r in rows]
    ([False, False, True], [nan, nan, 0.024])
    """
    lam, delta = float(table.lam), float(table.delta)
    span = None if table.lattice is None else float(table.lattice[1])
    out = []
    for r in table.rows:
        m = float(r["m"])
        # λσ and σ/h are dimensionless: formed before squaring, they stay in range for any rewards
        # (σ² itself is inf past |r| ~ 1e154: no prediction is shown there)
        sd = float(np.sqrt(sigma2))
        ok = (
            m * delta >= 1.0
            and np.isfinite(sd)
            and 2 * np.pi * m * (lam * sd) ** 2 >= np.e**2
            and (span is None or m * (sd / span) ** 2 >= 1.0)
        )
        row = dict(r, prediction_shown=bool(ok))
        for pred, ratio in (
            ("gap_prediction", "gap_ratio"),
            ("kl_to_optimal_prediction", "kl_to_optimal_ratio"),
        ):
            if not (ok and row[pred] > 0):
                row[pred], row[ratio] = float("nan"), float("nan")
        out.append(row)
    return out


def _shown(x, spec):
    """A prediction for a sentence: formatted, or "not shown (m too small)" where it is blank."""
    return format(x, spec) if np.isfinite(x) else "not shown (m too small)"


def report_stage(progress, label):
    if progress is not None:
        progress(label)


# ---------------------------------------------------------------------- demo
DEMO_DELTAS = (0.05, 0.2, 1.0)
DEMO_LENGTHS = (10, 30, 100, 300, 1000, 3000, 10_000)
DEMO_N = np.unique(np.round(np.geomspace(2, 1e8, 24)))
#: Soft best-of-N in the demo: (lam, N grid) pairs.
DEMO_SOFT = ((2.0, (2, 4, 16, 64, 256, 1024)), (8.0, (2, 4, 16, 64, 256, 1024)))
#: Proxy versus gold: (lam, N grid) of soft best-of-N; KL points of the proxy-tilted policy
#: (geometric up to 4% of -log p(argmax), then evenly spaced up to saturation).
DEMO_GOLD_SOFT = (8.0, (2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096, 16384, 65536, 10**6))
DEMO_GOLD_KL_POINTS = (8, 30)


class SectionPart(NamedTuple):
    """One report section as its builder returns it.

    Attributes
    ----------
    section : Section
        Heading, text, figures and tables of the section.
    summary : dict
        Its entries of the job's JSON summary, keyed as they appear there (in order).
    headline : list of tuple
        Its ``(quantity, value, note)`` rows of the terminal headline.
    """

    section: Section
    summary: dict
    headline: list


def demo_job(
    instance="unigram-vader",
    *,
    top_n=50_000,
    deltas=DEMO_DELTAS,
    lengths=DEMO_LENGTHS,
    progress: Callable[[str], None] | None = None,
) -> JobResult:
    """Frontier, best-of-N, soft best-of-N, rate functions, SCGF, the BoN≡RL convergence, proxy vs gold.

    The report is composed of one builder per section, in this order:
    :func:`frontier_section`, :func:`large_deviations_section`,
    :func:`convergence_section` and :func:`proxy_gold_section`; the summary
    and the headline are their entries, after the instance's.

    The proxy-versus-gold section (4) runs on the unigram instances: the
    instance itself when its reference carries ``gold=`` (``unigram-vader-afinn``),
    else ``instances.unigram_proxy_gold(top_n)`` (VADER selects, AFINN judges);
    the built-in instances have no gold and no section 4.

    Parameters
    ----------
    instance : str
        An instance name (``klfrontier.instances.available()``), or ``"bigram"``: the
        Markov bigram model, whose report :func:`klfrontier.jobs_markov.bigram_demo_job`
        builds (``top_n``, ``deltas`` and ``lengths`` do not apply to it).
    top_n : int
        Vocabulary size for the unigram instances.
    deltas : sequence of float
        Per-token KL budgets δ for the sequence-level part.
    lengths : sequence of int
        Sequence lengths m (BoN uses N = e^{mδ}).
    progress : callable(str), optional
        Called with a label before each stage.

    Returns
    -------
    JobResult
        Sections 1-3 (4 with a gold reward); summary keys ``instance``, then
        each section's, then ``headline``.

    Examples
    --------
    >>> job = demo_job("bernoulli", deltas=(0.1,), lengths=(10,))
    >>> [s.heading[:1] for s in job.sections], list(job.summary)[:4]
    (['1', '2', '3'], ['instance', 'frontier', 'best_of_n', 'soft_best_of_n'])
    """
    if instance == "bigram":  # a Markov reference: its own sections (jobs_markov)
        from .jobs_markov import bigram_demo_job

        return bigram_demo_job(progress=progress)
    from . import instances
    from .equivalence import equivalence

    report_stage(progress, "loading the instance")
    kw = {"top_n": top_n} if instance.startswith("unigram") else {}
    inst = instances.load(instance, **kw)
    ref = inst.ref
    facts = inst.to_dict()
    summary: dict[str, Any] = {"instance": {"name": inst.name, "description": inst.description, **facts}}
    headline = [
        ("instance", inst.name, f"K = {ref.size:,}, {ref.n_levels} reward levels"),
        ("p(reward = 0)", facts.get("p_reward_zero"), "mass of words without a lexicon entry"),
        ("−log p(argmax)", ref.kl_max, "nats: KL at which the optimum saturates"),
    ]

    report_stage(progress, "frontier, best-of-N and soft best-of-N")
    parts = [frontier_section(inst)]
    report_stage(progress, "rate functions and the scaled CGF")
    eqs = {d: equivalence(ref, d) for d in deltas}
    parts.append(large_deviations_section(ref, eqs))
    report_stage(progress, "sequence-level convergence (exact law of S_m)")
    parts.append(convergence_section(ref, eqs, lengths))
    pg = (
        inst
        if inst.ref.gold is not None
        else (instances.unigram_proxy_gold(top_n=top_n) if instance.startswith("unigram") else None)
    )
    if pg is not None:
        report_stage(progress, "proxy versus gold")
        parts.append(proxy_gold_section(pg))

    # headline order: the instance, best-of-N (section 1), the budgets (3), gold (4)
    for part in parts:
        summary.update(part.summary)
        headline.extend(part.headline)
    summary["headline"] = [{"quantity": q, "value": v, "note": n} for q, v, n in headline]
    lead = (
        f"{inst.description} Best-of-N with N = e^(mδ) approaches the optimal KL-constrained "
        "policy with budget mδ as responses get long; below, the exact numbers that show it."
    )
    return JobResult(
        title=f"klfrontier demo — {inst.name}",
        lead=lead,
        sections=[p.section for p in parts],
        headline=headline,
        summary=summary,
    )


def frontier_section(inst) -> SectionPart:
    """Section 1: the one-token frontier R*(Δ) against exact best-of-N and soft best-of-N.

    Best-of-N runs over :data:`DEMO_N`, soft best-of-N over :data:`DEMO_SOFT`;
    each point is set against the frontier at its own KL, ``R*(KL)``.

    Parameters
    ----------
    inst : Instance
        The instance (``inst.ref``, ``inst.name``, ``inst.description``).

    Returns
    -------
    SectionPart
        Summary entries ``frontier``, ``best_of_n`` (one row per N) and
        ``soft_best_of_n`` (keyed by the temperature); headline rows for the
        N nearest 1e4 and the largest N.

    Examples
    --------
    >>> from klfrontier import instances
    >>> part = frontier_section(instances.load("bernoulli"))
    >>> list(part.summary), len(part.headline)
    (['frontier', 'best_of_n', 'soft_best_of_n'], 2)
    >>> all(r["reward_gap"] >= -1e-12 for r in part.summary["best_of_n"])   # nothing beats R*
    True
    """
    from .plots import bon_kl_figure, frontier_figure
    from .soft_bon import soft_best_of_n

    ref = inst.ref
    grid = np.linspace(0.0, ref.kl_max * 1.02, 240)
    fr = frontier(ref, grid)
    bon_rows = []
    for n in DEMO_N:
        b = best_of_n(ref, n=float(n))
        est = bon_kl_beirami(ref, n=float(n))
        star = float(frontier(ref, [b.kl]).reward[0])
        bon_rows.append(
            {
                "n": float(n),
                "kl": b.kl,
                "kl_bound": b.kl_bound,
                "kl_estimate": est,
                "reward": b.reward,
                "frontier_reward": star,
                "reward_gap": star - b.reward,
                "win_rate": b.win_rate,
                "lam_same_kl": b.lam_same_kl,
                "lam_same_reward": b.lam_same_reward,
            }
        )
    soft = {}
    for lam, ns in DEMO_SOFT:
        pts = [soft_best_of_n(ref, n=n, lam=lam) for n in ns]
        soft[lam] = [
            {
                "n": n,
                "kl": s.kl,
                "reward": s.reward,
                "frontier_reward": float(frontier(ref, [s.kl]).reward[0]),
            }
            for n, s in zip(ns, pts)
        ]
    points = {"best-of-N (N = 2 … 1e8)": ([r["kl"] for r in bon_rows], [r["reward"] for r in bon_rows])}
    for lam, rows in soft.items():
        points[f"soft best-of-N, λ = {lam:g}"] = ([r["kl"] for r in rows], [r["reward"] for r in rows])
    fig_frontier = frontier_figure(
        fr.kl,
        fr.reward,
        points=points,
        kl_max=ref.kl_max,
        title=f"Reward–KL frontier, one token — {inst.name}",
        reward_label="expected reward per token",
    )
    n_arr = np.array([r["n"] for r in bon_rows])
    fig_bonkl = bon_kl_figure(
        n_arr,
        [r["kl"] for r in bon_rows],
        [r["kl_bound"] for r in bon_rows],
        [r["kl_estimate"] for r in bon_rows],
        kl_max=ref.kl_max,
    )
    summary = {
        "frontier": fr.to_dict(),
        "best_of_n": bon_rows,
        "soft_best_of_n": {str(k): v for k, v in soft.items()},
    }
    section = Section(
        "1 · One token: how much reward per nat, and how close best-of-N gets",
        f"Reference: {inst.description} The curve is the best reward any policy can reach "
        f"at each KL budget (the exponentially tilted policy); it flattens at "
        f"−log p(argmax) = {ref.kl_max:.3f} nats, where the optimum is p(· | argmax). "
        "Best-of-N and soft best-of-N sit just below it.\n\n"
        "Because most words have reward 0, rewards tie massively, and the usual formula "
        "log N − (N−1)/N overstates best-of-N's KL: the exact KL saturates at −log p(argmax) "
        "while the formula grows without bound.",
        [
            ("frontier", fig_frontier, "Frontier R*(Δ) with exact best-of-N and soft best-of-N points."),
            (
                "bon_kl",
                fig_bonkl,
                "Best-of-N KL: exact (ties counted) vs log N − (N−1)/N and the "
                "Beirami et al. estimate (its exact mean under best-of-N).",
            ),
        ],
        [
            (
                "Best-of-N ↔ RLHF dictionary",
                [
                    "N",
                    "exact KL",
                    "log N−(N−1)/N",
                    "reward",
                    "R*(same KL)",
                    "gap",
                    "win rate",
                    "λ (same KL)",
                    "λ (same reward)",
                ],
                [
                    [
                        r["n"],
                        r["kl"],
                        r["kl_bound"],
                        r["reward"],
                        r["frontier_reward"],
                        r["reward_gap"],
                        r["win_rate"],
                        r["lam_same_kl"],
                        r["lam_same_reward"],
                    ]
                    for r in bon_rows
                ],
            )
        ],
    )
    headline = []
    for target in (1e4, n_arr[-1]):
        r = bon_rows[_nearest(n_arr, target)]
        headline.append(
            (
                f"BoN N = {r['n']:.3g}: exact KL",
                r["kl"],
                f"usual formula log N − (N−1)/N = {r['kl_bound']:.3f}; reward {r['reward']:.4f} "
                f"vs optimal {r['frontier_reward']:.4f} at the same KL",
            )
        )
    return SectionPart(section, summary, headline)


def large_deviations_section(ref, eqs) -> SectionPart:
    """Section 2: the rate functions I₀ and I_λ and the scaled CGF with its Rényi form (theory §6).

    Parameters
    ----------
    ref : Reference
    eqs : dict
        ``{δ: klfrontier.equivalence(ref, δ)}`` for the per-token budgets, in order.

    Returns
    -------
    SectionPart
        Summary entries ``rate_function`` and ``scgf`` (at the middle budget's λ,
        with the largest gap between its two forms); no headline rows.

    Examples
    --------
    >>> import klfrontier as kf
    >>> ref = kf.Reference([0.0, 1.0, 2.0], probs=[0.5, 0.3, 0.2])
    >>> part = large_deviations_section(ref, {d: kf.equivalence(ref, d) for d in (0.05, 0.2)})
    >>> list(part.summary), part.summary["scgf"]["max_abs_difference"] < 1e-12
    (['rate_function', 'scgf'], True)
    """
    from .ldp import rate_function, scgf
    from .plots import rate_function_figure, scgf_figure

    deltas = list(eqs)
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
    summary = {
        "rate_function": {"x": x, "I0": i0, "I_lam": {str(k): v for k, v in i_lam.items()}},
        "scgf": {
            "lam": mid.lam,
            "t": t,
            "direct": direct,
            "renyi": renyi,
            "max_abs_difference": float(np.max(np.abs(direct - renyi))),
        },
    }
    section = Section(
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
        [
            ("rate_functions", fig_rate, "Rate functions I₀ and I_λ (nats per token)."),
            ("scgf", fig_scgf, "Scaled CGF and its Rényi cross-entropy form."),
        ],
        [
            (
                "Per-token budgets",
                ["δ", "λ_δ", "R*(δ)", "I₀(R*(δ))", "σ²(λ_δ)"],
                [[d, eqs[d].lam, eqs[d].frontier_reward, eqs[d].I0_at_x_star, eqs[d].sigma2] for d in deltas],
            )
        ],
    )
    return SectionPart(section, summary, [])


def convergence_section(ref, eqs, lengths) -> SectionPart:
    """Section 3: best-of-N with N = e^{mδ} against KL-RL with budget mδ, exact, as m grows.

    Second-order predictions are shown only where :data:`SECOND_ORDER_RULE` holds.

    Parameters
    ----------
    ref : Reference
    eqs : dict
        ``{δ: klfrontier.equivalence(ref, δ)}`` (its ``sigma2`` decides which predictions show).
    lengths : sequence of int
        Sequence lengths m.

    Returns
    -------
    SectionPart
        Summary entry ``convergence`` (keyed by ``str(δ)``); two headline rows
        per budget, at the largest m.

    Examples
    --------
    >>> import klfrontier as kf
    >>> ref = kf.Reference([0.0, 1.0, 2.0], probs=[0.5, 0.3, 0.2])
    >>> part = convergence_section(ref, {0.1: kf.equivalence(ref, 0.1)}, [10, 100])
    >>> list(part.summary["convergence"]), len(part.headline)
    (['0.1'], 2)
    """
    from .plots import convergence_figure
    from .sequences import convergence

    deltas = list(eqs)
    conv = {}
    series = {}
    for d in deltas:
        tab = convergence(ref, d, lengths=list(lengths))
        tab.rows = shown_predictions(tab, eqs[d].sigma2)  # second order only where it holds
        conv[d] = tab
        rows = tab.rows
        series[d] = {
            "gap": [r["gap"] for r in rows],
            "gap_pred": [r["gap_prediction"] for r in rows],
            "kl_opt": [r["kl_to_optimal_per_token"] for r in rows],
            "kl_opt_pred": [r["kl_to_optimal_prediction"] / r["m"] for r in rows],
        }
    fig_conv = convergence_figure(np.array(lengths, dtype=float), series)
    summary = {
        "convergence": {
            str(d): {
                **conv[d].to_dict(),
                "prediction_shown": [r["prediction_shown"] for r in conv[d].rows],
                "prediction_rule": SECOND_ORDER_RULE,
            }
            for d in deltas
        }
    }
    table_rows = []
    for d in deltas:
        for r in conv[d].rows:
            table_rows.append(
                [
                    d,
                    r["m"],
                    r["reward_per_token"],
                    r["optimal_reward"],
                    r["gap"],
                    r["gap_prediction"],
                    r["kl_per_token"],
                    r["kl_to_optimal"],
                    r["kl_to_optimal_prediction"],
                    r["method"],
                ]
            )
    section = Section(
        "3 · Long responses: best-of-N with N = e^{mδ} becomes KL-RL with budget mδ",
        "Exact values over all |V|^m sequences, computed through the exact law of the total "
        "reward S_m (tilted FFT on the reward lattice). As m grows, best-of-N's reward per "
        "token approaches R*(δ), its KL per token approaches δ, and its KL to the optimal "
        "policy per token goes to 0 — the paper's theorem. The dashed lines are the "
        "second-order predictions (beyond the paper): the gap shrinks like (log m)/m while the "
        "total KL between best-of-N and the optimal policy grows like ½ log m. They are asymptotic "
        "in m and shown only where they hold: " + SECOND_ORDER_RULE,
        [
            (
                "convergence",
                fig_conv,
                "Reward gap and KL to the optimal policy, per token, against m "
                "(log axes); dashed: second-order predictions, where they hold.",
            )
        ],
        [
            (
                "Convergence table",
                [
                    "δ",
                    "m",
                    "BoN reward/token",
                    "R*(δ)",
                    "gap",
                    "predicted gap",
                    "KL(BoN‖p)/m",
                    "KL(BoN‖φ_Δ)",
                    "predicted",
                    "engine",
                ],
                table_rows,
            )
        ],
    )
    headline = []
    for d in deltas:
        r = conv[d].rows[-1]
        headline.append(
            (
                f"δ = {d:g}: R*(δ) per token",
                r["optimal_reward"],
                f"BoN at m = {r['m']:,}: {r['reward_per_token']:.5f} "
                f"(gap {r['gap']:.2e}, predicted {_shown(r['gap_prediction'], '.2e')})",
            )
        )
        headline.append(
            (
                f"δ = {d:g}: KL(BoN‖φ_Δ)/m",
                r["kl_to_optimal_per_token"],
                f"total {r['kl_to_optimal']:.3f} nats, "
                f"predicted {_shown(r['kl_to_optimal_prediction'], '.3f')}",
            )
        )
    return SectionPart(section, summary, headline)


def _nearest(arr, value):
    return int(np.argmin(np.abs(np.log(arr) - np.log(value))))


def _gold_shape(kl, proxy, gold, proxy_name):
    """One phrase on how a gold curve moves with KL, and the index of its peak."""
    i = int(np.argmax(gold))
    peak, last = float(gold[i]), float(gold[-1])
    if last >= peak - 1e-9 * max(1.0, abs(peak)):
        return f"keeps rising, to {last:.3f} at KL {kl[-1]:.2f} nats", i
    if i == 0:
        return (
            f"never rises above its value at the reference ({peak:.3f}) and ends at {last:.3f} "
            f"(KL {kl[-1]:.2f} nats)"
        ), i
    return (
        f"rises to {peak:.3f} at KL ≈ {kl[i]:.2f} nats ({proxy_name} {proxy[i]:.3f} there), "
        f"then falls to {last:.3f} at KL {kl[-1]:.2f} nats"
    ), i


def proxy_gold_section(inst) -> SectionPart:
    """Section 4 (theory §9): policies select with the proxy reward, the gold score judges them.

    The proxy-tilted policy over a grid of budgets (:data:`DEMO_GOLD_KL_POINTS`),
    best-of-N over ``N = 1`` and :data:`DEMO_N`, and soft best-of-N
    (:data:`DEMO_GOLD_SOFT`), each with its gold reward ``E_π g`` and the most
    gold any policy has at its KL (the frontier of the reference tilted by gold).

    Parameters
    ----------
    inst : Instance
        An instance whose reference carries ``gold=`` (e.g.
        ``instances.unigram_proxy_gold()``); ``inst.meta`` names the proxy and the gold.

    Returns
    -------
    SectionPart
        Summary entry ``proxy_gold``; headline rows for the gold peaks of the
        tilted policy and of best-of-N.

    Examples
    --------
    >>> from klfrontier import instances
    >>> part = proxy_gold_section(instances.unigram_proxy_gold(top_n=2000))
    >>> s = part.summary["proxy_gold"]
    >>> (s["proxy"], s["gold"]), s["tilted"]["peak"]["gold"] == max(s["tilted"]["gold"])
    (('VADER', 'AFINN'), True)
    """
    from .plots import gold_figure
    from .reference import Reference
    from .soft_bon import soft_best_of_n
    from .tilt import tilted

    ref = inst.ref
    proxy_name = str(inst.meta.get("proxy", "proxy")).upper()
    gold_name = str(inst.meta.get("gold", "gold")).upper()
    n_geo, n_lin = DEMO_GOLD_KL_POINTS
    budgets = ref.kl_max * np.concatenate(
        [[0.0], np.geomspace(1e-3, 0.04, n_geo, endpoint=False), np.linspace(0.04, 1.0, n_lin)]
    )
    tilts = [tilted(ref, kl=float(d)) for d in budgets]
    bons = [best_of_n(ref, n=1.0)] + [best_of_n(ref, n=float(n)) for n in DEMO_N]
    soft_lam, soft_ns = DEMO_GOLD_SOFT
    softs = [soft_best_of_n(ref, n=n, lam=soft_lam) for n in soft_ns]
    # the most gold any policy can have at each KL: the policy tilted by gold itself
    gold_ref = Reference(ref.gold, logprobs=ref.logprobs)

    def series(pols, key, values):
        kl = [p.kl for p in pols]
        best = frontier(gold_ref, kl).reward
        return {
            key: list(values),
            "kl": kl,
            "proxy": [p.reward for p in pols],
            "gold": [p.gold for p in pols],
            "gold_frontier": best.tolist(),
        }

    tab = {
        "tilted": series(tilts, "kl_budget", budgets.tolist()),
        "best_of_n": series(bons, "n", [1.0] + [float(n) for n in DEMO_N]),
        "soft_best_of_n": series(softs, "n", [float(n) for n in soft_ns]),
    }
    tab["tilted"]["lam"] = [p.lam for p in tilts]
    tab["soft_best_of_n"]["lam"] = soft_lam
    tab["soft_best_of_n"]["kl_limit"] = tilted(ref, lam=soft_lam).kl  # N -> inf: phi_lam
    names = {
        "tilted": f"tilted by {proxy_name}",
        "best_of_n": f"best-of-N by {proxy_name}",
        "soft_best_of_n": f"soft best-of-N by {proxy_name}, λ = {soft_lam:g}",
    }
    labels = {
        **names,
        "tilted": f"{names['tilted']} (optimal for the proxy)",
        "best_of_n": f"{names['best_of_n']} (N = 1 … 1e8)",
    }
    grid = np.linspace(0.0, 1.02 * ref.kl_max, 160)
    fr_gold = frontier(gold_ref, grid)
    fig = gold_figure(
        {labels[k]: (v["kl"], v["proxy"], v["gold"]) for k, v in tab.items()},
        gold_frontier=(grid, fr_gold.reward),
        kl_max=ref.kl_max,
        title=f"{proxy_name} selects, {gold_name} judges — {inst.name}",
        proxy_label=f"{proxy_name} reward (proxy)",
        gold_label=f"{gold_name} reward (gold)",
    )
    shapes, peaks = {}, {}
    for k, v in tab.items():
        shapes[k], i = _gold_shape(v["kl"], v["proxy"], v["gold"], proxy_name)
        peaks[k] = {
            "index": i,
            "gold": v["gold"][i],
            "kl": v["kl"][i],
            "proxy": v["proxy"][i],
            "gold_at_largest_kl": v["gold"][-1],
            "largest_kl": v["kl"][-1],
        }
        tab[k]["peak"] = peaks[k]
    facts = inst.to_dict()
    tp = peaks["tilted"]
    soft_cap = tab["soft_best_of_n"]["kl_limit"]
    if tp["index"] < len(tab["tilted"]["kl"]) - 1:
        verdict = (
            "Pushing the proxy past that point spends KL to lose gold — over-optimisation, measured exactly."
        )
    else:
        verdict = "On this instance more proxy reward buys more gold all the way: no over-optimisation."
    top_words = ", ".join(facts["argmax_words"][:4])
    text = (
        f"A policy picks words by their {proxy_name} score (the proxy reward it is optimised for) and "
        f"is judged by their {gold_name} score (the gold reward we actually wanted); the words of "
        f"highest {proxy_name} score ({top_words}) have mean {gold_name} score "
        f"{facts['gold_on_argmax']:.3g}. Every number is exact: within one proxy level each policy "
        "here is proportional to p, so E_π g = Σ π(level) · E_p[g | level] (theory §9).\n\n"
        f"The proxy reward rises with KL, as it must. The gold reward of the proxy-tilted policy "
        f"{shapes['tilted']}; under best-of-N it {shapes['best_of_n']}; under soft best-of-N "
        f"(λ = {soft_lam:g}) it {shapes['soft_best_of_n']} — as N grows soft best-of-N tends to the "
        f"policy tilted with λ = {soft_lam:g}, so its KL never passes {soft_cap:.2f} nats: the "
        "temperature is a brake on how far the proxy is pushed. At its gold peak the proxy-tilted "
        f"policy has gold {tp['gold']:.3f} where the most any policy can have at that KL is "
        f"{tab['tilted']['gold_frontier'][tp['index']]:.3f} (dashed: tilting by {gold_name} "
        f"itself). {verdict}"
    )
    rows = []
    for k, v in tab.items():
        for j in range(len(v["kl"])):
            param = v["kl_budget"][j] if k == "tilted" else v["n"][j]
            rows.append(
                [
                    names[k],
                    param,
                    v["kl"][j],
                    v["proxy"][j],
                    v["gold"][j],
                    v["gold_frontier"][j],
                    v["gold_frontier"][j] - v["gold"][j],
                ]
            )
    section = Section(
        f"4 · Proxy versus gold ({proxy_name} selects, {gold_name} judges)",
        text,
        [
            (
                "proxy_gold",
                fig,
                f"Left: {proxy_name} reward (the proxy) against KL. Right: {gold_name} "
                "reward (gold) of the same policies; dashed: the best gold reward at "
                "each KL.",
            )
        ],
        [
            (
                "Proxy and gold reward",
                [
                    "policy",
                    "KL budget Δ / N",
                    "KL",
                    f"{proxy_name} (proxy)",
                    f"{gold_name} (gold)",
                    "best gold at this KL",
                    "gold gap",
                ],
                rows,
            )
        ],
    )
    summary = {
        "instance": inst.name,
        "proxy": proxy_name,
        "gold": gold_name,
        "mean_gold_reference": facts["mean_gold"],
        "gold_on_argmax": facts["gold_on_argmax"],
        **tab,
        "gold_frontier": {"kl": grid, "gold": fr_gold.reward},
    }
    bp = peaks["best_of_n"]
    headline = [
        (
            f"{gold_name} peak, tilted by {proxy_name}",
            tp["gold"],
            f"at KL {tp['kl']:.2f} nats ({proxy_name} {tp['proxy']:.3f}); at KL {tp['largest_kl']:.2f}: "
            f"{tp['gold_at_largest_kl']:.3f}",
        ),
        (
            f"{gold_name} peak, best-of-N by {proxy_name}",
            bp["gold"],
            f"N = {tab['best_of_n']['n'][bp['index']]:.3g}, KL {bp['kl']:.2f} nats; at N = "
            f"{tab['best_of_n']['n'][-1]:.3g}: {bp['gold_at_largest_kl']:.3f}",
        ),
    ]
    return SectionPart(section, {"proxy_gold": summary}, headline)


# ------------------------------------------------------------------- analyze
def _checkpoint_paths(names):
    """Policies whose names differ only in their numbers (``step100``, ``step200``) form one run."""
    import re

    runs = {}
    num = r"\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"  # step100, lam=0.25, lr3e-5: one number each
    for name in names:
        key = re.sub(num, "#", name)
        nums = tuple(float(x) for x in re.findall(num, name))
        runs.setdefault(key, []).append((nums, name))
    return [[n for _, n in sorted(v)] for key, v in runs.items() if "#" in key and len(v) > 1]


def _interval_cells(v, lo, hi):
    return [float(v), float(lo), float(hi)]


def analyze_job(
    base,
    *,
    policies=None,
    gold_col=None,
    n_values=None,
    kl_values=None,
    lam_values=None,
    n_boot=1000,
    seed=0,
    interval="auto",
    confidence=0.95,
    columns=None,
    progress: Callable[[str, int, int], None] | None = None,
    provenance=None,
    table_format="parquet",
    max_prompt_rows=50,
) -> JobResult:
    """Best-of-N, the average-KL optimum, the tilt, aligned policies and proxy-vs-gold from samples.

    Parameters
    ----------
    base, policies, gold_col, n_values, kl_values, lam_values, n_boot, seed, interval, confidence, columns :
        As :func:`klfrontier.analyze`.
    progress : callable(stage, done, total), optional
    provenance : dict, optional
        Recorded in the summary as given (the CLI passes its command line and input files).
    table_format : {"parquet", "csv"}
        Format of the per-prompt table written beside the report.
    max_prompt_rows : int
        Rows of the per-prompt table shown on the page (all rows are in the file).
    """
    from functools import partial

    from . import __version__
    from .empirical import TRUST_RULE, analyze
    from .plots import empirical_figure, frontier_figure, overoptimization_figure

    res = analyze(
        base,
        policies=policies,
        gold_col=gold_col,
        n_values=n_values,
        kl_values=kl_values,
        lam_values=lam_values,
        n_boot=n_boot,
        seed=seed,
        interval=interval,
        confidence=confidence,
        columns=columns,
        progress=progress,
    )
    info = res.info
    bon, tilt, fr, feq = res.bon, res.tilt, res.frontier, res.frontier_equal
    pct = f"{100 * confidence:g}%"
    source = getattr(base, "source", None) or (
        str(base) if isinstance(base, (str, bytes)) or hasattr(base, "__fspath__") else "in memory"
    )
    bad = list(getattr(base, "bad_rows", []) or [])
    n_bad = int(getattr(base, "n_bad_rows", 0) or 0)
    sections = []

    # 1 · the samples ---------------------------------------------------------------------
    rows = [
        ["samples (kept prompts)", info["samples"]],
        ["prompts kept", info["prompts"]],
        ["prompts left out (fewer than 2 samples)", len(res.excluded)],
        [
            "samples per prompt (min / median / max)",
            f"{info['n_min']} / {info['n_median']:g} / {info['n_max']}",
        ],
        ["gold reward", f"column {gold_col!r}" if gold_col else "no"],
        ["bad rows skipped", n_bad],
        ["interval method", info["interval"]],
    ]
    tables = [("Input", ["", ""], rows)]
    if res.excluded:
        tables.append(
            (
                "Prompts left out (fewer than two samples)",
                ["prompt", "samples"],
                [[p, n] for p, n in res.excluded[:50]],
            )
        )
    if bad:
        tables.append(("First bad rows", ["file", "line", "reason"], [list(b) for b in bad[:20]]))
    sections.append(Section("1 · The samples", f"Source: {source}.", [], tables))

    # 2 · best-of-N -----------------------------------------------------------------------
    ns = bon.n.astype(float)
    fig_emp = partial(  # drawn when a report is written
        empirical_figure,
        ns,
        bon.reward_plugin,
        bon.reward,
        lo=bon.reward_lo,
        hi=bon.reward_hi,
        kl=tilt.kl if len(tilt) else None,
        tilted_reward=tilt.reward if len(tilt) else None,
        tilted_lo=tilt.reward_lo if len(tilt) else None,
        tilted_hi=tilt.reward_hi if len(tilt) else None,
        trust_n=info["n_min"],
        trust_kl=info["kl_trust_limit_median"],
        trusted=bon.reward_trusted,
        title=f"Mean over prompts, with {pct} intervals",
    )
    bon_rows = []
    for i in range(len(bon)):
        row = [
            int(bon.n[i]),
            int(bon.prompts[i]),
            *_interval_cells(bon.reward[i], bon.reward_lo[i], bon.reward_hi[i]),
            float(bon.reward_plugin[i]),
            float(bon.kl[i]),
            *_interval_cells(bon.kl_debiased[i], bon.kl_lo[i], bon.kl_hi[i]),
            float(bon.kl_bound[i]),
            float(bon.win_rate[i]),
            bool(bon.reward_trusted[i]),
            bool(bon.kl_trusted[i]),
        ]
        bon_rows.append(row)
    bon_cols = [
        "N",
        "prompts",
        "reward (unbiased)",
        "lo",
        "hi",
        "plug-in reward",
        "plug-in KL",
        "debiased KL",
        "lo",
        "hi",
        "log N−(N−1)/N",
        "win rate",
        "reward trusted",
        "KL trusted",
    ]
    sections.append(
        Section(
            "2 · Best-of-N",
            "The unbiased estimator averages the maximum over all N-subsets of each prompt's samples, "
            "drawn without replacement; its mean is E[max of N] exactly. Plug-in values treat each "
            "prompt's samples as the reference law (ties exact). Best-of-N at N averages over the prompts "
            "with at least N samples (column 'prompts').\n\n"
            "Trust rule: " + TRUST_RULE + " For rewards without ties the plug-in KL does not vary between "
            "prompts while it is biased, so its interval is never trusted; the true KL of best-of-N on a "
            "continuous reward is log N − (N−1)/N.",
            [
                (
                    "empirical",
                    fig_emp,
                    "Left: expected best-of-N reward (unbiased, with its interval; "
                    "hollow markers are untrusted rows). Right: the tilted policy "
                    "computed from the base samples.",
                )
            ],
            [("Best-of-N", bon_cols, bon_rows, "Intervals: " + res.methods["bon"] + ".")],
        )
    )

    # 3 · the optimum ---------------------------------------------------------------------
    points = {"best-of-N (plug-in)": (bon.kl, bon.reward_plugin)}
    pol_points = {}
    for name, t in res.policies.items():
        pol_points[name] = {
            "kl": float(t.kl[0]),
            "kl_lo": float(t.kl_lo[0]),
            "kl_hi": float(t.kl_hi[0]),
            "reward": float(t.reward[0]),
            "reward_lo": float(t.reward_lo[0]),
            "reward_hi": float(t.reward_hi[0]),
        }
    paths = _checkpoint_paths(list(res.policies))
    figs = []
    f_rows = []
    if len(fr):
        good = np.isfinite(fr.reward_lo) & np.isfinite(fr.reward_hi)
        bands = (
            {"true optimum, bias-corrected": (fr.kl[good], fr.reward_lo[good], fr.reward_hi[good])}
            if good.any()
            else {}
        )
        figs.append(
            (
                "frontier",
                partial(
                    frontier_figure,
                    fr.kl,
                    fr.reward,
                    points=points,
                    bands=bands,
                    trust_kl=info["kl_trust_limit_median"],
                    frontier_label="optimum on these samples (plug-in, as the best-of-N points)",
                    policies=pol_points or None,
                    paths=paths or None,
                    curves={"every prompt the same budget": (feq.kl, feq.reward)},
                    title="Reward–KL: the average-KL optimum from the base samples",
                ),
                "The optimum for an average KL budget Δ tilts every prompt with one shared λ (KL-regularised "
                "RL with one β = 1/λ); the dashed curve gives every prompt the same budget instead and lies "
                "below it. The solid curve and the best-of-N points are plug-in values on the same empirical "
                "laws (so best-of-N lies below the curve); the band is the interval for the true optimum, "
                "built on jackknife bias-corrected values, which the plug-in curve underestimates. Aligned "
                f"policies are shown with {pct} intervals in both directions.",
            )
        )
        for i in range(len(fr)):
            f_rows.append(
                [
                    float(fr.kl[i]),
                    float(fr.lam[i]),
                    float(fr.beta[i]),
                    float(fr.reward[i]),
                    *_interval_cells(fr.reward_debiased[i], fr.reward_lo[i], fr.reward_hi[i]),
                    float(feq.reward[i]),
                    bool(fr.saturated[i]),
                    bool(fr.trusted[i]),
                ]
            )
    sections.append(
        Section(
            "3 · The optimum: average-KL frontier",
            "R*_avg(Δ) = mean over prompts of R_x(λ), with the one λ that makes the mean KL equal Δ "
            "(theory §9); 'debiased' subtracts each prompt's jackknife bias, and the interval is for "
            "the true optimum. Any per-prompt policies — best-of-N at any N, soft best-of-N, tilts with "
            "unequal budgets — have (mean KL, mean reward) on or below it.",
            figs,
            [
                (
                    "Average-KL frontier",
                    [
                        "Δ (mean KL)",
                        "λ",
                        "β = 1/λ",
                        "R*_avg (plug-in)",
                        "debiased",
                        "lo",
                        "hi",
                        "equal budgets",
                        "saturated",
                        "trusted",
                    ],
                    f_rows,
                    "Intervals: " + res.methods["frontier"] + ".",
                )
            ],
        )
    )

    # 4 · the tilt at fixed λ -------------------------------------------------------------
    t_rows = [
        [
            float(tilt.lam[g]),
            float(tilt.kl[g]),
            *_interval_cells(tilt.kl_debiased[g], tilt.kl_lo[g], tilt.kl_hi[g]),
            float(tilt.reward[g]),
            *_interval_cells(tilt.reward_debiased[g], tilt.reward_lo[g], tilt.reward_hi[g]),
            float(tilt.ess[g]),
            bool(tilt.reward_trusted[g]),
            bool(tilt.kl_trusted[g]),
        ]
        for g in range(len(tilt))
    ]
    sections.append(
        Section(
            "4 · The tilted policy at fixed λ",
            "φ_λ ∝ p̂ e^{λ r} on each prompt's samples (self-normalised weights). 'ess' is the smallest "
            "effective sample size (Σw)²/Σw² over prompts.",
            [],
            [
                (
                    "Tilted policy from base samples",
                    [
                        "λ",
                        "KL (plug-in)",
                        "debiased",
                        "lo",
                        "hi",
                        "reward (plug-in)",
                        "debiased",
                        "lo",
                        "hi",
                        "min ess",
                        "reward trusted",
                        "KL trusted",
                    ],
                    t_rows,
                    "Intervals: " + res.methods["tilt"] + ".",
                )
            ],
        )
    )

    # 5 · aligned policies ----------------------------------------------------------------
    if res.policies:
        p_rows = []
        for name, t in res.policies.items():
            p_rows.append(
                [
                    name,
                    int(t.prompts[0]),
                    *_interval_cells(t.kl[0], t.kl_lo[0], t.kl_hi[0]),
                    *_interval_cells(t.reward[0], t.reward_lo[0], t.reward_hi[0]),
                    float(t.optimal_reward_debiased[0]),
                    *_interval_cells(t.gap[0], t.gap_lo[0], t.gap_hi[0]),
                    *_interval_cells(t.kl_to_optimal[0], t.kl_to_optimal_lo[0], t.kl_to_optimal_hi[0]),
                    float(t.bon_n_same_kl[0]),
                    bool(t.trusted[0]),
                ]
            )
        sections.append(
            Section(
                "5 · Aligned policies against the optimum",
                "KL(π‖p) is the mean of log π − log p over the policy's samples; the optimal reward at that "
                "KL comes from the base samples of the same prompts; the distance to the optimal policy uses "
                "KL(π‖φ_λ) = KL(π‖p) − λ E_π r + Λ(λ) with Λ estimated from the base samples. Policies whose "
                "names differ only in their numbers are checkpoints of one run and are joined in order.",
                [],
                [
                    (
                        "Policies",
                        [
                            "policy",
                            "prompts",
                            "KL",
                            "lo",
                            "hi",
                            "reward",
                            "lo",
                            "hi",
                            "optimal reward at that KL",
                            "reward gap",
                            "lo",
                            "hi",
                            "KL to optimal",
                            "lo",
                            "hi",
                            "best-of-N with that KL",
                            "trusted",
                        ],
                        p_rows,
                        "Intervals: " + res.methods[f"policy:{next(iter(res.policies))}"] + ".",
                    )
                ],
            )
        )

    # 6 · proxy versus gold ---------------------------------------------------------------
    if info["gold"]:
        series = {
            "best-of-N chosen by the proxy": {
                "kl": bon.kl,
                "proxy": bon.reward,
                "gold": bon.gold,
                "gold_lo": bon.gold_lo,
                "gold_hi": bon.gold_hi,
            }
        }
        if len(tilt):
            series["tilted by the proxy"] = {
                "kl": tilt.kl,
                "proxy": tilt.reward,
                "gold": tilt.gold_debiased,
                "gold_lo": tilt.gold_lo,
                "gold_hi": tilt.gold_hi,
            }
        g_rows = [
            [
                f"best-of-{int(bon.n[i])}",
                float(bon.kl[i]),
                float(bon.reward[i]),
                *_interval_cells(bon.gold[i], bon.gold_lo[i], bon.gold_hi[i]),
                bool(bon.reward_trusted[i]),
            ]
            for i in range(len(bon))
        ]
        g_rows += [
            [
                f"tilt λ = {tilt.lam[g]:.4g}",
                float(tilt.kl[g]),
                float(tilt.reward[g]),
                *_interval_cells(tilt.gold_debiased[g], tilt.gold_lo[g], tilt.gold_hi[g]),
                bool(tilt.reward_trusted[g]),
            ]
            for g in range(len(tilt))
        ]
        sections.append(
            Section(
                "6 · Proxy versus gold: reward-model over-optimisation",
                f"Selection uses the proxy reward; the gold reward ({gold_col}) is measured on what is "
                "selected. Best-of-N: the unbiased estimator with the gold averaged within ties of the "
                "proxy. Tilt: self-normalised weights e^{λ·proxy}. Where the gold curve bends down while "
                "the proxy keeps rising, selection is exploiting the proxy.",
                [
                    (
                        "overoptimization",
                        partial(overoptimization_figure, series, title="Proxy and gold reward against KL"),
                        "Left: the proxy reward that selection optimises. Right: the gold reward it buys.",
                    )
                ],
                [
                    (
                        "Proxy versus gold",
                        ["policy", "KL", "proxy reward", "gold reward", "lo", "hi", "trusted"],
                        g_rows,
                        "Intervals: "
                        + res.methods["bon"]
                        + "; for the tilt, "
                        + res.methods["tilt"].split("; ", 1)[-1]
                        + ".",
                    )
                ],
            )
        )

    # 7 · per prompt ----------------------------------------------------------------------
    per = res.per_prompt
    cols = per.columns
    shown = [
        [(v if not isinstance(v, float) else float(v)) for v in row] for row in per.rows(max_prompt_rows)
    ]
    ext = "parquet" if table_format == "parquet" else "csv"
    more = f"first {min(len(per), max_prompt_rows)} of {len(per)}; every prompt is in per_prompt.{ext}"
    sections.append(
        Section(
            "7 · Per prompt", f"One row per prompt ({more}).", [], [("Per-prompt estimates", cols, shown)]
        )
    )

    def write_per_prompt(path, per=per, fmt=table_format):
        from ._atomic import write_table

        write_table(path, per.data, format=fmt)

    summary: dict[str, Any] = {
        "klfrontier_version": __version__,
        "provenance": dict(provenance or {}),
        "input": {
            "source": source,
            "n_bad_rows": n_bad,
            "bad_rows": [list(b) for b in bad[:100]],
            "column_mapping": dict(columns or {}),
            "gold_col": gold_col,
        },
        "analysis": res.to_dict(),
    }
    summary["provenance"].setdefault("seed", seed)
    summary["provenance"].setdefault("interval_method", res.methods)

    headline = [
        (
            "samples / prompts",
            f"{info['samples']:,} / {info['prompts']:,}",
            f"{len(res.excluded)} prompts left out, {n_bad} bad rows skipped",
        ),
        ("interval method", info["interval"], res.methods["bon"].split(":")[0]),
    ]
    for i in range(len(bon)):
        if int(bon.n[i]) in (2, 4, 16, 64):
            headline.append(
                (
                    f"best-of-{int(bon.n[i])} reward (unbiased)",
                    float(bon.reward[i]),
                    ci_note(bon.reward_lo[i], bon.reward_hi[i], bon.reward_trusted[i], pct),
                )
            )
    for i in range(len(fr)):
        if i in (len(fr) // 4, len(fr) // 2):
            headline.append(
                (
                    f"optimal reward at mean KL {fr.kl[i]:.3g}",
                    float(fr.reward_debiased[i]),
                    ci_note(fr.reward_lo[i], fr.reward_hi[i], fr.trusted[i], pct)
                    + f"; plug-in {fr.reward[i]:.4g}",
                )
            )
    for name, t in res.policies.items():
        headline.append(
            (
                f"policy {name}: KL to the optimum",
                float(t.kl_to_optimal[0]),
                f"KL {t.kl[0]:.4g}, reward {t.reward[0]:.4g} vs optimal "
                f"{t.optimal_reward_debiased[0]:.4g}; "
                + ci_note(t.kl_to_optimal_lo[0], t.kl_to_optimal_hi[0], t.trusted[0], pct),
            )
        )
    headline.append(
        (
            "KL trust limit (median prompt)",
            info["kl_trust_limit_median"],
            "log(median samples per prompt) − 1",
        )
    )
    return JobResult(
        title="klfrontier analyze",
        lead="Best-of-N, the optimal KL-constrained policy and aligned policies estimated "
        "from your samples, with intervals whose coverage was checked by simulation.",
        sections=sections,
        headline=headline,
        summary=summary,
        extra_files={f"per_prompt.{ext}": write_per_prompt},
    )


def ci_note(lo, hi, trusted, pct):
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "no interval"
    return f"{pct} CI [{float(lo):.4g}, {float(hi):.4g}]" + ("" if trusted else " (untrusted)")
