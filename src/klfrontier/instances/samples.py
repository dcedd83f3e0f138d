"""Sample files drawn from a real instance, for trying ``klfrontier analyze``.

Each prompt gets its own reference: the unigram law tilted towards positive
words by a prompt-specific inverse temperature ``lam`` (some prompts invite
friendlier answers than others).  A response is ``length`` words drawn i.i.d. from that law; its
reward is the sum of the lexicon scores and its log-probability is taken
under the prompt's reference.
"""

from __future__ import annotations

import numpy as np

__all__ = ["unigram_samples"]


def unigram_samples(
    instance="unigram-vader",
    *,
    n_prompts=40,
    n_samples=64,
    length=12,
    top_n=50_000,
    lam_range=(0.0, 1.0),
    seed=0,
):
    """Draw a :class:`~klfrontier.io.SampleSet` of word sequences from a unigram instance.

    Parameters
    ----------
    instance : str
        ``"unigram-vader"`` or ``"unigram-afinn"`` (needs the ``data`` extra),
        or any instance name whose outcomes are words.
    n_prompts, n_samples, length : int
        Prompts, samples per prompt, words per sample (all >= 1).
    top_n : int
        Vocabulary size.
    lam_range : (float, float)
        Prompt tilts ``lam`` (inverse temperatures, reward units, >= 0) are
        uniform on this range.
    seed : int
        Seed of every draw.

    Returns
    -------
    SampleSet
        With ``reward``, ``logprob`` and ``text`` per sample.

    Examples
    --------
    >>> s = unigram_samples("three-letter", n_prompts=2, n_samples=3, length=4)
    >>> s.n_prompts, s.n_samples
    (2, 6)
    """
    from ..io import SampleSet
    from ..tilt import tilted
    from . import load

    for name, v in (("n_prompts", n_prompts), ("n_samples", n_samples), ("length", length)):
        if int(v) != v or v < 1:
            raise ValueError(f"{name} must be a positive integer")
    lo, hi = lam_range
    if not 0 <= lo <= hi:
        raise ValueError("lam_range must satisfy 0 <= low <= high")
    kw = {"top_n": top_n} if instance.startswith("unigram") else {}
    inst = load(instance, **kw)
    ref, words = inst.ref, np.asarray(inst.words, dtype=object)
    rng = np.random.default_rng(seed)
    pids, rewards, logprobs, texts = [], [], [], []
    for p in range(n_prompts):
        lam = rng.uniform(lo, hi)
        pol = tilted(ref, lam=lam)
        probs = pol.probs
        idx = rng.choice(ref.size, size=(n_samples, length), p=probs / probs.sum())
        rewards.append(ref.rewards[idx].sum(axis=1))
        logprobs.append(pol.logprobs[idx].sum(axis=1))
        texts.extend(" ".join(words[row]) for row in idx)
        pids.extend([f"prompt-{p:03d}"] * n_samples)
    # sums of grid values: round off the float noise (e.g. 4.1999999999 -> 4.2)
    return SampleSet.from_columns(
        pids, np.round(np.concatenate(rewards), 10), np.concatenate(logprobs), texts
    )
