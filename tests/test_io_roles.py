"""Sample files: the optional ``gold`` (read on request) and ``ref_logprob`` roles.

Expected bad rows are written out by hand from the files below (line by line), not
computed by the library.
"""

import json
import os

import numpy as np
import pytest

from klfrontier.io import SampleFileError, SampleSet, read_samples, write_samples

try:
    import pyarrow  # noqa: F401

    HAVE_ARROW = True
except ImportError:  # pragma: no cover
    HAVE_ARROW = False

needs_arrow = pytest.mark.skipif(not HAVE_ARROW, reason="pyarrow (the data extra) is not installed")
ENGINES = ["python", pytest.param("pyarrow", marks=needs_arrow)]
FORMATS = ["jsonl", "csv", "jsonl.gz", "csv.gz", pytest.param("parquet", marks=needs_arrow)]
GOLD = {"gold": "gold"}
POS = "; a log-probability must be <= 0"


def policy_samples():
    """Gold rewards and reference log-probabilities that must survive a text round trip."""
    return SampleSet.from_dict(
        {
            "plain": {
                "reward": [0.1, 1 / 3, -2.5e10],
                "gold": [5e-324, -0.0, 1.7976931348623157e308],
                "logprob": [-1e-300, -0.0, -745.5],
                "ref_logprob": [-0.0, -1 / 3, -1e-300],
                "text": ["a", "line one\nline two", ""],
            },
            'comma, "quote"': {
                "reward": [5e-324, 2.0],
                "gold": [1 / 7, -2.5e-10],
                "logprob": [-1.0, -2.0],
                "ref_logprob": [-700.25, -3.0],
                "text": ['say "hi", then go', "tab\there"],
            },
            "ünïcødé 🙂": {
                "reward": [-0.0],
                "gold": [-1e300],
                "logprob": [-3.25],
                "ref_logprob": [-4.5],
                "text": ["naïve\r\nwindows"],
            },
        }
    )


def assert_arrays(xs, ys):
    assert (xs is None) == (ys is None)
    if xs is not None:
        assert len(xs) == len(ys)
        for x, y in zip(xs, ys):
            np.testing.assert_array_equal(x, y)
            assert np.signbit(x).tolist() == np.signbit(np.asarray(y)).tolist()  # -0.0 kept


def assert_same(a, b, *, text=True):
    assert a.prompts == b.prompts
    for name in ("rewards", "gold", "logprobs", "ref_logprobs"):
        assert_arrays(getattr(a, name), getattr(b, name))
    if text:
        assert a.texts == b.texts


def lines_reasons(s):
    return [(line, reason) for _, line, reason in s.bad_rows]


# ----------------------------------------------------------------------------- SampleSet
def test_sampleset_carries_gold_and_ref_logprobs():
    s = policy_samples()
    assert s.has_gold and s.has_ref_logprobs and s.has_logprobs
    assert s.gold[1].tolist() == [1 / 7, -2.5e-10]
    assert s.ref_logprobs[2].tolist() == [-4.5]
    cols = s.columns()
    assert list(cols) == ["prompt_id", "reward", "gold", "logprob", "ref_logprob", "text"]
    assert cols["gold"].tolist() == [5e-324, -0.0, 1.7976931348623157e308, 1 / 7, -2.5e-10, -1e300]
    assert cols["ref_logprob"].tolist() == [-0.0, -1 / 3, -1e-300, -700.25, -3.0, -4.5]
    assert repr(s) == "SampleSet(prompts=3, samples=6, gold, logprobs, ref_logprobs)"
    plain = SampleSet.from_dict({"a": [1.0]})
    assert not plain.has_gold and not plain.has_ref_logprobs
    assert plain.gold is None and plain.ref_logprobs is None
    assert set(plain.columns()) == {"prompt_id", "reward"}


def test_from_columns_groups_gold_and_ref_logprob():
    pid = ["x", "y", "x", "z", "y", "x"]
    r = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    g = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    ref = [-1.0, -2.0, -3.0, -4.0, -5.0, -6.0]
    s = SampleSet.from_columns(pid, r, gold=g, ref_logprob=ref)
    assert s.prompts == ["x", "y", "z"]
    # each sample's gold and ref_logprob stay with its reward
    assert [x.tolist() for x in s.rewards] == [[1.0, 3.0, 6.0], [2.0, 5.0], [4.0]]
    assert [x.tolist() for x in s.gold] == [[10.0, 30.0, 60.0], [20.0, 50.0], [40.0]]
    assert [x.tolist() for x in s.ref_logprobs] == [[-1.0, -3.0, -6.0], [-2.0, -5.0], [-4.0]]
    assert s.logprobs is None and s.texts is None
    # the existing positional order is unchanged: (prompt_id, reward, logprob, text)
    t = SampleSet.from_columns(["a", "a"], [1.0, 2.0], [-1.0, -2.0], ["u", "v"])
    assert t.logprobs[0].tolist() == [-1.0, -2.0] and t.texts == [["u", "v"]] and t.gold is None


def test_from_columns_validation_names_the_argument():
    pid, r = ["a", "a", "b"], [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="^gold must have the length of reward$"):
        SampleSet.from_columns(pid, r, gold=[1.0, 2.0])
    with pytest.raises(ValueError, match="^gold contains NaN or inf$"):
        SampleSet.from_columns(pid, r, gold=[1.0, np.inf, 2.0])
    with pytest.raises(ValueError, match="^ref_logprob must have the length of reward$"):
        SampleSet.from_columns(pid, r, ref_logprob=[-1.0])
    with pytest.raises(ValueError, match="^ref_logprob contains NaN or inf$"):
        SampleSet.from_columns(pid, r, ref_logprob=[-1.0, np.nan, -1.0])
    with pytest.raises(ValueError, match="^ref_logprob contains positive values"):
        SampleSet.from_columns(pid, r, ref_logprob=[-1.0, 1e-300, -1.0])
    with pytest.raises(ValueError, match="^logprob contains positive values"):
        SampleSet.from_columns(pid, r, logprob=[-1.0, 0.5, -1.0])
    # gold may be positive; log-probabilities may be -0.0
    s = SampleSet.from_columns(pid, r, gold=[5.0, -5.0, 0.0], ref_logprob=[-0.0, -0.0, -1.0])
    assert s.gold[0].tolist() == [5.0, -5.0]


def test_from_dict_validation_names_the_key():
    with pytest.raises(ValueError, match="give 'gold' for every prompt or for none"):
        SampleSet.from_dict({"a": {"reward": [1.0], "gold": [1.0]}, "b": {"reward": [1.0]}})
    with pytest.raises(ValueError, match="give 'ref_logprob' for every prompt or for none"):
        SampleSet.from_dict({"a": {"reward": [1.0]}, "b": {"reward": [1.0], "ref_logprob": [-1.0]}})
    with pytest.raises(ValueError, match="may have 'gold', 'logprob', 'ref_logprob', 'text'"):
        SampleSet.from_dict({"a": {"reward": [1.0], "golden": [1.0]}})
    with pytest.raises(ValueError, match="gold of prompt 'a' contain NaN or inf"):
        SampleSet.from_dict({"a": {"reward": [1.0, 2.0], "gold": [1.0, np.nan]}})
    with pytest.raises(ValueError, match="gold of prompt 'b' do not match its rewards in length"):
        SampleSet.from_dict(
            {"a": {"reward": [1.0], "gold": [1.0]}, "b": {"reward": [1.0, 2.0], "gold": [1.0]}}
        )
    with pytest.raises(ValueError, match="ref_logprobs of prompt 'a' contain positive values"):
        SampleSet.from_dict({"a": {"reward": [1.0], "ref_logprob": [0.5]}})
    with pytest.raises(ValueError, match="ref_logprobs of prompt 'a' contain NaN or inf"):
        SampleSet.from_dict({"a": {"reward": [1.0], "ref_logprob": [-np.inf]}})
    with pytest.raises(ValueError, match="gold must have one entry per prompt"):
        SampleSet(["a"], [[1.0]], gold=[[1.0], [2.0]])
    with pytest.raises(ValueError, match="ref_logprobs must have one entry per prompt"):
        SampleSet(["a", "b"], [[1.0], [2.0]], ref_logprobs=[[-1.0]])


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_exact(tmp_path, fmt):
    s = policy_samples()
    path = tmp_path / f"s.{fmt}"
    write_samples(path, s)
    back = read_samples(path, keep_text=True, columns=GOLD)
    assert_same(back, s)
    assert back.n_bad_rows == 0
    # gold only on request; ref_logprob whenever present
    plain = read_samples(path)
    assert plain.gold is None and not plain.has_gold
    assert_arrays(plain.ref_logprobs, s.ref_logprobs)
    assert read_samples(path, columns={"ref_logprob": None, "gold": None}).ref_logprobs is None


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_engines_agree_on_round_trip(tmp_path, fmt):
    s = policy_samples()
    path = tmp_path / f"s.{fmt}"
    write_samples(path, s)
    for engine in ["python"] + (["pyarrow"] if HAVE_ARROW else []):
        assert_same(read_samples(path, keep_text=True, columns=GOLD, engine=engine), s)


@pytest.mark.parametrize("fmt", FORMATS)
def test_renamed_columns_round_trip(tmp_path, fmt):
    cols = {
        "prompt_id": "q",
        "reward": "proxy",
        "gold": "human",
        "logprob": "lp_pi",
        "ref_logprob": "lp_ref",
        "text": None,
    }
    path = tmp_path / f"s.{fmt}"
    write_samples(path, policy_samples(), columns=cols)
    if fmt == "csv":
        assert path.read_text(encoding="utf-8").splitlines()[0] == "q,proxy,human,lp_pi,lp_ref"
    back = read_samples(path, columns=cols)
    assert_same(back, policy_samples(), text=False)
    # without the mapping, the default names are not there (JSONL: every line is bad)
    with pytest.raises(SampleFileError, match="missing (column 'prompt_id'|prompt_id)"):
        read_samples(path)


def test_write_can_leave_gold_out(tmp_path):
    path = tmp_path / "s.jsonl"
    write_samples(path, policy_samples(), columns={"gold": None})
    row = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert set(row) == {"prompt_id", "reward", "logprob", "ref_logprob", "text"}
    with pytest.raises(SampleFileError, match="missing column 'gold'"):
        read_samples(path, columns=GOLD)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_gold_may_be_the_reward_column(tmp_path, engine, fmt):
    path = tmp_path / f"s.{fmt}"
    write_samples(path, {"a": [1.5, -2.0], "b": [3.0]})
    s = read_samples(path, columns={"gold": "reward"}, engine=engine)
    assert_arrays(s.gold, s.rewards)


# ----------------------------------------------------------------------------- bad rows
BAD_CSV = (
    "prompt_id,reward,g,logprob,ref_logprob,text\n"  # 1
    'p1,1.0,0.5,-1.0,-2.0,"multi\n'  # 2
    'line"\n'  # 3
    "p1,2.0,x,-1.0,-2.0,t\n"  # 4
    "p2,3.0,,-1.0,-2.0,t\n"  # 5
    "\n"  # 6
    "p2,4.0,inf,-1.0,-2.0,t\n"  # 7
    "p3,5.0,1.5,-1.0,0.5,t\n"  # 8
    "p3,6.0,1.5,-1.0,,t\n"  # 9
    "p3,7.0,1.5,-1.0,nan,t\n"  # 10
    "p3,x,bad,-1.0,bad,t\n"  # 11
    "p4,8.0,bad,0.5,1.0,t\n"  # 12
    "p4,9.0,2.5,0.5,1.0,t\n"  # 13
    'p4,10.0,2.5,-0.5,abc,"a ""q"", b"\n'  # 14
    "p5,11.0,-1e308,-0.0,-0.0,t\n"  # 15
)
BAD_CSV_GOLD = [
    (4, "gold is not a number: 'x'"),
    (5, "missing gold"),
    (7, "gold is not finite: 'inf'"),
    (8, "ref_logprob is positive ('0.5')" + POS),
    (9, "missing ref_logprob"),
    (10, "ref_logprob is not finite: 'nan'"),
    (11, "reward is not a number: 'x'"),  # reward is checked before gold
    (12, "gold is not a number: 'bad'"),  # gold before logprob
    (13, "logprob is positive ('0.5')" + POS),  # logprob before ref_logprob
    (14, "ref_logprob is not a number: 'abc'"),
]
BAD_CSV_NO_GOLD = [  # the g column is not read: rows 4, 5, 7 are good, row 12 fails on logprob
    (8, "ref_logprob is positive ('0.5')" + POS),
    (9, "missing ref_logprob"),
    (10, "ref_logprob is not finite: 'nan'"),
    (11, "reward is not a number: 'x'"),
    (12, "logprob is positive ('0.5')" + POS),
    (13, "logprob is positive ('0.5')" + POS),
    (14, "ref_logprob is not a number: 'abc'"),
]


@pytest.mark.parametrize("engine", ENGINES)
def test_bad_rows_csv(tmp_path, engine):
    path = tmp_path / "bad.csv"
    path.write_text(BAD_CSV, encoding="utf-8")
    s = read_samples(path, columns={"gold": "g"}, engine=engine)
    assert lines_reasons(s) == BAD_CSV_GOLD
    assert s.n_bad_rows == len(BAD_CSV_GOLD)
    assert s.prompts == ["p1", "p5"]
    assert [x.tolist() for x in s.rewards] == [[1.0], [11.0]]
    assert [x.tolist() for x in s.gold] == [[0.5], [-1e308]]
    assert [x.tolist() for x in s.logprobs] == [[-1.0], [-0.0]]
    assert [x.tolist() for x in s.ref_logprobs] == [[-2.0], [-0.0]]

    plain = read_samples(path, engine=engine)
    assert lines_reasons(plain) == BAD_CSV_NO_GOLD
    assert plain.gold is None
    assert plain.groups == {
        "p1": pytest.approx([1.0, 2.0]),
        "p2": pytest.approx([3.0, 4.0]),
        "p5": pytest.approx([11.0]),
    }

    with pytest.raises(SampleFileError) as info:
        read_samples(path, columns={"gold": "g"}, strict=True, engine=engine)
    assert (info.value.line, info.value.reason) == BAD_CSV_GOLD[0]
    assert str(info.value) == f"{os.fspath(path)}:4: gold is not a number: 'x'"


BAD_JSONL = [
    '{"prompt_id": "p1", "reward": 1, "g": 0.5, "ref_logprob": -2}',  # 1
    '{"prompt_id": "p1", "reward": 2, "g": "x", "ref_logprob": -2}',  # 2
    '{"prompt_id": "p1", "reward": 3, "ref_logprob": -2}',  # 3
    '{"prompt_id": "p2", "reward": 4, "g": null, "ref_logprob": -2}',  # 4
    "",  # 5
    '{"prompt_id": "p2", "reward": 5, "g": true, "ref_logprob": -2}',  # 6
    '{"prompt_id": "p2", "reward": 6, "g": 1e999, "ref_logprob": -2}',  # 7
    '{"prompt_id": "p3", "reward": 7, "g": "2.5", "ref_logprob": 0.5}',  # 8
    '{"prompt_id": "p3", "reward": 8, "g": "2.5"}',  # 9
    '{"prompt_id": "p3", "reward": 9, "g": "2.5", "ref_logprob": "-1.5"}',  # 10
    '{"prompt_id": "p3", "reward": 10, "g": [1], "ref_logprob": -1}',  # 11
    '{"prompt_id": "p4", "reward": 11, "g": -3, "ref_logprob": -0.0}',  # 12
]
BAD_JSONL_GOLD = [
    (2, "gold is not a number: 'x'"),
    (3, "missing gold"),
    (4, "missing gold"),
    (6, "gold is not a number: True"),
    (7, "gold is not finite: inf"),
    (8, "ref_logprob is positive (0.5)" + POS),
    (9, "missing ref_logprob"),
    (11, "gold is not a number: [1]"),
]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("chunk_rows", [1, 5, 65536])
def test_bad_rows_jsonl(tmp_path, engine, chunk_rows):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(BAD_JSONL) + "\n")
    s = read_samples(path, columns={"gold": "g"}, engine=engine, chunk_rows=chunk_rows)
    assert lines_reasons(s) == BAD_JSONL_GOLD
    assert s.prompts == ["p1", "p3", "p4"]
    assert [x.tolist() for x in s.rewards] == [[1.0], [9.0], [11.0]]
    assert [x.tolist() for x in s.gold] == [[0.5], [2.5], [-3.0]]
    assert [x.tolist() for x in s.ref_logprobs] == [[-2.0], [-1.5], [-0.0]]
    assert s.logprobs is None

    plain = read_samples(path, engine=engine, chunk_rows=chunk_rows)
    assert lines_reasons(plain) == [(8, "ref_logprob is positive (0.5)" + POS), (9, "missing ref_logprob")]
    assert plain.gold is None and plain.n_samples == 9

    with pytest.raises(SampleFileError, match=r"bad\.jsonl:2: gold is not a number: 'x'$"):
        read_samples(path, columns={"gold": "g"}, strict=True, engine=engine, chunk_rows=chunk_rows)


@pytest.mark.parametrize("engine", ENGINES)
def test_jsonl_first_valid_line_decides_ref_logprob(tmp_path, engine):
    path = tmp_path / "s.jsonl"
    path.write_text(
        '{"prompt_id": "a", "reward": "bad", "ref_logprob": -1}\n'  # bad: no decision
        '{"prompt_id": "a", "reward": 1}\n'  # decides: none
        '{"prompt_id": "a", "reward": 2, "ref_logprob": 5}\n'
    )  # not read
    s = read_samples(path, engine=engine)
    assert s.ref_logprobs is None and s.n_samples == 2
    assert lines_reasons(s) == [(1, "reward is not a number: 'bad'")]


@needs_arrow
def test_bad_rows_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "prompt_id": ["a", "a", "a", "b", "b", "b", "c"],
            "reward": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
            "g": pa.array(["0.5", "x", None, "nan", "1", "1", " 2 "]),
            "ref_logprob": pa.array([-1.0, -1.0, -1.0, -1.0, 0.5, None, -0.0]),
        }
    )
    path = tmp_path / "s.parquet"
    pq.write_table(table, path)
    s = read_samples(path, columns={"gold": "g"}, chunk_rows=3)
    assert lines_reasons(s) == [
        (2, "gold is not a number: 'x'"),
        (3, "missing gold"),
        (4, "gold is not finite: 'nan'"),
        (5, "ref_logprob is positive (0.5)" + POS),
        (6, "missing ref_logprob"),
    ]
    assert [x.tolist() for x in s.gold] == [[0.5], [2.0]]
    assert [x.tolist() for x in s.ref_logprobs] == [[-1.0], [-0.0]]
    plain = read_samples(path)
    assert plain.gold is None and lines_reasons(plain) == [
        (5, "ref_logprob is positive (0.5)" + POS),
        (6, "missing ref_logprob"),
    ]
    with pytest.raises(SampleFileError, match=r"s\.parquet:2: gold is not a number: 'x'$"):
        read_samples(path, columns={"gold": "g"}, strict=True)
    pq.write_table(pa.table({"prompt_id": ["a"], "reward": [1.0], "g": [True]}), tmp_path / "b.parquet")
    with pytest.raises(SampleFileError, match="column 'g' has type bool"):
        read_samples(tmp_path / "b.parquet", columns={"gold": "g"})


# ----------------------------------------------------------------------------- missing gold column
@pytest.mark.parametrize("engine", ENGINES)
def test_missing_gold_column_csv(tmp_path, engine):
    path = tmp_path / "s.csv"
    path.write_text("prompt_id,reward,gold\na,1,2\n")
    with pytest.raises(SampleFileError) as info:
        read_samples(path, columns={"gold": "human"}, engine=engine)
    err = info.value
    assert (err.file, err.line) == (os.fspath(path), 1)
    assert err.reason == "missing column 'human' (header: ['prompt_id', 'reward', 'gold'])"
    # not requested: the gold column is there but not read
    assert read_samples(path, engine=engine).gold is None
    assert read_samples(path, columns={"gold": None}, engine=engine).gold is None
    assert read_samples(path, columns=GOLD, engine=engine).gold[0].tolist() == [2.0]


@needs_arrow
def test_missing_gold_column_parquet(tmp_path):
    path = tmp_path / "s.parquet"
    write_samples(path, {"a": [1.0, 2.0]})
    with pytest.raises(SampleFileError) as info:
        read_samples(path, columns=GOLD)
    assert info.value.line is None
    assert info.value.reason == "missing column 'gold' (columns: ['prompt_id', 'reward'])"


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("chunk_rows", [1, 2, 65536])
def test_missing_gold_column_jsonl(tmp_path, engine, chunk_rows):
    """The first valid line (bad lines do not count) shows whether the file has gold."""
    path = tmp_path / "s.jsonl"
    path.write_text(
        '{"prompt_id": "a", "reward": "bad"}\n'  # bad for its reward
        "\n"
        '{"prompt_id": "a", "reward": 1, "gold": "x"}\n'  # bad for its gold
        '{"prompt_id": "a", "reward": 2, "other": 3}\n'  # valid but for gold
        '{"prompt_id": "a", "reward": 3, "gold": 1}\n'
    )
    with pytest.raises(SampleFileError) as info:
        read_samples(path, columns=GOLD, engine=engine, chunk_rows=chunk_rows)
    err = info.value
    assert (err.file, err.line) == (os.fspath(path), 4)
    assert (
        err.reason == "missing column 'gold' (keys of the first valid line: ['other', 'prompt_id', 'reward'])"
    )
    assert read_samples(path, engine=engine, chunk_rows=chunk_rows).n_samples == 3


@pytest.mark.parametrize("engine", ENGINES)
def test_gold_decided_across_chunks(tmp_path, engine):
    """Many bad lines before the first valid one, small chunks: same decision and lines."""
    lines = ['{"prompt_id": "a", "reward": "bad"}'] * 40
    lines += [json.dumps({"prompt_id": f"p{i % 3}", "reward": i, "gold": -i}) for i in range(60)]
    lines[75] = '{"prompt_id": "p0", "reward": 1}'
    path = tmp_path / "s.jsonl"
    path.write_text("\n".join(lines) + "\n")
    s = read_samples(path, columns=GOLD, engine=engine, chunk_rows=16)
    assert [line for _, line, _ in s.bad_rows] == list(range(1, 41)) + [76]
    assert s.bad_rows[-1][2] == "missing gold"
    for r, g in zip(s.rewards, s.gold):
        np.testing.assert_array_equal(g, -r)
    assert s.n_samples == 59
    # the first valid line lacks gold: the error names its line
    lines[40] = '{"prompt_id": "a", "reward": 1}'
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SampleFileError, match=r"s\.jsonl:41: missing column 'gold'"):
        read_samples(path, columns=GOLD, engine=engine, chunk_rows=16)
