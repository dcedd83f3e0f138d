"""Matplotlib figures (imported lazily; needs the ``plot`` extra).

Every function takes plain arrays, returns a :class:`matplotlib.figure.Figure`
and computes nothing beyond what it draws.  Units: nats for KL, the reward's
own units for reward.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "frontier_figure",
    "bon_kl_figure",
    "rate_function_figure",
    "scgf_figure",
    "convergence_figure",
    "empirical_figure",
    "save_figure",
]

_COLORS = {"frontier": "#1f3b73", "bon": "#d1495b", "soft": "#edae49", "tilted": "#00798c",
           "pred": "#444444", "band": "#1f3b73"}


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError('plotting needs matplotlib: pip install "klfrontier[plot]"') from exc
    return plt


def _new(ncols=1, width=6.4, height=4.4):
    plt = _plt()
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), constrained_layout=True)
    return fig, axes


def frontier_figure(kl, reward, *, points=None, bands=None, kl_max=None, trust_kl=None,
                    title="Reward–KL frontier", reward_label="expected reward"):
    """Frontier ``R*(Δ)`` with method points and optional confidence bands.

    Parameters
    ----------
    kl, reward : arrays
        The frontier curve.
    points : dict name -> (kl array, reward array), optional
        Methods drawn as markers joined by thin lines (e.g. best-of-N at N = 2, 4, ...).
    bands : dict name -> (kl, lo, hi), optional
        Shaded intervals (bootstrap CIs).
    kl_max : float, optional
        ``-log p(A)``: drawn as a dotted vertical line (saturation).
    trust_kl : float, optional
        KL beyond which sample-based estimates are untrustworthy (dash-dot line).
    """
    fig, ax = _new()
    ax.plot(kl, reward, color=_COLORS["frontier"], lw=2.2, label="optimal KL-RL  R*(Δ)")
    for i, (name, (x, lo, hi)) in enumerate((bands or {}).items()):
        ax.fill_between(x, lo, hi, alpha=0.18, color=f"C{i}", label=f"{name} (95% CI)")
    markers = ["o", "s", "^", "D", "v", "P"]
    palette = [_COLORS["bon"], _COLORS["soft"], _COLORS["tilted"], "C4", "C5", "C6"]
    for i, (name, (x, y)) in enumerate((points or {}).items()):
        ax.plot(x, y, marker=markers[i % 6], ms=5, lw=1, color=palette[i % 6], label=name)
    if kl_max is not None and np.isfinite(kl_max) and kl_max <= np.max(kl) * 1.05:
        ax.axvline(kl_max, ls=":", color="grey", label="saturation  −log p(argmax)")
    if trust_kl is not None and np.isfinite(trust_kl) and trust_kl > 0:
        ax.axvline(trust_kl, ls="-.", color="grey", label="trust limit (plug-in KL near log n)")
    ax.set_xlabel("KL(policy ‖ reference)  [nats]")
    ax.set_ylabel(reward_label)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def bon_kl_figure(n, kl_exact, kl_bound, kl_estimate=None, *, kl_max=None,
                  title="Best-of-N: exact KL vs log N − (N−1)/N"):
    """Exact BoN KL against the usual formula (and the Beirami estimate) over N."""
    fig, ax = _new()
    ax.plot(n, kl_bound, ls="--", color=_COLORS["pred"], label="log N − (N−1)/N (usual formula)")
    ax.plot(n, kl_exact, marker="o", ms=4, color=_COLORS["bon"], label="exact KL (ties counted)")
    if kl_estimate is not None:
        ax.plot(n, kl_estimate, marker="^", ms=4, lw=1, color=_COLORS["soft"],
                label="Beirami et al. estimate (exact mean)")
    if kl_max is not None:
        ax.axhline(kl_max, ls=":", color="grey", label="−log p(argmax) (limit as N → ∞)")
    ax.set_xscale("log")
    ax.set_xlabel("N (samples)")
    ax.set_ylabel("KL(π_N ‖ p)  [nats]")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return fig


def rate_function_figure(x, i0, i_lam=None, *, markers=None, zoom=None,
                         title="Large-deviation rate functions", reward_label="per-token reward x"):
    """``I_0(x)`` and ``I_λ(x)`` (dict λ -> values) on a common x grid.

    ``markers``: dict label -> (x, y) points, e.g. ``(R*(δ), δ)``; ``zoom``:
    ``(x_lo, x_hi, y_hi)`` adds a right-hand panel on that window (where the
    markers are readable).
    """
    fig, axes = _new(ncols=2 if zoom else 1, width=5.6 if zoom else 6.4)
    axes = np.atleast_1d(axes)
    for k, ax in enumerate(axes):
        ax.plot(x, i0, color=_COLORS["frontier"], lw=2, label="I₀(x)  under p")
        for i, (lam, vals) in enumerate((i_lam or {}).items()):
            ax.plot(x, vals, lw=1.5, color=f"C{i + 1}", label=f"I_λ(x) under φ_λ, λ = {lam:.3g}")
        for j, (label, (mx, my)) in enumerate((markers or {}).items()):
            ax.plot([mx], [my], "k*", ms=9, zorder=5)
            if k == len(axes) - 1:
                ax.annotate(label, (mx, my), textcoords="offset points", xytext=(8, -4 - 10 * (j % 2)),
                            fontsize=8)
        ax.set_xlabel(reward_label)
        ax.grid(alpha=0.3)
    finite = np.concatenate([np.asarray(i0)[np.isfinite(i0)]] +
                            [np.asarray(v)[np.isfinite(v)] for v in (i_lam or {}).values()])
    if finite.size:
        axes[0].set_ylim(0, np.percentile(finite, 98) * 1.1 + 1e-12)
    axes[0].set_ylabel("rate  [nats per token]")
    axes[0].set_title("whole range" if zoom else title)
    axes[0].legend(fontsize=8)
    if zoom:
        lo, hi, ytop = zoom
        axes[1].set_xlim(lo, hi)
        axes[1].set_ylim(0, ytop)
        axes[1].set_title("near the mean: stars at (R*(δ), δ), where I₀(R*(δ)) = δ", fontsize=10)
        fig.suptitle(title)
    return fig


def scgf_figure(t, direct, renyi, *, lam=0.0, title="Scaled cumulant generating function"):
    """The SCGF ``Λ(λ+t) − Λ(λ)`` and its Rényi cross-entropy form (should coincide)."""
    fig, ax = _new()
    ax.plot(t, direct, color=_COLORS["frontier"], lw=2.5, label="Λ(λ+t) − Λ(λ)")
    ax.plot(t, renyi, ls="--", color=_COLORS["bon"], lw=1.5,
            label="t log Z_r − t H₁₊ₜ(φ_λ; q_r)  (Rényi cross entropy)")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("t")
    ax.set_ylabel("(1/m) log E exp(t S_m)  [nats per token]")
    ax.set_title(f"{title} (λ = {lam:.3g})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def convergence_figure(lengths, series, *, title="Best-of-N with N = exp(mδ) → optimal KL-RL with budget mδ"):
    """Convergence in m on log axes, exact values with predictions overlaid.

    Parameters
    ----------
    lengths : array of m
    series : dict delta -> dict with keys ``gap``, ``gap_pred``, ``kl_opt``, ``kl_opt_pred``
        (``gap`` = R*(δ) − E[S_m]/m, ``kl_opt`` = KL(π_N ‖ φ_Δ)/m, both per token).
    """
    fig, (a1, a2) = _new(ncols=2, width=5.6)
    for i, (delta, s) in enumerate(series.items()):
        c = f"C{i}"
        a1.plot(lengths, s["gap"], "o-", color=c, ms=4, label=f"δ = {delta:g}: exact")
        a1.plot(lengths, s["gap_pred"], "--", color=c, lw=1, label=f"δ = {delta:g}: 2nd-order prediction")
        a2.plot(lengths, s["kl_opt"], "o-", color=c, ms=4, label=f"δ = {delta:g}: exact")
        # the asymptotic KL prediction can be <= 0 at small m: not drawable on log axes
        kp = np.asarray(s["kl_opt_pred"], dtype=float)
        a2.plot(lengths, np.where(kp > 0, kp, np.nan), "--", color=c, lw=1,
                label=f"δ = {delta:g}: prediction")
    for ax, ylab in ((a1, "R*(δ) − E[S_m]/m  [reward per token]"),
                     (a2, "KL(π_N ‖ φ_Δ) / m  [nats per token]")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("sequence length m (tokens)")
        ax.set_ylabel(ylab)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    a1.set_title("reward gap per token")
    a2.set_title("KL to the optimal policy per token")
    fig.suptitle(title)
    return fig


def empirical_figure(n, plug_in, unbiased, *, lo=None, hi=None, kl=None, tilted_reward=None,
                     tilted_lo=None, tilted_hi=None, trust_n=None, trust_kl=None,
                     title="Best-of-N and tilting from samples"):
    """Empirical BoN curve (plug-in vs unbiased, CI band) and the tilted frontier from samples."""
    fig, (a1, a2) = _new(ncols=2, width=5.6)
    a1.plot(n, plug_in, "o-", ms=3, color=_COLORS["bon"], label="plug-in (exact on p̂)")
    a1.plot(n, unbiased, "s--", ms=3, color=_COLORS["tilted"], label="unbiased without replacement")
    if lo is not None and hi is not None:
        a1.fill_between(n, lo, hi, alpha=0.2, color=_COLORS["bon"], label="95% bootstrap CI")
    if trust_n is not None:
        a1.axvline(trust_n, ls=":", color="grey", label="N = samples per prompt")
    a1.set_xscale("log")
    a1.set_xlabel("N")
    a1.set_ylabel("E[max reward of N]")
    a1.set_title("best-of-N")
    a1.grid(alpha=0.3, which="both")
    a1.legend(fontsize=7)
    if kl is not None and tilted_reward is not None:
        a2.plot(kl, tilted_reward, color=_COLORS["frontier"], lw=2, label="plug-in tilted frontier")
        if tilted_lo is not None and tilted_hi is not None:
            a2.fill_between(kl, tilted_lo, tilted_hi, alpha=0.2, color=_COLORS["band"], label="95% CI")
        if trust_kl is not None:
            a2.axvline(trust_kl, ls=":", color="grey", label="trust limit (KL near log n)")
        a2.set_xlabel("KL  [nats]")
        a2.set_ylabel("expected reward")
        a2.set_title("tilted policy from base samples")
        a2.grid(alpha=0.3)
        a2.legend(fontsize=7)
    else:
        a2.set_visible(False)
    fig.suptitle(title)
    return fig


def save_figure(fig, path, dpi=130):
    """Write ``fig`` as PNG and close it."""
    plt = _plt()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
