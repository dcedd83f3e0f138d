"""Self-contained HTML reports: figures (PNG embedded, PNG and SVG beside the page), tables
(also as CSV), strict JSON.

The report holds no mathematics: it lays out what the caller computed.
"""

from __future__ import annotations

import base64
import html
import math
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import quote

import numpy as np

from ._atomic import write_csv
from ._json import dumps, jsonable

__all__ = ["Section", "write_report", "to_jsonable", "to_json"]

#: Sub-folder of a report holding one CSV per table.
TABLES_DIR = "tables"


@dataclass
class Section:
    """One part of a report: a heading, a paragraph, figures and tables.

    ``figures``: list of ``(file stem, matplotlib Figure, caption)``; the
    stem names ``<stem>.png`` and ``<stem>.svg`` and is unique in a report.
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
        raise ValueError("sections: a table must be (caption, columns, rows) or (caption, columns, rows, note), "
                         f"got {type(table).__name__} of length {len(table) if hasattr(table, '__len__') else '?'}")
    caption, columns, rows = table[:3]
    note = table[3] if len(table) == 4 else ""
    return str(caption), list(columns), [list(r) for r in rows], "" if note is None else str(note)


def _check_stem(stem, taken):
    if (not isinstance(stem, str) or not stem or stem.startswith(".") or "/" in stem or "\\" in stem
            or stem != stem.strip()):
        raise ValueError(f"sections: figure stem {stem!r} is not a plain file name")
    if stem in taken:
        raise ValueError(f"sections: figure stem {stem!r} is used twice")
    taken.add(stem)


def _extra_target(out, name):
    rel = PurePosixPath(str(name).replace("\\", "/"))
    if not str(name) or rel.is_absolute() or ".." in rel.parts or str(rel) in (".", ""):
        raise ValueError(f"extra_files: {name!r} is not a relative path inside the report folder")
    return out.joinpath(*rel.parts), rel.as_posix()


def _remove_stale(out, written):
    """Delete figures and table CSVs of an earlier report that this one did not write.

    Only names this module writes are candidates: ``*.png``/``*.svg`` at the
    top of ``out`` and ``tables/*.csv``; every other file is the user's.
    """
    candidates = [p for p in out.iterdir() if p.suffix in (".png", ".svg")]
    if (out / TABLES_DIR).is_dir():
        candidates += list((out / TABLES_DIR).glob("*.csv"))
    for p in candidates:
        if p.is_file() and p.resolve() not in written:
            p.unlink()


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


def write_report(out_dir, title, sections, summary, *, lead="", embed=True, extra_files=None):
    """Write ``index.html``, figures, table CSVs, ``summary.json`` and extra files into ``out_dir``.

    Parameters
    ----------
    out_dir : path
        Created if needed.
    title : str
    sections : list of Section
    summary : dict
        Every number shown; written as strict JSON ``summary.json`` (see
        :func:`to_jsonable` for the one rule on infinities and NaN).
    lead : str
        An opening paragraph (plain text).
    embed : bool
        Embed figures as PNG data URIs (the page then works on its own);
        ``<stem>.png`` and ``<stem>.svg`` are written beside it either way.
    extra_files : dict relative name -> callable(path), optional
        Further files (e.g. per-prompt Parquet tables): each callable is
        given the absolute path it must write; the page links to them.

    Returns
    -------
    Path of ``index.html``.

    Notes
    -----
    Every table is also written as ``tables/<slug>.csv`` (slug from the
    section heading and caption, ASCII, unique in the report; RFC 4180;
    floats in shortest round-trip form, ``inf``/``-inf``, NaN and None as
    an empty field), and its caption links to it.  Files an earlier report
    left in the same folder that this one does not write are removed: PNG
    and SVG figures at the top of ``out_dir`` and ``tables/*.csv``; no
    other file is touched.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> sec = Section("Results", "One table.", [], [("Best-of-N", ["N", "reward"], [[1, 0.5], [2, float("inf")]],
    ...                                                "Intervals: none.")])
    >>> write_report(d, "Demo", [sec], {"reward": [0.5, float("inf")]}).name
    'index.html'
    >>> (d / "tables" / "results-best-of-n.csv").read_text().splitlines()
    ['N,reward', '1,0.5', '2,inf']
    >>> (d / "summary.json").read_text().split()
    ['{', '"reward":', '[', '0.5,', '"inf"', ']', '}']
    """
    from .plots import save_figure

    out = Path(out_dir)
    # Check everything before writing anything, so a bad argument leaves the folder as it was.
    summary_text = to_json(summary)
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
    reserved = {"index.html", "summary.json"} | {f"{st}.{ext}" for st in stems for ext in ("png", "svg")} \
        | {f"{TABLES_DIR}/{sl}.csv" for sl in slugs}
    for name, writer in (extra_files or {}).items():
        target, rel = _extra_target(out, name)
        if rel in reserved:
            raise ValueError(f"extra_files: {name!r} would overwrite a file of the report itself")
        if not callable(writer):
            raise ValueError(f"extra_files[{name!r}] must be a callable taking the path to write")
        reserved.add(rel)
        extras.append((target, rel, writer))

    out.mkdir(parents=True, exist_ok=True)
    if slugs:
        (out / TABLES_DIR).mkdir(exist_ok=True)
    written = set()
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
             f"<meta name='viewport' content='width=device-width,initial-scale=1'>"
             f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    if lead:
        parts.append(f"<p class='lead'>{html.escape(lead)}</p>")
    for sec, tables in plan:
        parts.append(f"<h2>{html.escape(sec.heading)}</h2>")
        if sec.text:
            for para in sec.text.strip().split("\n\n"):
                parts.append(f"<p>{html.escape(para)}</p>")
        for stem, fig, caption in sec.figures:
            png, svg = out / f"{stem}.png", out / f"{stem}.svg"
            save_figure(fig, png, svg=True)
            written |= {png.resolve(), svg.resolve()}
            href_png, href_svg = html.escape(quote(png.name), quote=True), html.escape(quote(svg.name), quote=True)
            src = ("data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")
                   if embed else href_png)
            parts.append(f"<figure><img src='{src}' alt='{html.escape(caption)}' data-file='{href_png}'>"
                         f"<figcaption>{html.escape(caption)}<a href='{href_png}'>PNG</a>"
                         f"<a href='{href_svg}'>SVG</a></figcaption></figure>")
        for caption, columns, rows, note, slug in tables:
            path = out / TABLES_DIR / f"{slug}.csv"
            write_csv(path, columns, rows)
            written.add(path.resolve())
            href = f"{TABLES_DIR}/{slug}.csv"
            head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
            body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
            parts.append(f"<div class='wide'><table><caption>{html.escape(caption)}<a class='csv' href='{href}'>"
                         f"CSV</a></caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")
            if note:
                parts.append(f"<p class='note'>{html.escape(note)}</p>")
    links = []
    for target, rel, writer in extras:
        target.parent.mkdir(parents=True, exist_ok=True)
        writer(target)
        if not target.is_file():
            raise ValueError(f"extra_files[{rel!r}] did not write the file {target}")
        written.add(target.resolve())
        links.append(f"<a href='{html.escape(quote(rel), quote=True)}'>{html.escape(rel)}</a>")
    if links:
        parts.append("<p class='files'>Also in this folder: " + " · ".join(links) + "</p>")
    parts.append("<footer>Generated by klfrontier. Every number on this page is in summary.json"
                 + ("; every table is also a CSV file in tables/." if slugs else ".") + "</footer></body></html>")
    (out / "summary.json").write_text(summary_text, encoding="utf-8")
    index = out / "index.html"
    index.write_text("\n".join(parts), encoding="utf-8")
    _remove_stale(out, written)
    return index
