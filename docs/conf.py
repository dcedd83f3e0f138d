"""Sphinx configuration: the API reference (numpydoc + autosummary) and the Markdown docs (MyST).

Built by ``make docs`` into ``docs/_build/html`` with warnings as errors;
``tests/test_docs_build.py`` runs the same build in CI.
"""

import importlib.util
import re
import shutil
from pathlib import Path

from docutils import nodes
from sphinx import addnodes

import klfrontier

project = "klfrontier"
author = "the klfrontier authors"
copyright = "the klfrontier authors (MIT licence)"
release = version = klfrontier.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]  # autosummary/class.rst: members and a table of methods

# The API pages: one generated page per public name, documented from its docstring.
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"members": True}
autodoc_typehints = "none"  # the numpydoc Parameters section carries the types
numpydoc_show_class_members = False  # autosummary lists methods; numpydoc would list them twice
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# Every :func:/:class:/... reference in a docstring must resolve (a broken link is an error).
nitpicky = True
nitpick_ignore: list[tuple[str, str]] = []

# Markdown: $...$ and $$...$$ math; theory.md's sections carry explicit targets (theory-s3)=,
# reached as [theory §3](theory.md#theory-s3) from Markdown and :ref:`theory-s3` from reST.
# index.md's toctree ends with a glob, so a new docs/*.md joins the site without an edit there.
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
myst_dmath_double_inline = True

html_theme = "furo"
html_title = f"klfrontier {release}"
html_static_path = []


# MathJax offline: the docs extra installs MathJax 3 (django-static-mathjax ships the plain
# MathJax distribution and depends on nothing, Django included).  Copy the one bundle and
# its fonts next to the pages, so formulas render without a network; without the package,
# Sphinx's default (a CDN) is used.
def _mathjax_dir():
    spec = importlib.util.find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        return None
    es5 = Path(next(iter(spec.submodule_search_locations))) / "static" / "mathjax" / "es5"
    return es5 if (es5 / "tex-chtml.js").is_file() else None


_MATHJAX = _mathjax_dir()
if _MATHJAX is not None:
    mathjax_path = "mathjax/tex-chtml.js"


def _copy_mathjax(app, exception):
    if exception is not None or _MATHJAX is None or app.builder.format != "html":
        return
    dest = Path(app.outdir) / "_static" / "mathjax"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(_MATHJAX / "tex-chtml.js", dest / "tex-chtml.js")
    # the fonts, and the TeX packages the bundle autoloads on first use (boldsymbol, cancel, ...)
    for sub in (Path("output", "chtml", "fonts", "woff-v2"), Path("input", "tex", "extensions")):
        shutil.copytree(_MATHJAX / sub, dest / sub, dirs_exist_ok=True)


# Docstrings cite "theory §k" as plain text (readable in help()); on the site each citation
# links to section k of theory.md, whose targets are (theory-s1)= ... (theory-s11)=.
_THEORY_CITE = re.compile(r"[Tt]heory §(\d+)(?:\s*[–-]\s*§?\d+)?")
_NO_LINK = (
    nodes.literal,
    nodes.literal_block,
    nodes.reference,
    nodes.math,
    nodes.math_block,
    nodes.raw,
    nodes.comment,
    nodes.title,
    addnodes.pending_xref,
)


def _link_theory_citations(app, doctree):
    for text in list(doctree.findall(nodes.Text)):
        parent = text.parent
        if isinstance(parent, _NO_LINK) or not _THEORY_CITE.search(text.astext()):
            continue
        s, pos, pieces = text.astext(), 0, []
        for m in _THEORY_CITE.finditer(s):
            pieces.append(nodes.Text(s[pos : m.start()]))
            ref = addnodes.pending_xref(
                "",
                refdomain="std",
                reftype="ref",
                reftarget=f"theory-s{m.group(1)}",
                refexplicit=True,
                refwarn=True,
                refdoc=app.env.docname,
            )
            ref += nodes.inline(m.group(0), m.group(0))
            pieces.append(ref)
            pos = m.end()
        pieces.append(nodes.Text(s[pos:]))
        parent.replace(text, pieces)


def setup(app):
    app.connect("doctree-read", _link_theory_citations)
    app.connect("build-finished", _copy_mathjax)
