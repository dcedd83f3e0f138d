""":func:`read_samples`: one entry point for sample files of every format and sample stores."""

from __future__ import annotations

import os

from ._rows import (
    MAX_RECORD_BYTES,
    Accumulator,
    SampleFileError,
    check_max_record,
    detect_format,
    have_pyarrow,
    import_pyarrow,
    resolve_columns,
)
from ._source import Source, check_input
from .csv import read_csv_arrow, read_csv_python
from .jsonl import read_jsonl
from .parquet import read_parquet
from .samples import SampleSet

__all__ = ["read_samples"]


def read_samples(
    path,
    *,
    columns=None,
    strict=False,
    format=None,
    chunk_rows=65536,
    progress=None,
    keep_text=False,
    engine="auto",
    max_record_bytes=MAX_RECORD_BYTES,
) -> SampleSet:
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
        resolve_columns(columns, reading=True)  # the same argument checks as for files
        from ..lm.store import SampleStore

        # as for a file, gold is read only on request
        data = SampleStore(path, create=False).read(
            columns={"gold": None, **(columns or {})}, keep_text=keep_text
        )
        if progress is not None:
            progress(data.n_samples)
        return data
    fmt = detect_format(path, format)
    cols = resolve_columns(columns, reading=True)
    if engine not in ("auto", "pyarrow", "python"):
        raise ValueError(f"engine must be 'auto', 'pyarrow' or 'python', got {engine!r}")
    chunk_rows = int(chunk_rows)
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be >= 1")
    if progress is not None and not callable(progress):
        raise ValueError("progress must be callable")
    max_record = check_max_record(max_record_bytes)
    if fmt == "parquet" and engine == "python":
        raise ValueError("Parquet files need engine='pyarrow' (or 'auto')")
    file = os.fspath(path)
    regular = check_input(file)
    use_arrow = engine == "pyarrow" or fmt == "parquet" or (engine == "auto" and have_pyarrow())
    if use_arrow:
        import_pyarrow()
    acc = Accumulator(file, strict=strict, keep_text=keep_text, progress=progress)
    if fmt == "jsonl":
        with Source(file) as src:
            read_jsonl(src, cols, acc, chunk_rows, use_arrow, max_record)
        return acc.finish()
    if fmt == "csv":
        if use_arrow and regular:
            return read_csv_arrow(file, cols, acc, chunk_rows, max_record)
        with Source(file) as src:
            read_csv_python(src, cols, acc, chunk_rows, max_record)
        return acc.finish()
    if not regular:
        raise SampleFileError(
            file, None, "Parquet is read by seeking: give a regular file, not a pipe or FIFO"
        )
    read_parquet(file, cols, acc, chunk_rows, max_record)
    return acc.finish()
