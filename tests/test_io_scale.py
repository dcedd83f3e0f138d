"""Memory at scale (issue 10): large inputs stream through the CLI in bounded memory.

* a generated sample file of ``SCALE_SAMPLE_BYTES`` (default 3 GiB: rows with a
  ~2 KB unused ``context`` string, as long prompts are) through
  ``klfrontier analyze`` in a child process;
* a 10M-row ``--ref`` CSV through ``klfrontier frontier --ref``.

Each asserts the CLI's peak RSS (``os.wait4`` in a small wrapper process, see
``test_fuzz_inputs.run_measured``) under 1 GiB, that every row
was read, and prints rows/s.  The files are generated streaming into the
test's temporary folder (a fixed block of rows written repeatedly) and
deleted afterwards.  Marked ``slow``; each takes about 1-3 minutes on 2
cores.
"""

import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from test_fuzz_inputs import run_measured

pytestmark = pytest.mark.slow

GIB = 1 << 30
SAMPLE_BYTES = int(os.environ.get("SCALE_SAMPLE_BYTES", 3 * GIB))
REF_ROWS = int(os.environ.get("SCALE_REF_ROWS", 10_000_000))
RSS_LIMIT = 1 * GIB
BLOCK_ROWS = 2000
PROMPTS_PER_BLOCK = 20


def _free_bytes(path):
    return shutil.disk_usage(path).free


def write_samples(path, total_bytes, seed=0):
    """Write JSONL rows until ``total_bytes``: ``(rows, prompts, bytes)``.

    One block of ``BLOCK_ROWS`` rows (rewards on ``{-3, ..., 4}``, a 2 KB
    ``context`` string the analysis never reads) is formatted once; each
    repetition renames its prompts (block number in the id), so every block
    adds ``PROMPTS_PER_BLOCK`` prompts of ``BLOCK_ROWS / PROMPTS_PER_BLOCK``
    samples.
    """
    rng = np.random.default_rng(seed)
    rewards = rng.integers(-3, 5, BLOCK_ROWS)
    pad = "x" * 2000
    rows = [(i % PROMPTS_PER_BLOCK, int(r)) for i, r in enumerate(rewards)]
    written = n_rows = blocks = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < total_bytes:
            text = "".join(
                f'{{"prompt_id": "b{blocks}-p{p}", "reward": {r}, "context": "{pad}"}}\n' for p, r in rows
            )
            f.write(text)
            written += len(text)
            n_rows += BLOCK_ROWS
            blocks += 1
    return n_rows, blocks * PROMPTS_PER_BLOCK, written


def write_ref_csv(path, n_rows, chunk=1_000_000, seed=0):
    """A ``reward,prob`` CSV of ``n_rows`` rows (probabilities sum to 1 up to rounding)."""
    rng = np.random.default_rng(seed)
    with pacsv.CSVWriter(str(path), pa.schema([("reward", pa.float64()), ("prob", pa.float64())])) as w:
        for s in range(0, n_rows, chunk):
            k = min(chunk, n_rows - s)
            w.write_table(pa.table({"reward": rng.normal(size=k), "prob": np.full(k, 1.0 / n_rows)}))


def test_generators_write_what_they_say(tmp_path):
    n, prompts, size = write_samples(tmp_path / "s.jsonl", 10_000)
    lines = (tmp_path / "s.jsonl").read_text().splitlines()
    assert len(lines) == n == BLOCK_ROWS and prompts == PROMPTS_PER_BLOCK  # one block: > 10 kB
    assert size == os.path.getsize(tmp_path / "s.jsonl")
    assert len({json.loads(x)["prompt_id"] for x in lines}) == prompts
    write_ref_csv(tmp_path / "r.csv", 2500, chunk=1000)
    body = (tmp_path / "r.csv").read_text().splitlines()
    assert body[0].replace('"', "") == "reward,prob" and len(body) == 2501


def test_a_3gb_sample_file_streams_through_analyze(tmp_path):
    if _free_bytes(tmp_path) < SAMPLE_BYTES + 2 * GIB:
        pytest.skip(f"needs {SAMPLE_BYTES / GIB + 2:.1f} GiB free in {tmp_path}")
    path = tmp_path / "big.jsonl"
    try:
        n_rows, n_prompts, size = write_samples(path, SAMPLE_BYTES)
        rc, out, err, rss, secs = run_measured(
            ["analyze", str(path), "--json", "--n-boot", "0", "--interval", "none"], timeout=900
        )
    finally:
        path.unlink(missing_ok=True)
    assert rc == 0, err
    info = json.loads(out)["analysis"]["info"]
    assert info["samples"] == n_rows and info["prompts"] == n_prompts
    print(
        f"\nanalyze: {size / GIB:.2f} GiB, {n_rows} rows in {secs:.1f} s = {n_rows / secs:,.0f} rows/s "
        f"({size / secs / 2**20:.0f} MiB/s), peak RSS {rss / 2**20:.0f} MiB"
    )
    assert rss < RSS_LIMIT, f"peak RSS {rss / 2**20:.0f} MiB"


def test_a_10m_row_ref_csv_streams_through_frontier(tmp_path):
    path = tmp_path / "ref.csv"
    try:
        write_ref_csv(path, REF_ROWS)
        size = os.path.getsize(path)
        rc, out, err, rss, secs = run_measured(
            ["frontier", "--ref", str(path), "--normalize", "--json", "--kl", "0.1,1"], timeout=900
        )
    finally:
        path.unlink(missing_ok=True)
    assert rc == 0, err
    reward = np.asarray(json.loads(out)["reward"], dtype=float)
    assert reward.shape == (2,) and np.isfinite(reward).all()
    print(
        f"\nfrontier --ref: {REF_ROWS} rows ({size / 2**20:.0f} MiB) in {secs:.1f} s = "
        f"{REF_ROWS / secs:,.0f} rows/s, peak RSS {rss / 2**20:.0f} MiB"
    )
    assert rss < RSS_LIMIT, f"peak RSS {rss / 2**20:.0f} MiB"
