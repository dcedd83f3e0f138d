"""The documentation: the Sphinx site builds with warnings as errors, and docs/theory.md's examples run.

The build runs on a copy of ``docs/`` in a temporary directory (autosummary
writes its generated pages into the source tree), exactly as ``make docs``
runs it: ``sphinx-build -W --keep-going``.  It is skipped where the ``docs``
extra is not installed; ``make test`` installs it.
"""

import doctest
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import klfrontier

DOCS = Path(__file__).resolve().parents[1] / "docs"
N_SECTIONS = 11


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    for mod in ("sphinx", "numpydoc", "myst_parser", "furo"):
        pytest.importorskip(mod, reason='the docs extra is not installed (pip install -e ".[docs]")')
    tmp = tmp_path_factory.mktemp("docs")
    src, out = tmp / "src", tmp / "html"
    shutil.copytree(DOCS, src, ignore=shutil.ignore_patterns("_build", "generated", "__pycache__"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-b",
            "html",
            "-W",
            "--keep-going",
            "-q",
            "-d",
            str(tmp / "doctrees"),
            str(src),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"sphinx-build failed:\n{proc.stdout}\n{proc.stderr}"
    assert proc.stderr.strip() == "", proc.stderr  # -q: anything printed is a warning
    return out


def test_api_page_lists_every_public_name(site):
    html = (site / "api.html").read_text()
    for name in klfrontier.__all__:
        page = site / "generated" / f"klfrontier.{name}.html"
        assert page.is_file(), f"no API page for klfrontier.{name}"
        assert f'href="generated/klfrontier.{name}.html' in html, name


def test_api_rst_covers_the_public_modules():
    # Every name a public module exports appears in api.rst (so the site cannot fall behind __all__).
    import klfrontier.io
    import klfrontier.lm
    import klfrontier.rewards

    text = (DOCS / "api.rst").read_text()
    listed = set(re.findall(r"^\s+(?:\.\. py:data:: )?([A-Za-z_]\w*)\s*$", text, flags=re.M))
    for mod in (klfrontier, klfrontier.io, klfrontier.lm, klfrontier.rewards):
        missing = sorted(set(mod.__all__) - listed)
        assert not missing, f"{mod.__name__}: {missing} not in docs/api.rst"


def test_numpydoc_sections_and_theory_links(site):
    page = (site / "generated" / "klfrontier.best_of_n.html").read_text()
    assert re.search(r"Parameters", page) and "log_n" in page and "field-list" in page
    # a plain-text "theory §k" in a docstring becomes a link to section k of the theory page
    page = (site / "generated" / "klfrontier.Optimality.html").read_text()
    assert 'href="../theory.html#theory-s2"' in page


def test_theory_page_has_its_sections_formulas_and_references(site):
    html = (site / "theory.html").read_text()
    for k in range(1, N_SECTIONS + 1):
        assert f'id="theory-s{k}"' in html, k
    assert 'id="theory-references"' in html
    assert html.count('class="math') > 100  # $...$ and $$...$$ reach MathJax
    assert "Yang" in html and "2404.01730" in html and "2401.01879" in html
    mathjax = re.search(r'<script[^>]*src="([^"]*tex-chtml\.js)"', html)
    assert mathjax, "MathJax is not loaded"
    if not mathjax.group(1).startswith("http"):  # the offline copy (docs extra) is complete
        assert (site / mathjax.group(1)).is_file()
        assert any((site / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))


def test_markdown_docs_are_in_the_site(site):
    for md in DOCS.glob("*.md"):
        assert (site / f"{md.stem}.html").is_file(), md.name


def test_theory_examples_run():
    # The ```python blocks of theory.md are doctests; fences are stripped before parsing.
    text = re.sub(r"^```.*$", "", (DOCS / "theory.md").read_text(), flags=re.M)
    parser = doctest.DocTestParser()
    test = parser.get_doctest(text, {}, "theory.md", str(DOCS / "theory.md"), 0)
    assert len(test.examples) >= 10
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    runner = doctest.DocTestRunner(optionflags=flags)
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} theory.md examples failed"


def test_theory_citations_name_existing_sections():
    # "theory §k" in the library's docstrings and the docs must cite one of the 11 sections.
    root = DOCS.parent
    files = [*(root / "src" / "klfrontier").rglob("*.py"), *DOCS.glob("*.md"), root / "README.md"]
    for path in files:
        for k in re.findall(r"[Tt]heory §(\d+)", path.read_text(encoding="utf-8")):
            assert 1 <= int(k) <= N_SECTIONS, f"{path.name} cites theory §{k}"
