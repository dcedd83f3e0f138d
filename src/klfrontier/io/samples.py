"""Reward samples grouped by prompt: :class:`SampleSet` and the grouping by prompt code."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

__all__ = ["SampleSet"]


def _check_group(pid, rewards, extras):
    """Validate one prompt's rewards and its optional per-sample arrays.

    ``extras`` is a list of ``(name, values or None, nonpositive)``; returns the
    rewards and the extras as float arrays (``None`` kept).
    """
    r = np.asarray(rewards, dtype=float)
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"rewards of prompt {pid!r} must be a non-empty 1-D array")
    if not np.isfinite(r).all():
        raise ValueError(f"rewards of prompt {pid!r} contain NaN or inf")
    out = [
        None
        if values is None
        else _per_sample(
            values,
            r.shape,
            nonpositive,
            subject=f"{name} of prompt {pid!r}",
            verb="contain",
            mismatch=f"{name} of prompt {pid!r} do not match its rewards in length",
        )
        for name, values, nonpositive in extras
    ]
    return r, out


def _per_sample(values, shape, nonpositive, *, subject, verb, mismatch, positive_note=""):
    """One optional per-sample array as floats of ``shape``: finite, and ``<= 0`` when
    ``nonpositive``; else a ValueError (``"{subject} {verb} NaN or inf"``, ...)."""
    v = np.asarray(values, dtype=float)
    if v.shape != shape:
        raise ValueError(mismatch)
    if not np.isfinite(v).all():
        raise ValueError(f"{subject} {verb} NaN or inf")
    if nonpositive and (v > 0).any():
        raise ValueError(f"{subject} {verb} positive values{positive_note}")
    return v


@dataclass(eq=False)
class SampleSet:
    """Reward samples grouped by prompt.

    Parameters
    ----------
    prompts : list of str
        Prompt ids, in order of first appearance in the source.
    rewards : list of (n_i,) ndarray
        Rewards of each prompt's samples (finite), aligned with ``prompts``.
    logprobs : list of (n_i,) ndarray, optional
        Log-probabilities of the samples (finite, ``<= 0``): under the
        reference for reference samples, under the generating policy for a
        policy's samples.
    texts : list of list of str, optional
        The responses (only when read with ``keep_text=True``).
    bad_rows : list of (file, line, reason)
        The first :data:`MAX_BAD_ROWS` rows skipped while reading.
    n_bad_rows : int
        How many rows were skipped in all.
    source : str, optional
        The file read.
    gold : list of (n_i,) ndarray, optional
        A second reward per sample (finite), the gold reward, while
        ``rewards`` is the proxy used for selection.
    ref_logprobs : list of (n_i,) ndarray, optional
        For a policy's samples: log-probabilities under the reference
        (finite, ``<= 0``).

    Examples
    --------
    >>> s = SampleSet.from_dict({"a": [0.0, 1.0, 1.0], "b": [2.0]})
    >>> s.prompts, s.n_samples, s.counts.tolist()
    (['a', 'b'], 4, [3, 1])
    >>> s.groups["a"].tolist()
    [0.0, 1.0, 1.0]
    >>> g = SampleSet.from_dict({"a": {"reward": [0.0, 1.0], "gold": [0.5, 0.25]}})
    >>> g.has_gold, g.has_ref_logprobs, g.gold[0].tolist()
    (True, False, [0.5, 0.25])
    """

    prompts: list
    rewards: list
    logprobs: list | None = None
    texts: list | None = None
    bad_rows: list = field(default_factory=list)
    n_bad_rows: int = 0
    source: str | None = None
    gold: list | None = None
    ref_logprobs: list | None = None

    # per-sample numeric arrays besides the rewards: (attribute, must be <= 0)
    _EXTRAS = (("gold", False), ("logprobs", True), ("ref_logprobs", True))

    @classmethod
    def from_validated(
        cls,
        prompts,
        rewards,
        *,
        logprobs=None,
        texts=None,
        bad_rows=(),
        n_bad_rows=0,
        source=None,
        gold=None,
        ref_logprobs=None,
    ):
        """Build a sample set from values that are already valid, without checking them again.

        For readers whose row rule already validated every value: prompt
        ids are distinct strings, each prompt has one non-empty float array
        of finite rewards (and of finite gold, of log-probabilities
        ``<= 0``, of texts where given). None of the constructor's checks is
        repeated and the arrays are kept as given, not copied; any other
        source belongs in the constructor or :meth:`from_dict`.

        Parameters
        ----------
        prompts, rewards, logprobs, texts, bad_rows, n_bad_rows, source, gold, ref_logprobs
            As the attributes of the same names.

        Returns
        -------
        SampleSet

        Examples
        --------
        >>> import numpy as np
        >>> s = SampleSet.from_validated(["a"], [np.array([0.0, 1.0])])
        >>> s.prompts, s.n_samples, s.has_gold
        (['a'], 2, False)
        """
        self = cls.__new__(cls)
        self.prompts, self.rewards, self.logprobs, self.texts = prompts, rewards, logprobs, texts
        self.bad_rows, self.n_bad_rows, self.source = list(bad_rows), n_bad_rows, source
        self.gold, self.ref_logprobs = gold, ref_logprobs
        return self

    def __post_init__(self):
        self.prompts = [str(p) for p in self.prompts]
        if len(set(self.prompts)) != len(self.prompts):
            raise ValueError("prompts contains duplicate ids")
        if len(self.rewards) != len(self.prompts):
            raise ValueError("rewards must have one array per prompt")
        for name in ("gold", "logprobs", "ref_logprobs", "texts"):
            extra = getattr(self, name)
            if extra is not None and len(extra) != len(self.prompts):
                raise ValueError(f"{name} must have one entry per prompt")
        per_prompt = [
            [
                (name, None if getattr(self, name) is None else getattr(self, name)[i], neg)
                for name, neg in self._EXTRAS
            ]
            for i in range(len(self.prompts))
        ]
        checked = [_check_group(p, r, ex) for p, r, ex in zip(self.prompts, self.rewards, per_prompt)]
        self.rewards = [c[0] for c in checked]
        for k, (name, _) in enumerate(self._EXTRAS):
            if getattr(self, name) is not None:
                setattr(self, name, [c[1][k] for c in checked])
        if self.texts is not None:
            self.texts = [list(t) for t in self.texts]
            for p, t, r in zip(self.prompts, self.texts, self.rewards):
                if len(t) != r.size:
                    raise ValueError(f"texts of prompt {p!r} do not match its rewards in length")

    # ---------------------------------------------------------------- builders
    @classmethod
    def from_dict(cls, mapping):
        """Build from ``{prompt_id: rewards}`` or ``{prompt_id: {"reward": ..., ...}}``.

        The nested form has ``"reward"`` and optionally ``"gold"``,
        ``"logprob"``, ``"ref_logprob"`` and ``"text"``.

        Either every value is a mapping or none is; ``gold``, ``logprob``,
        ``ref_logprob`` and ``text`` must each be given for every prompt or
        for none.
        """
        if not isinstance(mapping, Mapping) or not mapping:
            raise ValueError("samples must be a non-empty mapping prompt_id -> rewards")
        values = list(mapping.values())
        nested = [isinstance(v, Mapping) for v in values]
        if any(nested) and not all(nested):
            raise ValueError("give every prompt either a rewards array or a mapping, not a mix")
        if not all(nested):
            return cls(list(mapping), [np.asarray(v, dtype=float) for v in values])
        optional = ("gold", "logprob", "ref_logprob", "text")
        for v in values:
            unknown = set(v) - {"reward", *optional}
            if unknown or "reward" not in v:
                raise ValueError(
                    "each prompt's mapping needs 'reward' and may have "
                    + ", ".join(repr(k) for k in optional)
                )
        opt = {}
        for key in optional:
            have = sum(key in v for v in values)
            if have and have != len(values):
                raise ValueError(f"give '{key}' for every prompt or for none")
            opt[key] = [v[key] for v in values] if have else None
        return cls(
            list(mapping),
            [v["reward"] for v in values],
            logprobs=opt["logprob"],
            texts=opt["text"],
            gold=opt["gold"],
            ref_logprobs=opt["ref_logprob"],
        )

    @classmethod
    def from_columns(cls, prompt_id, reward, logprob=None, text=None, gold=None, ref_logprob=None):
        """Group flat per-sample columns by prompt (order of first appearance).

        Each optional column has one entry per sample; ``gold`` must be
        finite, ``logprob`` and ``ref_logprob`` finite and ``<= 0``.

        >>> SampleSet.from_columns(["x", "y", "x"], [1.0, 2.0, 3.0]).groups["x"].tolist()
        [1.0, 3.0]
        >>> SampleSet.from_columns(["x", "y", "x"], [1.0, 2.0, 3.0], gold=[0.0, 1.0, 2.0]).gold[0].tolist()
        [0.0, 2.0]
        """
        pids = [str(p) for p in prompt_id]
        r = np.asarray(reward, dtype=float)
        if r.ndim != 1 or r.size != len(pids):
            raise ValueError("prompt_id and reward must be 1-D and of equal length")
        codes, prompts = encode_ids(pids)
        flat = {
            name: None
            if values is None
            else _per_sample(
                values,
                r.shape,
                nonpositive,
                subject=name,
                verb="contains",
                mismatch=f"{name} must have the length of reward",
                positive_note="; a log-probability must be <= 0",
            )
            for name, values, nonpositive in (
                ("gold", gold, False),
                ("logprob", logprob, True),
                ("ref_logprob", ref_logprob, True),
            )
        }
        txt = None if text is None else list(text)
        if txt is not None and len(txt) != r.size:
            raise ValueError("text must have the length of reward")
        (r_g, g_g, lp_g, ref_g), t_g = group_by_code(
            codes, len(prompts), [r, flat["gold"], flat["logprob"], flat["ref_logprob"]], txt
        )
        return cls(prompts, r_g, logprobs=lp_g, texts=t_g, gold=g_g, ref_logprobs=ref_g)

    # ---------------------------------------------------------------- views
    @property
    def n_prompts(self) -> int:
        """Number of prompts."""
        return len(self.prompts)

    @property
    def counts(self):
        """Samples per prompt, ``(n_prompts,)`` int array."""
        return np.array([r.size for r in self.rewards], dtype=np.int64)

    @property
    def n_samples(self) -> int:
        """Total number of samples."""
        return int(self.counts.sum())

    @property
    def has_logprobs(self) -> bool:
        """Whether the samples carry log-probabilities (``logprobs``)."""
        return self.logprobs is not None

    @property
    def has_gold(self) -> bool:
        """Whether the samples carry a gold reward (``gold``)."""
        return self.gold is not None

    @property
    def has_ref_logprobs(self) -> bool:
        """Whether the samples carry reference log-probabilities (``ref_logprobs``)."""
        return self.ref_logprobs is not None

    @property
    def groups(self) -> dict:
        """``{prompt_id: rewards}``."""
        return dict(zip(self.prompts, self.rewards))

    @property
    def logprob_groups(self) -> dict | None:
        """``{prompt_id: logprobs}`` (``None`` without log-probabilities)."""
        return None if self.logprobs is None else dict(zip(self.prompts, self.logprobs))

    def __len__(self):
        return self.n_prompts

    def __getitem__(self, prompt_id):
        return self.groups[str(prompt_id)]

    def columns(self) -> dict:
        """Flat per-sample columns ``prompt_id``, ``reward`` (+ ``gold``, ``logprob``,
        ``ref_logprob``, ``text``: those present), keyed by role name."""
        out = {
            "prompt_id": [p for p, r in zip(self.prompts, self.rewards) for _ in range(r.size)],
            "reward": np.concatenate(self.rewards),
        }
        for role, values in (
            ("gold", self.gold),
            ("logprob", self.logprobs),
            ("ref_logprob", self.ref_logprobs),
        ):
            if values is not None:
                out[role] = np.concatenate(values)
        if self.texts is not None:
            out["text"] = [t for ts in self.texts for t in ts]
        return out

    def __repr__(self):
        extra = f", bad_rows={self.n_bad_rows}" if self.n_bad_rows else ""
        have = "".join(f", {name}" for name, _ in self._EXTRAS if getattr(self, name) is not None)
        return f"SampleSet(prompts={self.n_prompts}, samples={self.n_samples}{have}{extra})"


def encode_ids(pids):
    """Integer codes (order of first appearance) for a list of prompt ids."""
    table: dict = {}
    codes = np.fromiter((table.setdefault(p, len(table)) for p in pids), dtype=np.int64, count=len(pids))
    return codes, list(table)


def stable_order(codes, n_groups):
    """``np.argsort(codes, kind="stable")`` for integer codes in ``[0, n_groups)``, in O(n).

    numpy sorts 16-bit keys stably by radix sort; larger codes are sorted by
    their low and then their high 16 bits (least-significant digit first).
    The order is int32 when it fits (half the memory of numpy's int64).

    >>> c = np.array([70000, 3, 70000, 0, 3, 65536])
    >>> stable_order(c, 70001).tolist() == np.argsort(c, kind="stable").tolist()
    True
    """
    codes = np.asarray(codes)
    index = np.int32 if codes.size < 2**31 else np.int64
    if n_groups <= 1 << 16:
        return np.argsort(codes.astype(np.uint16), kind="stable").astype(index)
    order = np.argsort((codes & 0xFFFF).astype(np.uint16), kind="stable").astype(index)
    high = (codes[order] >> 16).astype(np.uint16)
    return order[np.argsort(high, kind="stable")]


def group_by_code(codes, n_groups, arrays, texts):
    """Split per-sample ``arrays`` (``None`` passes through) and ``texts`` by prompt code.

    The entries of ``arrays`` are replaced by their sorted copies one at a
    time, so a caller that holds no other reference frees each original
    before the next copy is made.
    """
    order = stable_order(codes, n_groups)
    bounds = np.cumsum(np.bincount(codes, minlength=n_groups))[:-1]
    split = []
    for i, a in enumerate(arrays):
        if a is not None:
            arrays[i] = a = a[order]
        split.append(None if a is None else np.split(a, bounds))
    if texts is None:
        return split, None
    t_sorted = [texts[i] for i in order]
    edges = np.concatenate([[0], bounds, [len(t_sorted)]])
    return split, [t_sorted[a:b] for a, b in zip(edges[:-1], edges[1:])]
