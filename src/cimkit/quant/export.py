"""Integer export: weight codes + scales as safetensors with a JSON manifest, and loading them back
into an identical quantized model.

``export_quantized(model, "out/")`` writes ``out/weights.safetensors`` and ``out/manifest.json``:

* per quantized layer ``L``: ``L.weight.codes`` (1-, 2- and 4-bit codes packed little-endian into
  ``uint8``, offset by ``qmin`` (binary: bit = code > 0); other widths as ``int8``/``int16``/``int32``),
  ``L.weight.scale`` (float32, ``(C,)`` or ``(1,)``), ``L.weight.zero_point`` (int32), ``L.bias``
  (float32), and the manifest entry with the layer's config, grid and activation grid;
* every other state tensor (BatchNorm, skipped float layers, ...) under its ``state_dict`` name.

``load_quantized(float_model, "out/")`` takes a freshly built float model of the same architecture,
re-applies BN folding and quantization as recorded, and loads the tensors; the result computes
exactly what the exported model computed. Needs the ``safetensors`` extra.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import cimkit
from cimkit.errors import ConfigError, DataError
from cimkit.io import atomic_write_bytes, atomic_write_json
from cimkit.quant.api import _set_module, quantized_layers
from cimkit.quant.config import QuantConfig
from cimkit.quant.fold import FoldedBN
from cimkit.quant.functional import dequantize
from cimkit.quant.layers import QUANT_CLASSES, QuantLayer

log = logging.getLogger("cimkit.quant")

FORMAT = "cimkit.quant/1"
WEIGHTS_FILE = "weights.safetensors"
MANIFEST_FILE = "manifest.json"
PACKABLE = (1, 2, 4)


def _safetensors() -> Any:
    try:
        import safetensors.torch as st
    except ImportError:  # pragma: no cover - extra not installed
        raise ConfigError("integer export needs safetensors: pip install 'cimkit[safetensors]'") from None
    return st


# ----------------------------------------------------------------------------- packing


def pack_codes(q: Tensor, bits: int, qmin: int) -> Tensor:
    """Pack integer codes of ``bits`` in (1, 2, 4) into a flat ``uint8`` tensor, ``8/bits`` per byte
    (first code in the lowest bits). Codes are stored as ``q - qmin``; 1-bit codes (binary ±1) as
    ``q > 0``."""
    flat = q.reshape(-1).to(torch.int64)  # (N,)
    u = (flat > 0).to(torch.int64) if bits == 1 else flat - qmin
    per = 8 // bits
    pad = (-u.numel()) % per
    u = torch.cat([u, u.new_zeros(pad)]).reshape(-1, per)  # (N/per, per)
    shifts = torch.arange(per, dtype=torch.int64) * bits  # (per,)
    return (u << shifts).sum(dim=1).to(torch.uint8)  # (N/per,)


def unpack_codes(packed: Tensor, bits: int, qmin: int, numel: int) -> Tensor:
    """Inverse of :func:`pack_codes`: float tensor of ``numel`` codes."""
    per = 8 // bits
    shifts = torch.arange(per, dtype=torch.int64) * bits  # (per,)
    u = ((packed.to(torch.int64).reshape(-1, 1) >> shifts) & ((1 << bits) - 1)).reshape(-1)[:numel]  # (N,)
    q = u * 2 - 1 if bits == 1 else u + qmin
    return q.to(torch.float32)


def _int_dtype(qmin: int, qmax: int) -> torch.dtype:
    if qmin >= -128 and qmax <= 127:
        return torch.int8
    if qmin >= 0 and qmax <= 255:
        return torch.uint8
    if qmin >= -(2**15) and qmax < 2**15:
        return torch.int16
    return torch.int32


# ----------------------------------------------------------------------------- export


def export_quantized(model: nn.Module, directory: str | Path) -> Path:
    """Write ``weights.safetensors`` + ``manifest.json`` for ``model`` into ``directory``; returns it."""
    st = _safetensors()
    out = Path(directory)
    tensors: dict[str, Tensor] = {}
    layers: dict[str, Any] = {}
    q_layers = quantized_layers(model)
    if not q_layers:
        raise ConfigError("export_quantized: the model has no quantized layers (call quantize_ first)")
    covered: set[str] = set()
    for name, m in q_layers:
        wq = m.w_quant
        codes, scale, zp = wq.qparams(m.weight)
        pre = f"{name}." if name else ""
        entry: dict[str, Any] = {
            "type": m.float_cls.__name__,
            "config": m.quant_config.to_dict(),
            "w_bits": wq.bits,
            "w_mode": wq.mode.value,
            "qmin": wq.qmin,
            "qmax": wq.qmax,
            "axis": wq.axis,
            "weight_shape": list(m.weight.shape),
            "bias": m.bias is not None,
        }
        if wq.bits in PACKABLE:
            tensors[pre + "weight.codes"] = pack_codes(codes.cpu(), wq.bits, wq.qmin)
            entry["codes"] = {"packed_bits": wq.bits, "dtype": "uint8"}
        else:
            dt = _int_dtype(wq.qmin, wq.qmax)
            tensors[pre + "weight.codes"] = codes.cpu().to(dt).contiguous()
            entry["codes"] = {"packed_bits": None, "dtype": str(dt).replace("torch.", "")}
        tensors[pre + "weight.scale"] = scale.cpu().float().contiguous()
        tensors[pre + "weight.zero_point"] = zp.cpu().to(torch.int32).contiguous()
        if m.bias is not None:
            tensors[pre + "bias"] = m.bias.detach().cpu().float().contiguous()
        entry["act"] = None if m.a_quant is None else m.a_quant.qparams()
        layers[name] = entry
        covered.update(pre + k for k in m.state_dict())
    others = [k for k in model.state_dict() if k not in covered]
    for k, v in model.state_dict().items():
        if k in others:
            tensors[k] = v.detach().cpu().contiguous()
    folded = {n: m.folded_into for n, m in model.named_modules() if isinstance(m, FoldedBN)}
    manifest = {
        "format": FORMAT,
        "cimkit_version": cimkit.__version__,
        "model_class": type(model).__name__,
        "folded_bn": folded,
        "layers": layers,
        "other_tensors": others,
        "weights_file": WEIGHTS_FILE,
    }
    atomic_write_bytes(out / WEIGHTS_FILE, st.save(tensors, metadata={"format": FORMAT}))
    atomic_write_json(out / MANIFEST_FILE, manifest)
    log.info("exported %d quantized layers to %s", len(layers), out)
    return out


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of an export folder (DataError if missing or not a cimkit export)."""
    p = Path(directory) / MANIFEST_FILE
    if not p.is_file():
        raise DataError(f"no {MANIFEST_FILE} in {directory}")
    try:
        manifest = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{p}: invalid JSON ({e})") from None
    if manifest.get("format") != FORMAT:
        raise DataError(f"{p}: format {manifest.get('format')!r} is not {FORMAT!r}")
    return manifest


@torch.no_grad()
def load_quantized(model: nn.Module, directory: str | Path) -> nn.Module:
    """Rebuild the exported quantized model from a float ``model`` of the same architecture, in
    place; returns it. Weight grids are frozen at the exported values."""
    st = _safetensors()
    manifest = read_manifest(directory)
    path = Path(directory) / manifest.get("weights_file", WEIGHTS_FILE)
    if not path.is_file():
        raise DataError(f"missing weights file {path}")
    tensors = st.load_file(str(path))
    mods = dict(model.named_modules())
    for bn_name, into in manifest["folded_bn"].items():
        if bn_name not in mods:
            raise DataError(f"export folded BatchNorm '{bn_name}', which this model does not have")
        _set_module(model, bn_name, FoldedBN(into))
    for name, e in manifest["layers"].items():
        base = mods.get(name)
        if base is None or type(base).__name__ != e["type"] or type(base) not in QUANT_CLASSES:
            raise DataError(f"layer '{name}': the export has a {e['type']}, the model has {type(base).__name__}")
        if list(base.weight.shape) != e["weight_shape"]:
            raise DataError(f"layer '{name}': weight shape {list(base.weight.shape)} != exported {e['weight_shape']}")
        pre = f"{name}." if name else ""
        cfg = QuantConfig.from_dict(e["config"])
        wt = tensors[pre + "weight.codes"]
        numel = int(torch.Size(e["weight_shape"]).numel())
        if e["codes"]["packed_bits"]:
            codes = unpack_codes(wt, int(e["codes"]["packed_bits"]), int(e["qmin"]), numel)
        else:
            codes = wt.to(torch.float32)
        codes = codes.reshape(e["weight_shape"])
        scale = tensors[pre + "weight.scale"].float()
        zp = tensors[pre + "weight.zero_point"].float()
        w = dequantize(codes, scale, zp, e["axis"])
        dev = base.weight.device
        base.weight.copy_(w.to(dev, base.weight.dtype))
        if e["bias"]:
            b = tensors[pre + "bias"].to(dev)
            if base.bias is None:
                base.bias = nn.Parameter(b.clone())
            else:
                base.bias.copy_(b)
        q: QuantLayer = QUANT_CLASSES[type(base)].from_float(base, cfg)
        q.w_quant.set_frozen(scale.to(dev), zp.to(dev))
        if e["act"] is not None and q.a_quant is not None:
            a = e["act"]
            q.a_quant.set_grid(float(a["scale"]), float(a["zero_point"]), bool(a["unsigned"]))
        if name == "":
            return q  # type: ignore[return-value]
        _set_module(model, name, q)  # type: ignore[arg-type]
    others = {k: tensors[k] for k in manifest["other_tensors"] if k in tensors}
    missing = [k for k in manifest["other_tensors"] if k not in tensors]
    if missing:
        raise DataError(f"weights file lacks {missing[:3]}")
    mods = dict(model.named_modules())
    for k, v in others.items():  # a bias that BN folding created on a float (skipped) layer
        owner, _, leaf = k.rpartition(".")
        if leaf == "bias" and owner in mods and getattr(mods[owner], "bias", "absent") is None:
            mods[owner].bias = nn.Parameter(torch.zeros_like(v, device=mods[owner].weight.device))
    sd = model.state_dict()
    for k, v in others.items():
        if k not in sd:
            raise DataError(f"exported tensor '{k}' has no place in this model")
        sd[k].copy_(v.to(sd[k].device, sd[k].dtype))
    return model
