"""Check the TensorRT backend's CUDA side on a GPU machine that has cuda-python but no TensorRT.

    python benchmarks/cuda_identity_check.py [--bytes N]

With the same helpers the backend uses (`runtime.tensorrt_identity`, `runtime.tensorrt_engine`,
neither of which imports tensorrt): reads the GPU identity `chatvla2 build` records, allocates and
frees a buffer, creates and destroys a stream, does the KV cache's strided device-to-device copy
(cudaMemcpy2DAsync at a row offset, as `TensorRTLanguage.step` does) and captures a trivial
memset into a CUDA graph by the backend's `capture_graph`, launches it and reads the bytes back.
Prints what it found, then one JSON line last; exit 0 when every step worked.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import numpy as np

from chatvla2.runtime.tensorrt_engine import capture_graph, d2h  # no tensorrt import
from chatvla2.runtime.tensorrt_identity import check_cuda, gpu_identity, import_cudart


def strided_copy(cudart, stream, rows: int = 4, row_bytes: int = 64, slots: int = 8, slot: int = 5) -> str:
    """The cache write of a decode step: `rows` rows of `row_bytes` into slot `slot` of `slots`."""
    pitch = slots * row_bytes
    src = check_cuda(cudart.cudaMalloc(rows * row_bytes), "cudaMalloc")
    dst = check_cuda(cudart.cudaMalloc(rows * pitch), "cudaMalloc")
    try:
        check_cuda(cudart.cudaMemsetAsync(src, 9, rows * row_bytes, stream), "cudaMemsetAsync")
        check_cuda(cudart.cudaMemsetAsync(dst, 0, rows * pitch, stream), "cudaMemsetAsync")
        kind = cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        check_cuda(cudart.cudaMemcpy2DAsync(dst + slot * row_bytes, pitch, src, row_bytes, row_bytes, rows, kind, stream), "cudaMemcpy2DAsync")
        host = np.empty((rows, slots, row_bytes), np.uint8)
        d2h(cudart, host, dst, stream)
        check_cuda(cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
    finally:
        cudart.cudaFree(dst)
        cudart.cudaFree(src)
    expected = np.zeros_like(host)
    expected[:, slot] = 9
    return "ok" if (host == expected).all() else "wrong bytes"


def graph_memset(cudart, stream, size: int) -> str:
    pointer = check_cuda(cudart.cudaMalloc(size), "cudaMalloc")
    try:
        captured = capture_graph(cudart, stream, lambda: int(cudart.cudaMemsetAsync(pointer, 7, size, stream)[0]) == 0)
        if captured is None:
            return "failed (the backend falls back to plain enqueues)"
        graph, graph_exec = captured
        try:
            check_cuda(cudart.cudaMemsetAsync(pointer, 0, size, stream), "cudaMemsetAsync")  # the launch must set it again
            check_cuda(cudart.cudaGraphLaunch(graph_exec, stream), "cudaGraphLaunch")
            host = np.empty(size, np.uint8)
            d2h(cudart, host, pointer, stream)
            check_cuda(cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        finally:
            cudart.cudaGraphExecDestroy(graph_exec)
            cudart.cudaGraphDestroy(graph)
        return "ok" if (host == 7).all() else "wrong bytes"
    finally:
        cudart.cudaFree(pointer)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bytes", type=int, default=1 << 20, help="size of the graph-captured memset")
    args = parser.parse_args(argv)
    result: dict = {"ok": False}
    try:
        cudart = import_cudart()
        result["cudart_module"] = getattr(cudart, "__name__", type(cudart).__name__)
        gpu = gpu_identity(cudart)
        result["gpu"] = dataclasses.asdict(gpu)
        print(f"GPU 0: {gpu.name}, SM {gpu.compute_capability}; driver CUDA {gpu.driver_cuda}, "
              f"cuda-python runtime {gpu.runtime_cuda} ({result['cudart_module']})")
        stream = check_cuda(cudart.cudaStreamCreate(), "cudaStreamCreate")
        try:
            result["strided_copy"] = strided_copy(cudart, stream)
            print(f"strided device copy (the KV cache write): {result['strided_copy']}")
            result["graph_capture"] = graph_memset(cudart, stream, args.bytes)
            print(f"CUDA graph capture of a {args.bytes}-byte memset: {result['graph_capture']}")
        finally:
            check_cuda(cudart.cudaStreamDestroy(stream), "cudaStreamDestroy")
        result["ok"] = result["strided_copy"] == result["graph_capture"] == "ok"
    except (OSError, RuntimeError) as exc:  # TensorRTUnavailable is an OSError
        result["error"] = str(exc)
        print(f"error: {exc}")
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
