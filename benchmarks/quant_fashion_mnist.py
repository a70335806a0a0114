"""Quantization benchmark on Fashion-MNIST: ``benchmarks/quant_mnist.py --dataset fashion-mnist``.

    python benchmarks/quant_fashion_mnist.py [--quick] [--out FILE] [--threads 1]

Writes ``benchmarks/results/quant_fashion_mnist.json`` (``--quick``: ``quant_fashion_mnist.quick.json``).
"""

from __future__ import annotations

import sys

from quant_mnist import main

if __name__ == "__main__":
    sys.exit(main(default_dataset="fashion-mnist"))
