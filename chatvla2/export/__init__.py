"""Trained PyTorch modules -> verified ONNX bundles -> TensorRT engines.

`chatvla2 export` traces the four engines (`onnx_export.py`, `graphs.py`), converts them to the
planned precision (`precision.py`: fp16, int8/fp8 Q/DQ, int4 AWQ), checks parity against PyTorch
(`parity.py`, budgets in `thresholds.py`) and TensorRT 10.3's parser rules (`lint.py`), and writes
the bundle (`bundle.py`, format in `contract/bundle.py`); `chatvla2 build` makes TensorRT engines
(`tensorrt_build.py`). `torch_engine.py` runs the same modules behind the runtime's `Engine`
contract (the eager reference and calibration capture go through the runtime's `Policy`).
"""
