"""The weights of a Hugging Face model directory, read one tensor at a time and never unpickled.

A directory holds either `model.safetensors`, or `model.safetensors.index.json` and the shards
its `weight_map` names. Everything is checked before a weight is read: the index parses, every
shard it names is there, every shard's header is intact and its tensors' bytes lie inside the
file (a truncated shard names the first tensor cut off), and each tensor the index assigns to a
shard is in that shard's header. Tensors are read through safetensors' memory map, one at a time
and from one open shard at a time, so reading a model needs about one tensor's memory, not the
model's.

Both layouts of Qwen2-VL's tensor names are accepted: the Hub's (`visual.*`, `model.layers.*`,
`lm_head.weight`) and the one newer transformers releases use in memory (`model.visual.*`,
`model.language_model.*`); names are given here in the Hub's layout.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from chatvla2.contract.errors import InvalidInput
from chatvla2.models.checkpoint import SAFETENSORS_DTYPES, CheckpointError, read_json_object, read_safetensors_header

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# Files that hold weights as Python pickles: never loaded here (loading a pickle runs its code).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

# Newer in-memory names -> the Hub's names (the longest prefix first).
_PREFIXES = (("model.visual.", "visual."), ("model.language_model.", "model."))


class SourceError(InvalidInput):
    """A source directory that cannot be imported; the message names the file or tensor."""


def hub_name(name: str) -> str:
    for new, old in _PREFIXES:
        if name.startswith(new):
            return old + name[len(new):]
    return name


class WeightSource:
    """The tensors of one directory: `names`, `shape`, `dtype`, `shard_index` and `load`."""

    def __init__(self, directory: str | Path, strip_prefix: str = ""):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise SourceError(f"source directory not found: {self.directory}")
        shard_of = self._shard_map()
        self.shards = sorted(set(shard_of.values()))
        self._entries: dict[str, dict] = {}
        self._actual: dict[str, str] = {}  # our name (Hub layout, prefix stripped) -> the file's name
        self._shard: dict[str, str] = {}
        headers = {}
        for shard in self.shards:
            path = self.directory / shard
            if not path.is_file():
                raise SourceError(f"{self.directory}: missing shard {shard} (named in {INDEX_FILE})")
            try:
                headers[shard] = read_safetensors_header(path)
            except CheckpointError as exc:
                raise SourceError(str(exc)) from None
        for actual, shard in shard_of.items():
            header = headers[shard]
            if actual not in header:
                raise SourceError(f"{self.directory / shard}: tensor {actual!r} (listed in {INDEX_FILE}) is not in the shard")
            name = hub_name(actual)
            if strip_prefix and name.startswith(strip_prefix):
                name = name[len(strip_prefix):]
            if name in self._entries:
                raise SourceError(f"{self.directory}: tensor {name!r} appears twice ({self._actual[name]!r} and {actual!r})")
            entry = header[actual]
            if entry["dtype"] not in SAFETENSORS_DTYPES:
                raise SourceError(f"{self.directory / shard}: tensor {actual!r} has unsupported dtype {entry['dtype']}")
            self._entries[name], self._actual[name], self._shard[name] = entry, actual, shard
        self._open_shard: str | None = None
        self._handle = None

    def _shard_map(self) -> dict[str, str]:
        index, single = self.directory / INDEX_FILE, self.directory / SINGLE_FILE
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
                raise SourceError(f"{index}: not a safetensors index ({type(exc).__name__}: {exc})") from None
            if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
                raise SourceError(f"{index}: weight_map must map tensor names to shard file names")
            for shard in set(weight_map.values()):
                if Path(shard).name != shard:
                    raise SourceError(f"{index}: shard {shard!r} is not a file name in the directory")
            return dict(weight_map)
        if single.is_file():
            try:
                header = read_safetensors_header(single)
            except CheckpointError as exc:
                raise SourceError(str(exc)) from None
            return {name: SINGLE_FILE for name in header}
        pickles = sorted(p.name for p in self.directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise SourceError(
                f"{self.directory}: only pickle weights ({pickles[0]}); they are never unpickled here: "
                "convert them to safetensors first (docs/model-and-import.md)"
            )
        raise SourceError(f"{self.directory}: no {SINGLE_FILE} or {INDEX_FILE}")

    @property
    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._entries[name]["shape"])

    def dtype(self, name: str) -> str:
        return self._entries[name]["dtype"]

    def shard_index(self, name: str) -> int:
        return self.shards.index(self._shard[name])

    def float_dtypes(self) -> set[str]:
        return {e["dtype"] for e in self._entries.values() if SAFETENSORS_DTYPES[e["dtype"]].is_floating_point}

    def load(self, name: str) -> torch.Tensor:
        """One tensor, read from its shard (kept open until a tensor of another shard is read)."""
        shard = self._shard[name]
        if shard != self._open_shard:
            self.close()
            self._handle = safe_open(str(self.directory / shard), framework="pt")
            self._open_shard = shard
        return self._handle.get_tensor(self._actual[name])

    def close(self) -> None:
        self._handle, self._open_shard = None, None


def read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise SourceError(f"{path.parent}: missing {path.name} ({what})")
    return read_json_object(path, SourceError)
