"""Sample files: read, validate and write per-prompt reward samples (theory §9).

A *sample file* has one row per sampled response with the columns

* ``prompt_id`` — which prompt the response answers (compared as a string);
* ``reward`` — a finite real number (the proxy reward used for selection);
* ``gold`` (optional, read only on request) — a second finite reward per
  sample, the "gold" reward measured on what the proxy selects;
* ``logprob`` (optional) — the response's log-probability, finite and
  ``<= 0``: under the reference model in a reference (base) file, under the
  policy that generated the sample in a policy file;
* ``ref_logprob`` (optional) — in a policy file, the response's
  log-probability under the *reference* model, finite and ``<= 0``;
* ``text`` (optional) — the response itself (dropped unless ``keep_text``).

``logprob`` and ``ref_logprob`` are read whenever the file has them; ``gold``
only when the caller names its column (``columns={"gold": "gold"}``), and it
is then required.

Three formats are understood: JSON Lines (``.jsonl``, ``.ndjson``), CSV
(``.csv``; JSONL and CSV may be gzip-compressed, ``.gz``) and Parquet
(``.parquet``, ``.pq``).  Files are streamed in chunks, so a file larger than
memory can be read as long as the kept columns (8 bytes per reward and per
log-probability, 4 per prompt code) fit.

Engines
-------
``pyarrow`` (the ``data`` extra) is an accelerator: CSV goes through
``pyarrow.csv.open_csv`` and JSONL through ``pyarrow.json`` one chunk of lines
at a time; Parquet needs it.  Without pyarrow, CSV and JSONL are read by the
standard library (``csv``, ``json``), several times slower.  Both engines apply
the same row rules (one scalar function decides what a bad row is) and give
the same result.

Bad rows and line numbers
-------------------------
A bad row is skipped and recorded as ``(file, line, reason)``; ``line`` is
1-based.  For JSONL it is the physical line; for CSV the physical line on
which the record starts, the header being line 1 (records whose quoted fields
span lines are counted correctly); for Parquet it is the 1-based row number.
With ``strict=True`` the first bad row raises :class:`SampleFileError` with
the message ``"FILE:LINE: reason"``.  The pyarrow CSV reader does not report
line numbers, so when it meets a bad row the file is re-scanned by the
standard-library reader up to the last bad row to be recorded (at most
``MAX_BAD_ROWS`` of them); a clean file is read once.
"""

from __future__ import annotations

import csv
import decimal
import gzip
import io as _stdio
import json
import math
import numbers
import os
import stat
import sys
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from .errors import KlfrontierError

__all__ = [
    "SampleSet",
    "SampleFileError",
    "read_samples",
    "write_samples",
    "MAX_BAD_ROWS",
    "MAX_RECORD_BYTES",
]

#: Bad rows kept with their line and reason; the total is always counted.
MAX_BAD_ROWS = 1000

#: Longest record (physical line of a JSONL or CSV file) read, in bytes: a longer one is a bad
#: row, skipped without being held in memory, so memory does not depend on line length
#: (``read_samples(max_record_bytes=...)``, CLI ``--max-record-bytes``).
MAX_RECORD_BYTES = 16 << 20

# A chunk holds at most chunk_rows rows and about this many bytes.  pyarrow's
# streaming CSV reader reads ahead some 30 blocks, so this also bounds its memory
# (~150 MB) whatever the size of the file.
_MAX_CHUNK_BYTES = 4 << 20

_ROLES = ("prompt_id", "reward", "gold", "logprob", "ref_logprob", "text")
# Optional numeric roles, in the order a row's cells are checked; the log-probabilities
# among them must also be <= 0.
_OPTIONAL_NUMBERS = ("gold", "logprob", "ref_logprob")
_LOG_PROBS = ("logprob", "ref_logprob")
_FORMATS = ("jsonl", "csv", "parquet")
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv",
             ".parquet": "parquet", ".pq": "parquet"}


class SampleFileError(KlfrontierError, ValueError):
    """A sample file (or one of its rows) cannot be used.

    Attributes
    ----------
    file : str
    line : int or None
        1-based line (CSV: header is line 1; Parquet: row number), ``None``
        for problems with the whole file.
    reason : str
    """

    def __init__(self, file, line, reason):
        self.file, self.line, self.reason = str(file), line, reason
        where = f"{self.file}:{line}" if line is not None else self.file
        super().__init__(f"{where}: {reason}")


def _import_pyarrow():
    try:
        import pyarrow  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            'reading or writing this format needs pyarrow: pip install "klfrontier[data]"'
        ) from exc
    import pyarrow as pa
    return pa


def _have_pyarrow():
    try:
        import pyarrow  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the environment
        return False
    return True


# ---------------------------------------------------------------------------- SampleSet
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
    out = []
    for name, values, nonpositive in extras:
        if values is None:
            out.append(None)
            continue
        v = np.asarray(values, dtype=float)
        if v.shape != r.shape:
            raise ValueError(f"{name} of prompt {pid!r} do not match its rewards in length")
        if not np.isfinite(v).all():
            raise ValueError(f"{name} of prompt {pid!r} contain NaN or inf")
        if nonpositive and (v > 0).any():
            raise ValueError(f"{name} of prompt {pid!r} contain positive values")
        out.append(v)
    return r, out


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
        per_prompt = [[(name, None if getattr(self, name) is None else getattr(self, name)[i], neg)
                       for name, neg in self._EXTRAS] for i in range(len(self.prompts))]
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
        """Build from ``{prompt_id: rewards}`` or ``{prompt_id: {"reward": ..., "gold": ..., "logprob": ..., "ref_logprob": ..., "text": ...}}``.

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
                raise ValueError("each prompt's mapping needs 'reward' and may have "
                                 + ", ".join(repr(k) for k in optional))
        opt = {}
        for key in optional:
            have = sum(key in v for v in values)
            if have and have != len(values):
                raise ValueError(f"give '{key}' for every prompt or for none")
            opt[key] = [v[key] for v in values] if have else None
        return cls(list(mapping), [v["reward"] for v in values], logprobs=opt["logprob"],
                   texts=opt["text"], gold=opt["gold"], ref_logprobs=opt["ref_logprob"])

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
        codes, prompts = _encode(pids)
        flat = {}
        for name, values, nonpositive in (("gold", gold, False), ("logprob", logprob, True),
                                          ("ref_logprob", ref_logprob, True)):
            if values is None:
                flat[name] = None
                continue
            v = np.asarray(values, dtype=float)
            if v.shape != r.shape:
                raise ValueError(f"{name} must have the length of reward")
            if not np.isfinite(v).all():
                raise ValueError(f"{name} contains NaN or inf")
            if nonpositive and (v > 0).any():
                raise ValueError(f"{name} contains positive values; a log-probability must be <= 0")
            flat[name] = v
        txt = None if text is None else list(text)
        if txt is not None and len(txt) != r.size:
            raise ValueError("text must have the length of reward")
        (r_g, g_g, lp_g, ref_g), t_g = _group(
            codes, len(prompts), [r, flat["gold"], flat["logprob"], flat["ref_logprob"]], txt)
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
        out = {"prompt_id": [p for p, r in zip(self.prompts, self.rewards) for _ in range(r.size)],
               "reward": np.concatenate(self.rewards)}
        for role, values in (("gold", self.gold), ("logprob", self.logprobs),
                             ("ref_logprob", self.ref_logprobs)):
            if values is not None:
                out[role] = np.concatenate(values)
        if self.texts is not None:
            out["text"] = [t for ts in self.texts for t in ts]
        return out

    def __repr__(self):
        extra = f", bad_rows={self.n_bad_rows}" if self.n_bad_rows else ""
        have = "".join(f", {name}" for name, _ in self._EXTRAS if getattr(self, name) is not None)
        return f"SampleSet(prompts={self.n_prompts}, samples={self.n_samples}{have}{extra})"


def _encode(pids):
    """Integer codes (order of first appearance) for a list of prompt ids."""
    table: dict = {}
    codes = np.fromiter((table.setdefault(p, len(table)) for p in pids), dtype=np.int64,
                        count=len(pids))
    return codes, list(table)


def _group(codes, n_groups, arrays, texts):
    """Split per-sample ``arrays`` (``None`` passes through) and ``texts`` by prompt code."""
    order = np.argsort(codes, kind="stable")
    bounds = np.cumsum(np.bincount(codes, minlength=n_groups))[:-1]
    split = [None if a is None else np.split(a[order], bounds) for a in arrays]
    if texts is None:
        return split, None
    t_sorted = [texts[i] for i in order]
    edges = np.concatenate([[0], bounds, [len(t_sorted)]])
    return split, [t_sorted[a:b] for a, b in zip(edges[:-1], edges[1:])]


# ---------------------------------------------------------------------------- row rules
class _Bad(Exception):
    """A row is bad; the message is the reason."""


def _number(value, name):
    """The one rule for numeric cells: a real number or a string that parses as one."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        raise _Bad(f"missing {name}")
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, decimal.Decimal, str)):
        raise _Bad(f"{name} is not a number: {_show(value)}")
    try:
        x = float(value)
    except (ValueError, OverflowError):
        if isinstance(value, str):
            raise _Bad(f"{name} is not a number: {_show(value)}") from None
        x = math.inf if value > 0 else -math.inf   # an integer beyond float range
    if not math.isfinite(x):
        raise _Bad(f"{name} is not finite: {_show(value)}")
    return x


def _show(value, limit=40):
    s = repr(value)
    return s if len(s) <= limit else s[:limit] + "..."


def _prompt_id(value):
    if value is None or (isinstance(value, str) and value == ""):
        raise _Bad("missing prompt_id")
    if isinstance(value, bool) or not isinstance(value, (str, numbers.Integral)):
        raise _Bad(f"prompt_id must be a string or an integer, got {_show(value)}")
    return str(value)


def _check_row(pid, reward, extra):
    """Validate one row's raw cells; returns ``(prompt_id, reward, values)`` or raises _Bad.

    ``extra`` maps the optional numeric roles in use (``gold``, ``logprob``,
    ``ref_logprob``) to their raw cells; they are checked in the order of
    ``_OPTIONAL_NUMBERS`` and ``values`` maps each to its float.
    """
    p = _prompt_id(pid)
    r = _number(reward, "reward")
    values = {}
    for role in _OPTIONAL_NUMBERS:
        if role in extra:
            x = values[role] = _number(extra[role], role)
            if x > 0 and role in _LOG_PROBS:
                raise _Bad(f"{role} is positive ({_show(extra[role])}); "
                           "a log-probability must be <= 0")
    return p, r, values


def _used(use):
    """The optional numeric roles in use, in checking order."""
    return [role for role in _OPTIONAL_NUMBERS if use[role]]


# ---------------------------------------------------------------------------- accumulation
class _Stop(Exception):
    """Raised by a sink that has seen enough."""


class _Accumulator:
    """Collects good rows as (prompt code, reward, optional numbers, text) chunks and bad rows."""

    def __init__(self, file, *, strict, keep_text, progress):
        self.file, self.strict, self.keep_text, self.progress = file, strict, keep_text, progress
        self.table: dict = {}
        self.codes, self.rewards, self.texts = [], [], []
        self.values = {role: [] for role in _OPTIONAL_NUMBERS}
        # which optional numeric roles are read: None until decided by the header /
        # schema / first valid JSONL line; a requested gold column must be there
        self.use = dict.fromkeys(_OPTIONAL_NUMBERS)
        self.bad, self.n_bad, self.rows_done = [], 0, 0

    # sinks share this interface with _BadRowLocator
    def add_bad(self, line, reason):
        if self.strict:
            raise SampleFileError(self.file, line, reason)
        self.n_bad += 1
        if len(self.bad) < MAX_BAD_ROWS:
            self.bad.append((self.file, line, reason))

    def add_rows(self, pids, rewards, values, texts=None):
        """Append good rows; ``pids`` is a list of str or a pyarrow string array,
        ``values`` maps each optional numeric role in use to its array."""
        if hasattr(pids, "dictionary_encode"):
            enc = pids.dictionary_encode()
            lut = np.array([self.table.setdefault(p, len(self.table))
                            for p in enc.dictionary.to_pylist()], dtype=np.int64)
            idx = enc.indices.to_numpy(zero_copy_only=False)
            codes = lut[idx] if lut.size else np.zeros(0, dtype=np.int64)
        else:
            codes = np.fromiter((self.table.setdefault(p, len(self.table)) for p in pids),
                                dtype=np.int64, count=len(pids))
        self.codes.append(codes.astype(np.int32 if len(self.table) < 2**31 else np.int64))
        self.rewards.append(np.asarray(rewards, dtype=float))
        for role in _used(self.use):
            self.values[role].append(np.asarray(values[role], dtype=float))
        if self.keep_text:
            self.texts.extend(texts)

    def tick(self, rows):
        self.rows_done += rows
        if self.progress is not None:
            self.progress(self.rows_done)

    def finish(self, bad_rows=None):
        bad = self.bad if bad_rows is None else bad_rows
        if not self.table:
            first = f"; first: line {bad[0][1]}: {bad[0][2]}" if bad else ""
            raise SampleFileError(self.file, None,
                                  f"no valid rows ({self.n_bad} bad rows{first})")
        # concatenate column by column, dropping the chunks as we go (peak memory)
        codes = np.concatenate(self.codes)
        self.codes = None
        arrays = [np.concatenate(self.rewards)]
        self.rewards = None
        for role in _OPTIONAL_NUMBERS:
            arrays.append(np.concatenate(self.values[role]) if self.use[role] else None)
            self.values[role] = None
        texts = self.texts if self.keep_text else None
        split, t = _group(codes, len(self.table), arrays, texts)
        r, g = split[0], dict(zip(_OPTIONAL_NUMBERS, split[1:]))
        return SampleSet(list(self.table), r, logprobs=g["logprob"], texts=t, bad_rows=list(bad),
                         n_bad_rows=self.n_bad, source=self.file, gold=g["gold"],
                         ref_logprobs=g["ref_logprob"])


class _BadRowLocator:
    """Sink for the re-scan of a CSV file: keeps bad rows only, stops after ``limit``."""

    def __init__(self, file, *, strict, limit, use):
        self.file, self.strict, self.limit, self.use = file, strict, limit, dict(use)
        self.keep_text, self.bad = False, []

    def add_bad(self, line, reason):
        if self.strict:
            raise SampleFileError(self.file, line, reason)
        self.bad.append((self.file, line, reason))
        if len(self.bad) >= self.limit:
            raise _Stop

    def add_rows(self, *args, **kwargs):
        pass

    def tick(self, rows):
        pass


# ---------------------------------------------------------------------------- formats
def _detect_format(path, fmt):
    if fmt is not None:
        if fmt not in _FORMATS:
            raise ValueError(f"format must be one of {', '.join(_FORMATS)}, got {fmt!r}")
        return fmt
    name = os.fspath(path).lower()
    if name.endswith(".gz"):
        name = name[:-3]
    ext = os.path.splitext(name)[1]
    if ext not in _SUFFIXES:
        raise ValueError(f"cannot tell the format of {os.fspath(path)!r} from its suffix; "
                         f"pass format= (one of {', '.join(_FORMATS)})")
    return _SUFFIXES[ext]


def _resolve_columns(columns, *, reading):
    """File column name of each role (``None``: not read / not written).

    When reading, ``gold`` is read only if ``columns`` names it.
    """
    names = {role: role for role in _ROLES}
    if reading:
        names["gold"] = None
    if columns is None:
        return names
    if not isinstance(columns, Mapping):
        raise ValueError("columns must be a mapping such as {'reward': 'score'}")
    unknown = set(columns) - set(_ROLES)
    if unknown:
        raise ValueError(f"columns has unknown keys {sorted(unknown)}; known: {', '.join(_ROLES)}")
    for role, name in columns.items():
        if name is None and role in ("prompt_id", "reward"):
            raise ValueError(f"columns[{role!r}] cannot be None: the column is required")
        if name is not None and not isinstance(name, str):
            raise ValueError(f"columns[{role!r}] must be a column name (str)")
        names[role] = name
    return names


def _gz(path):
    return os.fspath(path).lower().endswith(".gz")


def _open_binary(path):
    return gzip.open(path, "rb") if _gz(path) else open(path, "rb")


class _TooLong:
    """A physical line longer than the record limit (skipped, its bytes never held)."""

    __slots__ = ("nbytes",)

    def __init__(self, nbytes):
        self.nbytes = nbytes


def _bounded_blocks(f, max_record, read_size=_MAX_CHUNK_BYTES):
    """``(lines, clean)``: lists of the physical lines of a binary file (with their ``\\n``).

    ``clean`` is False when the list also holds :class:`_TooLong` markers.

    Reads ``read_size`` bytes at a time and splits at newlines in C
    (``BytesIO.readlines``); a line whose content is longer than
    ``max_record`` bytes is consumed up to its newline without being kept,
    so memory stays below about ``read_size + max_record`` whatever the file.
    """
    buf = b""
    skipping = 0                 # > 0: inside an over-long line, this many bytes so far
    while True:
        data = f.read(read_size)
        if not data:
            break
        if skipping:
            nl = data.find(b"\n")
            if nl < 0:
                skipping += len(data)
                continue
            yield [_TooLong(skipping + nl)], False
            skipping = 0
            data = data[nl + 1:]
        buf += data
        cut = buf.rfind(b"\n")
        if cut >= 0:
            head, buf = buf[:cut + 1], buf[cut + 1:]
            lines = _stdio.BytesIO(head).readlines()
            clean = len(head) <= max_record or max(map(len, lines)) - 1 <= max_record
            if not clean:
                lines = [_TooLong(len(x) - 1) if len(x) - 1 > max_record else x for x in lines]
            yield lines, clean
        if len(buf) > max_record:
            skipping, buf = len(buf), b""
    if skipping:
        yield [_TooLong(skipping)], False
    elif buf:
        yield ([_TooLong(len(buf))], False) if len(buf) > max_record else ([buf], True)


def _bounded_lines(f, max_record):
    """The items of :func:`_bounded_blocks` one by one."""
    for block, _ in _bounded_blocks(f, max_record):
        yield from block


def _too_long_reason(max_record):
    return f"record longer than {max_record} bytes (max_record_bytes)"


def _open_text(path, mode="r"):
    if _gz(path):
        return gzip.open(path, mode + "t", encoding="utf-8", newline="")
    return open(path, mode, encoding="utf-8", newline="")


def read_samples(path, *, columns=None, strict=False, format=None, chunk_rows=65536,
                 progress=None, keep_text=False, engine="auto",
                 max_record_bytes=MAX_RECORD_BYTES) -> SampleSet:
    """Read a sample file (JSONL, CSV or Parquet), streaming it in chunks.

    Parameters
    ----------
    path : str or os.PathLike
        A sample file, or a sample-store directory (one holding
        ``manifest.json``, as written by ``klfrontier sample``): its
        committed batches are read through
        :meth:`klfrontier.lm.SampleStore.read`, checksums verified
        (``strict``, ``format``, ``chunk_rows`` and ``engine`` do not apply).
    columns : dict, optional
        File column names for the roles ``prompt_id``, ``reward``, ``gold``,
        ``logprob``, ``ref_logprob`` and ``text``, e.g. ``{"reward":
        "score"}``; unnamed roles use their own name, except ``gold``, which
        is read only when named here (``{"gold": "gold"}``) and is then
        required.  ``{"logprob": None}`` (``{"ref_logprob": None}``) ignores
        that column.
    strict : bool, default False
        Raise :class:`SampleFileError` (``"FILE:LINE: reason"``) on the first
        bad row instead of skipping it.
    format : {"jsonl", "csv", "parquet"}, optional
        Default: from the suffix (``.jsonl``/``.ndjson``/``.json``, ``.csv``,
        ``.parquet``/``.pq``; ``.gz`` allowed for JSONL and CSV).
    chunk_rows : int, default 65536
        Rows per chunk, at most; chunks are also kept near 4 MiB.  (For CSV
        read by pyarrow a chunk is a block of bytes sized from the average
        row length.)
    progress : callable, optional
        Called as ``progress(rows_done)`` after each chunk.
    keep_text : bool, default False
        Keep the ``text`` column (otherwise it is never held in memory).
    engine : {"auto", "pyarrow", "python"}
        ``auto`` uses pyarrow when installed.  Parquet needs pyarrow.
    max_record_bytes : int, default :data:`MAX_RECORD_BYTES` (16 MiB)
        Longest JSONL or CSV line read; a longer one is a bad row and is never
        held in memory (so ``/dev/zero`` or a file with no newline costs
        bounded memory).

    Returns
    -------
    SampleSet
        Good rows grouped by prompt, with ``bad_rows`` and ``n_bad_rows``.

    Raises
    ------
    SampleFileError
        A required column (``prompt_id``, ``reward``, a requested ``gold``) is
        absent, no row is valid, or (``strict``) a bad row.
    ImportError
        pyarrow is needed and missing (install the ``data`` extra).

    Notes
    -----
    A row is bad when its prompt id is missing or empty (or not a string or
    integer), its reward is missing, not a number or not finite, or — when
    gold is requested — its gold reward is missing, not a number or not
    finite, or — when the file has a ``logprob`` (``ref_logprob``) column —
    that log-probability is missing, not a number, not finite or positive;
    also a JSONL line that is not a JSON object, or a CSV record with the
    wrong number of fields.  The cells are checked in the order prompt id,
    reward, gold, logprob, ref_logprob, and the first failure is the reason
    recorded.  Numbers may be written as strings (``"1.5"``); booleans are
    not numbers.  Whether log-probabilities are read, and whether a
    requested gold column exists, is decided by the CSV header, the Parquet
    schema, or for JSONL by the first valid line (later lines then need
    them).  Blank lines are skipped silently.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "s.jsonl")
    >>> with open(path, "w") as f:
    ...     _ = f.write('{"prompt_id": "a", "reward": 1.5}\\n'
    ...                 '{"prompt_id": "a", "reward": "oops"}\\n'
    ...                 '{"prompt_id": 7, "reward": -2}\\n')
    >>> s = read_samples(path)
    >>> s.groups
    {'a': array([1.5]), '7': array([-2.])}
    >>> s.bad_rows[0][1:]
    (2, "reward is not a number: 'oops'")

    A gold reward is read on request:

    >>> with open(path, "w") as f:
    ...     _ = f.write('{"prompt_id": "a", "reward": 1.5, "gold": 0.25}\\n'
    ...                 '{"prompt_id": "a", "reward": 2.5, "gold": "x"}\\n')
    >>> s = read_samples(path, columns={"gold": "gold"})
    >>> s.gold, s.bad_rows[0][1:]
    ([array([0.25])], (2, "gold is not a number: 'x'"))
    >>> read_samples(path).has_gold
    False
    """
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "manifest.json")):
        _resolve_columns(columns, reading=True)         # the same argument checks as for files
        from .lm.store import SampleStore

        # as for a file, gold is read only on request
        data = SampleStore(path, create=False).read(columns={"gold": None, **(columns or {})},
                                                    keep_text=keep_text)
        if progress is not None:
            progress(data.n_samples)
        return data
    fmt = _detect_format(path, format)
    cols = _resolve_columns(columns, reading=True)
    if engine not in ("auto", "pyarrow", "python"):
        raise ValueError(f"engine must be 'auto', 'pyarrow' or 'python', got {engine!r}")
    chunk_rows = int(chunk_rows)
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be >= 1")
    if isinstance(max_record_bytes, bool) or not isinstance(max_record_bytes, (int, np.integer)) \
            or max_record_bytes < 64:
        raise ValueError(f"max_record_bytes must be an integer >= 64, got {max_record_bytes!r}")
    max_record = int(max_record_bytes)
    if progress is not None and not callable(progress):
        raise ValueError("progress must be callable")
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    mode = os.stat(path).st_mode
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        # /dev/zero and friends never end: no record limit makes reading them finite
        raise SampleFileError(os.fspath(path), None, "is a device, not a sample file")
    use_arrow = engine == "pyarrow" or fmt == "parquet" or (engine == "auto" and _have_pyarrow())
    if fmt == "parquet" and engine == "python":
        raise ValueError("Parquet files need engine='pyarrow' (or 'auto')")
    if use_arrow:
        _import_pyarrow()
    file = os.fspath(path)
    acc = _Accumulator(file, strict=strict, keep_text=keep_text, progress=progress)
    if fmt == "jsonl":
        _read_jsonl(file, cols, acc, chunk_rows, use_arrow, max_record)
        return acc.finish()
    if fmt == "csv":
        if not use_arrow:
            _read_csv_python(file, cols, acc, chunk_rows, max_record)
            return acc.finish()
        return _read_csv_arrow(file, cols, acc, chunk_rows, max_record)
    _read_parquet(file, cols, acc, chunk_rows)
    return acc.finish()


# ---------------------------------------------------------------------------- JSONL
def _json_row(obj, cols, acc, line):
    """Cells of one decoded JSON line (missing keys are ``None``).

    Decides the undecided optional roles from this line; the caller undoes
    the decision if the line is bad.
    """
    if not isinstance(obj, dict):
        raise _Bad(f"JSON line is not an object (got {type(obj).__name__})")
    for role in _LOG_PROBS:
        if acc.use[role] is None:
            acc.use[role] = cols[role] is not None and obj.get(cols[role]) is not None
    pid, reward = obj.get(cols["prompt_id"]), obj.get(cols["reward"])
    g_name = cols["gold"]
    if g_name is None:
        acc.use["gold"] = False
    elif acc.use["gold"] is None:
        if g_name not in obj:
            # a line that is valid but for gold shows the file has no gold column
            _check_row(pid, reward, {role: obj.get(cols[role]) for role in _used(acc.use)})
            raise SampleFileError(acc.file, line, f"missing column {g_name!r} (keys of the "
                                                  f"first valid line: {sorted(obj)})")
        acc.use["gold"] = True
    pid, r, vals = _check_row(pid, reward, {role: obj.get(cols[role]) for role in _used(acc.use)})
    text = None
    if acc.keep_text and cols["text"] is not None:
        text = obj.get(cols["text"])
        if text is not None and not isinstance(text, str):
            text = json.dumps(text)
    return pid, r, vals, text


def _jsonl_chunk_python(lines, first_line, cols, acc):
    pids, rs, vals, texts = [], [], [], []
    for k, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            try:
                obj = json.loads(raw.rstrip())
            except (ValueError, UnicodeDecodeError) as exc:
                msg = (f"{exc.msg} (column {exc.colno})" if isinstance(exc, json.JSONDecodeError)
                       else str(exc))
                raise _Bad(f"malformed JSON: {msg}") from None
            # decide the optional roles only from a line that is otherwise valid
            decided = dict(acc.use)
            try:
                pid, r, v, text = _json_row(obj, cols, acc, first_line + k)
            except _Bad:
                acc.use = decided
                raise
        except _Bad as bad:
            acc.add_bad(first_line + k, str(bad))
            continue
        pids.append(pid)
        rs.append(r)
        vals.append(v)
        texts.append(text)
    if pids:
        acc.add_rows(pids, np.array(rs),
                     {role: np.array([v[role] for v in vals], dtype=float) for role in _used(acc.use)},
                     texts)


def _jsonl_chunk_arrow(lines, cols, acc):
    """Parse a clean chunk with pyarrow.json; ``False`` means: use the exact path."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj

    fields = [(cols["prompt_id"], pa.string()), (cols["reward"], pa.float64())]
    for role in _OPTIONAL_NUMBERS:
        if cols[role] is not None and acc.use[role] is not False:
            fields.append((cols[role], pa.float64()))
    if acc.keep_text and cols["text"] is not None:
        fields.append((cols["text"], pa.string()))
    if len({f[0] for f in fields}) != len(fields):
        return False
    block = b"".join(lines)   # pyarrow skips blank lines: the row count below notices them
    table = None
    for pid_type in (pa.string(), pa.int64()):
        fields[0] = (cols["prompt_id"], pid_type)
        try:
            table = pj.read_json(
                _stdio.BytesIO(block),
                read_options=pj.ReadOptions(block_size=len(block) + 1, use_threads=True),
                parse_options=pj.ParseOptions(explicit_schema=pa.schema(fields),
                                              unexpected_field_behavior="ignore"))
            break
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    if table is None or table.num_rows != len(lines):
        return False
    pid = table.column(cols["prompt_id"]).combine_chunks().cast(pa.string())
    if pid.null_count or pc.any(pc.equal(pid, "")).as_py():
        return False
    r = table.column(cols["reward"]).to_numpy()
    if table.column(cols["reward"]).null_count or not np.isfinite(r).all():
        return False
    use = dict(acc.use)
    for role in _OPTIONAL_NUMBERS:
        if cols[role] is None:
            use[role] = False
        elif use[role] is None:     # the first valid line decides (all lines here are)
            # a requested gold is used; a line without it sends the chunk to the exact path
            use[role] = role == "gold" or table.column(cols[role])[0].is_valid
    vals = {}
    for role in _used(use):
        col = table.column(cols[role])
        v = vals[role] = col.to_numpy(zero_copy_only=False)
        if col.null_count or not np.isfinite(v).all() or (role in _LOG_PROBS and (v > 0).any()):
            return False
    acc.use = use
    texts = None
    if acc.keep_text:
        texts = (table.column(cols["text"]).to_pylist() if cols["text"] is not None
                 else [None] * table.num_rows)
    acc.add_rows(pid, r, vals, texts)
    return True


def _read_jsonl(file, cols, acc, chunk_rows, use_arrow, max_record=MAX_RECORD_BYTES):
    line_no = 1          # of the first line of the chunk being filled

    def flush(lines):
        nonlocal line_no
        if lines:
            if not (use_arrow and _jsonl_chunk_arrow(lines, cols, acc)):
                _jsonl_chunk_python(lines, line_no, cols, acc)
            line_no += len(lines)
            acc.tick(len(lines))

    with _open_binary(file) as f:
        first = True
        for block, clean in _bounded_blocks(f, max_record):
            if first:
                first = False
                if isinstance(block[0], bytes) and block[0].startswith(b"\xef\xbb\xbf"):
                    block[0] = block[0][3:]
            start = 0
            for k, item in enumerate(() if clean else block):
                if isinstance(item, _TooLong):
                    flush(block[start:k])
                    acc.add_bad(line_no, _too_long_reason(max_record))
                    line_no += 1
                    acc.tick(1)
                    start = k + 1
            for s0 in range(start, len(block), chunk_rows):
                flush(block[s0:s0 + chunk_rows])


# ---------------------------------------------------------------------------- CSV
@contextmanager
def _csv_field_limit(max_record=MAX_RECORD_BYTES):
    """Lift the csv module's 128 KiB field limit to the record limit (texts can be long) for one read."""
    old = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1, max(int(max_record), 1 << 17)))
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _csv_header(file, header, cols):
    """Indices of the columns (``None``: absent or not read); checks the required ones."""
    where = {}
    for role in ("prompt_id", "reward", "gold"):
        if role == "gold" and cols[role] is None:
            where[role] = None
            continue
        if cols[role] not in header:
            raise SampleFileError(file, 1, f"missing column {cols[role]!r} (header: {header})")
        where[role] = header.index(cols[role])
    for role in ("logprob", "ref_logprob", "text"):
        where[role] = header.index(cols[role]) if cols[role] in header else None
    return where


def _decide_from_names(use, where):
    """Header or schema known: an optional numeric role is read when its column is there."""
    for role in _OPTIONAL_NUMBERS:
        if use[role] is None:
            use[role] = where[role] is not None


# Stands in for an over-long physical line in the text handed to the csv module.
_TOO_LONG_MARK = "\x00klfrontier: record too long\x00"


_BAD_UTF8_MARK = "\x00klfrontier: invalid UTF-8\x00"


def _csv_text_lines(f, max_record):
    """Decoded physical lines of a binary CSV file; an over-long or undecodable one is a marker row."""
    for line in _bounded_lines(f, max_record):
        if isinstance(line, _TooLong):
            yield _TOO_LONG_MARK + "\n"
            continue
        try:
            yield line.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield f"{_BAD_UTF8_MARK}{exc.start}\n"


def _read_csv_python(file, cols, sink, chunk_rows, max_record=MAX_RECORD_BYTES):
    """Standard-library CSV reader: exact physical line numbers of every record."""
    with _csv_field_limit(max_record), _open_binary(file) as fb:
        f = _csv_text_lines(fb, max_record)
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise SampleFileError(file, None, "empty file (no header)") from None
        if header and header[0].startswith("\ufeff"):
            header[0] = header[0][1:]
        where = _csv_header(file, header, cols)
        _decide_from_names(sink.use, where)
        used = [(role, where[role]) for role in _used(sink.use)]
        ip, ir, it = where["prompt_id"], where["reward"], where["text"]
        keep_text = sink.keep_text and it is not None
        ncol = len(header)
        pids, rs, vals, texts = [], [], {role: [] for role, _ in used}, []
        done = 0
        line_end = reader.line_num
        try:
            for row in reader:
                start, line_end = line_end + 1, reader.line_num
                if not row:
                    continue
                done += 1
                try:
                    if row[0] == _TOO_LONG_MARK:
                        raise _Bad(_too_long_reason(max_record))
                    if row[0].startswith(_BAD_UTF8_MARK):
                        raise _Bad(f"invalid UTF-8 at byte {row[0][len(_BAD_UTF8_MARK):]} of the line")
                    if len(row) != ncol:
                        raise _Bad(f"expected {ncol} fields, found {len(row)}")
                    pid, r, v = _check_row(row[ip], row[ir], {role: row[i] for role, i in used})
                except _Bad as bad:
                    sink.add_bad(start, str(bad))
                    continue
                pids.append(pid)
                rs.append(r)
                for role, _ in used:
                    vals[role].append(v[role])
                texts.append(row[it] if keep_text else None)
                if len(pids) == chunk_rows:
                    sink.add_rows(pids, np.array(rs), vals, texts)
                    sink.tick(done)
                    pids, rs, vals, texts, done = [], [], {role: [] for role, _ in used}, [], 0
        except _Stop:
            return
        except csv.Error as exc:
            raise SampleFileError(file, reader.line_num, f"CSV syntax error: {exc}") from None
        if pids:
            sink.add_rows(pids, np.array(rs), vals, texts)
        sink.tick(done)


def _arrow_numbers(arr, role):
    """``(values, bad)`` for one arrow column: float64 values, mask of unusable cells."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        try:
            vals = pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            vals = np.array([_try_number(x, role) for x in arr.to_pylist()], dtype=float)
    elif pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        vals = pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)
    elif pa.types.is_null(t):
        vals = np.full(len(arr), np.nan)
    else:
        raise TypeError(str(t))
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(vals)
        if role in _LOG_PROBS:
            bad |= vals > 0
    return vals, bad


def _try_number(x, role):
    try:
        return _number(x, role)
    except _Bad:
        return np.nan


def _arrow_prompt_ids(arr):
    import pyarrow as pa
    import pyarrow.compute as pc

    t = arr.type
    if pa.types.is_dictionary(t):
        arr = arr.dictionary_decode()
        t = arr.type
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t)):
        raise TypeError(str(t))
    s = pc.cast(arr, pa.string())
    bad = np.asarray(pc.fill_null(pc.equal(s, ""), True).to_numpy(zero_copy_only=False))
    return s, bad


def _arrow_batch(batch, cols, acc):
    """Validate one record batch; good rows go to ``acc``; returns the bad mask."""
    import pyarrow as pa

    names = batch.schema.names
    try:
        pid, bad = _arrow_prompt_ids(batch.column(names.index(cols["prompt_id"])))
    except TypeError as exc:
        raise SampleFileError(acc.file, None, f"column {cols['prompt_id']!r} has type {exc}; "
                                              "expected strings or integers") from None
    vals = {}
    for role in ["reward", *_used(acc.use)]:
        try:
            v, b = _arrow_numbers(batch.column(names.index(cols[role])), role)
        except TypeError as exc:
            raise SampleFileError(acc.file, None, f"column {cols[role]!r} has type {exc}; "
                                                  "expected numbers") from None
        vals[role] = v
        bad = bad | b
    good = ~bad
    texts = None
    if acc.keep_text:
        if cols["text"] is not None and cols["text"] in names:
            tcol = batch.column(names.index(cols["text"]))
            texts = [x if isinstance(x, str) or x is None else str(x)
                     for x in tcol.filter(pa.array(good)).to_pylist()]
        else:
            texts = [None] * int(good.sum())
    if good.any():
        keep = pa.array(good)
        acc.add_rows(pid.filter(keep), vals["reward"][good],
                     {role: vals[role][good] for role in _used(acc.use)}, texts)
    return bad


def _read_csv_arrow(file, cols, acc, chunk_rows, max_record=MAX_RECORD_BYTES):
    import pyarrow as pa
    import pyarrow.csv as pcsv

    with _open_binary(file) as fb:
        lines = _bounded_lines(fb, max_record)
        first = next(lines, None)
        if isinstance(first, _TooLong):
            raise SampleFileError(file, 1, "header " + _too_long_reason(max_record))
        try:
            header = next(csv.reader([first.decode("utf-8")]), None) if first is not None else None
        except UnicodeDecodeError as exc:
            raise SampleFileError(file, 1, f"header is not valid UTF-8 (byte {exc.start})") from None
        sample, size = [], 0
        for line in lines:                  # ~64 KiB of rows: their mean length sizes the blocks
            if not isinstance(line, _TooLong):
                sample.append(line)
                size += len(line)
            if size >= 1 << 16:
                break
        sample = b"".join(sample).decode("utf-8", errors="replace")
    if header is None:
        raise SampleFileError(file, None, "empty file (no header)")
    if header and header[0].startswith("\ufeff"):
        header[0] = header[0][1:]
    where = _csv_header(file, header, cols)
    _decide_from_names(acc.use, where)
    want = [cols["prompt_id"], cols["reward"], *(cols[role] for role in _used(acc.use))]
    if acc.keep_text and where["text"] is not None:
        want.append(cols["text"])
    want = list(dict.fromkeys(want))
    per_row = max(1.0, len(sample.encode()) / max(1, sample.count("\n")))
    block = int(min(max(chunk_rows * per_row, 1 << 14), _MAX_CHUNK_BYTES))
    while True:
        run = _Accumulator(file, strict=False, keep_text=acc.keep_text, progress=acc.progress)
        run.use = dict(acc.use)
        structural = [0]                # records with the wrong number of fields

        def on_invalid(row, structural=structural):
            structural[0] += 1
            return "skip"

        n_value_bad = 0
        try:
            reader = pcsv.open_csv(
                file,
                read_options=pcsv.ReadOptions(block_size=block, use_threads=True),
                parse_options=pcsv.ParseOptions(newlines_in_values=True,
                                                invalid_row_handler=on_invalid),
                convert_options=pcsv.ConvertOptions(include_columns=want,
                                                    column_types={c: pa.string() for c in want},
                                                    strings_can_be_null=False))
            for batch in reader:
                n_value_bad += int(_arrow_batch(batch, cols, run).sum())
                run.tick(batch.num_rows)
                if acc.strict and (n_value_bad or structural[0]):
                    break
        except pa.ArrowInvalid as exc:
            if "straddl" in str(exc):
                if block < max_record:
                    block = min(4 * block, max_record)      # a record longer than a block: again
                    continue
                # a record longer than max_record: the line-bounded reader skips it as a bad row
                _read_csv_python(file, cols, acc, chunk_rows, max_record)
                return acc.finish()
            raise SampleFileError(file, None, f"CSV read error: {exc}") from None
        break
    n_bad = n_value_bad + structural[0]
    bad_rows = []
    if n_bad:
        # pyarrow gives no line numbers: the standard-library reader finds them.
        loc = _BadRowLocator(file, strict=acc.strict, limit=min(n_bad, MAX_BAD_ROWS),
                             use=acc.use)
        _read_csv_python(file, cols, loc, chunk_rows, max_record)
        if acc.strict or not loc.bad:
            raise SampleFileError(file, None, f"{n_bad} bad rows found by pyarrow could not be "
                                              "located by the csv module (the two parsers disagree)")
        bad_rows = loc.bad
    run.n_bad = n_bad
    return run.finish(bad_rows)


# ---------------------------------------------------------------------------- Parquet
def _read_parquet(file, cols, acc, chunk_rows):
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(file)
    except Exception as exc:  # pyarrow raises several types for a non-Parquet file
        raise SampleFileError(file, None, f"not a readable Parquet file: {exc}") from None
    names = pf.schema_arrow.names
    for role in ("prompt_id", "reward", "gold"):
        if cols[role] is not None and cols[role] not in names:
            raise SampleFileError(file, None, f"missing column {cols[role]!r} (columns: {names})")
    _decide_from_names(acc.use, {role: cols[role] if cols[role] in names else None
                                 for role in _OPTIONAL_NUMBERS})
    want = [cols["prompt_id"], cols["reward"], *(cols[role] for role in _used(acc.use))]
    if acc.keep_text and cols["text"] is not None and cols["text"] in names:
        want.append(cols["text"])
    want = list(dict.fromkeys(want))
    row0 = 0
    for batch in pf.iter_batches(batch_size=chunk_rows, columns=want):
        bad = _arrow_batch(batch, cols, acc)
        if bad.any():
            cells = {c: batch.column(batch.schema.names.index(c)) for c in want}
            for i in np.flatnonzero(bad):
                try:
                    _check_row(cells[cols["prompt_id"]][i].as_py(), cells[cols["reward"]][i].as_py(),
                               {role: cells[cols[role]][i].as_py() for role in _used(acc.use)})
                    reason = "invalid value"   # pragma: no cover - the two rules agree
                except _Bad as exc:
                    reason = str(exc)
                acc.add_bad(row0 + int(i) + 1, reason)
        row0 += batch.num_rows
        acc.tick(batch.num_rows)


# ---------------------------------------------------------------------------- writing
def write_samples(path, samples, *, format=None, columns=None) -> None:
    """Write samples as JSONL, CSV or Parquet (one row per sample).

    Parameters
    ----------
    path : str or os.PathLike
        The format follows the suffix unless ``format`` is given; ``.gz``
        compresses JSONL and CSV.
    samples : SampleSet or mapping
        A mapping is passed to :meth:`SampleSet.from_dict`.
    format : {"jsonl", "csv", "parquet"}, optional
    columns : dict, optional
        Column names to write for the roles (as in :func:`read_samples`);
        every role, ``gold`` included, defaults to its own name, and ``None``
        leaves that column out.

    Notes
    -----
    Rewards (and gold rewards) and log-probabilities are written with
    Python's shortest round-trip representation, so :func:`read_samples`
    gets back the same floats.  Columns ``gold``, ``logprob``,
    ``ref_logprob`` and ``text`` are written when present (read ``gold``
    back with ``columns={"gold": "gold"}``).
    JSONL and CSV need only the standard library; Parquet needs pyarrow.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "s.csv")
    >>> write_samples(path, {"a": [0.1, 0.2], "b": [3.0]})
    >>> with open(path) as f:
    ...     print(f.read().strip())
    prompt_id,reward
    a,0.1
    a,0.2
    b,3.0
    >>> read_samples(path).groups["a"].tolist()
    [0.1, 0.2]
    """
    if not isinstance(samples, SampleSet):
        samples = SampleSet.from_dict(samples)
    fmt = _detect_format(path, format)
    cols = _resolve_columns(columns, reading=False)
    data = samples.columns()
    roles = [r for r in _ROLES if r in data and cols[r] is not None]
    names = [cols[r] for r in roles]
    if len(set(names)) != len(names):
        raise ValueError(f"columns map two roles to the same name: {names}")
    cells = [data[r].tolist() if isinstance(data[r], np.ndarray) else data[r] for r in roles]
    if fmt == "parquet":
        pa = _import_pyarrow()
        import pyarrow.parquet as pq

        types = {"prompt_id": pa.string(), "reward": pa.float64(), "gold": pa.float64(),
                 "logprob": pa.float64(), "ref_logprob": pa.float64(), "text": pa.string()}
        table = pa.table({n: pa.array(c, type=types[r]) for n, r, c in zip(names, roles, cells)})
        pq.write_table(table, path)
        return
    with _open_text(path, "w") as f:
        if fmt == "csv":
            w = csv.writer(f, lineterminator="\n")
            w.writerow(names)
            w.writerows(zip(*cells))
        else:
            for row in zip(*cells):
                f.write(json.dumps(dict(zip(names, row)), ensure_ascii=False) + "\n")
