"""Parquet sample files (pyarrow), read in record batches by the row rule."""

from __future__ import annotations

import numpy as np

from ._arrow import arrow_batch, raw_cell
from ._rows import (
    OPTIONAL_NUMBERS,
    BadRow,
    SampleFileError,
    check_row,
    check_text,
    decide_from_names,
    too_long_reason,
    used_roles,
)

__all__ = ["read_parquet"]


def read_parquet(file, cols, acc, chunk_rows, max_record):
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
    decide_from_names(
        acc.use, {role: cols[role] if cols[role] in names else None for role in OPTIONAL_NUMBERS}
    )
    want = [cols["prompt_id"], cols["reward"], *(cols[role] for role in used_roles(acc.use))]
    if acc.keep_text and cols["text"] is not None and cols["text"] in names:
        want.append(cols["text"])
    want = list(dict.fromkeys(want))
    for name in want:
        if names.count(name) > 1:
            raise SampleFileError(
                file,
                None,
                f"column {name!r} appears {names.count(name)} times "
                "in the schema: which one is meant is ambiguous",
            )
    row0 = 0
    try:
        for batch in pf.iter_batches(batch_size=chunk_rows, columns=want):
            bad = arrow_batch(batch, cols, acc, max_record)
            if bad.any():
                cells = {c: batch.column(batch.schema.names.index(c)) for c in want}
                for i in np.flatnonzero(bad):
                    cell = {c: raw_cell(cells[c][i].as_py()) for c in want}
                    try:
                        check_row(
                            cell[cols["prompt_id"]],
                            cell[cols["reward"]],
                            {role: cell[cols[role]] for role in used_roles(acc.use)},
                        )
                        if cols["text"] in cell and acc.keep_text:
                            check_text(cell[cols["text"]])
                        reason = too_long_reason(max_record)
                    except BadRow as exc:
                        reason = str(exc)
                    acc.add_bad(row0 + int(i) + 1, reason)
            row0 += batch.num_rows
            acc.tick(batch.num_rows)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SampleFileError(file, None, f"damaged Parquet file: {exc}") from None
