"""Sample files and reference files: read, validate and write (theory §9).

A *sample file* has one row per sampled response with the columns

* ``prompt_id`` — which prompt the response answers (compared as a string);
* ``reward`` — a finite real number (the proxy reward used for selection);
* ``gold`` (optional, read only on request) — a second finite reward per
  sample, the "gold" reward measured on what the proxy selects;
* ``logprob`` (optional) — the response's log-probability, finite and
  ``<= 0``: under the reference model in a reference (base) file, under the
  policy that generated the sample in a policy file;
* ``ref_logprob`` (optional) — in a policy file, the response's
  log-probability under the *reference* model, finite and ``<= 0``;
* ``text`` (optional) — the response itself (dropped unless ``keep_text``).

``logprob`` and ``ref_logprob`` are read whenever the file has them; ``gold``
only when the caller names its column (``columns={"gold": "gold"}``), and it
is then required.

Three formats are understood: JSON Lines (``.jsonl``, ``.ndjson``), CSV
(``.csv``; JSONL and CSV may be gzip-compressed, ``.gz``) and Parquet
(``.parquet``, ``.pq``).  Files are streamed in chunks, so a file larger than
memory can be read as long as the kept columns (8 bytes per reward and per
log-probability, 4 per prompt code) fit.  A *reference file* (``--ref`` of
the CLI) is read by :func:`read_reference`.  ``docs/input.md`` states the
rules below for users.

Limits
------
A record (a JSONL line, a CSV record with the lines its quoted fields span)
longer than ``max_record_bytes`` (default :data:`MAX_RECORD_BYTES`, 16 MiB)
is a bad row, skipped without being held in memory: memory depends neither
on line length nor on file size.  A JSON value nested deeper than
:data:`MAX_JSON_DEPTH` levels is a bad row.  Text files must be UTF-8: a
UTF-16 or UTF-32 byte-order mark or a NUL byte rejects the whole file (it is
binary or in another encoding); a UTF-8 byte-order mark is skipped.  Devices
(``/dev/zero``), directories and symbolic-link loops are refused with one
line; pipes and FIFOs are read once, front to back.

Engines and the row rule
------------------------
``pyarrow`` (the ``data`` extra) is an accelerator: JSONL goes through
``pyarrow.json`` one block of lines at a time and CSV through
``pyarrow.csv.open_csv``; Parquet needs it.  Without pyarrow (and for CSV
that is not a regular file) the standard library (``csv``, ``json``) reads,
several times slower.  The standard-library path *is* the row rule: the
pyarrow path keeps a block (JSONL) or a file (CSV) only when every row in it
is good by that rule, and otherwise hands it to the standard-library path,
so both engines keep the same rows with the same values and report the same
bad rows, and whether a row is kept never depends on its neighbours.
Invalid UTF-8 in a field that is read makes the row bad; bytes in fields
that are not read never matter.

Bad rows and line numbers
-------------------------
A bad row is skipped and recorded as ``(file, line, reason)``; ``line`` is
1-based.  For JSONL it is the physical line; for CSV the physical line on
which the record starts, the header being line 1 (records whose quoted fields
span lines are counted correctly; ``\r``, ``\n`` and ``\r\n`` each end a
line); for Parquet it is the 1-based row number.  With ``strict=True`` the
first bad row raises :class:`SampleFileError` with the message
``"FILE:LINE: reason"``.

Modules
-------
The package is laid out by concern; the names above are imported from here.

* ``klfrontier.io.read`` — :func:`read_samples`, one entry point for every format;
* ``klfrontier.io.jsonl``, ``klfrontier.io.csv``, ``klfrontier.io.parquet`` — the
  per-format readers;
* ``klfrontier.io.reference_file`` — :func:`read_reference`;
* ``klfrontier.io.write`` — :func:`write_samples`;
* ``klfrontier.io.samples`` — :class:`SampleSet`, samples grouped by prompt;
* ``_rows`` (the row rule, the limits, :class:`SampleFileError`, the accumulator of good
  rows), ``_source`` (opening files, bounded records) and ``_arrow`` (the row rule on
  pyarrow columns) — the private machinery the readers share.
"""

from __future__ import annotations

from ._rows import MAX_BAD_ROWS, MAX_JSON_DEPTH, MAX_RECORD_BYTES, SampleFileError
from .read import read_samples
from .reference_file import read_reference
from .samples import SampleSet
from .write import write_samples

# raised, shown in tracebacks and documented as klfrontier.io.SampleFileError
SampleFileError.__module__ = __name__

__all__ = [
    "SampleSet",
    "SampleFileError",
    "read_samples",
    "read_reference",
    "write_samples",
    "MAX_BAD_ROWS",
    "MAX_RECORD_BYTES",
    "MAX_JSON_DEPTH",
]
