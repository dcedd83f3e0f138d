"""Sample files: read, validate and write per-prompt reward samples (SPEC §9).

A *sample file* has one row per sampled response with the columns

* ``prompt_id`` — which prompt the response answers (compared as a string);
* ``reward`` — a finite real number;
* ``logprob`` (optional) — the response's log-probability under the
  reference model, finite and ``<= 0``;
* ``text`` (optional) — the response itself (dropped unless ``keep_text``).

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
import sys
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "SampleSet",
    "SampleFileError",
    "read_samples",
    "write_samples",
    "MAX_BAD_ROWS",
]

#: Bad rows kept with their line and reason; the total is always counted.
MAX_BAD_ROWS = 1000

# A chunk holds at most chunk_rows rows and about this many bytes.  pyarrow's
# streaming CSV reader reads ahead some 30 blocks, so this also bounds its memory
# (~150 MB) whatever the size of the file.
_MAX_CHUNK_BYTES = 4 << 20

_ROLES = ("prompt_id", "reward", "logprob", "text")
_FORMATS = ("jsonl", "csv", "parquet")
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv",
             ".parquet": "parquet", ".pq": "parquet"}


class SampleFileError(ValueError):
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
def _check_group(pid, rewards, logprobs):
    r = np.asarray(rewards, dtype=float)
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"rewards of prompt {pid!r} must be a non-empty 1-D array")
    if not np.isfinite(r).all():
        raise ValueError(f"rewards of prompt {pid!r} contain NaN or inf")
    if logprobs is None:
        return r, None
    lp = np.asarray(logprobs, dtype=float)
    if lp.shape != r.shape:
        raise ValueError(f"logprobs of prompt {pid!r} do not match its rewards in length")
    if not np.isfinite(lp).all():
        raise ValueError(f"logprobs of prompt {pid!r} contain NaN or inf")
    if (lp > 0).any():
        raise ValueError(f"logprobs of prompt {pid!r} contain positive values")
    return r, lp


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
        Log-probabilities of the samples under the reference (finite, ``<= 0``).
    texts : list of list of str, optional
        The responses (only when read with ``keep_text=True``).
    bad_rows : list of (file, line, reason)
        The first :data:`MAX_BAD_ROWS` rows skipped while reading.
    n_bad_rows : int
        How many rows were skipped in all.
    source : str, optional
        The file read.

    Examples
    --------
    >>> s = SampleSet.from_dict({"a": [0.0, 1.0, 1.0], "b": [2.0]})
    >>> s.prompts, s.n_samples, s.counts.tolist()
    (['a', 'b'], 4, [3, 1])
    >>> s.groups["a"].tolist()
    [0.0, 1.0, 1.0]
    """

    prompts: list
    rewards: list
    logprobs: list | None = None
    texts: list | None = None
    bad_rows: list = field(default_factory=list)
    n_bad_rows: int = 0
    source: str | None = None

    def __post_init__(self):
        self.prompts = [str(p) for p in self.prompts]
        if len(set(self.prompts)) != len(self.prompts):
            raise ValueError("prompts contains duplicate ids")
        if len(self.rewards) != len(self.prompts):
            raise ValueError("rewards must have one array per prompt")
        for name, extra in (("logprobs", self.logprobs), ("texts", self.texts)):
            if extra is not None and len(extra) != len(self.prompts):
                raise ValueError(f"{name} must have one entry per prompt")
        lps = self.logprobs if self.logprobs is not None else [None] * len(self.prompts)
        checked = [_check_group(p, r, lp) for p, r, lp in zip(self.prompts, self.rewards, lps)]
        self.rewards = [c[0] for c in checked]
        if self.logprobs is not None:
            self.logprobs = [c[1] for c in checked]
        if self.texts is not None:
            self.texts = [list(t) for t in self.texts]
            for p, t, r in zip(self.prompts, self.texts, self.rewards):
                if len(t) != r.size:
                    raise ValueError(f"texts of prompt {p!r} do not match its rewards in length")

    # ---------------------------------------------------------------- builders
    @classmethod
    def from_dict(cls, mapping):
        """Build from ``{prompt_id: rewards}`` or ``{prompt_id: {"reward": ..., "logprob": ..., "text": ...}}``.

        Either every value is a mapping or none is; ``logprob`` / ``text``
        must be given for every prompt or for none.
        """
        if not isinstance(mapping, Mapping) or not mapping:
            raise ValueError("samples must be a non-empty mapping prompt_id -> rewards")
        values = list(mapping.values())
        nested = [isinstance(v, Mapping) for v in values]
        if any(nested) and not all(nested):
            raise ValueError("give every prompt either a rewards array or a mapping, not a mix")
        if not all(nested):
            return cls(list(mapping), [np.asarray(v, dtype=float) for v in values])
        for v in values:
            unknown = set(v) - {"reward", "logprob", "text"}
            if unknown or "reward" not in v:
                raise ValueError("each prompt's mapping needs 'reward' and may have 'logprob', 'text'")
        opt = {}
        for key in ("logprob", "text"):
            have = sum(key in v for v in values)
            if have and have != len(values):
                raise ValueError(f"give '{key}' for every prompt or for none")
            opt[key] = [v[key] for v in values] if have else None
        return cls(list(mapping), [v["reward"] for v in values], logprobs=opt["logprob"],
                   texts=opt["text"])

    @classmethod
    def from_columns(cls, prompt_id, reward, logprob=None, text=None):
        """Group flat per-sample columns by prompt (order of first appearance).

        >>> SampleSet.from_columns(["x", "y", "x"], [1.0, 2.0, 3.0]).groups["x"].tolist()
        [1.0, 3.0]
        """
        pids = [str(p) for p in prompt_id]
        r = np.asarray(reward, dtype=float)
        if r.ndim != 1 or r.size != len(pids):
            raise ValueError("prompt_id and reward must be 1-D and of equal length")
        codes, prompts = _encode(pids)
        lp = None if logprob is None else np.asarray(logprob, dtype=float)
        if lp is not None and lp.shape != r.shape:
            raise ValueError("logprob must have the length of reward")
        txt = None if text is None else list(text)
        if txt is not None and len(txt) != r.size:
            raise ValueError("text must have the length of reward")
        r_g, lp_g, t_g = _group(codes, len(prompts), r, lp, txt)
        return cls(prompts, r_g, logprobs=lp_g, texts=t_g)

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
        return self.logprobs is not None

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
        """Flat per-sample columns ``prompt_id``, ``reward`` (+ ``logprob``, ``text``)."""
        out = {"prompt_id": [p for p, r in zip(self.prompts, self.rewards) for _ in range(r.size)],
               "reward": np.concatenate(self.rewards)}
        if self.logprobs is not None:
            out["logprob"] = np.concatenate(self.logprobs)
        if self.texts is not None:
            out["text"] = [t for ts in self.texts for t in ts]
        return out

    def __repr__(self):
        extra = f", bad_rows={self.n_bad_rows}" if self.n_bad_rows else ""
        lp = ", logprobs" if self.logprobs is not None else ""
        return f"SampleSet(prompts={self.n_prompts}, samples={self.n_samples}{lp}{extra})"


def _encode(pids):
    """Integer codes (order of first appearance) for a list of prompt ids."""
    table: dict = {}
    codes = np.fromiter((table.setdefault(p, len(table)) for p in pids), dtype=np.int64,
                        count=len(pids))
    return codes, list(table)


def _group(codes, n_groups, rewards, logprobs, texts):
    order = np.argsort(codes, kind="stable")
    bounds = np.cumsum(np.bincount(codes, minlength=n_groups))[:-1]
    r = np.split(rewards[order], bounds)
    lp = None if logprobs is None else np.split(logprobs[order], bounds)
    if texts is None:
        return r, lp, None
    t_sorted = [texts[i] for i in order]
    edges = np.concatenate([[0], bounds, [len(t_sorted)]])
    return r, lp, [t_sorted[a:b] for a, b in zip(edges[:-1], edges[1:])]


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


def _check_row(pid, reward, logprob, use_logprob):
    """Validate one row's raw cells; returns ``(prompt_id, reward, logprob)`` or raises _Bad."""
    p = _prompt_id(pid)
    r = _number(reward, "reward")
    lp = None
    if use_logprob:
        lp = _number(logprob, "logprob")
        if lp > 0:
            raise _Bad(f"logprob is positive ({_show(logprob)}); a log-probability must be <= 0")
    return p, r, lp


# ---------------------------------------------------------------------------- accumulation
class _Stop(Exception):
    """Raised by a sink that has seen enough."""


class _Accumulator:
    """Collects good rows as (prompt code, reward, logprob, text) chunks and bad rows."""

    def __init__(self, file, *, strict, keep_text, progress):
        self.file, self.strict, self.keep_text, self.progress = file, strict, keep_text, progress
        self.table: dict = {}
        self.codes, self.rewards, self.logprobs, self.texts = [], [], [], []
        self.use_logprob = None     # decided by the header / schema / first JSONL row
        self.bad, self.n_bad, self.rows_done = [], 0, 0

    # sinks share this interface with _BadRowLocator
    def add_bad(self, line, reason):
        if self.strict:
            raise SampleFileError(self.file, line, reason)
        self.n_bad += 1
        if len(self.bad) < MAX_BAD_ROWS:
            self.bad.append((self.file, line, reason))

    def add_rows(self, pids, rewards, logprobs=None, texts=None):
        """Append good rows; ``pids`` is a list of str or a pyarrow string array."""
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
        if self.use_logprob:
            self.logprobs.append(np.asarray(logprobs, dtype=float))
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
        rewards = np.concatenate(self.rewards)
        self.rewards = None
        lps = np.concatenate(self.logprobs) if self.use_logprob else None
        self.logprobs = None
        texts = self.texts if self.keep_text else None
        r, lp, t = _group(codes, len(self.table), rewards, lps, texts)
        return SampleSet(list(self.table), r, logprobs=lp, texts=t, bad_rows=list(bad),
                         n_bad_rows=self.n_bad, source=self.file)


class _BadRowLocator:
    """Sink for the re-scan of a CSV file: keeps bad rows only, stops after ``limit``."""

    def __init__(self, file, *, strict, limit, use_logprob):
        self.file, self.strict, self.limit, self.use_logprob = file, strict, limit, use_logprob
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


def _resolve_columns(columns):
    names = {role: role for role in _ROLES}
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


def _open_text(path, mode="r"):
    if _gz(path):
        return gzip.open(path, mode + "t", encoding="utf-8", newline="")
    return open(path, mode, encoding="utf-8", newline="")


def read_samples(path, *, columns=None, strict=False, format=None, chunk_rows=65536,
                 progress=None, keep_text=False, engine="auto") -> SampleSet:
    """Read a sample file (JSONL, CSV or Parquet), streaming it in chunks.

    Parameters
    ----------
    path : str or os.PathLike
    columns : dict, optional
        File column names for the roles ``prompt_id``, ``reward``, ``logprob``
        and ``text``, e.g. ``{"reward": "score"}``; unnamed roles use their
        own name.  ``{"logprob": None}`` ignores log-probabilities.
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

    Returns
    -------
    SampleSet
        Good rows grouped by prompt, with ``bad_rows`` and ``n_bad_rows``.

    Raises
    ------
    SampleFileError
        A required column is absent, no row is valid, or (``strict``) a bad row.
    ImportError
        pyarrow is needed and missing (install the ``data`` extra).

    Notes
    -----
    A row is bad when its prompt id is missing or empty (or not a string or
    integer), its reward is missing, not a number or not finite, or — when
    the file has a ``logprob`` column — its log-probability is missing, not
    finite or positive; also a JSONL line that is not a JSON object, or a
    CSV record with the wrong number of fields.  Numbers may be written as
    strings (``"1.5"``); booleans are not numbers.  Whether log-probabilities
    are read is decided by the CSV header, the Parquet schema, or for JSONL
    by the first valid line (later lines then need one).  Blank lines are
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
    """
    fmt = _detect_format(path, format)
    cols = _resolve_columns(columns)
    if engine not in ("auto", "pyarrow", "python"):
        raise ValueError(f"engine must be 'auto', 'pyarrow' or 'python', got {engine!r}")
    chunk_rows = int(chunk_rows)
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be >= 1")
    if progress is not None and not callable(progress):
        raise ValueError("progress must be callable")
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    use_arrow = engine == "pyarrow" or fmt == "parquet" or (engine == "auto" and _have_pyarrow())
    if fmt == "parquet" and engine == "python":
        raise ValueError("Parquet files need engine='pyarrow' (or 'auto')")
    if use_arrow:
        _import_pyarrow()
    file = os.fspath(path)
    acc = _Accumulator(file, strict=strict, keep_text=keep_text, progress=progress)
    if fmt == "jsonl":
        _read_jsonl(file, cols, acc, chunk_rows, use_arrow)
        return acc.finish()
    if fmt == "csv":
        if not use_arrow:
            _read_csv_python(file, cols, acc, chunk_rows)
            return acc.finish()
        return _read_csv_arrow(file, cols, acc, chunk_rows)
    _read_parquet(file, cols, acc, chunk_rows)
    return acc.finish()


# ---------------------------------------------------------------------------- JSONL
def _json_row(obj, cols, acc):
    """Cells of one decoded JSON line (missing keys are ``None``)."""
    if not isinstance(obj, dict):
        raise _Bad(f"JSON line is not an object (got {type(obj).__name__})")
    lp_name = cols["logprob"]
    if acc.use_logprob is None:
        acc.use_logprob = lp_name is not None and obj.get(lp_name) is not None
    pid, r, lp = _check_row(obj.get(cols["prompt_id"]), obj.get(cols["reward"]),
                            obj.get(lp_name) if acc.use_logprob else None, acc.use_logprob)
    text = None
    if acc.keep_text and cols["text"] is not None:
        text = obj.get(cols["text"])
        if text is not None and not isinstance(text, str):
            text = json.dumps(text)
    return pid, r, lp, text


def _jsonl_chunk_python(lines, first_line, cols, acc):
    pids, rs, lps, texts = [], [], [], []
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
            # decide use_logprob only from a line that is otherwise valid
            decided = acc.use_logprob
            try:
                pid, r, lp, text = _json_row(obj, cols, acc)
            except _Bad:
                if decided is None:
                    acc.use_logprob = None
                raise
        except _Bad as bad:
            acc.add_bad(first_line + k, str(bad))
            continue
        pids.append(pid)
        rs.append(r)
        lps.append(lp)
        texts.append(text)
    if pids:
        acc.add_rows(pids, np.array(rs), np.array(lps, dtype=float) if acc.use_logprob else None,
                     texts)


def _jsonl_chunk_arrow(lines, cols, acc):
    """Parse a clean chunk with pyarrow.json; ``False`` means: use the exact path."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj

    fields = [(cols["prompt_id"], pa.string()), (cols["reward"], pa.float64())]
    if cols["logprob"] is not None and acc.use_logprob is not False:
        fields.append((cols["logprob"], pa.float64()))
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
    lp = None
    use_lp = acc.use_logprob
    if cols["logprob"] is None:
        use_lp = False
    elif use_lp is None:            # the first valid line decides (all lines here are)
        use_lp = table.column(cols["logprob"])[0].is_valid
    if use_lp:
        lp_col = table.column(cols["logprob"])
        lp = lp_col.to_numpy(zero_copy_only=False)
        if lp_col.null_count or not (np.isfinite(lp).all() and (lp <= 0).all()):
            return False
    acc.use_logprob = use_lp
    texts = None
    if acc.keep_text:
        texts = (table.column(cols["text"]).to_pylist() if cols["text"] is not None
                 else [None] * table.num_rows)
    acc.add_rows(pid, r, lp, texts)
    return True


def _read_jsonl(file, cols, acc, chunk_rows, use_arrow):
    line_no = 1
    with _open_binary(file) as f:
        while True:
            block = f.readlines(_MAX_CHUNK_BYTES)      # whole lines, about that many bytes
            if not block:
                break
            if line_no == 1 and block[0].startswith(b"\xef\xbb\xbf"):
                block[0] = block[0][3:]
            for s in range(0, len(block), chunk_rows):
                lines = block[s:s + chunk_rows]
                if not (use_arrow and _jsonl_chunk_arrow(lines, cols, acc)):
                    _jsonl_chunk_python(lines, line_no, cols, acc)
                line_no += len(lines)
                acc.tick(len(lines))


# ---------------------------------------------------------------------------- CSV
@contextmanager
def _csv_field_limit():
    """Lift the csv module's 128 KiB field limit (texts can be long) for one read."""
    old = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _csv_header(file, header, cols):
    """Indices of the needed columns; decides whether log-probabilities are read."""
    where = {}
    for role in ("prompt_id", "reward"):
        if cols[role] not in header:
            raise SampleFileError(file, 1, f"missing column {cols[role]!r} (header: {header})")
        where[role] = header.index(cols[role])
    for role in ("logprob", "text"):
        where[role] = header.index(cols[role]) if cols[role] in header else None
    return where


def _read_csv_python(file, cols, sink, chunk_rows):
    """Standard-library CSV reader: exact physical line numbers of every record."""
    with _csv_field_limit(), _open_text(file) as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise SampleFileError(file, None, "empty file (no header)") from None
        if header and header[0].startswith("\ufeff"):
            header[0] = header[0][1:]
        where = _csv_header(file, header, cols)
        if sink.use_logprob is None:
            sink.use_logprob = where["logprob"] is not None
        use_lp = sink.use_logprob
        ip, ir, il, it = where["prompt_id"], where["reward"], where["logprob"], where["text"]
        keep_text = sink.keep_text and it is not None
        ncol = len(header)
        pids, rs, lps, texts = [], [], [], []
        done = 0
        line_end = reader.line_num
        try:
            for row in reader:
                start, line_end = line_end + 1, reader.line_num
                if not row:
                    continue
                done += 1
                try:
                    if len(row) != ncol:
                        raise _Bad(f"expected {ncol} fields, found {len(row)}")
                    pid, r, lp = _check_row(row[ip], row[ir], row[il] if use_lp else None, use_lp)
                except _Bad as bad:
                    sink.add_bad(start, str(bad))
                    continue
                pids.append(pid)
                rs.append(r)
                lps.append(lp)
                texts.append(row[it] if keep_text else None)
                if len(pids) == chunk_rows:
                    sink.add_rows(pids, np.array(rs), np.array(lps) if use_lp else None, texts)
                    sink.tick(done)
                    pids, rs, lps, texts, done = [], [], [], [], 0
        except _Stop:
            return
        except csv.Error as exc:
            raise SampleFileError(file, reader.line_num, f"CSV syntax error: {exc}") from None
        if pids:
            sink.add_rows(pids, np.array(rs), np.array(lps) if use_lp else None, texts)
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
        if role == "logprob":
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


def _arrow_batch(batch, cols, acc, use_lp):
    """Validate one record batch; good rows go to ``acc``; returns the bad mask."""
    import pyarrow as pa

    names = batch.schema.names
    try:
        pid, bad = _arrow_prompt_ids(batch.column(names.index(cols["prompt_id"])))
    except TypeError as exc:
        raise SampleFileError(acc.file, None, f"column {cols['prompt_id']!r} has type {exc}; "
                                              "expected strings or integers") from None
    vals = {}
    for role in ("reward", "logprob") if use_lp else ("reward",):
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
                     vals["logprob"][good] if use_lp else None, texts)
    return bad


def _read_csv_arrow(file, cols, acc, chunk_rows):
    import pyarrow as pa
    import pyarrow.csv as pcsv

    with _open_text(file) as f:
        header = next(csv.reader(f), None)
        sample = f.read(1 << 16)
    if header is None:
        raise SampleFileError(file, None, "empty file (no header)")
    if header and header[0].startswith("\ufeff"):
        header[0] = header[0][1:]
    where = _csv_header(file, header, cols)
    acc.use_logprob = where["logprob"] is not None
    want = [cols["prompt_id"], cols["reward"]]
    if acc.use_logprob:
        want.append(cols["logprob"])
    if acc.keep_text and where["text"] is not None:
        want.append(cols["text"])
    want = list(dict.fromkeys(want))
    per_row = max(1.0, len(sample.encode()) / max(1, sample.count("\n")))
    block = int(min(max(chunk_rows * per_row, 1 << 14), _MAX_CHUNK_BYTES))
    while True:
        run = _Accumulator(file, strict=False, keep_text=acc.keep_text, progress=acc.progress)
        run.use_logprob = acc.use_logprob
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
                n_value_bad += int(_arrow_batch(batch, cols, run, run.use_logprob).sum())
                run.tick(batch.num_rows)
                if acc.strict and (n_value_bad or structural[0]):
                    break
        except pa.ArrowInvalid as exc:
            if "straddl" in str(exc) and block < (1 << 31) // 4:
                block *= 4          # a record longer than a block: start again
                continue
            raise SampleFileError(file, None, f"CSV read error: {exc}") from None
        break
    n_bad = n_value_bad + structural[0]
    bad_rows = []
    if n_bad:
        # pyarrow gives no line numbers: the standard-library reader finds them.
        loc = _BadRowLocator(file, strict=acc.strict, limit=min(n_bad, MAX_BAD_ROWS),
                             use_logprob=acc.use_logprob)
        _read_csv_python(file, cols, loc, chunk_rows)
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
    for role in ("prompt_id", "reward"):
        if cols[role] not in names:
            raise SampleFileError(file, None, f"missing column {cols[role]!r} (columns: {names})")
    acc.use_logprob = cols["logprob"] is not None and cols["logprob"] in names
    want = [cols["prompt_id"], cols["reward"]]
    if acc.use_logprob:
        want.append(cols["logprob"])
    if acc.keep_text and cols["text"] is not None and cols["text"] in names:
        want.append(cols["text"])
    want = list(dict.fromkeys(want))
    row0 = 0
    for batch in pf.iter_batches(batch_size=chunk_rows, columns=want):
        bad = _arrow_batch(batch, cols, acc, acc.use_logprob)
        if bad.any():
            lp_name = cols["logprob"] if acc.use_logprob else None
            cells = {c: batch.column(batch.schema.names.index(c)) for c in want}
            for i in np.flatnonzero(bad):
                try:
                    _check_row(cells[cols["prompt_id"]][i].as_py(), cells[cols["reward"]][i].as_py(),
                               cells[lp_name][i].as_py() if lp_name else None, acc.use_logprob)
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
        Column names to write for the roles (as in :func:`read_samples`).

    Notes
    -----
    Rewards and log-probabilities are written with Python's shortest
    round-trip representation, so :func:`read_samples` gets back the same
    floats.  Columns ``logprob`` and ``text`` are written when present.
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
    cols = _resolve_columns(columns)
    data = samples.columns()
    roles = [r for r in _ROLES if r in data and cols[r] is not None]
    names = [cols[r] for r in roles]
    if len(set(names)) != len(names):
        raise ValueError(f"columns map two roles to the same name: {names}")
    cells = [data[r].tolist() if isinstance(data[r], np.ndarray) else data[r] for r in roles]
    if fmt == "parquet":
        pa = _import_pyarrow()
        import pyarrow.parquet as pq

        types = {"prompt_id": pa.string(), "reward": pa.float64(), "logprob": pa.float64(),
                 "text": pa.string()}
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
