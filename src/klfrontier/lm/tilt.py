"""Token tilting: the next-token law ``p_t(y) ∝ p(y) e^{λ v(y)}`` and its exact KL.

With a token-linear reward ``r(y_1..y_m) = Σ_t v(y_t)``, tilting every
next-token distribution of the reference by ``e^{λ v}`` gives a policy whose
per-step KL to the reference is known exactly (theory §2 applied to one step):

    KL(p_t‖p) = λ E_{p_t}[v] − Λ(λ),     Λ(λ) = log Σ_y p(y) e^{λ v(y)}

Summed over the steps of a sampled sequence, these per-step KLs are an
unbiased estimate of the sequence-level ``KL(π‖p)`` (the chain rule of KL:
``KL(π‖p) = E_π Σ_t KL(π(·|y_<t)‖p(·|y_<t))``).

:func:`tilt_log_softmax` is the kernel; :class:`TokenTiltProcessor` wraps it as a
``transformers.LogitsProcessor`` (``model.generate(logits_processor=[...])``),
and :func:`klfrontier.lm.sample` calls the kernel inside its decoding loop.
"""

from __future__ import annotations

import math  # noqa: F401 - the examples use it

import numpy as np

from .._validate import real_scalar

try:  # the base class, when transformers is installed; the module imports without it
    from transformers import LogitsProcessor as _Base
except ImportError:  # pragma: no cover - depends on the environment
    _Base = object  # type: ignore[misc,assignment]  # fallback base without transformers

__all__ = ["TokenTiltProcessor", "tilt_log_softmax"]

_EXTRA = 'pip install "klfrontier[lm]"'


def check_token_values(values):
    """``values`` (one per token) as a non-empty 1-D float64 array of finite numbers; else a
    ValueError naming them."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"values must be a non-empty 1-D array (one value per token), got shape {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError("values contain NaN or inf")
    return v


def values_for(torch, values, width, device):
    """``values`` as a float64 tensor of the logits' width (zeros past the tokenizer's vocabulary)."""
    if values.shape[0] > width:
        raise ValueError(f"values has {values.shape[0]} entries but the logits have {width}")
    v = torch.zeros(width, dtype=torch.float64, device=device)
    v[: values.shape[0]] = torch.as_tensor(
        np.array(values, dtype=np.float64), device=device
    )  # a writable copy
    return v


def tilt_log_softmax(scores, values, lam):
    """Reference and tilted next-token log-probabilities, and their exact KL.

    Parameters
    ----------
    scores : torch.Tensor, shape (rows, V)
        Logits of the reference next-token law (``-inf`` for excluded tokens,
        e.g. after top-k); at least one finite entry per row.
    values : torch.Tensor, shape (V,)
        Per-token values ``v`` (float64, finite).
    lam : float
        Tilt strength λ (any finite real; ``0`` gives the reference).

    Returns
    -------
    ref_logp, tilted_logp : torch.Tensor, shape (rows, V), float64
        ``log p`` and ``log p_λ``.
    kl : torch.Tensor, shape (rows,), float64
        ``KL(p_λ‖p)`` per row (``>= 0``).

    Notes
    -----
    ``log p_λ(y) = log p(y) + λ v(y) − Λ(λ)`` and
    ``KL(p_λ‖p) = λ Σ_y p_λ(y) v(y) − Λ(λ)``; the last form needs no
    ``(−inf) − (−inf)`` on excluded tokens.  It subtracts two terms that agree
    to first order in λ, so the work is done in float64 (relative error about
    ``1e-16 / λ``); rounding can leave a KL of ``-1e-17``, clipped to 0.

    Examples
    --------
    >>> import torch
    >>> s = torch.log(torch.tensor([[0.5, 0.25, 0.25]], dtype=torch.float64))
    >>> ref, til, kl = tilt_log_softmax(s, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64), math.log(2))
    >>> til.exp().tolist()          # 0.5 : 0.5 : 0.25, renormalised
    [[0.4, 0.4, 0.2]]
    >>> round(kl.item(), 12) == round(0.4*math.log(0.8) + 0.4*math.log(1.6) + 0.2*math.log(0.8), 12)
    True
    """
    import torch

    s = scores.to(torch.float64)
    ref = torch.log_softmax(s, dim=-1)
    if lam == 0:
        return ref, ref, torch.zeros(s.shape[0], dtype=torch.float64, device=s.device)
    tilted = torch.log_softmax(ref + lam * values, dim=-1)
    log_z = torch.logsumexp(ref + lam * values, dim=-1)  # Λ(λ) (ref is normalised)
    kl = lam * (tilted.exp() * values).sum(dim=-1) - log_z
    return ref, tilted, kl.clamp_min_(0.0)


class TokenTiltProcessor(_Base):
    """A ``transformers`` logits processor adding ``lam * v`` to the logits, recording the KL.

    Parameters
    ----------
    values : array_like, shape (V,)
        Per-token values ``v`` (e.g. ``rewards.token_linear(tok, "vader").values``),
        finite.  Shorter than the logits: the tokens past its end (ids the
        tokenizer never produces) get ``v = 0``; longer is an error.
    lam : float
        Tilt strength λ (finite; ``0`` leaves the logits unchanged).
    eos_token_id : int or sequence of int, optional
        With it, a row stops accumulating KL once it has produced one of these
        tokens (``generate`` keeps calling processors on finished rows).

    Attributes
    ----------
    kl : numpy.ndarray, shape (rows,)
        Sum over the steps seen so far of ``KL(p_λ‖p)`` per row, where ``p``
        is the law of the logits this processor receives.  Over a sampled
        sequence this is an unbiased estimate of the sequence ``KL(π‖p)``.
    steps : int
        Calls so far.

    Notes
    -----
    ``model.generate`` applies custom processors *before* its temperature,
    top-k and top-p warpers; the recorded KL is then relative to the raw
    model law, and equals the policy's KL only when those warpers are off
    (``temperature=1, top_k=0, top_p=1``).  :func:`klfrontier.lm.sample`
    applies the tilt after them, to the reference as it defines it.  Call
    :meth:`reset` (or make a new processor) between generations.

    Examples
    --------
    >>> import torch
    >>> proc = TokenTiltProcessor([0.0, 1.0, 0.0], lam=math.log(2))
    >>> scores = torch.log(torch.tensor([[0.5, 0.25, 0.25], [1/3, 1/3, 1/3]]))
    >>> out = proc(torch.zeros((2, 1), dtype=torch.long), scores)
    >>> torch.softmax(out, -1)[0].tolist()            # doctest: +ELLIPSIS
    [0.4..., 0.4..., 0.2...]
    >>> proc.kl.round(6).tolist()
    [0.054115, 0.058892]
    """

    def __init__(self, values, lam, *, eos_token_id=None):
        if _Base is object:
            raise ImportError(f"TokenTiltProcessor needs transformers and torch: {_EXTRA}")
        self.values = check_token_values(values)
        self.lam = real_scalar(lam, "lam")
        if eos_token_id is None:
            self.eos_token_id = ()
        else:
            ids = [eos_token_id] if np.ndim(eos_token_id) == 0 else list(eos_token_id)
            self.eos_token_id = tuple(int(i) for i in ids)
        self.reset()

    def reset(self):
        """Forget the recorded KL (start of a new generation)."""
        self._kl = None
        self._finished = None
        self._v = None
        self.steps = 0

    @property
    def kl(self):
        return np.zeros(0) if self._kl is None else self._kl.cpu().numpy().copy()

    def __call__(self, input_ids, scores):
        import torch

        if scores.ndim != 2:
            raise ValueError(f"scores must be (rows, vocab), got shape {tuple(scores.shape)}")
        rows, width = scores.shape
        if self._v is None or self._v.shape[0] != width or self._v.device != scores.device:
            self._v = values_for(torch, self.values, width, scores.device)
        if self._kl is None:
            self._kl = torch.zeros(rows, dtype=torch.float64, device=scores.device)
            self._finished = torch.zeros(rows, dtype=torch.bool, device=scores.device)
        elif self._kl.shape[0] != rows:
            raise ValueError(
                f"scores has {rows} rows but this generation started with "
                f"{self._kl.shape[0]}; call reset() between generations"
            )
        elif self.eos_token_id:
            # The previous call's token is now the last input id.
            last = input_ids[:, -1]
            for e in self.eos_token_id:
                self._finished |= last == e
        self.steps += 1
        if self.lam == 0:
            return scores
        _, _, kl = tilt_log_softmax(scores, self._v, self.lam)
        self._kl += torch.where(self._finished, 0.0, kl)
        return (scores.to(torch.float64) + self.lam * self._v).to(scores.dtype)
