"""Coverage-guided fuzzing of the row parser with atheris (libFuzzer), when it is installed.

The target takes arbitrary bytes as a JSONL file and as a CSV file and reads
each with both engines: they must agree exactly (the row rule of
``docs/input.md``), and only :class:`SampleFileError` (or ``ValueError``) may
escape.  ``pip install atheris`` to run it; the test is skipped without it.
A longer campaign::

    python tests/test_io_atheris.py -max_total_time=600
"""

import os
import subprocess
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def one_input(data: bytes) -> None:
    """The fuzz target: ``data`` as a JSONL and as a CSV sample file, through both engines."""
    from klfrontier.io import read_samples
    from test_io_differential import digest, outcome

    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as d:
        for name in ("s.jsonl", "s.csv"):
            path = os.path.join(d, name)
            with open(path, "wb") as f:
                f.write(data)
            for kwargs in ({}, {"chunk_rows": 2, "columns": {"gold": "gold"}, "keep_text": True}):
                a = digest(outcome(read_samples, path=path, engine="python", **kwargs))
                b = digest(outcome(read_samples, path=path, engine="pyarrow", **kwargs))
                if a != b:
                    raise AssertionError(f"engines disagree on {name} {kwargs}: {data!r}")


SEEDS = [
    b'{"prompt_id": "a", "reward": 1}\n{"prompt_id": "b", "reward": -0, "gold": 2}\n',
    b'prompt_id,reward,gold,text\na,1,2,"x\ny"\nb,2,3,\xff\n',
    b'{"prompt_id": "a", "reward": 1} {"prompt_id": "b", "reward": 2}\n\n[[[[\n',
]


def main(argv):
    import atheris

    with atheris.instrument_imports():
        import klfrontier.io  # noqa: F401
    corpus = tempfile.mkdtemp()
    for i, seed in enumerate(SEEDS):
        with open(os.path.join(corpus, f"seed{i}"), "wb") as f:
            f.write(seed)
    atheris.Setup([argv[0], *argv[1:], corpus], one_input)
    atheris.Fuzz()


@pytest.mark.slow
def test_atheris_row_parser():
    pytest.importorskip("atheris")
    pytest.importorskip("pyarrow")
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1"
    )
    res = subprocess.run(
        [sys.executable, __file__, "-runs=3000", "-max_len=512"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    main(sys.argv)
