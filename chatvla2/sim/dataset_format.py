"""The dataset format, version 1 (documented in sim/dataset.py): names, paths, columns, the
per-episode record, the checks on what goes in, and the PNG codec. The writer
(sim/dataset_writer.py) and the reader (sim/dataset_reader.py) both take the format from here.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from chatvla2.contract.embodiment import DIM_NAMES
from chatvla2.contract.errors import InvalidInput
from chatvla2.sim.episode import Episode

FORMAT = "chatvla2-edge/dataset"
FORMAT_VERSION = 1
LAYOUT = "LeRobotDataset v2.1, adapted: frames as PNG bytes in parquet, no videos, no stats (sim/dataset.py)"

INFO_FILE = "meta/info.json"
EPISODES_FILE = "meta/episodes.jsonl"
TASKS_FILE = "meta/tasks.jsonl"
IMAGE_TEXT_FILE = "meta/image_text.jsonl"
README_FILE = "README.md"
DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
IMAGE_TEXT_PATH = "image_text/chunk-{file_chunk:03d}/samples_{file_index:06d}.parquet"
CHUNKS_SIZE = 1000  # files per chunk directory, as LeRobot
SAMPLES_PER_FILE = 1000

IMAGE_KEY = "observation.images.top"
STATE_KEY = "observation.state"
ACTION_KEY = "action"
REASONING_KEY = "reasoning"


class DatasetError(InvalidInput):
    """A dataset directory that cannot be read: missing or malformed metadata, a missing, truncated or
    corrupt file, or contents that disagree with the metadata. The message is one line naming the file."""


def file_error(path: Path | str, what: str) -> DatasetError:
    return DatasetError(f"{path}: {' '.join(what.split())}")


def exception_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


EPISODE_FIELDS = ("task", "split", "seed", "instruction", "frames", "state", "action", "reasoning", "fps")
SAMPLE_FIELDS = ("image", "question", "answer", "kind", "split", "seed")


def episode_record(episode: Any) -> Episode:
    """The one coupling to sim/tasks: any object with the `Episode` attributes (EPISODE_FIELDS) ->
    a checked Episode. Raises ValueError saying what is wrong."""
    missing = [name for name in EPISODE_FIELDS if not hasattr(episode, name)]
    if missing:
        raise InvalidInput(f"not an episode: {type(episode).__name__} has no {', '.join(missing)}")
    record = Episode(**{name: getattr(episode, name) for name in EPISODE_FIELDS})
    for name in ("task", "split", "instruction"):
        _check_str(f"episode {name}", getattr(record, name), nonempty=name != "instruction")
    record.seed = _check_int("episode seed", record.seed)
    record.fps = _check_int("episode fps", record.fps)
    if record.fps <= 0:
        raise InvalidInput(f"episode fps must be positive, got {record.fps}")
    frames = record.frames
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise InvalidInput(f"episode frames must be a (T, H, W, 3) uint8 array, got {_describe(frames)}")
    steps = frames.shape[0]
    if steps == 0 or frames.shape[1] == 0 or frames.shape[2] == 0:
        raise InvalidInput(f"episode frames must hold at least one non-empty frame, got shape {frames.shape}")
    for name in ("state", "action"):
        array = getattr(record, name)
        if not isinstance(array, np.ndarray) or array.dtype != np.float32 or array.ndim != 2:
            raise InvalidInput(f"episode {name} must be a (T, D) float32 array (no silent rounding: convert it "
                             f"yourself), got {_describe(array)}")
        if array.shape[0] != steps or array.shape[1] == 0:
            raise InvalidInput(f"episode {name} has shape {array.shape}, expected ({steps}, D) for {steps} frames")
        if not np.isfinite(array).all():
            raise InvalidInput(f"episode {name} holds NaN or infinite values")
    reasoning = record.reasoning
    if isinstance(reasoning, str) or not hasattr(reasoning, "__len__") or len(reasoning) != steps:
        raise InvalidInput(f"episode reasoning must be a list of {steps} strings (one per frame), got {_describe(reasoning)}")
    if not all(isinstance(text, str) for text in reasoning):
        raise InvalidInput("episode reasoning must hold only strings")
    record.reasoning = list(reasoning)
    return record


def checked_sample(sample: Any) -> dict[str, Any]:
    """An image-text sample dict (SAMPLE_FIELDS; other keys are refused, not dropped) -> the same, checked."""
    if not isinstance(sample, dict):
        raise InvalidInput(f"an image-text sample is a dict with {', '.join(SAMPLE_FIELDS)}, got {type(sample).__name__}")
    missing = [key for key in SAMPLE_FIELDS if key not in sample]
    extra = sorted(set(sample) - set(SAMPLE_FIELDS))
    if missing or extra:
        raise InvalidInput(f"image-text sample: missing {missing}, unknown {extra}; expected keys {list(SAMPLE_FIELDS)}")
    image = sample["image"]
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3 \
            or image.shape[0] == 0 or image.shape[1] == 0:
        raise InvalidInput(f"image-text sample image must be an (H, W, 3) uint8 array, got {_describe(image)}")
    for key in ("question", "answer", "kind", "split"):
        _check_str(f"image-text sample {key}", sample[key], nonempty=key in ("kind", "split"))
    return {**sample, "seed": _check_int("image-text sample seed", sample["seed"])}


def joint_names(dim: int) -> list[str] | None:
    """Names of the 14-D bimanual vector (left 7, then right 7: contract/embodiment.py); None for other widths."""
    return list(DIM_NAMES) if dim == len(DIM_NAMES) else None


def _scalar(dtype: str) -> dict[str, Any]:
    return {"dtype": dtype, "shape": [1], "names": None}


def episode_features(height: int, width: int, state_dim: int, action_dim: int) -> dict[str, dict[str, Any]]:
    """info.json "features", in LeRobot's form: every column of an episode file, in order."""
    return {
        IMAGE_KEY: {"dtype": "image", "shape": [height, width, 3], "names": ["height", "width", "channel"],
                    "encoding": "png"},
        STATE_KEY: {"dtype": "float32", "shape": [state_dim], "names": joint_names(state_dim)},
        ACTION_KEY: {"dtype": "float32", "shape": [action_dim], "names": joint_names(action_dim)},
        REASONING_KEY: _scalar("string"),
        "timestamp": _scalar("float32"),
        "frame_index": _scalar("int64"),
        "episode_index": _scalar("int64"),
        "index": _scalar("int64"),
        "task_index": _scalar("int64"),
    }


def sample_features() -> dict[str, dict[str, Any]]:
    """info.json "image_text"."features": every column of an image-text file, in order."""
    return {
        "index": _scalar("int64"),
        "image": {"dtype": "image", "shape": None, "names": ["height", "width", "channel"], "encoding": "png"},
        "question": _scalar("string"),
        "answer": _scalar("string"),
        "kind": _scalar("string"),
        "split": _scalar("string"),
        "seed": _scalar("int64"),
    }


def episode_schema(state_dim: int, action_dim: int) -> pa.Schema:
    return pa.schema([
        (IMAGE_KEY, pa.binary()),
        (STATE_KEY, pa.list_(pa.float32(), state_dim)),
        (ACTION_KEY, pa.list_(pa.float32(), action_dim)),
        (REASONING_KEY, pa.string()),
        ("timestamp", pa.float32()),
        ("frame_index", pa.int64()),
        ("episode_index", pa.int64()),
        ("index", pa.int64()),
        ("task_index", pa.int64()),
    ])


SAMPLE_SCHEMA = pa.schema([
    ("index", pa.int64()),
    ("image", pa.binary()),
    ("question", pa.string()),
    ("answer", pa.string()),
    ("kind", pa.string()),
    ("split", pa.string()),
    ("seed", pa.int64()),
])


def encode_png(image: np.ndarray, compress_level: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def _open_png(data: Any, shape: tuple[int, int] | None) -> Image.Image:
    if not isinstance(data, bytes):
        raise ValueError(f"expected PNG bytes, got {type(data).__name__}")
    image = Image.open(io.BytesIO(data))
    if image.format != "PNG" or image.mode != "RGB":
        raise ValueError(f"expected an RGB PNG, got {image.format} {image.mode}")
    if shape is not None and (image.height, image.width) != shape:
        raise ValueError(f"image is {image.height}x{image.width}, expected {shape[0]}x{shape[1]}")
    return image


def decode_png(data: Any, shape: tuple[int, int] | None = None) -> np.ndarray:
    """PNG bytes -> (H, W, 3) uint8; ValueError (or PIL's OSError) when they are not an RGB PNG of that size."""
    image = _open_png(data, shape)
    image.load()
    return np.asarray(image, dtype=np.uint8)


def verify_png(data: Any, shape: tuple[int, int] | None = None) -> None:
    """The cheap check of a whole dataset: header, size, and every chunk's CRC through IEND, without decompressing."""
    _open_png(data, shape).verify()


def _check_str(what: str, value: Any, nonempty: bool) -> None:
    if not isinstance(value, str) or (nonempty and not value):
        raise InvalidInput(f"{what} must be a {'non-empty ' if nonempty else ''}string, got {value!r}")


def _check_int(what: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InvalidInput(f"{what} must be an integer, got {value!r}")
    value = int(value)
    if not -(2 ** 63) <= value < 2 ** 63:
        raise InvalidInput(f"{what} {value} does not fit in int64")
    return value


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    if hasattr(value, "__len__") and not isinstance(value, str):
        return f"{type(value).__name__} of length {len(value)}"
    return type(value).__name__


def is_count(value: Any, minimum: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum

