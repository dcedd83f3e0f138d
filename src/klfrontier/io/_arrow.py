"""The row rule on pyarrow columns (CSV read by pyarrow, Parquet): the cells the
standard-library rule refuses are marked bad, cell for cell.
"""

from __future__ import annotations

import numpy as np

from ._rows import LOG_PROBS, BadRow, SampleFileError, number_cell, used_roles


def _arrow_text(arr):
    """``(strings, bad)`` for a string, binary or dictionary column: a string array (or a
    dictionary array of strings) and the mask of null cells and cells not valid UTF-8."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = arr.type
    if pa.types.is_dictionary(t):
        values, bad_values = _arrow_text(arr.dictionary)
        idx = arr.indices
        bad = bad_values[pc.fill_null(idx, 0).to_numpy(zero_copy_only=False)] | np.asarray(
            idx.is_null().to_numpy(zero_copy_only=False)
        )
        return pa.DictionaryArray.from_arrays(idx, values), bad
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        target = pa.string() if pa.types.is_binary(t) else pa.large_string()
        try:
            s = arr.cast(target)
        except pa.ArrowInvalid:  # some cell is not UTF-8: find which
            cells = arr.to_pylist()
            ok = [c is None or _valid_utf8(c) for c in cells]
            s = pa.array(
                [c.decode() if c is not None and k else None for c, k in zip(cells, ok)], type=target
            )
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


def raw_cell(x):
    """A raw cell as the row rule sees it (bytes decoded as the CSV reader decodes them)."""
    return x.decode("utf-8", "surrogateescape") if isinstance(x, bytes) else x


def arrow_numbers(arr, role):
    """``(values, bad)`` for one arrow column: float64 values, mask of unusable cells.

    Strings that pyarrow's cast refuses (as a column) are parsed one by one by
    the row rule, so a string counts as a number exactly when ``float()``
    takes it.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    t = arr.type
    if pa.types.is_dictionary(t):  # e.g. Parquet string rewards, dictionary-encoded
        v, b = arrow_numbers(arr.dictionary, role)
        idx = arr.indices
        take = pc.fill_null(idx, 0).to_numpy(zero_copy_only=False)
        null = np.asarray(idx.is_null().to_numpy(zero_copy_only=False))
        vals = np.where(null, np.nan, v[take]) if len(v) else np.full(len(arr), np.nan)
        return vals, (b[take] if len(v) else True) | null
    if (
        pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
    ):
        try:
            if pa.types.is_binary(t) or pa.types.is_large_binary(t):
                arr = arr.cast(pa.string() if pa.types.is_binary(t) else pa.large_string())
            vals = pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            vals = np.array([_try_number(raw_cell(x), role) for x in arr.to_pylist()], dtype=float)
    elif pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        vals = pc.cast(arr, pa.float64(), safe=False).to_numpy(zero_copy_only=False)
    elif pa.types.is_null(t):
        vals = np.full(len(arr), np.nan)
    else:
        raise TypeError(str(t))
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(vals)
        if role in LOG_PROBS:
            bad |= vals > 0
    return vals, bad


def _try_number(x, role):
    try:
        return number_cell(x, role)
    except BadRow:
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


def arrow_batch(batch, cols, acc, max_record=None):
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
        raise SampleFileError(
            acc.file, None, f"column {cols['prompt_id']!r} has type {exc}; expected strings or integers"
        ) from None
    vals = {}
    for role in ["reward", *used_roles(acc.use)]:
        try:
            v, b = arrow_numbers(batch.column(names.index(cols[role])), role)
        except TypeError as exc:
            raise SampleFileError(
                acc.file, None, f"column {cols[role]!r} has type {exc}; expected numbers"
            ) from None
        vals[role] = v
        bad = bad | b
    tcol = None
    if acc.keep_text and cols["text"] is not None and cols["text"] in names:
        tcol, tbad = _arrow_text(batch.column(names.index(cols["text"])))
        bad = bad | (
            tbad
            & ~np.asarray(batch.column(names.index(cols["text"])).is_null().to_numpy(zero_copy_only=False))
        )
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
        acc.add_rows(
            pid.filter(keep),
            vals["reward"][good],
            {role: vals[role][good] for role in used_roles(acc.use)},
            texts,
        )
    return bad


class NotClean(Exception):
    """The pyarrow CSV pass met a bad row: the standard-library reader takes over."""
