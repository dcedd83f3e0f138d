"""JSON Lines sample files: pyarrow.json block by block, the standard library as the row rule."""

from __future__ import annotations

import io as _stdio
import json

import numpy as np

from ._rows import (
    LOG_PROBS,
    MAX_JSON_DEPTH,
    OPTIONAL_NUMBERS,
    BadRow,
    JsonObject,
    SampleFileError,
    check_row,
    check_text,
    json_loads,
    too_deep,
    too_long_reason,
    used_roles,
)
from ._source import line_blocks

__all__ = ["read_jsonl"]


def _json_row(obj, cols, acc, line):
    """Cells of one decoded JSON line (missing keys are ``None``).

    Decides the undecided optional roles from this line; the caller undoes
    the decision if the line is bad.
    """
    if not isinstance(obj, dict):
        raise BadRow(f"JSON line is not an object (got {type(obj).__name__})")
    for role in LOG_PROBS:
        if acc.use[role] is None:
            acc.use[role] = cols[role] is not None and obj.get(cols[role]) is not None
    pid, reward = obj.get(cols["prompt_id"]), obj.get(cols["reward"])
    g_name = cols["gold"]
    if g_name is None:
        acc.use["gold"] = False
    elif acc.use["gold"] is None:
        if g_name not in obj:
            # a line that is valid but for gold shows the file has no gold column
            check_row(pid, reward, {role: obj.get(cols[role]) for role in used_roles(acc.use)})
            raise SampleFileError(
                acc.file, line, f"missing column {g_name!r} (keys of the first valid line: {sorted(obj)})"
            )
        acc.use["gold"] = True
    keep_text = acc.keep_text and cols["text"] is not None
    if type(obj) is JsonObject:
        read = [
            cols["prompt_id"],
            cols["reward"],
            *(cols[role] for role in used_roles(acc.use)),
            *([cols["text"]] if keep_text else []),
        ]
        twice = [name for name in read if name in obj.repeated]
        if twice:
            raise BadRow(f"key {twice[0]!r} given twice: which value is meant is ambiguous")
    pid, r, vals = check_row(pid, reward, {role: obj.get(cols[role]) for role in used_roles(acc.use)})
    text = None
    if keep_text:
        text = obj.get(cols["text"])
        if text is not None and not isinstance(text, str):
            text = json.dumps(text)
        check_text(text)
    return pid, r, vals, text


def _jsonl_chunk_python(lines, first_line, cols, acc):
    """The row rule on a list of raw lines (bytes, without their ``\\n``)."""
    pids, rs, vals, texts = [], [], [], []
    for k, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            obj = json_loads(raw.rstrip())
            # decide the optional roles only from a line that is otherwise valid
            decided = dict(acc.use)
            try:
                pid, r, v, text = _json_row(obj, cols, acc, first_line + k)
            except BadRow:
                acc.use = decided
                raise
        except BadRow as bad:
            acc.add_bad(first_line + k, str(bad))
            continue
        pids.append(pid)
        rs.append(r)
        vals.append(v)
        texts.append(text)
    if pids:
        acc.add_rows(
            pids,
            np.array(rs),
            {role: np.array([v[role] for v in vals], dtype=float) for role in used_roles(acc.use)},
            texts,
        )


def _one_row_per_line(block, ends, rows):
    """Whether pyarrow's ``rows`` from a block of lines are one per non-blank line.

    ``ends`` are the positions of the block's ``\\n``.  pyarrow yields no row
    for a line of JSON whitespace (space, tab, CR), at least one row (or an
    error) for any other line, and two for two objects on one line or a
    line split by a lone CR; so lone CRs must be absent and the rows must
    number the non-blank lines.  (It also takes a line that starts with a
    UTF-8 byte-order mark, which the row rule refuses: none may appear.)
    """
    if b"\r" in block and block.count(b"\r") != block.count(b"\r\n"):
        return False
    if b"\xef\xbb\xbf" in block:
        return False  # pyarrow skips a byte-order mark that starts a line
    a = np.frombuffer(block, dtype=np.uint8)
    starts = np.concatenate(([0], ends + 1))
    starts = starts[starts < len(a)]
    first = a[starts]
    blank = 0
    for s in starts[(first == 0x0A) | (first == 0x0D) | (first == 0x20) | (first == 0x09)]:
        end = block.find(b"\n", int(s))
        blank += not block[int(s) : end if end >= 0 else len(block)].strip(b" \t\r")
    return rows == len(starts) - blank


def _nested_too_deep(block, rows):
    """Whether some line of a block (of ``rows`` JSON objects) nests deeper than MAX_JSON_DEPTH.

    Each object has one ``{``; unless the other ``{`` and ``[`` number
    MAX_JSON_DEPTH or more, no line can reach that depth.
    """
    a = np.frombuffer(block, dtype=np.uint8)
    if np.count_nonzero((a | 0x20) == 0x7B) - rows < MAX_JSON_DEPTH:  # "{" and "["
        return False
    return any(too_deep(line) for line in block.split(b"\n"))


def _arrow_json(block, schema):
    """pyarrow.json on one block of lines, in ~1 MiB pieces parsed in parallel (one piece
    when a line is longer)."""
    import pyarrow as pa
    import pyarrow.json as pj

    size = min(len(block) + 1, 1 << 20)
    while True:
        try:
            return pj.read_json(
                _stdio.BytesIO(block),
                read_options=pj.ReadOptions(block_size=size, use_threads=True),
                parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
            )
        except pa.ArrowInvalid as exc:
            if "straddl" not in str(exc) or size > len(block):
                raise
            size = len(block) + 1


def _jsonl_chunk_arrow(block, ends, cols, acc):
    """Parse a block of lines with pyarrow.json; ``False``: use the row rule.

    ``ends`` are the positions of the block's ``\\n``.

    Only a block whose every line is good by the row rule is taken: one row
    per non-blank line (:func:`_one_row_per_line`), no cell missing, null,
    empty, non-finite, negative zero, not valid UTF-8 or of the wrong type,
    no line nested deeper than MAX_JSON_DEPTH, and no key that is read
    repeated (pyarrow refuses those).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    fields = [(cols["prompt_id"], pa.string()), (cols["reward"], pa.float64())]
    for role in OPTIONAL_NUMBERS:
        if cols[role] is not None and acc.use[role] is not False:
            fields.append((cols[role], pa.float64()))
    if acc.keep_text and cols["text"] is not None:
        fields.append((cols["text"], pa.string()))
    if len({f[0] for f in fields}) != len(fields):
        return False
    table = None
    for pid_type in (pa.string(), pa.int64()):
        fields[0] = (cols["prompt_id"], pid_type)
        try:
            table = _arrow_json(block, pa.schema(fields))
            break
        except Exception:  # ArrowInvalid, and UnicodeDecodeError for bad UTF-8
            continue
    if table is None:
        return False
    rows = table.num_rows
    if not _one_row_per_line(block, ends, rows) or _nested_too_deep(block, rows):
        return False
    try:
        pid = table.column(cols["prompt_id"]).combine_chunks().cast(pa.string())
        pid.validate(full=True)  # valid UTF-8
        if pid.null_count or pc.any(pc.equal(pid, "")).as_py():
            return False
        r = table.column(cols["reward"]).to_numpy()
        if table.column(cols["reward"]).null_count or not np.isfinite(r).all() or _negative_zero(r):
            return False
        use = dict(acc.use)
        for role in OPTIONAL_NUMBERS:
            if cols[role] is None:
                use[role] = False
            elif use[role] is None:  # the first valid line decides (all lines here are)
                # a requested gold is used; a line without it sends the chunk to the exact path
                use[role] = role == "gold" or table.column(cols[role])[0].is_valid
        vals = {}
        for role in used_roles(use):
            col = table.column(cols[role])
            v = vals[role] = col.to_numpy(zero_copy_only=False)
            if (
                col.null_count
                or not np.isfinite(v).all()
                or (role in LOG_PROBS and (v > 0).any())
                or _negative_zero(v)
            ):
                return False
        texts = None
        if acc.keep_text:
            if cols["text"] is not None:
                tcol = table.column(cols["text"]).combine_chunks()
                tcol.validate(full=True)
                texts = tcol.to_pylist()
            else:
                texts = [None] * rows
    except Exception:
        return False
    acc.use = use
    acc.add_rows(pid, r, vals, texts)
    return True


def _negative_zero(v):
    """Whether ``v`` holds -0.0: pyarrow reads JSON's ``-0`` so, Python's parser as the integer 0."""
    return bool(np.signbit(v[v == 0]).any())


def _row_chunks(block, chunk_rows):
    """``(k, piece, n, ends)``: pieces of a block of whole lines holding at most ``chunk_rows``
    lines each, ``k`` the piece's first line (from 0), ``ends`` its ``\\n`` positions."""
    ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 0x0A)
    n = len(ends) + (not block.endswith(b"\n"))  # the file's last line may lack "\n"
    if n <= chunk_rows:
        yield 0, block, n, ends
        return
    stops = np.append(ends + 1, len(block))
    start = 0
    for k in range(0, n, chunk_rows):
        m = min(chunk_rows, n - k)
        stop = int(stops[k + m - 1])
        yield k, block[start:stop], m, ends[k : k + m] - start
        start = stop


def read_jsonl(src, cols, acc, chunk_rows, use_arrow, max_record):
    line = 1
    for block in line_blocks(src, max_record):
        if block is None:
            acc.add_bad(line, too_long_reason(max_record))
            acc.tick(1)
            line += 1
            continue
        for k, piece, m, ends in _row_chunks(block, chunk_rows):
            if not (use_arrow and _jsonl_chunk_arrow(piece, ends, cols, acc)):
                _jsonl_chunk_python(piece.split(b"\n")[:m], line + k, cols, acc)
            acc.tick(m)
            last = m
        line += k + last
