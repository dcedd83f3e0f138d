"""Self-contained HTML reports: figures (PNG embedded; PNG and/or SVG beside the page), tables
(also as CSV), strict JSON, written atomically under a lock.

The report holds no mathematics: it lays out what the caller computed.  How a
report folder is written, locked and swapped in, and how every file carries
the run id, is in :func:`write_report` and ``docs/cli.md``.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
import secrets
import shutil
import sys
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import quote

import numpy as np

from ._atomic import fsync_dir, sha256_file, write_csv
from ._json import dumps, jsonable
from .errors import KlfrontierError

__all__ = [
    "Section",
    "write_report",
    "to_jsonable",
    "to_json",
    "check_report",
    "prepare_report_dir",
    "ReportLock",
    "ReportBusyError",
    "new_run_id",
    "lock_path",
    "MANIFEST",
]

#: Sub-folder of a report holding one CSV per table.
TABLES_DIR = "tables"


@dataclass
class Section:
    """One part of a report: a heading, a paragraph, figures and tables.

    ``figures``: list of ``(file stem, figure, caption)``, where the figure is
    a matplotlib Figure or a function of no arguments that draws one (called
    only when the report is written, so a job shown on the console draws no
    figure); the stem names ``<stem>.png`` and ``<stem>.svg`` and is unique in
    a report.
    ``tables``: list of ``(caption, column names, rows)`` or
    ``(caption, column names, rows, note)``, where ``note`` is one sentence
    printed under the table (e.g. which method made its intervals).
    """

    heading: str
    text: str = ""
    figures: list = field(default_factory=list)
    tables: list = field(default_factory=list)


def to_jsonable(x):
    """Values that strict JSON can hold: the library's one rule, :func:`klfrontier._json.jsonable`.

    An infinity becomes the *string* ``"inf"`` or ``"-inf"``, NaN (no value,
    e.g. no interval) becomes ``null``; nothing returned holds a non-finite
    float, so ``json.dumps(to_jsonable(x), allow_nan=False)`` never fails.

    Examples
    --------
    >>> to_jsonable({"kl": np.array([0.5, np.inf]), "lo": np.nan, 3: (np.int64(2), np.bool_(False))})
    {'kl': [0.5, 'inf'], 'lo': None, '3': [2, False]}
    """
    return jsonable(x)


def to_json(x, *, indent=2):
    """Strict JSON text of ``x`` after :func:`to_jsonable` (no NaN or Infinity token, ever).

    Examples
    --------
    >>> to_json({"a": [1.0, float("inf"), float("nan")]}, indent=None)
    '{"a": [1.0, "inf", null]}'
    """
    return dumps(x, indent=indent)


def _cell(x):
    if x is None:
        return "–"
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (float, np.floating)):
        if math.isinf(x):
            return "∞" if x > 0 else "−∞"
        if math.isnan(x):
            return "–"
        return f"{x:.6g}"
    return html.escape(str(x))


def _slug(text, max_len=60):
    """ASCII file-name stem from any text (accents folded, the rest dropped).

    >>> _slug("2 · Aggregate over prompts: Best-of-N (λ ≥ 0)")
    '2-aggregate-over-prompts-best-of-n-0'
    """
    s = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii").lower()
    return re.sub(r"[^a-z0-9]+", "-", s).strip("-")[:max_len].strip("-")


def _unpack_table(table):
    if not isinstance(table, (tuple, list)) or len(table) not in (3, 4):
        raise ValueError(
            "sections: a table must be (caption, columns, rows) or (caption, columns, rows, note), "
            f"got {type(table).__name__} of length {len(table) if hasattr(table, '__len__') else '?'}"
        )
    caption, columns, rows = table[:3]
    note = table[3] if len(table) == 4 else ""
    return str(caption), list(columns), [list(r) for r in rows], "" if note is None else str(note)


def _check_stem(stem, taken):
    if (
        not isinstance(stem, str)
        or not stem
        or stem.startswith(".")
        or "/" in stem
        or "\\" in stem
        or stem != stem.strip()
    ):
        raise ValueError(f"sections: figure stem {stem!r} is not a plain file name")
    if stem in taken:
        raise ValueError(f"sections: figure stem {stem!r} is used twice")
    taken.add(stem)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1b1b1b;line-height:1.5}
h1{font-size:1.7em;border-bottom:2px solid #1f3b73;padding-bottom:.3em}
h2{font-size:1.25em;margin-top:2em;color:#1f3b73}
figure{margin:1.2em 0;text-align:center}
figure img{max-width:100%;border:1px solid #ddd;border-radius:4px}
figcaption{font-size:.9em;color:#555;margin-top:.4em;text-align:left}
table{border-collapse:collapse;margin:1em 0;font-size:.88em}
.wide{overflow-x:auto;max-width:100%}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#eef2f8}
caption{caption-side:top;text-align:left;font-weight:600;padding:.3em 0}
.lead{font-size:1.05em;background:#f6f8fb;border-left:4px solid #1f3b73;padding:.6em 1em}
footer{margin-top:3em;font-size:.8em;color:#777}
caption a,figcaption a{font-weight:400;font-size:.85em;margin-left:.5em}
p.note{font-size:.85em;color:#555;margin:-.6em 0 1.4em}
"""


#: The report's own list of its files: run id, then size and sha256 of every file it wrote.
MANIFEST = "report-manifest.json"
#: Manifest format tag.
MANIFEST_FORMAT = "klfrontier-report/1"
FIGURE_FORMATS = ("png", "svg")
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class ReportBusyError(KlfrontierError, RuntimeError):
    """Another process holds the lock of a report folder (it is writing a report there)."""


def new_run_id() -> str:
    """A fresh run id: UTC time to the second and 32 random bits, e.g. ``20250101T120000Z-1a2b3c4d``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(4)


# ------------------------------------------------------------------------------ the folder lock
_HELD: dict = {}  # lock-file path -> [fd, depth]: the locks this process holds


def lock_path(out_dir) -> Path:
    """The lock file of a report folder: ``.<name>.lock`` beside it (never removed)."""
    out = _resolve(out_dir)
    return out.parent / f".{out.name}.lock"


class ReportLock:
    """An exclusive ``flock`` on :func:`lock_path`, reentrant within one process.

    Acquiring fails at once with :class:`ReportBusyError` when another
    process (or another open of the lock file) holds it; the kernel releases
    it when the holder exits, killed or not.  Use as a context manager or
    call :meth:`release`.
    """

    def __init__(self, out_dir):
        self.out = _resolve(out_dir)
        self.path = lock_path(self.out)
        key = str(self.path)
        if key in _HELD:
            _HELD[key][1] += 1
        else:
            _HELD[key] = [_acquire(self.path, self.out), 1]
        self._key, self._held = key, True

    def release(self):
        """Drop this hold; the lock goes when the last hold in the process does."""
        if not self._held:
            return
        self._held = False
        entry = _HELD[self._key]
        entry[1] -= 1
        if entry[1] == 0:
            del _HELD[self._key]
            os.close(entry[0])  # closing the descriptor releases the flock

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _acquire(path, out):
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        return os.open(os.devnull, os.O_RDONLY)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        finally:
            os.close(fd)
        who = f" (process {holder})" if holder.isdigit() else ""
        raise ReportBusyError(
            f"{out}: another klfrontier run{who} is writing a report there "
            f"(lock {path.name} held); wait for it to finish or write elsewhere"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
    return fd


def _resolve(out_dir) -> Path:
    return Path(os.path.realpath(os.path.abspath(os.fspath(out_dir))))


def prepare_report_dir(out_dir) -> ReportLock:
    """Lock a report folder, finish or clean up an interrupted earlier write, and create it.

    Call before the computation, so that a folder that cannot hold a report
    (a file, a mount point, the current directory, an unwritable parent) or
    one another run is writing fails at once; keep the returned lock until
    :func:`write_report` is done (it re-enters the same lock).

    Raises
    ------
    ReportBusyError
        Another process holds the lock.
    ValueError
        ``out_dir`` is a file, a mount point, or holds the current directory.
    OSError
        The folder or its parent cannot be created or written.
    """
    out = _resolve(out_dir)
    if out == Path(out.anchor) or os.path.ismount(out):
        raise ValueError(
            f"{out}: is a mount point; give a folder inside it "
            "(a report is written beside its folder, then swapped in)"
        )
    cwd = Path(os.path.realpath(os.getcwd()))
    if cwd == out or out in cwd.parents:
        raise ValueError(
            f"{out}: holds the current directory; a report replaces its folder whole, "
            "so give a folder that does not contain where you are"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = ReportLock(out)
    try:
        _recover(out)
        if os.path.lexists(out) and not out.is_dir():
            raise ValueError(f"{out}: exists and is not a directory")
        out.mkdir(exist_ok=True)
        if not os.access(out.parent, os.W_OK | os.X_OK):
            raise PermissionError(
                13,
                "the folder that holds it is not writable (the new report is "
                "written beside it, then swapped in)",
                str(out),
            )
    except BaseException:
        lock.release()
        raise
    return lock


def _leftovers(out):
    """``.<name>.new-*`` and ``.<name>.old-*`` beside ``out``: what an interrupted write left."""
    new, old = [], []
    prefix = f".{out.name}."
    try:
        names = os.listdir(out.parent)
    except FileNotFoundError:
        return new, old
    for name in sorted(names):
        if name.startswith(prefix + "new-"):
            new.append(out.parent / name)
        elif name.startswith(prefix + "old-"):
            old.append(out.parent / name)
    return new, old


def _recover(out):
    """Under the lock: if ``out`` is missing because a write was killed between its two renames,
    put the complete report back (the new one if it is complete, else the old one); then delete
    every other leftover."""
    new, old = _leftovers(out)
    if not os.path.lexists(out):
        for cand in reversed(new):
            try:
                check_report(cand)
            except (ValueError, OSError):
                continue
            os.rename(cand, out)
            break
        else:
            if old:
                os.rename(old[-1], out)
        fsync_dir(out.parent)
    for p in new + old:
        if os.path.lexists(p):
            shutil.rmtree(p, ignore_errors=True)


# -------------------------------------------------------------------------- the atomic swap
def _exchange(a, b) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import errno

    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_in(tmp, out, run_id):
    """Make the complete folder ``tmp`` the report at ``out``; the old report is then deleted.

    Where the kernel can exchange two paths atomically (Linux ``renameat2``), a
    reader sees the old folder or the new one and never neither.  Elsewhere
    ``out`` is renamed aside to ``.<name>.old-<run id>`` and ``tmp`` renamed
    in: killed between the two renames, ``out`` is missing while both complete
    folders sit beside it, and the next write (:func:`prepare_report_dir`)
    renames the new one in.
    """
    if not os.path.lexists(out):
        os.rename(tmp, out)
        fsync_dir(out.parent)
        return
    if _exchange(tmp, out):
        fsync_dir(out.parent)
        shutil.rmtree(tmp)  # now the old report
        return
    old = out.parent / f".{out.name}.old-{run_id}"
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)  # an error (not a kill) between the renames: the old report goes back
        raise
    fsync_dir(out.parent)
    shutil.rmtree(old)


def _report_files_of(out):
    """Relative paths (POSIX) of the files the report in ``out`` wrote: its manifest's list, or,
    for a report from before manifests, the names this module writes."""
    try:
        files = json.loads((out / MANIFEST).read_text(encoding="utf-8"))["files"]
        return set(files) | {MANIFEST}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    names = {"index.html", "summary.json", "per_prompt.parquet", "per_prompt.csv", MANIFEST}
    names |= {p.name for p in out.iterdir() if p.suffix in (".png", ".svg")}
    if (out / TABLES_DIR).is_dir():
        names |= {f"{TABLES_DIR}/{p.name}" for p in (out / TABLES_DIR).glob("*.csv")}
    return names


def _carry_user_files(old, new):
    """Hard-link (copy where links fail) every file of ``old`` that its report did not write into
    ``new``, unless the new report has a file of that name: the user's files survive the swap."""
    ours = _report_files_of(old)
    for root, dirs, files in os.walk(old):
        rel_root = Path(root).relative_to(old)
        dirs.sort()
        for name in list(dirs):
            src = Path(root) / name
            if src.is_symlink():  # a link to a folder is carried as a link
                dirs.remove(name)
                files.append(name)
            else:
                (new / rel_root / name).mkdir(exist_ok=True)
        for name in files:
            rel = (rel_root / name).as_posix()
            src, dst = Path(root) / name, new / rel_root / name
            if rel in ours or os.path.lexists(dst):
                continue
            try:
                os.link(src, dst, follow_symlinks=False)
            except OSError:
                if src.is_symlink():
                    os.symlink(os.readlink(src), dst)
                else:
                    shutil.copy2(src, dst)


def _fsync_tree(top):
    """fsync every regular file and every folder under ``top`` (folders after their entries)."""
    for root, _dirs, files in os.walk(top, topdown=False):
        for name in files:
            p = os.path.join(root, name)
            if os.path.islink(p):
                continue
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(root)


def check_report(out_dir) -> dict:
    """Check that a folder holds one complete report: returns its manifest.

    Every file the manifest lists exists, is not empty, and has the listed
    size and sha256; ``summary.json`` carries the manifest's ``run_id`` and
    ``index.html`` the same id in its ``klfrontier-run-id`` meta tag.

    Raises
    ------
    ValueError
        Naming the first file that fails (or the missing manifest).
    """
    out = Path(out_dir)
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{out}: no {MANIFEST}: not a complete klfrontier report") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{out / MANIFEST}: unreadable ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{out / MANIFEST}: not a {MANIFEST_FORMAT} manifest")
    rid = manifest.get("run_id")
    for rel, meta in manifest.get("files", {}).items():
        path = out.joinpath(*PurePosixPath(rel).parts)
        try:
            size = path.stat().st_size
        except OSError:
            raise ValueError(f"{path}: listed in the manifest of run {rid} but missing") from None
        if size == 0 or size != meta.get("bytes") or sha256_file(path) != meta.get("sha256"):
            raise ValueError(
                f"{path}: not the file run {rid} wrote (size {size}, expected {meta.get('bytes')})"
            )
    if "summary.json" in manifest.get("files", {}):
        got = json.loads((out / "summary.json").read_text(encoding="utf-8")).get("run_id")
        if got != rid:
            raise ValueError(f"{out / 'summary.json'}: run id {got!r}, manifest {rid!r}")
    if "index.html" in manifest.get("files", {}):
        m = re.search(
            r"<meta name='klfrontier-run-id' content='([^']*)'>",
            (out / "index.html").read_text(encoding="utf-8"),
        )
        if m is None or m.group(1) != rid:
            raise ValueError(f"{out / 'index.html'}: run id {m and m.group(1)!r}, manifest {rid!r}")
    return manifest


# ------------------------------------------------------------------------------ the report
def write_report(
    out_dir,
    title,
    sections,
    summary,
    *,
    lead="",
    embed=True,
    extra_files=None,
    figure_formats=FIGURE_FORMATS,
    run_id=None,
):
    """Write a report (``index.html``, figures, table CSVs, ``summary.json``, extra files) into
    ``out_dir``, atomically: a reader sees the old complete report or the new one, never a mix.

    Parameters
    ----------
    out_dir : path
        The report folder; created if needed (with its parents).
    title : str
    sections : list of Section
    summary : dict
        Every number shown; written as strict JSON ``summary.json`` (see
        :func:`to_jsonable` for the one rule on infinities and NaN), with the
        run id added as its first key ``run_id``.
    lead : str
        An opening paragraph (plain text).
    embed : bool
        Embed figures as data URIs (the page then works on its own): the
        PNG, or the SVG when no PNG is written.  The files are written
        beside the page either way.
    extra_files : dict relative name -> callable(path), optional
        Further files (e.g. per-prompt Parquet tables): each callable is
        given the absolute path it must write (inside the folder being
        built); the page links to them.
    figure_formats : tuple of {"png", "svg"}
        Which files each figure is written as (``<stem>.png``, ``<stem>.svg``);
        the page links whichever were written.
    run_id : str, optional
        The run's id (default :func:`new_run_id`): letters, digits, ``.``,
        ``_`` and ``-``, at most 64 characters.

    Returns
    -------
    Path of ``index.html``.

    Notes
    -----
    How the write is made atomic (``docs/cli.md``):

    1. Everything is checked before anything is written.
    2. The lock ``.<name>.lock`` beside ``out_dir`` is taken
       (:class:`ReportLock`; :class:`ReportBusyError` if another process
       holds it), and what an interrupted earlier write left is finished or
       deleted.
    3. The report is written into ``.<name>.new-<run id>`` beside ``out_dir``
       (same filesystem).  Files in the old folder that its report did not
       write (the user's own) are hard-linked into it.  Every file and folder
       is fsynced, then ``report-manifest.json`` (run id, size and sha256 of
       every report file) is written last and fsynced.
    4. The new folder is swapped in (:func:`_swap_in`); the old one is
       deleted.  No file of the old report survives beside the new one.

    Every file carries the run id: ``summary.json`` (``run_id``),
    ``index.html`` (``<meta name='klfrontier-run-id'>``), and through the
    manifest's sha256 the figures, the CSV and the Parquet files;
    :func:`check_report` checks all of it.

    Every table is also written as ``tables/<slug>.csv`` (slug from the
    section heading and caption, ASCII, unique in the report; RFC 4180;
    floats in shortest round-trip form, ``inf``/``-inf``, NaN and None as
    an empty field), and its caption links to it.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()) / "report"
    >>> table = ("Best-of-N", ["N", "reward"], [[1, 0.5], [2, float("inf")]], "Intervals: none.")
    >>> sec = Section("Results", "One table.", [], [table])
    >>> write_report(d, "Demo", [sec], {"reward": [0.5, float("inf")]}, run_id="r1").name
    'index.html'
    >>> (d / "tables" / "results-best-of-n.csv").read_text().splitlines()
    ['N,reward', '1,0.5', '2,inf']
    >>> (d / "summary.json").read_text().split()
    ['{', '"run_id":', '"r1",', '"reward":', '[', '0.5,', '"inf"', ']', '}']
    >>> sorted(check_report(d)["files"]), check_report(d)["run_id"]
    (['index.html', 'summary.json', 'tables/results-best-of-n.csv'], 'r1')
    """
    from .plots import save_figure

    out = _resolve(out_dir)
    rid = new_run_id() if run_id is None else str(run_id)
    if not _RUN_ID.fullmatch(rid):
        raise ValueError(f"run_id {run_id!r}: use letters, digits, '.', '_' and '-' (at most 64)")
    formats = tuple(figure_formats)
    if not formats or len(set(formats)) < len(formats) or not set(formats) <= set(FIGURE_FORMATS):
        raise ValueError(
            f"figure_formats must be a non-empty selection of {FIGURE_FORMATS}, got {figure_formats!r}"
        )
    if not isinstance(summary, dict):
        raise ValueError(f"summary must be a dict, got {type(summary).__name__}")
    if "run_id" in summary:
        raise ValueError("summary: 'run_id' is the report's own key; rename yours")
    # Check everything before writing anything, so a bad argument leaves the folder as it was.
    summary_text = to_json({"run_id": rid, **summary})
    stems, slugs, plan = set(), set(), []
    for sec in sections:
        for stem, _fig, _caption in sec.figures:
            _check_stem(stem, stems)
        tables = []
        for table in sec.tables:
            caption, columns, rows, note = _unpack_table(table)
            base = "-".join(x for x in (_slug(sec.heading), _slug(caption)) if x) or "table"
            slug, k = base, 2
            while slug in slugs:
                slug, k = f"{base}-{k}", k + 1
            slugs.add(slug)
            tables.append((caption, columns, rows, note, slug))
        plan.append((sec, tables))
    extras = []
    reserved = (
        {"index.html", "summary.json", MANIFEST}
        | {f"{st}.{ext}" for st in stems for ext in FIGURE_FORMATS}
        | {f"{TABLES_DIR}/{sl}.csv" for sl in slugs}
    )
    for name, writer in (extra_files or {}).items():
        rel = _extra_rel(name)
        if rel in reserved:
            raise ValueError(f"extra_files: {name!r} would overwrite a file of the report itself")
        if not callable(writer):
            raise ValueError(f"extra_files[{name!r}] must be a callable taking the path to write")
        reserved.add(rel)
        extras.append((rel, writer))

    with prepare_report_dir(out):
        tmp = out.parent / f".{out.name}.new-{rid}"
        tmp.mkdir()
        try:
            written = _write_into(
                tmp, rid, title, lead, plan, extras, summary_text, slugs, embed, formats, save_figure
            )
            _carry_user_files(out, tmp)
            _fsync_tree(tmp)
            files = {
                rel: {"bytes": (tmp / rel).stat().st_size, "sha256": sha256_file(tmp / rel)}
                for rel in sorted(written)
            }
            manifest = {
                "format": MANIFEST_FORMAT,
                "run_id": rid,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "title": str(title),
                "files": files,
            }
            with open(tmp / MANIFEST, "w", encoding="utf-8") as fh:  # last: marks the folder complete
                fh.write(dumps(manifest, indent=2))
                fh.flush()
                os.fsync(fh.fileno())
            fsync_dir(tmp)
            _swap_in(tmp, out, rid)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out / "index.html"


def _extra_rel(name):
    rel = PurePosixPath(str(name).replace("\\", "/"))
    if not str(name) or rel.is_absolute() or ".." in rel.parts or str(rel) in (".", ""):
        raise ValueError(f"extra_files: {name!r} is not a relative path inside the report folder")
    return rel.as_posix()


def _write_into(tmp, rid, title, lead, plan, extras, summary_text, slugs, embed, formats, save_figure):
    """Write the report's files into the empty folder ``tmp``; return their relative paths."""
    written = set()
    if slugs:
        (tmp / TABLES_DIR).mkdir()
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<meta name='klfrontier-run-id' content='{rid}'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if lead:
        parts.append(f"<p class='lead'>{html.escape(lead)}</p>")
    for sec, tables in plan:
        parts.append(f"<h2>{html.escape(sec.heading)}</h2>")
        if sec.text:
            for para in sec.text.strip().split("\n\n"):
                parts.append(f"<p>{html.escape(para)}</p>")
        for stem, fig, caption in sec.figures:
            if callable(fig):
                fig = fig()
            files = {ext: tmp / f"{stem}.{ext}" for ext in formats}
            save_figure(fig, files.get("png", tmp / f"{stem}.png"), svg="svg" in files, png="png" in files)
            written |= {f.name for f in files.values()}
            hrefs = {ext: html.escape(quote(f.name), quote=True) for ext, f in files.items()}
            first = formats[0] if "png" not in formats else "png"
            mime = {"png": "image/png", "svg": "image/svg+xml"}[first]
            src = (
                f"data:{mime};base64," + base64.b64encode(files[first].read_bytes()).decode("ascii")
                if embed
                else hrefs[first]
            )
            links = "".join(
                f"<a href='{hrefs[ext]}'>{ext.upper()}</a>" for ext in FIGURE_FORMATS if ext in hrefs
            )
            parts.append(
                f"<figure><img src='{src}' alt='{html.escape(caption)}' data-file='{hrefs[first]}'>"
                f"<figcaption>{html.escape(caption)}{links}</figcaption></figure>"
            )
        for caption, columns, rows, note, slug in tables:
            href = f"{TABLES_DIR}/{slug}.csv"
            write_csv(tmp / TABLES_DIR / f"{slug}.csv", columns, rows)
            written.add(href)
            head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
            body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
            parts.append(
                f"<div class='wide'><table><caption>{html.escape(caption)}<a class='csv' href='{href}'>"
                f"CSV</a></caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
            )
            if note:
                parts.append(f"<p class='note'>{html.escape(note)}</p>")
    links = []
    for rel, writer in extras:
        target = tmp.joinpath(*PurePosixPath(rel).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        writer(target)
        if not target.is_file():
            raise ValueError(f"extra_files[{rel!r}] did not write the file {target}")
        written.add(rel)
        links.append(f"<a href='{html.escape(quote(rel), quote=True)}'>{html.escape(rel)}</a>")
    if links:
        parts.append("<p class='files'>Also in this folder: " + " · ".join(links) + "</p>")
    parts.append(
        "<footer>Generated by klfrontier (run " + rid + "). Every number on this page is in "
        "summary.json"
        + ("; every table is also a CSV file in tables/." if slugs else ".")
        + "</footer></body></html>"
    )
    (tmp / "summary.json").write_text(summary_text, encoding="utf-8")
    (tmp / "index.html").write_text("\n".join(parts), encoding="utf-8")
    return written | {"summary.json", "index.html"}
