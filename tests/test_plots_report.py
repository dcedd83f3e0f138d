"""Report files (CSV, SVG, strict JSON, extra and stale files) and the figures of `analyze`.

Oracles: the csv module and ``float`` read the CSVs back; ElementTree parses
the SVGs; ``json.loads`` with a ``parse_constant`` that raises reads
summary.json; the figures are checked through the artists they hold.
"""

import csv
import io
import json
import math
import warnings
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("matplotlib")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.text import Annotation  # noqa: E402

from klfrontier._atomic import csv_cell as _csv_value  # noqa: E402
from klfrontier.plots import (  # noqa: E402
    empirical_figure,
    frontier_figure,
    overoptimization_figure,
    save_figure,
)
from klfrontier.report import Section, _slug, check_report, to_json, to_jsonable, write_report  # noqa: E402

NAN, INF = float("nan"), float("inf")
NASTY = "$x^2$ [bold]"
BAD_MATH = r"$\alpha_$"  # raises in the mathtext parser if it is ever parsed


def _no_constants(name):
    raise AssertionError(f"non-standard JSON constant {name!r} in summary.json")


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def _fig(policy_names=(NASTY,)):
    kl = np.linspace(0, 2, 21)
    pols = {
        name: {
            "kl": 0.3 + 0.4 * i,
            "reward": 0.4 + 0.3 * i,
            "kl_lo": 0.2 + 0.4 * i,
            "kl_hi": 0.5 + 0.4 * i,
            "reward_lo": NAN,
            "reward_hi": NAN,
        }
        for i, name in enumerate(policy_names)
    }
    return frontier_figure(kl, np.sqrt(kl), policies=pols)


# ---------------------------------------------------------------------------------------------- CSV


def test_tables_written_as_csv_and_parse_back_to_the_same_numbers(tmp_path):
    third, tiny = 1 / 3, 5e-324
    rows = [
        [1, third, INF, 'a, "quoted"\nname'],
        [np.int64(2), np.float64(tiny), -INF, "plain"],
        [3, NAN, None, "ünïcode"],
        [4, np.float32(0.1), True, ""],
    ]
    sec = Section(
        "1 · Résumé",
        tables=[("Best-of-N (λ)", ["N", "reward", "kl", "prompt"], rows), ("Best-of-N (λ)", ["x"], [[0.5]])],
    )
    write_report(tmp_path, "CSV", [sec], {})
    files = {p.name for p in (tmp_path / "tables").iterdir()}
    assert files == {"1-resume-best-of-n.csv", "1-resume-best-of-n-2.csv"}
    assert all(name.isascii() for name in files)
    raw = (tmp_path / "tables" / "1-resume-best-of-n.csv").read_bytes()
    assert raw.count(b"\r\n") == 5 and raw.count(b"\n") == 6  # CRLF per record; the quoted field keeps its LF
    back = _read_csv(tmp_path / "tables" / "1-resume-best-of-n.csv")
    assert back[0] == ["N", "reward", "kl", "prompt"]
    assert back[1] == ["1", repr(third), "inf", 'a, "quoted"\nname']
    assert float(back[1][1]) == third and float(back[2][1]) == tiny  # shortest round-trip form
    assert float(back[1][2]) == INF and float(back[2][2]) == -INF
    assert back[3][1] == "" and back[3][2] == ""  # NaN and None: empty
    assert float(back[4][1]) == float(np.float32(0.1)) and back[4][2] == "true"
    assert back[3][3] == "ünïcode" and back[4][3] == ""
    assert _read_csv(tmp_path / "tables" / "1-resume-best-of-n-2.csv") == [["x"], ["0.5"]]


@given(
    st.lists(
        st.tuples(
            st.floats(allow_nan=True, allow_infinity=True),
            st.text(alphabet=st.characters(blacklist_characters="\x00"), max_size=12),
        ),
        max_size=6,
    )
)
def test_csv_round_trip_property(rows):
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerows([_csv_value(v) for v in row] for row in rows)
    back = list(csv.reader(io.StringIO(buf.getvalue(), newline="")))
    assert len(back) == len(rows)
    for (x, text), (fx, ftext) in zip(rows, back):
        assert ftext == text
        if math.isnan(x):
            assert fx == ""
        else:
            assert float(fx) == x and math.copysign(1, float(fx)) == math.copysign(1, x)


def test_slug_is_ascii_and_safe():
    assert _slug("3 · Per prompt / «prompt» ../..") == "3-per-prompt-prompt"
    assert _slug("λ ≥ ∞") == ""


def test_table_note_and_csv_link_in_html(tmp_path):
    sec = Section(
        "Aggregate",
        tables=[("BoN", ["N"], [[1]], "Intervals: Student-t over 12 prompts <P>."), ("Tilt", ["λ"], [[0.5]])],
    )
    text = write_report(tmp_path, "Notes", [sec], {}).read_text()
    assert "<p class='note'>Intervals: Student-t over 12 prompts &lt;P&gt;.</p>" in text
    assert text.count("<p class='note'>") == 1  # the 3-tuple has no note
    assert "href='tables/aggregate-bon.csv'" in text and "href='tables/aggregate-tilt.csv'" in text


def test_malformed_table_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="sections: a table must be"):
        write_report(tmp_path / "r", "x", [Section("S", tables=[("caption", ["a"])])], {})
    assert not (tmp_path / "r").exists()  # nothing written


# ------------------------------------------------------------------------------------ SVG and JSON


def test_figures_written_as_png_and_valid_svg(tmp_path):
    sec = Section("Figures", figures=[("frontier", _fig((NASTY, BAD_MATH, "a -- b <&>")), "policies")])
    text = write_report(tmp_path, "SVG", [sec], {}).read_text()
    assert (tmp_path / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    root = ET.parse(tmp_path / "frontier.svg").getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert len(list(root.iter())) > 100
    assert "href='frontier.svg'" in text and "href='frontier.png'" in text


def test_summary_json_is_strict(tmp_path):
    summary = {
        "inf": np.inf,
        "ninf": -INF,
        "nan": NAN,
        "arr": np.array([[1.0, np.nan], [np.inf, -np.inf]]),
        "f32": np.float32("nan"),
        "nested": [{"x": (NAN, np.float16("inf"))}],
        7: np.int32(3),
        "ok": np.bool_(True),
    }
    write_report(tmp_path, "JSON", [], summary)
    text = (tmp_path / "summary.json").read_text()
    data = json.loads(text, parse_constant=_no_constants)
    assert data.pop("run_id") == check_report(tmp_path)["run_id"]
    assert data == {
        "inf": "inf",
        "ninf": "-inf",
        "nan": None,
        "arr": [[1.0, None], ["inf", "-inf"]],
        "f32": None,
        "nested": [{"x": [None, "inf"]}],
        "7": 3,
        "ok": True,
    }
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(to_json(summary), parse_constant=_no_constants) == data


def test_to_jsonable_uses_to_dict_and_paths(tmp_path):
    class Table:
        def to_dict(self):
            return {"kl": np.array([0.0, np.inf])}

    assert to_jsonable({"t": Table(), "p": tmp_path}) == {"t": {"kl": [0.0, "inf"]}, "p": str(tmp_path)}


def test_user_text_is_never_mathtext(tmp_path):
    # the oracle is meaningful: parsed as mathtext, this name raises at draw time
    fig, ax = plt.subplots()
    ax.set_title(BAD_MATH)
    with pytest.raises(ValueError):
        fig.canvas.draw()
    plt.close(fig)

    fig = _fig((NASTY, BAD_MATH))
    fig.canvas.draw()  # no error
    ax = fig.axes[0]
    notes = [t for t in ax.texts if t.get_text()]
    assert [t.get_text() for t in notes] == [NASTY, BAD_MATH]
    assert all(not t.get_parse_math() and not t.get_usetex() for t in notes)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert NASTY in legend and BAD_MATH in legend
    assert all(not t.get_parse_math() for t in ax.get_legend().get_texts())
    plt.close(fig)
    fig = overoptimization_figure({NASTY: {"kl": [0, 1], "proxy": [0, 1], "gold": [0, 0.5]}}, title=BAD_MATH)
    save_figure(fig, tmp_path / "o.png", svg=True)
    ET.parse(tmp_path / "o.svg")


# ------------------------------------------------------------------------------- stale and extra files


def test_stale_files_removed_user_files_kept(tmp_path):
    plt_sections = [
        Section(
            "One",
            figures=[("a", _fig(), "a"), ("b", _fig(), "b")],
            tables=[("First", ["x"], [[1]]), ("Second", ["x"], [[2]])],
        )
    ]
    write_report(tmp_path, "first", plt_sections, {})
    assert {p.name for p in tmp_path.glob("*.svg")} == {"a.svg", "b.svg"}
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "keep.png").write_bytes(b"x")
    (tmp_path / "tables" / "readme.md").write_text("mine too")

    write_report(
        tmp_path,
        "second",
        [Section("One", figures=[("a", _fig(), "a")], tables=[("First", ["x"], [[3]])])],
        {},
        extra_files={"logo.png": lambda p: p.write_bytes(b"png")},
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.png",
        "a.svg",
        "index.html",
        "logo.png",
        "notes.txt",
        "report-manifest.json",
        "sub",
        "summary.json",
        "tables",
    ]
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == ["one-first.csv", "readme.md"]
    assert _read_csv(tmp_path / "tables" / "one-first.csv") == [["x"], ["3"]]
    assert (tmp_path / "sub" / "keep.png").exists() and (tmp_path / "notes.txt").read_text() == "mine"


def test_extra_files_written_and_linked(tmp_path):
    calls = []

    def writer(path):
        calls.append(path)
        path.write_text("prompt,mean\np1,0.5\n")

    text = write_report(tmp_path, "x", [], {}, extra_files={"per_prompt/base.csv": writer}).read_text()
    assert [p.relative_to(p.parents[1]).as_posix() for p in calls] == [
        "per_prompt/base.csv"
    ]  # built, then swapped in
    assert (tmp_path / "per_prompt" / "base.csv").read_text().startswith("prompt,mean")
    assert "href='per_prompt/base.csv'" in text


@pytest.mark.parametrize(
    "extra, match",
    [
        ({"../escape.csv": lambda p: p.write_text("")}, "not a relative path"),
        ({"/abs.csv": lambda p: p.write_text("")}, "not a relative path"),
        ({"summary.json": lambda p: p.write_text("")}, "would overwrite"),
        ({"f.svg": lambda p: p.write_text("")}, "would overwrite"),
        ({"x.parquet": "not callable"}, "must be a callable"),
    ],
)
def test_bad_extra_files(tmp_path, extra, match):
    sec = Section("S", figures=[("f", _fig(), "f")])
    with pytest.raises(ValueError, match=match):
        write_report(tmp_path / "r", "x", [sec], {}, extra_files=extra)
    assert not (tmp_path / "r").exists()
    plt.close("all")


def test_extra_file_not_written_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"extra_files\['x.parquet'\] did not write"):
        write_report(tmp_path, "x", [], {}, extra_files={"x.parquet": lambda p: None})


def test_duplicate_or_unsafe_figure_stem(tmp_path):
    with pytest.raises(ValueError, match="used twice"):
        write_report(tmp_path, "x", [Section("S", figures=[("f", _fig(), ""), ("f", _fig(), "")])], {})
    with pytest.raises(ValueError, match="not a plain file name"):
        write_report(tmp_path, "x", [Section("S", figures=[("../f", _fig(), "")])], {})
    assert list(tmp_path.iterdir()) == []
    plt.close("all")


# ------------------------------------------------------------------------------------------ figures


def _no_warnings(draw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig = draw()
        fig.canvas.draw()
    plt.close(fig)
    bad = [w for w in caught if issubclass(w.category, (RuntimeWarning, UserWarning))]
    assert not bad, [str(w.message) for w in bad]
    return fig


def test_frontier_policies_paths_curves():
    kl = np.linspace(0, 2, 11)
    pols = {
        "sft": {"kl": 0.0, "reward": 0.1},
        "ppo-100": {
            "kl": 0.5,
            "kl_lo": 0.4,
            "kl_hi": 0.65,
            "reward": 0.5,
            "reward_lo": 0.45,
            "reward_hi": 0.55,
        },
        "ppo-200": {
            "kl": 1.0,
            "kl_lo": NAN,
            "kl_hi": NAN,
            "reward": 0.7,
            "reward_lo": 0.75,
            "reward_hi": 0.6,
        },  # an interval that excludes its estimate is still drawn
        "broken": {"kl": np.array([INF]), "reward": 1.0},
    }
    fig = _no_warnings(
        lambda: frontier_figure(
            kl,
            np.sqrt(kl),
            points={"best-of-N": ([0, 0.3], [0, 0.4])},
            bands={"frontier": (kl, np.r_[NAN, np.sqrt(kl[1:]) - 0.1], np.r_[NAN, np.sqrt(kl[1:]) + 0.1])},
            kl_max=1.9,
            trust_kl=1.5,
            policies=pols,
            paths=[["sft", "ppo-100", "ppo-200", "broken"]],
            curves={"equal budget": (kl, 0.8 * np.sqrt(kl))},
        )
    )
    ax = fig.axes[0]
    segs = [tuple(np.round(np.r_[ln.get_xdata(), ln.get_ydata()], 12)) for ln in ax.lines]
    assert (0.4, 0.65, 0.5, 0.5) in segs  # horizontal bar: kl_lo..kl_hi at the reward
    assert (0.5, 0.5, 0.45, 0.55) in segs  # vertical bar
    assert (1.0, 1.0, 0.75, 0.6) in segs
    assert not any(len(s) == 4 and s[2:] == (0.7, 0.7) for s in segs)  # ppo-200 has no KL interval
    arrows = [t for t in ax.texts if isinstance(t, Annotation) and t.get_text() == "" and t.arrow_patch]
    assert len(arrows) == 2  # sft->100->200; the step to "broken" is not finite
    assert [t.get_text() for t in ax.texts if t.get_text()] == ["sft", "ppo-100", "ppo-200"]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "equal budget" in labels and "best-of-N" in labels and "frontier (95% CI)" in labels
    dashed = [ln for ln in ax.lines if ln.get_label() == "equal budget"]
    assert dashed[0].get_linestyle() == "--"


def test_frontier_keeps_underscore_names_and_rejects_bad_input():
    fig = frontier_figure([0, 1], [0, 1], policies={"_run": {"kl": 0.5, "reward": 0.5}})
    assert " _run" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    plt.close(fig)
    with pytest.raises(ValueError, match="paths: 'nope' is not a name in policies"):
        frontier_figure([0, 1], [0, 1], policies={"a": {"kl": 0, "reward": 0}}, paths=[["a", "nope"]])
    with pytest.raises(ValueError, match="paths must be a list of lists"):
        frontier_figure([0, 1], [0, 1], policies={"a": {"kl": 0, "reward": 0}}, paths=["a"])
    with pytest.raises(ValueError, match=r"policies\['a'\] needs the keys 'kl' and 'reward'"):
        frontier_figure([0, 1], [0, 1], policies={"a": {"kl": 0}})
    with pytest.raises(ValueError, match="must be one number"):
        frontier_figure([0, 1], [0, 1], policies={"a": {"kl": [0, 1], "reward": 0}})


def test_overoptimization_figure():
    series = {
        "best-of-N": {
            "kl": [0, 0.5, 1, 2, 3],
            "proxy": [0, 0.5, 0.8, 1.0, 1.1],
            "gold": [0, 0.3, 0.4, 0.35, NAN],
            "gold_lo": [NAN, 0.2, 0.3, 0.25, NAN],
            "gold_hi": [NAN, 0.4, 0.5, 0.45, NAN],
        },
        "tilt": {
            "kl": [0, 1, 2],
            "proxy": [0, 0.9, 1.2],
            "gold": [0, 0.2, 0.1],
            "gold_lo": None,
            "gold_hi": None,
        },
    }
    fig = _no_warnings(lambda: overoptimization_figure(series, title="over-optimisation"))
    a1, a2 = fig.axes
    assert [ln.get_label() for ln in a1.lines] == ["best-of-N", "tilt"]
    np.testing.assert_array_equal(a1.lines[0].get_ydata(), [0, 0.5, 0.8, 1.0, 1.1])
    stars = [ln for ln in a2.lines if ln.get_marker() == "*"]
    assert [(float(s.get_xdata()[0]), float(s.get_ydata()[0])) for s in stars] == [(1.0, 0.4), (1.0, 0.2)]
    bands = [c for c in a2.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1  # only best-of-N has an interval
    verts = bands[0].get_paths()[0].vertices
    assert np.isfinite(verts).all() and verts[:, 0].min() == 0.5 and verts[:, 0].max() == 2
    with pytest.raises(ValueError, match=r"series\['x'\] must be a dict with arrays kl, proxy, gold"):
        overoptimization_figure({"x": {"kl": [0], "proxy": [0]}})
    with pytest.raises(ValueError, match="arrays of different lengths"):
        overoptimization_figure({"x": {"kl": [0, 1], "proxy": [0, 1], "gold": [0]}})
    with pytest.raises(ValueError, match="series must be a non-empty dict"):
        overoptimization_figure({})


def test_empirical_figure_untrusted_points_hollow():
    n = np.array([1, 2, 4, 8, 16, 32])
    trusted = n <= 8
    fig = _no_warnings(
        lambda: empirical_figure(
            n,
            np.log(n + 1.0),
            np.log(n + 0.9),
            lo=np.r_[np.log(n[:5] + 1.0) - 0.1, NAN],
            hi=np.r_[np.log(n[:5] + 1.0) + 0.1, NAN],
            kl=np.linspace(0, 2, 5),
            tilted_reward=np.linspace(0, 1, 5),
            tilted_lo=np.full(5, NAN),
            tilted_hi=np.full(5, NAN),
            trusted=trusted,
            trust_n=8,
        )
    )
    a1 = fig.axes[0]
    hollow = [ln for ln in a1.lines if ln.get_markerfacecolor() == "none"]
    assert len(hollow) == 2
    for ln in hollow:
        np.testing.assert_array_equal(ln.get_xdata(), [16, 32])
    full = [ln for ln in a1.lines if ln.get_label() == "plug-in (exact on p̂)"][0]
    assert list(full.get_markevery()) == trusted.tolist()
    assert len([c for c in fig.axes[1].collections if isinstance(c, PolyCollection)]) == 0  # all-NaN band
    with pytest.raises(ValueError, match="trusted must be a boolean array"):
        empirical_figure(n, n, n, trusted=trusted[:3])
    with pytest.raises(ValueError, match="trusted must be a boolean array"):
        empirical_figure(n, n, n, trusted=np.ones(6))


def test_empirical_figure_labels_n_with_plain_numbers_at_its_sizes():
    """The log N axis is labelled 1, 2, 4, ... at the sizes drawn (no mathtext powers of ten)."""
    n = np.array([1, 2, 4, 8, 16, 32, 64])
    fig = empirical_figure(n, np.log(n + 1.0), np.log(n + 0.9))
    fig.canvas.draw()
    ax = fig.axes[0]
    np.testing.assert_array_equal(ax.get_xticks(), n)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4", "8", "16", "32", "64"]
    assert not any(t.get_text() for t in ax.get_xticklabels(minor=True))
    many = 2.0 ** np.arange(20)  # too many sizes for a tick each: the log locator's places, plain
    fig = empirical_figure(many, np.log(many + 1.0), np.log(many + 0.9))
    fig.canvas.draw()
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_text()]
    assert labels and not any("$" in t or "^" in t for t in labels) and "1000" in labels


def test_suptitle_is_literal():
    fig = empirical_figure([1, 2], [1, 2], [1, 2], title=BAD_MATH)
    fig.canvas.draw()  # parsed as mathtext this would raise
    plt.close(fig)
