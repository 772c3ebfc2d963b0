"""`export.tensorrt_build`: what can be checked without TensorRT here, and a real build where it exists."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from chatvla2.contract.bundle import BundleError, write_manifest
from chatvla2.export.build_config import BuildConfig
from chatvla2.export.lint import LintError
from chatvla2.export.tensorrt_build import main, profiles_for
from chatvla2.runtime.tensorrt_identity import EngineMismatch, GpuIdentity, TensorRTUnavailable, check_engines_match

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None

ENGINE = {
    "file": "decode.onnx",
    "inputs": [
        {"name": "x", "shape": [1, "seq", 4], "dtype": "float32"},
        {"name": "w_static", "shape": [4, 4], "dtype": "float32"},
    ],
    "profiles": {"x": {"min": [1, 1, 4], "opt": [1, 16, 4], "max": [1, 64, 4]}},
}


def write_bundle(root: Path, unique: bool = False) -> Path:
    """decode.onnx: y = softmax(x @ w + b) over a dynamic sequence, with a manifest profile for it."""
    bundle = root / "bundle"
    bundle.mkdir(parents=True)
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    b = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="matmul"),
        helper.make_node("Add", ["h", "b"], ["z"], name="add"),
        helper.make_node("Unique" if unique else "Softmax", ["z"], ["y"], name="last", **({} if unique else {"axis": -1})),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "seq", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None if unique else [1, "seq", 4])
    model = helper.make_model(helper.make_graph(nodes, "decode", [x], [y], [w, b]), opset_imports=[helper.make_opsetid("", 20)])
    onnx.save(model, str(bundle / "decode.onnx"))
    engine = {**ENGINE, "inputs": ENGINE["inputs"][:1], "outputs": [{"name": "y", "shape": [1, "seq", 4], "dtype": "float32"}]}
    write_manifest(bundle, {"model_config": {"name": "test"}, "engines": {"decode": engine}})
    return bundle


def args_for(bundle: Path, out: Path, **extra) -> BuildConfig:
    return BuildConfig(bundle=str(bundle), out=str(out), workspace=extra.get("workspace", 1.0), timing_cache=extra.get("timing_cache"))


# --- profiles -------------------------------------------------------------------------------


def test_profiles_cover_dynamic_inputs_only():
    assert profiles_for(ENGINE) == {"x": ((1, 1, 4), (1, 16, 4), (1, 64, 4))}


def test_dynamic_input_without_profile_is_refused():
    with pytest.raises(BundleError, match="'x'.*no optimization profile"):
        profiles_for({**ENGINE, "profiles": {}})


@pytest.mark.parametrize(
    "profile, message",
    [
        ({"min": [1, 8, 4], "opt": [1, 4, 4], "max": [1, 64, 4]}, "min <= opt <= max"),
        ({"min": [1, 1], "opt": [1, 16], "max": [1, 64]}, "rank"),
        ({"min": [1, 1, 8], "opt": [1, 16, 8], "max": [1, 64, 8]}, "static"),
        ({"min": [1, 1, 4], "max": [1, 64, 4]}, "'opt'"),
    ],
)
def test_malformed_profiles_are_refused(profile, message):
    with pytest.raises(BundleError, match=message):
        profiles_for({**ENGINE, "profiles": {"x": profile}})


def test_profile_for_unknown_input_is_refused():
    with pytest.raises(BundleError, match="unknown inputs: nope"):
        profiles_for({**ENGINE, "profiles": {**ENGINE["profiles"], "nope": ENGINE["profiles"]["x"]}})


# --- engine identity ------------------------------------------------------------------------


def test_check_engines_match():
    """SM and TensorRT version decide (more cases in tests/runtime/test_tensorrt_bookkeeping.py)."""
    record = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7", "engines": {}}
    check_engines_match(record, "10.3.0", "Orin", "8.7")
    check_engines_match(record, "10.3.0", "NVIDIA Jetson AGX Orin", "8.7")  # the name is recorded, not compared
    with pytest.raises(EngineMismatch, match=r"engines built for SM 8.7 \(Orin\), this GPU is SM 11.0 \(Thor\): rebuild with chatvla2 build"):
        check_engines_match(record, "10.3.0", "Thor", "11.0")
    with pytest.raises(EngineMismatch, match="TensorRT 10.3.0, this is TensorRT 11.4.1"):
        check_engines_match(record, "11.4.1", "Orin", "8.7")


# --- without TensorRT -----------------------------------------------------------------------


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed here: the missing-TensorRT path cannot be shown")
def test_without_tensorrt_a_valid_bundle_names_the_install_route(tmp_path):
    bundle = write_bundle(tmp_path)
    with pytest.raises(TensorRTUnavailable) as info:
        main(args_for(bundle, tmp_path / "engines"))
    message = str(info.value)
    assert message.startswith("the tensorrt Python module is missing")
    assert "python3-libnvinfer" in message and "--system-site-packages" in message and "/usr/lib/python3/dist-packages" in message
    assert isinstance(info.value, OSError) and "\n" not in str(info.value)
    assert not (tmp_path / "engines").exists()


def test_tampered_bundle_is_reported_before_tensorrt(tmp_path):
    bundle = write_bundle(tmp_path)
    data = bytearray((bundle / "decode.onnx").read_bytes())
    data[-3] ^= 0xFF
    (bundle / "decode.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="decode.onnx does not match the manifest"):
        main(args_for(bundle, tmp_path / "engines"))


def test_unbuildable_graph_is_reported_before_tensorrt(tmp_path):
    bundle = write_bundle(tmp_path, unique=True)
    with pytest.raises(LintError, match=r"decode: last \(Unique\)"):
        main(args_for(bundle, tmp_path / "engines"))


def test_missing_profile_is_reported_before_tensorrt(tmp_path):
    bundle = write_bundle(tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["engines"]["decode"]["profiles"] = {}
    write_manifest(bundle, manifest)
    with pytest.raises(BundleError, match="engine 'decode'.*'x'.*no optimization profile"):
        main(args_for(bundle, tmp_path / "engines"))


def test_foreign_output_directory_is_not_replaced(tmp_path):
    bundle = write_bundle(tmp_path)
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not an engines directory"):
        main(args_for(bundle, out))
    assert (out / "notes.txt").read_text() == "keep me"


def _cli_has(command: str) -> bool:
    from chatvla2.cli import COMMANDS

    return command in COMMANDS


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed here: the missing-TensorRT path cannot be shown")
@pytest.mark.skipif(not _cli_has("build"), reason="`chatvla2 build` is not registered in chatvla2/cli.py yet")
def test_cli_without_tensorrt_prints_one_line(tmp_path):
    bundle = write_bundle(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "chatvla2", "build", str(bundle), "--out", str(tmp_path / "engines")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("chatvla2 build: error: the tensorrt Python module is missing") and "--system-site-packages" in line


# --- with TensorRT (a Jetson or a GPU workstation) ------------------------------------------


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_builds_a_tiny_bundle(tmp_path):
    trt = pytest.importorskip("tensorrt", reason="needs the tensorrt Python package (JetPack or pip)")
    bundle = write_bundle(tmp_path)
    out, cache = tmp_path / "engines", tmp_path / "timing.cache"
    assert main(args_for(bundle, out, timing_cache=str(cache))) == 0

    record = json.loads((out / "engines.json").read_text())
    assert record["tensorrt_version"] == trt.__version__
    assert set(record["engines"]) == {"decode"}
    entry = record["engines"]["decode"]
    assert entry["source_sha256"] == json.loads((bundle / "manifest.json").read_text())["files"]["decode.onnx"]
    assert (out / entry["file"]).stat().st_size > 0 and cache.stat().st_size > 0
    check_engines_match(record, trt.__version__, record["gpu_name"], record["compute_capability"])

    # The engine takes every sequence length its profile allows.
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine((out / entry["file"]).read_bytes())
    context = engine.create_execution_context()
    for seq in (1, 64):
        assert context.set_input_shape("x", (1, seq, 4))

    # A rebuild reuses the timing cache and swaps the directory whole.
    assert main(args_for(bundle, out, timing_cache=str(cache))) == 0
    assert sorted(p.name for p in out.iterdir()) == ["decode.engine", "engines.json"]


# --- the build sequence against a stand-in `tensorrt` (only the documented calls) -----------


class FakeTensorRT:
    """Records the calls `build_engines` makes; each method is one from docs/reference/deploy.md's list."""

    __version__ = "10.3.0"

    def __init__(self, parse_ok=True, build_ok=True, cache_ok=True):
        self.calls: list[tuple] = []
        fake = self

        class Logger:
            WARNING = 2

            def __init__(self, severity):
                pass

        class Flag:
            STRONGLY_TYPED = 0

        class BuilderFlag:
            TF32 = 7

        class MemoryPoolType:
            WORKSPACE = 0

        class Input:
            def __init__(self, name, shape):
                self.name, self.shape = name, shape

        class Network:
            num_inputs = 1

            def get_input(self, i):
                return Input("x", (1, -1, 4))

        class Error:
            def node(self):
                return 2

            def node_name(self):
                return "last"

            def node_operator(self):
                return "Unique"

            def desc(self):
                return "no importer"

        class OnnxParser:
            num_errors = 0 if parse_ok else 1

            def __init__(self, network, logger):
                pass

            def parse_from_file(self, path):
                fake.calls.append(("parse_from_file", Path(path).name))
                return parse_ok

            def get_error(self, i):
                return Error()

        class Cache:
            def serialize(self):
                return b"cache-bytes"

        class Profile:
            def set_shape(self, name, low, opt, high):
                fake.calls.append(("set_shape", name, low, opt, high))

        class Config:
            def set_memory_pool_limit(self, pool, size):
                fake.calls.append(("workspace", size))

            def create_timing_cache(self, data):
                fake.calls.append(("create_timing_cache", bytes(data)))
                return fake.cache

            def set_timing_cache(self, cache, ignore_mismatch):
                fake.calls.append(("set_timing_cache", cache is fake.cache, ignore_mismatch))
                return cache_ok

            def clear_flag(self, flag):
                fake.calls.append(("clear_flag", flag))

            def add_optimization_profile(self, profile):
                fake.calls.append(("add_optimization_profile",))

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                fake.calls.append(("create_network", flags))
                return Network()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                return b"engine-bytes" if build_ok else None

        self.cache = Cache()
        self.Logger, self.NetworkDefinitionCreationFlag, self.MemoryPoolType = Logger, Flag, MemoryPoolType
        self.OnnxParser, self.Builder, self.BuilderFlag = OnnxParser, Builder, BuilderFlag


@pytest.fixture
def fake_trt(monkeypatch):
    def install(**kwargs):
        fake = FakeTensorRT(**kwargs)
        monkeypatch.setitem(sys.modules, "tensorrt", fake)
        monkeypatch.setattr("chatvla2.export.tensorrt_build.gpu_identity", lambda: GpuIdentity("Orin", "8.7", "12.6", "12.6"))
        return fake

    return install


def test_build_sequence_with_a_stand_in_tensorrt(tmp_path, fake_trt):
    fake = fake_trt()
    bundle, out, cache = write_bundle(tmp_path), tmp_path / "engines", tmp_path / "timing.cache"
    cache.write_bytes(b"old-cache")
    assert main(args_for(bundle, out, workspace=0.5, timing_cache=str(cache))) == 0
    assert fake.calls == [
        ("create_timing_cache", b"old-cache"),
        ("create_network", 1 << 0),
        ("parse_from_file", "decode.onnx"),
        ("workspace", 1 << 29),
        ("set_timing_cache", True, False),
        ("clear_flag", 7),  # TF32
        ("set_shape", "x", (1, 1, 4), (1, 16, 4), (1, 64, 4)),
        ("add_optimization_profile",),
    ]
    record = json.loads((out / "engines.json").read_text())
    assert (record["tensorrt_version"], record["gpu_name"], record["compute_capability"]) == ("10.3.0", "Orin", "8.7")
    assert (record["driver_cuda"], record["cuda_python_runtime"], record["hardware_compatibility"]) == ("12.6", "12.6", "none")
    assert record["engines"]["decode"]["tf32"] is False and "fp32" in record["tf32_reason"]
    assert (out / "decode.engine").read_bytes() == b"engine-bytes"
    assert cache.read_bytes() == b"cache-bytes"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind


def test_parser_errors_are_listed_and_nothing_is_written(tmp_path, fake_trt):
    fake_trt(parse_ok=False)
    bundle, out = write_bundle(tmp_path), tmp_path / "engines"
    with pytest.raises(ValueError, match=r"node 2 'last' \(Unique\): no importer"):
        main(args_for(bundle, out))
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_failed_build_keeps_the_previous_engines(tmp_path, fake_trt):
    fake_trt()
    bundle, out = write_bundle(tmp_path), tmp_path / "engines"
    main(args_for(bundle, out))
    before = (out / "engines.json").read_text()
    fake_trt(build_ok=False)
    with pytest.raises(ValueError, match="could not build"):
        main(args_for(bundle, out))
    assert (out / "engines.json").read_text() == before


def test_a_refused_timing_cache_is_one_line(tmp_path, fake_trt):
    fake_trt(cache_ok=False)
    bundle, out, cache = write_bundle(tmp_path), tmp_path / "engines", tmp_path / "timing.cache"
    cache.write_bytes(b"from-another-gpu")
    with pytest.raises(ValueError, match="decode.onnx: TensorRT refused the timing cache") as info:
        main(args_for(bundle, out, timing_cache=str(cache)))
    assert "\n" not in str(info.value) and not out.exists()


def test_lint_runs_for_the_installed_tensorrt(tmp_path, fake_trt, monkeypatch):
    fake = fake_trt()
    fake.__version__ = "11.1.0"
    seen = []

    def lint_bundle(bundle, manifest, tensorrt_version=None):
        seen.append(tensorrt_version)
        return {}

    monkeypatch.setattr("chatvla2.export.tensorrt_build.lint_bundle", lint_bundle)
    assert main(args_for(write_bundle(tmp_path), tmp_path / "engines")) == 0
    assert seen == ["11.1.0"]
