"""A safetensors file written one tensor at a time, so a checkpoint larger than memory can be written.

safetensors' own `save_file` takes every tensor at once. The format (a little-endian u64 header
length, a JSON header of names, dtypes, shapes and byte offsets, then the raw bytes) lets the
header be written first when every tensor's name, dtype and shape is known in advance, and the
bytes follow in the header's order. The header is padded with spaces to a multiple of 8 bytes,
as safetensors writes it, so the data that follows is aligned.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import BinaryIO

import torch

from chatvla2.models.checkpoint import SAFETENSORS_DTYPES

DTYPE_NAMES = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}


class SafetensorsStream:
    """`with SafetensorsStream(path, [(name, dtype, shape), ...], metadata) as out: out.write(name, t)`
    for every tensor, in the order given. Each write is checked against its declaration; leaving
    the block with tensors unwritten is an error."""

    def __init__(self, path: str | Path, tensors: list[tuple[str, torch.dtype, tuple[int, ...]]], metadata: dict[str, str] | None = None):
        self.path = Path(path)
        self.order = [name for name, _, _ in tensors]
        if len(set(self.order)) != len(self.order):
            raise ValueError("a tensor is declared twice")
        header: dict[str, object] = {"__metadata__": dict(metadata or {})}
        offset = 0
        self.declared: dict[str, tuple[torch.dtype, tuple[int, ...]]] = {}
        for name, dtype, shape in tensors:
            size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
            header[name] = {"dtype": DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
            self.declared[name] = (dtype, tuple(shape))
            offset += size
        self.data_size = offset
        encoded = json.dumps(header, separators=(",", ":")).encode()
        self.header_bytes = encoded + b" " * (-len(encoded) % 8)
        self.written = 0
        self.next = 0
        self._file: BinaryIO | None = None

    def __enter__(self) -> SafetensorsStream:
        self._file = self.path.open("wb")
        self._file.write(struct.pack("<Q", len(self.header_bytes)))
        self._file.write(self.header_bytes)
        return self

    def write(self, name: str, tensor: torch.Tensor) -> None:
        if self.next >= len(self.order) or self.order[self.next] != name:
            expected = self.order[self.next] if self.next < len(self.order) else "nothing more"
            raise ValueError(f"{self.path}: wrote {name!r}, expected {expected!r} next")
        dtype, shape = self.declared[name]
        if tensor.dtype != dtype or tuple(tensor.shape) != shape:
            raise ValueError(f"{self.path}: tensor {name!r} is {tensor.dtype} {tuple(tensor.shape)}, declared {dtype} {shape}")
        data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        self._file.write(data)
        self.written += data.nbytes
        self.next += 1

    def __exit__(self, kind, value, traceback) -> None:
        self._file.close()
        if kind is None and self.next != len(self.order):
            raise ValueError(f"{self.path}: {len(self.order) - self.next} tensors not written, first {self.order[self.next]!r}")
