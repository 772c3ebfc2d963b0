"""The decode step's memory roofline: bytes one token must read / the bandwidth this machine attains.

A decode step is a chain of matrix-vector products: every weight it uses is read once per token and
used for two flops per byte (fp32) or fewer, so its floor is memory, not arithmetic.

- `measure_bandwidth()`: two figures. `gemv`: the read bandwidth of a large fp32 matrix-vector
  product in numpy's BLAS (all its threads), the access pattern of a decode step and the figure
  the roofline uses; `copy`: a single-threaded numpy copy, read + write bytes counted (lower).
- `decode_traffic(bundle, manifest)`: the bytes one decode token reads: the weights it uses
  (for the `gather` MoE form and ONNX Runtime's MoE/QMoE operators only top_k of num_experts
  expert weights, the others are never touched; the `dense` form reads every expert) plus the whole static KV cache (attention reads
  every slot, masked). From the graph's initializers when `onnx` imports (the export extra);
  otherwise the files' sizes, an upper bound.
The compute-bound stages (vision, prefill, action head) have their compute roofline in
`calibration.compute_roofline` (FLOPs / the measured GEMM rate); `chatvla2 bench` reports both.
No torch here: `chatvla2 bench` runs on the robot's install.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from chatvla2.contract.bundle import bundle_model_config


def measure_bandwidth(megabytes: int = 256, repeats: int = 5) -> dict[str, float]:
    """GB/s: {"gemv": BLAS matrix-vector read bandwidth, "copy": numpy copy (read + write)}."""
    rows = 4096
    matrix = np.ones((rows, (megabytes << 20) // (4 * rows)), dtype=np.float32)
    vector = np.ones(matrix.shape[1], dtype=np.float32)
    gemv = _best_time(lambda: matrix @ vector, repeats)
    src = matrix.reshape(-1)
    dst = np.empty_like(src)
    copy = _best_time(lambda: np.copyto(dst, src), repeats)
    return {"gemv": round(matrix.nbytes / gemv / 1e9, 2), "copy": round(2 * src.nbytes / copy / 1e9, 2)}


def _best_time(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def decode_traffic(bundle: Path, manifest: dict) -> dict:
    from chatvla2.calibration.graph_count import opt_shapes

    entry = manifest["engines"]["decode"]
    # The whole static cache: key_cache and value_cache, or one input per layer (the cpu target's
    # shared language graph, its slots bound by the decode entry's profile).
    shapes = opt_shapes(entry)
    cache_bytes = sum(int(np.prod(shapes[t["name"]])) * np.dtype(t["dtype"]).itemsize
                      for t in entry["inputs"] if t["name"].startswith(("key_cache", "value_cache")))
    files = [entry["file"], *entry.get("data_files", [])]
    file_bytes = sum((bundle / f).stat().st_size for f in files)
    moe = bundle_model_config(bundle, manifest).language.moe
    try:
        weights, counted = _weight_bytes_read(bundle / entry["file"], moe.num_experts, moe.top_k), "graph"
    except ImportError:
        weights, counted = file_bytes, "file size (upper bound: onnx not installed)"
    return {"weight_bytes": weights, "cache_bytes": cache_bytes, "total_bytes": weights + cache_bytes,
            "file_bytes": file_bytes, "counted_from": counted,
            "moe_form": manifest.get("moe_implementation", {}).get("decode"), "precision": entry.get("precision")}


# bits per element of ONNX tensor types a decode graph stores weights in
_BITS = {1: 32, 2: 8, 3: 8, 6: 32, 7: 64, 9: 8, 10: 16, 11: 64, 16: 16, 17: 8, 18: 8, 19: 8, 20: 8, 21: 4, 22: 4}


def _weight_bytes_read(path: Path, num_experts: int, top_k: int) -> int:
    """Initializer bytes one token reads. An expert stack (first dim num_experts) that reaches a
    Gather/GatherND as its data input, directly or through DequantizeLinear, or is an expert input
    of a com.microsoft MoE/QMoE node (weights, scales, biases: the `cpu` target), is read top_k /
    num_experts; any other initializer in full (embedding tables are also the tied output head)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, i))

    def gathered_only(name: str) -> bool:
        uses = consumers.get(name, [])
        if not uses:
            return False
        for node, index in uses:
            if node.op_type in ("Gather", "GatherND") and index == 0:
                continue
            if node.op_type in ("MoE", "QMoE") and node.domain == "com.microsoft" and index >= 2:
                continue  # ONNX Runtime's MoE operators read the routed experts' weights in place
            if node.op_type == "DequantizeLinear" and index == 0 and all(gathered_only(o) for o in node.output):
                continue
            return False
        return True

    total = 0.0
    for tensor in model.graph.initializer:
        size = int(np.prod(tensor.dims)) * _BITS.get(tensor.data_type, 32) / 8
        if tensor.dims and tensor.dims[0] == num_experts and gathered_only(tensor.name):
            size *= top_k / num_experts
        total += size
    return int(total)
