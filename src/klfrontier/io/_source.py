"""Opening input files and reading them in bounded records: the checked byte source
(UTF-8 only, gzip, pipes), whole JSONL lines and CSV records of at most
``max_record_bytes`` bytes.
"""

from __future__ import annotations

import csv
import errno
import gzip
import os
import stat
import sys
import zlib
from contextlib import contextmanager

from ._rows import SampleFileError, too_long_reason

# Bytes read at a time; a JSONL block or a pyarrow CSV block is at most about this big.
_READ_BYTES = 4 << 20

# pyarrow's CSV block: its streaming reader holds some 50 blocks in flight (~150 MB at 4 MiB);
# 1 MiB blocks read as fast.
CSV_BLOCK = 1 << 20


def _os_error(file, exc):
    """One clear line for an operating-system error on ``file``."""
    if isinstance(exc, FileNotFoundError):
        if os.path.islink(file):
            return SampleFileError(
                file, None, f"is a symbolic link to {os.readlink(file)!r}, which does not exist"
            )
        return FileNotFoundError(errno.ENOENT, "no such file", file)
    if exc.errno == errno.ELOOP:
        return SampleFileError(file, None, "symbolic link loop (too many levels of symbolic links)")
    if isinstance(exc, IsADirectoryError):
        return SampleFileError(file, None, "is a directory, not a file")
    if isinstance(exc, PermissionError):
        return SampleFileError(file, None, "permission denied")
    return SampleFileError(file, None, exc.strerror or str(exc))


def check_input(file):
    """Refuse what cannot be read as a file; returns whether it is a regular file.

    Raises FileNotFoundError for a missing file and :class:`SampleFileError`
    for a directory, a device (``/dev/zero`` never ends), a symbolic-link
    loop or a dangling link, or a permission problem.
    """
    try:
        mode = os.stat(file).st_mode
    except OSError as exc:
        raise _os_error(file, exc) from None
    if stat.S_ISDIR(mode):
        raise SampleFileError(file, None, "is a directory, not a file")
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        raise SampleFileError(file, None, "is a device, not a sample file")
    return stat.S_ISREG(mode)


def is_gz(path):
    """Whether ``path`` names a gzip-compressed file (``.gz``, any case)."""
    return os.fspath(path).lower().endswith(".gz")


class Source:
    """A text file opened once for reading bytes (gzip-decoded when named ``.gz``), checked as read.

    ``read(n)`` returns up to ``n`` bytes (fewer only at the end), skips a
    UTF-8 byte-order mark, and raises :class:`SampleFileError` for a UTF-16
    or UTF-32 byte-order mark, a NUL byte (binary data, or text in another
    encoding), a damaged or truncated gzip stream, or a read error.  pyarrow
    may call ``read`` from its own threads; the exception reaches the caller
    through pyarrow and is also kept in ``error``.
    """

    def __init__(self, file):
        self.file = os.fspath(file)
        self.regular = check_input(self.file)
        try:
            self._raw = open(self.file, "rb")
        except OSError as exc:
            raise _os_error(self.file, exc) from None
        self._f = gzip.GzipFile(fileobj=self._raw, mode="rb") if is_gz(self.file) else self._raw
        self.offset = 0  # bytes of decoded input read so far
        self.error = None
        self.closed = False
        self._first = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if not self.closed:
            self.closed = True
            self._f.close()
            self._raw.close()

    def readable(self):
        return True

    def seekable(self):
        return False

    def _fail(self, reason):
        self.error = SampleFileError(self.file, None, reason)
        raise self.error

    def _read1(self, n):
        try:
            return self._f.read(n)
        except gzip.BadGzipFile as exc:
            self._fail(f"not a valid gzip file ({exc})")
        except EOFError:
            self._fail("truncated gzip file (it ends before its end-of-stream marker)")
        except zlib.error as exc:
            self._fail(f"damaged gzip data ({exc})")
        except OSError as exc:
            self.error = _os_error(self.file, exc)
            raise self.error from None

    def read(self, n=-1):
        if self.error is not None:
            raise self.error
        n = _READ_BYTES if n is None or n < 0 else max(int(n), 1)
        parts, got = [], 0
        while got < n:  # pipes and gzip return short reads
            data = self._read1(n - got)
            if not data:
                break
            parts.append(data)
            got += len(data)
            if self._first and got >= 4:
                break
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        if self._first and data:
            self._first = False
            if data[:4] in (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff"):
                self._fail("UTF-32 text (byte-order mark); sample and reference files must be UTF-8")
            if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
                self._fail("UTF-16 text (byte-order mark); sample and reference files must be UTF-8")
            if data.startswith(b"\xef\xbb\xbf"):
                data = data[3:]
                self.offset = 3
        nul = data.find(b"\x00")
        if nul >= 0:
            self._fail(
                f"NUL byte at byte {self.offset + nul}: not UTF-8 text "
                "(a binary file, or UTF-16/UTF-32 text?)"
            )
        self.offset += len(data)
        return data


def line_blocks(src, max_record):
    """Whole lines of a JSONL source, a block at a time, each line at most ``max_record`` bytes.

    Yields blocks of whole lines, each ending in ``\\n`` (the file's last may
    not), or ``None`` in place of a line longer than ``max_record`` bytes
    (without its ``\\n`` or ``\\r\\n``), which is then skipped unread.  Reads at most
    ``max_record`` bytes at a time, so a line inside one read is short enough
    and only a line joined to the previous read's tail needs measuring:
    memory stays below about ``2 * min(max_record, 4 MiB)`` whatever the file.

    >>> import io
    >>> src = io.BytesIO(b"ab\\n" + b"x" * 100 + b"\\ncd")
    >>> list(line_blocks(src, 64))
    [b'ab\\n', None, b'cd']
    """
    size = min(_READ_BYTES, max_record)
    tail, skipping = b"", False
    while True:
        data = src.read(size)
        if not data:
            break
        if skipping:  # the rest of an over-long line
            nl = data.find(b"\n")
            if nl < 0:
                continue
            skipping, data = False, data[nl + 1 :]
            if not data:
                continue
        buf = tail + data if tail else data
        cut = buf.rfind(b"\n")
        if cut < 0:  # no line ends in here (a final "\r" may end one)
            if len(buf) - buf.endswith(b"\r") > max_record:
                yield None
                tail, skipping = b"", True
            else:
                tail = buf
            continue
        start = 0
        first = buf.find(b"\n") if tail else 0
        if first - (buf[first - 1 : first] == b"\r") > max_record:  # joined to the last read's tail
            yield None
            start = first + 1
        if start <= cut:
            yield buf[start : cut + 1]
        tail = buf[cut + 1 :]
    if tail:
        yield tail


class RecordTooLong(Exception):
    """Raised through the csv module when a record passes the byte limit."""


class _Long:
    """A physical line longer than the limit, skipped unread; ``quotes`` counts its ``"``."""

    __slots__ = ("quotes", "open")

    def __init__(self, quotes, open):
        self.quotes, self.open = quotes, open  # open: the rest of the line is still to skip


def _first_eol(data):
    ends = [k for k in (data.find(b"\n"), data.find(b"\r")) if k >= 0]
    return min(ends) if ends else -1


class CsvLines:
    """Physical lines of a CSV source, decoded for the csv module, records bounded in bytes.

    Lines end at ``\\n``, ``\\r\\n`` or ``\\r`` (as in a text file opened
    with ``newline=""``) and are decoded with ``surrogateescape``, so an
    undecodable byte only matters in a field that is read.  Call
    :meth:`start_record` before each record (``record_start`` is then its
    first line number).  When a record's bytes (without its final line break)
    pass ``max_record``, the rest of the record is consumed without being
    held — up to the line where the ``"`` counted since the record's start
    balance, so a long quoted field is skipped whole — and
    :class:`RecordTooLong` is raised; the csv reader then starts afresh on
    the line after.  A physical line longer than ``max_record`` is never held.
    """

    def __init__(self, src, max_record):
        self.src, self.max = src, max_record
        self.size = min(_READ_BYTES, max_record)
        self.pending, self.pos = [], 0
        self.tail = self.carry = b""  # an unfinished line; read bytes not yet split
        self.eof = self.eat_lf = False  # eat_lf: drop a "\n" that follows a skipped "\r"
        self.line = 0  # physical lines consumed
        self.record_start = 1
        self.record_bytes = self.record_quotes = 0

    def start_record(self):
        self.record_start = self.line + 1
        self.record_bytes = self.record_quotes = 0

    def __iter__(self):
        return self

    def _data(self):
        """The next bytes to split: what a skip left over, else a read (``b""`` at the end)."""
        data, self.carry = (self.carry, b"") if self.carry else (self.src.read(self.size), b"")
        if self.eat_lf and data:
            self.eat_lf = False
            if data[:1] == b"\n":
                data = data[1:]
        return data

    def _fill(self):
        """Split lines off the input until some are pending (``_Long`` for an over-long one)."""
        self.pending, self.pos = [], 0
        while not self.pending:
            if self.eof:
                raise StopIteration
            data = self._data()
            if not data:
                if self.carry or self.eat_lf:
                    continue
                self.eof = True
                self.pending = [self.tail] if self.tail else []
                self.tail = b""
                continue
            joined = bool(self.tail)
            buf = self.tail + data if joined else data
            lines = buf.splitlines(keepends=True)
            self.tail = b""
            if lines and (not lines[-1].endswith((b"\n", b"\r")) or lines[-1].endswith(b"\r")):
                self.tail = lines.pop()  # unfinished, or a "\r" that a "\n" may follow
            if len(self.tail) - self.tail.endswith(b"\r") > self.max:
                ended = self.tail.endswith(b"\r")
                lines.append(_Long(self.tail.count(b'"'), open=not ended))
                self.eat_lf, self.tail = ended, b""
            if (
                joined
                and lines
                and not isinstance(lines[0], _Long)
                and len(lines[0].rstrip(b"\r\n")) > self.max
            ):
                lines[0] = _Long(lines[0].count(b'"'), open=False)  # joined to the last tail
            self.pending = lines

    def _finish(self, long):
        """Skip the rest of an over-long line, counting its quotes."""
        while long.open:
            data = self._data()
            if not data:
                self.eof, long.open = True, False
                return
            k = _first_eol(data)
            if k < 0:
                long.quotes += data.count(b'"')
                continue
            long.quotes += data[:k].count(b'"')
            if data[k : k + 1] == b"\r":
                if k + 1 == len(data):
                    self.eat_lf = True
                elif data[k + 1 : k + 2] == b"\n":
                    k += 1
            self.carry, long.open = data[k + 1 :], False

    def _next_raw(self):
        if self.pos == len(self.pending):
            self._fill()
        raw = self.pending[self.pos]
        self.pos += 1
        self.line += 1
        if isinstance(raw, _Long):
            self._finish(raw)
        return raw

    def _skip_record(self, quotes):
        """Consume the record's remaining lines: up to the one where its quotes balance."""
        while quotes % 2:
            try:
                raw = self._next_raw()
            except StopIteration:
                break
            quotes += raw.quotes if isinstance(raw, _Long) else raw.count(b'"')
        raise RecordTooLong

    def __next__(self):
        raw = self._next_raw()
        if isinstance(raw, _Long):
            self._skip_record(self.record_quotes + raw.quotes)
        self.record_quotes += raw.count(b'"')
        self.record_bytes += len(raw)
        if self.record_bytes - (len(raw) - len(raw.rstrip(b"\r\n"))) > self.max:
            self._skip_record(self.record_quotes)
        return raw.decode("utf-8", "surrogateescape")


@contextmanager
def csv_field_limit():
    """Lift the csv module's 128 KiB field limit for one read (records are bounded by CsvLines)."""
    old = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        yield
    finally:
        csv.field_size_limit(old)


def csv_start(file, src, max_record):
    """``(header, lines, reader)``: the first record of a CSV source (the header, even if empty)
    and the line source and csv reader positioned after it."""
    lines = CsvLines(src, max_record)
    reader = csv.reader(lines)
    lines.start_record()
    try:
        return next(reader), lines, reader
    except StopIteration:
        raise SampleFileError(file, None, "empty file (no header)") from None
    except (RecordTooLong, csv.Error):
        raise SampleFileError(file, 1, "header: " + too_long_reason(max_record)) from None


def csv_rows(lines, reader, max_record, on_bad):
    """``(line, row)`` for each non-empty record after the header; a record longer than
    ``max_record`` bytes, or one the csv module refuses, goes to ``on_bad(line, reason)``.
    (The caller lifts the csv module's field limit: :func:`csv_field_limit`.)"""
    while True:
        lines.start_record()
        try:
            row = next(reader)
        except StopIteration:
            return
        except RecordTooLong:
            on_bad(lines.record_start, too_long_reason(max_record))
            continue
        except csv.Error as exc:
            on_bad(lines.record_start, f"CSV syntax error: {exc}")
            continue
        if row:
            yield lines.record_start, row
