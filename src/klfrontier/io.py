"""Sample files and reference files: read, validate and write (theory §9).

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
log-probability, 4 per prompt code) fit.  A *reference file* (``--ref`` of
the CLI) is read by :func:`read_reference`.  ``docs/input.md`` states the
rules below for users.

Limits
------
A record (a JSONL line, a CSV record with the lines its quoted fields span)
longer than ``max_record_bytes`` (default :data:`MAX_RECORD_BYTES`, 16 MiB)
is a bad row, skipped without being held in memory: memory depends neither
on line length nor on file size.  A JSON value nested deeper than
:data:`MAX_JSON_DEPTH` levels is a bad row.  Text files must be UTF-8: a
UTF-16 or UTF-32 byte-order mark or a NUL byte rejects the whole file (it is
binary or in another encoding); a UTF-8 byte-order mark is skipped.  Devices
(``/dev/zero``), directories and symbolic-link loops are refused with one
line; pipes and FIFOs are read once, front to back.

Engines and the row rule
------------------------
``pyarrow`` (the ``data`` extra) is an accelerator: JSONL goes through
``pyarrow.json`` one block of lines at a time and CSV through
``pyarrow.csv.open_csv``; Parquet needs it.  Without pyarrow (and for CSV
that is not a regular file) the standard library (``csv``, ``json``) reads,
several times slower.  The standard-library path *is* the row rule: the
pyarrow path keeps a block (JSONL) or a file (CSV) only when every row in it
is good by that rule, and otherwise hands it to the standard-library path,
so both engines keep the same rows with the same values and report the same
bad rows, and whether a row is kept never depends on its neighbours.
Invalid UTF-8 in a field that is read makes the row bad; bytes in fields
that are not read never matter.

Bad rows and line numbers
-------------------------
A bad row is skipped and recorded as ``(file, line, reason)``; ``line`` is
1-based.  For JSONL it is the physical line; for CSV the physical line on
which the record starts, the header being line 1 (records whose quoted fields
span lines are counted correctly; ``\\r``, ``\\n`` and ``\\r\\n`` each end a
line); for Parquet it is the 1-based row number.  With ``strict=True`` the
first bad row raises :class:`SampleFileError` with the message
``"FILE:LINE: reason"``.
"""

from __future__ import annotations

import array
import csv
import decimal
import errno
import gzip
import io as _stdio
import json
import math
import numbers
import os
import re
import stat
import sys
import zlib
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from .errors import KlfrontierError

__all__ = [
    "SampleSet",
    "SampleFileError",
    "read_samples",
    "read_reference",
    "write_samples",
    "MAX_BAD_ROWS",
    "MAX_RECORD_BYTES",
    "MAX_JSON_DEPTH",
]

#: Bad rows kept with their line and reason; the total is always counted.
MAX_BAD_ROWS = 1000

#: Longest record read, in bytes (a JSONL line or a CSV record, without its final line break;
#: a JSON reference file as a whole): a longer one is a bad row, skipped without being held in
#: memory, so memory does not depend on line length (``read_samples(max_record_bytes=...)``,
#: CLI ``--max-record-bytes``).
MAX_RECORD_BYTES = 16 << 20

#: Deepest nesting of JSON arrays and objects in a line (the line's own object is level 1);
#: a deeper line is a bad row.  (Python's parser would otherwise recurse without bound.)
MAX_JSON_DEPTH = 64

_MIN_RECORD_BYTES = 64

# Bytes read at a time; a JSONL block or a pyarrow CSV block is at most about this big.
_READ_BYTES = 4 << 20

# pyarrow's CSV block: its streaming reader holds some 50 blocks in flight (~150 MB at 4 MiB);
# 1 MiB blocks read as fast.
_CSV_BLOCK = 1 << 20

# Rows whose prompt ids are encoded together and then looked up in the ids seen so far.
_UNIFY_ROWS = 1 << 20

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

    @classmethod
    def _checked(cls, prompts, rewards, *, logprobs=None, texts=None, bad_rows=(), n_bad_rows=0,
                 source=None, gold=None, ref_logprobs=None):
        """Build from values already validated (by the readers' row rule): no checks repeated."""
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


def _stable_order(codes, n_groups):
    """``np.argsort(codes, kind="stable")`` for integer codes in ``[0, n_groups)``, in O(n).

    numpy sorts 16-bit keys stably by radix sort; larger codes are sorted by
    their low and then their high 16 bits (least-significant digit first).
    The order is int32 when it fits (half the memory of numpy's int64).

    >>> c = np.array([70000, 3, 70000, 0, 3, 65536])
    >>> _stable_order(c, 70001).tolist() == np.argsort(c, kind="stable").tolist()
    True
    """
    codes = np.asarray(codes)
    index = np.int32 if codes.size < 2**31 else np.int64
    if n_groups <= 1 << 16:
        return np.argsort(codes.astype(np.uint16), kind="stable").astype(index)
    order = np.argsort((codes & 0xFFFF).astype(np.uint16), kind="stable").astype(index)
    high = (codes[order] >> 16).astype(np.uint16)
    return order[np.argsort(high, kind="stable")]


def _group(codes, n_groups, arrays, texts):
    """Split per-sample ``arrays`` (``None`` passes through) and ``texts`` by prompt code.

    The entries of ``arrays`` are replaced by their sorted copies one at a
    time, so a caller that holds no other reference frees each original
    before the next copy is made.
    """
    order = _stable_order(codes, n_groups)
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


# ---------------------------------------------------------------------------- row rules
class _Bad(Exception):
    """A row is bad; the message is the reason."""


def _utf8(value, name):
    """Raise :class:`_Bad` unless a text cell is valid UTF-8.

    Undecodable bytes reach here as lone surrogates (``surrogateescape``), as
    does a JSON ``\\udXXX`` escape without its pair: neither can be written as
    UTF-8.
    """
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _Bad(f"{name} is not valid UTF-8: {_show(value)}") from None


def _number(value, name):
    """The one rule for numeric cells: a real number or a string that parses as one."""
    kind = type(value)
    if kind is str:                                   # the common cases first (speed)
        if not value or value.isspace():
            raise _Bad(f"missing {name}")
        if not value.isascii():
            _utf8(value, name)
        try:
            x = float(value)
        except ValueError:
            raise _Bad(f"{name} is not a number: {_show(value)}") from None
    elif kind is float:
        x = value
    else:
        if value is None:
            raise _Bad(f"missing {name}")
        if isinstance(value, bool) or not isinstance(value, (numbers.Real, decimal.Decimal, str)):
            raise _Bad(f"{name} is not a number: {_show(value)}")
        if isinstance(value, str):
            return _number(str(value), name)          # a str subclass: as its string
        try:
            x = float(value)
        except (ValueError, OverflowError):
            x = math.inf if value > 0 else -math.inf   # an integer beyond float range
    if not math.isfinite(x):
        raise _Bad(f"{name} is not finite: {_show(value)}")
    return x


def _show(value, limit=40):
    s = repr(value)
    return s if len(s) <= limit else s[:limit] + "..."


def _prompt_id(value):
    if type(value) is str and value and value.isascii():
        return value                                  # the common case first (speed)
    if value is None or (isinstance(value, str) and value == ""):
        raise _Bad("missing prompt_id")
    if isinstance(value, bool) or not isinstance(value, (str, numbers.Integral)):
        raise _Bad(f"prompt_id must be a string or an integer, got {_show(value)}")
    if isinstance(value, str):
        _utf8(value, "prompt_id")
    return str(value)


def _check_row(pid, reward, extra):
    """Validate one row's raw cells; returns ``(prompt_id, reward, values)`` or raises _Bad.

    ``extra`` maps the optional numeric roles in use (``gold``, ``logprob``,
    ``ref_logprob``) to their raw cells; they are checked in the order of
    ``_OPTIONAL_NUMBERS`` and ``values`` maps each to its float.  (A kept
    ``text`` is checked last, by :func:`_check_text`.)
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


def _check_text(text):
    if isinstance(text, str):
        _utf8(text, "text")
    return text


def _used(use):
    """The optional numeric roles in use, in checking order."""
    return [role for role in _OPTIONAL_NUMBERS if use[role]]


def _too_long_reason(max_record):
    return f"record longer than {max_record} bytes (max_record_bytes)"


# JSON strings (complete ones) and everything but brackets, for the nesting depth
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _json_depth(raw):
    """Deepest nesting of ``[`` and ``{`` outside JSON strings in ``raw`` (bytes).

    Never below the depth Python's parser reaches on the same bytes (an
    unterminated string counts its brackets), so a line within
    :data:`MAX_JSON_DEPTH` cannot make the parser recurse further.

    >>> _json_depth(b'{"a": [1, {"b": "[[[["}]}'), _json_depth(b"[[]]"), _json_depth(b"1")
    (3, 2, 0)
    """
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    b = np.frombuffer(brackets, dtype=np.uint8)
    steps = np.where((b == 0x5B) | (b == 0x7B), 1, -1)
    return int(np.cumsum(steps).max())


def _too_deep(raw):
    """Whether a JSON line nests deeper than MAX_JSON_DEPTH (a cheap count first)."""
    return (raw.count(b"{") + raw.count(b"[") > MAX_JSON_DEPTH
            and _json_depth(raw) > MAX_JSON_DEPTH)


class _JsonObject(dict):
    """A decoded JSON object that named some keys more than once (the last value kept)."""

    __slots__ = ("repeated",)


def _json_object(pairs):
    """``object_pairs_hook``: a dict, marked when a key repeats (which value is meant is ambiguous)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set = set()
        obj = _JsonObject(obj)
        obj.repeated = {k for k, _ in pairs if k in seen or seen.add(k)}
    return obj


def _json_loads(raw):
    """Decode one JSON document from bytes, by the row rule; raises :class:`_Bad`.

    Undecodable bytes become lone surrogates (so they only matter in a field
    that is read); a document deeper than :data:`MAX_JSON_DEPTH` is refused
    before it is parsed.
    """
    if _too_deep(raw):
        raise _Bad(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(raw.decode("utf-8", "surrogateescape"), object_pairs_hook=_json_object)
    except json.JSONDecodeError as exc:
        raise _Bad(f"malformed JSON: {exc.msg} (column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:      # e.g. an integer of 5000 digits
        raise _Bad(f"malformed JSON: {exc}") from None


# ---------------------------------------------------------------------------- opening files
def _os_error(file, exc):
    """One clear line for an operating-system error on ``file``."""
    if isinstance(exc, FileNotFoundError):
        if os.path.islink(file):
            return SampleFileError(file, None, f"is a symbolic link to {os.readlink(file)!r}, "
                                               "which does not exist")
        return FileNotFoundError(errno.ENOENT, "no such file", file)
    if exc.errno == errno.ELOOP:
        return SampleFileError(file, None, "symbolic link loop (too many levels of symbolic links)")
    if isinstance(exc, IsADirectoryError):
        return SampleFileError(file, None, "is a directory, not a file")
    if isinstance(exc, PermissionError):
        return SampleFileError(file, None, "permission denied")
    return SampleFileError(file, None, exc.strerror or str(exc))


def _check_input(file):
    """Refuse what cannot be read as a file; returns whether it is a regular file.

    Raises FileNotFoundError for a missing file and :class:`SampleFileError`
    for a directory, a device (``/dev/zero`` never ends), a symbolic-link
    loop or a dangling link, or a permission problem.
    """
    try:
        mode = os.stat(file).st_mode
    except OSError as exc:
        raise _os_error(file, exc) from None
    if stat.S_ISDIR(mode):
        raise SampleFileError(file, None, "is a directory, not a file")
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        raise SampleFileError(file, None, "is a device, not a sample file")
    return stat.S_ISREG(mode)


def _gz(path):
    return os.fspath(path).lower().endswith(".gz")


class _Source:
    """A text file opened once for reading bytes (gzip-decoded when named ``.gz``), checked as read.

    ``read(n)`` returns up to ``n`` bytes (fewer only at the end), skips a
    UTF-8 byte-order mark, and raises :class:`SampleFileError` for a UTF-16
    or UTF-32 byte-order mark, a NUL byte (binary data, or text in another
    encoding), a damaged or truncated gzip stream, or a read error.  pyarrow
    may call ``read`` from its own threads; the exception reaches the caller
    through pyarrow and is also kept in ``error``.
    """

    def __init__(self, file):
        self.file = os.fspath(file)
        self.regular = _check_input(self.file)
        try:
            self._raw = open(self.file, "rb")
        except OSError as exc:
            raise _os_error(self.file, exc) from None
        self._f = gzip.GzipFile(fileobj=self._raw, mode="rb") if _gz(self.file) else self._raw
        self.offset = 0            # bytes of decoded input read so far
        self.error = None
        self.closed = False
        self._first = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if not self.closed:
            self.closed = True
            self._f.close()
            self._raw.close()

    def readable(self):
        return True

    def seekable(self):
        return False

    def _fail(self, reason):
        self.error = SampleFileError(self.file, None, reason)
        raise self.error

    def _read1(self, n):
        try:
            return self._f.read(n)
        except gzip.BadGzipFile as exc:
            self._fail(f"not a valid gzip file ({exc})")
        except EOFError:
            self._fail("truncated gzip file (it ends before its end-of-stream marker)")
        except zlib.error as exc:
            self._fail(f"damaged gzip data ({exc})")
        except OSError as exc:
            self.error = _os_error(self.file, exc)
            raise self.error from None

    def read(self, n=-1):
        if self.error is not None:
            raise self.error
        n = _READ_BYTES if n is None or n < 0 else max(int(n), 1)
        parts, got = [], 0
        while got < n:                       # pipes and gzip return short reads
            data = self._read1(n - got)
            if not data:
                break
            parts.append(data)
            got += len(data)
            if self._first and got >= 4:
                break
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        if self._first and data:
            self._first = False
            if data[:4] in (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff"):
                self._fail("UTF-32 text (byte-order mark); sample and reference files must be UTF-8")
            if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
                self._fail("UTF-16 text (byte-order mark); sample and reference files must be UTF-8")
            if data.startswith(b"\xef\xbb\xbf"):
                data = data[3:]
                self.offset = 3
        nul = data.find(b"\x00")
        if nul >= 0:
            self._fail(f"NUL byte at byte {self.offset + nul}: not UTF-8 text "
                       "(a binary file, or UTF-16/UTF-32 text?)")
        self.offset += len(data)
        return data


# ---------------------------------------------------------------------------- bounded lines
def _line_blocks(src, max_record):
    """Whole lines of a JSONL source, a block at a time, each line at most ``max_record`` bytes.

    Yields blocks of whole lines, each ending in ``\\n`` (the file's last may
    not), or ``None`` in place of a line longer than ``max_record`` bytes
    (without its ``\\n`` or ``\\r\\n``), which is then skipped unread.  Reads at most
    ``max_record`` bytes at a time, so a line inside one read is short enough
    and only a line joined to the previous read's tail needs measuring:
    memory stays below about ``2 * min(max_record, 4 MiB)`` whatever the file.

    >>> src = _stdio.BytesIO(b"ab\\n" + b"x" * 100 + b"\\ncd")
    >>> list(_line_blocks(src, 64))
    [b'ab\\n', None, b'cd']
    """
    size = min(_READ_BYTES, max_record)
    tail, skipping = b"", False
    while True:
        data = src.read(size)
        if not data:
            break
        if skipping:                       # the rest of an over-long line
            nl = data.find(b"\n")
            if nl < 0:
                continue
            skipping, data = False, data[nl + 1:]
            if not data:
                continue
        buf = tail + data if tail else data
        cut = buf.rfind(b"\n")
        if cut < 0:                        # no line ends in here (a final "\r" may end one)
            if len(buf) - buf.endswith(b"\r") > max_record:
                yield None
                tail, skipping = b"", True
            else:
                tail = buf
            continue
        start = 0
        first = buf.find(b"\n") if tail else 0
        if first - (buf[first - 1:first] == b"\r") > max_record:   # joined to the last read's tail
            yield None
            start = first + 1
        if start <= cut:
            yield buf[start:cut + 1]
        tail = buf[cut + 1:]
    if tail:
        yield tail


class _RecordTooLong(Exception):
    """Raised through the csv module when a record passes the byte limit."""


class _Long:
    """A physical line longer than the limit, skipped unread; ``quotes`` counts its ``"``."""

    __slots__ = ("quotes", "open")

    def __init__(self, quotes, open):
        self.quotes, self.open = quotes, open     # open: the rest of the line is still to skip


def _first_eol(data):
    ends = [k for k in (data.find(b"\n"), data.find(b"\r")) if k >= 0]
    return min(ends) if ends else -1


class _CsvLines:
    """Physical lines of a CSV source, decoded for the csv module, records bounded in bytes.

    Lines end at ``\\n``, ``\\r\\n`` or ``\\r`` (as in a text file opened
    with ``newline=""``) and are decoded with ``surrogateescape``, so an
    undecodable byte only matters in a field that is read.  Call
    :meth:`start_record` before each record (``record_start`` is then its
    first line number).  When a record's bytes (without its final line break)
    pass ``max_record``, the rest of the record is consumed without being
    held — up to the line where the ``"`` counted since the record's start
    balance, so a long quoted field is skipped whole — and
    :class:`_RecordTooLong` is raised; the csv reader then starts afresh on
    the line after.  A physical line longer than ``max_record`` is never held.
    """

    def __init__(self, src, max_record):
        self.src, self.max = src, max_record
        self.size = min(_READ_BYTES, max_record)
        self.pending, self.pos = [], 0
        self.tail = self.carry = b""       # an unfinished line; read bytes not yet split
        self.eof = self.eat_lf = False     # eat_lf: drop a "\n" that follows a skipped "\r"
        self.line = 0                      # physical lines consumed
        self.record_start = 1
        self.record_bytes = self.record_quotes = 0

    def start_record(self):
        self.record_start = self.line + 1
        self.record_bytes = self.record_quotes = 0

    def __iter__(self):
        return self

    def _data(self):
        """The next bytes to split: what a skip left over, else a read (``b""`` at the end)."""
        data, self.carry = (self.carry, b"") if self.carry else (self.src.read(self.size), b"")
        if self.eat_lf and data:
            self.eat_lf = False
            if data[:1] == b"\n":
                data = data[1:]
        return data

    def _fill(self):
        """Split lines off the input until some are pending (``_Long`` for an over-long one)."""
        self.pending, self.pos = [], 0
        while not self.pending:
            if self.eof:
                raise StopIteration
            data = self._data()
            if not data:
                if self.carry or self.eat_lf:
                    continue
                self.eof = True
                self.pending = [self.tail] if self.tail else []
                self.tail = b""
                continue
            joined = bool(self.tail)
            buf = self.tail + data if joined else data
            lines = buf.splitlines(keepends=True)
            self.tail = b""
            if lines and (not lines[-1].endswith((b"\n", b"\r")) or lines[-1].endswith(b"\r")):
                self.tail = lines.pop()        # unfinished, or a "\r" that a "\n" may follow
            if len(self.tail) - self.tail.endswith(b"\r") > self.max:
                ended = self.tail.endswith(b"\r")
                lines.append(_Long(self.tail.count(b'"'), open=not ended))
                self.eat_lf, self.tail = ended, b""
            if joined and lines and not isinstance(lines[0], _Long) \
                    and len(lines[0].rstrip(b"\r\n")) > self.max:
                lines[0] = _Long(lines[0].count(b'"'), open=False)   # joined to the last tail
            self.pending = lines

    def _finish(self, long):
        """Skip the rest of an over-long line, counting its quotes."""
        while long.open:
            data = self._data()
            if not data:
                self.eof, long.open = True, False
                return
            k = _first_eol(data)
            if k < 0:
                long.quotes += data.count(b'"')
                continue
            long.quotes += data[:k].count(b'"')
            if data[k:k + 1] == b"\r":
                if k + 1 == len(data):
                    self.eat_lf = True
                elif data[k + 1:k + 2] == b"\n":
                    k += 1
            self.carry, long.open = data[k + 1:], False

    def _next_raw(self):
        if self.pos == len(self.pending):
            self._fill()
        raw = self.pending[self.pos]
        self.pos += 1
        self.line += 1
        if isinstance(raw, _Long):
            self._finish(raw)
        return raw

    def _skip_record(self, quotes):
        """Consume the record's remaining lines: up to the one where its quotes balance."""
        while quotes % 2:
            try:
                raw = self._next_raw()
            except StopIteration:
                break
            quotes += raw.quotes if isinstance(raw, _Long) else raw.count(b'"')
        raise _RecordTooLong

    def __next__(self):
        raw = self._next_raw()
        if isinstance(raw, _Long):
            self._skip_record(self.record_quotes + raw.quotes)
        self.record_quotes += raw.count(b'"')
        self.record_bytes += len(raw)
        if self.record_bytes - (len(raw) - len(raw.rstrip(b"\r\n"))) > self.max:
            self._skip_record(self.record_quotes)
        return raw.decode("utf-8", "surrogateescape")


@contextmanager
def _csv_field_limit():
    """Lift the csv module's 128 KiB field limit for one read (records are bounded by _CsvLines)."""
    old = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        yield
    finally:
        csv.field_size_limit(old)


# ---------------------------------------------------------------------------- accumulation
class _Accumulator:
    """Collects good rows as (prompt code, reward, optional numbers, text) chunks and bad rows.

    Prompt ids become integer codes in order of first appearance.  With
    pyarrow no Python code runs per row: the ids of about :data:`_UNIFY_ROWS`
    rows at a time are dictionary-encoded together, and their dictionary is
    looked up in the ids seen so far (``index_in``), so the table of all ids
    is hashed once per that many rows rather than once per chunk.  Without
    pyarrow, a dict.
    """

    def __init__(self, file, *, strict, keep_text, progress):
        self.file, self.strict, self.keep_text, self.progress = file, strict, keep_text, progress
        self.arrow = _have_pyarrow()
        self.table: dict = {}                 # without pyarrow: id -> code
        self.ids = None                       # with pyarrow: the ids seen, a string array
        self.pending, self.n_pending = [], 0  # chunks whose codes wait for unification
        self.codes, self.rewards, self.texts = [], [], []
        self.values = {role: [] for role in _OPTIONAL_NUMBERS}
        # which optional numeric roles are read: None until decided by the header /
        # schema / first valid JSONL line; a requested gold column must be there
        self.use = dict.fromkeys(_OPTIONAL_NUMBERS)
        self.bad, self.n_bad, self.rows_done = [], 0, 0

    @property
    def n_ids(self):
        return len(self.table) if not self.arrow else 0 if self.ids is None else len(self.ids)

    def add_bad(self, line, reason):
        if self.strict:
            raise SampleFileError(self.file, line, reason)
        self.n_bad += 1
        if len(self.bad) < MAX_BAD_ROWS:
            self.bad.append((self.file, line, reason))

    def _unify(self):
        """Codes for the pending rows' ids; new ids join the table in order of first use."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if not self.pending:
            return
        enc = pc.dictionary_encode(pa.concat_arrays(self.pending))
        self.pending, self.n_pending = [], 0
        union = enc.dictionary                    # distinct ids of those rows, in order of first use
        if self.ids is None:
            lut = np.arange(len(union), dtype=np.int64)
            self.ids = union
        else:
            lut = pc.fill_null(pc.index_in(union, value_set=self.ids), -1).to_numpy(
                zero_copy_only=False).astype(np.int64)
            new = lut < 0
            k = int(new.sum())
            if k:
                lut[new] = len(self.ids) + np.arange(k)
                self.ids = pa.concat_arrays([self.ids, union.filter(pa.array(new))])
        dtype = np.int32 if len(self.ids) < 2**31 else np.int64
        self.codes.append(lut.astype(dtype)[enc.indices.to_numpy(zero_copy_only=False)])

    def add_rows(self, pids, rewards, values, texts=None):
        """Append good rows; ``pids`` is a list of str or a pyarrow string (or dictionary)
        array, ``values`` maps each optional numeric role in use to its array."""
        if self.arrow:
            import pyarrow as pa

            if not isinstance(pids, pa.Array):
                pids = pa.array(pids, type=pa.string())
            elif pa.types.is_dictionary(pids.type):
                pids = pids.dictionary_decode()
            self.pending.append(pids.cast(pa.string()))
            self.n_pending += len(pids)
            if self.n_pending >= _UNIFY_ROWS:
                self._unify()
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

    def finish(self):
        if self.arrow:
            import pyarrow as pa

            self._unify()
            pa.default_memory_pool().release_unused()     # what reading left in arrow's pool
        if not self.n_ids:
            first = f"; first: line {self.bad[0][1]}: {self.bad[0][2]}" if self.bad else ""
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
        split, t = _group(codes, self.n_ids, arrays, texts)
        del codes, arrays
        r, g = split[0], dict(zip(_OPTIONAL_NUMBERS, split[1:]))
        prompts = self.ids.to_pylist() if self.arrow else list(self.table)
        self.ids = None
        # every value passed the row rule: the per-prompt checks of SampleSet are not repeated
        return SampleSet._checked(prompts, r, logprobs=g["logprob"], texts=t, bad_rows=list(self.bad),
                                  n_bad_rows=self.n_bad, source=self.file, gold=g["gold"],
                                  ref_logprobs=g["ref_logprob"])


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
                         f"name it (format= in Python, --format on the command line): "
                         f"one of {', '.join(_FORMATS)}")
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


def _check_max_record(max_record_bytes):
    if isinstance(max_record_bytes, bool) or not isinstance(max_record_bytes, (int, np.integer)) \
            or max_record_bytes < _MIN_RECORD_BYTES:
        raise ValueError(f"max_record_bytes must be an integer >= {_MIN_RECORD_BYTES}, "
                         f"got {max_record_bytes!r}")
    return int(max_record_bytes)


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
        (``strict``, ``format``, ``chunk_rows``, ``engine`` and
        ``max_record_bytes`` do not apply).  A pipe or FIFO is read once,
        front to back (CSV then by the standard library).
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
        Keep the ``text`` column (otherwise it is never held in memory, and
        its bytes do not matter).
    engine : {"auto", "pyarrow", "python"}
        ``auto`` uses pyarrow when installed.  Parquet needs pyarrow.  Both
        engines give the same result.
    max_record_bytes : int, default :data:`MAX_RECORD_BYTES` (16 MiB)
        Longest record read (a JSONL line, a CSV record; for Parquet, the
        used text cells of a row): a longer one is a bad row and is never
        held in memory, so a file with no newline, or a FIFO fed forever,
        costs bounded memory.  At least 64.

    Returns
    -------
    SampleSet
        Good rows grouped by prompt (in order of first appearance), with
        ``bad_rows`` and ``n_bad_rows``.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    SampleFileError
        The file cannot be read as a sample file (a directory, a device, a
        symbolic-link loop, binary or UTF-16 data, damaged gzip, a required
        column absent or named twice), no row is valid, or (``strict``) a
        bad row.
    ImportError
        pyarrow is needed and missing (install the ``data`` extra).

    Notes
    -----
    A row is bad when its prompt id is missing or empty (or not a string or
    integer), its reward is missing, not a number or not finite, or — when
    gold is requested — its gold reward is missing, not a number or not
    finite, or — when the file has a ``logprob`` (``ref_logprob``) column —
    that log-probability is missing, not a number, not finite or positive,
    or — with ``keep_text`` — its text is not valid UTF-8; also when a field
    that is read is not valid UTF-8, a JSONL line is not a JSON object, is
    nested deeper than :data:`MAX_JSON_DEPTH` or names a key that is read
    twice, a CSV record has the wrong number of fields, or a record is
    longer than ``max_record_bytes``.  The cells are checked in the order
    prompt id, reward, gold, logprob, ref_logprob, text, and the first
    failure is the reason recorded.  Numbers may be written as strings
    (``"1.5"``); booleans are not numbers.
    Whether log-probabilities are read, and whether a requested gold column
    exists, is decided by the CSV header, the Parquet schema, or for JSONL by
    the first valid line (later lines then need them).  Blank lines are
    skipped silently.

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
    if progress is not None and not callable(progress):
        raise ValueError("progress must be callable")
    max_record = _check_max_record(max_record_bytes)
    if fmt == "parquet" and engine == "python":
        raise ValueError("Parquet files need engine='pyarrow' (or 'auto')")
    file = os.fspath(path)
    regular = _check_input(file)
    use_arrow = engine == "pyarrow" or fmt == "parquet" or (engine == "auto" and _have_pyarrow())
    if use_arrow:
        _import_pyarrow()
    acc = _Accumulator(file, strict=strict, keep_text=keep_text, progress=progress)
    if fmt == "jsonl":
        with _Source(file) as src:
            _read_jsonl(src, cols, acc, chunk_rows, use_arrow, max_record)
        return acc.finish()
    if fmt == "csv":
        if use_arrow and regular:
            return _read_csv_arrow(file, cols, acc, chunk_rows, max_record)
        with _Source(file) as src:
            _read_csv_python(src, cols, acc, chunk_rows, max_record)
        return acc.finish()
    if not regular:
        raise SampleFileError(file, None, "Parquet is read by seeking: give a regular file, "
                                          "not a pipe or FIFO")
    _read_parquet(file, cols, acc, chunk_rows, max_record)
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
    keep_text = acc.keep_text and cols["text"] is not None
    if type(obj) is _JsonObject:
        read = [cols["prompt_id"], cols["reward"], *(cols[role] for role in _used(acc.use)),
                *([cols["text"]] if keep_text else [])]
        twice = [name for name in read if name in obj.repeated]
        if twice:
            raise _Bad(f"key {twice[0]!r} given twice: which value is meant is ambiguous")
    pid, r, vals = _check_row(pid, reward, {role: obj.get(cols[role]) for role in _used(acc.use)})
    text = None
    if keep_text:
        text = obj.get(cols["text"])
        if text is not None and not isinstance(text, str):
            text = json.dumps(text)
        _check_text(text)
    return pid, r, vals, text


def _jsonl_chunk_python(lines, first_line, cols, acc):
    """The row rule on a list of raw lines (bytes, without their ``\\n``)."""
    pids, rs, vals, texts = [], [], [], []
    for k, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            obj = _json_loads(raw.rstrip())
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


def _one_row_per_line(block, ends, rows):
    """Whether pyarrow's ``rows`` from a block of lines are one per non-blank line.

    ``ends`` are the positions of the block's ``\\n``.  pyarrow yields no row
    for a line of JSON whitespace (space, tab, CR), at least one row (or an
    error) for any other line, and two for two objects on one line or a
    line split by a lone CR; so lone CRs must be absent and the rows must
    number the non-blank lines.  (It also takes a line that starts with a
    UTF-8 byte-order mark, which the row rule refuses: none may appear.)
    """
    if b"\r" in block and block.count(b"\r") != block.count(b"\r\n"):
        return False
    if b"\xef\xbb\xbf" in block:
        return False                  # pyarrow skips a byte-order mark that starts a line
    a = np.frombuffer(block, dtype=np.uint8)
    starts = np.concatenate(([0], ends + 1))
    starts = starts[starts < len(a)]
    first = a[starts]
    blank = 0
    for s in starts[(first == 0x0A) | (first == 0x0D) | (first == 0x20) | (first == 0x09)]:
        end = block.find(b"\n", int(s))
        blank += not block[int(s):end if end >= 0 else len(block)].strip(b" \t\r")
    return rows == len(starts) - blank


def _nested_too_deep(block, rows):
    """Whether some line of a block (of ``rows`` JSON objects) nests deeper than MAX_JSON_DEPTH.

    Each object has one ``{``; unless the other ``{`` and ``[`` number
    MAX_JSON_DEPTH or more, no line can reach that depth.
    """
    a = np.frombuffer(block, dtype=np.uint8)
    if np.count_nonzero((a | 0x20) == 0x7B) - rows < MAX_JSON_DEPTH:     # "{" and "["
        return False
    return any(_too_deep(line) for line in block.split(b"\n"))


def _arrow_json(block, schema):
    """pyarrow.json on one block of lines, in ~1 MiB pieces parsed in parallel (one piece
    when a line is longer)."""
    import pyarrow as pa
    import pyarrow.json as pj

    size = min(len(block) + 1, 1 << 20)
    while True:
        try:
            return pj.read_json(_stdio.BytesIO(block),
                                read_options=pj.ReadOptions(block_size=size, use_threads=True),
                                parse_options=pj.ParseOptions(explicit_schema=schema,
                                                              unexpected_field_behavior="ignore"))
        except pa.ArrowInvalid as exc:
            if "straddl" not in str(exc) or size > len(block):
                raise
            size = len(block) + 1


def _jsonl_chunk_arrow(block, ends, cols, acc):
    """Parse a block of lines with pyarrow.json; ``False``: use the row rule.

    ``ends`` are the positions of the block's ``\\n``.

    Only a block whose every line is good by the row rule is taken: one row
    per non-blank line (:func:`_one_row_per_line`), no cell missing, null,
    empty, non-finite, negative zero, not valid UTF-8 or of the wrong type,
    no line nested deeper than MAX_JSON_DEPTH, and no key that is read
    repeated (pyarrow refuses those).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    fields = [(cols["prompt_id"], pa.string()), (cols["reward"], pa.float64())]
    for role in _OPTIONAL_NUMBERS:
        if cols[role] is not None and acc.use[role] is not False:
            fields.append((cols[role], pa.float64()))
    if acc.keep_text and cols["text"] is not None:
        fields.append((cols["text"], pa.string()))
    if len({f[0] for f in fields}) != len(fields):
        return False
    table = None
    for pid_type in (pa.string(), pa.int64()):
        fields[0] = (cols["prompt_id"], pid_type)
        try:
            table = _arrow_json(block, pa.schema(fields))
            break
        except Exception:            # ArrowInvalid, and UnicodeDecodeError for bad UTF-8
            continue
    if table is None:
        return False
    rows = table.num_rows
    if not _one_row_per_line(block, ends, rows) or _nested_too_deep(block, rows):
        return False
    try:
        pid = table.column(cols["prompt_id"]).combine_chunks().cast(pa.string())
        pid.validate(full=True)       # valid UTF-8
        if pid.null_count or pc.any(pc.equal(pid, "")).as_py():
            return False
        r = table.column(cols["reward"]).to_numpy()
        if table.column(cols["reward"]).null_count or not np.isfinite(r).all() \
                or _negative_zero(r):
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
            if col.null_count or not np.isfinite(v).all() or (role in _LOG_PROBS and (v > 0).any()) \
                    or _negative_zero(v):
                return False
        texts = None
        if acc.keep_text:
            if cols["text"] is not None:
                tcol = table.column(cols["text"]).combine_chunks()
                tcol.validate(full=True)
                texts = tcol.to_pylist()
            else:
                texts = [None] * rows
    except Exception:
        return False
    acc.use = use
    acc.add_rows(pid, r, vals, texts)
    return True


def _negative_zero(v):
    """Whether ``v`` holds -0.0: pyarrow reads JSON's ``-0`` so, Python's parser as the integer 0."""
    return bool(np.signbit(v[v == 0]).any())


def _row_chunks(block, chunk_rows):
    """``(k, piece, n, ends)``: pieces of a block of whole lines holding at most ``chunk_rows``
    lines each, ``k`` the piece's first line (from 0), ``ends`` its ``\\n`` positions."""
    ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 0x0A)
    n = len(ends) + (not block.endswith(b"\n"))        # the file's last line may lack "\n"
    if n <= chunk_rows:
        yield 0, block, n, ends
        return
    stops = np.append(ends + 1, len(block))
    start = 0
    for k in range(0, n, chunk_rows):
        m = min(chunk_rows, n - k)
        stop = int(stops[k + m - 1])
        yield k, block[start:stop], m, ends[k:k + m] - start
        start = stop


def _read_jsonl(src, cols, acc, chunk_rows, use_arrow, max_record):
    line = 1
    for block in _line_blocks(src, max_record):
        if block is None:
            acc.add_bad(line, _too_long_reason(max_record))
            acc.tick(1)
            line += 1
            continue
        for k, piece, m, ends in _row_chunks(block, chunk_rows):
            if not (use_arrow and _jsonl_chunk_arrow(piece, ends, cols, acc)):
                _jsonl_chunk_python(piece.split(b"\n")[:m], line + k, cols, acc)
            acc.tick(m)
            last = m
        line += k + last


# ---------------------------------------------------------------------------- CSV
def _csv_header(file, header, cols, keep_text):
    """Indices of the columns (``None``: absent or not read); checks the required ones and
    refuses a column that is read and named twice."""
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
    for role, i in where.items():
        if i is not None and (role != "text" or keep_text) and header.count(header[i]) > 1:
            raise SampleFileError(file, 1, f"column {header[i]!r} appears {header.count(header[i])} "
                                           "times in the header: which one is meant is ambiguous")
    return where


def _decide_from_names(use, where):
    """Header or schema known: an optional numeric role is read when its column is there."""
    for role in _OPTIONAL_NUMBERS:
        if use[role] is None:
            use[role] = where[role] is not None


def _csv_start(file, src, max_record):
    """``(header, lines, reader)``: the first record of a CSV source (the header, even if empty)
    and the line source and csv reader positioned after it."""
    lines = _CsvLines(src, max_record)
    reader = csv.reader(lines)
    lines.start_record()
    try:
        return next(reader), lines, reader
    except StopIteration:
        raise SampleFileError(file, None, "empty file (no header)") from None
    except (_RecordTooLong, csv.Error):
        raise SampleFileError(file, 1, "header: " + _too_long_reason(max_record)) from None


def _csv_rows(lines, reader, max_record, on_bad):
    """``(line, row)`` for each non-empty record after the header; a record longer than
    ``max_record`` bytes, or one the csv module refuses, goes to ``on_bad(line, reason)``.
    (The caller lifts the csv module's field limit: :func:`_csv_field_limit`.)"""
    while True:
        lines.start_record()
        try:
            row = next(reader)
        except StopIteration:
            return
        except _RecordTooLong:
            on_bad(lines.record_start, _too_long_reason(max_record))
            continue
        except csv.Error as exc:
            on_bad(lines.record_start, f"CSV syntax error: {exc}")
            continue
        if row:
            yield lines.record_start, row


def _read_csv_python(src, cols, sink, chunk_rows, max_record):
    """Standard-library CSV reader: the row rule, with exact physical line numbers."""
    with _csv_field_limit():
        _read_csv_records(src, cols, sink, chunk_rows, max_record)


def _read_csv_records(src, cols, sink, chunk_rows, max_record):
    header, lines, reader = _csv_start(sink.file, src, max_record)
    where = _csv_header(sink.file, header, cols, sink.keep_text)
    _decide_from_names(sink.use, where)
    used = [(role, where[role]) for role in _used(sink.use)]
    ip, ir, it = where["prompt_id"], where["reward"], where["text"]
    keep_text = sink.keep_text and it is not None
    ncol = len(header)
    pids, rs, vals, texts = [], [], {role: [] for role, _ in used}, []
    done = 0

    def on_bad(line, reason):
        nonlocal done
        done += 1
        sink.add_bad(line, reason)

    for start, row in _csv_rows(lines, reader, max_record, on_bad):
        done += 1
        try:
            if len(row) != ncol:
                raise _Bad(f"expected {ncol} fields, found {len(row)}")
            pid, r, v = _check_row(row[ip], row[ir], {role: row[i] for role, i in used})
            text = _check_text(row[it]) if keep_text else None
        except _Bad as bad:
            sink.add_bad(start, str(bad))
            continue
        pids.append(pid)
        rs.append(r)
        for role, _ in used:
            vals[role].append(v[role])
        texts.append(text)
        if len(pids) == chunk_rows:
            sink.add_rows(pids, np.array(rs), vals, texts)
            sink.tick(done)
            pids, rs, vals, texts, done = [], [], {role: [] for role, _ in used}, [], 0
    if pids:
        sink.add_rows(pids, np.array(rs), vals, texts)
    sink.tick(done)


def _arrow_text(arr):
    """``(strings, bad)`` for a string, binary or dictionary column: a string array (or a
    dictionary array of strings) and the mask of null cells and cells not valid UTF-8."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = arr.type
    if pa.types.is_dictionary(t):
        values, bad_values = _arrow_text(arr.dictionary)
        idx = arr.indices
        bad = bad_values[pc.fill_null(idx, 0).to_numpy(zero_copy_only=False)] | \
            np.asarray(idx.is_null().to_numpy(zero_copy_only=False))
        return pa.DictionaryArray.from_arrays(idx, values), bad
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        target = pa.string() if pa.types.is_binary(t) else pa.large_string()
        try:
            s = arr.cast(target)
        except pa.ArrowInvalid:              # some cell is not UTF-8: find which
            cells = arr.to_pylist()
            ok = [c is None or _valid_utf8(c) for c in cells]
            s = pa.array([c.decode() if c is not None and k else None
                          for c, k in zip(cells, ok)], type=target)
            return s, np.asarray(s.is_null().to_numpy(zero_copy_only=False))
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        s = arr
        try:
            s.validate(full=True)
        except pa.ArrowInvalid:
            return _arrow_text(arr.view(pa.binary() if pa.types.is_string(t) else pa.large_binary()))
    else:
        raise TypeError(str(t))
    return s, np.asarray(s.is_null().to_numpy(zero_copy_only=False))


def _valid_utf8(b):
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _cell(x):
    """A raw cell as the row rule sees it (bytes decoded as the CSV reader decodes them)."""
    return x.decode("utf-8", "surrogateescape") if isinstance(x, bytes) else x


def _arrow_numbers(arr, role):
    """``(values, bad)`` for one arrow column: float64 values, mask of unusable cells.

    Strings that pyarrow's cast refuses (as a column) are parsed one by one by
    the row rule, so a string counts as a number exactly when ``float()``
    takes it.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    t = arr.type
    if pa.types.is_dictionary(t):              # e.g. Parquet string rewards, dictionary-encoded
        v, b = _arrow_numbers(arr.dictionary, role)
        idx = arr.indices
        take = pc.fill_null(idx, 0).to_numpy(zero_copy_only=False)
        null = np.asarray(idx.is_null().to_numpy(zero_copy_only=False))
        vals = np.where(null, np.nan, v[take]) if len(v) else np.full(len(arr), np.nan)
        return vals, (b[take] if len(v) else True) | null
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_string(t) \
            or pa.types.is_large_string(t):
        try:
            if pa.types.is_binary(t) or pa.types.is_large_binary(t):
                arr = arr.cast(pa.string() if pa.types.is_binary(t) else pa.large_string())
            vals = pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            vals = np.array([_try_number(_cell(x), role) for x in arr.to_pylist()], dtype=float)
    elif pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        vals = pc.cast(arr, pa.float64(), safe=False).to_numpy(zero_copy_only=False)
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
    """``(ids, bad)``: the column as strings (a dictionary array stays one) and its bad cells."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = arr.type
    value_type = t.value_type if pa.types.is_dictionary(t) else t
    if pa.types.is_integer(value_type):
        s = pc.cast(arr.dictionary_decode() if pa.types.is_dictionary(t) else arr, pa.string())
        return s, np.asarray(s.is_null().to_numpy(zero_copy_only=False))
    s, bad = _arrow_text(arr)
    plain = s.dictionary_decode() if pa.types.is_dictionary(s.type) else s
    empty = pc.fill_null(pc.equal(pc.binary_length(plain), 0), True)
    return s, bad | np.asarray(empty.to_numpy(zero_copy_only=False))


def _arrow_batch(batch, cols, acc, max_record=None):
    """Validate one record batch by the row rule; good rows go to ``acc``; returns the bad mask.

    ``max_record`` (Parquet): a row whose prompt id and kept text together are
    longer than that many bytes is bad.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

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
    tcol = None
    if acc.keep_text and cols["text"] is not None and cols["text"] in names:
        tcol, tbad = _arrow_text(batch.column(names.index(cols["text"])))
        bad = bad | (tbad & ~np.asarray(batch.column(names.index(cols["text"])).is_null()
                                        .to_numpy(zero_copy_only=False)))
    if max_record is not None:
        size = np.zeros(batch.num_rows, dtype=np.int64)
        for col in (pid, tcol):
            if col is not None and not pa.types.is_integer(col.type):
                plain = col.dictionary_decode() if pa.types.is_dictionary(col.type) else col
                size += pc.fill_null(pc.binary_length(plain), 0).to_numpy(zero_copy_only=False)
        bad = bad | (size > max_record)
    good = ~bad
    texts = None
    if acc.keep_text:
        if tcol is not None:
            texts = tcol.filter(pa.array(good)).to_pylist()
        else:
            texts = [None] * int(good.sum())
    if good.any():
        keep = pa.array(good)
        acc.add_rows(pid.filter(keep), vals["reward"][good],
                     {role: vals[role][good] for role in _used(acc.use)}, texts)
    return bad


class _NotClean(Exception):
    """The pyarrow CSV pass met a bad row: the standard-library reader takes over."""


def _read_csv_arrow(file, cols, acc, chunk_rows, max_record):
    """pyarrow's CSV reader for a regular file that is clean by the row rule; any bad row (or
    anything pyarrow refuses) hands the whole file to the standard-library reader.

    pyarrow reads blocks of at most ``max_record // 2`` bytes and refuses a
    record that spans more than two of them, so what it accepts is never
    longer than ``max_record`` bytes.
    """
    import pyarrow as pa
    import pyarrow.csv as pcsv

    with _Source(file) as src, _csv_field_limit():
        header, lines, _ = _csv_start(file, src, max_record)
        sample = [x for x in lines.pending[lines.pos:] if x is not None][:4096]
    # the mean length of the rows after the header sizes the blocks
    per_row = max(1.0, sum(map(len, sample)) / len(sample)) if sample else 64.0
    where = _csv_header(file, header, cols, acc.keep_text)
    _decide_from_names(acc.use, where)
    want = [cols["prompt_id"], cols["reward"], *(cols[role] for role in _used(acc.use))]
    if acc.keep_text and where["text"] is not None:
        want.append(cols["text"])
    want = list(dict.fromkeys(want))
    block = int(min(max(chunk_rows * per_row, 1 << 14), _CSV_BLOCK, max_record // 2))
    run = _Accumulator(file, strict=False, keep_text=acc.keep_text, progress=acc.progress)
    run.use = dict(acc.use)

    src = _Source(file)
    try:
        with src:
            reader = pcsv.open_csv(
                src,
                read_options=pcsv.ReadOptions(block_size=block, use_threads=True),
                parse_options=pcsv.ParseOptions(newlines_in_values=True),
                convert_options=pcsv.ConvertOptions(include_columns=want,
                                                    column_types={c: pa.binary() for c in want},
                                                    strings_can_be_null=False,
                                                    quoted_strings_can_be_null=False))
            for batch in reader:
                if _arrow_batch(batch, cols, run).any():
                    raise _NotClean
                run.tick(batch.num_rows)
    except SampleFileError:
        raise
    except Exception:                      # _NotClean, ArrowInvalid (e.g. a record too long)
        if src.error is not None:
            raise src.error from None
        with _Source(file) as again:
            _read_csv_python(again, cols, acc, chunk_rows, max_record)
        return acc.finish()
    return run.finish()


# ---------------------------------------------------------------------------- Parquet
def _read_parquet(file, cols, acc, chunk_rows, max_record):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(file)
        names = pf.schema_arrow.names
    except Exception as exc:  # pyarrow raises several types for a non-Parquet file
        raise SampleFileError(file, None, f"not a readable Parquet file: {exc}") from None
    for role in ("prompt_id", "reward", "gold"):
        if cols[role] is not None and cols[role] not in names:
            raise SampleFileError(file, None, f"missing column {cols[role]!r} (columns: {names})")
    _decide_from_names(acc.use, {role: cols[role] if cols[role] in names else None
                                 for role in _OPTIONAL_NUMBERS})
    want = [cols["prompt_id"], cols["reward"], *(cols[role] for role in _used(acc.use))]
    if acc.keep_text and cols["text"] is not None and cols["text"] in names:
        want.append(cols["text"])
    want = list(dict.fromkeys(want))
    for name in want:
        if names.count(name) > 1:
            raise SampleFileError(file, None, f"column {name!r} appears {names.count(name)} times "
                                              "in the schema: which one is meant is ambiguous")
    row0 = 0
    try:
        for batch in pf.iter_batches(batch_size=chunk_rows, columns=want):
            bad = _arrow_batch(batch, cols, acc, max_record)
            if bad.any():
                cells = {c: batch.column(batch.schema.names.index(c)) for c in want}
                for i in np.flatnonzero(bad):
                    cell = {c: _cell(cells[c][i].as_py()) for c in want}
                    try:
                        _check_row(cell[cols["prompt_id"]], cell[cols["reward"]],
                                   {role: cell[cols[role]] for role in _used(acc.use)})
                        if cols["text"] in cell and acc.keep_text:
                            _check_text(cell[cols["text"]])
                        reason = _too_long_reason(max_record)
                    except _Bad as exc:
                        reason = str(exc)
                    acc.add_bad(row0 + int(i) + 1, reason)
            row0 += batch.num_rows
            acc.tick(batch.num_rows)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SampleFileError(file, None, f"damaged Parquet file: {exc}") from None


# ---------------------------------------------------------------------------- reference files
def read_reference(path, *, reward_col="reward", prob_col="prob", format=None, engine="auto",
                   max_record_bytes=MAX_RECORD_BYTES):
    """Read a reference distribution (outcome rewards and probabilities) from a CSV or JSON file.

    Parameters
    ----------
    path : str or os.PathLike
        CSV (``.csv``, also any other suffix but ``.json``) or JSON
        (``.json``); either may be gzip-compressed (``.gz``).  A pipe or FIFO
        is read once.
    reward_col, prob_col : str
        Column (CSV) or key (JSON) names.
    format : {"csv", "json"}, optional
        Default: from the suffix.
    engine : {"auto", "pyarrow", "python"}
        CSV only: ``auto`` streams a regular file through pyarrow's CSV
        reader when it is installed (8 bytes per value held); both engines
        accept the same files.
    max_record_bytes : int, default :data:`MAX_RECORD_BYTES`
        Longest CSV record; the largest JSON file (read whole: use CSV for
        larger references).

    Returns
    -------
    rewards, probs : (K,) float ndarray
        Finite numbers, in file order (probabilities are checked by
        :class:`klfrontier.Reference`, not here).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    SampleFileError
        Anything else that makes the file unusable, as one line: a CSV whose
        header lacks the columns or names one of them twice, a record with the
        wrong number of fields or a cell that is not a finite number
        (``FILE:LINE: reason``; booleans are not numbers), a record or JSON
        file past ``max_record_bytes``, JSON nested deeper than
        :data:`MAX_JSON_DEPTH` or of another shape, invalid UTF-8, binary
        data, damaged gzip, a directory or device.

    Notes
    -----
    CSV: a header naming ``reward_col`` and ``prob_col`` (names are
    stripped of spaces, a UTF-8 byte-order mark is skipped), or no header
    and exactly two columns (reward, prob); blank lines are skipped.  JSON:
    an object of two lists ``{reward_col: [...], prob_col: [...]}``, a list
    of records ``[{reward_col: r, prob_col: p}, ...]`` or a list of
    ``[reward, prob]`` pairs; a key named twice is refused.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "ref.csv")
    >>> with open(path, "w") as f:
    ...     _ = f.write("reward,prob\\n0,0.25\\n1,0.75\\n")
    >>> r, p = read_reference(path)
    >>> r.tolist(), p.tolist()
    ([0.0, 1.0], [0.25, 0.75])
    >>> with open(path, "w") as f:
    ...     _ = f.write("reward,prob\\n0,0.25\\nx,0.75\\n")
    >>> read_reference(path)
    Traceback (most recent call last):
    ...
    klfrontier.io.SampleFileError: ...ref.csv:3: reward is not a number: 'x'
    """
    if format is None:
        name = os.fspath(path).lower()
        format = "json" if (name[:-3] if name.endswith(".gz") else name).endswith(".json") else "csv"
    if format not in ("csv", "json"):
        raise ValueError(f"format must be 'csv' or 'json', got {format!r}")
    if engine not in ("auto", "pyarrow", "python"):
        raise ValueError(f"engine must be 'auto', 'pyarrow' or 'python', got {engine!r}")
    for name, value in (("reward_col", reward_col), ("prob_col", prob_col)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a non-empty column name")
    max_record = _check_max_record(max_record_bytes)
    file = os.fspath(path)
    regular = _check_input(file)
    if format == "json":
        return _read_reference_json(file, reward_col, prob_col, max_record)
    if engine == "pyarrow" or (engine == "auto" and _have_pyarrow()):
        _import_pyarrow()
        if regular:
            return _read_reference_csv_arrow(file, reward_col, prob_col, max_record)
    return _read_reference_csv_python(file, reward_col, prob_col, max_record)


def _ref_layout(file, header, reward_col, prob_col):
    """``(i_reward, i_prob, n_fields, has_header)`` from the first CSV record."""
    names = [h.strip() for h in header]
    if reward_col in names and prob_col in names:
        for col in (reward_col, prob_col):
            if names.count(col) > 1:
                raise SampleFileError(file, 1, f"column {col!r} appears {names.count(col)} times "
                                               "in the header: which one is meant is ambiguous")
        return names.index(reward_col), names.index(prob_col), len(names), True
    try:
        [float(x) for x in header]
    except ValueError:
        raise SampleFileError(file, 1, f"CSV header must contain {reward_col!r} and {prob_col!r} "
                                       f"(found {names}), or give two headerless columns "
                                       "reward,prob") from None
    if len(header) != 2:
        raise SampleFileError(file, 1, "a headerless CSV needs exactly two columns (reward, prob)")
    return 0, 1, 2, False


def _ref_row(row, layout):
    ir, ip, ncol, _ = layout
    if len(row) != ncol:
        raise _Bad(f"expected {ncol} fields, found {len(row)}")
    return _number(row[ir], "reward"), _number(row[ip], "prob")


def _read_reference_csv_python(file, reward_col, prob_col, max_record):
    def bad(line, reason):
        raise SampleFileError(file, line, reason)

    rewards, probs = array.array("d"), array.array("d")
    with _Source(file) as src, _csv_field_limit():
        header, lines, reader = _csv_start(file, src, max_record)
        layout = _ref_layout(file, header, reward_col, prob_col)
        rows = _csv_rows(lines, reader, max_record, bad)
        if not layout[3]:
            rewards.append(_number(header[0], "reward"))
            probs.append(_number(header[1], "prob"))
        for line, row in rows:
            try:
                r, p = _ref_row(row, layout)
            except _Bad as exc:
                raise SampleFileError(file, line, str(exc)) from None
            rewards.append(r)
            probs.append(p)
    if not rewards:
        raise SampleFileError(file, None, "no rows")
    return np.frombuffer(rewards, dtype=float).copy(), np.frombuffer(probs, dtype=float).copy()


def _read_reference_csv_arrow(file, reward_col, prob_col, max_record):
    """Stream a regular CSV file through pyarrow (two float columns kept); anything short of
    clean is read again by the standard-library reader, which names the line."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    with _Source(file) as src, _csv_field_limit():
        header = _csv_start(file, src, max_record)[0]
    layout = _ref_layout(file, header, reward_col, prob_col)
    ir, ip, ncol, has_header = layout
    names = [f"c{i}" for i in range(ncol)]

    rewards, probs = [], []
    src = _Source(file)
    try:
        with src:
            reader = pcsv.open_csv(
                src,
                read_options=pcsv.ReadOptions(block_size=min(_CSV_BLOCK, max_record // 2),
                                              use_threads=True, column_names=names,
                                              skip_rows=1 if has_header else 0),
                parse_options=pcsv.ParseOptions(newlines_in_values=True),
                convert_options=pcsv.ConvertOptions(
                    include_columns=[names[ir], names[ip]],
                    column_types={names[ir]: pa.binary(), names[ip]: pa.binary()},
                    strings_can_be_null=False, quoted_strings_can_be_null=False))
            for batch in reader:
                r, rbad = _arrow_numbers(batch.column(names[ir]), "reward")
                p, pbad = _arrow_numbers(batch.column(names[ip]), "prob")
                if rbad.any() or pbad.any():
                    raise _NotClean
                rewards.append(r)
                probs.append(p)
    except SampleFileError:
        raise
    except Exception:                      # _NotClean, ArrowInvalid: let the exact reader say why
        if src.error is not None:
            raise src.error from None
        return _read_reference_csv_python(file, reward_col, prob_col, max_record)
    if not rewards or not sum(map(len, rewards)):
        raise SampleFileError(file, None, "no rows")
    pa.default_memory_pool().release_unused()
    r = np.concatenate(rewards)
    del rewards                     # one column's chunks at a time: the peak is 3 columns, not 4
    return r, np.concatenate(probs)


def _read_reference_json(file, reward_col, prob_col, max_record):
    with _Source(file) as src:
        raw = src.read(max_record + 1)
    if len(raw) > max_record:
        raise SampleFileError(file, None, f"JSON reference file larger than {max_record} bytes "
                                          "(max_record_bytes): give a CSV file instead")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SampleFileError(file, None, f"not valid UTF-8 (byte {exc.start})") from None
    if _too_deep(raw):
        raise SampleFileError(file, None, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        data = json.loads(text, object_pairs_hook=_json_object)
    except json.JSONDecodeError as exc:
        raise SampleFileError(file, None, f"invalid JSON ({exc.msg} at line {exc.lineno})") from None
    except (ValueError, RecursionError) as exc:
        raise SampleFileError(file, None, f"invalid JSON ({exc})") from None

    def numbers(cells, what):
        out = np.empty(len(cells))
        for i, (r, p) in enumerate(cells):
            try:
                out[i] = _number(r if what == "reward" else p, what)
            except _Bad as exc:
                raise SampleFileError(file, None, f"item {i}: {exc}") from None
        return out

    def repeated(obj, where):
        if type(obj) is _JsonObject:
            twice = [k for k in (reward_col, prob_col) if k in obj.repeated]
            if twice:
                raise SampleFileError(file, None, f"{where}key {twice[0]!r} given twice: "
                                                  "which value is meant is ambiguous")

    if isinstance(data, dict):
        repeated(data, "")
        if reward_col not in data or prob_col not in data:
            raise SampleFileError(file, None, f"JSON object needs keys {reward_col!r} and {prob_col!r}")
        r, p = data[reward_col], data[prob_col]
        if not isinstance(r, list) or not isinstance(p, list):
            raise SampleFileError(file, None, f"{reward_col!r} and {prob_col!r} must be lists")
        if len(r) != len(p):
            raise SampleFileError(file, None, f"{reward_col!r} has {len(r)} values and "
                                              f"{prob_col!r} {len(p)}: give one per outcome")
        pairs = list(zip(r, p))
    elif isinstance(data, list) and data and all(isinstance(x, dict) for x in data):
        pairs = []
        for i, x in enumerate(data):
            repeated(x, f"item {i}: ")
            if reward_col not in x or prob_col not in x:
                missing = reward_col if reward_col not in x else prob_col
                raise SampleFileError(file, None, f"item {i}: a record lacks key {missing!r}")
            pairs.append((x[reward_col], x[prob_col]))
    elif isinstance(data, list) and data and all(isinstance(x, list) and len(x) == 2 for x in data):
        pairs = data
    else:
        raise SampleFileError(file, None, "expected an object of two lists, a list of records or "
                                          "of [reward, prob] pairs")
    if not pairs:
        raise SampleFileError(file, None, "no outcomes")
    return numbers(pairs, "reward"), numbers(pairs, "prob")


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
