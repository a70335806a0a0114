"""ONNX export of a quantized model in QDQ form (``QuantizeLinear``/``DequantizeLinear``).

Every quantized layer becomes::

    x ─[Clip]─ QuantizeLinear ─ DequantizeLinear ─┐
    W codes (int8 initializer) ─ DequantizeLinear ─┴─ Conv / Gemm / MatMul

Weights are stored as integer codes (int8 / uint8 initializers, per-channel ``axis=0`` scales when
the layer is per-channel). Activations of up to 8 bits use int8/uint8 ``QuantizeLinear``; grids
narrower than the ONNX type (e.g. 4 bits, or the narrow signed range) get a ``Clip`` in front so the
codes are exactly the 4-bit ones. With ``int4=True`` (opset >= 21) the 4-bit tensors use the ONNX
``INT4``/``UINT4`` types for 4-bit weight codes (activations keep uint8/int8 + Clip, see
:func:`_to_int4`). Grids wider than 8 bits are not exported (ConfigError).

Portability: onnxruntime fuses QDQ pairs into integer kernels (QLinearConv, QGemm, QLinearMatMul). On
x86 it turns int8 activations into uint8 ones (``QDQS8ToU8Transformer``), so every fused kernel
multiplies uint8 activation codes ``a`` (0..255) by the weight codes. With int8 weight codes ``q``
the x86 kernel of CPUs without VNNI (AVX2, AVX-512 without VNNI) uses ``vpmaddubsw``, which adds two
products ``a1·q1 + a2·q2`` in int16 and *saturates*: exact only while ``2·255·|q| <= 32767``, i.e.
``|q| <= 64``. The 8-bit signed grid ``-127..127`` breaks this, so the same model computed different
numbers on an AVX2 CPU than on a VNNI one (measured: docs/onnx.md). Signed weight grids wider than
``[-64, 64]`` are therefore exported as the identical uint8 grid (:func:`unsigned_weight_grid`:
codes and zero point + 128, so ``(q - z)·s`` is unchanged for every code); uint8 x uint8 kernels
widen to 16 bits before multiplying (``vpmaddwd``) and are exact on every CPU. Narrower signed grids
(up to 7 bits, binary, ternary) stay int8, which also keeps ``int4=True`` available for them.

The graph is produced by PyTorch's TorchScript-based exporter (``dynamo=False``); onnxruntime runs
it. :func:`check_onnx` compares onnxruntime with the PyTorch model. Needs the ``onnx`` extra.
"""

from __future__ import annotations

import copy
import io
import logging
import platform
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cimkit.errors import ConfigError
from cimkit.io import atomic_write_bytes
from cimkit.quant.api import _set_module, quantized_layers
from cimkit.quant.functional import dequantize
from cimkit.quant.layers import QuantLayer

log = logging.getLogger("cimkit.quant")

_ONNX_INT8, _ONNX_UINT8 = 3, 2  # TensorProto data types

# Largest |int8 weight code| for which onnxruntime's u8 x s8 x86 kernels cannot saturate: the
# non-VNNI kernels add two products in int16 (vpmaddubsw), and 2 * 255 * 64 = 32640 <= 32767.
U8S8_SAFE_ABS_CODE = 64


def needs_unsigned_weights(qmin: int, qmax: int) -> bool:
    """Whether a weight grid ``[qmin, qmax]`` must be exported as uint8 to be exact on every CPU:
    signed grids with a code beyond ``±U8S8_SAFE_ABS_CODE`` (e.g. the 8-bit ``-127..127``)."""
    return qmin < 0 and max(-qmin, qmax) > U8S8_SAFE_ABS_CODE


def unsigned_weight_grid(codes: Tensor, zero_point: Tensor) -> tuple[Tensor, Tensor]:
    """The same grid with uint8 codes: ``(codes + 128, zero_point + 128)`` as uint8 tensors.

    ``(q + 128) - (z + 128) = q - z`` exactly (integers), so ``DequantizeLinear`` gives bit-identical
    real values ``(q - z)·s`` for every code; codes and zero point must lie in ``[-128, 127]``."""
    for name, t in (("codes", codes), ("zero_point", zero_point)):
        if t.numel() and (float(t.min()) < -128 or float(t.max()) > 127):
            raise ConfigError(
                f"{name}: values in [{float(t.min())}, {float(t.max())}] do not fit int8; allowed: [-128, 127]"
            )
    return (codes.to(torch.int16) + 128).to(torch.uint8), (zero_point.to(torch.int16) + 128).to(torch.uint8)


class _QDQ(torch.autograd.Function):
    """Activation fake quantization that exports as [Clip] + QuantizeLinear + DequantizeLinear.

    ``lo``/``hi`` are the real bounds ``(qmin - z)·s`` and ``(qmax - z)·s``; the Clip is emitted
    only when ``[qmin, qmax]`` is narrower than the int8/uint8 type."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: Tensor, zp: Tensor, qmin: int, qmax: int, lo: float, hi: float) -> Tensor:
        return (torch.clamp(torch.round(x / scale) + zp, qmin, qmax) - zp) * scale

    @staticmethod
    def symbolic(g: Any, x: Any, scale: Any, zp: Any, qmin: int, qmax: int, lo: float, hi: float) -> Any:
        full = (-128, 127) if qmin < 0 else (0, 255)
        if (qmin, qmax) != full:
            lo_c = g.op("Constant", value_t=torch.tensor(lo, dtype=torch.float32))
            hi_c = g.op("Constant", value_t=torch.tensor(hi, dtype=torch.float32))
            x = g.op("Clip", x, lo_c, hi_c)
        q = g.op("QuantizeLinear", x, scale, zp)
        return g.op("DequantizeLinear", q, scale, zp)


class _DQ(torch.autograd.Function):
    """Integer weight codes -> float, exported as DequantizeLinear (per-channel with ``axis``)."""

    @staticmethod
    def forward(ctx: Any, codes: Tensor, scale: Tensor, zp: Tensor, axis: int | None) -> Tensor:
        return dequantize(codes.float(), scale, zp.float(), axis)

    @staticmethod
    def symbolic(g: Any, codes: Any, scale: Any, zp: Any, axis: int | None) -> Any:
        if axis is None:
            return g.op("DequantizeLinear", codes, scale, zp)
        return g.op("DequantizeLinear", codes, scale, zp, axis_i=axis)


class _OnnxQuantLayer(nn.Module):
    """Export form of a quantized layer: integer weight buffers + QDQ activation."""

    def __init__(self, layer: QuantLayer) -> None:
        super().__init__()
        wq = layer.w_quant
        if isinstance(layer, nn.Embedding):
            raise ConfigError("ONNX export: quantized embeddings are not supported; quantize with embeddings = false")
        if wq.grouped:
            raise ConfigError(f"ONNX export: group-wise weight grids (group_size = {wq.group_size}) are not supported; "
                              f"allowed: group_size = 0 (per-channel or per-tensor)")  # fmt: skip
        if layer.a_quant is not None and layer.a_quant.per_token:
            raise ConfigError("ONNX export: per-token activation grids (a_granularity = 'token') are not supported; "
                              "allowed: 'tensor'")  # fmt: skip
        if wq.bits > 8:
            raise ConfigError(f"ONNX export supports weights of at most 8 bits, got {wq.bits}")
        codes, scale, zp = wq.qparams(layer.weight)
        signed_w = wq.qmin < 0
        if needs_unsigned_weights(wq.qmin, wq.qmax):  # int8 codes that could saturate u8 x s8 kernels
            codes, zp = unsigned_weight_grid(codes, zp)
            signed_w = False
        dt = torch.int8 if signed_w else torch.uint8
        self.axis = wq.axis
        self.register_buffer("w_codes", codes.to(dt))
        self.register_buffer("w_scale", scale.float().reshape(-1) if wq.axis is not None else scale.float().reshape(()))
        self.register_buffer("w_zp", zp.to(dt).reshape(-1) if wq.axis is not None else zp.to(dt).reshape(()))
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone(), requires_grad=False)
        self.kind = layer.float_cls.__name__
        self.layer = layer.to_float()  # holds stride/padding/...; its weight is not used
        self.layer.register_parameter("weight", None)
        self.layer.register_parameter("bias", None)
        a = layer.a_quant
        self.has_act = a is not None
        if a is not None:
            p = a.qparams()
            if a.bits > 8:
                raise ConfigError(f"ONNX export supports activations of at most 8 bits, got {a.bits}")
            self.a_qmin, self.a_qmax = int(p["qmin"]), int(p["qmax"])
            self.a_signed = self.a_qmin < 0
            adt = torch.int8 if self.a_signed else torch.uint8
            self.register_buffer("a_scale", torch.tensor(float(p["scale"])))
            self.register_buffer("a_zp", torch.tensor(int(p["zero_point"]), dtype=adt))
            z, sc = float(p["zero_point"]), torch.tensor(float(p["scale"]))
            self.a_lo = float((self.a_qmin - z) * sc)
            self.a_hi = float((self.a_qmax - z) * sc)

    def forward(self, x: Tensor) -> Tensor:
        if self.has_act:
            x = _QDQ.apply(x, self.a_scale, self.a_zp, self.a_qmin, self.a_qmax, self.a_lo, self.a_hi)
        w = _DQ.apply(self.w_codes, self.w_scale, self.w_zp, self.axis)
        if self.kind == "Linear":
            return F.linear(x, w, self.bias)
        return self.layer._conv_forward(x, w, self.bias)


def onnx_form(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose quantized layers are replaced by their export form (same outputs)."""
    m = copy.deepcopy(model).cpu().eval()
    if isinstance(m, QuantLayer):
        return _OnnxQuantLayer(m)
    for name, layer in quantized_layers(m):
        _set_module(m, name, _OnnxQuantLayer(layer))
    return m


def export_onnx(
    model: nn.Module,
    example_input: Tensor,
    path: str | Path,
    *,
    opset: int = 13,
    int4: bool = False,
    dynamic_batch: bool = True,
) -> Path:
    """Export ``model`` (quantized with cimkit, or float) to ONNX at ``path``; returns the path.

    ``int4=True`` stores weight codes that fit 4 bits as ONNX ``INT4``/``UINT4`` (needs
    ``opset >= 21``; the graph is exported at 13 and converted).
    """
    try:
        import onnx
    except ImportError:  # pragma: no cover - extra not installed
        raise ConfigError("ONNX export needs the onnx extra: pip install 'cimkit[onnx]'") from None
    if opset < 13:
        raise ConfigError(f"opset: {opset} is too old for per-channel QDQ; allowed: >= 13")
    if int4 and opset < 21:
        raise ConfigError("int4: ONNX INT4/UINT4 types need opset >= 21")
    m = onnx_form(model)
    buf = io.BytesIO()
    axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (example_input.cpu(),), buf, dynamo=False, opset_version=min(opset, 17),
                          input_names=["input"], output_names=["output"], dynamic_axes=axes)  # fmt: skip
    proto = onnx.load_from_string(buf.getvalue())
    if opset > 17:
        from onnx import version_converter

        proto = version_converter.convert_version(proto, opset)
    if int4:
        proto = _to_int4(proto)
    onnx.checker.check_model(proto)
    return Path(atomic_write_bytes(path, proto.SerializeToString()))


def _to_int4(proto: Any) -> Any:
    """Retype weight codes (and their zero points) that fit 4 bits to ``INT4``/``UINT4``.

    Activations keep int8/uint8 + Clip: onnxruntime's graph optimizer (1.2x) moves
    QuantizeLinear/DequantizeLinear pairs across MaxPool and rejects INT4 tensors there."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    # the exporter shares equal constants through Identity nodes: give each user its own copy first
    inits0 = {t.name: t for t in proto.graph.initializer}
    for node in list(proto.graph.node):
        if node.op_type == "Identity" and node.input[0] in inits0:
            t = onnx.TensorProto()
            t.CopyFrom(inits0[node.input[0]])
            t.name = node.output[0]
            proto.graph.initializer.append(t)
            proto.graph.node.remove(node)
    inits = {t.name: t for t in proto.graph.initializer}
    consts = {n.output[0]: n for n in proto.graph.node if n.op_type == "Constant"}

    def values(name: str) -> np.ndarray | None:
        if name in inits:
            return numpy_helper.to_array(inits[name])
        if name in consts:
            return numpy_helper.to_array(consts[name].attribute[0].t)
        return None

    def retype(name: str, arr: np.ndarray, dt: int) -> None:
        t = helper.make_tensor(name, dt, arr.shape, arr.reshape(-1).astype(np.int32).tolist())
        if name in inits:
            inits[name].CopyFrom(t)
        else:
            consts[name].attribute[0].t.CopyFrom(t)

    done: set[str] = set()
    for node in proto.graph.node:
        if node.op_type != "DequantizeLinear" or len(node.input) < 3:
            continue
        codes, zp = values(node.input[0]), values(node.input[2])
        if codes is None or zp is None or not codes.size:
            continue  # an activation (its codes are computed, not stored)
        signed = zp.dtype == np.int8
        lo, hi = (-8, 7) if signed else (0, 15)
        if int(codes.min()) < lo or int(codes.max()) > hi:
            continue  # codes wider than 4 bits
        for name, arr in ((node.input[0], codes), (node.input[2], zp)):
            if name not in done:
                retype(name, arr, TensorProto.INT4 if signed else TensorProto.UINT4)
                done.add(name)
    del proto.graph.value_info[:]  # stale intermediate types (uint8 -> uint4); ORT infers them again
    log.debug("int4 rewrite: %d tensors retyped", len(done))
    return proto


# Integer kernels of onnxruntime's optimized graphs: op type -> (activation zero point, weight)
# input positions (ONNX / com.microsoft operator schemas).
_INTEGER_OPS: dict[str, tuple[int, int]] = {
    "QLinearConv": (2, 3), "QLinearMatMul": (2, 3), "QGemm": (2, 3),
    "ConvInteger": (2, 1), "MatMulInteger": (2, 1), "MatMulIntegerToFloat": (4, 1),
}  # fmt: skip
_CPU_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_features() -> dict[str, Any]:
    """The x86 features that select onnxruntime's integer kernels, from ``/proc/cpuinfo``
    (empty flags where it is absent, e.g. macOS/Windows), and ``platform.machine()``."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {"machine": platform.machine(), **{f: f in flags for f in _CPU_FLAGS}}


def integer_kernels(proto: Any) -> list[dict[str, Any]]:
    """The integer kernels of an (optimized) ONNX graph: op type, activation and weight types (``?``
    when not a stored initializer) and the largest |weight code| of int8 weights (else ``None``).

    ``saturates`` flags a kernel that can give CPU-dependent results: uint8/int8 activations times
    int8 weight codes beyond ``±U8S8_SAFE_ABS_CODE`` (see the module docstring)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    inits = {t.name: t for t in proto.graph.initializer}

    def dtype(t: Any) -> str:
        return "?" if t is None else helper.tensor_dtype_to_np_dtype(t.data_type).name

    out = []
    for node in proto.graph.node:
        if node.op_type not in _INTEGER_OPS:
            continue
        a_zp, w = (inits.get(node.input[i]) if i < len(node.input) else None for i in _INTEGER_OPS[node.op_type])
        w_abs = None
        if w is not None and w.data_type == TensorProto.INT8:
            w_abs = int(np.abs(numpy_helper.to_array(w).astype(np.int32)).max(initial=0))
        out.append({"op": node.op_type, "activation": dtype(a_zp), "weight": dtype(w), "max_abs_weight_code": w_abs,
                    "saturates": w_abs is not None and w_abs > U8S8_SAFE_ABS_CODE})  # fmt: skip
    return out


def check_onnx(model: nn.Module, path: str | Path, x: Tensor, *, threads: int = 1) -> dict[str, Any]:
    """Run ``path`` with onnxruntime on ``x`` and compare with ``model(x)``.

    Two sessions: ``reference`` (graph optimizations off: ORT evaluates the QDQ graph as written;
    most outputs match PyTorch exactly, but a value within float rounding of a rounding boundary
    can take the neighbouring code, since ORT and PyTorch accumulate convolutions in different
    orders) and ``optimized`` (ORT's default: QDQ pairs are fused into integer kernels such as
    QLinearConv, which round intermediate results to the next layer's grid). Either way outputs
    agree to within about one quantization step. Returns ``max_abs_diff`` (optimized),
    ``max_abs_diff_reference``, ``median_abs_diff_reference``, ``max_abs_ref``,
    ``argmax_agreement`` and what ran: ``kernels`` (op type -> count in the optimized graph ORT
    executed), ``integer_kernels`` (:func:`integer_kernels` of that graph), ``saturation_free``
    (no integer kernel whose result depends on the CPU's instruction set) and ``cpu`` (
    :func:`cpu_features`: avx2 / avx512_vnni / avx_vnni ... of this machine). ``threads``:
    onnxruntime's intra-op threads (default 1, so the result does not depend on the core count).
    """
    import onnx
    import onnxruntime as ort

    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads: {threads!r} is not allowed; allowed: an integer >= 1")
    with torch.no_grad():
        ref = model.eval()(x).detach().cpu().float()
    outs = {}
    with tempfile.TemporaryDirectory() as tmp:
        opt_path = Path(tmp) / "optimized.onnx"
        for key, level in (("optimized", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
                           ("reference", ort.GraphOptimizationLevel.ORT_DISABLE_ALL)):  # fmt: skip
            so = ort.SessionOptions()
            so.graph_optimization_level = level
            so.intra_op_num_threads = so.inter_op_num_threads = int(threads)
            if key == "optimized":
                so.optimized_model_filepath = str(opt_path)
                so.log_severity_level = 3  # ORT warns that NCHWc-optimized graphs are CPU specific
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            outs[key] = torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.cpu().numpy()})[0])
        opt = onnx.load(str(opt_path))
    kernels = dict(Counter(n.op_type for n in opt.graph.node))
    ints = integer_kernels(opt)
    log.info("onnxruntime kernels: %s; integer kernels: %s", kernels, ints)
    got = outs["optimized"]
    agree = (got.argmax(-1) == ref.argmax(-1)).float().mean() if ref.dim() > 1 else torch.tensor(1.0)
    return {
        "max_abs_diff": float((got - ref).abs().max()),
        "max_abs_diff_reference": float((outs["reference"] - ref).abs().max()),
        "median_abs_diff_reference": float((outs["reference"] - ref).abs().median()),
        "max_abs_ref": float(ref.abs().max()),
        "argmax_agreement": float(agree),
        "kernels": kernels,
        "integer_kernels": ints,
        "saturation_free": not any(k["saturates"] for k in ints),
        "cpu": cpu_features(),
    }
