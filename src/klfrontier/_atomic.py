"""Crash-safe file writes: write a temporary file beside the target, fsync it, rename it over.

A reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

__all__ = ["atomic_path", "write_text", "write_table"]


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success fsync it and rename it to ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:      # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:      # pragma: no cover
        pass
    finally:
        os.close(fd)


def write_text(path, text):
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _csv_cell(v):
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    return v


def write_table(path, columns, *, format="csv"):
    """Write a dict of equal-length columns as CSV (RFC 4180) or Parquet, atomically.

    In CSV, NaN is an empty field and infinities are ``inf``/``-inf``.
    """
    names = list(columns)
    arrays = [np.asarray(columns[k]) for k in names]
    with atomic_path(path) as tmp:
        if format == "csv":
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                w.writerow(names)
                for row in zip(*(a.tolist() for a in arrays)):
                    w.writerow([_csv_cell(v) for v in row])
        elif format == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.table({k: (pa.array([str(x) for x in a]) if a.dtype == object else a)
                              for k, a in zip(names, arrays)})
            pq.write_table(table, tmp)
        else:
            raise ValueError(f"format must be 'csv' or 'parquet', got {format!r}")
