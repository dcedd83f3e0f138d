"""kill -9 during `klfrontier analyze` leaves the old complete report or the new one, never a mix.

A seeded small version of ``benchmarks/crash_trials.py`` (5 kills on a small
sample file; the benchmark runs 50 on a 1M-row file), plus the in-process
cases a kill cannot aim at: a write interrupted between the two renames of the
fallback swap, and the checker itself catching a damaged or mixed folder.
"""

import json
import sys
from pathlib import Path

import pytest

from klfrontier import report as rep
from klfrontier.report import Section, check_report, write_report

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import crash_trials  # noqa: E402


@pytest.fixture(scope="module")
def small_samples(tmp_path_factory):
    from klfrontier.instances.samples import unigram_samples
    from klfrontier.io import write_samples

    path = tmp_path_factory.mktemp("crash") / "samples.jsonl"
    write_samples(
        path, unigram_samples("unigram-vader", n_prompts=60, n_samples=20, length=6, seed=3, top_n=2000)
    )
    return path


@pytest.mark.slow
def test_kill_9_trials_keep_one_complete_report(small_samples, tmp_path):
    res = crash_trials.run_trials(
        small_samples, tmp_path / "w", trials=5, seed=7, extra=("--n-boot", "20"), log=lambda *a, **k: None
    )
    c = res["counts"]
    assert c["trials"] == 5 and c["survived"] == 5 and c["failed"] == 0, res["trials"]
    assert c["zero_byte_files"] == 0 and c["lock_held_after"] == 0
    assert c["final_run_ok"], res["final_run"]
    # the seeded moments reach both phases: at least one kill during the write itself
    assert c["killed_in_write"] >= 1 and c["killed_in_compute"] + c["exited_before_kill"] >= 1


def _report(out, value, **kw):
    return write_report(out, "t", [Section("S", tables=[("T", ["x"], [[value]])])], {"x": value}, **kw)


def test_inspect_folder_catches_mixed_and_empty_files(tmp_path):
    out = tmp_path / "r"
    _report(out, 1, run_id="first")
    assert crash_trials.inspect_folder(out)["complete"]
    (out / "summary.json").write_text(json.dumps({"run_id": "second", "x": 2}))  # a mix of runs
    state = crash_trials.inspect_folder(out)
    assert not state["complete"] and "summary.json" in state["problem"]
    _report(out, 1, run_id="third")
    (out / "tables" / "s-t.csv").write_bytes(b"")  # a 0-byte file
    state = crash_trials.inspect_folder(out)
    assert not state["complete"] and "s-t.csv" in state["problem"]
    _report(out, 1, run_id="fourth")
    (out / "stale.png").write_bytes(b"png")  # not the report's: the folder is not clean
    assert crash_trials.inspect_folder(out)["extra"] == ["stale.png"]


def test_fallback_swap_error_between_renames_puts_the_old_report_back(tmp_path, monkeypatch):
    """Without renameat2 the swap is two renames; an error in the second restores the old folder."""
    out = tmp_path / "r"
    _report(out, 1, run_id="old")
    monkeypatch.setattr(rep, "_exchange", lambda a, b: False)
    real_rename = rep.os.rename
    calls = []

    def failing_rename(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:  # the second rename: new folder -> out
            raise OSError(5, "I/O error")
        real_rename(src, dst)

    monkeypatch.setattr(rep.os, "rename", failing_rename)
    with pytest.raises(OSError):
        _report(out, 2, run_id="new")
    assert calls[:2] == [("r", ".r.old-new"), (".r.new-new", "r")] and calls[2] == (".r.old-new", "r")
    monkeypatch.setattr(rep.os, "rename", real_rename)
    assert check_report(out)["run_id"] == "old"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["r"]
    monkeypatch.setattr(rep, "_exchange", lambda a, b: False)
    _report(out, 3, run_id="third")  # and the fallback swap works
    assert check_report(out)["run_id"] == "third"


@pytest.mark.parametrize("new_complete", [True, False])
def test_killed_between_the_renames_is_recovered_by_the_next_run(tmp_path, new_complete):
    """The state a kill between the fallback's renames leaves: ``out`` missing, the old folder aside
    and the new one beside it.  The next run puts the new one in if complete, else the old one back."""
    out = tmp_path / "r"
    _report(out, 1, run_id="old")
    _report(tmp_path / "staging", 2, run_id="new")
    out.rename(tmp_path / ".r.old-new")
    if not new_complete:
        (tmp_path / "staging" / rep.MANIFEST).unlink()  # killed before the manifest was written
    (tmp_path / "staging").rename(tmp_path / ".r.new-new")
    lock = rep.prepare_report_dir(out)
    lock.release()
    assert check_report(out)["run_id"] == ("new" if new_complete else "old")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["r"]
