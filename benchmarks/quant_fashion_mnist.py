"""Quantization benchmark on Fashion-MNIST: ``benchmarks/quant_mnist.py --dataset fashion-mnist``.

python benchmarks/quant_fashion_mnist.py [--quick] [--out FILE] [--threads 1]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quant_mnist import main

if __name__ == "__main__":
    sys.exit(main(default_dataset="fashion-mnist"))
