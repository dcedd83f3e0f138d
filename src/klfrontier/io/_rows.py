"""The row rule: limits, the error type, cell checks, JSON decoding, column roles and the
accumulator of good rows, shared by every reader of :mod:`klfrontier.io`.
"""

from __future__ import annotations

import decimal
import json
import math
import numbers
import os
import re
from collections.abc import Mapping

import numpy as np

from ..errors import KlfrontierError
from .samples import SampleSet, group_by_code

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

# Rows whose prompt ids are encoded together and then looked up in the ids seen so far.
_UNIFY_ROWS = 1 << 20

ROLES = ("prompt_id", "reward", "gold", "logprob", "ref_logprob", "text")

# Optional numeric roles, in the order a row's cells are checked; the log-probabilities
# among them must also be <= 0.
OPTIONAL_NUMBERS = ("gold", "logprob", "ref_logprob")

LOG_PROBS = ("logprob", "ref_logprob")

_FORMATS = ("jsonl", "csv", "parquet")

_SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


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


def import_pyarrow():
    try:
        import pyarrow  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            'reading or writing this format needs pyarrow: pip install "klfrontier[data]"'
        ) from exc
    import pyarrow as pa

    return pa


def have_pyarrow():
    try:
        import pyarrow  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the environment
        return False
    return True


class BadRow(Exception):
    """A row is bad; the message is the reason."""


def _utf8(value, name):
    """Raise :class:`BadRow` unless a text cell is valid UTF-8.

    Undecodable bytes reach here as lone surrogates (``surrogateescape``), as
    does a JSON ``\\udXXX`` escape without its pair: neither can be written as
    UTF-8.
    """
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRow(f"{name} is not valid UTF-8: {_show(value)}") from None


def number_cell(value, name):
    """The one rule for numeric cells: a real number or a string that parses as one."""
    kind = type(value)
    if kind is str:  # the common cases first (speed)
        if not value or value.isspace():
            raise BadRow(f"missing {name}")
        if not value.isascii():
            _utf8(value, name)
        try:
            x = float(value)
        except ValueError:
            raise BadRow(f"{name} is not a number: {_show(value)}") from None
    elif kind is float:
        x = value
    else:
        if value is None:
            raise BadRow(f"missing {name}")
        if isinstance(value, bool) or not isinstance(value, (numbers.Real, decimal.Decimal, str)):
            raise BadRow(f"{name} is not a number: {_show(value)}")
        if isinstance(value, str):
            return number_cell(str(value), name)  # a str subclass: as its string
        try:
            x = float(value)
        except (ValueError, OverflowError):
            x = math.inf if value > 0 else -math.inf  # an integer beyond float range
    if not math.isfinite(x):
        raise BadRow(f"{name} is not finite: {_show(value)}")
    return x


def _show(value, limit=40):
    s = repr(value)
    return s if len(s) <= limit else s[:limit] + "..."


def _prompt_id(value):
    if type(value) is str and value and value.isascii():
        return value  # the common case first (speed)
    if value is None or (isinstance(value, str) and value == ""):
        raise BadRow("missing prompt_id")
    if isinstance(value, bool) or not isinstance(value, (str, numbers.Integral)):
        raise BadRow(f"prompt_id must be a string or an integer, got {_show(value)}")
    if isinstance(value, str):
        _utf8(value, "prompt_id")
    return str(value)


def check_row(pid, reward, extra):
    """Validate one row's raw cells; returns ``(prompt_id, reward, values)`` or raises BadRow.

    ``extra`` maps the optional numeric roles in use (``gold``, ``logprob``,
    ``ref_logprob``) to their raw cells; they are checked in the order of
    ``OPTIONAL_NUMBERS`` and ``values`` maps each to its float.  (A kept
    ``text`` is checked last, by :func:`check_text`.)
    """
    p = _prompt_id(pid)
    r = number_cell(reward, "reward")
    values = {}
    for role in OPTIONAL_NUMBERS:
        if role in extra:
            x = values[role] = number_cell(extra[role], role)
            if x > 0 and role in LOG_PROBS:
                raise BadRow(f"{role} is positive ({_show(extra[role])}); a log-probability must be <= 0")
    return p, r, values


def check_text(text):
    if isinstance(text, str):
        _utf8(text, "text")
    return text


def used_roles(use):
    """The optional numeric roles in use, in checking order."""
    return [role for role in OPTIONAL_NUMBERS if use[role]]


def too_long_reason(max_record):
    return f"record longer than {max_record} bytes (max_record_bytes)"


# JSON strings (complete ones) and everything but brackets, for the nesting depth
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)

_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(raw):
    """Deepest nesting of ``[`` and ``{`` outside JSON strings in ``raw`` (bytes).

    Never below the depth Python's parser reaches on the same bytes (an
    unterminated string counts its brackets), so a line within
    :data:`MAX_JSON_DEPTH` cannot make the parser recurse further.

    >>> json_depth(b'{"a": [1, {"b": "[[[["}]}'), json_depth(b"[[]]"), json_depth(b"1")
    (3, 2, 0)
    """
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    b = np.frombuffer(brackets, dtype=np.uint8)
    steps = np.where((b == 0x5B) | (b == 0x7B), 1, -1)
    return int(np.cumsum(steps).max())


def too_deep(raw):
    """Whether a JSON line nests deeper than MAX_JSON_DEPTH (a cheap count first)."""
    return raw.count(b"{") + raw.count(b"[") > MAX_JSON_DEPTH and json_depth(raw) > MAX_JSON_DEPTH


class JsonObject(dict):
    """A decoded JSON object that named some keys more than once (the last value kept)."""

    __slots__ = ("repeated",)


def json_object(pairs):
    """``object_pairs_hook``: a dict, marked when a key repeats (which value is meant is ambiguous)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set = set()
        obj = JsonObject(obj)
        obj.repeated = {k for k, _ in pairs if k in seen or seen.add(k)}
    return obj


def json_loads(raw):
    """Decode one JSON document from bytes, by the row rule; raises :class:`BadRow`.

    Undecodable bytes become lone surrogates (so they only matter in a field
    that is read); a document deeper than :data:`MAX_JSON_DEPTH` is refused
    before it is parsed.
    """
    if too_deep(raw):
        raise BadRow(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(raw.decode("utf-8", "surrogateescape"), object_pairs_hook=json_object)
    except json.JSONDecodeError as exc:
        raise BadRow(f"malformed JSON: {exc.msg} (column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of 5000 digits
        raise BadRow(f"malformed JSON: {exc}") from None


def detect_format(path, fmt):
    if fmt is not None:
        if fmt not in _FORMATS:
            raise ValueError(f"format must be one of {', '.join(_FORMATS)}, got {fmt!r}")
        return fmt
    name = os.fspath(path).lower()
    if name.endswith(".gz"):
        name = name[:-3]
    ext = os.path.splitext(name)[1]
    if ext not in _SUFFIXES:
        raise ValueError(
            f"cannot tell the format of {os.fspath(path)!r} from its suffix; "
            f"name it (format= in Python, --format on the command line): "
            f"one of {', '.join(_FORMATS)}"
        )
    return _SUFFIXES[ext]


def resolve_columns(columns, *, reading):
    """File column name of each role (``None``: not read / not written).

    When reading, ``gold`` is read only if ``columns`` names it.
    """
    names = {role: role for role in ROLES}
    if reading:
        names["gold"] = None
    if columns is None:
        return names
    if not isinstance(columns, Mapping):
        raise ValueError("columns must be a mapping such as {'reward': 'score'}")
    unknown = set(columns) - set(ROLES)
    if unknown:
        raise ValueError(f"columns has unknown keys {sorted(unknown)}; known: {', '.join(ROLES)}")
    for role, name in columns.items():
        if name is None and role in ("prompt_id", "reward"):
            raise ValueError(f"columns[{role!r}] cannot be None: the column is required")
        if name is not None and not isinstance(name, str):
            raise ValueError(f"columns[{role!r}] must be a column name (str)")
        names[role] = name
    return names


def check_max_record(max_record_bytes):
    if (
        isinstance(max_record_bytes, bool)
        or not isinstance(max_record_bytes, (int, np.integer))
        or max_record_bytes < _MIN_RECORD_BYTES
    ):
        raise ValueError(
            f"max_record_bytes must be an integer >= {_MIN_RECORD_BYTES}, got {max_record_bytes!r}"
        )
    return int(max_record_bytes)


def decide_from_names(use, where):
    """Header or schema known: an optional numeric role is read when its column is there."""
    for role in OPTIONAL_NUMBERS:
        if use[role] is None:
            use[role] = where[role] is not None


class Accumulator:
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
        self.arrow = have_pyarrow()
        self.table: dict = {}  # without pyarrow: id -> code
        self.ids = None  # with pyarrow: the ids seen, a string array
        self.pending, self.n_pending = [], 0  # chunks whose codes wait for unification
        self.codes, self.rewards, self.texts = [], [], []
        self.values = {role: [] for role in OPTIONAL_NUMBERS}
        # which optional numeric roles are read: None until decided by the header /
        # schema / first valid JSONL line; a requested gold column must be there
        self.use = dict.fromkeys(OPTIONAL_NUMBERS)
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
        union = enc.dictionary  # distinct ids of those rows, in order of first use
        if self.ids is None:
            lut = np.arange(len(union), dtype=np.int64)
            self.ids = union
        else:
            lut = (
                pc.fill_null(pc.index_in(union, value_set=self.ids), -1)
                .to_numpy(zero_copy_only=False)
                .astype(np.int64)
            )
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
            codes = np.fromiter(
                (self.table.setdefault(p, len(self.table)) for p in pids), dtype=np.int64, count=len(pids)
            )
            self.codes.append(codes.astype(np.int32 if len(self.table) < 2**31 else np.int64))
        self.rewards.append(np.asarray(rewards, dtype=float))
        for role in used_roles(self.use):
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
            pa.default_memory_pool().release_unused()  # what reading left in arrow's pool
        if not self.n_ids:
            first = f"; first: line {self.bad[0][1]}: {self.bad[0][2]}" if self.bad else ""
            raise SampleFileError(self.file, None, f"no valid rows ({self.n_bad} bad rows{first})")
        # concatenate column by column, dropping the chunks as we go (peak memory)
        codes = np.concatenate(self.codes)
        self.codes = None
        arrays = [np.concatenate(self.rewards)]
        self.rewards = None
        for role in OPTIONAL_NUMBERS:
            arrays.append(np.concatenate(self.values[role]) if self.use[role] else None)
            self.values[role] = None
        texts = self.texts if self.keep_text else None
        split, t = group_by_code(codes, self.n_ids, arrays, texts)
        del codes, arrays
        r, g = split[0], dict(zip(OPTIONAL_NUMBERS, split[1:]))
        prompts = self.ids.to_pylist() if self.arrow else list(self.table)
        self.ids = None
        # every value passed the row rule: the per-prompt checks of SampleSet are not repeated
        return SampleSet.from_validated(
            prompts,
            r,
            logprobs=g["logprob"],
            texts=t,
            bad_rows=list(self.bad),
            n_bad_rows=self.n_bad,
            source=self.file,
            gold=g["gold"],
            ref_logprobs=g["ref_logprob"],
        )
