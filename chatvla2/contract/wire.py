"""The policy server's wire format: one observation in, one action chunk out (`chatvla2 serve` and
`runtime.remote_policy`). Written once here so both ends agree; torch-free and Ray-free.

A body is a msgpack map (msgpack.org: a compact binary JSON). Arrays travel as raw little-endian
bytes with their shape, never as lists of floats: {"dtype": "uint8" | "float32", "shape": [...],
"data": bytes}. A request:

    {"v": 1, "instruction": str, "images": [array uint8 (H, W, 3)] * views, "state": array float32 (state_dim,),
     "seed": int (optional), "noise": array float32 (chunk, action_dim) (optional),
     "prefix": array float32 (k, action_dim) (optional: real-time chunking),
     "reuse": {"reasoning_ids": [int], "r": array float32 (1, hidden)} (optional: reuse that reasoning)}

A reply: {"v": 1, "action_chunk": array float32 (chunk, action_dim), "reasoning": str, "reasoning_ids": [int],
"r": array float32 (1, hidden), "tokens": int, "reused_reasoning": bool, "timings": {stage: seconds},
"served_by": str | None (the replica: Ray node/pid)}.
An error is an HTTP status and one line of text.

Everything is checked before any inference (`decode_request` against `RequestLimits`): the body's
size, every field's type, dtype and shape, finite numbers; the first problem is one `WireError` line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from chatvla2.contract.errors import InvalidInput, MissingFile

VERSION = 1
DTYPES = {"uint8": np.uint8, "float32": np.float32}
MAX_IMAGE_SIDE = 4096  # pixels: a frame beyond it is refused
DEFAULT_FRAME_BYTES = 1920 * 1080 * 3


class WireError(InvalidInput):
    """A malformed request or reply: one line naming the field."""


class BodyTooLarge(WireError):
    """A request body over the server's limit (HTTP 413 rather than 400)."""


def read_token_file(path: str | Path | None, min_length: int = 1) -> str | None:
    """The bearer token in `--token-file PATH` (None without one): one token of at least
    `min_length` characters, no spaces; else one line naming the file. The server and the robot's
    client read it the same way."""
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"--token-file {path}: no such file")
    token, least = path.read_text().strip(), max(1, min_length)
    if len(token) < least or any(c.isspace() for c in token):
        characters = "character" if least == 1 else "characters"
        raise InvalidInput(f"--token-file {path}: expected one token of at least {least} {characters}, no spaces")
    return token


@dataclass(frozen=True)
class RequestLimits:
    """What a server's model accepts (from its bundle's config)."""

    views: int
    state_dim: int
    chunk_size: int
    action_dim: int
    hidden: int
    max_bytes: int

    @classmethod
    def for_model(cls, config, max_bytes: int | None = None) -> RequestLimits:
        """The limits of a model config (contract.config.ModelConfig). Frames of any size travel as
        the camera gives them (the policy resizes them, contract/preprocess.py); the default body
        limit holds one 1920x1080 frame per view and the arrays."""
        vision, head = config.vision, config.action_head
        arrays = 4 * (head.state_dim + 2 * head.chunk_size * head.action_dim + config.language.hidden)
        return cls(
            vision.num_views,
            head.state_dim,
            head.chunk_size,
            head.action_dim,
            config.language.hidden,
            max_bytes or vision.num_views * DEFAULT_FRAME_BYTES + arrays + 65536,
        )


def pack_array(array: np.ndarray, dtype: str) -> dict[str, Any]:
    value = np.ascontiguousarray(array, dtype=DTYPES[dtype])
    return {"dtype": dtype, "shape": list(value.shape), "data": value.astype(value.dtype.newbyteorder("<"), copy=False).tobytes()}


def unpack_array(value: Any, field: str, dtype: str, shape: tuple | None = None) -> np.ndarray:
    """The array of a packed field, checked: its dtype, and `shape` where given (None entries: any size)."""
    if not isinstance(value, dict) or set(value) != {"dtype", "shape", "data"}:
        raise WireError(f"{field}: expected an array {{dtype, shape, data}}")
    if value["dtype"] != dtype:
        raise WireError(f"{field}: dtype {value['dtype']!r}, expected {dtype}")
    got = value["shape"]
    if not isinstance(got, list) or not all(isinstance(d, int) and d >= 0 for d in got):
        raise WireError(f"{field}: shape must be a list of sizes")
    if shape is not None and (len(got) != len(shape) or any(e is not None and e != g for e, g in zip(shape, got))):
        raise WireError(f"{field}: shape {tuple(got)}, expected {tuple('*' if e is None else e for e in shape)}")
    data = value["data"]
    if not isinstance(data, bytes) or len(data) != int(np.prod(got, dtype=np.int64)) * np.dtype(DTYPES[dtype]).itemsize:
        raise WireError(f"{field}: {len(data) if isinstance(data, bytes) else 'no'} data bytes for shape {tuple(got)}")
    array = np.frombuffer(data, dtype=np.dtype(DTYPES[dtype]).newbyteorder("<")).astype(DTYPES[dtype]).reshape(got)
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise WireError(f"{field}: values must be finite")
    return array


def encode_request(observation: dict, reuse: dict | None = None) -> bytes:
    import msgpack

    body: dict[str, Any] = {
        "v": VERSION,
        "instruction": str(observation["instruction"]),
        "images": [pack_array(image, "uint8") for image in observation["images"]],
        "state": pack_array(observation["state"], "float32"),
    }
    if "seed" in observation:
        body["seed"] = int(observation["seed"])
    for name in ("noise", "prefix"):
        if observation.get(name) is not None:
            body[name] = pack_array(observation[name], "float32")
    if reuse is not None:
        body["reuse"] = {"reasoning_ids": [int(i) for i in reuse["reasoning_ids"]], "r": pack_array(reuse["r"], "float32")}
    return msgpack.packb(body, use_bin_type=True)


def decode_request(body: bytes, limits: RequestLimits) -> tuple[dict, dict | None]:
    """(observation, reuse) for `Policy.infer`, or WireError naming the first problem."""
    import msgpack

    if len(body) > limits.max_bytes:
        raise BodyTooLarge(f"request body of {len(body)} bytes exceeds the limit of {limits.max_bytes}")
    try:
        message = msgpack.unpackb(body, raw=False, strict_map_key=True, max_bin_len=limits.max_bytes)
    except Exception as exc:  # msgpack raises several types for a truncated or foreign body
        raise WireError(f"request body is not msgpack ({type(exc).__name__})") from None
    if not isinstance(message, dict):
        raise WireError("request body: expected a map")
    if message.get("v") != VERSION:
        raise WireError(f"request version {message.get('v')!r}, this server speaks {VERSION}")
    unknown = set(message) - {"v", "instruction", "images", "state", "seed", "noise", "prefix", "reuse"}
    if unknown:
        raise WireError(f"request: unknown field {sorted(unknown)[0]!r}")
    if not isinstance(message.get("instruction"), str) or not message["instruction"].strip():
        raise WireError("instruction: expected a non-empty string")
    images = message.get("images")
    if not isinstance(images, list) or len(images) != limits.views:
        raise WireError(f"images: expected {limits.views} camera view(s), got {len(images) if isinstance(images, list) else 'none'}")
    frames = [unpack_array(image, f"images[{i}]", "uint8", (None, None, 3)) for i, image in enumerate(images)]
    for i, frame in enumerate(frames):
        if not (2 <= frame.shape[0] <= MAX_IMAGE_SIDE and 2 <= frame.shape[1] <= MAX_IMAGE_SIDE):
            raise WireError(f"images[{i}]: {frame.shape[1]}x{frame.shape[0]} pixels, expected 2..{MAX_IMAGE_SIDE} per side")
    observation: dict[str, Any] = {
        "instruction": message["instruction"],
        "images": frames,
        "state": unpack_array(message.get("state"), "state", "float32", (limits.state_dim,)),
    }
    if "seed" in message:
        if not isinstance(message["seed"], int) or isinstance(message["seed"], bool) or not 0 <= message["seed"] < 2**63:
            raise WireError("seed: expected an integer in 0..2^63-1")
        observation["seed"] = message["seed"]
    if "noise" in message:
        observation["noise"] = unpack_array(message["noise"], "noise", "float32", (limits.chunk_size, limits.action_dim))
    if "prefix" in message:
        prefix = unpack_array(message["prefix"], "prefix", "float32", (None, limits.action_dim))
        if len(prefix) >= limits.chunk_size:
            raise WireError(f"prefix: {len(prefix)} actions, at most {limits.chunk_size - 1}")
        observation["prefix"] = prefix
    reuse = None
    if "reuse" in message:
        given = message["reuse"]
        if not isinstance(given, dict) or not isinstance(given.get("reasoning_ids"), list):
            raise WireError("reuse: expected {reasoning_ids, r}")
        if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in given["reasoning_ids"]):
            raise WireError("reuse.reasoning_ids: expected token ids")
        reuse = {"reasoning_ids": given["reasoning_ids"], "r": unpack_array(given.get("r"), "reuse.r", "float32", (1, limits.hidden))}
    return observation, reuse


def encode_reply(result: dict, served_by: str | None = None) -> bytes:
    """`served_by`: which replica answered (the server's Ray node and process), for the operator of a
    cluster; a client does not need it."""
    import msgpack

    return msgpack.packb({
        "served_by": served_by,
        "v": VERSION,
        "action_chunk": pack_array(result["action_chunk"], "float32"),
        "reasoning": result["reasoning"],
        "reasoning_ids": [int(i) for i in result["reasoning_ids"]],
        "r": pack_array(np.asarray(result["r"]).reshape(1, -1), "float32"),
        "tokens": int(result["tokens"]),
        "reused_reasoning": bool(result["reused_reasoning"]),
        "timings": {k: float(v) for k, v in result["timings"].items()},
    }, use_bin_type=True)  # fmt: skip


def decode_reply(body: bytes) -> dict:
    import msgpack

    try:
        message = msgpack.unpackb(body, raw=False)
    except Exception as exc:  # noqa: BLE001
        raise WireError(f"reply body is not msgpack ({type(exc).__name__})") from None
    if not isinstance(message, dict) or message.get("v") != VERSION:
        raise WireError("reply: not a version-1 policy reply")
    return {
        "action_chunk": unpack_array(message["action_chunk"], "action_chunk", "float32"),
        "reasoning": message["reasoning"],
        "reasoning_ids": list(message["reasoning_ids"]),
        "r": unpack_array(message["r"], "r", "float32"),
        "tokens": message["tokens"],
        "reused_reasoning": message["reused_reasoning"],
        "timings": dict(message["timings"]),
        "served_by": message.get("served_by"),
    }
