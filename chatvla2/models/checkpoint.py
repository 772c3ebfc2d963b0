"""Checkpoints: a directory of plain files, loaded without unpickling anything.

    config.json          the ModelConfig
    model.safetensors    every weight
    tokenizer.json       the tokenizer (a Hugging Face tokenizer.json)
    normalization.json   actions min/max, state mean/std

Loading checks, before any weight is used: every file is there, the config parses, the
safetensors header is intact and every tensor's bytes lie inside the file (a truncated file names
the first tensor cut off), and every tensor matches the config's name, shape and dtype.
"""

from __future__ import annotations

import collections
import json
import struct
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from chatvla2.contract.bundle import NORMALIZATION_FILE, TOKENIZER_FILE
from chatvla2.contract.config import ModelConfig
from chatvla2.contract.errors import InvalidInput, MissingFile
from chatvla2.contract.normalization import NormalizationStats
from chatvla2.contract.staging import staged_directory
from chatvla2.contract.tokenizer import TextTokenizer
from chatvla2.models.vla import ChatVLA2

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CHECKPOINT_FILES = (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE, NORMALIZATION_FILE)
FORMAT_VERSION = 1

# safetensors dtype names (its header) <-> torch dtypes.
SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


class CheckpointError(InvalidInput):
    """A checkpoint that cannot be loaded; the message names the first offending file or tensor."""


def save_checkpoint(model: ChatVLA2, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write a checkpoint; it appears complete or not at all (written aside, then renamed). `dtype`
    (torch.bfloat16 or torch.float16): store the float weights at 16 bits (a shipped checkpoint's
    size); they load as float32 again, rounded."""
    if dtype not in (None, torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"checkpoint weights are stored as float32, bfloat16 or float16, not {dtype}")
    directory = Path(directory)
    if model.tokenizer is None or model.stats is None:
        raise ValueError("the model has no tokenizer or normalization statistics to save")
    with staged_directory(directory) as staging:
        config = {"format_version": FORMAT_VERSION, **model.cfg.to_dict()}
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
        tensors = {name: t.detach().contiguous().cpu() for name, t in model.state_dict().items()}
        if dtype is not None:
            tensors = {n: t.to(dtype) if t.dtype.is_floating_point else t for n, t in tensors.items()}
        save_file(tensors, str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
        model.tokenizer.save(staging / TOKENIZER_FILE)
        model.stats.save(staging / NORMALIZATION_FILE)
    return directory


def read_safetensors_header(path: Path) -> dict[str, dict]:
    """The tensor table of a safetensors file, checked against the file's size."""
    size = path.stat().st_size
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{path}: truncated before its header")
        (header_length,) = struct.unpack("<Q", prefix)
        if header_length > size - 8:
            raise CheckpointError(f"{path}: header length {header_length} exceeds the file ({size} bytes)")
        try:
            header = json.loads(f.read(header_length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(f"{path}: corrupt header (not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt header (a JSON {type(header).__name__}, expected an object)")
    header.pop("__metadata__", None)
    for name, entry in header.items():
        _check_header_entry(path, name, entry)
    data_size = size - 8 - header_length
    for name, entry in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
        begin, end = entry["data_offsets"]
        if end > data_size:
            raise CheckpointError(
                f"{path}: truncated: tensor {name!r} needs bytes up to {end}, the file holds {data_size}"
            )
    return header


def _check_header_entry(path: Path, name: str, entry) -> None:
    """One tensor's header entry: {"dtype": str, "shape": [int >= 0, ...], "data_offsets": [begin, end]}."""
    def corrupt(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: corrupt header: tensor {name!r} {what}")

    if not isinstance(entry, dict):
        raise corrupt(f"is a {type(entry).__name__}, expected an object")
    if not isinstance(entry.get("dtype"), str):
        raise corrupt("has no dtype")
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise corrupt(f"has no valid shape (got {shape!r})")
    offsets = entry.get("data_offsets")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets) or not 0 <= offsets[0] <= offsets[1]):
        raise corrupt(f"has no valid data_offsets (got {offsets!r})")


def read_json_object(path: Path, error: type[ValueError] = CheckpointError) -> dict:
    """A JSON file that must hold an object; errors (of type `error`) name the file."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def read_checkpoint_config(directory: str | Path) -> ModelConfig:
    """A checkpoint's config.json as a ModelConfig (no weights read); errors name the file."""
    path = Path(directory) / CONFIG_FILE
    if not Path(directory).is_dir():
        raise MissingFile(f"checkpoint directory not found: {directory}")
    if not path.is_file():
        raise MissingFile(f"checkpoint {directory}: missing {CONFIG_FILE}")
    config_data = read_json_object(path)
    version = config_data.pop("format_version", None)
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {version}, expected {FORMAT_VERSION}")
    try:
        return ModelConfig.from_dict(config_data)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


# Float weights may be stored in any of these (one for the whole file); they load as float32.
FLOAT_DTYPES = ("F32", "BF16", "F16")


def check_weights(weights_path: Path, header: dict[str, dict], expected: dict[str, torch.Tensor]) -> None:
    """Every tensor the model expects is in the header with its shape, no other tensor is, and the
    float weights share one float dtype (F32, BF16 or F16); errors name the first offender."""
    for name, tensor in expected.items():
        if name not in header:
            raise CheckpointError(f"{weights_path}: missing tensor {name!r}")
        if tuple(header[name]["shape"]) != tuple(tensor.shape):
            raise CheckpointError(
                f"{weights_path}: tensor {name!r} has shape {tuple(header[name]['shape'])}, "
                f"the config expects {tuple(tensor.shape)}"
            )
    # The checkpoint's float dtype is the one most of its float weights have; name any other.
    counts = collections.Counter(header[n]["dtype"] for n, t in expected.items() if t.dtype.is_floating_point)
    float_dtype = counts.most_common(1)[0][0] if counts else "F32"
    for name, tensor in expected.items():
        dtype = header[name]["dtype"]
        if tensor.dtype.is_floating_point and float_dtype in FLOAT_DTYPES:
            if dtype != float_dtype:
                raise CheckpointError(
                    f"{weights_path}: tensor {name!r} has dtype {dtype}, the checkpoint's other weights {float_dtype}"
                )
        elif SAFETENSORS_DTYPES.get(dtype) != tensor.dtype:
            raise CheckpointError(f"{weights_path}: tensor {name!r} has dtype {dtype}, the model expects {tensor.dtype}")
    unexpected = sorted(set(header) - set(expected))
    if unexpected:
        raise CheckpointError(f"{weights_path}: unexpected tensor {unexpected[0]!r}")


def weights_dtype(directory: str | Path) -> str:
    """The float dtype a checkpoint's weights are stored in ("F32", "BF16" or "F16"), from its header."""
    header = read_safetensors_header(Path(directory) / WEIGHTS_FILE)
    dtypes = {entry["dtype"] for entry in header.values() if entry["dtype"] in FLOAT_DTYPES}
    return dtypes.pop() if len(dtypes) == 1 else "F32"


def checkpoint_on_meta(directory: str | Path) -> ChatVLA2:
    """The checkpoint's model with shapes only (meta device), its weights' header checked against
    the config but no weight read: `chatvla2 info` on a checkpoint of any size."""
    directory = Path(directory)
    cfg = read_checkpoint_config(directory)
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise MissingFile(f"checkpoint {directory}: missing {WEIGHTS_FILE}")
    header = read_safetensors_header(weights_path)
    with torch.device("meta"):
        model = ChatVLA2(cfg)
    check_weights(weights_path, header, model.state_dict())
    return model


def load_checkpoint(directory: str | Path, map_location: str | torch.device = "cpu") -> ChatVLA2:
    directory = Path(directory)
    if not directory.is_dir():
        raise MissingFile(f"checkpoint directory not found: {directory}")
    for name in CHECKPOINT_FILES:
        if not (directory / name).is_file():
            raise MissingFile(f"checkpoint {directory}: missing {name}")
    cfg = read_checkpoint_config(directory)
    tokenizer = TextTokenizer.from_file(directory / TOKENIZER_FILE)
    stats = NormalizationStats.load(directory / NORMALIZATION_FILE)

    weights_path = directory / WEIGHTS_FILE
    header = read_safetensors_header(weights_path)
    model = ChatVLA2(cfg, tokenizer, stats)
    expected = model.state_dict()
    check_weights(weights_path, header, expected)
    try:
        state = load_file(str(weights_path), device=str(map_location))
    except Exception as exc:  # safetensors' own error type
        raise CheckpointError(f"{weights_path}: unreadable ({exc})") from None
    # A bf16/fp16 checkpoint (an import kept in its source's precision) loads as the model's fp32.
    state = {name: t.to(expected[name].dtype) for name, t in state.items()}
    model.load_state_dict(state, strict=True)
    return model.to(map_location).eval()
