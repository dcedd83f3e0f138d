"""A crash-safe, resumable store of sampled responses: Parquet shards and a manifest.

A store is a directory::

    STORE/
      manifest.json                         the committed batches and the run's parameters
      shard-000000-<uuid>.parquet           one shard per committed batch of prompts
      shard-000001-<uuid>.parquet
      .manifest.lock  .mod-1.lock  .shard-0-of-1.lock     lock files (empty)

Committing a batch (:meth:`SampleStore.append`) writes its shard under a
temporary name, fsyncs it and renames it to its final name, then rewrites the
manifest the same way (temporary file, fsync, rename, fsync of the
directory).  The manifest is the single source of truth: a batch exists once
the manifest lists it, with its shard file, its row count and the SHA-256 of
the shard's bytes.  A process killed at any instant therefore leaves either
the old manifest (the batch is absent; its shard, if already renamed, is an
orphan that the next writer removes) or the new one (the batch is complete
and checksummed).  Readers never see half a batch.

Several processes may fill one store at the same time, each with its own
*shard range* ``K/M`` (the batches with ``batch_index % M == K``).  Locks
(``fcntl.flock``, released by the kernel when a process dies, so a ``kill -9``
never leaves a stale lock) keep two writers out of one range: the lock file
``.shard-K-of-M.lock`` is held exclusively by its writer, writers using
different moduli ``M`` are refused (their ranges would overlap), and every
commit (shard rename + manifest rewrite) and every clean-up happens under the
exclusive ``.manifest.lock``.  Because commits re-read the manifest under that
lock, concurrent writers merge their batches instead of overwriting each
other's.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import uuid
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .._atomic import atomic_path, fsync_dir, sha256_file

__all__ = ["SampleStore", "MANIFEST", "STORE_FORMAT"]

#: Name of the manifest file inside a store directory.
MANIFEST = "manifest.json"
#: The ``format`` field of a store's manifest.
STORE_FORMAT = "klfrontier.sample-store"
_VERSION = 1

# Columns a batch may carry, with their Parquet types; others are inferred by pyarrow.
_KNOWN = (
    "prompt_id",
    "sample_index",
    "batch_index",
    "text",
    "token_ids",
    "n_tokens",
    "finished",
    "logprob",
    "ref_logprob",
    "kl_steps",
    "reward",
    "gold",
)
_REQUIRED = ("prompt_id", "sample_index", "reward")
_SHARD_RE = re.compile(r"^shard-(\d{6,})-[0-9a-f]{32}\.parquet$")
_TMP_SHARD_RE = re.compile(r"^\.tmp-shard-(\d{6,})-[0-9a-f]{32}\.parquet$")
_MOD_RE = re.compile(r"^\.mod-(\d+)\.lock$")


def _pa():
    try:
        import pyarrow as pa
        import pyarrow.parquet  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError('the sample store needs pyarrow: pip install "klfrontier[data]"') from exc
    return pa


def _types():
    pa = _pa()
    return {
        "prompt_id": pa.string(),
        "sample_index": pa.int64(),
        "batch_index": pa.int64(),
        "text": pa.string(),
        "token_ids": pa.list_(pa.int64()),
        "n_tokens": pa.int64(),
        "finished": pa.bool_(),
        "logprob": pa.float64(),
        "ref_logprob": pa.float64(),
        "kl_steps": pa.float64(),
        "reward": pa.float64(),
        "gold": pa.float64(),
    }


def _normalise_params(params):
    """Parameters as they read back from JSON (tuples become lists, keys strings)."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise ValueError(f"params must be a mapping of run parameters, got {type(params).__name__}")
    try:
        return json.loads(json.dumps(dict(params), allow_nan=False, sort_keys=True))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"params must be JSON values without NaN or infinities ({exc})") from None


def _param_differences(stored, given):
    """One phrase per parameter whose value differs: ``"seed: store has 0, given 1"``."""
    out = []
    for key in sorted(set(stored) | set(given)):
        a, b = stored.get(key, "<absent>"), given.get(key, "<absent>")
        if a != b:
            out.append(f"{key}: store has {json.dumps(a)}, given {json.dumps(b)}")
    return out


def parse_shard(shard):
    """``(k, m)`` from ``None`` (the whole range), a pair or the text ``"K/M"``."""
    if shard is None:
        return 0, 1
    if isinstance(shard, str):
        k, sep, m = shard.partition("/")
        try:
            if not sep:
                raise ValueError
            k, m = int(k), int(m)
        except ValueError:
            raise ValueError(f"shard must look like K/M (e.g. 0/4), got {shard!r}") from None
    else:
        try:
            k, m = (int(x) for x in shard)
        except (TypeError, ValueError):
            raise ValueError(f"shard must be a pair (K, M) or the text 'K/M', got {shard!r}") from None
    if m < 1 or not 0 <= k < m:
        raise ValueError(f"shard K/M needs M >= 1 and 0 <= K < M, got {k}/{m}")
    return k, m


class _Flock:
    """An ``fcntl.flock`` on a lock file; the kernel drops it when the process dies."""

    def __init__(self, path):
        self.path = Path(path)
        self.fd = None

    def acquire(self, *, exclusive=True, blocking=True):
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        flags = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if blocking else fcntl.LOCK_NB)
        try:
            fcntl.flock(fd, flags)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        self.fd = fd
        return True

    def release(self):
        if self.fd is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


def _batch_columns(samples, reward, gold):
    """The per-sample columns of one batch, as a dict of equal-length sequences."""
    if isinstance(samples, Mapping):
        cols = dict(samples)
    elif hasattr(samples, "columns") and callable(samples.columns):
        cols = dict(samples.columns())
    else:
        cols = {name: getattr(samples, name) for name in _KNOWN if getattr(samples, name, None) is not None}
    for name, extra in (("reward", reward), ("gold", gold)):
        if extra is not None:
            if name in cols:
                raise ValueError(f"{name} given twice (as a column of samples and as {name}=)")
            cols[name] = extra
    missing = [c for c in _REQUIRED if c not in cols]
    if missing:
        raise ValueError(
            f"samples lack the column(s) {', '.join(missing)}"
            + (" (pass reward=)" if "reward" in missing else "")
        )
    lengths = {name: len(v) for name, v in cols.items()}
    n = lengths["prompt_id"]
    if n == 0:
        raise ValueError("samples: a batch needs at least one row")
    bad = {k: v for k, v in lengths.items() if v != n}
    if bad:
        raise ValueError(f"samples: columns differ in length ({n} prompt ids; {bad})")
    for name in ("reward", "gold", "logprob", "ref_logprob"):
        if name in cols:
            v = np.asarray(cols[name], dtype=float)
            if not np.isfinite(v).all():
                raise ValueError(f"samples: column {name} contains NaN or inf")
    pairs = set(zip((str(p) for p in cols["prompt_id"]), (int(i) for i in cols["sample_index"])))
    if len(pairs) != n:
        raise ValueError("samples: a (prompt_id, sample_index) pair occurs twice in the batch")
    return cols


class SampleStore:
    """A directory of Parquet shards, one per committed batch of prompts, and a manifest.

    Parameters
    ----------
    path : str or os.PathLike
        The store directory.
    create : bool, default True
        Create the directory (and an empty manifest) when it does not exist;
        with ``False`` a missing store raises :class:`FileNotFoundError`.
    params : mapping, optional
        The run's parameters (model, seed, n, ...; JSON values).  A new store
        records them; an existing store must have been written with exactly
        the same ones, otherwise :class:`ValueError` names each difference.
        ``None`` accepts whatever the store holds (use it to read).
    shard : str or (int, int), optional
        The range ``K/M`` this writer fills: batches with
        ``batch_index % M == K``.  Default: all batches (``0/1``).

    Notes
    -----
    Opening never modifies a store, except that a missing one is created.
    The first :meth:`append` (or an explicit :meth:`lock`) takes the
    writer's locks and removes what crashed writers left behind: shards the
    manifest does not list (a crash between the shard's rename and the
    manifest's) and temporary files of this writer's range.  :meth:`close`
    (or leaving a ``with`` block) releases the locks; so does the death of
    the process.

    Manifest (``manifest.json``)::

        {"format": "klfrontier.sample-store", "version": 1,
         "params": {...}, "columns": ["prompt_id", "sample_index", ...],
         "batches": [{"batch": 0, "file": "shard-000000-<uuid>.parquet",
                      "rows": 64, "sha256": "..."}, ...]}

    Examples
    --------
    >>> import tempfile
    >>> path = tempfile.mkdtemp() + "/run"
    >>> with SampleStore(path, params={"seed": 0}) as store:
    ...     _ = store.append(1, {"prompt_id": ["b", "b"], "sample_index": [0, 1], "reward": [0.5, 2.0]})
    ...     _ = store.append(0, {"prompt_id": ["a"], "sample_index": [0], "reward": [1.0]})
    >>> sorted(SampleStore(path).done_batches())
    [0, 1]
    >>> s = SampleStore(path, create=False).read()
    >>> s.prompts, s.groups["b"].tolist()
    (['a', 'b'], [0.5, 2.0])
    >>> SampleStore(path, params={"seed": 1})
    Traceback (most recent call last):
    ...
    ValueError: ...: written with other parameters (seed: store has 0, given 1)
    """

    def __init__(self, path, *, create=True, params=None, shard=None):
        self.path = Path(path)
        self.shard = parse_shard(shard)
        given = None if params is None else _normalise_params(params)
        manifest_path = self.path / MANIFEST
        if not manifest_path.exists():
            if not create:
                if not self.path.exists():
                    raise FileNotFoundError(errno.ENOENT, "no such sample store", str(self.path))
                raise ValueError(f"{self.path}: not a sample store (no {MANIFEST})")
            if self.path.exists() and not self.path.is_dir():
                raise ValueError(f"{self.path}: exists and is not a directory")
            self.path.mkdir(parents=True, exist_ok=True)
            foreign = [
                p.name for p in self.path.iterdir() if not (p.name.startswith(".") or _SHARD_RE.match(p.name))
            ]
            if foreign:
                raise ValueError(
                    f"{self.path}: exists and is not a sample store (no {MANIFEST}; it holds {foreign[0]!r})"
                )
            with _Flock(self.path / ".manifest.lock"):
                if not manifest_path.exists():  # another process may have just created it
                    self._write_manifest(
                        {
                            "format": STORE_FORMAT,
                            "version": _VERSION,
                            "params": given or {},
                            "columns": None,
                            "batches": [],
                        }
                    )
        manifest = self._load_manifest()
        if given is not None:
            diffs = _param_differences(manifest["params"], given)
            if diffs:
                raise ValueError(f"{self.path}: written with other parameters ({'; '.join(diffs)})")
        self.params = manifest["params"]
        self._locks = []

    # ---------------------------------------------------------------- manifest
    def _load_manifest(self):
        file = self.path / MANIFEST
        try:
            m = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{file}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(m, dict) or m.get("format") != STORE_FORMAT:
            raise ValueError(f"{file}: not a klfrontier sample-store manifest")
        if m.get("version") != _VERSION:
            raise ValueError(
                f"{file}: manifest version {m.get('version')!r} is not supported "
                f"(this klfrontier reads version {_VERSION})"
            )
        return m

    def _write_manifest(self, manifest):
        manifest = dict(manifest, batches=sorted(manifest["batches"], key=lambda b: b["batch"]))
        with atomic_path(self.path / MANIFEST) as tmp:
            tmp.write_text(json.dumps(manifest, indent=1, allow_nan=False) + "\n", encoding="utf-8")

    def manifest(self) -> dict:
        """The manifest as it is on disk now (other writers' commits included)."""
        return self._load_manifest()

    def done_batches(self) -> set:
        """Indices of the committed batches (re-read from disk)."""
        return {int(b["batch"]) for b in self._load_manifest()["batches"]}

    # ---------------------------------------------------------------- writing
    def in_range(self, batch_index) -> bool:
        """Whether ``batch_index`` belongs to this writer's shard range ``K/M``."""
        k, m = self.shard
        return int(batch_index) % m == k

    def lock(self):
        """Take this writer's locks (idempotent) and clean up after crashed writers.

        Raises
        ------
        ValueError
            Another live process writes the same range ``K/M``, or writes
            with a different modulus ``M``.
        """
        if self._locks:
            return self
        k, m = self.shard
        mod = _Flock(self.path / f".mod-{m}.lock")
        mod.acquire(exclusive=False)
        taken = [mod]
        try:
            # A writer using another modulus holds its .mod-M'.lock shared: an
            # exclusive probe fails exactly when one is alive.
            for p in self.path.iterdir():
                hit = _MOD_RE.match(p.name)
                if hit and int(hit.group(1)) != m:
                    probe = _Flock(p)
                    if not probe.acquire(blocking=False):
                        raise ValueError(
                            f"{self.path}: another process writes it with shards "
                            f"K/{hit.group(1)}; use the same M as it does (here {m})"
                        )
                    probe.release()
            rng = _Flock(self.path / f".shard-{k}-of-{m}.lock")
            if not rng.acquire(blocking=False):
                raise ValueError(f"{self.path}: another process is writing shard {k}/{m} of it")
            taken.append(rng)
        except BaseException:
            for lock in reversed(taken):
                lock.release()
            raise
        self._locks = taken
        self._clean()
        return self

    def _clean(self):
        """Remove orphan shards and this range's temporary files (caller holds the range lock)."""
        with _Flock(self.path / ".manifest.lock"):
            listed = {b["file"] for b in self._load_manifest()["batches"]}
            for p in self.path.iterdir():
                name = p.name
                orphan = _SHARD_RE.match(name) and name not in listed
                tmp = _TMP_SHARD_RE.match(name)
                stale_tmp = tmp and self.in_range(int(tmp.group(1)))
                # atomic_path's manifest temporaries are only written under .manifest.lock
                stale_manifest = name.startswith(f".{MANIFEST}.") and name.endswith(".tmp")
                if orphan or stale_tmp or stale_manifest:
                    p.unlink(missing_ok=True)
            fsync_dir(self.path)

    def append(self, batch_index, samples, *, reward=None, gold=None) -> dict:
        """Commit one batch: its shard (temp, fsync, rename), then the manifest.

        Parameters
        ----------
        batch_index : int
            The batch's index (>= 0), in this writer's range.
        samples : mapping or object
            Per-sample columns: a mapping name -> sequence, an object with a
            ``columns()`` method returning one, or an object with the
            attributes ``prompt_id``, ``sample_index``, ``text``,
            ``token_ids``, ``n_tokens``, ``logprob``, ``ref_logprob``,
            ``kl_steps`` (those present).  ``prompt_id``, ``sample_index``
            and ``reward`` are required.
        reward, gold : sequence of float, optional
            Reward (and gold reward) columns, when ``samples`` lacks them.

        Returns
        -------
        dict
            The batch's manifest entry (``batch``, ``file``, ``rows``, ``sha256``).

        Raises
        ------
        ValueError
            The batch is already committed (by anyone), lies outside this
            writer's range, or its columns are invalid or differ from the
            store's.
        """
        b = int(batch_index)
        if b != batch_index or b < 0:
            raise ValueError(f"batch_index must be an integer >= 0, got {batch_index!r}")
        if not self.in_range(b):
            raise ValueError(
                f"batch_index {b} lies outside this writer's shard {self.shard[0]}/{self.shard[1]}"
            )
        if b in self.done_batches():
            raise ValueError(f"batch_index {b} is already committed to {self.path}")
        cols = _batch_columns(samples, reward, gold)
        self.lock()
        pa = _pa()
        import pyarrow.parquet as pq

        types = _types()
        table = pa.table(
            {
                name: pa.array(list(v) if not isinstance(v, np.ndarray) else v, type=types.get(name))
                for name, v in cols.items()
            }
        )
        token = uuid.uuid4().hex
        final = self.path / f"shard-{b:06d}-{token}.parquet"
        tmp = self.path / f".tmp-shard-{b:06d}-{token}.parquet"
        try:
            with open(tmp, "wb") as fh:
                pq.write_table(table, fh)
                fh.flush()
                os.fsync(fh.fileno())
            digest = sha256_file(tmp)
            with _Flock(self.path / ".manifest.lock"):
                manifest = self._load_manifest()
                if any(e["batch"] == b for e in manifest["batches"]):
                    raise ValueError(f"batch_index {b} is already committed to {self.path}")
                names = list(cols)
                if manifest["columns"] is None:
                    manifest["columns"] = names
                elif set(manifest["columns"]) != set(names):
                    raise ValueError(
                        f"samples: columns {sorted(names)} differ from the store's "
                        f"{sorted(manifest['columns'])}"
                    )
                os.replace(tmp, final)
                fsync_dir(self.path)
                entry = {"batch": b, "file": final.name, "rows": table.num_rows, "sha256": digest}
                manifest["batches"].append(entry)
                self._write_manifest(manifest)
        finally:
            tmp.unlink(missing_ok=True)
        return entry

    def close(self):
        """Release this writer's locks."""
        for lock in reversed(self._locks):
            lock.release()
        self._locks = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    # ---------------------------------------------------------------- reading
    def read_table(self, *, columns=None, verify=True):
        """All committed rows as a ``pyarrow.Table``, in batch order.

        Parameters
        ----------
        columns : list of str, optional
            Columns to read (default: all).
        verify : bool, default True
            Check each shard's row count and SHA-256 against the manifest.

        Raises
        ------
        ValueError
            A shard is missing, damaged (checksum), or a ``(prompt_id,
            sample_index)`` pair occurs twice in the store.
        """
        pa = _pa()
        import pyarrow.parquet as pq

        manifest = self._load_manifest()
        keys = ["prompt_id", "sample_index"]
        wanted = None if columns is None else list(columns)
        if wanted is not None and verify:
            wanted += [k for k in keys if k not in wanted and k in (manifest["columns"] or [])]
        tables = []
        for e in sorted(manifest["batches"], key=lambda e: e["batch"]):
            file = self.path / e["file"]
            if not file.exists():
                raise ValueError(f"{self.path}: shard {e['file']} of batch {e['batch']} is missing")
            if verify and sha256_file(file) != e["sha256"]:
                raise ValueError(f"{file}: checksum differs from the manifest (damaged shard)")
            t = pq.read_table(file, columns=wanted)
            if verify and t.num_rows != e["rows"]:  # pragma: no cover - implied by the checksum
                raise ValueError(f"{file}: {t.num_rows} rows, the manifest says {e['rows']}")
            tables.append(t)
        if not tables:
            names = columns if columns is not None else (manifest["columns"] or list(_REQUIRED))
            types = _types()
            return pa.table({c: pa.array([], type=types.get(c, pa.null())) for c in names})
        table = pa.concat_tables(tables)
        if verify and set(keys) <= set(table.column_names):
            pairs = list(zip(*(table.column(k).to_pylist() for k in keys)))
            if len(set(pairs)) != len(pairs):
                raise ValueError(f"{self.path}: a (prompt_id, sample_index) pair occurs in two batches")
        return table if columns is None else table.select(list(columns))

    def read(self, *, columns=None, keep_text=True, verify=True):
        """The committed samples as a :class:`klfrontier.io.SampleSet`, in batch order.

        Parameters
        ----------
        columns : dict, optional
            Store column for each role (``prompt_id``, ``reward``, ``gold``,
            ``logprob``, ``ref_logprob``, ``text``), as in
            :func:`klfrontier.io.read_samples`; ``None`` leaves a role out.
            By default every role reads the column of its own name when the
            store has it (``gold`` included); a column named here must exist.
            ``{"reward": "gold", "gold": None}`` ranks by the gold reward.
        keep_text : bool, default True
            Keep the responses' text.
        verify : bool, default True
            As in :meth:`read_table`.

        Raises
        ------
        ValueError
            The store has no committed batch yet, lacks a column named in
            ``columns``, or see :meth:`read_table`.
        """
        from ..io import SampleSet

        roles = ("prompt_id", "reward", "gold", "logprob", "ref_logprob", "text")
        given = dict(columns or {})
        unknown = set(given) - set(roles)
        if unknown:
            raise ValueError(f"columns has unknown keys {sorted(unknown)}; known: {', '.join(roles)}")
        for role in ("prompt_id", "reward"):
            if role in given and given[role] is None:
                raise ValueError(f"columns[{role!r}] cannot be None: the column is required")
        if not keep_text:
            given["text"] = None
        manifest = self._load_manifest()
        if not manifest["batches"]:
            raise ValueError(f"{self.path}: no committed batch yet")
        have = manifest["columns"]
        use = {}
        for role in roles:
            name = given.get(role, role)
            if name is None:
                continue
            if name not in have:
                if role in given or role in ("prompt_id", "reward"):
                    raise ValueError(
                        f"{self.path}: the store has no column {name!r} (columns: {', '.join(have)})"
                    )
                continue
            use[role] = name
        table = self.read_table(columns=list(dict.fromkeys(use.values())), verify=verify)
        col = {
            role: table.column(name).to_pylist()
            if role in ("prompt_id", "text")
            else table.column(name).to_numpy()
            for role, name in use.items()
        }
        s = SampleSet.from_columns(
            col["prompt_id"],
            col["reward"],
            logprob=col.get("logprob"),
            text=col.get("text"),
            gold=col.get("gold"),
            ref_logprob=col.get("ref_logprob"),
        )
        s.source = str(self.path)
        return s

    def __repr__(self):
        k, m = self.shard
        return (
            f"SampleStore({str(self.path)!r}, batches={len(self.done_batches())}"
            + (f", shard={k}/{m}" if m > 1 else "")
            + ")"
        )
