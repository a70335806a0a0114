"""Run ONNX models with onnxruntime's CPU provider and save their outputs (a helper process).

Imports only numpy and onnxruntime, so that it starts in seconds under an emulator
(``qemu-x86_64 -cpu Haswell-v4 python _ort_worker.py ...``: an AVX2 CPU without AVX-512/VNNI);
cimkit's tests compare the outputs with PyTorch on the host.

usage: python _ort_worker.py MODEL.onnx INPUT.npy OUTPUT.npy [MODEL INPUT OUTPUT ...]
Sessions use ORT's default (full) graph optimizations and one thread.
"""

from __future__ import annotations

import sys

import numpy as np
import onnxruntime as ort


def main(args: list[str]) -> None:
    if not args or len(args) % 3:
        raise SystemExit(__doc__)
    for model, inp, out in zip(args[0::3], args[1::3], args[2::3], strict=True):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        y = sess.run(None, {sess.get_inputs()[0].name: np.load(inp)})[0]
        np.save(out, y)


if __name__ == "__main__":
    main(sys.argv[1:])
