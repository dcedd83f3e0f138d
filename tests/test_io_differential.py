"""One row rule in both engines, byte for byte (issue 10).

Every case of the fuzz corpus (``test_io_corpus.py``) and Hypothesis-generated
JSONL and CSV files are read by the standard-library engine and by the
pyarrow engine, in several ways (small chunks, gold and text read, strict,
a small record limit), and the outcomes must be identical: the same prompts
in the same order, the same values bit for bit (``-0.0`` included), the same
texts, the same bad rows with the same lines and reasons, or the same error.
Reference files go through both engines of :func:`read_reference` alike.
"""

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klfrontier.io import SampleFileError, read_reference, read_samples
from test_io_corpus import GENERATED, SMALL_LIMIT, build_corpus, generated_file

pytest.importorskip("pyarrow")

VARIANTS = [
    {},
    {"chunk_rows": 5},
    {"columns": {"gold": "gold"}, "keep_text": True, "chunk_rows": 3},
    {"columns": {"logprob": None, "prompt_id": "x"}},
    {"strict": True},
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return root, build_corpus(root)


def outcome(read, **kwargs):
    """What a reader did: its result, or the type and message of the error it raised."""
    try:
        return "ok", read(**kwargs)
    except (SampleFileError, ValueError, FileNotFoundError) as exc:
        return "error", type(exc).__name__, str(exc)


def bits(a):
    return None if a is None else np.ascontiguousarray(a, dtype=np.float64).view(np.uint64).tolist()


def digest(result):
    """Everything a SampleSet holds, exactly (floats by their bits)."""
    if result[0] == "error":
        return result
    s = result[1]
    return (
        "ok",
        s.prompts,
        [bits(r) for r in s.rewards],
        *[
            None if getattr(s, n) is None else [bits(x) for x in getattr(s, n)]
            for n in ("gold", "logprobs", "ref_logprobs")
        ],
        s.texts,
        s.bad_rows,
        s.n_bad_rows,
    )


def assert_engines_agree(path, limit=None):
    extra = {} if limit is None else {"max_record_bytes": limit}
    for variant in VARIANTS:
        a = digest(outcome(read_samples, path=path, engine="python", **variant, **extra))
        b = digest(outcome(read_samples, path=path, engine="pyarrow", **variant, **extra))
        assert a == b, (os.path.basename(path), variant)


def assert_reference_engines_agree(path, limit=None):
    extra = {} if limit is None else {"max_record_bytes": limit}
    a = outcome(read_reference, path=path, engine="python", **extra)
    b = outcome(read_reference, path=path, engine="pyarrow", **extra)
    if a[0] == "ok":
        a, b = ("ok", *map(bits, a[1])), (b[0], *map(bits, b[1])) if b[0] == "ok" else b
    assert a == b, os.path.basename(path)


def test_engines_agree_on_the_corpus(corpus):
    root, cases = corpus
    n = 0
    for case in cases:
        if case.name.endswith((".parquet", ".pq")):
            continue  # one engine reads Parquet
        path = os.path.join(root, case.path)
        limit = SMALL_LIMIT if case.small_limit else None
        assert_engines_agree(path, limit)
        assert_reference_engines_agree(path, limit)
        n += 1
    assert n >= 450


def test_engines_agree_on_small_record_limits(corpus):
    """A limit below the records' length makes some of them bad: the same ones in both."""
    root, cases = corpus
    for case in cases:
        if case.name.startswith(
            ("random-00", "random-01", "clean", "quoted", "long", "ref-clean")
        ) and not case.name.endswith(".parquet"):
            path = os.path.join(root, case.path)
            for limit in (64, 100):
                assert_engines_agree(path, limit)
                assert_reference_engines_agree(path, limit)


@pytest.mark.parametrize("suffix, files", GENERATED, ids=[s for s, _ in GENERATED])
@settings(max_examples=150)
@given(data=st.data())
def test_engines_agree_on_generated_files(suffix, files, data):
    with generated_file(data.draw(files), suffix) as path:
        assert_engines_agree(path)
        assert_reference_engines_agree(path)


def test_unused_bytes_never_matter(tmp_path):
    """Invalid UTF-8 (or anything else) in a field that is not read changes nothing."""
    for name, head, clean, dirty in [
        (
            "s.jsonl",
            b"",
            b'{"prompt_id": "a", "reward": 1, "x": "ok"}\n',
            b'{"prompt_id": "a", "reward": 1, "x": "\xff\xfe\xed\xa0\x80"}\n',
        ),
        ("s.csv", b"prompt_id,reward,x\n", b"a,1,ok\n", b"a,1,\xff\xfe\xed\xa0\x80\n"),
    ]:
        results = []
        for data in (clean, dirty):
            (tmp_path / name).write_bytes(head + data * 3)
            for engine in ("python", "pyarrow"):
                results.append(digest(outcome(read_samples, path=tmp_path / name, engine=engine)))
        assert all(r == results[0] for r in results), name
        assert results[0][0] == "ok" and results[0][-1] == 0


@pytest.mark.parametrize("engine", ["python", "pyarrow"])
def test_a_row_does_not_depend_on_its_neighbours(tmp_path, engine):
    """The same good row is kept (with the same value) whatever shares its chunk."""
    good = b'{"prompt_id": "a", "reward": 0.1}\n'
    neighbours = [
        b'{"prompt_id": "b", "reward": 2}\n',
        b'{"prompt_id": "b", "reward": "x"}\n',
        b'{"prompt_id": "b\xff", "reward": 2}\n',
        b"[[[[\n",
        b'{"prompt_id": "b", "reward": -0}\n',
        b'{"prompt_id": "b", "reward": 1} {"prompt_id": "c", "reward": 1}\n\n',
    ]
    for other in neighbours:
        path = tmp_path / "s.jsonl"
        path.write_bytes(other + good + other)
        s = read_samples(path, engine=engine)
        assert s.groups["a"].tolist() == [0.1]
