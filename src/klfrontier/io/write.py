""":func:`write_samples`: samples as JSONL, CSV or Parquet."""

from __future__ import annotations

import csv
import gzip
import json

import numpy as np

from .._atomic import atomic_path
from ._rows import ROLES, detect_format, import_pyarrow, resolve_columns
from ._source import is_gz
from .samples import SampleSet

__all__ = ["write_samples"]


def _open_text(path, mode, *, gz):
    if gz:
        return gzip.open(path, mode + "t", encoding="utf-8", newline="")
    return open(path, mode, encoding="utf-8", newline="")


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
    The file is written atomically (a temporary file beside ``path``,
    renamed over it when complete): a reader sees the old file or the new
    one, and a failed write leaves the old file as it was.
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
    >>> from klfrontier.io import read_samples
    >>> read_samples(path).groups["a"].tolist()
    [0.1, 0.2]
    """
    if not isinstance(samples, SampleSet):
        samples = SampleSet.from_dict(samples)
    fmt = detect_format(path, format)
    cols = resolve_columns(columns, reading=False)
    data = samples.columns()
    roles = [r for r in ROLES if r in data and cols[r] is not None]
    names = [cols[r] for r in roles]
    if len(set(names)) != len(names):
        raise ValueError(f"columns map two roles to the same name: {names}")
    cells = [data[r].tolist() if isinstance(data[r], np.ndarray) else data[r] for r in roles]
    if fmt == "parquet":
        pa = import_pyarrow()
        import pyarrow.parquet as pq

        types = {
            "prompt_id": pa.string(),
            "reward": pa.float64(),
            "gold": pa.float64(),
            "logprob": pa.float64(),
            "ref_logprob": pa.float64(),
            "text": pa.string(),
        }
        table = pa.table({n: pa.array(c, type=types[r]) for n, r, c in zip(names, roles, cells)})
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        return
    with atomic_path(path) as tmp, _open_text(tmp, "w", gz=is_gz(path)) as f:
        if fmt == "csv":
            w = csv.writer(f, lineterminator="\n")
            w.writerow(names)
            w.writerows(zip(*cells))
        else:
            for row in zip(*cells):
                f.write(json.dumps(dict(zip(names, row)), ensure_ascii=False) + "\n")
