"""Causal language models: load, sample with exact log-probabilities, tilt tokens, store samples.

Optional part of klfrontier: torch and transformers are imported when a model
is loaded or a tilt processor is made (``pip install "klfrontier[lm]"``), never
by ``import klfrontier`` or ``import klfrontier.lm``.

* :func:`load_model` -- SmolLM2-135M-Instruct (``"smollm2"``) or a local model directory.
* :func:`sample` / :func:`sample_batches` -- ``n`` continuations per prompt with
  ``logprob``, ``ref_logprob`` and the exact tilt KL, as :class:`Samples`.
* :func:`score` -- log-probabilities of given continuations (teacher forcing).
* :class:`TokenTiltProcessor` -- a ``transformers`` logits processor adding
  ``lam * v`` to the logits and recording the per-step KL.
* :class:`SampleStore` -- a crash-safe directory of sample shards.
"""

from .model import LM, load_model
from .sampling import Samples, batch_seed, n_batches, sample, sample_batches, score

# the crash-safe sample store (store.py)
from .store import SampleStore

__all__ = [
    "LM",
    "load_model",
    "Samples",
    "sample",
    "sample_batches",
    "score",
    "n_batches",
    "batch_seed",
    "TokenTiltProcessor",
    "tilt_log_softmax",
    "SampleStore",
]


def __getattr__(name):
    # The processor subclasses transformers.LogitsProcessor: import it (and transformers) on use.
    if name in ("TokenTiltProcessor", "tilt_log_softmax"):
        from . import tilt

        return getattr(tilt, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
