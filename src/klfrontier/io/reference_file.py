""":func:`read_reference`: a reference distribution (rewards and probabilities) from CSV or JSON."""

from __future__ import annotations

import array
import json
import os

import numpy as np

from ._arrow import NotClean, arrow_numbers
from ._rows import (
    MAX_JSON_DEPTH,
    MAX_RECORD_BYTES,
    BadRow,
    JsonObject,
    SampleFileError,
    check_max_record,
    have_pyarrow,
    import_pyarrow,
    json_object,
    number_cell,
    too_deep,
)
from ._source import CSV_BLOCK, Source, check_input, csv_field_limit, csv_rows, csv_start

__all__ = ["read_reference"]


def read_reference(
    path,
    *,
    reward_col="reward",
    prob_col="prob",
    format=None,
    engine="auto",
    max_record_bytes=MAX_RECORD_BYTES,
):
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
    max_record = check_max_record(max_record_bytes)
    file = os.fspath(path)
    regular = check_input(file)
    if format == "json":
        return _read_reference_json(file, reward_col, prob_col, max_record)
    if engine == "pyarrow" or (engine == "auto" and have_pyarrow()):
        import_pyarrow()
        if regular:
            return _read_reference_csv_arrow(file, reward_col, prob_col, max_record)
    return _read_reference_csv_python(file, reward_col, prob_col, max_record)


def _ref_layout(file, header, reward_col, prob_col):
    """``(i_reward, i_prob, n_fields, has_header)`` from the first CSV record."""
    names = [h.strip() for h in header]
    if reward_col in names and prob_col in names:
        for col in (reward_col, prob_col):
            if names.count(col) > 1:
                raise SampleFileError(
                    file,
                    1,
                    f"column {col!r} appears {names.count(col)} times "
                    "in the header: which one is meant is ambiguous",
                )
        return names.index(reward_col), names.index(prob_col), len(names), True
    try:
        [float(x) for x in header]
    except ValueError:
        raise SampleFileError(
            file,
            1,
            f"CSV header must contain {reward_col!r} and {prob_col!r} "
            f"(found {names}), or give two headerless columns "
            "reward,prob",
        ) from None
    if len(header) != 2:
        raise SampleFileError(file, 1, "a headerless CSV needs exactly two columns (reward, prob)")
    return 0, 1, 2, False


def _ref_row(row, layout):
    ir, ip, ncol, _ = layout
    if len(row) != ncol:
        raise BadRow(f"expected {ncol} fields, found {len(row)}")
    return number_cell(row[ir], "reward"), number_cell(row[ip], "prob")


def _read_reference_csv_python(file, reward_col, prob_col, max_record):
    def bad(line, reason):
        raise SampleFileError(file, line, reason)

    rewards, probs = array.array("d"), array.array("d")
    with Source(file) as src, csv_field_limit():
        header, lines, reader = csv_start(file, src, max_record)
        layout = _ref_layout(file, header, reward_col, prob_col)
        rows = csv_rows(lines, reader, max_record, bad)
        if not layout[3]:
            rewards.append(number_cell(header[0], "reward"))
            probs.append(number_cell(header[1], "prob"))
        for line, row in rows:
            try:
                r, p = _ref_row(row, layout)
            except BadRow as exc:
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

    with Source(file) as src, csv_field_limit():
        header = csv_start(file, src, max_record)[0]
    layout = _ref_layout(file, header, reward_col, prob_col)
    ir, ip, ncol, has_header = layout
    names = [f"c{i}" for i in range(ncol)]

    rewards, probs = [], []
    src = Source(file)
    try:
        with src:
            reader = pcsv.open_csv(
                src,
                read_options=pcsv.ReadOptions(
                    block_size=min(CSV_BLOCK, max_record // 2),
                    use_threads=True,
                    column_names=names,
                    skip_rows=1 if has_header else 0,
                ),
                parse_options=pcsv.ParseOptions(newlines_in_values=True),
                convert_options=pcsv.ConvertOptions(
                    include_columns=[names[ir], names[ip]],
                    column_types={names[ir]: pa.binary(), names[ip]: pa.binary()},
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
            for batch in reader:
                r, rbad = arrow_numbers(batch.column(names[ir]), "reward")
                p, pbad = arrow_numbers(batch.column(names[ip]), "prob")
                if rbad.any() or pbad.any():
                    raise NotClean
                rewards.append(r)
                probs.append(p)
    except SampleFileError:
        raise
    except Exception:  # NotClean, ArrowInvalid: let the exact reader say why
        if src.error is not None:
            raise src.error from None
        return _read_reference_csv_python(file, reward_col, prob_col, max_record)
    if not rewards or not sum(map(len, rewards)):
        raise SampleFileError(file, None, "no rows")
    pa.default_memory_pool().release_unused()
    r = np.concatenate(rewards)
    del rewards  # one column's chunks at a time: the peak is 3 columns, not 4
    p = np.concatenate(probs)
    del probs
    pa.default_memory_pool().release_unused()  # the chunks' pooled buffers go back to the system
    return r, p


def _read_reference_json(file, reward_col, prob_col, max_record):
    with Source(file) as src:
        raw = src.read(max_record + 1)
    if len(raw) > max_record:
        raise SampleFileError(
            file,
            None,
            f"JSON reference file larger than {max_record} bytes (max_record_bytes): give a CSV file instead",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SampleFileError(file, None, f"not valid UTF-8 (byte {exc.start})") from None
    if too_deep(raw):
        raise SampleFileError(file, None, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        data = json.loads(text, object_pairs_hook=json_object)
    except json.JSONDecodeError as exc:
        raise SampleFileError(file, None, f"invalid JSON ({exc.msg} at line {exc.lineno})") from None
    except (ValueError, RecursionError) as exc:
        raise SampleFileError(file, None, f"invalid JSON ({exc})") from None

    def numbers(cells, what):
        out = np.empty(len(cells))
        for i, (r, p) in enumerate(cells):
            try:
                out[i] = number_cell(r if what == "reward" else p, what)
            except BadRow as exc:
                raise SampleFileError(file, None, f"item {i}: {exc}") from None
        return out

    def repeated(obj, where):
        if type(obj) is JsonObject:
            twice = [k for k in (reward_col, prob_col) if k in obj.repeated]
            if twice:
                raise SampleFileError(
                    file, None, f"{where}key {twice[0]!r} given twice: which value is meant is ambiguous"
                )

    if isinstance(data, dict):
        repeated(data, "")
        if reward_col not in data or prob_col not in data:
            raise SampleFileError(file, None, f"JSON object needs keys {reward_col!r} and {prob_col!r}")
        r, p = data[reward_col], data[prob_col]
        if not isinstance(r, list) or not isinstance(p, list):
            raise SampleFileError(file, None, f"{reward_col!r} and {prob_col!r} must be lists")
        if len(r) != len(p):
            raise SampleFileError(
                file,
                None,
                f"{reward_col!r} has {len(r)} values and {prob_col!r} {len(p)}: give one per outcome",
            )
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
        raise SampleFileError(
            file, None, "expected an object of two lists, a list of records or of [reward, prob] pairs"
        )
    if not pairs:
        raise SampleFileError(file, None, "no outcomes")
    return numbers(pairs, "reward"), numbers(pairs, "prob")
