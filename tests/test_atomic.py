"""Crash-safe writes (klfrontier._atomic): the file renamed in has the permission bits a plain
``open(path, "w")`` gives a new file, or keeps those of the file it replaces.

Oracle: ``os.stat`` of a file made by plain ``open`` under the same umask.
"""

import os
import stat
from contextlib import contextmanager

import pytest

import klfrontier._atomic as atomic
from klfrontier._atomic import atomic_path, file_mode, umask, write_csv, write_table, write_text

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")


@contextmanager
def _umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def _plain_mode(directory):
    """The mode of a new file made by ``open(..., "w")``: the oracle."""
    p = directory / "plain.txt"
    with open(p, "w") as fh:
        fh.write("x")
    mode = _mode(p)
    p.unlink()
    return mode


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002, 0o077], ids=oct)
def test_a_new_file_gets_the_mode_of_a_plain_open(tmp_path, mask):
    with _umask(mask):
        expected = _plain_mode(tmp_path)
        write_text(tmp_path / "a.txt", "hello")
        write_csv(tmp_path / "b.csv", ["x"], [[1.0]])
        write_table(tmp_path / "c.csv", {"x": [1.0, 2.0]})
    assert expected == 0o666 & ~mask
    for name in ("a.txt", "b.csv", "c.csv"):
        assert _mode(tmp_path / name) == expected, name
    assert (tmp_path / "a.txt").read_text() == "hello"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o600, 0o666, 0o755], ids=oct)
def test_an_existing_file_keeps_its_mode(tmp_path, mode):
    p = tmp_path / "t.txt"
    p.write_text("old")
    os.chmod(p, mode)
    with _umask(0o022):
        write_text(p, "new")
    assert p.read_text() == "new" and _mode(p) == mode


def test_a_link_target_gives_its_mode(tmp_path):
    target = tmp_path / "target.txt"
    target.write_text("old")
    os.chmod(target, 0o640)
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    with _umask(0o022):
        write_text(link, "new")  # the link itself is replaced by the file
    assert _mode(link) == 0o640 and not link.is_symlink()


def test_the_mode_holds_when_the_writer_replaces_the_temporary_file(tmp_path):
    p = tmp_path / "r.bin"
    with _umask(0o022), atomic_path(p) as tmp:
        tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"data")
        os.close(fd)
    assert p.read_bytes() == b"data" and _mode(p) == 0o644


def test_a_failed_write_leaves_no_temporary_file_and_the_old_file(tmp_path):
    p = tmp_path / "k.txt"
    p.write_text("old")
    os.chmod(p, 0o640)
    with pytest.raises(RuntimeError), atomic_path(p) as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert [q.name for q in tmp_path.iterdir()] == ["k.txt"]
    assert p.read_text() == "old" and _mode(p) == 0o640


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002], ids=oct)
def test_umask_reads_the_mask_without_changing_it(mask):
    with _umask(mask):
        assert umask() == mask
        assert umask() == mask  # unchanged by the read
        assert file_mode("/nonexistent/dir/f") == 0o666 & ~mask


def test_umask_without_proc_sets_and_restores_it(monkeypatch):
    def no_proc(*args, **kwargs):
        raise OSError("no /proc")

    monkeypatch.setattr(atomic, "open", no_proc, raising=False)
    with _umask(0o027):
        assert umask() == 0o027
        assert os.umask(0o027) == 0o027  # restored


def test_report_files_and_folder_get_the_plain_modes(tmp_path):
    from klfrontier.report import Section, write_report

    sec = Section("S", tables=[("caption", ["a"], [[1.0]])])
    out = tmp_path / "r"
    with _umask(0o022):
        write_report(out, "T", [sec], {})
    assert _mode(out) == 0o755
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.suffix == ".csv" for p in files)
    for p in files:
        assert _mode(p) == 0o644, p.relative_to(out)
    for d in (p for p in out.rglob("*") if p.is_dir()):
        assert _mode(d) == 0o755, d.relative_to(out)


def test_written_sample_files_get_the_plain_mode(tmp_path):
    from klfrontier.io import write_samples

    with _umask(0o027):
        for name in ("s.jsonl", "s.csv.gz"):
            write_samples(tmp_path / name, {"a": [1.0, 2.0]})
            assert _mode(tmp_path / name) == 0o640, name
