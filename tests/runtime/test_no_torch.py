"""The runtime imports and runs with torch unimportable (the robot has no torch)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
sys.modules["torch"] = None  # `import torch` now raises ImportError
import numpy as np
import importlib, pkgutil
import chatvla2.contract as contract, chatvla2.runtime as runtime
for package in (contract, runtime):  # every module of both, the TensorRT backend included
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
from chatvla2.runtime.policy import Policy
from chatvla2.runtime.camera import StaticCamera
policy = Policy.from_bundle(sys.argv[1], backend="auto")
out = policy.infer({"images": StaticCamera(2).read(), "instruction": "hi", "state": np.zeros(14, np.float32)})
assert out["action_chunk"].shape == (50, 14), out["action_chunk"].shape
ours_above = ("models", "export", "calibration", "evaluation", "training", "sim", "cli")
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("onnx", "torch")
                or (m.startswith("chatvla2.") and m.split(".")[1] in ours_above))
assert loaded == ["torch"], loaded   # the blocking sys.modules["torch"] = None entry alone
print("ok", policy.backend)
"""


def test_runtime_runs_without_torch(tiny_bundle):
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_bundle)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok onnxruntime"
