"""Per-stage timings of the runtime policy (ONNX Runtime / TensorRT) against the PyTorch eager
reference, and the decode roofline; `chatvla2 bench` runs the same code. Prints a table, then one
JSON line.

    .venv/bin/python benchmarks/policy_bench.py /tmp/rt/tiny --reference
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from runtime.cli import main_bench  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_bench())
