"""Transformers and language models on CIM: ternary BitLinear layers, a MatMul-free style LM,
hardware-aware LoRA (HaLoRA), text samples, Hugging Face models built from a config.

>>> from cimkit.lm import BitConfig, bitlinear_, LoRAConfig, lora_, halora_penalty
>>> bitlinear_(model, BitConfig())                    # ternary weights, 8-bit per-token activations
>>> lora_(analog_model, LoRAConfig(rank=8, alpha=16)) # digital adapters beside the crossbar layers
>>> loss = task_loss + mu * halora_penalty(model)     # or the HaLoRARegularizer callback in fit

Pipelines: steps ``bitlinear``, ``lora`` (with ``halora_mu``) and ``sample``; models ``bitnet_lm``
and ``hf_gpt2`` (needs ``cimkit[hf]``). See docs/transformers.md.
"""

from cimkit.lm.bitlinear import BitConfig, BitLayer, BitLinear, RMSNorm, bit_layers, bitlinear_
from cimkit.lm.hf import HFCausalLM, have_transformers, hf_gpt2
from cimkit.lm.lora import (
    HaLoRARegularizer,
    LoRAConfig,
    LoRALinear,
    halora_penalty,
    lora_,
    lora_layers,
    merge_lora_,
    spectral_penalty,
)
from cimkit.lm.models import GLU, MLGRU, BitNetLM, linear_recurrence

__all__ = [
    "GLU", "MLGRU", "BitConfig", "BitLayer", "BitLinear", "BitNetLM", "HFCausalLM", "HaLoRARegularizer",
    "LoRAConfig", "LoRALinear", "RMSNorm", "bit_layers", "bitlinear_", "halora_penalty", "have_transformers",
    "hf_gpt2", "linear_recurrence", "lora_", "lora_layers", "merge_lora_", "spectral_penalty",
]  # fmt: skip
