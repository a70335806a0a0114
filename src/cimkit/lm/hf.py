"""Hugging Face ``transformers`` models built from a config (no weights are downloaded).

* GPT-2's projections are ``transformers.pytorch_utils.Conv1D`` (weight ``(in, out)``,
  ``y = x W + b``). The adapter registered here (:func:`cimkit.nn.register_adapter`) lets every
  transform reach them: ``quantize_``, ``analog.convert_``, ``bitlinear_`` first swap each ``Conv1D``
  for an equivalent :class:`cimkit.nn.TransposedLinear` (an ``nn.Linear`` holding ``Wᵀ``), and
  ``cimkit.undo_`` swaps the ``Conv1D`` back. Registering by class name needs no import of
  ``transformers``.
* :class:`HFCausalLM` wraps a causal-LM model so that it maps ids ``(B, T)`` to logits ``(B, T, V)``
  like every cimkit language model (training, evaluation, :func:`cimkit.models.gpt.generate`).
* The registered model ``hf_gpt2`` builds ``GPT2LMHeadModel(GPT2Config(...))`` at the sizes given.

``transformers`` is the optional extra ``cimkit[hf]``; without it ``hf_gpt2`` raises a
:class:`~cimkit.errors.ConfigError` that says so.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import torch
from torch import nn

from cimkit.config import check_range
from cimkit.errors import ConfigError
from cimkit.models.registry import MODELS
from cimkit.nn.adapters import TransposedLinear, register_adapter
from cimkit.nn.walk import register_weighted_type

__all__ = ["CONV1D", "HFCausalLM", "have_transformers", "hf_gpt2", "transformers_module"]

CONV1D = "transformers.pytorch_utils.Conv1D"
register_adapter(CONV1D, TransposedLinear.adapter("nf", "nx"), "GPT-2's Conv1D (weight (in, out), y = x W + b) as "
                 "an nn.Linear holding the transposed weight")  # fmt: skip


def have_transformers() -> bool:
    """Whether the optional ``transformers`` package is importable."""
    return importlib.util.find_spec("transformers") is not None


def transformers_module(name: str = "transformers") -> Any:
    """Import ``name`` from the optional extra, or raise a ConfigError naming the extra."""
    if not have_transformers():
        raise ConfigError("Hugging Face models need the optional 'transformers' package: pip install 'cimkit[hf]'")
    mod = importlib.import_module(name)
    pu = importlib.import_module("transformers.pytorch_utils")
    register_weighted_type(pu.Conv1D)  # a candidate of the layer walk (its adapter makes it an nn.Linear)
    return mod


class HFCausalLM(nn.Module):
    """A Hugging Face causal LM as ids (B, T) -> logits (B, T, V); ``hf`` is the wrapped model
    (its modules keep their names under ``hf.``), ``block_size`` its longest context."""

    def __init__(self, hf_model: nn.Module, block_size: int) -> None:
        super().__init__()
        self.hf = hf_model
        self.block_size = int(block_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.dim() != 2:
            raise ConfigError(f"hf model input: shape {tuple(idx.shape)}; allowed: (batch, time) token ids")
        if idx.shape[1] > self.block_size:
            raise ConfigError(f"hf model input length: {idx.shape[1]} is longer than block_size = {self.block_size}")
        return self.hf(input_ids=idx, use_cache=False).logits  # (B, T, V)


@MODELS.register("hf_gpt2", "Hugging Face GPT2LMHeadModel built from a GPT2Config (needs cimkit[hf]; no weights "
                 "downloaded): ids (B, T) -> logits (B, T, V)", inputs="text", requires="transformers")  # fmt: skip
def hf_gpt2(
    vocab_size: int = 65,
    block_size: int = 128,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 2,
    dropout: float = 0.0,
    tie_weights: bool = True,
) -> HFCausalLM:
    """``GPT2LMHeadModel(GPT2Config(vocab_size, n_positions=block_size, n_layer, n_embd, n_head))``
    with every dropout set to ``dropout`` and GPT-2's own initialization, wrapped by
    :class:`HFCausalLM`. ``tie_weights``: the LM head shares the token embedding (GPT-2's default)."""
    for name, value in (("n_layer", n_layer), ("n_embd", n_embd), ("n_head", n_head)):
        check_range(name, value, 1)
    check_range("dropout", dropout, 0.0, 1.0, hi_open=True)
    if n_embd % n_head:
        raise ConfigError(f"n_embd: {n_embd} is not a multiple of n_head = {n_head}")
    tf = transformers_module()
    cfg = tf.GPT2Config(vocab_size=vocab_size, n_positions=block_size, n_layer=n_layer, n_embd=n_embd,
                        n_head=n_head, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
                        bos_token_id=0, eos_token_id=0, tie_word_embeddings=tie_weights)  # fmt: skip
    return HFCausalLM(tf.GPT2LMHeadModel(cfg), block_size)
