"""Quantization: fake-quant primitives, quantized layers, PTQ/QAT, BN folding, cost accounting and
integer / ONNX export.

>>> from cimkit.quant import QuantConfig, quantize_, calibrate, account
>>> quantize_(model, QuantConfig(w_bits=4, a_bits=4, overrides={"@first": {"w_bits": 8}}))
>>> calibrate(model, batches)            # PTQ; or fine-tune the model for QAT; freeze_(model) after
>>> reestimate_bn_(model, batches)       # optional, BN not folded: BatchNorm statistics of the quantized model
>>> account(model, x[:1]).total          # params, size_bytes, macs, bops, weight_bits, ...

The pure math lives in :mod:`cimkit.quant.functional`; :mod:`cimkit.quant.variants` registers the
``ptq`` and ``qat`` experiment kinds (imported by :mod:`cimkit.experiment`).
"""

from cimkit.quant.accounting import CostReport, account
from cimkit.quant.api import (
    calibrate,
    convert_,
    dequantize_,
    freeze_,
    layer_bits,
    quantizable_layers,
    quantize_,
    quantized_layers,
)
from cimkit.quant.bn_reestimate import batchnorm_layers, reestimate_bn_
from cimkit.quant.config import QUANT_PRESETS, QuantConfig, WMode, as_quant_config
from cimkit.quant.export import export_quantized, load_quantized
from cimkit.quant.fold import FoldedBN, fold_bn_
from cimkit.quant.functional import (
    dequantize,
    fake_quantize,
    fake_quantize_weight,
    qparams_from_range,
    qrange,
    quantize,
)
from cimkit.quant.layers import QuantConv1d, QuantConv2d, QuantLayer, QuantLinear
from cimkit.quant.observers import Observer, ObserverKind
from cimkit.quant.onnx_export import export_onnx
from cimkit.quant.quantizers import ActQuantizer, WeightQuantizer

__all__ = [
    "QUANT_PRESETS",
    "ActQuantizer",
    "CostReport",
    "FoldedBN",
    "Observer",
    "ObserverKind",
    "QuantConfig",
    "QuantConv1d",
    "QuantConv2d",
    "QuantLayer",
    "QuantLinear",
    "WMode",
    "WeightQuantizer",
    "account",
    "as_quant_config",
    "batchnorm_layers",
    "calibrate",
    "convert_",
    "dequantize",
    "dequantize_",
    "export_onnx",
    "export_quantized",
    "fake_quantize",
    "fake_quantize_weight",
    "fold_bn_",
    "freeze_",
    "layer_bits",
    "load_quantized",
    "qparams_from_range",
    "qrange",
    "quantizable_layers",
    "quantize",
    "quantize_",
    "quantized_layers",
    "reestimate_bn_",
]  # fmt: skip
