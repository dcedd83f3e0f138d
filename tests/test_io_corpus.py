"""The fuzz corpus of issue 10: hostile and random sample and reference files.

Built deterministically (fixed bytes, seeded numpy draws) into a folder by
:func:`build_corpus`; ``test_fuzz_inputs.py`` runs every case through every
command, ``test_io_differential.py`` through both reading engines.  The
Hypothesis strategies :func:`jsonl_files` and :func:`csv_files` add generated
files to both (derandomized by the ``ci`` profile of ``conftest.py``).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

try:
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError:  # pragma: no cover - the data extra is installed in CI
    pa = pq = None

#: Small record limit used with the cases named ``*long*`` (so they stay small).
SMALL_LIMIT = 4096
N_RANDOM_JSONL = 150
N_RANDOM_CSV = 150
N_RANDOM_REF = 60


@dataclass(frozen=True)
class Case:
    """One corpus entry: ``path`` inside the corpus folder; ``kind`` is ``samples`` or ``ref``
    (what the file is meant to be: every command reads every case)."""

    name: str
    path: str
    kind: str

    @property
    def small_limit(self) -> bool:
        return "long" in self.name


def _jsonl(rows):
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _csv(rows):
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue().encode()


GOOD = [
    {"prompt_id": f"p{i % 4}", "reward": float(i % 5) - 1.5, "logprob": -1.0 - i / 7, "text": f"t{i}"}
    for i in range(24)
]
GOOD_JSONL = _jsonl(GOOD)
GOOD_CSV = _csv(
    [["prompt_id", "reward", "logprob", "text"]]
    + [[r["prompt_id"], repr(r["reward"]), repr(r["logprob"]), r["text"]] for r in GOOD]
)
DEEP = b"[" * 100_000 + b"]" * 100_000


def _line(**cells):
    return json.dumps(cells).encode() + b"\n"


def hostile_samples():
    """``{file name: bytes}`` of the hostile sample files of issue 10 and their relatives."""
    g = GOOD_JSONL
    c = GOOD_CSV
    cases = {
        # ---- JSONL
        "clean.jsonl": g,
        "invalid-utf8-pid.jsonl": g + b'{"prompt_id": "a\xff", "reward": 1}\n',
        "invalid-utf8-unused.jsonl": g + b'{"prompt_id": "p1", "reward": 1, "note": "\xff\xfe"}\n',
        "invalid-utf8-text.jsonl": g + b'{"prompt_id": "p1", "reward": 1, "text": "x\xc3"}\n',
        "invalid-utf8-reward.jsonl": g + b'{"prompt_id": "p1", "reward": "1\xff"}\n',
        "invalid-utf8-outside.jsonl": g + b'{"prompt_id": "p1", "reward": 1}\xff\n',
        "surrogate-escape-pid.jsonl": g + b'{"prompt_id": "\\ud800", "reward": 1}\n',
        "surrogate-escape-unused.jsonl": g + b'{"prompt_id": "p2", "reward": 1, "x": "\\udc80"}\n',
        "surrogate-pair.jsonl": g + b'{"prompt_id": "\\ud83d\\ude00", "reward": 1}\n',
        "encoded-surrogate.jsonl": g + b'{"prompt_id": "\xed\xa0\x80", "reward": 1}\n',
        "overlong-utf8.jsonl": g + b'{"prompt_id": "\xc0\xaf", "reward": 1}\n',
        "deep-unused.jsonl": g + b'{"prompt_id": "p1", "reward": 1, "x": ' + DEEP + b"}\n",
        "deep-used.jsonl": g + b'{"prompt_id": "p1", "reward": ' + DEEP + b"}\n",
        "deep-only.jsonl": b"[" * 200_000 + b"\n",
        "deep-65.jsonl": g + b'{"prompt_id": "p1", "reward": 1, "x": ' + b"[" * 64 + b"]" * 64 + b"}\n",
        "deep-64.jsonl": g + b'{"prompt_id": "p1", "reward": 1, "x": ' + b"[" * 63 + b"]" * 63 + b"}\n",
        "deep-in-string.jsonl": g + _line(prompt_id="p1", reward=1, x="[" * 500),
        "dup-key-used.jsonl": g + b'{"prompt_id": "a", "prompt_id": "b", "reward": 1}\n',
        "dup-key-reward.jsonl": g + b'{"prompt_id": "a", "reward": 1, "reward": 2}\n',
        "dup-key-unused.jsonl": g + b'{"prompt_id": "a", "reward": 1, "x": 1, "x": 2}\n',
        "two-objects-one-line.jsonl": g
        + b'{"prompt_id": "a", "reward": 1} {"prompt_id": "b", "reward": 2}\n\n',
        "lone-cr.jsonl": g + b'{"prompt_id": "a", "reward": 1}\r{"prompt_id": "b", "reward": 2}\n',
        "crlf.jsonl": g.replace(b"\n", b"\r\n"),
        "blank-lines.jsonl": b"\n \n\t\r\n" + g + b"\n\x0c\n   ",
        "bom.jsonl": b"\xef\xbb\xbf" + g,
        "bom-twice.jsonl": b"\xef\xbb\xbf\xef\xbb\xbf" + g,
        "bom-middle.jsonl": g + b"\xef\xbb\xbf" + _line(prompt_id="p1", reward=1),
        "utf16-bom.jsonl": "\ufeff".encode("utf-16-le") + g.decode().encode("utf-16-le"),
        "utf16-be-bom.jsonl": b"\xfe\xff" + g.decode().encode("utf-16-be"),
        "utf16-nobom.jsonl": g.decode().encode("utf-16-le"),
        "utf32.jsonl": g.decode().encode("utf-32"),
        "binary-png.jsonl": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4,
        "binary-no-nul.jsonl": bytes(range(1, 256)) * 16,
        "nul-in-string.jsonl": g + b'{"prompt_id": "a\x00b", "reward": 1}\n',
        "long-line.jsonl": g + _line(prompt_id="p1", reward=1, text="x" * 50_000) + g,
        "long-line-last.jsonl": g + b'{"prompt_id": "p1", "reward": 1, "t": "' + b"y" * 50_000,
        "long-no-newline.jsonl": b"a" * 100_000,
        "empty.jsonl": b"",
        "only-blank.jsonl": b"\n\n  \n",
        "huge-rewards.jsonl": _jsonl(
            [
                {"prompt_id": f"p{i % 3}", "reward": s * 1.7e308}
                for i, s in enumerate([1, -1, 1, 1, -1, 1, 1, -1, -1])
            ]
        ),
        "max-float.jsonl": _jsonl(
            [
                {"prompt_id": f"p{i % 2}", "reward": v}
                for i, v in enumerate(
                    [1.7976931348623157e308, -1.7976931348623157e308, 5e-324, 1e308, -1e308, 0.0]
                )
            ]
        ),
        "nan-inf-literals.jsonl": g + b'{"prompt_id": "a", "reward": NaN}\n'
        b'{"prompt_id": "a", "reward": Infinity}\n'
        b'{"prompt_id": "a", "reward": -Infinity}\n'
        b'{"prompt_id": "a", "reward": 1e400}\n',
        "bool-rewards.jsonl": g + b'{"prompt_id": "a", "reward": true}\n{"prompt_id": false, "reward": 1}\n',
        "string-rewards.jsonl": _jsonl(
            [
                {"prompt_id": "a", "reward": v}
                for v in ["1.5", " 2 ", "1_000", "\u0661\u0662", "0x10", "inf", "", "1e5"]
            ]
        ),
        "big-ints.jsonl": g + b'{"prompt_id": 123456789012345678901234567890, "reward": 1}\n'
        b'{"prompt_id": "a", "reward": 123456789012345678901234567890}\n'
        b'{"prompt_id": "a", "reward": ' + b"9" * 5000 + b"}\n",
        "negative-zero.jsonl": b'{"prompt_id": "a", "reward": -0}\n{"prompt_id": "a", "reward": -0.0}\n'
        b'{"prompt_id": -0, "reward": 0}\n' + g,
        "underflow.jsonl": g + b'{"prompt_id": "a", "reward": 1e-400}\n',
        "markup.jsonl": _jsonl(
            [
                {"prompt_id": "[/x]", "reward": 1},
                {"prompt_id": "[bold red]x[/]", "reward": 2},
                {"prompt_id": "[/x]", "reward": "[/x]"},
                {"prompt_id": "[link=x]y", "reward": 3},
            ]
        ),
        "not-objects.jsonl": g + b'[1, 2]\n"str"\n1\nnull\n{}\n',
        "logprob-positive.jsonl": g + _line(prompt_id="a", reward=1, logprob=0.5),
        "logprob-first-missing.jsonl": _line(prompt_id="a", reward=1) + g,
        "mixed-pid-types.jsonl": _jsonl(
            [{"prompt_id": i if i % 2 else f"{i}", "reward": i} for i in range(12)]
        ),
        "pid-float.jsonl": g + _line(prompt_id=1.0, reward=1),
        "pid-empty.jsonl": g + _line(prompt_id="", reward=1) + _line(prompt_id=None, reward=1),
        "control-chars.jsonl": g
        + b'{"prompt_id": "a\tb", "reward": 1}\n{"prompt_id": "a", "reward": 1, "x": "\x01"}\n',
        "single-quotes.jsonl": g + b"{'prompt_id': 'a', 'reward': 1}\n",
        "trailing-garbage.jsonl": g
        + b'{"prompt_id": "a", "reward": 1} x\n{"prompt_id": "a", "reward": 1}\x0c\n',
        "one-row.jsonl": _line(prompt_id="a", reward=1),
        "one-prompt.jsonl": _jsonl([{"prompt_id": "a", "reward": i} for i in range(5)]),
        "ties.jsonl": _jsonl([{"prompt_id": f"p{i % 3}", "reward": 0} for i in range(30)]),
        "clean.jsonl.gz": gzip.compress(g, mtime=0),
        "plain-named.jsonl.gz": g,
        "truncated.jsonl.gz": gzip.compress(g * 20, mtime=0)[:-40],
        "corrupt.jsonl.gz": (lambda z: z[:30] + bytes(b ^ 0x5A for b in z[30:60]) + z[60:])(
            gzip.compress(g * 20, mtime=0)
        ),
        "empty.jsonl.gz": b"",
        "gz-of-utf16.jsonl.gz": gzip.compress(g.decode().encode("utf-16"), mtime=0),
        # ---- CSV
        "clean.csv": c,
        "bom.csv": b"\xef\xbb\xbf" + c,
        "dup-header.csv": b"prompt_id,prompt_id,reward\na,b,1\nc,d,2\n",
        "dup-header-reward.csv": b"prompt_id,reward,reward\na,1,2\nc,2,3\n",
        "dup-header-unused.csv": b"prompt_id,reward,x,x\na,1,2,3\nb,2,3,4\n",
        "dup-header-empty-names.csv": b"prompt_id,reward,,\na,1,,\nb,2,,\n",
        "invalid-utf8-pid.csv": c + b"a\xff,1,-1,t\n",
        "invalid-utf8-unused.csv": b"prompt_id,reward,note\na,1,\xff\xfe\nb,2,ok\n",
        "invalid-utf8-text.csv": c + b"p1,1,-1,x\xc3\n",
        "invalid-utf8-reward.csv": c + b"p1,1\xff,-1,t\n",
        "invalid-utf8-header-unused.csv": b"prompt_id,reward,n\xffote\na,1,x\nb,2,y\n",
        "quoted-newlines.csv": b'prompt_id,reward,text\na,1,"two\nlines"\nb,2,"three\r\nlines\rhere"\nc,x,"bad\nrow"\n',
        "unterminated-quote.csv": c + b'p1,1,-1,"never closed\np2,2,-1,t\n',
        "quote-mid-field.csv": b'prompt_id,reward\na"b,1\n"c"d,2\n"e""f",3\n',
        "lone-cr.csv": c.replace(b"\n", b"\r"),
        "crlf.csv": c.replace(b"\n", b"\r\n"),
        "mixed-newlines.csv": b"prompt_id,reward\r\na,1\rb,2\nc,3\r\n",
        "wrong-field-count.csv": c + b"p1,1\np1,1,-1,t,extra\n\n  \n",
        "empty.csv": b"",
        "header-only.csv": b"prompt_id,reward\n",
        "blank-header.csv": b"\nprompt_id,reward\na,1\n",
        "long-record.csv": c + b'p1,1,-1,"' + b"z\n" * 40_000 + b'"\n' + c.split(b"\n", 1)[1],
        "long-line.csv": c + b"p1,1,-1," + b"w" * 50_000 + b"\n" + c.split(b"\n", 1)[1],
        "long-header.csv": b"prompt_id,reward," + b"h" * 50_000 + b"\na,1,x\n",
        "long-no-newline.csv": b"b" * 100_000,
        "utf16.csv": c.decode().encode("utf-16"),
        "nul.csv": c + b"p1,1,-1,a\x00b\n",
        "markup.csv": b"prompt_id,reward\n[/x],1\n[bold]y[/bold],2\n[/x],[/x]\n",
        "whitespace-cells.csv": b"prompt_id,reward\na, 1 \nb,\t2\n c ,3\n,4\n",
        "nan-inf.csv": b"prompt_id,reward\na,nan\na,inf\na,-Infinity\na,1e400\na,1\n",
        "bool-strings.csv": b"prompt_id,reward\na,true\na,False\na,1\n",
        "odd-numbers.csv": "prompt_id,reward\na,1_000\na,\u0661\u0662\na,0x1p3\na,.5\na,5.\na,+1\na,1e5\n".encode(),
        "huge-rewards.csv": b"prompt_id,reward\n"
        + b"".join(f"p{i % 3},{s}1.7e308\n".encode() for i, s in enumerate("+-++-++--")),
        "semicolons.csv": b"prompt_id;reward\na;1\n",
        "header-spaces.csv": b" prompt_id , reward \na,1\n",
        "negative-zero.csv": b"prompt_id,reward\na,-0\na,-0.0\nb,0\n",
        "logprob-positive.csv": b"prompt_id,reward,logprob\na,1,-1\na,2,0.5\na,3,\n",
        "escape-chars.csv": b'prompt_id,reward\na\\,b,1\n"a\\"b",2\n',
        "clean.csv.gz": gzip.compress(c, mtime=0),
        "plain-named.csv.gz": c,
        "truncated.csv.gz": gzip.compress(c * 20, mtime=0)[:-40],
        # ---- format by suffix
        "no-suffix": g,
        "wrong-suffix.txt": g,
        "csv-named.jsonl": c,
        "jsonl-named.csv": g,
        "parquet-named.jsonl": b"PAR1\x00\x00PAR1",
        "not-parquet.parquet": g,
        "empty.parquet": b"",
    }
    return cases


def hostile_refs():
    """``{file name: bytes}`` of hostile reference (``--ref``) files."""
    return {
        "ref-clean.csv": b"reward,prob\n0,0.25\n1,0.5\n2,0.25\n",
        "ref-headerless.csv": b"0,0.5\n1,0.5\n",
        "ref-headerless-three.csv": b"0,0.5,1\n1,0.5,1\n",
        "ref-bom.csv": b"\xef\xbb\xbfreward,prob\n0,0.5\n1,0.5\n",
        "ref-dup-reward.csv": b"reward,reward,prob\n0,1,0.5\n1,2,0.5\n",
        "ref-dup-unused.csv": b"reward,prob,x,x\n0,0.5,a,b\n1,0.5,c,d\n",
        "ref-bool-strings.csv": b"reward,prob\ntrue,0.5\nfalse,0.5\n",
        "ref-bad-cell.csv": b"reward,prob\n0,0.5\nx,0.5\n",
        "ref-blank-lines.csv": b"reward,prob\n\n0,0.5\n\n1,0.5\n\n",
        "ref-extra-field.csv": b"reward,prob\n0,0.5,9\n1,0.5\n",
        "ref-spaces.csv": b" reward , prob \n 0 , 0.5 \n1,0.5\n",
        "ref-crlf.csv": b"reward,prob\r\n0,0.5\r\n1,0.5\r\n",
        "ref-nan.csv": b"reward,prob\nnan,0.5\n1,0.5\n",
        "ref-unnormalised.csv": b"reward,prob\n0,0.5\n1,0.6\n",
        "ref-negative-prob.csv": b"reward,prob\n0,1.5\n1,-0.5\n",
        "ref-one-outcome.csv": b"reward,prob\n3,1\n",
        "ref-huge.csv": b"reward,prob\n-1.7e308,0.25\n1.7e308,0.25\n1e308,0.25\n-1e308,0.25\n",
        "ref-huge-two.csv": b"reward,prob\n1.7976931348623157e308,0.5\n-1.7976931348623157e308,0.5\n",
        "ref-tiny-probs.csv": b"reward,prob\n0,1e-300\n1,1\n",
        "ref-invalid-utf8.csv": b"reward,prob\n0\xff,0.5\n1,0.5\n",
        "ref-invalid-utf8-unused.csv": b"reward,prob,n\n0,0.5,\xff\n1,0.5,x\n",
        "ref-long-line.csv": b"reward,prob\n0,0.5\n1,0.5," + b"9" * 50_000 + b"\n",
        "ref-quoted.csv": b'reward,prob\n"0","0.5"\n"1",0.5\n',
        "ref-utf16.csv": "reward,prob\n0,0.5\n1,0.5\n".encode("utf-16"),
        "ref-empty.csv": b"",
        "ref-header-only.csv": b"reward,prob\n",
        "ref-markup.csv": b"[/x],[bold]\n0,0.5\n",
        "ref-clean.csv.gz": gzip.compress(b"reward,prob\n0,0.5\n1,0.5\n", mtime=0),
        "ref-plain.csv.gz": b"reward,prob\n0,0.5\n1,0.5\n",
        "ref-clean.json": json.dumps({"reward": [0, 1, 2], "prob": [0.25, 0.5, 0.25]}).encode(),
        "ref-records.json": json.dumps([{"reward": 0, "prob": 0.5}, {"reward": 1, "prob": 0.5}]).encode(),
        "ref-pairs.json": b"[[0, 0.5], [1, 0.5]]",
        "ref-bools.json": b'{"reward": [true, false], "prob": [0.5, 0.5]}',
        "ref-bool-pairs.json": b"[[true, 0.5], [1, 0.5]]",
        "ref-deep.json": DEEP,
        "ref-deep-object.json": b'{"reward": ' + DEEP + b', "prob": [1]}',
        "ref-dup-key.json": b'{"reward": [0, 1], "reward": [2, 3], "prob": [0.5, 0.5]}',
        "ref-dup-key-record.json": b'[{"reward": 0, "reward": 1, "prob": 1}]',
        "ref-nan.json": b'{"reward": [NaN, 1], "prob": [0.5, 0.5]}',
        "ref-strings.json": b'{"reward": ["0", "1"], "prob": ["0.5", "0.5"]}',
        "ref-missing-key.json": b'[{"reward": 0, "prob": 0.5}, {"reward": 1}]',
        "ref-lengths.json": b'{"reward": [0, 1, 2], "prob": [0.5, 0.5]}',
        "ref-scalar.json": b"3",
        "ref-empty-list.json": b"[]",
        "ref-empty.json": b"",
        "ref-invalid.json": b'{"reward": [0, 1], "prob": [0.5, 0.5]',
        "ref-invalid-utf8.json": b'{"reward": [0, 1], "prob": [0.5, 0.5], "x": "\xff"}',
        "ref-bom.json": b"\xef\xbb\xbf" + json.dumps({"reward": [0, 1], "prob": [0.5, 0.5]}).encode(),
        "ref-utf16.json": json.dumps({"reward": [0, 1], "prob": [0.5, 0.5]}).encode("utf-16"),
        "ref-huge.json": b'{"reward": [1.7e308, -1.7e308, 1e308], "prob": [0.25, 0.25, 0.5]}',
        "ref-big-int.json": b'{"reward": [1' + b"0" * 400 + b', 0], "prob": [0.5, 0.5]}',
        "ref-markup.json": b'{"[/x]": [0], "prob": [1]}',
        "ref-nested-values.json": b'{"reward": [[0], [1]], "prob": [0.5, 0.5]}',
        "ref-pairs-mixed.json": b"[[0, 0.5], [1, 0.5, 3]]",
        "ref-clean.json.gz": gzip.compress(b'{"reward": [0, 1], "prob": [0.5, 0.5]}', mtime=0),
    }


def _parquet_cases(root):
    """Parquet files written with pyarrow: ``[(file name, kind)]``."""
    if pq is None:  # pragma: no cover
        return []
    n = 12
    pids = [f"p{i % 3}" for i in range(n)]
    rewards = [float(i % 4) for i in range(n)]
    tables = {
        "clean.parquet": pa.table({"prompt_id": pids, "reward": rewards}),
        "dict-string-rewards.parquet": pa.table(
            {"prompt_id": pids, "reward": pa.array([str(r) for r in rewards]).dictionary_encode()}
        ),
        "string-rewards.parquet": pa.table(
            {"prompt_id": pids, "reward": [str(r) for r in rewards[:-1]] + ["x"]}
        ),
        "dict-pids.parquet": pa.table({"prompt_id": pa.array(pids).dictionary_encode(), "reward": rewards}),
        "int-pids.parquet": pa.table({"prompt_id": list(range(n)), "reward": rewards}),
        "float-pids.parquet": pa.table({"prompt_id": [float(i) for i in range(n)], "reward": rewards}),
        "bool-rewards.parquet": pa.table({"prompt_id": pids, "reward": [bool(i % 2) for i in range(n)]}),
        "null-cells.parquet": pa.table({"prompt_id": pids[:-1] + [None], "reward": [None] + rewards[1:]}),
        "large-string.parquet": pa.table({"prompt_id": pa.array(pids, pa.large_string()), "reward": rewards}),
        "binary-pids.parquet": pa.table(
            {"prompt_id": pa.array([p.encode() for p in pids[:-1]] + [b"\xff"]), "reward": rewards}
        ),
        "huge-rewards.parquet": pa.table(
            {"prompt_id": pids, "reward": [(-1) ** i * 1.7e308 for i in range(n)]}
        ),
        "nan-rewards.parquet": pa.table({"prompt_id": pids, "reward": [float("nan")] + rewards[1:]}),
        "markup.parquet": pa.table({"prompt_id": ["[/x]"] * n, "reward": rewards}),
        "no-reward.parquet": pa.table({"prompt_id": pids, "score": rewards}),
        "logprob.parquet": pa.table(
            {"prompt_id": pids, "reward": rewards, "logprob": [-1.0] * (n - 1) + [0.5]}
        ),
        "long-text.parquet": pa.table({"prompt_id": pids[:-1] + ["x" * 50_000], "reward": rewards}),
    }
    out = []
    for name, table in tables.items():
        pq.write_table(table, os.path.join(root, name))
        out.append((name, "samples"))
    # two columns named prompt_id
    dup = pa.Table.from_arrays(
        [pa.array(pids), pa.array(pids), pa.array(rewards)], names=["prompt_id", "prompt_id", "reward"]
    )
    pq.write_table(dup, os.path.join(root, "dup-columns.parquet"))
    out.append(("dup-columns.parquet", "samples"))
    return out


# ----------------------------------------------------------------------------- random cases
_PIDS = ["p1", "p2", "", "7", "x y", "[/x]", "é", "p\xff", "0", "-0", "🙂"]
_NUMBERS = [
    "1.5",
    "-2",
    "nan",
    "abc",
    "",
    "1e400",
    " 3 ",
    "inf",
    "0",
    "-0",
    "true",
    "1_0",
    "0.1",
    "-1e-300",
    "1.7e308",
    "-5e-324",
    "\xff",
    "1e",
    ".5",
    "1,5",
    "9" * 30,
]
_LOGPROBS = ["-1.0", "0.5", "", "-inf", "-0.0", "-3e2", "0", "-1e-320"]
_TEXTS = ["t", "two\nlines", 'q "x", y', "", "\r", "[b]", "\xff\xfe", "{[", "\\", "\t"]
_NOISE = [
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b'"',
    b",",
    b"\r",
    b"\n",
    b"\r\n",
    b"{",
    b"[",
    b"}",
    b"\\",
    b"\xef\xbb\xbf",
    b" ",
    b"\t",
    b"\x0c",
    b"NaN",
    b"-0",
    b"true",
    b'{"prompt_id": "z", "reward": 1}',
]


def _mutate(rng, data, rate):
    """Insert, delete or replace a few bytes at random places."""
    data = bytearray(data)
    for _ in range(rng.poisson(rate * max(1, len(data)) / 100)):
        if not data:
            break
        k = int(rng.integers(len(data)))
        op = rng.integers(3)
        noise = _NOISE[rng.integers(len(_NOISE))]
        if op == 0:
            data[k:k] = noise
        elif op == 1:
            del data[k : k + int(rng.integers(1, 4))]
        else:
            data[k : k + len(noise)] = noise
    return bytes(data)


def _random_cells(rng, n):
    rows = []
    for i in range(n):
        clean = i == 0 or rng.random() < 0.75
        rows.append(
            {
                "pid": f"p{rng.integers(4)}" if clean else _PIDS[rng.integers(len(_PIDS))],
                "reward": str(round(float(rng.normal()), 3))
                if clean
                else _NUMBERS[rng.integers(len(_NUMBERS))],
                "gold": str(round(float(rng.normal()), 3))
                if clean
                else _NUMBERS[rng.integers(len(_NUMBERS))],
                "logprob": str(-round(float(rng.exponential()), 3))
                if clean
                else _LOGPROBS[rng.integers(len(_LOGPROBS))],
                "text": _TEXTS[rng.integers(len(_TEXTS))],
            }
        )
    return rows


def _json_value(raw, rng):
    """A cell as JSON: the number it spells, the raw string, or null."""
    if raw == "" and rng.random() < 0.5:
        return None
    if rng.random() < 0.5:
        try:
            return json.loads(raw)
        except ValueError:
            pass
    return raw


def random_jsonl(seed):
    rng = np.random.default_rng([10, seed])
    rows = _random_cells(rng, int(rng.integers(1, 40)))
    keys = ["pid", "reward", "gold", "logprob", "text"]
    names = {"pid": "prompt_id", "reward": "reward", "gold": "gold", "logprob": "logprob", "text": "text"}
    out = []
    for row in rows:
        obj = {names[k]: _json_value(row[k], rng) for k in keys if rng.random() < 0.95}
        if isinstance(obj.get("prompt_id"), float):
            obj["prompt_id"] = row["pid"]
        line = json.dumps(obj, ensure_ascii=bool(rng.random() < 0.5)).encode()
        out.append(line + (b"\r\n" if rng.random() < 0.1 else b"\n"))
    return _mutate(rng, b"".join(out), rate=float(rng.choice([0.0, 0.2, 1.0])))


def random_csv(seed):
    rng = np.random.default_rng([11, seed])
    rows = _random_cells(rng, int(rng.integers(1, 40)))
    header = ["prompt_id", "reward", "gold", "logprob", "text"]
    rng.shuffle(header)
    key = {"prompt_id": "pid"}
    body = [header] + [[row[key.get(h, h)] for h in header] for row in rows]
    return _mutate(rng, _csv(body), rate=float(rng.choice([0.0, 0.2, 1.0])))


def random_ref(seed):
    rng = np.random.default_rng([12, seed])
    k = int(rng.integers(1, 8))
    rewards = [str(x) for x in np.round(rng.normal(size=k), 3)]
    probs = rng.dirichlet(np.ones(k))
    if rng.random() < 0.3:
        rewards[int(rng.integers(k))] = _NUMBERS[rng.integers(len(_NUMBERS))]
    if seed % 2:
        data = {"reward": [_json_value(r, rng) for r in rewards], "prob": probs.tolist()}
        shape = rng.integers(3)
        if shape == 1:
            data = [{"reward": r, "prob": p} for r, p in zip(data["reward"], data["prob"])]
        elif shape == 2:
            data = [[r, p] for r, p in zip(data["reward"], data["prob"])]
        return ".json", _mutate(rng, json.dumps(data).encode(), rate=float(rng.choice([0.0, 0.5])))
    body = ([["reward", "prob"]] if rng.random() < 0.8 else []) + [
        [r, repr(float(p))] for r, p in zip(rewards, probs)
    ]
    return ".csv", _mutate(rng, _csv(body), rate=float(rng.choice([0.0, 0.5])))


# ----------------------------------------------------------------------------- Hypothesis
_cell_text = st.text(
    alphabet=st.sampled_from(list('ab1.-e,"\n\r {}[]\\ \t') + ["é", "\x00", "\udcff"]), max_size=8
)
_json_cell = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    _cell_text,
    st.lists(st.integers(), max_size=2),
)


@st.composite
def jsonl_files(draw):
    """Bytes of a JSONL sample file: rows of random cells in the roles' keys (and others)."""
    keys = st.sampled_from(["prompt_id", "reward", "gold", "logprob", "text", "x"])
    rows = draw(st.lists(st.dictionaries(keys, _json_cell, max_size=6), min_size=1, max_size=12))
    lines = []
    for row in rows:
        try:
            line = json.dumps(row, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            line = json.dumps(row).encode()
        lines.append(line)
    sep = draw(st.sampled_from([b"\n", b"\r\n", b"\n\n"]))
    data = sep.join(lines) + draw(st.sampled_from([b"", b"\n"]))
    raw = draw(st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(_NOISE)), max_size=3))
    for pos, noise in raw:
        k = pos % (len(data) + 1)
        data = data[:k] + noise + data[k:]
    return data


@st.composite
def csv_files(draw):
    """Bytes of a CSV sample file: a header with the roles (shuffled, maybe more) and random cells."""
    header = draw(st.permutations(["prompt_id", "reward", "logprob", "text", "x"]))[: draw(st.integers(2, 5))]
    if "prompt_id" not in header or "reward" not in header:
        header = ["prompt_id", "reward", *[h for h in header if h not in ("prompt_id", "reward")]]
    cells = st.one_of(_cell_text, st.floats(allow_nan=True).map(repr), st.integers(-5, 5).map(str))
    rows = draw(
        st.lists(st.lists(cells, min_size=len(header) - 1, max_size=len(header) + 1), min_size=1, max_size=12)
    )
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header] + rows)
    data = buf.getvalue().encode("utf-8", "surrogateescape")
    raw = draw(st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(_NOISE)), max_size=3))
    for pos, noise in raw:
        k = pos % (len(data) + 1)
        data = data[:k] + noise + data[k:]
    return data


@contextmanager
def generated_file(data: bytes, suffix: str):
    """A temporary file holding ``data``, named ``s<suffix>``."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "s" + suffix)
        with open(path, "wb") as f:
            f.write(data)
        yield path


GENERATED = [(".jsonl", jsonl_files()), (".csv", csv_files())]


# ----------------------------------------------------------------------------- the corpus
def build_corpus(root) -> list[Case]:
    """Write the corpus into ``root``; returns its cases, in a fixed order."""
    root = os.fspath(root)
    cases = []
    for name, data in {**hostile_samples(), **hostile_refs()}.items():
        with open(os.path.join(root, name), "wb") as f:
            f.write(data)
        cases.append(Case(name, name, "ref" if name.startswith("ref-") else "samples"))
    cases += [Case(name, name, kind) for name, kind in _parquet_cases(root)]
    for i in range(N_RANDOM_JSONL):
        name = f"random-{i:03d}.jsonl"
        with open(os.path.join(root, name), "wb") as f:
            f.write(random_jsonl(i))
        cases.append(Case(name, name, "samples"))
    for i in range(N_RANDOM_CSV):
        name = f"random-{i:03d}.csv"
        with open(os.path.join(root, name), "wb") as f:
            f.write(random_csv(i))
        cases.append(Case(name, name, "samples"))
    for i in range(N_RANDOM_REF):
        suffix, data = random_ref(i)
        name = f"ref-random-{i:03d}{suffix}"
        with open(os.path.join(root, name), "wb") as f:
            f.write(data)
        cases.append(Case(name, name, "ref"))
    # the file system's own hostility
    os.mkdir(os.path.join(root, "a-directory.jsonl"))
    os.mkdir(os.path.join(root, "a-directory.csv"))
    os.symlink("loop-b.jsonl", os.path.join(root, "loop-a.jsonl"))
    os.symlink("loop-a.jsonl", os.path.join(root, "loop-b.jsonl"))
    os.symlink("loop-b.csv", os.path.join(root, "loop-a.csv"))
    os.symlink("loop-a.csv", os.path.join(root, "loop-b.csv"))
    os.symlink("nowhere.jsonl", os.path.join(root, "dangling.jsonl"))
    os.symlink("/dev/zero", os.path.join(root, "zero.jsonl"))
    os.symlink("/dev/zero", os.path.join(root, "zero.csv"))
    os.symlink("/dev/null", os.path.join(root, "null.csv"))
    for name in (
        "a-directory.jsonl",
        "a-directory.csv",
        "loop-a.jsonl",
        "loop-a.csv",
        "dangling.jsonl",
        "zero.jsonl",
        "zero.csv",
        "null.csv",
        "absent.jsonl",
    ):
        cases.append(Case(name, name, "samples"))
    return cases


def test_corpus_is_large_and_deterministic(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = build_corpus(tmp_path / "a"), build_corpus(tmp_path / "b")
    assert len(a) >= 500 and a == b
    assert len({c.name for c in a}) == len(a)
    for case in a:
        pa_, pb = tmp_path / "a" / case.path, tmp_path / "b" / case.path
        if pa_.is_file() and not pa_.is_symlink() and not case.name.endswith(".parquet"):
            assert pa_.read_bytes() == pb.read_bytes(), case.name
