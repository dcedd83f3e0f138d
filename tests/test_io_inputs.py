"""Reading input (issue 10): reference files, whole-file errors, the record and depth limits at
their boundaries, Parquet dictionaries, prompt order at scale, and that the fast path is taken."""

import gzip
import json
import os
import threading

import numpy as np
import pytest

from klfrontier.io import (
    MAX_JSON_DEPTH,
    SampleFileError,
    SampleSet,
    read_reference,
    read_samples,
    write_samples,
)
from klfrontier.io import _rows as io_rows
from klfrontier.io import jsonl as io_jsonl
from klfrontier.io.samples import stable_order

pa = pytest.importorskip("pyarrow")
ENGINES = ["python", "pyarrow"]


# ----------------------------------------------------------------------------- reference files
@pytest.mark.parametrize("engine", ENGINES)
def test_reference_csv_forms(tmp_path, engine):
    forms = {
        "named.csv": b"x,reward,prob\na,0,0.25\nb,1,0.75\n",
        "bom.csv": b"\xef\xbb\xbfreward,prob\n0,0.25\n1,0.75\n",
        "spaces.csv": b" reward , prob \n0,0.25\n\n1,0.75\n\n",
        "headerless.csv": b"0,0.25\r\n1,0.75\r\n",
        "quoted.csv": b'"reward","prob"\n"0","0.25"\n1,.75\n',
        "gz.csv.gz": gzip.compress(b"reward,prob\n0,0.25\n1,0.75\n"),
    }
    for name, data in forms.items():
        (tmp_path / name).write_bytes(data)
        r, p = read_reference(tmp_path / name, engine=engine)
        assert r.tolist() == [0.0, 1.0] and p.tolist() == [0.25, 0.75], name
        assert r.dtype == np.float64


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    "data, message",
    [
        (
            b"reward,reward,prob\n0,1,0.5\n",
            "column 'reward' appears 2 times in the header: which one is meant is ambiguous",
        ),
        (b"reward,prob\n0,0.5\nx,0.5\n", ":3: reward is not a number: 'x'"),
        (b"reward,prob\ntrue,0.5\n", ":2: reward is not a number: 'true'"),
        (b"reward,prob\n0,nan\n", ":2: prob is not finite: 'nan'"),
        (b"reward,prob\n0,0.5,1\n", ":2: expected 2 fields, found 3"),
        (b"reward,prob\n0\xff,0.5\n", ":2: reward is not valid UTF-8"),
        (b"0,0.5,1\n", "exactly two columns"),
        (b"score,p\n0,1\n", "CSV header must contain 'reward' and 'prob'"),
        (b"", "empty file"),
        (b"reward,prob\n", "no rows"),
        (b"reward,prob\n0,0.5\n1,0.5," + b"9" * 300 + b"\n", ":3: record longer than 128 bytes"),
        ("reward,prob\n0,1\n".encode("utf-16"), "UTF-16"),
    ],
)
def test_reference_csv_errors(tmp_path, engine, data, message):
    path = tmp_path / "ref.csv"
    path.write_bytes(data)
    with pytest.raises(SampleFileError) as err:
        read_reference(path, engine=engine, max_record_bytes=128)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_reference_json_forms_and_errors(tmp_path):
    path = tmp_path / "ref.json"
    for data in (
        {"reward": [0, 1], "prob": [0.25, 0.75]},
        [{"reward": 0, "prob": 0.25}, {"reward": 1, "prob": 0.75}],
        [[0, 0.25], [1, 0.75]],
    ):
        path.write_text(json.dumps(data))
        r, p = read_reference(path)
        assert r.tolist() == [0.0, 1.0] and p.tolist() == [0.25, 0.75]
    cases = {
        b'{"reward": [true, 1], "prob": [0.5, 0.5]}': "item 0: reward is not a number: True",
        b"[[0, 0.5], [false, 0.5]]": "item 1: reward is not a number: False",
        b'{"reward": [0], "reward": [1], "prob": [1]}': "key 'reward' given twice",
        b"[" * 100_000: f"nested deeper than {MAX_JSON_DEPTH} levels",
        b'{"reward": [NaN], "prob": [1]}': "reward is not finite",
        b'{"reward": [0, 1], "prob": [1]}': "give one per outcome",
        b'[{"reward": 0}]': "lacks key 'prob'",
        b"{": "invalid JSON",
        b'{"reward": [0], "prob": [1], "x": "\xff"}': "not valid UTF-8",
        b"[]": "expected an object of two lists",
    }
    for data, message in cases.items():
        path.write_bytes(data)
        with pytest.raises(SampleFileError, match=None) as err:
            read_reference(path)
        assert message in str(err.value), (data[:40], str(err.value))
    path.write_bytes(b'{"reward": [0], "prob": [1], "pad": "' + b"x" * 200 + b'"}')
    with pytest.raises(SampleFileError, match="larger than 128 bytes"):
        read_reference(path, max_record_bytes=128)
    path.write_bytes(b"\xef\xbb\xbf[[0, 1]]")
    assert read_reference(path)[0].tolist() == [0.0]


def test_reference_from_a_fifo_is_read_once(tmp_path):
    fifo = tmp_path / "ref.csv"
    os.mkfifo(fifo)

    def write():
        with open(fifo, "wb") as f:
            f.write(b"reward,prob\n0,0.5\n1,0.5\n")

    t = threading.Thread(target=write)
    t.start()
    r, p = read_reference(fifo)  # pyarrow would seek: the standard library reads it once
    t.join(5)
    assert r.tolist() == [0.0, 1.0] and not t.is_alive()


# ----------------------------------------------------------------------------- whole-file errors
def test_whole_file_errors_are_one_line(tmp_path):
    good = b'{"prompt_id": "a", "reward": 1}\n'
    (tmp_path / "dir.jsonl").mkdir()
    os.symlink("loop2.jsonl", tmp_path / "loop1.jsonl")
    os.symlink("loop1.jsonl", tmp_path / "loop2.jsonl")
    os.symlink("nowhere.jsonl", tmp_path / "dangling.jsonl")
    os.symlink("/dev/zero", tmp_path / "zero.csv")
    files = {
        "plain.jsonl.gz": good,
        "truncated.jsonl.gz": gzip.compress(good * 100)[:-30],
        "utf16.jsonl": "\ufeff".encode("utf-16-le") + good.decode().encode("utf-16-le"),
        "utf32.csv": "prompt_id,reward\n".encode("utf-32"),
        "nul.jsonl": good + b'{"prompt_id": "a\x00", "reward": 1}\n',
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    expect = {
        "dir.jsonl": "is a directory, not a file",
        "loop1.jsonl": "symbolic link loop",
        "dangling.jsonl": "is a symbolic link to 'nowhere.jsonl', which does not exist",
        "zero.csv": "is a device",
        "plain.jsonl.gz": "not a valid gzip file",
        "truncated.jsonl.gz": "truncated gzip file",
        "utf16.jsonl": "UTF-16 text (byte-order mark)",
        "utf32.csv": "UTF-32 text",
        "nul.jsonl": f"NUL byte at byte {len(good) + 16}",
    }
    for name, message in expect.items():
        for engine in ENGINES:
            with pytest.raises(SampleFileError) as err:
                read_samples(tmp_path / name, engine=engine)
            assert message in str(err.value) and "\n" not in str(err.value), (name, str(err.value))
    with pytest.raises(FileNotFoundError):
        read_samples(tmp_path / "absent.csv")


@pytest.mark.parametrize("engine", ENGINES)
def test_bom_in_every_reader(tmp_path, engine):
    bom = b"\xef\xbb\xbf"
    (tmp_path / "s.csv").write_bytes(bom + b"prompt_id,reward\na,1\n")
    (tmp_path / "s.jsonl").write_bytes(bom + b'{"prompt_id": "a", "reward": 1}\n')
    (tmp_path / "s.csv.gz").write_bytes(gzip.compress(bom + b"prompt_id,reward\na,1\n"))
    for name in ("s.csv", "s.jsonl", "s.csv.gz"):
        assert read_samples(tmp_path / name, engine=engine).groups == {"a": [1.0]}
    # a second mark is not one: line 1 is then bad (in both engines)
    (tmp_path / "s.jsonl").write_bytes(
        bom + bom + b'{"prompt_id": "a", "reward": 1}\n{"prompt_id": "b", "reward": 2}\n'
    )
    s = read_samples(tmp_path / "s.jsonl", engine=engine)
    assert s.prompts == ["b"] and s.bad_rows[0][1] == 1


# ----------------------------------------------------------------------------- limits at their edges
@pytest.mark.parametrize("engine", ENGINES)
def test_record_limit_boundary(tmp_path, engine):
    limit = 100
    for fmt, make in (
        ("jsonl", lambda n: b'{"prompt_id": "a", "reward": 1, "t": "' + b"x" * (n - 40) + b'"}'),
        ("csv", lambda n: b"a,1," + b"x" * (n - 4)),
    ):
        head = b"prompt_id,reward,t\n" if fmt == "csv" else b""
        for eol in (b"\n", b"\r\n"):
            at, over = make(limit), make(limit + 1)
            assert len(at) == limit and len(over) == limit + 1
            path = tmp_path / f"s.{fmt}"
            path.write_bytes(head + at + eol + over + eol + at + eol)
            s = read_samples(path, engine=engine, max_record_bytes=limit)
            first = 2 if fmt == "csv" else 1
            assert s.n_samples == 2 and [b[1] for b in s.bad_rows] == [first + 1], (fmt, eol, s.bad_rows)
            assert s.bad_rows[0][2] == f"record longer than {limit} bytes (max_record_bytes)"


@pytest.mark.parametrize("engine", ENGINES)
def test_csv_record_limit_counts_the_lines_a_quoted_field_spans(tmp_path, engine):
    path = tmp_path / "s.csv"
    path.write_bytes(b'prompt_id,reward,t\na,1,"' + b"y\n" * 60 + b'"\nb,2,z\n')
    s = read_samples(path, engine=engine, max_record_bytes=100)
    # one bad row; the quoted field is skipped to its closing quote, and the next record is read
    assert s.bad_rows == [(str(path), 2, "record longer than 100 bytes (max_record_bytes)")]
    assert s.prompts == ["b"]
    # the same when a single physical line of the field is too long
    path.write_bytes(b'prompt_id,reward,t\na,1,"' + b"y" * 300 + b'\n"\nb,2,z\n')
    s = read_samples(path, engine=engine, max_record_bytes=100)
    assert [b[1] for b in s.bad_rows] == [2] and s.prompts == ["b"]
    assert read_samples(path, engine=engine).n_bad_rows == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_json_depth_boundary(tmp_path, engine):
    def line(depth):  # the object is level 1, each list one more
        return b'{"prompt_id": "a", "reward": 1, "x": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}\n"

    path = tmp_path / "s.jsonl"
    path.write_bytes(
        line(MAX_JSON_DEPTH)
        + line(MAX_JSON_DEPTH + 1)
        + b'{"prompt_id": "a", "reward": 2, "x": "'
        + b"[" * 500
        + b'"}\n'
    )
    s = read_samples(path, engine=engine)
    assert s.groups["a"].tolist() == [1.0, 2.0]
    assert s.bad_rows == [(str(path), 2, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")]


def test_json_depth_oracle():
    rng = np.random.default_rng(5)
    for _ in range(200):
        obj = 0
        for _ in range(int(rng.integers(0, 12))):
            obj = [obj] if rng.random() < 0.5 else {"k": obj, "s": "[{" * int(rng.integers(3))}
        depth, x = 0, obj
        while isinstance(x, (list, dict)):
            depth, x = depth + 1, (x[0] if isinstance(x, list) else x["k"])
        assert io_rows.json_depth(json.dumps(obj).encode()) == depth


@pytest.mark.parametrize("engine", ENGINES)
def test_repeated_keys(tmp_path, engine):
    path = tmp_path / "s.jsonl"
    path.write_bytes(
        b'{"prompt_id": "a", "reward": 1, "x": 1, "x": 2}\n{"prompt_id": "a", "reward": 1, "reward": 2}\n'
    )
    s = read_samples(path, engine=engine)
    assert s.n_samples == 1 and s.bad_rows[0][1:] == (
        2,
        "key 'reward' given twice: which value is meant is ambiguous",
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_invalid_utf8_is_a_bad_row_with_its_line(tmp_path, engine):
    for name, data, line in [
        ("s.jsonl", b'{"prompt_id": "a", "reward": 1}\n{"prompt_id": "b\xff", "reward": 1}\n', 2),
        ("s.csv", b"prompt_id,reward,text\na,1,\xff\nb\xc3,2,x\n", 3),
    ]:
        path = tmp_path / name
        path.write_bytes(data)
        s = read_samples(path, engine=engine)
        assert s.prompts == ["a"] and s.bad_rows[0][1] == line
        assert s.bad_rows[0][2].startswith("prompt_id is not valid UTF-8")
        with pytest.raises(SampleFileError, match=f":{line}: prompt_id is not valid UTF-8"):
            read_samples(path, engine=engine, strict=True)
        if name == "s.csv":  # the text is read too: row 2's text is then bad as well
            with pytest.raises(SampleFileError, match=r"2 bad rows; first: line 2: text is not valid UTF-8"):
                read_samples(path, engine=engine, keep_text=True)


def test_max_record_bytes_is_checked():
    for bad in (63, 1.5, True, "100"):
        with pytest.raises(ValueError, match="max_record_bytes must be an integer >= 64"):
            read_samples("x.jsonl", max_record_bytes=bad)


# ----------------------------------------------------------------------------- Parquet
def test_parquet_dictionaries_read_like_plain_columns(tmp_path):
    import pyarrow.parquet as pq

    pids = ["p1", "p0", "p1", "p2", "p0", "p0"]
    rewards = ["1.5", "2", "x", "3", "-0.0", "1e400"]
    plain, dicts = tmp_path / "plain.parquet", tmp_path / "dict.parquet"
    pq.write_table(pa.table({"prompt_id": pids, "reward": rewards}), plain)
    pq.write_table(
        pa.table(
            {"prompt_id": pa.array(pids).dictionary_encode(), "reward": pa.array(rewards).dictionary_encode()}
        ),
        dicts,
    )
    a, b = read_samples(plain), read_samples(dicts)
    assert a.prompts == b.prompts == ["p1", "p0", "p2"]
    assert [x.tolist() for x in a.rewards] == [x.tolist() for x in b.rewards] == [[1.5], [2.0, -0.0], [3.0]]
    assert a.bad_rows == [
        (str(plain), 3, "reward is not a number: 'x'"),
        (str(plain), 6, "reward is not finite: '1e400'"),
    ]
    assert [r[1:] for r in b.bad_rows] == [r[1:] for r in a.bad_rows]


# ----------------------------------------------------------------------------- scale and speed
def test_stable_order_matches_numpy():
    rng = np.random.default_rng(0)
    for n_groups in (1, 3, 65536, 65537, 300_000):
        codes = rng.integers(0, n_groups, size=5000).astype(np.int32)
        assert np.array_equal(stable_order(codes, n_groups), np.argsort(codes, kind="stable"))


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_prompt_order_of_first_appearance(tmp_path, fmt, monkeypatch):
    """Many prompts across chunks and id-table unifications: the order of first appearance and
    every value, against a plain dict (the oracle)."""
    monkeypatch.setattr(io_rows, "_UNIFY_ROWS", 700)
    rng = np.random.default_rng(1)
    pids = [f"q{int(k)}" for k in rng.zipf(1.3, size=6000) % 2500]
    rewards = rng.normal(size=6000).round(6)
    path = tmp_path / f"s.{fmt}"
    s0 = SampleSet.from_columns(pids, rewards)
    write_samples(path, s0)
    order = list(dict.fromkeys(pids))
    for engine in ["pyarrow"] if fmt == "parquet" else ENGINES:
        s = read_samples(path, engine=engine, chunk_rows=333)
        assert s.prompts == order
        expect = {}
        for p, r in zip(pids, rewards):
            expect.setdefault(p, []).append(r)
        assert all(s.groups[p].tolist() == expect[p] for p in order)


def test_clean_jsonl_takes_the_fast_path(tmp_path, monkeypatch):
    """pyarrow parses a clean file: the standard-library path is never called (a speed guard)."""
    calls = []
    real = io_jsonl._jsonl_chunk_python
    monkeypatch.setattr(io_jsonl, "_jsonl_chunk_python", lambda *a: calls.append(1) or real(*a))
    path = tmp_path / "s.jsonl"
    rows = [
        {"prompt_id": f"p{i % 7}", "reward": i / 3, "logprob": -i / 5 - 0.1, "text": "é [x] \\"}
        for i in range(5000)
    ]
    path.write_text("".join(json.dumps(r) + "\r\n" for r in rows))
    s = read_samples(path, engine="pyarrow", chunk_rows=1000, keep_text=True)
    assert s.n_samples == 5000 and not calls
    read_samples(path, engine="python")
    assert calls
