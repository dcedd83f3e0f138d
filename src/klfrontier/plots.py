"""Matplotlib figures (imported lazily; needs the ``plot`` extra).

Every function takes plain arrays, returns a :class:`matplotlib.figure.Figure`
and computes nothing beyond what it draws.  Units: nats for KL, the reward's
own units for reward.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import threading

__all__ = [
    "frontier_figure",
    "bon_kl_figure",
    "rate_function_figure",
    "scgf_figure",
    "convergence_figure",
    "empirical_figure",
    "overoptimization_figure",
    "gold_figure",
    "save_figure",
    "preload",
]

_COLORS = {
    "frontier": "#1f3b73",
    "bon": "#d1495b",
    "soft": "#edae49",
    "tilted": "#00798c",
    "pred": "#444444",
    "band": "#1f3b73",
}


_PRELOAD: list[threading.Thread] = []


def preload():
    """Start importing matplotlib's figure machinery on a background thread (once per process).

    A caller that will draw figures after a long computation (``klfrontier
    analyze --out``) starts the import first; on a second core it costs no
    wall time.  Drawing waits for it.  Call it only where no other thread is
    importing modules that matplotlib imports too.
    """
    if _PRELOAD or "matplotlib.figure" in sys.modules:
        return
    import threading

    def run():
        try:
            _figure_classes(wait=False)
        except ImportError:  # reported by the drawing call itself
            pass

    thread = threading.Thread(target=run, name="klfrontier-import-matplotlib", daemon=True)
    _PRELOAD.append(thread)
    thread.start()


def _figure_classes(wait=True):
    """``(Figure, FigureCanvasAgg)`` (matplotlib is imported only when a figure is drawn)."""
    if wait and _PRELOAD:
        _PRELOAD[0].join()
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError('plotting needs matplotlib: pip install "klfrontier[plot]"') from exc
    return Figure, FigureCanvasAgg


def _new(ncols=1, width=6.4, height=4.4):
    """A figure with ``ncols`` axes on its own Agg canvas.

    The figure is not registered with :mod:`matplotlib.pyplot`: nothing has to
    close it, and it is freed with its last reference (``pyplot`` is never
    imported, so the process's backend is left alone).
    """
    Figure, FigureCanvasAgg = _figure_classes()
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols)
    return fig, axes


def _label(name):
    """A user's name (prompt id, policy name) as a legend label.

    Matplotlib leaves out of the legend every label that starts with ``_``;
    a leading space keeps such a name visible.  The text itself is made
    literal by :func:`_literal`.
    """
    s = str(name)
    return " " + s if s.startswith("_") else s


def _literal(*texts):
    """Draw these Text artists as literal text: never mathtext (``$...$``), never TeX.

    Figures carry the user's data (prompt ids, policy names, titles); a name
    such as ``"$x^2$"`` must print as typed, and one such as ``"$\\alpha_$"``
    must not make the mathtext parser raise at draw time.
    """
    for t in texts:
        if t is not None:
            t.set_parse_math(False)
            t.set_usetex(False)


def _finish(fig):
    """Make every title, axis label, legend entry and annotation of ``fig`` literal.

    Tick labels are left alone: the log-axis formatters write them as
    mathtext on purpose and they hold no user text.
    """
    for ax in fig.axes:
        _literal(ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts)
        leg = ax.get_legend()
        if leg is not None:
            _literal(leg.get_title(), *leg.get_texts())
    return fig


def _band(ax, x, lo, hi, **kw):
    """Shade between ``lo`` and ``hi`` where x, lo and hi are all finite.

    NaN means "no interval here": those points leave a gap, silently (no
    non-finite vertex reaches the polygon, so nothing warns).  Returns the
    artist, or None when no point has an interval.
    """
    x, lo, hi = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (x, lo, hi)))
    ok = np.isfinite(x) & np.isfinite(lo) & np.isfinite(hi)
    if not ok.any():
        return None
    return ax.fill_between(
        np.where(ok, x, 0.0), np.where(ok, lo, 0.0), np.where(ok, hi, 0.0), where=ok, interpolate=False, **kw
    )


def _plain_log_ticks(axis, values=None, most=12):
    """Label a log axis with plain numbers (``1``, ``8``, ``64``), never mathtext powers of ten.

    With at most ``most`` finite positive ``values`` (best-of-N sizes) the
    ticks sit at those values; otherwise at the log locator's places.  Minor
    ticks stay unlabelled.  (Mathtext tick labels also cost the first figure
    of a process about 0.1 s of parsing.)
    """
    from matplotlib.ticker import FuncFormatter, NullFormatter

    if values is not None:
        v = np.unique(np.asarray(values, dtype=float))
        v = v[np.isfinite(v) & (v > 0)]
        if 0 < v.size <= most:
            axis.set_ticks(v)
    axis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:g}"))
    axis.set_minor_formatter(NullFormatter())


def _scalar(spec, key, where):
    """``spec[key]`` as a float (a missing key or None is NaN); one value only."""
    v = spec.get(key) if hasattr(spec, "get") else None
    if v is None:
        return np.nan
    a = np.asarray(v, dtype=float).reshape(-1)
    if a.size != 1:
        raise ValueError(f"{where}[{key!r}] must be one number, got {a.size} values")
    return float(a[0])


def frontier_figure(
    kl,
    reward,
    *,
    points=None,
    bands=None,
    kl_max=None,
    trust_kl=None,
    title="Reward–KL frontier",
    reward_label="expected reward",
    policies=None,
    paths=None,
    curves=None,
    frontier_label="optimal KL-RL  R*(Δ)",
):
    """Frontier ``R*(Δ)`` with method points, policies and optional confidence bands.

    Parameters
    ----------
    kl, reward : arrays
        The frontier curve.
    points : dict name -> (kl array, reward array), optional
        Methods drawn as markers joined by thin lines (e.g. best-of-N at N = 2, 4, ...).
    bands : dict name -> (kl, lo, hi), optional
        Shaded intervals (bootstrap CIs); NaN in lo or hi leaves a gap.
    kl_max : float, optional
        ``-log p(A)``: drawn as a dotted vertical line (saturation).
    trust_kl : float, optional
        KL beyond which sample-based estimates are untrustworthy (dash-dot line).
    frontier_label : str
        Legend label of the ``R*(Δ)`` curve.
    title, reward_label : str
        Printed literally (no mathtext).
    policies : dict name -> dict, optional
        Single policies measured from their own samples: keys ``kl``,
        ``reward`` (the point) and ``kl_lo``, ``kl_hi``, ``reward_lo``,
        ``reward_hi`` (its intervals; missing, None or NaN = no interval).
        Each is drawn as a marker with horizontal and vertical interval bars
        and its name written beside it.  A policy whose point is not finite
        is left out of the drawing.
    paths : list of lists of policy names, optional
        Checkpoints of one run in training order, joined by arrows.
    curves : dict name -> (kl array, reward array), optional
        Other curves drawn as thin dashed lines (e.g. the equal-budget curve).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> fig = frontier_figure([0, 1, 2], [0, .8, 1.1],
    ...                       policies={"ppo-1": {"kl": .5, "reward": .3, "kl_lo": .4, "kl_hi": .6},
    ...                                 "ppo-2": {"kl": 1.5, "reward": .7}},
    ...                       paths=[["ppo-1", "ppo-2"]])
    >>> [t.get_text() for t in fig.axes[0].texts if t.get_text()]
    ['ppo-1', 'ppo-2']
    """
    pol = {}
    for name, spec in (policies or {}).items():
        if not hasattr(spec, "get"):
            raise ValueError(
                f"policies[{name!r}] must be a dict with keys kl, reward, kl_lo, kl_hi, reward_lo, reward_hi"
            )
        if spec.get("kl") is None or spec.get("reward") is None:
            raise ValueError(f"policies[{name!r}] needs the keys 'kl' and 'reward'")
        pol[name] = {
            k: _scalar(spec, k, f"policies[{name!r}]")
            for k in ("kl", "kl_lo", "kl_hi", "reward", "reward_lo", "reward_hi")
        }
    path_list = []
    for path in paths or []:
        if isinstance(path, str) or not hasattr(path, "__iter__"):
            raise ValueError(f"paths must be a list of lists of policy names, got the element {path!r}")
        path = list(path)
        missing = [a for a in path if a not in pol]
        if missing:
            raise ValueError(f"paths: {missing[0]!r} is not a name in policies")
        path_list.append(path)

    fig, ax = _new()
    ax.plot(kl, reward, color=_COLORS["frontier"], lw=2.2, label=frontier_label)
    for i, (name, (x, lo, hi)) in enumerate((bands or {}).items()):
        _band(ax, x, lo, hi, alpha=0.18, color=f"C{i}", label=f"{_label(name)} (95% CI)")
    for i, (name, (x, y)) in enumerate((curves or {}).items()):
        ax.plot(x, y, ls="--", lw=1.1, color=f"C{(i + 7) % 10}", label=_label(name))
    markers = ["o", "s", "^", "D", "v", "P"]
    palette = [_COLORS["bon"], _COLORS["soft"], _COLORS["tilted"], "C4", "C5", "C6"]
    for i, (name, (x, y)) in enumerate((points or {}).items()):
        ax.plot(x, y, marker=markers[i % 6], ms=5, lw=1, color=palette[i % 6], label=_label(name))
    for path in path_list:
        for a, b in zip(path, path[1:]):
            xy0, xy1 = (pol[a]["kl"], pol[a]["reward"]), (pol[b]["kl"], pol[b]["reward"])
            if np.isfinite(xy0 + xy1).all():
                ax.annotate(
                    "",
                    xy=xy1,
                    xytext=xy0,
                    zorder=4,
                    arrowprops={
                        "arrowstyle": "-|>",
                        "color": "#555555",
                        "lw": 1.0,
                        "shrinkA": 5,
                        "shrinkB": 5,
                    },
                )
    for i, (name, v) in enumerate(pol.items()):
        x, y, c = v["kl"], v["reward"], f"C{(i + 3) % 10}"
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        if np.isfinite(v["kl_lo"]) and np.isfinite(v["kl_hi"]):
            ax.plot([v["kl_lo"], v["kl_hi"]], [y, y], color=c, lw=1.2, marker="|", ms=7, zorder=5)
        if np.isfinite(v["reward_lo"]) and np.isfinite(v["reward_hi"]):
            ax.plot([x, x], [v["reward_lo"], v["reward_hi"]], color=c, lw=1.2, marker="_", ms=7, zorder=5)
        ax.plot(
            [x], [y], ls="none", marker="o", ms=7, color=c, mec="black", mew=0.7, zorder=6, label=_label(name)
        )
        ax.annotate(str(name), (x, y), textcoords="offset points", xytext=(6, 5), fontsize=8, color=c)
    if kl_max is not None and np.isfinite(kl_max) and kl_max <= np.max(kl) * 1.05:
        ax.axvline(kl_max, ls=":", color="grey", label="saturation  −log p(argmax)")
    if trust_kl is not None and np.isfinite(trust_kl) and trust_kl > 0:
        ax.axvline(trust_kl, ls="-.", color="grey", label="trust limit (plug-in KL near log n)")
    ax.set_xlabel("KL(policy ‖ reference)  [nats]")
    ax.set_ylabel(reward_label)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best" if pol or curves else "lower right")
    return _finish(fig)


def bon_kl_figure(
    n, kl_exact, kl_bound, kl_estimate=None, *, kl_max=None, title="Best-of-N: exact KL vs log N − (N−1)/N"
):
    """Exact BoN KL against the usual formula (and the Beirami estimate) over N."""
    fig, ax = _new()
    ax.plot(n, kl_bound, ls="--", color=_COLORS["pred"], label="log N − (N−1)/N (usual formula)")
    ax.plot(n, kl_exact, marker="o", ms=4, color=_COLORS["bon"], label="exact KL (ties counted)")
    if kl_estimate is not None:
        ax.plot(
            n,
            kl_estimate,
            marker="^",
            ms=4,
            lw=1,
            color=_COLORS["soft"],
            label="Beirami et al. estimate (exact mean)",
        )
    if kl_max is not None:
        ax.axhline(kl_max, ls=":", color="grey", label="−log p(argmax) (limit as N → ∞)")
    ax.set_xscale("log")
    ax.set_xlabel("N (samples)")
    ax.set_ylabel("KL(π_N ‖ p)  [nats]")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _finish(fig)


def rate_function_figure(
    x,
    i0,
    i_lam=None,
    *,
    markers=None,
    zoom=None,
    title="Large-deviation rate functions",
    reward_label="per-token reward x",
):
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
                ax.annotate(
                    label, (mx, my), textcoords="offset points", xytext=(8, -4 - 10 * (j % 2)), fontsize=8
                )
        ax.set_xlabel(reward_label)
        ax.grid(alpha=0.3)
    finite = np.concatenate(
        [np.asarray(i0)[np.isfinite(i0)]] + [np.asarray(v)[np.isfinite(v)] for v in (i_lam or {}).values()]
    )
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
        fig.suptitle(title, parse_math=False, usetex=False)
    return _finish(fig)


def scgf_figure(t, direct, renyi, *, lam=0.0, title="Scaled cumulant generating function"):
    """The SCGF ``Λ(λ+t) − Λ(λ)`` and its Rényi cross-entropy form (should coincide)."""
    fig, ax = _new()
    ax.plot(t, direct, color=_COLORS["frontier"], lw=2.5, label="Λ(λ+t) − Λ(λ)")
    ax.plot(
        t,
        renyi,
        ls="--",
        color=_COLORS["bon"],
        lw=1.5,
        label="t log Z_r − t H₁₊ₜ(φ_λ; q_r)  (Rényi cross entropy)",
    )
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("t")
    ax.set_ylabel("(1/m) log E exp(t S_m)  [nats per token]")
    ax.set_title(f"{title} (λ = {lam:.3g})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _finish(fig)


def _positive(values):
    """Values as floats with the non-positive and non-finite ones NaN (not drawn on log axes).

    >>> _positive([0.5, -0.65, 0.0, float("nan")]).tolist()
    [0.5, nan, nan, nan]
    """
    v = np.asarray(values, dtype=float)
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(v) & (v > 0), v, np.nan)


def convergence_figure(lengths, series, *, title="Best-of-N with N = exp(mδ) → optimal KL-RL with budget mδ"):
    """Convergence in m on log axes, exact values with predictions overlaid.

    Parameters
    ----------
    lengths : array of m
    series : dict delta -> dict with keys ``gap``, ``gap_pred``, ``kl_opt``, ``kl_opt_pred``
        (``gap`` = R*(δ) − E[S_m]/m, ``kl_opt`` = KL(π_N ‖ φ_Δ)/m, both per token).
        A prediction that is NaN (outside its validity, see
        :func:`klfrontier.jobs.shown_predictions`) or not positive is not drawn:
        the dashed line stops there instead of diving.
    """
    fig, (a1, a2) = _new(ncols=2, width=5.6)
    for i, (delta, s) in enumerate(series.items()):
        c = f"C{i}"
        a1.plot(lengths, s["gap"], "o-", color=c, ms=4, label=f"δ = {delta:g}: exact")
        a1.plot(
            lengths,
            _positive(s["gap_pred"]),
            "--",
            color=c,
            lw=1,
            label=f"δ = {delta:g}: 2nd-order prediction",
        )
        a2.plot(lengths, s["kl_opt"], "o-", color=c, ms=4, label=f"δ = {delta:g}: exact")
        a2.plot(lengths, _positive(s["kl_opt_pred"]), "--", color=c, lw=1, label=f"δ = {delta:g}: prediction")
    for ax, ylab in (
        (a1, "R*(δ) − E[S_m]/m  [reward per token]"),
        (a2, "KL(π_N ‖ φ_Δ) / m  [nats per token]"),
    ):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("sequence length m (tokens)")
        ax.set_ylabel(ylab)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    a1.set_title("reward gap per token")
    a2.set_title("KL to the optimal policy per token")
    fig.suptitle(title, parse_math=False, usetex=False)
    return _finish(fig)


def empirical_figure(
    n,
    plug_in,
    unbiased,
    *,
    lo=None,
    hi=None,
    kl=None,
    tilted_reward=None,
    tilted_lo=None,
    tilted_hi=None,
    trust_n=None,
    trust_kl=None,
    trusted=None,
    title="Best-of-N and tilting from samples",
):
    """Empirical BoN curve (plug-in vs unbiased, CI band) and the tilted frontier from samples.

    Parameters
    ----------
    n, plug_in, unbiased : arrays
        Best-of-N over N: the plug-in value and the unbiased estimate.
    lo, hi : arrays, optional
        Interval of the plug-in value (shaded; NaN leaves a gap).
    kl, tilted_reward, tilted_lo, tilted_hi : arrays, optional
        The tilted policy from base samples (right panel; hidden without them).
    trust_n, trust_kl : float, optional
        Vertical lines where the estimates stop being trustworthy.
    trusted : bool array over ``n``, optional
        Points marked False are drawn hollow and grey (the library's trust
        rule said their estimate or interval is not to be relied on).
    """
    n = np.asarray(n, dtype=float)
    if trusted is not None:
        trusted = np.asarray(trusted)
        if trusted.shape != n.shape or trusted.dtype != bool:
            raise ValueError(
                f"trusted must be a boolean array with one entry per n ({n.shape}), "
                f"got dtype {trusted.dtype} and shape {trusted.shape}"
            )
    fig, (a1, a2) = _new(ncols=2, width=5.6)
    series = (
        (plug_in, "o", "-", _COLORS["bon"], "plug-in (exact on p̂)"),
        (unbiased, "s", "--", _COLORS["tilted"], "unbiased without replacement"),
    )
    for k, (y, m, ls, c, label) in enumerate(series):
        y = np.asarray(y, dtype=float)
        if trusted is None:
            a1.plot(n, y, marker=m, ls=ls, ms=3, color=c, label=label)
            continue
        a1.plot(n, y, marker=m, ls=ls, ms=3, color=c, label=label, markevery=trusted.tolist())
        if not trusted.all():
            a1.plot(
                n[~trusted],
                y[~trusted],
                marker=m,
                ls="none",
                ms=4,
                mfc="none",
                mec="grey",
                mew=1,
                label="not trusted (hollow)" if k == 0 else None,
            )
    if lo is not None and hi is not None:
        _band(a1, n, lo, hi, alpha=0.2, color=_COLORS["bon"], label="95% bootstrap CI")
    if trust_n is not None:
        a1.axvline(trust_n, ls=":", color="grey", label="N = samples per prompt")
    a1.set_xscale("log")
    _plain_log_ticks(a1.xaxis, n)
    a1.set_xlabel("N")
    a1.set_ylabel("E[max reward of N]")
    a1.set_title("best-of-N")
    a1.grid(alpha=0.3, which="both")
    a1.legend(fontsize=7)
    if kl is not None and tilted_reward is not None:
        a2.plot(kl, tilted_reward, color=_COLORS["frontier"], lw=2, label="plug-in tilted frontier")
        if tilted_lo is not None and tilted_hi is not None:
            _band(a2, kl, tilted_lo, tilted_hi, alpha=0.2, color=_COLORS["band"], label="95% CI")
        if trust_kl is not None:
            a2.axvline(trust_kl, ls=":", color="grey", label="trust limit (KL near log n)")
        a2.set_xlabel("KL  [nats]")
        a2.set_ylabel("expected reward")
        a2.set_title("tilted policy from base samples")
        a2.grid(alpha=0.3)
        a2.legend(fontsize=7)
    else:
        a2.set_visible(False)
    fig.suptitle(title, parse_math=False, usetex=False)
    return _finish(fig)


def overoptimization_figure(
    series, *, title="Reward-model over-optimisation", proxy_label="proxy reward", gold_label="gold reward"
):
    """Proxy and gold reward against KL, side by side: the over-optimisation curve.

    Parameters
    ----------
    series : dict name -> dict
        One method per entry (best-of-N over N, the tilt over λ, checkpoints of
        a run), with equal-length arrays ``kl``, ``proxy``, ``gold`` and
        optionally ``gold_lo``, ``gold_hi`` (None, or NaN where a point has no
        interval).
    title, proxy_label, gold_label : str
        Printed literally (no mathtext).

    Returns
    -------
    matplotlib.figure.Figure
        Left: proxy reward vs KL; right: gold reward vs KL with the interval
        shaded and the largest gold reward of each series starred.

    Notes
    -----
    The policy selects by the proxy ``r`` and is judged by the gold ``g``.
    Pushing further from the reference (larger ``KL(π‖p)``) raises the proxy
    reward, while the gold reward typically rises, peaks and falls: the
    proxy is over-optimised beyond the star (Gao, Schulman & Hilton 2023,
    *Scaling laws for reward model overoptimization*).

    Examples
    --------
    >>> fig = overoptimization_figure({"best-of-N": {"kl": [0, .5, 1.5], "proxy": [0, .6, .9],
    ...                                              "gold": [0, .4, .2], "gold_lo": [0, .3, float("nan")],
    ...                                              "gold_hi": [0, .5, float("nan")]}})
    >>> [ax.get_title() for ax in fig.axes]
    ['proxy reward: what the policy optimises', 'gold reward: what it is judged by']
    """
    if not hasattr(series, "items") or not series:
        raise ValueError("series must be a non-empty dict name -> {kl, proxy, gold[, gold_lo, gold_hi]}")
    data = {}
    for name, spec in series.items():
        if not hasattr(spec, "get") or any(spec.get(k) is None for k in ("kl", "proxy", "gold")):
            raise ValueError(f"series[{name!r}] must be a dict with arrays kl, proxy, gold")
        d = {k: np.asarray(spec[k], dtype=float).reshape(-1) for k in ("kl", "proxy", "gold")}
        for k in ("gold_lo", "gold_hi"):
            d[k] = None if spec.get(k) is None else np.asarray(spec[k], dtype=float).reshape(-1)
        sizes = {k: v.size for k, v in d.items() if v is not None}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"series[{name!r}]: arrays of different lengths {sizes}")
        data[name] = d
    fig, (a1, a2) = _new(ncols=2, width=5.6)
    markers = ["o", "s", "^", "D", "v", "P"]
    starred = False
    for i, (name, d) in enumerate(data.items()):
        style = dict(color=f"C{i % 10}", marker=markers[i % 6], ms=3.5, lw=1.4, label=_label(name))
        a1.plot(d["kl"], d["proxy"], **style)
        a2.plot(d["kl"], d["gold"], **style)
        if d["gold_lo"] is not None and d["gold_hi"] is not None:
            _band(a2, d["kl"], d["gold_lo"], d["gold_hi"], alpha=0.18, color=f"C{i % 10}")
        ok = np.flatnonzero(np.isfinite(d["kl"]) & np.isfinite(d["gold"]))
        if ok.size:
            j = ok[np.argmax(d["gold"][ok])]
            a2.plot(
                [d["kl"][j]],
                [d["gold"][j]],
                ls="none",
                marker="*",
                ms=13,
                color=f"C{i % 10}",
                mec="black",
                mew=0.6,
                zorder=5,
                label=None if starred else "largest gold reward",
            )
            starred = True
    for ax, ylab, sub in (
        (a1, proxy_label, "proxy reward: what the policy optimises"),
        (a2, gold_label, "gold reward: what it is judged by"),
    ):
        ax.set_xlabel("KL(policy ‖ reference)  [nats]")
        ax.set_ylabel(ylab)
        ax.set_title(sub, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, parse_math=False, usetex=False)
    return _finish(fig)


def save_figure(fig, path, dpi=130, *, svg=False, png=True):
    """Write ``fig`` as PNG (and, with ``svg=True``, as SVG beside it) and close it.

    The SVG goes to ``path`` with the suffix ``.svg``; it carries no date, so
    the same figure gives the same file.  ``png=False`` writes the SVG only.
    Returns ``path``.
    """
    from pathlib import Path

    if not (svg or png):
        raise ValueError("save_figure: svg and png are both False: nothing to write")
    try:
        if svg and png and fig.get_layout_engine() is not None:
            # lay the figure out once, at the PNG's resolution, and keep that layout for both files
            # (the layout engine would otherwise run again in each savefig: half the drawing time)
            fig.set_dpi(dpi)
            fig.draw_without_rendering()
            fig.set_layout_engine("none")
        if png:
            fig.savefig(path, dpi=dpi)
        if svg:
            fig.savefig(Path(path).with_suffix(".svg"), format="svg", metadata={"Date": None})
    finally:
        plt = sys.modules.get("matplotlib.pyplot")
        if plt is not None:  # a figure made through pyplot is registered there: release it
            plt.close(fig)
    return path


def gold_figure(
    kl_series,
    *,
    gold_frontier=None,
    kl_max=None,
    title="Proxy versus gold reward against KL",
    proxy_label="proxy reward (selects)",
    gold_label="gold reward (judges)",
):
    """Policies that select with a proxy reward: proxy (left) and gold (right) reward against KL.

    Parameters
    ----------
    kl_series : dict name -> (kl, proxy, gold)
        One method per entry (e.g. the proxy-tilted policy over a KL grid,
        best-of-N over N): three equal-length arrays, drawn in the given order.
    gold_frontier : (kl, gold) pair of arrays, optional
        The best gold reward any policy reaches at each KL (tilting by the
        gold reward itself): drawn dashed on the gold panel, an upper bound.
    kl_max : float, optional
        ``-log p(argmax proxy)``: dotted vertical line where the proxy saturates.

    Examples
    --------
    >>> fig = gold_figure({"tilted": ([0.0, 1.0, 2.0], [0.0, 1.0, 1.5], [0.0, 0.8, 0.4])}, kl_max=2.0)
    >>> [ax.get_ylabel() for ax in fig.axes]
    ['proxy reward (selects)', 'gold reward (judges)']
    """
    fig, (a1, a2) = _new(ncols=2, width=5.6)
    markers = ["", "o", "s", "^", "D", "v"]
    palette = [_COLORS["tilted"], _COLORS["bon"], _COLORS["soft"], "C4", "C5", "C6"]
    for i, (name, (kl, proxy, gold)) in enumerate(kl_series.items()):
        style = dict(
            color=palette[i % 6], marker=markers[i % 6], ms=4, lw=2.0 if i == 0 else 1.0, label=str(name)
        )
        a1.plot(kl, proxy, **style)
        a2.plot(kl, gold, **style)
    if gold_frontier is not None:
        a2.plot(
            gold_frontier[0],
            gold_frontier[1],
            ls="--",
            lw=1.2,
            color=_COLORS["pred"],
            label="best gold at this KL (tilting by gold)",
        )
    for ax, ylab, sub in (
        (a1, proxy_label, "proxy reward: what the policy optimises"),
        (a2, gold_label, "gold reward: what we wanted"),
    ):
        if kl_max is not None and np.isfinite(kl_max):
            ax.axvline(kl_max, ls=":", color="grey", label="proxy saturates: −log p(argmax)")
        ax.set_xlabel("KL(policy ‖ reference)  [nats]")
        ax.set_ylabel(ylab)
        ax.set_title(sub, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return fig
