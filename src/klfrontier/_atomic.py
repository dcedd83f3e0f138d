"""Crash-safe file writes: write a temporary file beside the target, fsync it, rename it over.

A reader sees the old file or the new one, never half of one.  The file
renamed in has the permission bits of the file it replaces, or those a plain
``open(path, "w")`` would give a new file (``0o666 & ~umask``).
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import stat
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np

__all__ = [
    "atomic_path",
    "file_mode",
    "umask",
    "write_text",
    "write_csv",
    "write_table",
    "csv_cell",
    "sha256_file",
]


_UMASK_LOCK = threading.Lock()


def umask() -> int:
    """The process umask, read without changing it where the platform shows it (Linux ``/proc``).

    Elsewhere it is read by setting and restoring it, under a lock; meanwhile
    the mask is ``0o077``, so a file another thread creates in that window is
    at most more private, never more open.
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        old = os.umask(0o077)
        os.umask(old)
    return old


def file_mode(path) -> int:
    """Permission bits for a file written to ``path``: those of the file already there
    (links followed), else those of a new file, ``0o666 & ~umask``.

    >>> file_mode("/nonexistent/dir/f") == 0o666 & ~umask()
    True
    """
    try:
        st = os.stat(path)
    except OSError:
        return 0o666 & ~umask()
    return stat.S_IMODE(st.st_mode) & 0o777


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success fsync it and rename it to ``path``.

    The file renamed in has :func:`file_mode` of ``path`` (``mkstemp`` alone
    would leave it ``0o600``).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # set once the writer is done, so it holds for whatever file the writer left at tmp
        os.chmod(tmp, file_mode(path))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def write_text(path, text):
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def sha256_file(path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def csv_cell(x):
    """One CSV field: floats in shortest round-trip form (``repr``: ``inf``/``-inf``), NaN and None empty,
    booleans ``true``/``false``.

    >>> [csv_cell(v) for v in (0.1, float("inf"), float("nan"), None, np.True_, np.int64(3), "a")]
    ['0.1', 'inf', '', '', 'true', '3', 'a']
    """
    if x is None:
        return ""
    if isinstance(x, (bool, np.bool_)):
        return "true" if x else "false"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        v = float(x)
        return "" if math.isnan(v) else repr(v)
    return str(x)


def write_csv(path, columns, rows):
    """RFC 4180 CSV (CRLF line ends, minimal quoting), UTF-8, header first, written atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow([str(c) for c in columns])
            w.writerows([csv_cell(v) for v in row] for row in rows)


def write_table(path, columns, *, format="csv"):
    """Write a dict of equal-length columns as CSV (:func:`write_csv`) or Parquet, atomically."""
    names = list(columns)
    arrays = [np.asarray(columns[k]) for k in names]
    if format == "csv":
        write_csv(path, names, zip(*(a.tolist() for a in arrays)))
        return
    with atomic_path(path) as tmp:
        if format == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.table(
                {
                    k: (pa.array([str(x) for x in a]) if a.dtype == object else a)
                    for k, a in zip(names, arrays)
                }
            )
            pq.write_table(table, tmp)
        else:
            raise ValueError(f"format must be 'csv' or 'parquet', got {format!r}")
