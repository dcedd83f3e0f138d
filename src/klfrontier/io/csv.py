"""CSV sample files: pyarrow's streaming reader for clean regular files, else the
standard-library reader (the row rule, exact physical line numbers).
"""

from __future__ import annotations

import numpy as np

from ._arrow import NotClean, arrow_batch
from ._rows import Accumulator, BadRow, SampleFileError, check_row, check_text, decide_from_names, used_roles
from ._source import CSV_BLOCK, Source, csv_field_limit, csv_rows, csv_start

__all__ = ["read_csv_python", "read_csv_arrow"]


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
            raise SampleFileError(
                file,
                1,
                f"column {header[i]!r} appears {header.count(header[i])} "
                "times in the header: which one is meant is ambiguous",
            )
    return where


def read_csv_python(src, cols, sink, chunk_rows, max_record):
    """Standard-library CSV reader: the row rule, with exact physical line numbers."""
    with csv_field_limit():
        _read_csv_records(src, cols, sink, chunk_rows, max_record)


def _read_csv_records(src, cols, sink, chunk_rows, max_record):
    header, lines, reader = csv_start(sink.file, src, max_record)
    where = _csv_header(sink.file, header, cols, sink.keep_text)
    decide_from_names(sink.use, where)
    used = [(role, where[role]) for role in used_roles(sink.use)]
    ip, ir, it = where["prompt_id"], where["reward"], where["text"]
    keep_text = sink.keep_text and it is not None
    ncol = len(header)
    pids, rs, vals, texts = [], [], {role: [] for role, _ in used}, []
    done = 0

    def on_bad(line, reason):
        nonlocal done
        done += 1
        sink.add_bad(line, reason)

    for start, row in csv_rows(lines, reader, max_record, on_bad):
        done += 1
        try:
            if len(row) != ncol:
                raise BadRow(f"expected {ncol} fields, found {len(row)}")
            pid, r, v = check_row(row[ip], row[ir], {role: row[i] for role, i in used})
            text = check_text(row[it]) if keep_text else None
        except BadRow as bad:
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


def read_csv_arrow(file, cols, acc, chunk_rows, max_record):
    """pyarrow's CSV reader for a regular file that is clean by the row rule; any bad row (or
    anything pyarrow refuses) hands the whole file to the standard-library reader.

    pyarrow reads blocks of at most ``max_record // 2`` bytes and refuses a
    record that spans more than two of them, so what it accepts is never
    longer than ``max_record`` bytes.
    """
    import pyarrow as pa
    import pyarrow.csv as pcsv

    with Source(file) as src, csv_field_limit():
        header, lines, _ = csv_start(file, src, max_record)
        sample = [x for x in lines.pending[lines.pos :] if x is not None][:4096]
    # the mean length of the rows after the header sizes the blocks
    per_row = max(1.0, sum(map(len, sample)) / len(sample)) if sample else 64.0
    where = _csv_header(file, header, cols, acc.keep_text)
    decide_from_names(acc.use, where)
    want = [cols["prompt_id"], cols["reward"], *(cols[role] for role in used_roles(acc.use))]
    if acc.keep_text and where["text"] is not None:
        want.append(cols["text"])
    want = list(dict.fromkeys(want))
    block = int(min(max(chunk_rows * per_row, 1 << 14), CSV_BLOCK, max_record // 2))
    run = Accumulator(file, strict=False, keep_text=acc.keep_text, progress=acc.progress)
    run.use = dict(acc.use)

    src = Source(file)
    try:
        with src:
            reader = pcsv.open_csv(
                src,
                read_options=pcsv.ReadOptions(block_size=block, use_threads=True),
                parse_options=pcsv.ParseOptions(newlines_in_values=True),
                convert_options=pcsv.ConvertOptions(
                    include_columns=want,
                    column_types={c: pa.binary() for c in want},
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
            for batch in reader:
                if arrow_batch(batch, cols, run).any():
                    raise NotClean
                run.tick(batch.num_rows)
    except SampleFileError:
        raise
    except Exception:  # NotClean, ArrowInvalid (e.g. a record too long)
        if src.error is not None:
            raise src.error from None
        with Source(file) as again:
            read_csv_python(again, cols, acc, chunk_rows, max_record)
        return acc.finish()
    return run.finish()
