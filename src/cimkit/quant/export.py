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
exactly what the exported model computed.

The manifest pins the weights file by its SHA-256 (``weights_sha256``) and is validated field by
field on load (types; ``w_bits``/``w_mode``/``qmin``/``qmax`` against the layer's config; the codes'
storage against the bits; every tensor's dtype, size and value range against ``weight_shape``):
an edited or damaged export raises :class:`DataError` naming the file, the layer and the field
instead of loading different weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import cimkit
from cimkit.errors import ConfigError, DataError
from cimkit.io import atomic_write_bytes, atomic_write_json, load_safetensors, safetensors_bytes
from cimkit.quant.api import _set_module, quantized_layers
from cimkit.quant.config import QuantConfig, WMode
from cimkit.quant.fold import FoldedBN
from cimkit.quant.functional import dequantize
from cimkit.quant.layers import QUANT_CLASSES, QuantLayer
from cimkit.quant.quantizers import ActQuantizer, WeightQuantizer

log = logging.getLogger("cimkit.quant")

FORMAT = "cimkit.quant/1"
WEIGHTS_FILE = "weights.safetensors"
MANIFEST_FILE = "manifest.json"
PACKABLE = (1, 2, 4)


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


def _check_exportable(name: str, m: QuantLayer) -> None:
    """Refuse grids this format does not describe: per-group weights, per-token activations, embeddings."""
    if m.w_quant.grouped:
        raise ConfigError(f"export: layer '{name}' has group-wise weight grids (group_size = {m.w_quant.group_size}); "
                          f"the integer/ONNX export holds per-channel or per-tensor grids; allowed: group_size = 0")  # fmt: skip
    if m.a_quant is not None and m.a_quant.per_token:
        raise ConfigError(f"export: layer '{name}' quantizes its input per token at run time (a_granularity = "
                          f"'token'); the integer/ONNX export holds fixed activation grids; allowed: 'tensor'")  # fmt: skip
    if isinstance(m, nn.Embedding):
        raise ConfigError(f"export: layer '{name}' is a quantized embedding; the integer/ONNX export holds "
                          f"Linear/Conv layers; quantize with embeddings = false to export")  # fmt: skip


def export_quantized(model: nn.Module, directory: str | Path) -> Path:
    """Write ``weights.safetensors`` + ``manifest.json`` for ``model`` into ``directory``; returns it."""
    out = Path(directory)
    tensors: dict[str, Tensor] = {}
    layers: dict[str, Any] = {}
    q_layers = quantized_layers(model)
    if not q_layers:
        raise ConfigError("export_quantized: the model has no quantized layers (call quantize_ first)")
    covered: set[str] = set()
    for name, m in q_layers:
        _check_exportable(name, m)
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
    data = safetensors_bytes(tensors, {"format": FORMAT})
    manifest["weights_sha256"] = hashlib.sha256(data).hexdigest()
    atomic_write_bytes(out / WEIGHTS_FILE, data)  # a crash before the manifest is written leaves the old
    atomic_write_json(out / MANIFEST_FILE, manifest)  # manifest, whose sha256 no longer matches: load refuses
    log.info("exported %d quantized layers to %s", len(layers), out)
    return out


# ----------------------------------------------------------------------------- manifest validation

_SHA256 = re.compile(r"[0-9a-f]{64}")
_NUMBER = (int, float)


def _typename(types: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true/false", dict: "an object",
             list: "a list", type(None): "null"}  # fmt: skip
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in types))


def _field(p: Path, obj: dict[str, Any], key: str, types: tuple[type, ...], where: str) -> Any:
    """``obj[key]``, which must exist and be one of ``types`` (bools are not integers here)."""
    if key not in obj:
        raise DataError(f"{p}: {where}lacks the required field '{key}'")
    v = obj[key]
    if (isinstance(v, bool) and bool not in types) or not isinstance(v, types):
        raise DataError(f"{p}: {where}field '{key}' is {v!r}, expected {_typename(types)}")
    return v


def _layer_where(name: str) -> str:
    return f"layer '{name}': "


def _check_act(p: Path, name: str, e: dict[str, Any], cfg: QuantConfig) -> None:
    w = _layer_where(name)
    act = _field(p, e, "act", (dict, type(None)), w)
    if (act is None) != (cfg.a_bits is None):
        raise DataError(f"{p}: {w}field 'act' is {act!r} but the layer's config has a_bits={cfg.a_bits}")
    if act is None:
        return
    wa = f"{w}act: "
    bits = _field(p, act, "bits", (int,), wa)
    scale = _field(p, act, "scale", _NUMBER, wa)
    zp = _field(p, act, "zero_point", _NUMBER, wa)
    unsigned = _field(p, act, "unsigned", (bool,), wa)
    qmin = _field(p, act, "qmin", (int,), wa)
    qmax = _field(p, act, "qmax", (int,), wa)
    if bits != cfg.a_bits:
        raise DataError(f"{p}: {wa}field 'bits' is {bits} but the layer's config has a_bits={cfg.a_bits}")
    if not (math.isfinite(scale) and scale > 0):
        raise DataError(f"{p}: {wa}field 'scale' is {scale!r}; it must be a finite number > 0")
    ref = ActQuantizer(cfg)
    ref._set_range(unsigned)
    if (qmin, qmax) != (ref.qmin, ref.qmax):
        raise DataError(f"{p}: {wa}fields 'qmin'/'qmax' are {qmin}/{qmax}; a {bits}-bit "
                        f"{'unsigned' if unsigned else 'signed'} grid has {ref.qmin}/{ref.qmax}")  # fmt: skip
    if zp != int(zp) or not qmin <= zp <= qmax:
        raise DataError(f"{p}: {wa}field 'zero_point' is {zp!r}; it must be an integer in [{qmin}, {qmax}]")


def _check_layer(p: Path, name: str, e: Any) -> None:
    """Validate one layer entry of the manifest on its own (no tensors, no model)."""
    w = _layer_where(name)
    if not isinstance(e, dict):
        raise DataError(f"{p}: {w}entry is {e!r}, expected an object")
    kinds = sorted(c.__name__ for c in QUANT_CLASSES)
    typ = _field(p, e, "type", (str,), w)
    if typ not in kinds:
        raise DataError(f"{p}: {w}field 'type' is {typ!r}; allowed: {', '.join(kinds)}")
    raw_cfg = _field(p, e, "config", (dict,), w)
    try:
        cfg = QuantConfig.from_dict(raw_cfg)
    except ConfigError as err:
        raise DataError(f"{p}: {w}field 'config': {err}") from None
    bits = _field(p, e, "w_bits", (int,), w)
    mode = _field(p, e, "w_mode", (str,), w)
    qmin = _field(p, e, "qmin", (int,), w)
    qmax = _field(p, e, "qmax", (int,), w)
    axis = _field(p, e, "axis", (int, type(None)), w)
    shape = _field(p, e, "weight_shape", (list,), w)
    _field(p, e, "bias", (bool,), w)
    codes = _field(p, e, "codes", (dict,), w)
    packed = _field(p, codes, "packed_bits", (int, type(None)), f"{w}codes: ")
    dtype = _field(p, codes, "dtype", (str,), f"{w}codes: ")
    if not shape or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape):
        raise DataError(f"{p}: {w}field 'weight_shape' is {shape!r}, expected a list of positive integers")
    if mode not in {m.value for m in WMode}:
        raise DataError(f"{p}: {w}field 'w_mode' is {mode!r}; allowed: {', '.join(m.value for m in WMode)}")
    # the quantizer the config builds is the reference for bits, mode, grid and axis
    ref = WeightQuantizer(cfg, torch.zeros(shape[0], *([1] * (len(shape) - 1))))
    for key, got, want in (("w_mode", mode, ref.mode.value), ("w_bits", bits, ref.bits), ("qmin", qmin, ref.qmin),
                           ("qmax", qmax, ref.qmax), ("axis", axis, ref.axis)):  # fmt: skip
        if got != want:
            raise DataError(f"{p}: {w}field '{key}' is {got!r} but the layer's config gives {want!r}")
    want_packed = bits if bits in PACKABLE else None
    want_dtype = "uint8" if want_packed else str(_int_dtype(qmin, qmax)).removeprefix("torch.")
    if packed != want_packed:
        raise DataError(f"{p}: {w}field 'codes.packed_bits' is {packed!r}; {bits}-bit codes are stored with "
                        f"packed_bits={want_packed!r}")  # fmt: skip
    if dtype != want_dtype:
        raise DataError(f"{p}: {w}field 'codes.dtype' is {dtype!r}; codes in [{qmin}, {qmax}] are stored as {want_dtype!r}")
    _check_act(p, name, e, cfg)


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The validated manifest of an export folder: DataError naming the file (and the layer and
    field) if it is missing, not JSON, not a cimkit export, lacks a field, has a field of the wrong
    type, or has fields that contradict each other."""
    p = Path(directory) / MANIFEST_FILE
    if not p.is_file():
        raise DataError(f"no {MANIFEST_FILE} in {directory}")
    try:
        manifest = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{p}: invalid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{p}: expected a JSON object, got {type(manifest).__name__}")
    if manifest.get("format") != FORMAT:
        raise DataError(f"{p}: format {manifest.get('format')!r} is not {FORMAT!r}")
    for key, types in (("cimkit_version", (str,)), ("model_class", (str,)), ("folded_bn", (dict,)),
                       ("layers", (dict,)), ("other_tensors", (list,))):  # fmt: skip
        _field(p, manifest, key, types, "")
    wf = _field(p, manifest, "weights_file", (str,), "")
    if not wf or Path(wf).name != wf or wf in (".", ".."):
        raise DataError(f"{p}: field 'weights_file' is {wf!r}; it must be a file name inside the export folder")
    if "weights_sha256" not in manifest:
        raise DataError(f"{p}: lacks the required field 'weights_sha256' that pins the weights file (an export "
                        f"from before cimkit recorded it, or an edited manifest): export the model again")  # fmt: skip
    sha = _field(p, manifest, "weights_sha256", (str,), "")
    if not _SHA256.fullmatch(sha):
        raise DataError(f"{p}: field 'weights_sha256' is {sha!r}, expected 64 lower-case hex digits")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in manifest["folded_bn"].items()):
        raise DataError(f"{p}: field 'folded_bn' must map BatchNorm names to layer names (strings)")
    if not all(isinstance(k, str) for k in manifest["other_tensors"]):
        raise DataError(f"{p}: field 'other_tensors' must be a list of tensor names (strings)")
    if not manifest["layers"]:
        raise DataError(f"{p}: field 'layers' is empty; an export has at least one quantized layer")
    for name, e in manifest["layers"].items():
        _check_layer(p, name, e)
    return manifest


def _tensor(p: Path, tensors: dict[str, Tensor], key: str, dtype: torch.dtype, shape: list[int] | None, layer: str) -> Tensor:
    w = _layer_where(layer)
    if key not in tensors:
        raise DataError(f"{p}: {w}tensor '{key}' is missing")
    t = tensors[key]
    if t.dtype != dtype:
        raise DataError(f"{p}: {w}tensor '{key}' has dtype {t.dtype}, expected {dtype}")
    if shape is not None and list(t.shape) != shape:
        raise DataError(f"{p}: {w}tensor '{key}' has shape {list(t.shape)}, expected {shape}")
    return t


def _decode_layer(p: Path, name: str, e: dict[str, Any], tensors: dict[str, Tensor]) -> dict[str, Any]:
    """Codes, scale, zero point and bias of one layer, checked against its (validated) entry."""
    w = _layer_where(name)
    pre = f"{name}." if name else ""
    shape = e["weight_shape"]
    numel = math.prod(shape)
    bits, qmin, qmax = e["w_bits"], e["qmin"], e["qmax"]
    packed = e["codes"]["packed_bits"]
    ct = _tensor(p, tensors, pre + "weight.codes", getattr(torch, e["codes"]["dtype"]), None, name)
    want = -(-numel * packed // 8) if packed else numel
    if ct.numel() != want:
        raise DataError(f"{p}: {w}tensor '{pre}weight.codes' holds {ct.numel()} values; weight_shape {shape} at "
                        f"{bits} bits needs {want}")  # fmt: skip
    codes = unpack_codes(ct, packed, qmin, numel) if packed else ct.reshape(-1).to(torch.float32)  # (N,)
    if packed != 1 and codes.numel() and not (qmin <= float(codes.min()) and float(codes.max()) <= qmax):
        raise DataError(f"{p}: {w}tensor '{pre}weight.codes' has codes in [{float(codes.min()):.0f}, "
                        f"{float(codes.max()):.0f}], outside the grid [{qmin}, {qmax}]")  # fmt: skip
    n_ch = shape[0] if e["axis"] == 0 else 1
    scale = _tensor(p, tensors, pre + "weight.scale", torch.float32, [n_ch], name)
    if not bool(torch.isfinite(scale).all()) or bool((scale < 0).any()):
        raise DataError(f"{p}: {w}tensor '{pre}weight.scale' has negative or non-finite scales")
    zp = _tensor(p, tensors, pre + "weight.zero_point", torch.int32, [n_ch], name)
    bias = _tensor(p, tensors, pre + "bias", torch.float32, [shape[0]], name) if e["bias"] else None
    return {"codes": codes.reshape(shape), "scale": scale, "zero_point": zp.float(), "bias": bias}


@torch.no_grad()
def load_quantized(model: nn.Module, directory: str | Path) -> nn.Module:
    """Rebuild the exported quantized model from a float ``model`` of the same architecture, in
    place; returns it. Weight grids are frozen at the exported values.

    The manifest and the weights file are validated in full (:func:`read_manifest`, the file's
    ``weights_sha256``, every tensor against its layer's entry, every layer against ``model``)
    before ``model`` is changed; any problem raises DataError naming the file, layer and field.
    """
    manifest = read_manifest(directory)
    path = Path(directory) / manifest["weights_file"]
    tensors, _ = load_safetensors(path, sha256=manifest["weights_sha256"])
    mods = dict(model.named_modules())
    for bn_name in manifest["folded_bn"]:
        if bn_name not in mods:
            raise DataError(f"export folded BatchNorm '{bn_name}', which this model does not have")
    decoded: dict[str, dict[str, Any]] = {}
    for name, e in manifest["layers"].items():
        base = mods.get(name)
        if base is None or type(base).__name__ != e["type"] or type(base) not in QUANT_CLASSES:
            raise DataError(f"layer '{name}': the export has a {e['type']}, the model has {type(base).__name__}")
        if list(base.weight.shape) != e["weight_shape"]:
            raise DataError(f"layer '{name}': weight shape {list(base.weight.shape)} != exported {e['weight_shape']}")
        decoded[name] = _decode_layer(path, name, e, tensors)
    missing = [k for k in manifest["other_tensors"] if k not in tensors]
    if missing:
        raise DataError(f"{path}: weights file lacks {missing[:3]}")
    others = {k: tensors[k] for k in manifest["other_tensors"]}
    float_sd = model.state_dict()
    for k, v in others.items():
        owner, _, leaf = k.rpartition(".")
        folding_bias = leaf == "bias" and getattr(mods.get(owner), "bias", "absent") is None
        if k not in float_sd and not folding_bias:
            raise DataError(f"{path}: exported tensor '{k}' has no place in this model")
        if k in float_sd and float_sd[k].shape != v.shape:
            raise DataError(f"{path}: tensor '{k}' has shape {list(v.shape)}, the model's is {list(float_sd[k].shape)}")
    # ---- everything checked: change the model
    for bn_name, into in manifest["folded_bn"].items():
        _set_module(model, bn_name, FoldedBN(into))
    for name, e in manifest["layers"].items():
        base, d = mods[name], decoded[name]
        cfg = QuantConfig.from_dict(e["config"])
        w = dequantize(d["codes"], d["scale"], d["zero_point"], e["axis"])
        dev = base.weight.device
        base.weight.copy_(w.to(dev, base.weight.dtype))
        if d["bias"] is not None:
            b = d["bias"].to(dev)
            if base.bias is None:
                base.bias = nn.Parameter(b.clone())
            else:
                base.bias.copy_(b)
        q: QuantLayer = QUANT_CLASSES[type(base)].from_float(base, cfg)
        q.w_quant.set_frozen(d["scale"].to(dev), d["zero_point"].to(dev))
        if e["act"] is not None and q.a_quant is not None:
            a = e["act"]
            q.a_quant.set_grid(float(a["scale"]), float(a["zero_point"]), bool(a["unsigned"]))
        if name == "":
            return q  # type: ignore[return-value]
        _set_module(model, name, q)  # type: ignore[arg-type]
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
