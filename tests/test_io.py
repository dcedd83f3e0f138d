"""Sample files: round trips, streaming, bad rows with their lines, strict mode, column names."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from klfrontier.io import MAX_BAD_ROWS, SampleFileError, SampleSet, read_samples, write_samples

DATA = Path(__file__).parent / "data"

try:
    import pyarrow  # noqa: F401

    HAVE_ARROW = True
except ImportError:  # pragma: no cover
    HAVE_ARROW = False

needs_arrow = pytest.mark.skipif(not HAVE_ARROW, reason="pyarrow (the data extra) is not installed")
ENGINES = ["python", pytest.param("pyarrow", marks=needs_arrow)]
FORMATS = ["jsonl", "csv", "jsonl.gz", "csv.gz", pytest.param("parquet", marks=needs_arrow)]


def tricky_samples():
    """Floats that must survive a text round trip, ids and texts that need quoting."""
    return SampleSet.from_dict(
        {
            "plain": {
                "reward": [0.1, 1 / 3, -2.5e10],
                "logprob": [-1e-300, -0.0, -745.5],
                "text": ["a", "line one\nline two", ""],
            },
            'comma, "quote"': {
                "reward": [5e-324, 1.7976931348623157e308],
                "logprob": [-1.0, -2.0],
                "text": ['say "hi", then go', "tab\there"],
            },
            "ünïcødé 🙂": {"reward": [-0.0], "logprob": [-3.25], "text": ["naïve\r\nwindows"]},
        }
    )


def assert_same(a: SampleSet, b: SampleSet, *, text=True):
    assert a.prompts == b.prompts
    for x, y in zip(a.rewards, b.rewards):
        np.testing.assert_array_equal(x, y)
    for name in ("logprobs", "gold", "ref_logprobs"):
        xs, ys = getattr(a, name), getattr(b, name)
        assert (xs is None) == (ys is None), name
        if xs is not None:
            assert len(xs) == len(ys)
            for x, y in zip(xs, ys):
                np.testing.assert_array_equal(x, y)
    if text:
        assert a.texts == b.texts


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_exact(tmp_path, fmt):
    s = tricky_samples()
    path = tmp_path / f"s.{fmt}"
    write_samples(path, s)
    back = read_samples(path, keep_text=True)
    assert_same(s, back)
    assert back.n_bad_rows == 0 and back.bad_rows == []
    assert back.source == os.fspath(path)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_engines_agree_on_round_trip(tmp_path, fmt):
    s = tricky_samples()
    path = tmp_path / f"s.{fmt}"
    write_samples(path, s)
    assert_same(read_samples(path, keep_text=True, engine="python"), s)
    if HAVE_ARROW:
        assert_same(read_samples(path, keep_text=True, engine="pyarrow"), s)


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_without_optional_columns(tmp_path, fmt):
    path = tmp_path / f"s.{fmt}"
    write_samples(path, {"a": [1.0, 2.0], "b": [3.0]})
    back = read_samples(path, keep_text=True)
    assert back.logprobs is None
    assert back.groups == {"a": pytest.approx([1.0, 2.0]), "b": pytest.approx([3.0])}
    assert back.texts == [[None, None], [None]]


def test_text_dropped_unless_kept(tmp_path):
    path = tmp_path / "s.jsonl"
    write_samples(path, tricky_samples())
    assert read_samples(path).texts is None


# ----------------------------------------------------------------------------- fixtures
@pytest.mark.parametrize("engine", ENGINES)
def test_fixture_jsonl(engine):
    s = read_samples(DATA / "samples.jsonl", keep_text=True, engine=engine)
    assert s.prompts == ["q1", "q2", "3"]
    assert s.groups["q1"].tolist() == [0.5, -1.25, 0.5]
    assert s.logprob_groups["3"].tolist() == [-100.5]
    assert s.texts[0] == ["Hello\nworld", "Bonjour", "Hallo"]
    assert s.texts[1] == ['Ciao, "amici"']
    assert s.texts[2] == [None]
    assert s.n_samples == 5 and s.counts.tolist() == [3, 1, 1]


@pytest.mark.parametrize("engine", ENGINES)
def test_custom_column_names(engine):
    cols = {"prompt_id": "question", "reward": "score", "logprob": "lp", "text": "response"}
    s = read_samples(DATA / "samples_renamed.csv", columns=cols, keep_text=True, engine=engine)
    ref = read_samples(DATA / "samples.jsonl", keep_text=True, engine=engine)
    assert_same(s, ref, text=False)
    assert s.texts[0] == ["Hello\r\nworld", "Bonjour", "Hallo"]
    assert s.texts[2] == [""]
    # the default names are absent from this file
    with pytest.raises(SampleFileError, match=r"samples_renamed\.csv:1: missing column 'prompt_id'"):
        read_samples(DATA / "samples_renamed.csv", engine=engine)


def test_custom_column_names_round_trip(tmp_path):
    cols = {"prompt_id": "q", "reward": "score", "logprob": None}
    path = tmp_path / "s.jsonl"
    write_samples(path, tricky_samples(), columns=cols)
    row = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert set(row) == {"q", "score", "text"}
    back = read_samples(path, columns=cols)
    assert back.logprobs is None
    assert back.prompts == tricky_samples().prompts


def test_logprob_column_can_be_ignored():
    s = read_samples(DATA / "samples.jsonl", columns={"logprob": None})
    assert s.logprobs is None and s.n_samples == 5


# ----------------------------------------------------------------------------- bad rows
CSV_BAD = [
    (5, "missing prompt_id"),
    (6, "reward is not a number: 'abc'"),
    (7, "reward is not finite: 'nan'"),
    (8, "logprob is positive ('0.25'); a log-probability must be <= 0"),
    (9, "expected 4 fields, found 2"),
    (11, "reward is not finite: '-inf'"),
    (13, "missing logprob"),
]

JSONL_BAD = [
    (3, "missing logprob"),
    (4, "malformed JSON: Expecting ',' delimiter (column 51)"),
    (5, "JSON line is not an object (got list)"),
    (6, "missing prompt_id"),
    (7, "reward is not finite: nan"),
    (8, "reward is not a number: True"),
    (10, "prompt_id must be a string or an integer, got ['p3']"),
    (11, "logprob is not finite: inf"),
    (12, "reward is not finite: inf"),
]


@pytest.mark.parametrize("engine", ENGINES)
def test_bad_rows_csv_lines(engine):
    """Header is line 1; records spanning lines and blank lines are counted."""
    path = DATA / "bad_rows.csv"
    s = read_samples(path, engine=engine)
    assert [(line, reason) for _, line, reason in s.bad_rows] == CSV_BAD
    assert all(f == os.fspath(path) for f, _, _ in s.bad_rows)
    assert s.n_bad_rows == len(CSV_BAD)
    assert s.groups == {"p1": pytest.approx([1.0]), "p4": pytest.approx([3.0]), "p5": pytest.approx([2.5])}


@pytest.mark.parametrize("engine", ENGINES)
def test_bad_rows_jsonl_lines(engine):
    s = read_samples(DATA / "bad_rows.jsonl", engine=engine)
    assert [(line, reason) for _, line, reason in s.bad_rows] == JSONL_BAD
    assert s.groups == {"p1": pytest.approx([1.0]), "p2": pytest.approx([4.5]), "p3": pytest.approx([7.0])}
    assert s.logprob_groups["p3"].tolist() == [-0.5]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name, first", [("bad_rows.csv", CSV_BAD[0]), ("bad_rows.jsonl", JSONL_BAD[0])])
def test_strict_raises_on_first_bad_row(engine, name, first):
    path = DATA / name
    with pytest.raises(SampleFileError) as info:
        read_samples(path, strict=True, engine=engine)
    err = info.value
    assert str(err) == f"{os.fspath(path)}:{first[0]}: {first[1]}"
    assert (err.file, err.line, err.reason) == (os.fspath(path), first[0], first[1])


@pytest.mark.parametrize("engine", ENGINES)
def test_bad_rows_across_chunks(tmp_path, engine):
    """Line numbers stay right when the bad rows sit in later chunks."""
    lines = [json.dumps({"prompt_id": f"p{i % 7}", "reward": i * 0.5}) for i in range(1000)]
    bad_at = [57, 130, 131, 999]
    for i in bad_at:
        lines[i] = '{"prompt_id": "x", "reward": "bad"}'
    path = tmp_path / "s.jsonl"
    path.write_text("\n".join(lines) + "\n")
    s = read_samples(path, chunk_rows=64, engine=engine)
    assert [line for _, line, _ in s.bad_rows] == [i + 1 for i in bad_at]
    assert s.n_samples == 1000 - len(bad_at)
    with pytest.raises(SampleFileError, match=r":58: reward is not a number"):
        read_samples(path, chunk_rows=64, strict=True, engine=engine)


@pytest.mark.parametrize("engine", ENGINES)
def test_bad_rows_capped(tmp_path, engine):
    n_bad = MAX_BAD_ROWS + 234
    rows = ["prompt_id,reward"]
    for i in range(n_bad + 50):
        rows.append(f"p{i % 3},{'oops' if i < n_bad else i}")
    path = tmp_path / "many_bad.csv"
    path.write_text("\n".join(rows) + "\n")
    s = read_samples(path, engine=engine)
    assert len(s.bad_rows) == MAX_BAD_ROWS
    assert s.n_bad_rows == n_bad
    assert [line for _, line, _ in s.bad_rows[:3]] == [2, 3, 4]
    assert s.bad_rows[-1][1] == MAX_BAD_ROWS + 1
    assert s.n_samples == 50


@needs_arrow
def test_parquet_bad_rows_and_types(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "prompt_id": pa.array([1, 1, None, 2, 2, 3], type=pa.int64()),
            "reward": pa.array(["1.5", "x", "2", "nan", "3", "4"]),
            "logprob": pa.array([-1.0, -1.0, -1.0, -1.0, 0.5, None]),
        }
    )
    path = tmp_path / "s.parquet"
    pq.write_table(table, path)
    s = read_samples(path)
    assert s.groups == {"1": pytest.approx([1.5])}
    assert [(line, reason) for _, line, reason in s.bad_rows] == [
        (2, "reward is not a number: 'x'"),
        (3, "missing prompt_id"),
        (4, "reward is not finite: 'nan'"),
        (5, "logprob is positive (0.5); a log-probability must be <= 0"),
        (6, "missing logprob"),
    ]
    with pytest.raises(SampleFileError, match=r"s\.parquet:2: reward is not a number"):
        read_samples(path, strict=True)
    pq.write_table(pa.table({"prompt_id": ["a"], "reward": [True]}), tmp_path / "b.parquet")
    with pytest.raises(SampleFileError, match="column 'reward' has type bool"):
        read_samples(tmp_path / "b.parquet")


# ----------------------------------------------------------------------------- streaming
@pytest.mark.parametrize("fmt", ["jsonl", "csv", pytest.param("parquet", marks=needs_arrow)])
def test_streaming_in_chunks(tmp_path, fmt):
    """A file many times the chunk size is read chunk by chunk, with progress."""
    rng = np.random.default_rng(7)
    n = 20_000
    pid = rng.integers(0, 50, size=n)
    data = {
        "prompt_id": [f"p{k}" for k in pid],
        "reward": rng.normal(size=n).round(6),
        "logprob": -rng.exponential(10.0, size=n).round(6),
    }
    full = SampleSet.from_columns(data["prompt_id"], data["reward"], logprob=data["logprob"])
    path = tmp_path / f"big.{fmt}"
    write_samples(path, full)
    seen = []
    s = read_samples(path, chunk_rows=500, progress=seen.append)
    assert len(seen) >= 10, seen
    assert seen == sorted(seen) and seen[-1] == n
    assert_same(s, full, text=False)


@pytest.mark.parametrize("engine", ENGINES)
def test_long_csv_field(tmp_path, engine):
    """A record longer than a pyarrow block and than the csv module's default field limit."""
    long_text = "x" * 300_000 + "\n" + "y" * 10
    s = SampleSet.from_dict(
        {"a": {"reward": [1.0, 2.0], "text": [long_text, "short"]}, "b": {"reward": [3.0], "text": ["z"]}}
    )
    path = tmp_path / "long.csv"
    write_samples(path, s)
    back = read_samples(path, keep_text=True, chunk_rows=1, engine=engine)
    assert_same(back, s)
    import csv

    assert csv.field_size_limit() == 131072  # restored


@pytest.mark.parametrize("engine", ENGINES)
def test_byte_order_mark(tmp_path, engine):
    for name, body in [
        ("s.csv", "prompt_id,reward\na,1\n"),
        ("s.jsonl", '{"prompt_id": "a", "reward": 1}\n'),
    ]:
        path = tmp_path / name
        path.write_bytes(b"\xef\xbb\xbf" + body.encode())
        assert read_samples(path, engine=engine).groups == {"a": pytest.approx([1.0])}


def test_jsonl_first_valid_line_decides_logprob(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"prompt_id": "a", "reward": 1}\n{"prompt_id": "a", "reward": 2, "logprob": -1}\n')
    s = read_samples(path)
    assert s.logprobs is None and s.n_samples == 2


# ----------------------------------------------------------------------------- errors
def test_file_level_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_samples(tmp_path / "absent.jsonl")
    (tmp_path / "s.txt").write_text("x")
    with pytest.raises(ValueError, match="format"):
        read_samples(tmp_path / "s.txt")
    with pytest.raises(ValueError, match="format must be one of"):
        read_samples(tmp_path / "s.txt", format="xml")
    with pytest.raises(ValueError, match="columns has unknown keys"):
        read_samples(DATA / "samples.jsonl", columns={"score": "reward"})
    with pytest.raises(ValueError, match="cannot be None"):
        read_samples(DATA / "samples.jsonl", columns={"reward": None})
    with pytest.raises(ValueError, match="chunk_rows"):
        read_samples(DATA / "samples.jsonl", chunk_rows=0)
    with pytest.raises(ValueError, match="engine"):
        read_samples(DATA / "samples.jsonl", engine="spark")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(SampleFileError, match="empty file"):
        read_samples(tmp_path / "empty.csv")
    (tmp_path / "allbad.jsonl").write_text('{"prompt_id": "a"}\n')
    with pytest.raises(SampleFileError, match=r"no valid rows \(1 bad rows; first: line 1: missing reward\)"):
        read_samples(tmp_path / "allbad.jsonl")
    with pytest.raises(ValueError, match="Parquet files need"):
        read_samples(tmp_path / "s.txt", format="parquet", engine="python")


def test_sampleset_validation():
    with pytest.raises(ValueError, match="NaN or inf"):
        SampleSet(["a"], [[1.0, np.nan]])
    with pytest.raises(ValueError, match="duplicate"):
        SampleSet(["a", "a"], [[1.0], [2.0]])
    with pytest.raises(ValueError, match="positive"):
        SampleSet(["a"], [[1.0]], logprobs=[[0.1]])
    with pytest.raises(ValueError, match="non-empty"):
        SampleSet(["a"], [[]])
    with pytest.raises(ValueError, match="not a mix"):
        SampleSet.from_dict({"a": [1.0], "b": {"reward": [1.0]}})
    with pytest.raises(ValueError, match="every prompt or for none"):
        SampleSet.from_dict({"a": {"reward": [1.0], "logprob": [-1.0]}, "b": {"reward": [1.0]}})
    s = SampleSet.from_columns([1, 2, 1], [0.0, 1.0, 2.0])
    assert s.prompts == ["1", "2"] and s["1"].tolist() == [0.0, 2.0]
    assert "prompts=2" in repr(s)


def test_from_validated_keeps_values_as_given():
    rewards = [np.array([0.0, 1.0]), np.array([2.0])]
    gold = [np.array([0.5, 0.25]), np.array([1.0])]
    s = SampleSet.from_validated(
        ["a", "b"], rewards, gold=gold, bad_rows=[("f", 3, "why")], n_bad_rows=5, source="f"
    )
    assert_same(
        s,
        SampleSet.from_dict(
            {"a": {"reward": [0.0, 1.0], "gold": [0.5, 0.25]}, "b": {"reward": [2.0], "gold": [1.0]}}
        ),
    )
    assert s.rewards[0] is rewards[0] and s.gold[1] is gold[1]  # not copied
    assert s.bad_rows == [("f", 3, "why")] and s.n_bad_rows == 5 and s.source == "f"
    assert s.counts.tolist() == [2, 1] and not s.has_logprobs
    # the caller's row rule is the check: none is repeated here
    assert np.isnan(SampleSet.from_validated(["a"], [np.array([np.nan])]).rewards[0][0])
    assert not hasattr(SampleSet, "_checked")


def test_io_does_not_import_pyarrow():
    code = "import sys, klfrontier, klfrontier.io, klfrontier.empirical; print('pyarrow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_pyarrow_message(tmp_path, monkeypatch):
    """Without pyarrow: Parquet names the extra; CSV and JSONL fall back to the standard library."""
    path = tmp_path / "s.csv"
    write_samples(path, {"a": [1.0]})
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow` fail
    assert read_samples(path).groups == {"a": pytest.approx([1.0])}
    with pytest.raises(ImportError, match=r"klfrontier\[data\]"):
        read_samples(path, engine="pyarrow")
    with pytest.raises(ImportError, match=r"klfrontier\[data\]"):
        write_samples(tmp_path / "s.parquet", {"a": [1.0]})


def test_gzip_files_are_compressed(tmp_path):
    path = tmp_path / "s.jsonl.gz"
    write_samples(path, {"a": [1.0]})
    with gzip.open(path, "rt") as f:
        assert json.loads(f.readline()) == {"prompt_id": "a", "reward": 1.0}


def _json_cell(raw):
    """A JSON value for a raw text cell: the number (or literal) it spells, else the string."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


@needs_arrow
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@pytest.mark.parametrize("seed", range(3))
def test_engines_agree_on_messy_files(tmp_path, fmt, seed):
    """Random corruptions at random places, small chunks: pyarrow and the standard library
    keep the same rows and report the same bad rows at the same lines — with and without
    the gold and ref_logprob roles."""
    rng = np.random.default_rng(seed)
    cells = {
        "pid": ["p1", "p2", "", "7", "x y"],
        "reward": ["1.5", "-2", "nan", "abc", "", "1e400", " 3 ", "inf", "0"],
        "gold": ["0.25", "x", "", "nan", "-1e300", " 2 ", "true", "-inf", "1e400"],
        "logprob": ["-1.0", "0.5", "", "-inf", "-0.0", "-3e2"],
        "ref_logprob": ["-2.0", "1", "", "nan", "-0.0", "oops", "-1e-300"],
        "text": ["t", "two\nlines", 'q "x", y', ""],
    }
    rows = []
    for i in range(300):
        # row 0 is clean, so the first valid line has every column (JSONL decides on it)
        pick = {
            k: v[0] if i == 0 or rng.random() < 0.8 else v[rng.integers(len(v))] for k, v in cells.items()
        }
        if rng.random() < 0.5:
            pick["pid"] = f"p{rng.integers(5)}"
        rows.append(pick)
    path = tmp_path / f"messy.{fmt}"
    header = ["prompt_id", "reward", "gold", "logprob", "ref_logprob", "text"]
    if fmt == "csv":
        import csv

        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            for i, row in enumerate(rows):
                if i % 41 == 40:
                    f.write("broken,row\n")
                elif i % 53 == 52:
                    f.write("\n")
                else:
                    w.writerow(
                        [
                            row["pid"],
                            row["reward"],
                            row["gold"],
                            row["logprob"],
                            row["ref_logprob"],
                            row["text"],
                        ]
                    )
    else:
        with open(path, "w") as f:
            for i, row in enumerate(rows):
                if i % 41 == 40:
                    f.write('{"prompt_id": "p1", "reward": \n')
                    continue
                obj = {
                    "prompt_id": row["pid"] or None,
                    "text": row["text"],
                    "reward": _json_cell(row["reward"]),
                }
                if row["gold"]:  # an empty cell: the key is absent
                    obj["gold"] = _json_cell(row["gold"])
                for role in ("logprob", "ref_logprob"):
                    if row[role]:
                        obj[role] = _json_cell(row[role])
                f.write(json.dumps(obj) + "\n")
    for columns in (None, {"gold": "gold"}, {"gold": "gold", "logprob": None}):
        a = read_samples(path, engine="python", chunk_rows=37, keep_text=True, columns=columns)
        b = read_samples(path, engine="pyarrow", chunk_rows=37, keep_text=True, columns=columns)
        assert_same(a, b)
        assert a.bad_rows == b.bad_rows and a.n_bad_rows == b.n_bad_rows > 0
        assert a.has_gold == (columns is not None) and a.has_ref_logprobs
        reasons = " ".join(reason for _, _, reason in a.bad_rows)
        assert ("gold" in reasons) == (columns is not None)
        assert "ref_logprob" in reasons


def test_write_samples_is_atomic(tmp_path):
    """A write that fails half-way leaves the old file whole and no temporary file beside it."""
    bad = SampleSet.from_dict({"a": {"reward": [1.0, 2.0], "text": ["ok", "\ud800"]}})  # not UTF-8
    for name in ("s.jsonl", "s.csv", "s.csv.gz"):
        path = tmp_path / name
        write_samples(path, {"a": [1.0]})
        before = path.read_bytes()
        with pytest.raises(UnicodeEncodeError):
            write_samples(path, bad)
        assert path.read_bytes() == before, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.csv", "s.csv.gz", "s.jsonl"]
