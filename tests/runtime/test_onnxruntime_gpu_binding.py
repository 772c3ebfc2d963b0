"""ONNX Runtime with the KV cache kept on the execution provider's device (`OnnxRuntimeDeviceLanguage`).

No GPU and no onnxruntime-gpu here: the device path runs with CPU OrtValues (`cache_device="cpu"`),
which goes through the same allocation, I/O binding and strided cache write as on CUDA, with a host
row copy standing in for cudaMemcpy2DAsync. It must give the host path's numbers exactly. The CUDA
copy itself is checked against a recording stand-in for cuda-python's runtime module."""

from __future__ import annotations

import types

import numpy as np
import pytest

import chatvla2.runtime.onnxruntime_engine as ort_engine
from chatvla2.runtime.onnxruntime_engine import OnnxRuntimeDeviceLanguage, OnnxRuntimeLanguage


def _prompt(policy, text="go"):
    ids, positions = policy.prompt(text)
    embeddings = np.ascontiguousarray(policy.token_embedding[np.asarray(ids)][None])
    return embeddings, np.ascontiguousarray(positions[:, None, :]), len(ids)


def test_device_cache_path_matches_the_host_path_exactly(policy):
    prefill, decode = policy.engines["prefill"], policy.engines["decode"]
    host = OnnxRuntimeLanguage(prefill, decode)
    device = OnnxRuntimeLanguage(prefill, decode, cache_device="cpu")
    assert type(host) is OnnxRuntimeLanguage and type(device) is OnnxRuntimeDeviceLanguage
    embeddings, positions, n = _prompt(policy)
    pointers = {name: value.data_ptr() for name, value in device.device_cache.cache.items()}

    for a, b in zip(host.prefill(embeddings, positions), device.prefill(embeddings, positions)):
        np.testing.assert_array_equal(a, b)
    token = 5
    for i in range(6):
        (host_logits, host_hidden), (dev_logits, dev_hidden) = (s.step(token, n + i, n + i) for s in (host, device))
        np.testing.assert_array_equal(host_logits, dev_logits)
        np.testing.assert_array_equal(host_hidden, dev_hidden)
        token = int(np.argmax(host_logits))
    caches = device.cache_arrays()
    np.testing.assert_array_equal(caches["key_cache"], host.key_cache)
    np.testing.assert_array_equal(caches["value_cache"], host.value_cache)
    assert np.any(caches["key_cache"][:, :, :, n + 5] != 0) and not np.any(caches["key_cache"][:, :, :, n + 6:] != 0)
    # allocated once, written in place by prefill and by every step
    assert {name: value.data_ptr() for name, value in device.device_cache.cache.items()} == pointers


def test_cpu_provider_keeps_the_host_path(policy):
    language = OnnxRuntimeLanguage(policy.engines["prefill"], policy.engines["decode"])
    assert policy.engines["decode"].provider == "CPUExecutionProvider"
    assert type(language) is OnnxRuntimeLanguage and not hasattr(language, "device_cache")


@pytest.mark.parametrize("provider", ["CUDAExecutionProvider", "TensorrtExecutionProvider"])
def test_gpu_providers_put_the_cache_on_cuda(policy, monkeypatch, provider):
    devices = []

    class Stop(Exception):
        pass

    def device_cache(shape, dtype, device):
        devices.append(device)
        raise Stop

    monkeypatch.setattr(ort_engine, "DeviceCache", device_cache)
    decode = types.SimpleNamespace(spec=policy.engines["decode"].spec, provider=provider)
    with pytest.raises(Stop):
        OnnxRuntimeLanguage(policy.engines["prefill"], decode)
    assert devices == ["cuda"]


def test_cuda_cache_write_is_one_strided_device_copy_per_cache(monkeypatch):
    """Against a recording stand-in for cuda-python's runtime module (not CUDA)."""
    calls = []
    fake = types.SimpleNamespace(
        cudaMemcpyKind=types.SimpleNamespace(cudaMemcpyDeviceToDevice=3),
        cudaMemcpy2DAsync=lambda *args: calls.append(("copy2d", *args)) or (0,),
        cudaStreamSynchronize=lambda stream: calls.append(("sync", stream)) or (0,),
    )
    monkeypatch.setattr(ort_engine, "import_cudart", lambda: fake)
    # CPU OrtValues stand in for device memory; only the addresses are used by the CUDA copy
    cache = ort_engine.DeviceCache((2, 1, 3, 10, 4), np.dtype(np.float32), "cpu")
    cache.copy2d = ort_engine._cuda_copy2d(fake)
    cache.write(7)
    row, pitch, rows = 4 * 4, 10 * 4 * 4, 2 * 3
    assert calls == [
        ("copy2d", cache.cache["key_cache"].data_ptr() + 7 * row, pitch, cache.new["new_keys"].data_ptr(), row, row, rows, 3, 0), ("sync", 0),
        ("copy2d", cache.cache["value_cache"].data_ptr() + 7 * row, pitch, cache.new["new_values"].data_ptr(), row, row, rows, 3, 0), ("sync", 0),
    ]
