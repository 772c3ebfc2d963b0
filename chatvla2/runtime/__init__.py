"""The on-robot runtime (no torch): a bundle's engines behind one `Engine` contract (ONNX Runtime,
TensorRT), the `Policy` that composes them, action safety, the 50 Hz control loop with its
telemetry, and `chatvla2 run` (`run.py`). Imports only `contract/` and `drivers/`.
"""
