"""The HTML report: self-contained, figures load, nothing broken — checked in headless Chromium."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from klfrontier import best_of_n, bon_curve, frontier, instances
from klfrontier.plots import bon_kl_figure, frontier_figure
from klfrontier.report import Section, to_jsonable, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    ref = instances.load("three-letter").ref
    fr = frontier(ref, np.linspace(0, 1.7, 60))
    n = np.array([1, 2, 4, 8, 16, 64, 256])
    cur = bon_curve(ref, n=n)
    figs = [
        (
            "frontier",
            frontier_figure(fr.kl, fr.reward, points={"best-of-N": (cur.kl, cur.reward)}, kl_max=ref.kl_max),
            "The frontier with best-of-N.",
        ),
        ("bon_kl", bon_kl_figure(n, cur.kl, cur.kl_bound, kl_max=ref.kl_max), "Exact BoN KL."),
    ]
    table = ("BoN", ["N", "KL", "bound"], [[int(a), b, c] for a, b, c in zip(n, cur.kl, cur.kl_bound)])
    table2 = (
        "Frontier",
        ["KL", "reward"],
        [[a, b] for a, b in zip(fr.kl[::10], fr.reward[::10])],
        "Exact: no interval.",
    )
    summary = {"bon": cur.to_dict(), "inf": np.inf, "b16": best_of_n(ref, n=16).to_dict()}
    index = write_report(
        out,
        "Test report <&>",
        [Section("Figures", "Some text.\n\nMore.", figs, [table, table2])],
        summary,
        lead="Lead paragraph.",
    )
    return out, index


def test_files_written(report):
    out, index = report
    assert index.name == "index.html"
    assert (out / "frontier.png").stat().st_size > 10_000
    data = json.loads((out / "summary.json").read_text())
    assert data["inf"] == "inf"
    assert data["bon"]["kl"][0] == 0.0


def test_html_is_self_contained(report):
    _, index = report
    text = index.read_text()
    assert "Test report &lt;&amp;&gt;" in text
    assert "http://" not in text and "https://" not in text  # no network resources
    srcs = re.findall(r"<img src='([^']+)'", text)
    assert len(srcs) == 2 and all(s.startswith("data:image/png;base64,") for s in srcs)


def test_csv_and_figure_links_resolve(report):
    out, index = report
    text = index.read_text()
    hrefs = re.findall(r"<a (?:class='csv' )?href='([^']+)'", text)
    assert sorted(hrefs) == [
        "bon_kl.png",
        "bon_kl.svg",
        "frontier.png",
        "frontier.svg",
        "tables/figures-bon.csv",
        "tables/figures-frontier.csv",
    ]
    assert all((out / h).is_file() for h in hrefs)
    assert (out / "tables/figures-bon.csv").read_text().splitlines()[:2] == ["N,KL,bound", "1,0.0,0.0"]
    assert "<p class='note'>Exact: no interval.</p>" in text


def test_to_jsonable_handles_numpy():
    assert to_jsonable({"a": np.float64(1.5), "b": np.array([1, np.nan]), "c": np.bool_(True)}) == {
        "a": 1.5,
        "b": [1.0, None],
        "c": True,
    }


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (.ci/run installs it)")
def test_renders_in_headless_chromium(report, tmp_path):
    out, index = report
    # Inject a probe that records whether every image decoded, whether every CSV link loads
    # with its table's header as first line, and whether every SVG link decodes; then dump the DOM.
    probe = out / "probe.html"
    probe.write_text(
        index.read_text().replace(
            "</body>",
            "<script>window.addEventListener('load',()=>{const ok=[...document.images].every("
            "i=>i.complete&&i.naturalWidth>100);"
            "const links=[...document.querySelectorAll('a.csv')];let csv=links.length===2;"
            "for(const a of links){try{const x=new XMLHttpRequest();x.open('GET',a.href,false);x.send();"
            "const head=[...a.closest('table').querySelectorAll('th')].map(t=>t.textContent).join(',');"
            "if(x.responseText.split('\\r\\n')[0]!==head)csv=false;}catch(e){csv=false;}}"
            "const svgs=[...document.querySelectorAll('figcaption a')].filter(a=>a.href.endsWith('.svg'));"
            "Promise.all(svgs.map(a=>new Promise(r=>{const i=new Image();i.onload=()=>r(i.naturalWidth>100);"
            "i.onerror=()=>r(false);i.src=a.href;}))).then(v=>{const svg=v.length===2&&v.every(Boolean);"
            "document.body.setAttribute('data-probe',(ok?'images-ok':'images-broken')+' '+"
            "(csv?'csv-ok':'csv-broken')+' '+(svg?'svg-ok':'svg-broken'));});});</script></body>",
        )
    )
    dom = subprocess.run(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={tmp_path / 'prof'}",
            "--allow-file-access-from-files",
            "--virtual-time-budget=5000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert 'data-probe="images-ok csv-ok svg-ok"' in dom.stdout, dom.stderr[-2000:]
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={tmp_path / 'prof2'}",
            "--window-size=1200,2000",
            f"--screenshot={shot}",
            index.as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    assert shot.exists() and shot.stat().st_size > 20_000
