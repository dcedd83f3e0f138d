"""`analyze`: the reward–KL trade-offs estimated from a user's samples, with intervals that cover.

See :func:`analyze` and ``docs/analyze.md`` for the estimators, the interval
methods and the trust rule; ``benchmarks/bench_coverage.py`` is the coverage
study that backs every interval marked trusted.
"""

from __future__ import annotations

import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .._logspace import unit_exponent
from . import kernels as _k
from . import resample as _rs

__all__ = ["analyze", "Analysis", "Table", "TRUST_RULE"]

TRUST_RULE = (
    "An interval is trusted when (1) at most 5% of the prompts it averages are untrusted for it: a prompt "
    "is untrusted for best-of-N at N when its plug-in BoN KL exceeds log n_x − margin (and, for the KL "
    "interval, when N > n_x/32 or more than 20% of its rewards are seen only once — Good–Turing's "
    "estimate of the law's unseen mass — N = 1 excepted), and for a tilt (fixed λ, the frontier's shared "
    "λ, a policy's λ) when that tilt's KL on its samples exceeds log n_x − margin, its effective sample "
    "size (Σw)²/Σw² is below min_ess, the Pareto shape of its weights' tail exceeds "
    "min(1 − 1/log10 n_x, 0.7) or cannot be estimated (fewer than 25 samples) (the PSIS diagnostic: "
    "the reward's tail is too heavy for e^{λr} to be "
    "estimated), or its jackknife correction is undefined; (2) its standard error is defined; (3) with a "
    "single prompt, only the mean reward's interval (within-prompt jackknife) is trusted: for maxima and "
    "tilts the coverage study found 64–89%; (4) the tilt's KL interval is trusted only from the prompt "
    "bootstrap (30 prompts and more): over fewer prompts its right-skewed per-prompt values made the "
    "Student-t interval cover 87%."
)

# Best-of-N KL intervals are trusted for N <= n_x / KL_N_RATIO and where at most MAX_UNSEEN of
# a prompt's samples are singletons (coverage study).
KL_N_RATIO = 32
MAX_UNSEEN = 0.2
# Below this many prompts a prompt bootstrap undercovers: Student-t on per-prompt values instead.
MIN_PROMPTS_BOOTSTRAP = 30
# Above this many prompts the BCa jackknife (P statistic evaluations) is not worth it: percentile.
MAX_PROMPTS_BCA = 2000
# Rows of samples (prompts x samples) processed at once by the per-prompt kernels.
_CHUNK = 1 << 18
# A prompt whose samples hold at most this share of distinct rewards is tilted on its levels and
# their counts (tilt_rows(counts=)): the same numbers, to rounding, on fewer entries.
_TIE_SHARE = 0.75
# Prompts per block of the Pareto k-hat fit (the trust rule can stop a column between blocks).
_KHAT_ROWS = 512
# A cap on the steps per root of a Hermite cubic: Newton's, guarded by a bracket, converge in
# about 6 (a step outside the bracket is a bisection instead).
_HERMITE_STEPS = 64
# Internal lam grid (times 1/sd) for the average-KL frontier; Hermite interpolation in log lam.
_GRID = np.geomspace(1e-4, 1e4, 49)
# Rewards whose largest magnitude lies outside [1/_SCALE_LIMIT, _SCALE_LIMIT] are analysed in
# units of a power of two, where squares, variances and e^{lam r} stay finite.
_SCALE_LIMIT = 2.0**100
# Reward-valued columns of the result tables (scaled back by `reward_scale`); "lam" is scaled inversely.
_REWARD_COLUMNS = frozenset(
    {
        "reward",
        "reward_lo",
        "reward_hi",
        "reward_plugin",
        "reward_debiased",
        "gain",
        "beta",
        "optimal_reward",
        "optimal_reward_debiased",
        "gap",
        "gap_lo",
        "gap_hi",
        "mean_reward",
    }
)


def reward_scale(top):
    """The unit (a power of two) in which rewards of largest magnitude ``top`` are analysed.

    Every estimator of :func:`analyze` is equivariant under ``r -> r / s``
    (rewards and their intervals scale by ``s``, ``lam`` by ``1/s``, KLs are
    unchanged), and division by a power of two is exact.  ``1`` unless
    ``top`` lies outside ``[2^-100, 2^100]``, where ``(r - mean)^2`` and
    ``lam^2 Var`` could overflow or underflow.

    >>> reward_scale(7.0), reward_scale(7e300) == 2.0 ** 999, reward_scale(0.0)
    (1.0, True, 1.0)
    """
    e = unit_exponent(top, _SCALE_LIMIT)
    return 1.0 if e == 0 else math.ldexp(1.0, e - 1)


def _unscale(table, scale):
    """Reward-valued columns of ``table`` times ``scale``, ``lam`` divided by it (in place)."""
    with np.errstate(over="ignore"):  # beyond the float range: inf is the value
        for key, v in table.data.items():
            if key in _REWARD_COLUMNS or (key.startswith("bon") and key.endswith("_reward")):
                table.data[key] = v * scale
            elif key == "lam":
                table.data[key] = v / scale


# ----------------------------------------------------------------------------- results
@dataclass(eq=False)
class Table:
    """Named numpy columns of equal length.

    Columns are attributes (``table.reward_lo``); ``columns`` lists them in order.

    >>> t = Table({"n": np.array([1, 2]), "reward": np.array([0.5, 0.75])})
    >>> t.reward.tolist(), len(t), t.columns
    ([0.5, 0.75], 2, ['n', 'reward'])
    """

    data: dict

    def __post_init__(self):
        sizes = {len(np.atleast_1d(v)) for v in self.data.values()}
        if len(sizes) > 1:
            raise ValueError("Table columns must have equal lengths")
        self.data = {k: np.atleast_1d(np.asarray(v)) for k, v in self.data.items()}

    def __getattr__(self, name):
        data = self.__dict__.get("data", {})
        if name in data:
            return data[name]
        raise AttributeError(name)

    def __dir__(self):
        return list(super().__dir__()) + list(self.data)

    def __len__(self):
        return len(next(iter(self.data.values()))) if self.data else 0

    @property
    def columns(self) -> list:
        return list(self.data)

    def to_dict(self) -> dict:
        """Column name -> list; NaN becomes ``None``, infinities the strings ``"inf"``/``"-inf"``."""
        from .._json import jsonable

        return {k: jsonable(v) for k, v in self.data.items()}

    def to_pandas(self):
        """The table as a :class:`pandas.DataFrame` (pandas is optional)."""
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("to_pandas needs pandas: pip install pandas") from exc
        return pd.DataFrame({k: v for k, v in self.data.items()})

    def rows(self, limit=None):
        """The rows as tuples (for reports); the first ``limit`` only when given."""
        return list(zip(*(v[:limit].tolist() for v in self.data.values())))


@dataclass(eq=False)
class Analysis:
    """The result of :func:`analyze`.

    Attributes
    ----------
    bon, tilt, frontier, frontier_equal : Table
        Best-of-N by ``N``; the tilt at fixed ``lam``; the average-KL optimum by
        budget; the equal-budget curve (every prompt given the same budget).
    policies : dict name -> Table
        One row per aligned policy.
    per_prompt : Table
        One row per prompt (written to a file by reports, never into summary JSON).
    methods : dict table name -> str
        Which method made the table's intervals (or why there are none).
    excluded : list of (prompt, n)
        Prompts left out (fewer than two samples).
    info : dict
        Inputs, grids, settings and provenance.
    """

    bon: Table
    tilt: Table
    frontier: Table
    frontier_equal: Table
    policies: dict
    per_prompt: Table
    methods: dict
    excluded: list
    info: dict = field(default_factory=dict)

    def tables(self) -> dict:
        """Every aggregate table by name (``policy:NAME`` for policies)."""
        out = {
            "bon": self.bon,
            "tilt": self.tilt,
            "frontier": self.frontier,
            "frontier_equal": self.frontier_equal,
        }
        out.update({f"policy:{k}": v for k, v in self.policies.items()})
        return out

    def to_pandas(self, name):
        """One table (``"bon"``, ``"tilt"``, ``"frontier"``, ``"frontier_equal"``, ``"per_prompt"``,
        or a policy name) as a DataFrame."""
        if name == "per_prompt":
            return self.per_prompt.to_pandas()
        if name in self.policies:
            return self.policies[name].to_pandas()
        tabs = self.tables()
        if name not in tabs:
            raise ValueError(f"name must be one of {sorted(tabs) + ['per_prompt']}, got {name!r}")
        return tabs[name].to_pandas()

    def to_dict(self) -> dict:
        """Strict-JSON-ready aggregate results (the per-prompt table is left out: it can be large)."""
        from .._json import jsonable

        return {
            "bon": self.bon.to_dict(),
            "tilt": self.tilt.to_dict(),
            "frontier": self.frontier.to_dict(),
            "frontier_equal": self.frontier_equal.to_dict(),
            "policies": {k: v.to_dict() for k, v in self.policies.items()},
            "methods": dict(self.methods),
            "trust_rule": TRUST_RULE,
            "excluded_prompts": [[str(p), int(n)] for p, n in self.excluded[:100]],
            "n_excluded_prompts": len(self.excluded),
            "info": jsonable(self.info),
        }

    def write_tables(self, directory, format="csv"):
        """Write every table (and the per-prompt table) as CSV or Parquet into ``directory``.

        Returns the list of paths written.  Each file is written to a temporary
        name, flushed to disk and renamed, so a crash never leaves half a file.
        """
        from .._atomic import write_table

        if format not in ("csv", "parquet"):
            raise ValueError(f"format must be 'csv' or 'parquet', got {format!r}")
        from pathlib import Path

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        tabs = dict(self.tables())
        tabs["per_prompt"] = self.per_prompt
        for name, tab in tabs.items():
            stem = name.replace(":", "-")
            path = out / f"{_safe_stem(stem)}.{format}"
            write_table(path, tab.data, format=format)
            paths.append(path)
        return paths


def _safe_stem(name):
    keep = "".join(ch if (ch.isascii() and (ch.isalnum() or ch in "-_.")) else "_" for ch in name)
    return keep.strip(".") or "table"


# ----------------------------------------------------------------------------- input
def _as_sampleset(obj, *, columns, gold_col, what, policy=False):
    """A SampleSet from a path, a SampleSet, a DataFrame, a pyarrow Table or a mapping."""
    from ..io import SampleSet, read_samples

    cols = dict(columns or {})
    if gold_col is not None:
        cols["gold"] = gold_col
    if isinstance(obj, SampleSet):
        s = obj
    elif isinstance(obj, (str, bytes)) or hasattr(obj, "__fspath__"):
        s = read_samples(obj, columns=cols)
    elif isinstance(obj, dict):
        s = SampleSet.from_dict(obj)
    elif hasattr(obj, "column_names") and hasattr(obj, "column"):  # pyarrow Table
        s = _from_frame(
            {c: obj.column(c).to_numpy(zero_copy_only=False) for c in obj.column_names}, cols, what
        )
    elif hasattr(obj, "columns") and hasattr(obj, "__getitem__"):  # pandas / polars
        s = _from_frame({str(c): np.asarray(obj[c]) for c in obj.columns}, cols, what)
    else:
        raise ValueError(
            f"{what} must be a path, a SampleSet, a DataFrame, a pyarrow Table or a "
            f"mapping prompt_id -> rewards, got {type(obj).__name__}"
        )
    if gold_col is not None and not getattr(s, "has_gold", False):
        raise ValueError(f"{what}: gold_col={gold_col!r} was given but the samples carry no gold reward")
    if policy:
        if s.logprobs is None or getattr(s, "ref_logprobs", None) is None:
            raise ValueError(
                f"{what}: a policy needs the columns 'logprob' (log pi of each sample) "
                f"and 'ref_logprob' (log p under the reference)"
            )
    return s


def _from_frame(frame, cols, what):
    from ..io import SampleSet

    def col(role, required):
        name = cols.get(role, role)
        if name is None or name not in frame:
            if required:
                raise ValueError(f"{what}: no column {name!r} (role {role})")
            return None
        return frame[name]

    kwargs = {}
    for role, key in (("logprob", "logprob"), ("gold", "gold"), ("ref_logprob", "ref_logprob")):
        v = col(role, required=(role == "gold" and "gold" in cols))
        if v is not None:
            kwargs[key] = np.asarray(v, dtype=float)
    return SampleSet.from_columns(
        [str(p) for p in col("prompt_id", True)], np.asarray(col("reward", True), dtype=float), **kwargs
    )


# ----------------------------------------------------------------------------- per-prompt layer
class _Prompts:
    """Per-prompt estimates of the kept prompts (``n_x >= 2``), batched by sample count."""

    def __init__(self, s, ns, progress, threads=1, other_max=0.0):
        self.threads = int(threads)
        counts = s.counts
        keep = np.flatnonzero(counts >= 2)
        self.excluded = [(s.prompts[i], int(counts[i])) for i in np.flatnonzero(counts < 2)]
        if keep.size == 0:
            raise ValueError("no prompt has two or more samples: nothing can be estimated")
        self.ids = [s.prompts[i] for i in keep]
        self.index = {p: j for j, p in enumerate(self.ids)}
        self.n = counts[keep].astype(np.int64)
        self.P = keep.size
        self.has_gold = getattr(s, "gold", None) is not None
        self.ns = ns
        P, M = self.P, ns.size
        self.mean = np.empty(P)
        self.singletons = np.empty(P)  # Good–Turing: the unseen mass is about n_1 / n
        z = lambda *shape: np.full(shape, np.nan)  # noqa: E731
        self.bon = {k: z(P, M) for k in ("reward", "plugin", "kl", "kl_bias", "kl_jkvar", "win")}
        if self.has_gold:
            self.bon.update(gold=z(P, M), gold_plugin=z(P, M))
        self.tilt = None
        self.groups = []  # (n, rows into the kept order, sorted rewards, gold or None)
        by_n = {}
        for j, i in enumerate(keep):
            by_n.setdefault(int(counts[i]), []).append((j, i))
        for n, members in sorted(by_n.items()):
            rows = np.array([j for j, _ in members])
            r = np.array([s.rewards[i] for _, i in members], dtype=float).reshape(rows.size, n)
            g = None
            if self.has_gold:
                order = np.argsort(r, axis=1, kind="stable")
                r = np.take_along_axis(r, order, axis=1)
                g = np.array([s.gold[i] for _, i in members], dtype=float).reshape(rows.size, n)
                g = np.take_along_axis(g, order, axis=1)
                del order
            else:
                r.sort(axis=1)
            self.groups.append((n, rows, r, g))
        # rows are sorted: the largest magnitude is in the first or the last column
        top = max(
            [max(float(r[:, -1].max()), -float(r[:, 0].min())) for _, _, r, _ in self.groups]
            + [float(other_max)]
        )
        self.scale = reward_scale(top)
        done = 0
        var_sum = 0.0
        for n, rows, r, g in self.groups:
            if self.scale != 1.0:
                r /= self.scale  # a power of two: exact
            self.mean[rows] = r.mean(axis=1)
            var_sum += np.var(r, axis=1).sum()
            self._bon_group(n, rows, r, g)
            done += rows.size
            if progress is not None:
                progress("per-prompt best-of-N", done, P)
        self.sd_pool = float(np.sqrt(var_sum / P))
        self._tilt_jobs = self._tie_jobs()

    def _tie_jobs(self):
        """The batches of :meth:`tilt_at`: ``(rows, rewards or levels, counts or None, gold or None)``.

        Prompts with many tied rewards (at most ``_TIE_SHARE`` of their
        samples distinct, no gold column) are stored as levels and counts,
        sorted by their number of levels and batched with little padding;
        the others as their samples (views into the groups where no prompt
        of a group is tied).
        """
        jobs = []
        for n, rows, r, g in self.groups:
            if g is None:
                distinct = 1 + np.count_nonzero(r[:, 1:] != r[:, :-1], axis=1)
                tied = distinct <= _TIE_SHARE * n
            else:
                tied = np.zeros(rows.size, dtype=bool)
            if not tied.any():
                jobs += [
                    (rows[sl], r[sl], None, None if g is None else g[sl]) for sl in self._chunks(n, rows)
                ]
                continue
            plain = np.flatnonzero(~tied)
            jobs += [(rows[plain[sl]], r[plain[sl]], None, None) for sl in self._chunks(n, plain)]
            order = np.flatnonzero(tied)
            order = order[np.argsort(distinct[order], kind="stable")]
            for sl in self._chunks(n, order):
                levels, counts, _ = _k.tie_levels(r[order[sl]])
                jobs.append((rows[order[sl]], levels, counts, None))
        return jobs

    def _chunks(self, n, rows, size=_CHUNK):
        step = max(1, size // max(n, 1))
        for s0 in range(0, rows.size, step):
            yield slice(s0, s0 + step)

    def _bon_group(self, n, rows, r, g):
        ok = self.ns <= n
        if not ok.any():  # no BoN size fits: only the Good–Turing share
            for sl in self._chunks(n, rows):
                a, b = _k.tie_bounds(r[sl])
                self.singletons[rows[sl]] = np.sum(a == b, axis=1) / n
            return
        ns = self.ns[ok]
        cols = np.flatnonzero(ok)
        W = np.stack([_k.unbiased_weights(n, int(N)) for N in ns], axis=1)  # (n, M_ok)

        def one(sl):
            rr = r[sl]
            a, b = _k.tie_bounds(rr)
            self.singletons[rows[sl]] = np.sum(a == b, axis=1) / n
            idx = rows[sl][:, None], cols[None, :]
            top = rr[:, -1:]
            self.bon["reward"][idx] = top + (rr - top) @ W
            # the corrected KL is only trusted for N <= n / KL_N_RATIO: jackknife those (and N = 1)
            out = _k.bon_plugin(
                rr, ns, gold=None if g is None else g[sl], jackknife=lambda N: N * KL_N_RATIO <= n or N == 1
            )
            self.bon["plugin"][idx] = out["reward"]
            self.bon["kl"][idx] = out["kl"]
            self.bon["kl_bias"][idx] = out["kl_bias"]
            self.bon["kl_jkvar"][idx] = out["kl_jkvar"]
            self.bon["win"][idx] = out["win_rate"]
            if g is not None:
                self.bon["gold"][idx] = _k.tie_mean(g[sl], a, b) @ W
                self.bon["gold_plugin"][idx] = out["gold"]

        for _ in self._map(one, list(self._chunks(n, rows))):  # chunks write disjoint rows
            pass

    def _map(self, fn, jobs):
        """``fn(j) for j in jobs`` in order, on ``self.threads`` threads (numpy releases the GIL).

        At most ``2 * threads`` results wait to be consumed (memory stays that of a few chunks).
        """
        if self.threads <= 1 or len(jobs) <= 1:
            yield from map(fn, jobs)
            return
        ahead = 2 * self.threads
        with ThreadPoolExecutor(max_workers=min(self.threads, len(jobs))) as ex:
            pending = [ex.submit(fn, j) for j in jobs[:ahead]]
            for k in range(len(jobs)):
                res = pending[k].result()
                pending[k] = None
                if k + ahead < len(jobs):
                    pending.append(ex.submit(fn, jobs[k + ahead]))
                yield res

    def tilt_at(self, lams, jackknife=True, columns=None, trust=None, column_rule=True):
        """Per-prompt tilt statistics (``(P, G)`` arrays) at a shared grid ``(G,)`` or per prompt ``(P, G)``.

        With ``jackknife`` the jackknife biases, the within-prompt variances
        where they are used (one prompt, or ``frontier_var`` among
        ``columns``) and the Pareto ``khat`` are computed.  ``khat`` is fitted
        only where the rest of the trust rule ``trust = (margin, min_ess)``
        holds, and with ``column_rule`` only in columns where at most 5% of the
        prompts fail it (elsewhere the column is untrusted whatever ``khat``
        is); NaN where not fitted.
        """
        lams = np.asarray(lams, dtype=float)
        variances = self.P == 1 or (columns is not None and "frontier_var" in columns)
        per_row = lams.ndim == 2
        G = lams.shape[-1]
        want_khat = jackknife and (columns is None or "khat" in columns)
        keep = None if columns is None else set(columns) | ({"kl", "ess"} if want_khat else set())

        def one(job):
            rows, r, counts, g = job
            out = _k.tilt_rows(
                r,
                lams[rows] if per_row else lams,
                gold=g,
                jackknife=jackknife,
                variances=variances,
                counts=counts,
                mean=self.mean[rows],  # the prompts' means: the reward at lam = 0 on either path
            )
            return rows, {k: v for k, v in out.items() if keep is None or k in keep}

        res = {}
        for rows, out in self._map(one, self._tilt_jobs):  # filled as the chunks arrive
            for key, v in out.items():
                if key not in res:
                    res[key] = np.full((self.P, G), np.nan)
                res[key][rows] = v
        if want_khat:
            fit = np.ones((self.P, G), dtype=bool)
            if trust is not None:
                fit = (res["kl"] <= np.log(self.n.astype(float))[:, None] - trust[0]) & (
                    res["ess"] >= trust[1]
                )
                if column_rule:
                    fit &= ((~fit).sum(axis=0) <= 0.05 * self.P)[None, :]
            khat = np.where(np.broadcast_to(lams, (self.P, G)) == 0.0, -np.inf, np.nan)  # as tilt_khat
            # The trust rule fails a column when more than 5% of its prompts are bad.  Once a
            # column has more bad prompts than 5% of all prompts (failing the gate above, or with
            # khat above the threshold, among prompts whose tilt is finite and so counted by the
            # rule), the rest of its khat decides nothing and is left unfitted (NaN).  Blocks go in
            # rounds of `threads`, so what is fitted does not depend on timing.
            early = trust is not None and column_rule and columns is None
            if early:
                counted = np.isfinite(res["reward"]) & np.isfinite(res["kl"])
                if "gold" in res:
                    counted &= np.isfinite(res["gold"])
                bad = (~fit & counted).sum(axis=0)
                kmax = _k.khat_threshold(self.n)[:, None]
            live = np.ones(G, dtype=bool)
            blocks = [
                (rows, r, sl) for n, rows, r, _ in self.groups for sl in self._chunks(n, rows, _KHAT_ROWS * n)
            ]

            def fit_one(block):
                rows, r, sl = block
                x = rows[sl]
                khat[x] = _k.tilt_khat(r[sl], lams[x] if per_row else lams, fit[x] & live[None, :])
                return x

            for b0 in range(0, len(blocks), self.threads):
                if early:
                    live = bad <= 0.05 * self.P
                    if not live.any():
                        break
                for x in self._map(fit_one, blocks[b0 : b0 + self.threads]):  # disjoint rows
                    if early:
                        bad += (fit[x] & counted[x] & ~(khat[x] <= kmax[x])).sum(axis=0)
            res["khat"] = khat
        if columns is not None:
            res = {k: v for k, v in res.items() if k in columns}
        return res


# ----------------------------------------------------------------------------- frontier on a grid
def _hermite_solve(u, K, dK, R, dR, budgets):
    """Solve ``K(u) = budget`` on cubic-Hermite interpolants and return ``(u*, R(u*))``.

    ``u`` is ``(H,)`` (log lam), ``K, dK, R, dR`` are ``(B, H)`` with ``K``
    nondecreasing along ``H``; ``budgets`` is ``(Kb,)``.  Returns two ``(B, Kb)``
    arrays; ``u*`` is ``-inf`` below the grid and ``+inf`` above it.
    """
    B, H = K.shape
    Kb = budgets.size
    Km = np.maximum.accumulate(K, axis=1)
    j = np.empty((B, Kb), dtype=np.int64)  # first node >= budget
    for i, b in enumerate(budgets):  # (no (B, H, Kb) temporary)
        j[:, i] = np.sum(Km < b, axis=1)
    jj = np.clip(j, 1, H - 1)
    b_idx = np.arange(B)[:, None]
    h = u[jj] - u[jj - 1]
    k0, k1 = Km[b_idx, jj - 1], Km[b_idx, jj]
    d0, d1 = dK[b_idx, jj - 1] * h, dK[b_idx, jj] * h
    target = np.broadcast_to(budgets, (B, Kb))
    lo, hi = np.zeros((B, Kb)), np.ones((B, Kb))
    work = [np.empty((B, Kb)) for _ in range(5)]  # reused by every step: no fresh temporaries

    def herm(t, y0, y1, m0, m1):
        # (2t³ − 3t² + 1) y0 + (t³ − 2t² + t) m0 + (−2t³ + 3t²) y1 + (t³ − t²) m1, term by term
        t2, t3, acc, tmp, tmp2 = work
        np.multiply(t, t, out=t2)
        np.multiply(t2, t, out=t3)
        np.multiply(2, t3, out=acc)
        acc -= np.multiply(3, t2, out=tmp)
        acc += 1
        acc *= y0
        np.multiply(2, t2, out=tmp)
        np.subtract(t3, tmp, out=tmp)
        tmp += t
        tmp *= m0
        acc += tmp
        np.multiply(-2, t3, out=tmp)
        tmp += np.multiply(3, t2, out=tmp2)
        tmp *= y1
        acc += tmp
        np.subtract(t3, t2, out=tmp)
        tmp *= m1
        acc += tmp
        return acc

    def dherm(t, y0, y1, m0, m1):
        # d/dt: 6 (t² − t) (y0 − y1) + (3t² − 4t + 1) m0 + (3t² − 2t) m1
        t2, _, acc, tmp, _ = work
        np.multiply(t, t, out=t2)
        np.subtract(t2, t, out=acc)
        acc *= 6.0
        acc *= np.subtract(y0, y1, out=tmp)
        np.multiply(3.0, t2, out=tmp)
        tmp -= 4.0 * t
        tmp += 1.0
        tmp *= m0
        acc += tmp
        np.multiply(3.0, t2, out=tmp)
        tmp -= 2.0 * t
        tmp *= m1
        acc += tmp
        return acc

    # The cubic's root in the bracket [0, 1] (herm(0) = k0 < target <= k1 = herm(1) inside the
    # grid): Newton steps from the secant's root, each kept inside the bracket, which shrinks to
    # the current point's side at every step (else a bisection), until a step is below 2^-48.
    inside = (j > 0) & (j < H)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(inside, np.clip((target - k0) / (k1 - k0), 0.0, 1.0), 0.0)
    t = np.where(np.isfinite(t), t, 0.5)
    live = inside.copy()
    for _ in range(_HERMITE_STEPS):
        f = herm(t, k0, k1, d0, d1) - target
        below = f < 0
        np.copyto(lo, t, where=below)
        np.copyto(hi, t, where=~below)
        with np.errstate(divide="ignore", invalid="ignore"):
            tn = t - f / dherm(t, k0, k1, d0, d1)
        tn = np.where((tn > lo) & (tn < hi), tn, 0.5 * (lo + hi))
        tn = np.where(live & (f != 0), tn, t)
        live &= np.abs(tn - t) > 2.0**-48
        t = tn
        if not live.any():
            break
    r0, r1 = R[b_idx, jj - 1], R[b_idx, jj]
    e0, e1 = dR[b_idx, jj - 1] * h, dR[b_idx, jj] * h
    ustar = u[jj - 1] + t * h
    rstar = herm(t, r0, r1, e0, e1).copy()
    ustar = np.where(j == 0, -np.inf, np.where(j >= H, np.inf, ustar))
    return ustar, rstar


class _Frontier:
    """The average-KL frontier: ``R*_avg(Δ) = mean_x R_x(lam)``, one ``lam`` with ``mean_x KL_x(lam) = Δ``."""

    def __init__(self, prompts, scale, kl_min=None):
        self.lam = _GRID / scale
        self.u = np.log(self.lam)
        # Every solve is for a budget >= kl_min (when given).  KL_x(lam) = int_0^lam s Var_s ds
        # <= lam^2 span_x^2 / 8 (Popoviciu: Var <= span^2 / 4), so the leading nodes where that
        # bound is below kl_min / 2 for every prompt can never be the upper end of a bracket:
        # their K is set to -1 (below every budget, and every weighted mean of it is -1) and R, V
        # to NaN; the last of them is evaluated, as the lower end of the first bracket.
        skip = 0
        if kl_min is not None and kl_min > 0:
            span = max(float(np.max(r[:, -1] - r[:, 0])) for _, _, r, _ in prompts.groups)
            low = (self.lam * span) ** 2 / 8.0 < 0.5 * kl_min
            skip = max(int(np.argmin(low)) if not low.all() else low.size, 1) - 1
        H = self.lam.size
        st = prompts.tilt_at(self.lam[skip:], jackknife=False, columns=("reward", "kl", "var"))
        if skip:
            self.K = np.full((prompts.P, H), -1.0)
            self.R, self.V = np.full((prompts.P, H), np.nan), np.full((prompts.P, H), np.nan)
            self.K[:, skip:], self.R[:, skip:], self.V[:, skip:] = st["kl"], st["reward"], st["var"]
        else:
            self.K, self.R, self.V = st["kl"], st["reward"], st["var"]
        self.skipped = skip
        # saturation: KL -> log n - log(#samples at the top), reward -> r_max
        self.r_top = np.empty(prompts.P)
        self.k_top = np.empty(prompts.P)
        self.var0 = np.empty(prompts.P)
        for n, rows, r, _g in prompts.groups:
            top = r[:, -1]
            self.r_top[rows] = top
            self.k_top[rows] = np.log(n) - np.log(np.sum(r == top[:, None], axis=1))
            self.var0[rows] = np.var(r, axis=1)
        self.mean0 = prompts.mean

    def solve(self, weights, budgets):
        """``(lam, reward, saturated)`` of the frontier for each row of prompt ``weights`` ``(B, P)``."""
        wsum = weights.sum(axis=1, keepdims=True)
        K = weights @ self.K / wsum
        R = weights @ self.R / wsum
        V = weights @ self.V / wsum
        lam = self.lam[None, :]
        ustar, rstar = _hermite_solve(self.u, K, lam * lam * V, R, lam * V, budgets)
        kmax = (weights @ self.k_top / wsum[:, 0])[:, None]
        v0 = (weights @ self.var0 / wsum[:, 0])[:, None]
        m0 = (weights @ self.mean0 / wsum[:, 0])[:, None]
        rtop = (weights @ self.r_top / wsum[:, 0])[:, None]
        b = np.broadcast_to(budgets, rstar.shape)
        # below the grid: KL = lam^2 var / 2 + O(lam^3), R = mean + lam var
        with np.errstate(divide="ignore", invalid="ignore"):
            lam_small = np.sqrt(2.0 * b / v0)
        small = np.isneginf(ustar)
        lamv = np.where(small, lam_small, np.exp(ustar))
        with np.errstate(invalid="ignore"):
            rstar = np.where(small, m0 + lam_small * v0, rstar)
        sat = np.isposinf(ustar) | (b >= kmax)
        rstar = np.where(sat, np.where(b >= kmax, rtop, R[:, -1:]), rstar)
        lamv = np.where(sat, np.inf, lamv)
        zero = b <= 0
        rstar = np.where(zero, m0, rstar)
        lamv = np.where(zero, 0.0, lamv)
        return lamv, rstar, sat & ~zero


# ----------------------------------------------------------------------------- intervals
def _t_quantile(q, dof):
    """Student-t quantile ``t_dof^{-1}(q)``."""
    from scipy.special import stdtrit

    return stdtrit(dof, q)


def _t_interval(values, mask, conf):
    """Student-t interval on per-prompt values (``(P, S)``, NaN outside ``mask``)."""
    cnt = mask.sum(axis=0)
    v = np.where(mask, values, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = v.sum(axis=0) / cnt
        dev = np.where(mask, values - mean, 0.0)
        sd = np.sqrt((dev * dev).sum(axis=0) / (cnt - 1))
        se = sd / np.sqrt(cnt)
        tq = _t_quantile(0.5 + conf / 2, np.maximum(cnt - 1, 1))
    ok = cnt >= 2
    return (
        np.where(ok, mean - tq * se, np.nan),
        np.where(ok, mean + tq * se, np.nan),
        np.where(ok, se, np.nan),
    )


# ----------------------------------------------------------------------------- grids
def _check_grid(x, name, *, integer=False, positive=False):
    a = np.atleast_1d(np.asarray(x, dtype=float)).ravel()
    if a.size == 0:
        return a.astype(np.int64) if integer else a
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite")
    if integer:
        if (a < 1).any() or (a != np.round(a)).any():
            raise ValueError(f"{name} must be integers >= 1")
        return np.unique(a.astype(np.int64))
    if (a < 0).any():
        raise ValueError(f"{name} must be >= 0")
    return np.unique(a)


# ----------------------------------------------------------------------------- the analysis
def analyze(
    base,
    *,
    policies=None,
    gold_col=None,
    n_values=None,
    kl_values=None,
    lam_values=None,
    n_boot=1000,
    seed=0,
    confidence=0.95,
    interval="auto",
    columns=None,
    progress=None,
    trust_margin=1.0,
    min_ess=10.0,
    threads=None,
) -> Analysis:
    """Best-of-N, the tilted policy, the average-KL optimum and aligned policies, from samples.

    Parameters
    ----------
    base : path, SampleSet, DataFrame, pyarrow Table or mapping
        Samples from the reference: ``prompt_id``, ``reward`` per row (and
        ``gold`` with ``gold_col``).  A mapping is ``{prompt_id: rewards}``.
    policies : mapping name -> samples, optional
        Samples from aligned policies, with ``logprob`` (under the policy) and
        ``ref_logprob`` (under the reference) per sample.  Their prompts must be
        among the base prompts.  A name ending in ``@k`` is not special; paths
        through checkpoints are drawn by the report in the order given.
    gold_col : str, optional
        Column of a second (gold) reward, measured while selecting with ``reward``.
    n_values : array_like of int, optional
        Best-of-N sizes.  Default: ``1, 2, 4, ...`` up to the largest sample count.
    kl_values : array_like, optional
        Average KL budgets Δ for the frontier.  Default: 21 points on
        ``[0, log(median n)]``.
    lam_values : array_like, optional
        Inverse temperatures (reward units) for the tilted policy.  Default: 0
        and 12 points ``c / sd`` with ``c`` log-spaced on ``[0.05, 20]``.
    n_boot : int, default 1000
        Bootstrap replications (prompt bootstrap; used when it is the method).
    seed : int, default 0
        Seed of the bootstrap.
    confidence : float, default 0.95
    interval : {"auto", "t", "bootstrap", "none"}
        ``auto``: one prompt -> within-prompt jackknife t-interval; fewer than
        30 prompts -> Student-t on per-prompt values; else the prompt
        bootstrap (BCa up to 2000 prompts, percentile above).
    columns : dict, optional
        Column names for the roles when reading paths or frames.
    progress : callable(stage, done, total), optional
    trust_margin, min_ess : float
        The trust rule (``TRUST_RULE``).
    threads : int, optional
        Threads for the per-prompt kernels (numpy releases the GIL in them).
        Default: the CPUs this process may run on.  Results do not depend on it.

    Returns
    -------
    Analysis

    Notes
    -----
    Each prompt's estimate is computed once; intervals for means over
    prompts resample prompts only (the spread of per-prompt estimates holds
    their own sampling noise).  The frontier is the *average-KL* optimum
    (theory §9): the solution of ``max mean_x E_pi_x r`` s.t.
    ``mean_x KL(pi_x || p_x) <= Δ`` tilts every prompt with one shared λ.  Its
    per-prompt linearisation ``psi_x = R_x(lam) - (KL_x(lam) - Δ)/lam`` gives
    the t-interval; the bootstrap re-solves λ in every replication.  A
    policy's distance to the optimum uses the identity
    ``KL(pi || phi_lam) = KL(pi || p) - lam E_pi r + Lambda(lam)`` with ``Λ``
    from the base samples and λ the optimum's at the policy's KL.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> data = {f"q{i}": rng.normal(size=64) for i in range(12)}
    >>> res = analyze(data, n_values=[1, 4], kl_values=[0.5], lam_values=[1.0])
    >>> res.methods["bon"].split(":")[0]
    'Student-t over 12 prompts'
    >>> bool(res.bon.reward_lo[1] < res.bon.reward[1] < res.bon.reward_hi[1])
    True
    """
    if interval not in ("auto", "t", "bootstrap", "none"):
        raise ValueError(f"interval must be 'auto', 't', 'bootstrap' or 'none', got {interval!r}")
    if not (isinstance(confidence, (int, float)) and 0 < confidence < 1):
        raise ValueError("confidence must lie in (0, 1)")
    n_boot = int(n_boot)
    if n_boot < 0:
        raise ValueError("n_boot must be >= 0")
    if n_boot > 100_000:
        raise ValueError(
            f"n_boot must be at most 100000 (got {n_boot}); 1000-10000 is plenty for 95% intervals"
        )
    for name, v in (("trust_margin", trust_margin), ("min_ess", min_ess)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be a finite number >= 0")
    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    if progress is not None and not callable(progress):
        raise ValueError("progress must be callable")

    def tick(stage, done, total):
        if progress is not None:
            progress(stage, done, total)

    s = _as_sampleset(base, columns=columns, gold_col=gold_col, what="base")
    pol_sets = {}
    for name, obj in (policies or {}).items():
        pcols = dict(columns or {})
        pcols.pop("logprob", None)
        pol_sets[str(name)] = _as_sampleset(
            obj, columns=pcols, gold_col=gold_col, what=f"policy {name!r}", policy=True
        )

    counts = s.counts
    n_max = int(counts.max())
    ns = _check_grid(
        2 ** np.arange(int(np.floor(np.log2(max(n_max, 1)))) + 1) if n_values is None else n_values,
        "n_values",
        integer=True,
    )
    pol_top = max(
        (max(float(r.max()), -float(r.min())) for ps in pol_sets.values() for r in ps.rewards if r.size),
        default=0.0,
    )
    pr = _Prompts(s, ns, tick, threads, other_max=pol_top)
    P = pr.P
    sd = pr.sd_pool if pr.sd_pool > 0 else 1.0
    lams = _check_grid(
        np.concatenate([[0.0], np.geomspace(0.05, 20.0, 12) / sd]) if lam_values is None else lam_values,
        "lam_values",
    )
    if lam_values is not None:
        lams = lams * pr.scale  # the user's lam in the units of the analysis
    n_med = float(np.median(pr.n))
    budgets = _check_grid(
        np.linspace(0.0, np.log(n_med), 21) if kl_values is None else kl_values, "kl_values"
    )
    method = interval
    if method == "auto":
        method = (
            "jackknife" if P == 1 else ("t" if (P < MIN_PROMPTS_BOOTSTRAP or n_boot == 0) else "bootstrap")
        )
    elif P == 1 and method in ("t", "bootstrap"):
        method = "jackknife"
    if method == "bootstrap" and n_boot == 0:
        raise ValueError("interval='bootstrap' needs n_boot >= 1")

    # ---- per-prompt tilts at the user's lam and the frontier -------------------------------
    tick("tilts", 0, 1)
    gate = (trust_margin, min_ess)
    tl = pr.tilt_at(lams, trust=gate) if lams.size else {}
    positive = budgets[budgets > 0]
    # with policies the solves also run at each policy's KL: evaluate the whole grid
    fr = _Frontier(pr, sd, kl_min=float(positive.min()) if positive.size and not pol_sets else None)
    ones = np.ones((1, P))
    f_lam, f_rew, f_sat = fr.solve(ones, budgets)
    f_lam, f_rew, f_sat = f_lam[0], f_rew[0], f_sat[0]
    fl = {}
    if budgets.size:
        # two Newton steps from the Hermite start (~1e-5): the first on plain evaluations, the
        # second on the evaluations (with jackknife) that the intervals use
        st = pr.tilt_at(
            np.where(np.isfinite(f_lam), f_lam, 0.0), jackknife=False, columns=("reward", "kl", "var")
        )
        f_lam, f_rew = _newton_step(st, budgets, f_lam, f_rew)
        del st
        fl = pr.tilt_at(np.where(np.isfinite(f_lam), f_lam, 0.0), trust=gate)
        f_lam, f_rew = _newton_step(fl, budgets, f_lam, f_rew)
    tick("tilts", 1, 1)

    # ---- policies -----------------------------------------------------------------------
    pol = {}
    for name, ps in pol_sets.items():
        pol[name] = _policy_prompt_values(name, ps, pr, fr, trust_margin, min_ess)

    # ---- linear per-prompt columns ---------------------------------------------------------
    # Plug-in estimators (BoN KL, tilts, the frontier, Λ in a policy's distance) are biased by
    # O(1/n): each column holds the jackknife-corrected per-prompt values, whose intervals are for
    # the true values (bias O(1/n^2)); the plug-in means are reported beside them.
    cols = _Columns(P)
    logn = np.log(pr.n.astype(float))
    k_max = _k.khat_threshold(pr.n)[:, None]  # PSIS: weights' tail too heavy above it
    elig_n = ns[None, :] <= pr.n[:, None]
    bon_ok = elig_n & (pr.bon["kl"] <= logn[:, None] - trust_margin)
    cols.add(
        "base_reward",
        pr.mean[:, None],
        np.ones((P, 1), bool),
        np.ones((P, 1), bool),
        None,
        _jk_mean_var(pr),
        single=True,
    )
    u_var = _u_jackknife_var(pr) if method == "jackknife" else None
    cols.add("bon_reward", pr.bon["reward"], elig_n, bon_ok, None, u_var, single=(ns == 1))
    cols.add("bon_reward_plugin", pr.bon["plugin"], elig_n, bon_ok, None, None)
    # BoN KL: trusted for N <= n_x / KL_N_RATIO (N = 1: the KL is exactly 0), and where the
    # samples have seen the law's levels: Good–Turing's unseen-mass estimate n_1/n_x (the share of
    # rewards seen once) at most MAX_UNSEEN.  Without ties every reward is a level of its own, the
    # plug-in KL is the same biased number for every prompt, and no correction is reliable.
    kl_ok = bon_ok & (
        ((ns[None, :] * KL_N_RATIO <= pr.n[:, None]) & (pr.singletons[:, None] <= MAX_UNSEEN))
        | (ns[None, :] == 1)
    )
    cols.add("bon_kl", pr.bon["kl"], elig_n, kl_ok, pr.bon["kl_bias"], pr.bon["kl_jkvar"])
    cols.add("bon_win", pr.bon["win"], elig_n, bon_ok, None, None)
    if pr.has_gold:
        cols.add("bon_gold", pr.bon["gold"], elig_n, bon_ok, None, None)
        cols.add("bon_gold_plugin", pr.bon["gold_plugin"], elig_n, bon_ok, None, None)
    if lams.size:
        t_ok = (tl["kl"] <= logn[:, None] - trust_margin) & (tl["ess"] >= min_ess) & (tl["khat"] <= k_max)
        t_all = np.ones_like(t_ok)
        cols.add("tilt_reward", tl["reward"], t_all, t_ok, tl["reward_bias"], tl.get("reward_jkvar"))
        # the per-prompt tilt KL is right-skewed: a t interval over < 30 prompts covered 87%
        cols.add("tilt_kl", tl["kl"], t_all, t_ok, tl["kl_bias"], tl.get("kl_jkvar"), t_ok=False)
        if pr.has_gold:
            cols.add("tilt_gold", tl["gold"], t_all, t_ok, tl["gold_bias"], tl.get("gold_jkvar"))
        tilt_ess = np.min(tl["ess"], axis=0)
        del tl, t_ok, t_all
    f_corr = None
    if budgets.size:
        with np.errstate(divide="ignore", invalid="ignore"):
            lam_b = f_lam[None, :]
            live = np.isfinite(lam_b) & (lam_b > 0)
            # psi_x: prompt x's share of R*_avg to first order in the shared lam
            psi = np.where(live, fl["reward"] - (fl["kl"] - budgets[None, :]) / lam_b, fl["reward"])
            f_corr = np.where(
                live,
                fl["reward_bias"] - fl["kl_bias"] / lam_b,
                np.where(np.isfinite(lam_b), fl["reward_bias"], 0.0),
            )
        f_ok = (
            (fl["kl"] <= logn[:, None] - trust_margin)
            & (fl["ess"] >= min_ess)
            & (fl["khat"] <= k_max)
            & np.isfinite(lam_b)
        )
        cols.add("frontier", psi, np.ones_like(f_ok), f_ok, f_corr, fl.get("frontier_var"))
        del fl, psi, f_ok
    for name, pv in pol.items():
        for key in ("kl", "reward", "kl_to_optimal", "gap") + (("gold",) if "gold" in pv else ()):
            cols.add(
                f"policy:{name}:{key}",
                pv[key][:, None],
                pv["mask"][:, None],
                pv["ok"][:, None],
                pv.get(key + "_bias"),
                pv.get(key + "_var"),
            )

    # ---- intervals ----------------------------------------------------------------------
    conf = float(confidence)
    point = cols.point()
    raw = cols.point(raw=True)
    if budgets.size:
        # the frontier's plug-in point is the exact solve, not the mean of its linearisation
        sl = cols.slices["frontier"]
        point[sl] = f_rew - cols.mean_correction(sl)
        raw[sl] = f_rew
    lo = np.full(point.size, np.nan)
    hi = np.full(point.size, np.nan)
    se = cols.se(method)
    if method == "jackknife":
        v = cols.jkvar()
        ok = np.isfinite(v)
        tq = _t_quantile(0.5 + conf / 2, max(int(pr.n[0]) - 1, 1))
        lo = np.where(ok, point - tq * np.sqrt(np.where(ok, v, 0.0)), np.nan)
        hi = np.where(ok, point + tq * np.sqrt(np.where(ok, v, 0.0)), np.nan)
        desc = (
            f"within-prompt jackknife, Student-t with n − 1 = {int(pr.n[0]) - 1} d.o.f. "
            f"(one prompt: no prompt-level spread to resample)"
        )
    elif method == "t":
        lo, hi, _ = _t_interval(cols.values, cols.mask, conf)
        if budgets.size:  # centre the linearised interval on the exact solve
            sl = cols.slices["frontier"]
            half = 0.5 * (hi[sl] - lo[sl])
            lo[sl], hi[sl] = point[sl] - half, point[sl] + half
        desc = f"Student-t over {P} prompts: each prompt's estimate computed once, prompts resampled"
    elif method == "bootstrap":
        lo, hi, desc = _bootstrap(cols, fr, budgets, f_corr, P, n_boot, conf, seed, tick)
    else:
        desc = "none requested"
    trusted = cols.trusted(se, method)

    # ---- tables -------------------------------------------------------------------------
    def pick(name):
        sl = cols.slices[name]
        return point[sl], lo[sl], hi[sl], trusted[sl]

    def plug(name):
        return raw[cols.slices[name]]

    bon_data = {"n": ns}
    v, l_, h_, t_ = pick("bon_reward")
    bon_data.update(reward=v, reward_lo=l_, reward_hi=h_)
    bon_data["reward_plugin"] = pick("bon_reward_plugin")[0]
    kv, kl_, kh_, kt_ = pick("bon_kl")
    # the correction is computed only where it can be trusted (N <= n_x / KL_N_RATIO)
    corrected = np.all(np.isfinite(pr.bon["kl_bias"]) | ~elig_n, axis=0)
    bon_data.update(
        kl=plug("bon_kl"),
        kl_debiased=np.where(corrected, np.maximum(kv, 0.0), np.nan),
        kl_lo=np.where(corrected, np.maximum(kl_, 0.0), np.nan),
        kl_hi=np.where(corrected, kh_, np.nan),
        kl_bound=np.log(ns) - (ns - 1.0) / ns,
    )
    bon_data["win_rate"] = pick("bon_win")[0]
    if pr.has_gold:
        gv, gl, gh, _ = pick("bon_gold")
        bon_data.update(gold=gv, gold_lo=gl, gold_hi=gh, gold_plugin=pick("bon_gold_plugin")[0])
    bon_data["prompts"] = elig_n.sum(axis=0)
    bon_data["reward_trusted"] = t_
    bon_data["kl_trusted"] = kt_
    bon_data["trusted"] = t_ & kt_
    bon = Table(bon_data)

    tilt_data = {"lam": lams}
    if lams.size:
        v, l_, h_, t_ = pick("tilt_reward")
        kv, kl_, kh_, kt_ = pick("tilt_kl")
        tilt_data.update(
            kl=plug("tilt_kl"),
            kl_debiased=np.maximum(kv, 0.0),
            kl_lo=np.maximum(kl_, 0.0),
            kl_hi=kh_,
            reward=plug("tilt_reward"),
            reward_debiased=v,
            reward_lo=l_,
            reward_hi=h_,
            gain=plug("tilt_reward") - point[cols.slices["base_reward"]][0],
            ess=tilt_ess,
            reward_trusted=t_,
            kl_trusted=kt_,
            trusted=t_ & kt_,
        )
        if pr.has_gold:
            gv, gl, gh, _ = pick("tilt_gold")
            tilt_data.update(gold=plug("tilt_gold"), gold_debiased=gv, gold_lo=gl, gold_hi=gh)
    tilt = Table(tilt_data)

    f_data = {"kl": budgets}
    if budgets.size:
        v, l_, h_, t_ = pick("frontier")
        with np.errstate(divide="ignore"):
            beta = 1.0 / f_lam
        f_data.update(
            reward=plug("frontier"),
            reward_debiased=v,
            reward_lo=l_,
            reward_hi=h_,
            lam=f_lam,
            beta=beta,
            saturated=f_sat,
            trusted=t_ & ~f_sat,
        )
    frontier = Table(f_data)
    eq_rew = _equal_budget(pr, fr, budgets) if budgets.size else np.zeros(0)
    frontier_equal = Table({"kl": budgets, "reward": eq_rew})

    pol_tables = {}
    for name, pv in pol.items():
        row = {}
        for key in ("kl", "reward", "kl_to_optimal", "gap") + (("gold",) if "gold" in pv else ()):
            v, l_, h_, t_ = pick(f"policy:{name}:{key}")
            if key == "kl_to_optimal" and pv["saturated"]:  # the optimum is p_hat(. | top)
                v = l_ = h_ = np.array([np.inf])
                t_ = np.array([False])
                row["kl_to_optimal_plugin"] = np.array([np.inf])
            elif key == "kl_to_optimal":  # a KL: negative values are sampling noise
                row["kl_to_optimal_plugin"] = plug(f"policy:{name}:{key}")
                v, l_ = np.maximum(v, 0.0), np.maximum(l_, 0.0)
                h_ = np.maximum(h_, 0.0)
            row.update({key: v, key + "_lo": l_, key + "_hi": h_})
            row[key + "_trusted"] = t_
        row.update(
            optimal_reward=np.array([pv["optimal_reward"]]),
            optimal_reward_debiased=np.array([pv["optimal_reward_debiased"]]),
            lam=np.array([pv["lam"]]),
            bon_n_same_kl=np.array([_bon_n_same_kl(pr, pv["mask"], float(row["kl"][0]))]),
            prompts=np.array([int(pv["mask"].sum())]),
            saturated=np.array([pv["saturated"]]),
            trusted=row["kl_trusted"] & row["reward_trusted"] & row["kl_to_optimal_trusted"],
        )
        pol_tables[name] = Table(row)

    per = {"prompt": np.array(pr.ids, dtype=object), "n": pr.n, "mean_reward": pr.mean}
    for i, N in enumerate(ns):
        per[f"bon{N}_reward"] = pr.bon["reward"][:, i]
        per[f"bon{N}_kl"] = pr.bon["kl"][:, i]
    per_prompt = Table(per)

    methods = {k: desc for k in ("bon", "tilt", "frontier")}
    corrected = (
        "; intervals are for the true values, built on jackknife-corrected per-prompt "
        "estimates (columns *_debiased); plug-in values are shown beside them"
    )
    methods["tilt"] = desc + corrected
    methods["bon"] = desc + (
        "; the KL interval is for the true KL, built on jackknife-corrected "
        "per-prompt plug-in KLs (kl_debiased)"
    )
    methods["frontier"] = (
        desc
        + corrected
        + (
            "; linearisation psi_x = R_x(λ) − (KL_x(λ) − Δ)/λ"
            if method in ("t", "jackknife")
            else "; λ re-solved in every replication"
        )
    )
    for name in pol_tables:
        methods[f"policy:{name}"] = desc
    if method == "jackknife":
        methods["bon"] += "; plug-in BoN reward, win rate and gold columns have no within-prompt interval"
    info = {
        "prompts": P,
        "samples": int(pr.n.sum()),
        "n_min": int(pr.n.min()),
        "n_median": n_med,
        "n_max": int(pr.n.max()),
        "interval": method,
        "n_boot": n_boot,
        "seed": seed,
        "confidence": conf,
        "trust_margin": trust_margin,
        "min_ess": min_ess,
        "reward_sd": pr.sd_pool * pr.scale,
        "gold": bool(pr.has_gold),
        "kl_trust_limit_median": float(np.log(n_med) - trust_margin),
    }
    if pr.scale != 1.0:  # back from the units of the analysis
        for tab in (bon, tilt, frontier, frontier_equal, per_prompt, *pol_tables.values()):
            _unscale(tab, pr.scale)
    return Analysis(
        bon=bon,
        tilt=tilt,
        frontier=frontier,
        frontier_equal=frontier_equal,
        policies=pol_tables,
        per_prompt=per_prompt,
        methods=methods,
        excluded=pr.excluded,
        info=info,
    )


def _newton_step(st, budgets, lam, rew):
    """One Newton step on exact evaluations ``st`` at ``lam`` towards ``mean KL(lam) = Δ``.

    The error after a step is of the order of the square of the one before;
    the reward is moved to first order, ``R + Var_phi(r) * step``
    (``dR/dlam = Var``, ``dKL/dlam = lam Var``).
    """
    lam, rew = lam.copy(), rew.copy()
    K, R, V = st["kl"].mean(axis=0), st["reward"].mean(axis=0), st["var"].mean(axis=0)
    live = np.isfinite(lam) & (lam > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        step = (budgets - K) / (lam * V)
    ok = live & np.isfinite(step) & (np.abs(step) < 0.5 * lam)
    with np.errstate(invalid="ignore", over="ignore"):  # values where not ok are not used
        rew = np.where(live, np.where(ok, R + V * step, R), rew)
        lam = np.where(ok, lam + step, lam)
    return lam, rew


def _equal_budget(pr, fr, budgets, steps=1):
    """Every prompt given budget Δ: ``mean_x R*_x(Δ)`` (a lower curve than the average-KL optimum)."""
    lam = fr.lam[None, :]
    ustar = np.empty((pr.P, budgets.size))
    rstar = np.empty((pr.P, budgets.size))
    step = max(1, (1 << 20) // (fr.lam.size + budgets.size))  # prompts at once: bounded temporaries
    for s0 in range(0, pr.P, step):
        blk = slice(s0, s0 + step)
        V = fr.V[blk]
        ustar[blk], rstar[blk] = _hermite_solve(fr.u, fr.K[blk], lam * lam * V, fr.R[blk], lam * V, budgets)
    b = budgets[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        lam_small = np.sqrt(2.0 * b / fr.var0[:, None])
    lam_x = np.where(np.isneginf(ustar), lam_small, np.exp(ustar))
    with np.errstate(invalid="ignore"):
        rstar = np.where(np.isneginf(ustar), fr.mean0[:, None] + lam_small * fr.var0[:, None], rstar)
    # a prompt with one reward level has nothing to tilt: KL 0 at any lam (k_top = 0: saturated)
    sat = np.isposinf(ustar) | (b >= fr.k_top[:, None])
    live = ~sat & (b > 0) & np.isfinite(lam_x) & (lam_x > 0)
    for _ in range(steps):  # Newton on exact evaluations, one lam per (prompt, budget)
        st = pr.tilt_at(np.where(live, lam_x, 0.0), jackknife=False, columns=("reward", "kl", "var"))
        with np.errstate(divide="ignore", invalid="ignore"):
            step = (b - st["kl"]) / (lam_x * st["var"])
        ok = live & np.isfinite(step) & (np.abs(step) < 0.5 * lam_x)
        with np.errstate(invalid="ignore", over="ignore"):  # values where not ok are not used
            rstar = np.where(live, np.where(ok, st["reward"] + st["var"] * step, st["reward"]), rstar)
            lam_x = np.where(ok, lam_x + step, lam_x)
    rstar = np.where(sat, fr.r_top[:, None], rstar)
    rstar = np.where(b <= 0, fr.mean0[:, None], rstar)
    return rstar.mean(axis=0)


def _bon_n_same_kl(pr, mask, kl):
    """The real ``N`` whose plug-in BoN KL, averaged over the masked prompts, equals ``kl``."""
    from scipy.optimize import brentq

    if not np.isfinite(kl) or kl <= 0:
        return 1.0
    rows = [(n, r[np.isin(rows_, np.flatnonzero(mask))]) for n, rows_, r, _ in pr.groups]
    rows = [(n, r) for n, r in rows if r.shape[0]]
    total = sum(r.shape[0] for _, r in rows)

    def mean_kl(log_n):
        acc = 0.0
        for _n, r in rows:
            acc += _k.bon_plugin(r, np.array([np.exp(log_n)]))["kl"][:, 0].sum()
        return acc / total - kl

    hi = np.log(float(min(n for n, _ in rows)))
    if mean_kl(hi) < 0:
        return math.inf  # beyond what best-of-N on these samples can reach
    return float(np.exp(brentq(mean_kl, 0.0, hi, xtol=1e-10)))


def _jk_mean_var(pr):
    v = np.empty((pr.P, 1))
    for n, rows, r, _ in pr.groups:
        v[rows, 0] = np.var(r, axis=1, ddof=1) / n
    return v


def _u_jackknife_var(pr):
    """Jackknife variance of ``U_N`` (one prompt; NaN where ``N > n - 1``)."""
    out = np.full((pr.P, pr.ns.size), np.nan)
    for n, rows, r, _ in pr.groups:
        for i, N in enumerate(pr.ns):
            if N <= n - 1:
                loo = _k.unbiased_jackknife(r, int(N))
                mu = loo.mean(axis=1, keepdims=True)
                out[rows, i] = (n - 1.0) / n * np.sum((loo - mu) ** 2, axis=1)
    return out


def _policy_prompt_values(name, ps, pr, fr, trust_margin, min_ess):
    """Per-prompt KL, reward and distance to the optimum of one policy's samples."""
    P = pr.P
    mask = np.zeros(P, dtype=bool)
    kl = np.zeros(P)
    rew = np.zeros(P)
    gold = np.zeros(P) if getattr(ps, "gold", None) is not None else None
    kl_var, rew_var = np.full(P, np.nan), np.full(P, np.nan)
    cnt = np.zeros(P)
    samples = {}
    unknown = [p for p in ps.prompts if p not in pr.index]
    if unknown:
        raise ValueError(
            f"policy {name!r}: prompt {unknown[0]!r} is not among the base prompts ({len(unknown)} unknown)"
        )
    for p_id, r, lp, rlp in zip(ps.prompts, ps.rewards, ps.logprobs, ps.ref_logprobs):
        x = pr.index[p_id]
        r = r / pr.scale  # the units of the analysis (a power of two: exact)
        mask[x] = True
        lr = lp - rlp
        kl[x] = lr.mean()
        rew[x] = r.mean()
        cnt[x] = r.size
        if r.size >= 2:
            kl_var[x] = np.var(lr, ddof=1) / r.size
            rew_var[x] = np.var(r, ddof=1) / r.size
        samples[x] = (r, lr)
    if gold is not None:
        for p_id, g in zip(ps.prompts, ps.gold):
            gold[pr.index[p_id]] = g.mean()
    # the optimum over the policy's prompts at the policy's KL
    w = mask[None, :].astype(float)
    kl_pol = float(kl[mask].mean())
    lam, rstar, sat = fr.solve(w, np.array([kl_pol]))
    lam_v = float(lam[0, 0])
    opt_reward = float(rstar[0, 0])
    st = None
    cols = ("logmgf", "kl", "ess", "frontier_var", "reward", "var", "reward_bias", "kl_bias", "khat")
    if np.isfinite(lam_v) and lam_v > 0:
        for _ in range(3):  # Newton on exact evaluations over the policy's prompts
            st = pr.tilt_at(np.array([lam_v]), jackknife=False, columns=("kl", "reward", "var"))
            K, R, V = (st[c][mask, 0].mean() for c in ("kl", "reward", "var"))
            step = (kl_pol - K) / (lam_v * V) if V > 0 else 0.0
            if not abs(step) < 0.5 * lam_v:
                opt_reward = R
                break
            opt_reward = R + V * step
            lam_v += step
        st = pr.tilt_at(
            np.array([lam_v]), jackknife=True, columns=cols, trust=(trust_margin, min_ess), column_rule=False
        )  # trust is over the policy's prompts only
    saturated = bool(np.isinf(lam_v))
    lam_use = lam_v if np.isfinite(lam_v) else 0.0
    lmgf = st["logmgf"][:, 0] if st is not None else np.zeros(P)
    d = np.where(mask, kl - lam_use * rew + lmgf, 0.0)
    # Λ = λR − KL on the base samples: its jackknife bias is λ b_R − b_KL
    d_bias = (
        np.where(mask, lam_use * st["reward_bias"][:, 0] - st["kl_bias"][:, 0], 0.0)
        if st is not None
        else np.zeros(P)
    )
    d_var = np.full(P, np.nan)
    for x, (r, lr) in samples.items():
        if r.size >= 2:
            # pi's samples and the base samples are independent: the variances add
            base_var = lam_use**2 * st["frontier_var"][x, 0] if st is not None else 0.0
            d_var[x] = np.var(lr - lam_use * r, ddof=1) / r.size + base_var
    opt_corr = 0.0
    if st is not None:
        opt_corr = float(np.nanmean((st["reward_bias"][:, 0] - st["kl_bias"][:, 0] / lam_use)[mask]))
    logn = np.log(pr.n.astype(float))
    ok = np.ones(P, dtype=bool)
    if st is not None:
        ok = (
            (st["kl"][:, 0] <= logn - trust_margin)
            & (st["ess"][:, 0] >= min_ess)
            & (st["khat"][:, 0] <= _k.khat_threshold(pr.n))
            & np.isfinite(d_bias)
        )
    # gap_x = R*_x - r_x: prompt x's share of R*_avg(KL_pi) - E_pi r to first order in the shared
    # lam (psi_x with the policy's own per-prompt KL as budget; its mean is the exact solve's gap)
    gap = np.zeros(P)
    gap_bias = np.zeros(P)
    gap_var = np.full(P, np.nan)
    if st is not None and lam_v > 0 and np.isfinite(lam_v):
        with np.errstate(invalid="ignore", divide="ignore"):
            opt_x = st["reward"][:, 0] - (st["kl"][:, 0] - kl) / lam_use
        gap = np.where(mask, opt_x - rew, 0.0)
        gap_bias = np.where(mask, st["reward_bias"][:, 0] - st["kl_bias"][:, 0] / lam_use, 0.0)
        for x, (r, lr) in samples.items():
            if r.size >= 2:
                gap_var[x] = np.var(lr / lam_use - r, ddof=1) / r.size + st["frontier_var"][x, 0]
    elif saturated:  # the optimum at that KL is r_max of each prompt's samples
        gap = np.where(mask, fr.r_top - rew, 0.0)
        gap_var = rew_var.copy()
    else:  # lam = 0 (KL 0): the optimum at that KL is the base mean
        gap = np.where(mask, pr.mean - rew, 0.0)
        gap_var = rew_var + _jk_mean_var(pr)[:, 0]
    if saturated:
        # a KL beyond what the base samples can show (the tilt of p_hat saturates at
        # log n - log #top): no estimate of the optimum there is trusted, and the optimal policy
        # p_hat(. | top) is at infinite KL from a policy that also reaches lower rewards
        ok = np.zeros(P, dtype=bool)
    out = {
        "mask": mask,
        "saturated": saturated,
        "kl": kl,
        "reward": rew,
        "kl_to_optimal": d,
        "kl_var": kl_var,
        "gap": gap,
        "gap_bias": gap_bias,
        "gap_var": gap_var,
        "reward_var": rew_var,
        "kl_to_optimal_var": d_var,
        "kl_to_optimal_bias": d_bias,
        "ok": ok & mask,
        "optimal_reward": opt_reward,
        "optimal_reward_debiased": opt_reward - opt_corr,
        "lam": lam_v,
    }
    if gold is not None:
        out["gold"] = gold
    return out


class _Columns:
    """Per-prompt values of every linear statistic: masks, per-prompt trust, corrections, variances.

    A column's values are the per-prompt estimates minus their jackknife bias
    ``correction`` when one is given (a prompt whose correction is undefined
    keeps its plug-in value and is untrusted).
    """

    def __init__(self, P):
        self.P = P
        self.parts = []
        self.slices = {}
        self.size = 0

    def add(self, name, values, mask, ok, correction, jkvar, single=False, t_ok=True):
        raw = np.asarray(values, dtype=float)
        S = raw.shape[1]
        ok = np.asarray(ok, bool)
        corr = None
        if correction is not None:
            corr = np.asarray(correction, float).reshape(self.P, S)
            defined = np.isfinite(corr)
            ok = ok & defined
            corr = np.where(defined, corr, 0.0)
        # (P, S) arrays are kept only where they carry information: memory at 10^5 prompts
        self.parts.append(
            dict(
                values=raw if corr is None else raw - corr,
                corr=corr,
                mask=np.asarray(mask, bool) & np.isfinite(raw),
                ok=ok,
                jkvar=None if jkvar is None else np.asarray(jkvar, float).reshape(self.P, S),
                single=np.broadcast_to(np.asarray(single, bool), (S,)),
                t_ok=np.broadcast_to(np.asarray(t_ok, bool), (S,)),
            )
        )
        self.slices[name] = slice(self.size, self.size + S)
        self.size += S

    def _part(self, p, key):
        v = p["values"]
        if key == "corr":
            return np.zeros(v.shape) if p["corr"] is None else p["corr"]
        if key == "raw":
            return v if p["corr"] is None else v + p["corr"]
        if key == "jkvar":
            return np.full(v.shape, np.nan) if p["jkvar"] is None else p["jkvar"]
        return p[key]

    def _cat(self, key):
        return np.concatenate([self._part(p, key) for p in self.parts], axis=1)

    @property
    def values(self):
        return np.where(self.mask, self._cat("values"), np.nan)

    @property
    def mask(self):
        return self._cat("mask")

    def _each(self, fn):
        """``fn(part)`` (a ``(S_part,)`` array) for every part, concatenated: no ``(P, S)`` temporaries."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.concatenate([fn(p) for p in self.parts])

    def point(self, raw=False):
        """Means over the prompts each column averages (corrected, or the plug-in ``raw`` ones)."""
        key = "raw" if raw else "values"
        return self._each(
            lambda p: np.where(p["mask"], self._part(p, key), 0.0).sum(axis=0) / p["mask"].sum(axis=0)
        )

    def mean_correction(self, sl):
        return self._each(
            lambda p: np.where(p["mask"], self._part(p, "corr"), 0.0).sum(axis=0) / p["mask"].sum(axis=0)
        )[sl]

    def jkvar(self):
        """Within-prompt variance of the (single) prompt's estimate."""
        return np.where(self.mask, self._cat("jkvar"), np.nan)[0]

    def se(self, method):
        if method == "jackknife":
            return np.sqrt(self.jkvar())
        return self._each(lambda p: _t_interval(p["values"], p["mask"], 0.95)[2])

    def trusted(self, se, method):
        """The trust rule (``TRUST_RULE``) for every column."""
        bad = self._each(lambda p: (p["mask"] & ~p["ok"]).sum(axis=0))
        cnt = self._each(lambda p: p["mask"].sum(axis=0))
        share_ok = (cnt > 0) & (bad <= 0.05 * cnt)
        out = share_ok & np.isfinite(se)
        if method == "jackknife":  # one prompt: only the mean's interval covers (coverage study)
            out &= np.concatenate([p["single"] for p in self.parts])
        if method == "t":  # a few prompts: right-skewed per-prompt values undercover
            out &= np.concatenate([p["t_ok"] for p in self.parts])
        return out


def _bootstrap(cols, fr, budgets, f_corr, P, n_boot, conf, seed, tick):
    """Prompt bootstrap (:func:`.resample.prompt_bootstrap`; BCa up to 2000 prompts).

    Linear columns are weighted means of the per-prompt values; the frontier
    re-solves the shared λ on every replication's mean curves and subtracts the
    replication's mean jackknife correction.
    """
    vals = np.where(cols.mask, cols._cat("values"), 0.0)
    mask = cols.mask
    # a column over every prompt has the replication's total weight as denominator: counts are
    # integers, so c.sum(axis=1) equals c @ mask exactly; only partial columns need the product
    part = np.flatnonzero(~mask.all(axis=0))
    mask_part = mask[:, part].astype(float)
    f_sl = cols.slices.get("frontier")

    def statistic(c):
        den = np.repeat(c.sum(axis=1, keepdims=True), vals.shape[1], axis=1)
        if part.size:
            den[:, part] = c @ mask_part
        with np.errstate(invalid="ignore", divide="ignore"):
            o = (c @ vals) / den
        if f_sl is not None:
            _, rstar, _ = fr.solve(c, budgets)
            o[:, f_sl] = rstar - (c @ f_corr) / c.sum(axis=1, keepdims=True)
        return o

    bca = P <= MAX_PROMPTS_BCA
    res = _rs.prompt_bootstrap(
        statistic,
        P,
        n_resamples=n_boot,
        confidence=conf,
        seed=seed,
        method="BCa" if bca else "percentile",
        progress=lambda d, t: tick("bootstrap over prompts", d, t),
    )
    lo, hi = res.low, res.high
    # BCa is undefined where the replications do not vary (e.g. N = 1 plug-in KL): percentile there
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plo, phi = np.nanquantile(res.distribution, [(1 - conf) / 2, (1 + conf) / 2], axis=-1)
    bad = ~np.isfinite(lo) | ~np.isfinite(hi)
    lo = np.where(bad, plo, lo)
    hi = np.where(bad, phi, hi)
    desc = (
        f"prompt bootstrap ({'BCa' if bca else 'percentile'}, {n_boot} replications over {P} "
        f"prompts; scipy.stats.bootstrap's resamples and BCa on prompt weights): each prompt's "
        f"estimate computed once, prompts resampled"
    )
    return lo, hi, desc
