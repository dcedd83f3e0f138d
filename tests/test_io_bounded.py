"""Bounded input: a record longer than max_record_bytes is a bad row, never held in memory."""

import os
import tracemalloc

import pytest

from klfrontier.io import MAX_RECORD_BYTES, SampleFileError, read_samples

LONG = 48 << 20  # a 48 MiB line


def _write(path, head, long_line, tail):
    with open(path, "wb") as f:
        f.write(head)
        chunk = b"x" * (1 << 20)
        for _ in range(LONG // len(chunk)):
            f.write(chunk)
        f.write(long_line)
        f.write(tail)


@pytest.mark.parametrize("engine", ["python", "pyarrow"])
def test_jsonl_long_line_is_a_bad_row_with_bounded_memory(tmp_path, engine):
    p = tmp_path / "s.jsonl"
    _write(
        p,
        b'{"prompt_id": "a", "reward": 1}\n{"prompt_id": "a", "reward": ',
        b"2}\n",
        b'{"prompt_id": "b", "reward": 3}\n{"prompt_id": "b", "reward": 4}\n',
    )
    tracemalloc.start()
    s = read_samples(p, engine=engine, max_record_bytes=1 << 20)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert s.groups == {"a": pytest.approx([1.0]), "b": pytest.approx([3.0, 4.0])}
    assert s.n_bad_rows == 1 and s.bad_rows[0][1] == 2
    assert "longer than 1048576 bytes" in s.bad_rows[0][2]
    assert peak < 16 << 20  # the 48 MiB line was never held


@pytest.mark.parametrize("engine", ["python", "pyarrow"])
def test_csv_long_line_is_a_bad_row_with_bounded_memory(tmp_path, engine):
    p = tmp_path / "s.csv"
    _write(p, b"prompt_id,reward\na,1\nb,", b"2\n", b"c,3\n")
    tracemalloc.start()
    s = read_samples(p, engine=engine, max_record_bytes=1 << 20)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert sorted(s.groups) == ["a", "c"]
    assert s.n_bad_rows == 1 and s.bad_rows[0][1] == 3
    assert peak < 16 << 20


def test_a_device_is_refused_at_once(tmp_path):
    link = tmp_path / "z.jsonl"
    os.symlink("/dev/zero", link)
    with pytest.raises(SampleFileError, match="is a device"):
        read_samples(link)


def test_max_record_bytes_is_checked():
    assert MAX_RECORD_BYTES == 16 << 20
    with pytest.raises(ValueError, match="max_record_bytes"):
        read_samples("x.jsonl", max_record_bytes=10)
