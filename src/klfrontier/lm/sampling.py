"""Sample continuations of prompts from a causal LM, with exact log-probabilities.

:func:`sample` draws ``n`` continuations per prompt and records, for every
sample, its log-probability under the distribution it was drawn from and under
the reference (theory §9: what ``klfrontier analyze`` needs of a policy's
samples), and with a token tilt the exact per-step KL.

How it is fast (against ``model.generate(num_return_sequences=n)`` per
prompt, which runs the prompt through the model ``n`` times):

* prompts are processed in fixed consecutive batches of ``batch_prompts``;
  each prompt is encoded once and the batch runs ONE forward pass over the
  left-padded prompts (attention mask + explicit position ids), keeping the
  logits of the last position only;
* the prompt KV cache is then expanded to the ``n`` continuations of each
  prompt (``batch_repeat_interleave`` / ``batch_select_indices`` on a
  ``DynamicCache``), and all rows of the batch decode together, one token
  per forward pass, in groups of at most ``max_rows`` rows;
* rows that produced an EOS token are dropped from the cache once a quarter
  of the group has finished (until then they are fed padding and ignored).

Randomness: batch ``k`` owns a ``torch.Generator`` seeded from
``(seed, k)`` that draws, before decoding, one uniform per (row, step); the
token of a row at a step is the inverse-CDF draw of that uniform.  A batch's
output therefore depends only on its prompts, the settings and ``(seed, k)``
-- not on other batches, ``max_rows`` or which rows finished early -- so a
resumed run that recomputes a batch reproduces it.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from numbers import Integral, Real

import numpy as np

from .model import LM, load_model

__all__ = ["Samples", "sample", "sample_batches", "n_batches", "batch_seed", "score"]

#: Decoding rows per forward pass (a batch of ``batch_prompts * n`` rows is split in groups).
MAX_ROWS = 64
# Drop finished rows from the cache once this fraction of a group's rows is dead.
_COMPACT_FRACTION = 0.25


# ------------------------------------------------------------------------------- results
@dataclass(eq=False)
class Samples:
    """Samples from a causal LM, one row per sample (columns as arrays / lists).

    Attributes
    ----------
    prompt_id : list of str
    sample_index : (rows,) int64 ndarray
        ``0 .. n-1`` within its prompt.
    batch_index : (rows,) int64 ndarray
        The prompt batch that produced the row (prompts ``k*batch_prompts`` to
        ``(k+1)*batch_prompts - 1``).
    text : list of str
        The continuation, decoded without special tokens.
    token_ids : list of list of int
        The generated tokens, including the terminating EOS token when the
        sample stopped on one (its probability is part of ``logprob``).
    n_tokens : (rows,) int64 ndarray
        ``len(token_ids)``.
    finished : (rows,) bool ndarray
        Whether the sample ended with an EOS token (else it hit ``max_new_tokens``).
    logprob : (rows,) float64 ndarray
        ``Σ_t log π(y_t | x, y_<t)`` under the law the sample was drawn from
        (the tilted one when a tilt is given).
    ref_logprob : (rows,) float64 ndarray
        ``Σ_t log p(y_t | x, y_<t)`` under the reference (see
        ``reference_description``).
    kl_steps : (rows,) float64 ndarray
        ``Σ_t KL(π(·|x, y_<t) ‖ p(·|x, y_<t))``, exact per step (0 without a
        tilt); its mean over samples estimates ``KL(π‖p)`` without bias.
    reference_description : str
        What the reference is (model, temperature, top-k, top-p).
    policy_description : str
        What the samples were drawn from.
    params : dict
        The sampling settings (model, n, max_new_tokens, seed, temperature,
        top_k, top_p, lam, batch_prompts, chat).

    Notes
    -----
    Without a tilt ``logprob == ref_logprob``.  For truncated samples
    (``finished`` false) the log-probabilities are those of the prefix: the
    law of "the first ``max_new_tokens`` tokens".
    """

    prompt_id: list
    sample_index: np.ndarray
    batch_index: np.ndarray
    text: list
    token_ids: list
    n_tokens: np.ndarray
    finished: np.ndarray
    logprob: np.ndarray
    ref_logprob: np.ndarray
    kl_steps: np.ndarray
    reference_description: str = ""
    policy_description: str = ""
    params: dict = field(default_factory=dict)

    _COLUMNS = (
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
    )

    def __post_init__(self):
        self.prompt_id = [str(p) for p in self.prompt_id]
        self.text = [str(t) for t in self.text]
        self.token_ids = [[int(i) for i in ids] for ids in self.token_ids]
        for name, dtype in (
            ("sample_index", np.int64),
            ("batch_index", np.int64),
            ("n_tokens", np.int64),
            ("finished", bool),
            ("logprob", np.float64),
            ("ref_logprob", np.float64),
            ("kl_steps", np.float64),
        ):
            setattr(self, name, np.asarray(getattr(self, name), dtype=dtype).reshape(-1))
        rows = len(self.prompt_id)
        for name in self._COLUMNS:
            if len(getattr(self, name)) != rows:
                raise ValueError(f"column {name} has {len(getattr(self, name))} rows, prompt_id has {rows}")

    def __len__(self):
        return len(self.prompt_id)

    def __repr__(self):
        return (
            f"Samples(rows={len(self)}, prompts={len(dict.fromkeys(self.prompt_id))}, "
            f"batches={len(np.unique(self.batch_index))}, reference={self.reference_description!r})"
        )

    @property
    def n_generated_tokens(self) -> int:
        """Tokens generated in all (EOS tokens included)."""
        return int(self.n_tokens.sum())

    def columns(self) -> dict:
        """The per-row columns, keyed by name (lists and numpy arrays)."""
        return {name: getattr(self, name) for name in self._COLUMNS}

    def _take(self, idx):
        idx = np.asarray(idx, dtype=np.int64)
        cols = {}
        for name in self._COLUMNS:
            col = getattr(self, name)
            cols[name] = col[idx] if isinstance(col, np.ndarray) else [col[i] for i in idx]
        return Samples(
            **cols,
            reference_description=self.reference_description,
            policy_description=self.policy_description,
            params=dict(self.params),
        )

    def batches(self):
        """Yield ``(batch_index, Samples)`` per prompt batch, in batch order."""
        for k in np.unique(self.batch_index):
            yield int(k), self._take(np.flatnonzero(self.batch_index == k))

    @classmethod
    def concat(cls, parts):
        """Rows of several :class:`Samples` one after the other (descriptions of the first)."""
        parts = list(parts)
        if not parts:
            raise ValueError("parts must hold at least one Samples")
        cols = {}
        for name in cls._COLUMNS:
            values = [getattr(p, name) for p in parts]
            cols[name] = (
                np.concatenate(values)
                if isinstance(values[0], np.ndarray)
                else [x for v in values for x in v]
            )
        first = parts[0]
        return cls(
            **cols,
            reference_description=first.reference_description,
            policy_description=first.policy_description,
            params=dict(first.params),
        )

    def rewards(self, reward):
        """Evaluate a reward on the samples: ``(rows,)`` float array.

        ``reward`` is an array of one value per row, an object with an
        ``of_ids`` method (a token-linear reward: evaluated exactly on
        ``token_ids``), or a callable on the list of texts.
        """
        if reward is None:
            raise ValueError("reward must be given: an array, a token-linear reward or a callable on texts")
        if hasattr(reward, "of_ids"):
            values = reward.of_ids(self.token_ids)
        elif callable(reward):
            values = reward(list(self.text))
        else:
            values = reward
        out = np.asarray(values, dtype=np.float64).reshape(-1)
        if out.shape != (len(self),):
            raise ValueError(f"reward gave {out.size} values for {len(self)} samples")
        if not np.isfinite(out).all():
            raise ValueError("reward contains NaN or inf")
        return out

    def to_sampleset(self, reward, *, gold=None, keep_text=True):
        """A :class:`klfrontier.io.SampleSet` (with ``logprob`` and ``ref_logprob``).

        Parameters
        ----------
        reward : array_like, token-linear reward or callable
            See :meth:`rewards`.
        gold : same kinds as ``reward``, optional
            A second reward measured on what ``reward`` selects.
        keep_text : bool, default True

        Returns
        -------
        SampleSet
            ``logprobs`` are under the sampling law, ``ref_logprobs`` under
            the reference: a policy file for ``klfrontier.analyze``; without a
            tilt the two agree and it serves as base samples too.
        """
        from ..io import SampleSet

        return SampleSet.from_columns(
            self.prompt_id,
            self.rewards(reward),
            logprob=self.logprob,
            text=list(self.text) if keep_text else None,
            gold=None if gold is None else self.rewards(gold),
            ref_logprob=self.ref_logprob,
        )


# ------------------------------------------------------------------------------- checks
def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _prompt_table(prompts):
    if isinstance(prompts, Mapping):
        ids, texts = [str(k) for k in prompts], list(prompts.values())
        if len(set(ids)) != len(ids):
            raise ValueError("prompts has ids that coincide as strings")
    elif isinstance(prompts, str):
        raise ValueError("prompts must be a list of strings or a dict prompt_id -> string, not one string")
    else:
        texts = list(prompts)
        ids = [str(i) for i in range(len(texts))]
    if not texts:
        raise ValueError("prompts must not be empty")
    for pid, t in zip(ids, texts):
        if not isinstance(t, str):
            raise ValueError(f"prompts: prompt {pid!r} is a {type(t).__name__}, not a str")
    return ids, texts


def n_batches(prompts, batch_prompts=8) -> int:
    """Number of prompt batches :func:`sample` splits ``prompts`` into.

    >>> n_batches(["a"] * 17, 8)
    3
    """
    count = len(prompts)
    return -(-count // _positive_int(batch_prompts, "batch_prompts"))


def batch_seed(seed, batch_index) -> int:
    """The seed of batch ``batch_index``'s generator: a hash of ``(seed, batch_index)``.

    >>> batch_seed(0, 1) == batch_seed(0, 1) != batch_seed(0, 2)
    True
    """
    state = np.random.SeedSequence([int(seed), int(batch_index)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def _describe(name, temperature, top_k, top_p):
    parts = [f"temperature {temperature:g}"]
    parts.append(f"top-k {top_k}" if top_k else "no top-k")
    parts.append(f"top-p {top_p:g}" if top_p is not None and top_p < 1 else "no top-p")
    renorm = " (truncated and renormalised)" if top_k or (top_p is not None and top_p < 1) else ""
    return f"{name} next-token law at {', '.join(parts)}{renorm}"


@contextmanager
def _torch_threads(torch, threads):
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------- the engine
class _Forward:
    """Calls the model with a cache, whatever its keyword for the cache is called."""

    def __init__(self, torch, model):
        params = inspect.signature(model.forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        self.keep_kw = next((k for k in ("logits_to_keep", "num_logits_to_keep") if k in params), None)
        self.model = model
        self.torch = torch

    def __call__(self, input_ids, attention_mask, position_ids, cache, *, last_only):
        kwargs = {
            self.cache_kw: cache,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "use_cache": True,
        }
        if last_only and self.keep_kw:
            kwargs[self.keep_kw] = 1
        logits = self.model(input_ids=input_ids, **kwargs).logits[:, -1, :]
        # Half-precision logits are widened; float32 and float64 models keep theirs.
        return logits if logits.dtype in (self.torch.float32, self.torch.float64) else logits.float()


def _reference_logits(torch, warpers, logits, temperature):
    """The reference's logits: temperature, then top-k, then top-p (generate's order)."""
    x = logits if temperature == 1.0 else logits / temperature
    for w in warpers:
        x = w(None, x)
    return x


_BLOCK = 256


def _below(torch, x, limit):
    """``min(x, the largest float below limit)``: a target strictly under a CDF's total."""
    return torch.minimum(x, torch.nextafter(limit, torch.zeros_like(limit)))


def _draw(torch, logp, u):
    """Inverse-CDF draw of one token per row from ``exp(logp)``, one uniform per row.

    Two levels, so no (rows, V) cumulative sum: the block masses (blocks of
    256 tokens) locate the block holding ``u * total``, then a cumulative sum
    over that block alone locates the token.  Each target is kept strictly
    below the total it is searched in, so the first index whose CDF exceeds
    it has positive mass: a token outside the support is never drawn.
    """
    rows, width = logp.shape
    probs = logp.exp()
    n_blocks = -(-width // _BLOCK)
    if n_blocks * _BLOCK != width:
        probs = torch.nn.functional.pad(probs, (0, n_blocks * _BLOCK - width))
    blocks = probs.view(rows, n_blocks, _BLOCK)
    cdf = blocks.sum(dim=-1, dtype=torch.float64).cumsum_(dim=-1)  # (rows, n_blocks)
    target = _below(torch, u[:, None] * cdf[:, -1:], cdf[:, -1:])
    b = torch.searchsorted(cdf, target, right=True).clamp_max_(n_blocks - 1)  # (rows, 1)
    before = torch.where(b > 0, cdf.gather(1, (b - 1).clamp_min(0)), torch.zeros_like(target))
    inner = blocks[torch.arange(rows), b.squeeze(1)].cumsum(dim=-1, dtype=torch.float64)  # (rows, 256)
    rest = _below(torch, target - before, inner[:, -1:])
    j = torch.searchsorted(inner, rest, right=True).clamp_max_(_BLOCK - 1)
    return (b * _BLOCK + j).squeeze(1)


def _decode_group(
    torch,
    fwd,
    lm,
    first_logits,
    cache,
    prompt_mask,
    prompt_len,
    u,
    *,
    max_new_tokens,
    temperature,
    warpers,
    tilt_v,
    lam,
    eos,
    progress_step,
):
    """Decode one group of rows; returns tokens (rows, T), n_tokens, finished, logprob, ref, kl."""
    from .tilt import tilt_log_softmax

    rows = first_logits.shape[0]
    tokens = torch.full((rows, max_new_tokens), -1, dtype=torch.long)
    n_tok = torch.zeros(rows, dtype=torch.long)
    finished = torch.zeros(rows, dtype=torch.bool)
    lp = torch.zeros(rows, dtype=torch.float64)
    ref_lp = torch.zeros(rows, dtype=torch.float64)
    kl = torch.zeros(rows, dtype=torch.float64)
    present = torch.arange(rows)  # group rows still in the cache, in cache order
    alive = torch.ones(rows, dtype=torch.bool)  # per present row: not finished
    mask = prompt_mask  # (present rows, prompt + generated)
    pad = lm.pad_token_id
    logits = first_logits
    for t in range(max_new_tokens):
        x = _reference_logits(torch, warpers, logits, temperature)
        if lam == 0:
            ref = torch.log_softmax(x, dim=-1)
            pol = ref
        else:
            ref, pol, step_kl = tilt_log_softmax(x, tilt_v, lam)
        tok = _draw(torch, pol, u[present, t])
        live = present[alive]
        tok_live = tok[alive]
        tokens[live, t] = tok_live
        lp[live] += pol[alive].gather(1, tok_live[:, None]).squeeze(1).double()
        ref_lp[live] += ref[alive].gather(1, tok_live[:, None]).squeeze(1).double()
        if lam != 0:
            kl[live] += step_kl[alive]
        n_tok[live] += 1
        stop = torch.isin(tok_live, eos)
        finished[live[stop]] = True
        alive[alive.nonzero().squeeze(1)[stop]] = False
        progress_step(int(stop.sum()), int(live.numel()))
        if t == max_new_tokens - 1 or not alive.any():
            break
        dead = int((~alive).sum())
        if dead and dead >= _COMPACT_FRACTION * present.numel():
            keep = alive.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            present, alive, mask, tok = present[keep], alive[keep], mask[keep], tok[keep]
        feed = torch.where(alive, tok, torch.full_like(tok, pad))
        mask = torch.cat([mask, torch.ones((mask.shape[0], 1), dtype=mask.dtype)], dim=1)
        pos = (prompt_len[present] + t)[:, None]
        logits = fwd(feed[:, None], mask, pos, cache, last_only=False)
    return tokens, n_tok, finished, lp, ref_lp, kl


_BUFFER_LAYER = None


def _buffer_layer_class():
    """A ``DynamicLayer`` whose keys/values live in a preallocated buffer (made once, on first use).

    ``DynamicLayer.update`` concatenates, copying the whole cache of every
    layer at every step; this layer writes the new position in place and
    exposes a view of the filled part.
    """
    global _BUFFER_LAYER
    if _BUFFER_LAYER is not None:
        return _BUFFER_LAYER
    from transformers.cache_utils import DynamicLayer

    class _BufferLayer(DynamicLayer):
        def __init__(self, keys, values, segments, rows, capacity):
            super().__init__()
            _, heads, length, dim = keys.shape
            self._k = keys.new_empty((rows, heads, capacity, dim))
            self._v = values.new_empty((rows, values.shape[1], capacity, values.shape[-1]))
            for src, start, stop in segments:  # broadcast each prompt's states to its rows
                self._k[start:stop, :, :length] = keys[src : src + 1]
                self._v[start:stop, :, :length] = values[src : src + 1]
            self.length = length
            self.device = keys.device
            self.is_initialized = True
            self._expose()

        def _expose(self):
            self.keys = self._k[:, :, : self.length]
            self.values = self._v[:, :, : self.length]

        def update(self, key_states, value_states, *args, **kwargs):
            end = self.length + key_states.shape[-2]
            if end > self._k.shape[2]:  # grow (not reached when sized for max_new_tokens)
                grow = max(end, 2 * self._k.shape[2]) - self._k.shape[2]
                self._k = torch_pad(self._k, grow)
                self._v = torch_pad(self._v, grow)
            self._k[:, :, self.length : end] = key_states
            self._v[:, :, self.length : end] = value_states
            self.length = end
            self._expose()
            return self.keys, self.values

        def batch_select_indices(self, indices):
            self._k = self._k[indices]
            self._v = self._v[indices]
            self._expose()

        def batch_repeat_interleave(self, repeats):
            self._k = self._k.repeat_interleave(repeats, dim=0)
            self._v = self._v.repeat_interleave(repeats, dim=0)
            self._expose()

        def crop(self, tokens_to_remove):
            if tokens_to_remove > 0:
                raise ValueError("crop takes a negative number of tokens to remove")
            self.length = max(0, self.length + tokens_to_remove)
            self._expose()

    def torch_pad(x, grow):
        out = x.new_empty((x.shape[0], x.shape[1], x.shape[2] + grow, x.shape[3]))
        out[:, :, : x.shape[2]] = x
        return out

    _BUFFER_LAYER = _BufferLayer
    return _BufferLayer


def _group_cache(prefill, prompt_of_row, capacity):
    """The prompt cache expanded to a group's rows (rows sorted by prompt).

    With plain ``DynamicLayer`` layers (transformers >= 4.56) the rows get a
    preallocated buffer of ``capacity`` positions; otherwise the cache is
    copied and expanded with ``batch_select_indices``.
    """
    from transformers.cache_utils import DynamicLayer

    layers = getattr(prefill, "layers", None)
    if layers and all(type(layer) is DynamicLayer and layer.is_initialized for layer in layers):
        cls = _buffer_layer_class()
        p = prompt_of_row.tolist()
        cuts = [0] + [i for i in range(1, len(p)) if p[i] != p[i - 1]] + [len(p)]
        segments = [(p[a], a, b) for a, b in zip(cuts[:-1], cuts[1:])]
        cache = copy.copy(prefill)
        cache.layers = [cls(layer.keys, layer.values, segments, len(p), capacity) for layer in layers]
        return cache
    cache = copy.deepcopy(prefill)
    cache.batch_select_indices(prompt_of_row)
    return cache


def _sample_batch(
    torch,
    fwd,
    lm,
    ids_batch,
    u,
    *,
    n,
    max_new_tokens,
    temperature,
    warpers,
    tilt_v,
    lam,
    eos,
    max_rows,
    progress_step,
):
    """One prompt batch: prefill once, expand the cache, decode in row groups."""
    from transformers import DynamicCache

    b = len(ids_batch)
    lengths = torch.tensor([len(x) for x in ids_batch], dtype=torch.long)
    width = int(lengths.max())
    input_ids = torch.full((b, width), lm.pad_token_id, dtype=torch.long)
    prompt_mask = torch.zeros((b, width), dtype=torch.long)
    for i, ids in enumerate(ids_batch):  # left padding: the answers start in one column
        input_ids[i, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        prompt_mask[i, width - len(ids) :] = 1
    positions = (prompt_mask.cumsum(dim=1) - 1).clamp_min_(0)
    cache = DynamicCache(config=lm.model.config)
    first = fwd(input_ids, prompt_mask, positions, cache, last_only=True)  # (b, V)

    rows = b * n
    prompt_of_row = torch.arange(rows) // n
    out = []
    groups = [(s, min(s + max_rows, rows)) for s in range(0, rows, max_rows)]
    for s, e in groups:
        idx = prompt_of_row[s:e]
        group_cache = _group_cache(cache, idx, width + max_new_tokens)
        out.append(
            _decode_group(
                torch,
                fwd,
                lm,
                first[idx],
                group_cache,
                prompt_mask[idx],
                lengths[idx],
                u[s:e],
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                warpers=warpers,
                tilt_v=tilt_v,
                lam=lam,
                eos=eos,
                progress_step=progress_step,
            )
        )
        del group_cache
    return [torch.cat(parts) for parts in zip(*out)]


def sample_batches(
    model,
    prompts,
    *,
    n=64,
    max_new_tokens=48,
    seed=0,
    temperature=1.0,
    top_k=None,
    top_p=None,
    tilt=None,
    batch_prompts=8,
    batches=None,
    progress=None,
    max_rows=MAX_ROWS,
    threads=None,
):
    """Like :func:`sample`, yielding one :class:`Samples` per prompt batch as it is done.

    ``batches`` (optional) lists the batch indices to compute, e.g. those not
    yet in a store; the others are skipped without drawing anything.  A
    batch's samples are the same whichever other batches are computed.
    """
    settings = _settings(
        model,
        prompts,
        n=n,
        max_new_tokens=max_new_tokens,
        seed=seed,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        tilt=tilt,
        batch_prompts=batch_prompts,
        batches=batches,
        max_rows=max_rows,
        threads=threads,
    )
    return _run(settings, progress)


def _settings(
    model,
    prompts,
    *,
    n,
    max_new_tokens,
    seed,
    temperature,
    top_k,
    top_p,
    tilt,
    batch_prompts,
    batches,
    max_rows,
    threads,
):
    from .._validate import real_scalar
    from .tilt import check_token_values

    if isinstance(model, str) or hasattr(model, "__fspath__"):
        model = load_model(model)
    if not isinstance(model, LM):
        raise ValueError(
            f"model must be an lm.LM (from lm.load_model) or a model spec, got {type(model).__name__}"
        )
    ids, texts = _prompt_table(prompts)
    n = _positive_int(n, "n")
    max_new_tokens = _positive_int(max_new_tokens, "max_new_tokens")
    batch_prompts = _positive_int(batch_prompts, "batch_prompts")
    max_rows = _positive_int(max_rows, "max_rows")
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, Real)
        or not math.isfinite(temperature)
        or temperature <= 0
    ):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if top_k is not None and top_k != 0:
        top_k = _positive_int(top_k, "top_k")
    else:
        top_k = None
    if top_p is not None:
        if isinstance(top_p, bool) or not isinstance(top_p, Real) or not 0 < top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {top_p!r}")
        top_p = None if top_p == 1 else float(top_p)
    lam, values = 0.0, None
    if tilt is not None:
        if not isinstance(tilt, (tuple, list)) or len(tilt) != 2:
            raise ValueError("tilt must be None or a pair (lam, values)")
        lam, values = real_scalar(tilt[0], "lam"), check_token_values(tilt[1])
        if values.shape[0] > model.vocab_size:
            raise ValueError(
                f"tilt values have {values.shape[0]} entries; the model has {model.vocab_size} tokens"
            )
    if threads is not None:
        threads = _positive_int(threads, "threads")
    total = n_batches(ids, batch_prompts)
    if batches is None:
        todo = list(range(total))
    else:
        todo = sorted({int(k) for k in batches})
        bad = [k for k in todo if not 0 <= k < total]
        if bad:
            raise ValueError(f"batches must lie in [0, {total}); got {bad[:5]}")
    if not model.eos_token_ids:
        raise ValueError(f"model {model.name!r} has no EOS token: samples could only stop at max_new_tokens")
    reference = _describe(model.name, float(temperature), top_k, top_p)
    policy = reference if lam == 0 else f"{reference}, tilted by exp(lam * v) with lam = {lam:g}"
    params = dict(
        model=model.name,
        chat=model.chat,
        n=n,
        max_new_tokens=max_new_tokens,
        seed=int(seed),
        temperature=float(temperature),
        top_k=top_k,
        top_p=top_p,
        lam=lam if tilt is not None else None,
        batch_prompts=batch_prompts,
    )
    return dict(
        model=model,
        ids=ids,
        texts=texts,
        n=n,
        max_new_tokens=max_new_tokens,
        seed=int(seed),
        temperature=float(temperature),
        top_k=top_k,
        top_p=top_p,
        lam=lam,
        values=values,
        batch_prompts=batch_prompts,
        todo=todo,
        max_rows=max_rows,
        threads=threads,
        reference=reference,
        policy=policy,
        params=params,
    )


def _run(st, progress):
    """Generator over the batches to compute (validation already done)."""
    from .model import import_lm

    torch, _ = import_lm()
    from transformers.generation.logits_process import (
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    from .tilt import values_for

    lm = st["model"]
    n, bp = st["n"], st["batch_prompts"]
    warpers = []
    if st["top_k"]:
        warpers.append(TopKLogitsWarper(top_k=st["top_k"], min_tokens_to_keep=1))
    if st["top_p"] is not None:
        warpers.append(TopPLogitsWarper(top_p=st["top_p"], min_tokens_to_keep=1))
    device = lm.device
    tilt_v = None if st["values"] is None else values_for(torch, st["values"], lm.vocab_size, device)
    eos = torch.tensor(lm.eos_token_ids, dtype=torch.long)
    fwd = _Forward(torch, lm.model)
    todo = st["todo"]
    total_rows = sum(len(st["ids"][k * bp : (k + 1) * bp]) for k in todo) * n
    state = {"done": 0, "tokens": 0}

    def progress_step(newly_done, stepped_rows):
        state["done"] += newly_done
        state["tokens"] += stepped_rows
        if progress is not None:
            progress("tokens", state["tokens"], total_rows * st["max_new_tokens"])
            progress("samples", state["done"], total_rows)

    with _torch_threads(torch, st["threads"]):
        for k in todo:
            pids = st["ids"][k * bp : (k + 1) * bp]
            with torch.inference_mode():
                ids_batch = [lm.encode_prompt(t) for t in st["texts"][k * bp : (k + 1) * bp]]
                gen = torch.Generator(device="cpu").manual_seed(batch_seed(st["seed"], k))
                u = torch.rand((len(pids) * n, st["max_new_tokens"]), generator=gen, dtype=torch.float64)
                before = state["done"]
                tokens, n_tok, finished, lp, ref_lp, kl = _sample_batch(
                    torch,
                    fwd,
                    lm,
                    ids_batch,
                    u,
                    n=n,
                    max_new_tokens=st["max_new_tokens"],
                    temperature=st["temperature"],
                    warpers=warpers,
                    tilt_v=tilt_v,
                    lam=st["lam"],
                    eos=eos,
                    max_rows=st["max_rows"],
                    progress_step=progress_step,
                )
            # rows cut by max_new_tokens count as done now
            state["done"] = before + len(pids) * n
            if progress is not None:
                progress("samples", state["done"], total_rows)
            tok_np, len_np = tokens.numpy(), n_tok.numpy()
            token_ids = [tok_np[i, : len_np[i]].tolist() for i in range(tok_np.shape[0])]
            yield Samples(
                prompt_id=[p for p in pids for _ in range(n)],
                sample_index=np.tile(np.arange(n), len(pids)),
                batch_index=np.full(len(pids) * n, k),
                text=[lm.decode(t) for t in token_ids],
                token_ids=token_ids,
                n_tokens=len_np,
                finished=finished.numpy(),
                logprob=lp.numpy(),
                ref_logprob=ref_lp.numpy(),
                kl_steps=kl.numpy(),
                reference_description=st["reference"],
                policy_description=st["policy"],
                params=dict(st["params"]),
            )


def sample(
    model,
    prompts,
    *,
    n=64,
    max_new_tokens=48,
    seed=0,
    temperature=1.0,
    top_k=None,
    top_p=None,
    tilt=None,
    batch_prompts=8,
    progress=None,
    batches=None,
    max_rows=MAX_ROWS,
    threads=None,
) -> Samples:
    """Draw ``n`` continuations of each prompt, recording exact log-probabilities.

    Parameters
    ----------
    model : LM or str
        From :func:`klfrontier.lm.load_model`, or a spec passed to it.
    prompts : list of str or dict prompt_id -> str
        A list gets ids ``"0", "1", ...``.  Each prompt is encoded by
        :meth:`LM.encode_prompt` (the chat template when the model has one).
    n : int, default 64
        Samples per prompt.
    max_new_tokens : int, default 48
        A sample stops at an EOS token (kept in ``token_ids``) or after this many tokens.
    seed : int, default 0
    temperature : float, default 1.0
    top_k : int, optional
        Keep the ``top_k`` largest logits (ties at the boundary kept); ``None``
        or 0: off.
    top_p : float in (0, 1], optional
        Nucleus truncation as in transformers' ``TopPLogitsWarper``.
    tilt : (lam, values), optional
        Draw from the tilted law ``p_λ(y) ∝ p(y) e^{λ v(y)}`` at every step,
        ``p`` the reference (after temperature / top-k / top-p), ``values`` one
        finite value per token (e.g. ``rewards.token_linear(tok, "vader").values``).
    batch_prompts : int, default 8
        Prompts per batch; batch ``k`` holds prompts ``k*batch_prompts ..``.
    progress : callable(stage, done, total), optional
        Called after every decoding step with ``("tokens", generated so far,
        rows × max_new_tokens)`` and ``("samples", samples finished, samples
        to draw)``.
    batches : iterable of int, optional
        Only these batch indices (default: all).
    max_rows : int, default 64
        Rows decoded per forward pass (bounds the KV cache's memory).
    threads : int, optional
        torch intra-op threads for the call (restored afterwards); default:
        torch's setting (the number of cores).

    Returns
    -------
    Samples
        One row per sample, in prompt order then sample index.

    Notes
    -----
    The reference at step t is ``p(·|x, y_<t) = softmax(top_p(top_k(z/T)))``
    for the model's logits ``z`` (generate's order of the warpers); a sample's
    ``ref_logprob = Σ_t log p(y_t|x, y_<t)`` and ``logprob`` is the same sum
    under the tilted law; ``kl_steps = Σ_t KL(p_λ(·|…)‖p(·|…))``
    (:func:`klfrontier.lm.tilt_log_softmax`).  Batch ``k`` is seeded by
    :func:`batch_seed` ``(seed, k)``: outputs are reproducible per batch on
    the same machine and library versions (floating-point kernels may differ
    across them).

    Examples
    --------
    >>> from klfrontier import lm                                   # doctest: +SKIP
    >>> m = lm.load_model("smollm2")                                # doctest: +SKIP
    >>> res = lm.sample(m, ["Tell me about cats."], n=4, max_new_tokens=16)   # doctest: +SKIP
    >>> res.logprob.shape, bool((res.logprob == res.ref_logprob).all())       # doctest: +SKIP
    ((4,), True)
    """
    parts = list(
        sample_batches(
            model,
            prompts,
            n=n,
            max_new_tokens=max_new_tokens,
            seed=seed,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            tilt=tilt,
            batch_prompts=batch_prompts,
            batches=batches,
            progress=progress,
            max_rows=max_rows,
            threads=threads,
        )
    )
    if not parts:
        raise ValueError("batches is empty: nothing to sample")
    return Samples.concat(parts)


def score(model, prompt, continuations, *, temperature=1.0, top_k=None, top_p=None, tilt=None, threads=None):
    """Log-probabilities of given continuations of one prompt (teacher forcing).

    Scores samples drawn elsewhere (another model, ``model.generate``) under
    this model's reference -- the ``ref_logprob`` column of a policy file.

    Parameters
    ----------
    model : LM or str
    prompt : str
        Encoded by :meth:`LM.encode_prompt`, as in :func:`sample`.
    continuations : sequence of sequence of int
        Generated token ids (each non-empty); a continuation is scored up
        to and including its first EOS token, the rest ignored.
    temperature, top_k, top_p, tilt :
        The law to score under, as in :func:`sample`.
    threads : int, optional

    Returns
    -------
    (len(continuations),) float64 ndarray
        ``Σ_t log p(y_t | x, y_<t)``; ``-inf`` when a token lies outside the
        top-k / top-p support.

    Notes
    -----
    The prompt runs through the model once; its KV cache is expanded to all
    continuations, which then run in one forward pass.
    """
    st = _settings(
        model,
        [prompt],
        n=1,
        max_new_tokens=1,
        seed=0,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        tilt=tilt,
        batch_prompts=1,
        batches=None,
        max_rows=MAX_ROWS,
        threads=threads,
    )
    conts = [[int(i) for i in c] for c in continuations]
    if not conts or any(len(c) == 0 for c in conts):
        raise ValueError("continuations must be a non-empty list of non-empty token id lists")
    lm = st["model"]
    eos = set(lm.eos_token_ids)
    conts = [c[: next((j + 1 for j, t in enumerate(c) if t in eos), len(c))] for c in conts]
    if any(not 0 <= t < lm.vocab_size for c in conts for t in c):
        raise ValueError(f"continuations hold token ids outside [0, {lm.vocab_size})")
    from transformers import DynamicCache
    from transformers.generation.logits_process import (
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    from .model import import_lm
    from .tilt import tilt_log_softmax, values_for

    torch, _ = import_lm()
    warpers = ([TopKLogitsWarper(top_k=st["top_k"])] if st["top_k"] else []) + (
        [TopPLogitsWarper(top_p=st["top_p"])] if st["top_p"] is not None else []
    )
    fwd = _Forward(torch, lm.model)
    rows, width = len(conts), max(len(c) for c in conts)
    with _torch_threads(torch, st["threads"]), torch.inference_mode():
        ids = lm.encode_prompt(st["texts"][0])
        cache = DynamicCache(config=lm.model.config)
        n_prompt = len(ids)
        prompt_mask = torch.ones((1, n_prompt), dtype=torch.long)
        first = fwd(torch.tensor([ids]), prompt_mask, torch.arange(n_prompt)[None], cache, last_only=True)
        total = np.zeros(rows)
        for s0 in range(0, rows, st["max_rows"]):
            part = conts[s0 : s0 + st["max_rows"]]
            r = len(part)
            group = _group_cache(cache, torch.zeros(r, dtype=torch.long), n_prompt + width)
            tok = torch.full((r, width), lm.pad_token_id, dtype=torch.long)
            for i, c in enumerate(part):
                tok[i, : len(c)] = torch.tensor(c)
            mask = torch.ones((r, n_prompt + width - 1), dtype=torch.long)
            pos = (n_prompt + torch.arange(width - 1))[None].expand(r, -1)
            logits = [first.expand(r, -1)]
            if width > 1:
                out = lm.model(
                    input_ids=tok[:, :-1],
                    attention_mask=mask,
                    position_ids=pos,
                    use_cache=True,
                    **{fwd.cache_kw: group},
                ).logits
                logits += [out[:, j] for j in range(width - 1)]
            for j, z in enumerate(logits):
                z = z if z.dtype in (torch.float32, torch.float64) else z.float()
                x = _reference_logits(torch, warpers, z, st["temperature"])
                if st["lam"] == 0:
                    logp = torch.log_softmax(x.to(torch.float64), dim=-1)
                else:
                    v = values_for(torch, st["values"], lm.vocab_size, x.device)
                    _, logp, _ = tilt_log_softmax(x, v, st["lam"])
                took = logp.gather(1, tok[:, j : j + 1]).squeeze(1).numpy()
                live = np.array([j < len(c) for c in part])
                total[s0 : s0 + r] += np.where(live, took, 0.0)
    return total
