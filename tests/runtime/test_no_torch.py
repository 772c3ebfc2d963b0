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
import runtime, runtime.engine, runtime.language, runtime.onnxruntime_engine, runtime.onnxruntime_session
import runtime.tensorrt_engine, runtime.preprocess, runtime.prompt, runtime.normalization
import runtime.policy, runtime.safety, runtime.loop, runtime.robots, runtime.cli
from runtime.policy import Policy
from runtime.robots import StaticCamera
policy = Policy.from_bundle(sys.argv[1], backend="auto")
out = policy.infer({"images": StaticCamera(2).read(), "instruction": "hi", "state": np.zeros(14, np.float32)})
assert out["action_chunk"].shape == (50, 14), out["action_chunk"].shape
loaded = sorted(m for m in sys.modules if m == "models" or m.startswith("models.") or m == "onnx" or m.startswith("torch"))
assert loaded == ["torch"], loaded   # the blocking sys.modules["torch"] = None entry alone
print("ok", policy.backend)
"""


def test_runtime_runs_without_torch(tiny_bundle):
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_bundle)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok onnxruntime"
