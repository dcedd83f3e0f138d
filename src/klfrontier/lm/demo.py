"""``klfrontier lm-demo``: every method on one reward–KL plane, on a real language model.

The experiment of issue 9: on SmolLM2-135M-Instruct (or any :class:`~klfrontier.lm.LM`)
with the token-linear VADER reward ``r(y) = Σ_t v(y_t)`` (:func:`klfrontier.rewards.token_linear`),

* draw ``n`` base samples per prompt from the reference (temperature 1) with
  exact log-probabilities (:func:`klfrontier.lm.sample`);
* draw ``tilt_n`` samples per prompt from the token-level tilt
  ``π_λ(y_t | x, y_<t) ∝ p(y_t | x, y_<t) e^{λ v(y_t)}`` at several ``λ``, each
  a policy file (``logprob``, ``ref_logprob``);
* feed them into :func:`klfrontier.analyze`: the average-KL optimum (the
  frontier) estimated from the base samples, best-of-N, and for every tilt
  the **myopia gap** ``R*_avg(KL(π_λ‖p)) − E_{π_λ} r`` -- how far the token
  tilt, optimal only for a memoryless model, falls from the sequence-level
  optimum at the same KL -- with its interval;
* add soft best-of-N as exact plug-in points on each prompt's empirical law
  (:func:`klfrontier.soft_best_of_n` on :meth:`klfrontier.Reference.from_samples`),
  averaged over prompts, like analyze's plug-in best-of-N points.

The report is :func:`klfrontier.jobs.analyze_job`'s, preceded by the
experiment's own sections.  This module holds no mathematics of its own:
it strings public API calls together (see ``docs/lm.md``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from importlib import resources

import numpy as np

__all__ = ["lm_demo_job", "builtin_prompts", "DEFAULTS"]

#: Default sizes: under 10 minutes end to end on a 2-core CPU (model load included).
DEFAULTS = {
    "n": 32,
    "tilt_n": 12,
    "max_new_tokens": 24,
    "lams": (0.25, 0.5, 0.75),
    "threads": 1,
    "soft_lams": (0.5, 2.0),
    "seed": 0,
    "lexicon": "vader",
    "batch_prompts": 8,
    "n_boot": 1000,
    "examples": 3,
}

_PROMPTS_FILE = "prompts.txt"


def builtin_prompts() -> dict:
    """The built-in prompts of ``lm-demo``: ``{"1": text, "2": text, ...}`` in file order.

    Short prompts that invite sentiment-laden answers, one per line of the
    package file ``klfrontier/lm/prompts.txt``.

    >>> p = builtin_prompts()
    >>> len(p) >= 20, p["1"]
    (True, 'Write one sentence about your weekend.')
    """
    text = resources.files(__package__).joinpath(_PROMPTS_FILE).read_text(encoding="utf-8")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return {str(i): line for i, line in enumerate(lines, start=1)}


def _stream_seed(seed, stream) -> int:
    """An independent seed for sample stream ``stream`` (0: base, 1, 2, ...: the tilts).

    Base and tilted samples must be independent (analyze adds their
    variances); the samplers draw by inverse CDF, so equal seeds would couple them.

    >>> _stream_seed(0, 0) != _stream_seed(0, 1)
    True
    """
    return int(np.random.SeedSequence([int(seed), int(stream)]).generate_state(1, np.uint32)[0])


def _policy_names(lams) -> list:
    """Policy names ``"token tilt λ=0.10"``, ... with one number of decimals for all λ.

    With equal decimals, names sorted by their numbers (how the analyze
    report orders the checkpoints of one run) are sorted by λ.

    >>> _policy_names([0.1, 0.25, 1.0])
    ['token tilt λ=0.10', 'token tilt λ=0.25', 'token tilt λ=1.00']
    """
    decimals = max(len(f"{lam:.6f}".rstrip("0").split(".")[1]) for lam in lams)
    decimals = max(decimals, 1)
    return [f"token tilt λ={lam:.{decimals}f}" for lam in lams]


def _check_args(n, tilt_n, max_new_tokens, lams, soft_lams, lexicon, seed, threads, examples):
    for value, name, low in (
        (n, "n", 2),
        (tilt_n, "tilt_n", 2),
        (max_new_tokens, "max_new_tokens", 1),
        (examples, "examples", 0),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1
    ):
        raise ValueError(f"threads must be None or an integer >= 1, got {threads!r}")
    if lexicon not in ("vader", "afinn"):
        raise ValueError(f"lexicon must be 'vader' or 'afinn', got {lexicon!r}")
    lams = [float(x) for x in lams]
    if not lams or not all(np.isfinite(x) and x > 0 for x in lams):
        raise ValueError(f"lams must be a non-empty list of finite numbers > 0, got {lams!r}")
    if len(set(lams)) != len(lams):
        raise ValueError(f"lams must not repeat a value, got {lams!r}")
    soft_lams = [float(x) for x in soft_lams]
    if not all(np.isfinite(x) and x > 0 for x in soft_lams):
        raise ValueError(f"soft_lams must be finite numbers > 0, got {soft_lams!r}")
    return sorted(lams), soft_lams


def _soft_bon_points(base, ns, soft_lams, progress):
    """Soft best-of-N plug-in points: exact law on each prompt's empirical law, averaged over prompts.

    Returns ``{lam: {"n": [...], "kl": [...], "reward": [...]}}``; prompt
    ``x`` enters the average at ``N`` only when it has at least ``N`` samples
    (as analyze's best-of-N).
    """
    from ..reference import Reference
    from ..soft_bon import soft_best_of_n

    groups = list(base.groups.values())
    out = {lam: {"n": [int(v) for v in ns], "kl": [], "reward": []} for lam in soft_lams}
    per = {lam: np.full((len(groups), len(ns)), np.nan) for lam in soft_lams}
    per_r = {lam: np.full((len(groups), len(ns)), np.nan) for lam in soft_lams}
    for x, r in enumerate(groups):
        ref = Reference.from_samples(r)
        for lam in soft_lams:
            for j, nv in enumerate(ns):
                if nv <= r.size:
                    pol = soft_best_of_n(ref, n=float(nv), lam=lam)
                    per[lam][x, j], per_r[lam][x, j] = pol.kl, pol.reward
        progress("soft best-of-N", x + 1, len(groups))
    for lam in soft_lams:
        out[lam]["kl"] = np.nanmean(per[lam], axis=0).tolist()
        out[lam]["reward"] = np.nanmean(per_r[lam], axis=0).tolist()
    return out


def _example_rows(prompts, base, base_r, tilts, tilt_r, names, count):
    """The first sample of the first ``count`` prompts: base, then each tilt."""
    rows = []
    for pid in list(prompts)[:count]:
        sets = [("base (reference)", base, base_r)] + [(nm, t, r) for nm, t, r in zip(names, tilts, tilt_r)]
        for label, smp, rw in sets:
            i = smp.prompt_id.index(pid)
            rows.append(
                {
                    "prompt_id": pid,
                    "prompt": prompts[pid],
                    "policy": label,
                    "reward": float(rw[i]),
                    "tokens": int(smp.n_tokens[i]),
                    "finished": bool(smp.finished[i]),
                    "text": smp.text[i],
                }
            )
    return rows


def lm_demo_job(
    model="smollm2",
    prompts=None,
    *,
    n=DEFAULTS["n"],
    tilt_n=DEFAULTS["tilt_n"],
    max_new_tokens=DEFAULTS["max_new_tokens"],
    lams=DEFAULTS["lams"],
    soft_lams=DEFAULTS["soft_lams"],
    lexicon=DEFAULTS["lexicon"],
    seed=DEFAULTS["seed"],
    threads=DEFAULTS["threads"],
    batch_prompts=DEFAULTS["batch_prompts"],
    n_boot=DEFAULTS["n_boot"],
    examples=DEFAULTS["examples"],
    progress: Callable[[str, int, int], None] | None = None,
):
    """Frontier, best-of-N, soft best-of-N and token tilts on a language model; the myopia gap.

    Parameters
    ----------
    model : str or LM, default "smollm2"
        A spec for :func:`klfrontier.lm.load_model`, or a loaded
        :class:`~klfrontier.lm.LM` (e.g. a tiny model built in a test).
    prompts : dict prompt_id -> str or list of str, optional
        Default: :func:`builtin_prompts`.
    n : int, default 32
        Base samples per prompt (temperature 1, exact log-probabilities).
    tilt_n : int, default 12
        Samples per prompt of each token tilt.
    max_new_tokens : int, default 24
    lams : sequence of float > 0
        Token tilts ``λ`` (reward units: ``λ v`` is added to the logits).
    soft_lams : sequence of float > 0
        Inverse temperatures of the soft best-of-N points.
    lexicon : {"vader", "afinn"}
        The token-linear reward's lexicon (:func:`klfrontier.rewards.token_linear`).
    seed : int
        Base samples are drawn from stream 0 of ``seed``, the tilt at the
        k-lam smallest λ from stream k (independent streams); the bootstrap
        uses ``seed`` too.  Same seed, machine and libraries: same report.
    threads : int or None, default 1
        torch threads while sampling (``None``: torch's setting).  One
        thread is the steadiest on a shared machine; samples agree across
        thread counts only to floating-point rounding.
    batch_prompts, n_boot, examples : int
        Prompts per sampling batch; bootstrap replications; prompts whose
        first samples are shown.
    progress : callable(stage, done, total), optional
        Stages: ``"loading the model"``, ``"base samples"``, ``"token tilt λ=..."``
        (samples done out of samples to draw), ``"analysis"``, ``"soft best-of-N"``
        (prompts), ``"figures and tables"``.

    Returns
    -------
    klfrontier.jobs.JobResult
        Sections, headline and a summary with ``settings``, ``timings``,
        ``myopia`` (one row per λ: KL, reward, optimal reward, ``gap`` with
        ``gap_lo``/``gap_hi``, trust flags), ``soft_best_of_n``, ``examples``
        and analyze's full ``analysis``.

    Notes
    -----
    The myopia gap of ``π_λ`` is the ``gap`` column of ``analyze``'s policy
    table: ``R*_avg(Δ) − E_π r`` at ``Δ = KL(π_λ‖p)``, where ``R*_avg`` is the
    optimal reward for an average KL budget estimated from the base samples
    (``docs/analyze.md``).  For a memoryless reference with this linear
    reward the token tilt is the sequence-level optimum and the gap is 0; a
    positive gap is what tilting each token on its own loses on a model
    with memory.

    Examples
    --------
    >>> from klfrontier.lm.demo import lm_demo_job
    >>> job = lm_demo_job(n=32, tilt_n=12, max_new_tokens=24)     # doctest: +SKIP
    >>> [(r["lam"], r["gap"], r["gap_lo"], r["gap_hi"]) for r in job.summary["myopia"]]  # doctest: +SKIP
    """
    from .. import __version__, rewards
    from ..jobs import JobResult, analyze_job, ci_note
    from ..report import Section
    from .model import LM, load_model
    from .sampling import sample

    lams, soft_lams = _check_args(
        n, tilt_n, max_new_tokens, lams, soft_lams, lexicon, seed, threads, examples
    )
    prompts = (
        builtin_prompts()
        if prompts is None
        else (dict(prompts) if isinstance(prompts, dict) else {str(i): p for i, p in enumerate(prompts)})
    )
    if len(prompts) < 2:
        raise ValueError(f"prompts must hold at least 2 prompts, got {len(prompts)}")
    names = _policy_names(lams)

    def tick(stage, done, total):
        if progress is not None:
            progress(stage, done, total)

    timings = {}
    wall0 = time.perf_counter()

    # 1 · the model and the reward ---------------------------------------------------------
    tick("loading the model", 0, 1)
    t0 = time.perf_counter()
    lm_ = model if isinstance(model, LM) else load_model(model)
    rw = rewards.token_linear(lm_.tokenizer, lexicon)
    timings["loading the model"] = time.perf_counter() - t0
    tick("loading the model", 1, 1)

    common = dict(max_new_tokens=max_new_tokens, threads=threads, batch_prompts=batch_prompts)

    def draw(stage, count, stream, tilt):
        def forward(kind, done, total):
            if kind == "samples":
                tick(stage, done, total)

        t = time.perf_counter()
        out = sample(
            lm_, prompts, n=count, seed=_stream_seed(seed, stream), tilt=tilt, progress=forward, **common
        )
        timings[stage] = time.perf_counter() - t
        return out

    # 2 · base samples and token tilts -------------------------------------------------------
    base = draw("base samples", n, 0, None)
    tilts = [draw(nm, tilt_n, k + 1, (lam, rw.values)) for k, (nm, lam) in enumerate(zip(names, lams))]
    base_r = base.rewards(rw)
    tilt_r = [t.rewards(rw) for t in tilts]

    # 3 · analyze: frontier, best-of-N, the policies' gaps -----------------------------------
    tick("analysis", 0, 1)
    t0 = time.perf_counter()
    base_set = base.to_sampleset(base_r)
    pol_sets = {nm: t.to_sampleset(r) for nm, t, r in zip(names, tilts, tilt_r)}
    settings = {
        "model": lm_.name,
        "chat_template": bool(lm_.chat),
        "reference": base.reference_description,
        "reward": f"token-linear {lexicon.upper()}: r(y) = Σ_t v(y_t) (rewards.token_linear)",
        "prompts": len(prompts),
        "n": int(n),
        "tilt_n": int(tilt_n),
        "max_new_tokens": int(max_new_tokens),
        "lams": lams,
        "soft_lams": soft_lams,
        "seed": int(seed),
        "threads": threads,
        "temperature": 1.0,
        "batch_prompts": int(batch_prompts),
        "n_boot": int(n_boot),
        "stream_seeds": {
            "base": _stream_seed(seed, 0),
            **{nm: _stream_seed(seed, k + 1) for k, nm in enumerate(names)},
        },
    }
    job = analyze_job(
        base_set,
        policies=pol_sets,
        seed=int(seed),
        n_boot=n_boot,
        table_format="csv",
        provenance={"command": "lm-demo", **settings},
    )
    an = job.summary["analysis"]
    timings["analysis"] = time.perf_counter() - t0
    tick("analysis", 1, 1)

    # 4 · soft best-of-N plug-in points -------------------------------------------------------
    t0 = time.perf_counter()
    ns = [int(v) for v in an["bon"]["n"]]
    soft = _soft_bon_points(base_set, ns, soft_lams, tick)
    timings["soft best-of-N"] = time.perf_counter() - t0

    # 5 · the experiment's sections -------------------------------------------------------------
    tick("figures and tables", 0, 1)
    t0 = time.perf_counter()
    conf = an["info"]["confidence"]
    pct = f"{100 * conf:g}%"
    trust_kl = an["info"]["kl_trust_limit_median"]
    myopia = []
    for nm, lam, smp in zip(names, lams, tilts):
        t = {k: _num(v[0]) for k, v in an["policies"][nm].items()}
        myopia.append(
            {
                "policy": nm,
                "lam": lam,
                "samples_per_prompt": int(tilt_n),
                "kl": t["kl"],
                "kl_lo": t["kl_lo"],
                "kl_hi": t["kl_hi"],
                "kl_steps": float(np.mean(smp.kl_steps)),
                "reward": t["reward"],
                "reward_lo": t["reward_lo"],
                "reward_hi": t["reward_hi"],
                "optimal_reward": t["optimal_reward_debiased"],
                "optimal_lam": t["lam"],
                "gap": t["gap"],
                "gap_lo": t["gap_lo"],
                "gap_hi": t["gap_hi"],
                "gap_trusted": bool(t["gap_trusted"]),
                "trusted": bool(t["trusted"]),
                "within_kl_trust_limit": bool(t["kl"] <= trust_kl),
                "saturated": not np.isfinite(t["lam"]),
                "bon_n_same_kl": t["bon_n_same_kl"],
            }
        )
        r = myopia[-1]
        # analyze's flag does not look at the KL itself (an optimum beyond the base samples'
        # reach, "saturated", is flagged trusted there): the myopia gap also needs the policy's
        # KL inside the base samples' trust limit
        r["myopia_trusted"] = r["gap_trusted"] and r["within_kl_trust_limit"] and not r["saturated"]
    fig = _figure(an, myopia, {lam: soft[lam] for lam in soft_lams}, model_name=lm_.name, lexicon=lexicon)
    m_rows = [
        [
            r["lam"],
            r["samples_per_prompt"],
            r["kl"],
            r["kl_lo"],
            r["kl_hi"],
            r["kl_steps"],
            r["reward"],
            r["optimal_reward"],
            r["gap"],
            r["gap_lo"],
            r["gap_hi"],
            r["gap_trusted"],
            r["within_kl_trust_limit"],
            r["saturated"],
            r["myopia_trusted"],
        ]
        for r in myopia
    ]
    s_rows = [
        [lam, nv, k, rwd, k <= trust_kl]
        for lam in soft_lams
        for nv, k, rwd in zip(soft[lam]["n"], soft[lam]["kl"], soft[lam]["reward"])
    ]
    ex_rows = _example_rows(prompts, base, base_r, tilts, tilt_r, names, examples)
    sections = [
        Section(
            "1 · The experiment",
            f"Reference: {base.reference_description}. Reward: the token-linear {lexicon.upper()} "
            "reward r(y) = Σ_t v(y_t), v(token) the lexicon valence of the whole word the token "
            "spells (0 for other tokens) — the paper's linear reward on a real tokenizer. "
            f"{n} base samples per prompt give the frontier, best-of-N and soft best-of-N; each token "
            f"tilt π_λ(y_t | x, y_<t) ∝ p(y_t | x, y_<t) e^(λ v(y_t)) draws {tilt_n} samples per "
            "prompt with their exact log-probabilities under the tilt and the reference.",
            [],
            [
                ("Settings", ["setting", "value"], [[k, _setting(v)] for k, v in settings.items()]),
                ("Timings (seconds)", ["stage", "seconds"], [[k, v] for k, v in timings.items()]),
            ],
        ),
        Section(
            "2 · Myopia: token tilting against the sequence-level optimum",
            "For a memoryless model and a linear reward, tilting every token by e^(λ v) IS the "
            "optimal KL-constrained policy. A language model has memory: each token changes the "
            "law of the next, and the token tilt ignores what its choice does to later tokens. "
            "The myopia gap is R*_avg(KL_π) − E_π r: the optimal reward at the tilt's own KL "
            "(estimated from the base samples; docs/analyze.md) minus the tilt's reward. "
            "KL_π is the mean of log π − log p over the tilt's samples; 'Σ per-step KL' is the "
            "exact KL between the next-token laws summed along each trajectory, another unbiased "
            "estimate of the same KL. Soft best-of-N points are exact laws on each prompt's "
            f"empirical law, averaged over prompts (plug-in, like best-of-N). Right of the "
            f"dash-dot line (KL > log n − 1 = {trust_kl:.2f} nats) the base samples cannot tell "
            "the optimum."
            + (
                ""
                if any(r["myopia_trusted"] for r in myopia)
                else "\n\nNo gap here is marked trusted. With few base samples per prompt "
                "the trust rule's Pareto-k̂ test of the tilt weights rejects many "
                "prompts even for small tilts (docs/lm.md §3); the intervals are "
                "shown, and more base samples (--n) are the remedy."
            ),
            [
                (
                    "lm_frontier",
                    fig,
                    f"Reward against KL. Solid: the average-KL optimum (jackknife-corrected) with its {pct} "
                    "band — what the gap is measured against; dashed: the same optimum on the empirical "
                    "laws themselves, the ceiling of the best-of-N and soft best-of-N plug-in points "
                    f"(markers); labelled points: token tilts with {pct} intervals in KL and reward.",
                )
            ],
            [
                (
                    "Myopia gap per λ",
                    [
                        "λ",
                        "samples/prompt",
                        "KL",
                        "lo",
                        "hi",
                        "Σ per-step KL",
                        "reward",
                        "optimal reward at that KL",
                        "gap",
                        "lo",
                        "hi",
                        "gap trusted (analyze)",
                        "KL ≤ trust limit",
                        "optimum saturated",
                        "myopia gap trusted",
                    ],
                    m_rows,
                    "Intervals: " + an["methods"][f"policy:{names[0]}"] + ". 'gap trusted (analyze)': "
                    "analyze's trust rule for the gap (the Analysis: Best-of-N section below states it); "
                    "'myopia gap trusted' also asks the tilt's KL to lie within the trust limit and the "
                    "optimum at that KL not to be saturated (beyond the largest reward the base samples "
                    "hold, where the estimated optimum stops rising and the gap is meaningless).",
                ),
                ("Soft best-of-N (plug-in)", ["λ", "N", "KL", "reward", "within the KL trust limit"], s_rows),
            ],
        ),
        Section(
            "3 · Sample texts",
            f"The first sample of the first {examples} prompts under the reference and each token "
            "tilt, with its token-linear reward.",
            [],
            [
                (
                    "Samples",
                    ["prompt", "policy", "reward", "tokens", "ended with EOS", "text"],
                    [
                        [r["prompt"], r["policy"], r["reward"], r["tokens"], r["finished"], r["text"]]
                        for r in ex_rows
                    ],
                )
            ],
        ),
    ]
    for k, sec in enumerate(job.sections, start=len(sections) + 1):
        sec.heading = re.sub(r"^\d+ · ", f"{k} · Analysis: ", sec.heading)
        sections.append(sec)
    timings["figures and tables"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - wall0
    sections[0].tables[1] = ("Timings (seconds)", ["stage", "seconds"], [[k, v] for k, v in timings.items()])
    tick("figures and tables", 1, 1)

    summary = {
        "klfrontier_version": __version__,
        "settings": settings,
        "timings": timings,
        "myopia": myopia,
        "soft_best_of_n": {f"{lam:g}": soft[lam] for lam in soft_lams},
        "examples": ex_rows,
        "analysis": an,
        "provenance": job.summary["provenance"],
    }
    headline: list = [
        (
            "model",
            lm_.name,
            f"{len(prompts)} prompts × {n} base samples, ≤ {max_new_tokens} "
            f"new tokens; tilts: {tilt_n} samples per prompt",
        )
    ]
    for r in myopia:
        headline.append(
            (
                f"myopia gap, λ = {r['lam']:g}",
                r["gap"],
                f"at KL {r['kl']:.3g} nats (reward {r['reward']:.3g} vs optimal "
                f"{r['optimal_reward']:.3g}); "
                + ci_note(r["gap_lo"], r["gap_hi"], r["myopia_trusted"], pct)
                + (
                    ""
                    if r["within_kl_trust_limit"] and not r["saturated"]
                    else "; KL beyond the base samples' reach"
                ),
            )
        )
    headline.append(("KL trust limit", trust_kl, "log(median base samples per prompt) − 1"))
    headline.append(("wall time (s)", timings["total"], "model load included"))
    lead = (
        "Best-of-N, soft best-of-N and token-level tilting on a real language model, against the "
        "optimal KL-constrained policy estimated from base samples. The headline number is the "
        "myopia gap: how far tilting each token falls below the sequence-level optimum at the "
        "same KL on a model with memory."
    )
    extra = dict(job.extra_files)
    extra["samples/base.csv"] = _sample_writer(base, base_r)
    for nm, smp, r in zip(names, tilts, tilt_r):
        extra[f"samples/{_file_stem(nm)}.csv"] = _sample_writer(smp, r)
    return JobResult(
        title=f"klfrontier lm-demo — {lm_.name}",
        lead=lead,
        sections=sections,
        headline=headline,
        summary=summary,
        extra_files=extra,
    )


def _file_stem(name):
    """``"token tilt λ=0.25"`` -> ``"tilt_lam0.25"``."""
    return "tilt_lam" + name.split("=", 1)[1]


def _sample_writer(smp, reward):
    """A writer of one sample file (CSV): a base file or, with ``logprob``, a policy file for analyze."""

    def write(path):
        from .._atomic import write_table

        cols = {
            "prompt_id": np.asarray(smp.prompt_id, dtype=object),
            "sample_index": smp.sample_index,
            "reward": reward,
            "logprob": smp.logprob,
            "ref_logprob": smp.ref_logprob,
            "kl_steps": smp.kl_steps,
            "n_tokens": smp.n_tokens,
            "finished": smp.finished,
            "text": np.asarray(smp.text, dtype=object),
        }
        write_table(path, cols, format="csv")

    return write


def _figure(an, myopia, soft, *, model_name, lexicon):
    """Every method on one reward–KL plane, from analyze's summary and the job's rows.

    ``an``: ``Analysis.to_dict()``; ``myopia``: the job's rows; ``soft``:
    ``{lam: {"n", "kl", "reward"}}``.
    """
    from ..plots import frontier_figure

    fr, bon = an["frontier"], an["bon"]
    f_kl, f_rew, f_plug = _arr(fr["kl"]), _arr(fr["reward_debiased"]), _arr(fr["reward"])
    f_lo, f_hi = _arr(fr["reward_lo"]), _arr(fr["reward_hi"])
    good = np.isfinite(f_lo) & np.isfinite(f_hi)
    ns = ", ".join(str(int(v)) for v in bon["n"])
    points = {f"best-of-N (plug-in), N = {ns}": (_arr(bon["kl"]), _arr(bon["reward_plugin"]))}
    for lam, pts in soft.items():
        points[f"soft best-of-N (plug-in), λ = {float(lam):g}"] = (_arr(pts["kl"]), _arr(pts["reward"]))
    pol_points = {
        f"tilt λ = {r['lam']:g}": {
            k: r[k] for k in ("kl", "kl_lo", "kl_hi", "reward", "reward_lo", "reward_hi")
        }
        for r in myopia
    }
    return frontier_figure(
        f_kl,
        f_rew,
        points=points,
        bands={"optimum": (f_kl[good], f_lo[good], f_hi[good])} if good.any() else None,
        trust_kl=an["info"]["kl_trust_limit_median"],
        policies=pol_points,
        curves={"optimum on the samples themselves (plug-in)": (f_kl, f_plug)},
        title=f"{model_name}: token tilts against the sequence-level optimum",
        reward_label=f"expected token-linear {lexicon.upper()} reward",
    )


def _num(v):
    """A number of a strict-JSON table back to Python: ``None`` -> NaN, ``"inf"`` -> inf."""
    if v is None:
        return float("nan")
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    return float(v)


def _arr(values):
    """A strict-JSON column back to a float array (``None`` -> NaN, ``"inf"`` -> inf)."""
    return np.asarray([_num(v) for v in values], dtype=float)


def _setting(v):
    if isinstance(v, dict):
        return ", ".join(f"{k}: {x}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
    return "torch default" if v is None else v
