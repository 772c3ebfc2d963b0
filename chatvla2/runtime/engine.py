"""The engine contract: one graph of a bundle with named, typed inputs and outputs.

An `Engine` runs `feed -> outputs` by name. Its `EngineSpec` comes from the bundle manifest
(`manifest["engines"][name]["inputs"/"outputs"]`: name, shape, dtype; an int is a static
dimension, a string names a dynamic one shared by the tensors of one call, e.g. "prompt_length").
Every feed is checked against the spec before it reaches a backend: a missing or unexpected
input, a wrong dtype, rank or dimension is a `FeedError` that names the engine, the tensor, what
was expected and what was received. Backends: `runtime.onnxruntime_engine`, `runtime.tensorrt_engine`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from chatvla2.contract.errors import InvalidInput

Dim = int | str


class FeedError(InvalidInput):
    """A feed that does not match the engine's inputs (the message names the tensor)."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[Dim, ...]
    dtype: np.dtype

    @classmethod
    def from_manifest(cls, entry: Mapping[str, Any]) -> TensorSpec:
        try:
            dtype = np.dtype(entry["dtype"])
        except TypeError:
            raise InvalidInput(f"tensor {entry.get('name')!r}: unknown dtype {entry.get('dtype')!r}") from None
        return cls(entry["name"], tuple(entry["shape"]), dtype)

    def describe(self, dims: Mapping[str, int] | None = None) -> str:
        shape = ", ".join(str(dims.get(d, d)) if (dims and isinstance(d, str)) else str(d) for d in self.shape)
        return f"{self.dtype.name} ({shape})"

    def concrete_shape(self, dims: Mapping[str, int]) -> tuple[int, ...]:
        try:
            return tuple(d if isinstance(d, int) else int(dims[d]) for d in self.shape)
        except KeyError as exc:
            raise FeedError(f"tensor {self.name!r}: dynamic dimension {exc.args[0]!r} is unknown") from None


@dataclass(frozen=True)
class EngineSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    # dynamic inputs: {input name: (min shape, max shape)} from the manifest's profiles
    limits: Mapping[str, tuple[tuple[int, ...], tuple[int, ...]]] = None  # type: ignore[assignment]

    @classmethod
    def from_manifest(cls, name: str, entry: Mapping[str, Any]) -> EngineSpec:
        limits = {
            k: (tuple(v["min"]), tuple(v["max"])) for k, v in (entry.get("profiles") or {}).items()
        }
        return cls(
            name,
            tuple(TensorSpec.from_manifest(t) for t in entry["inputs"]),
            tuple(TensorSpec.from_manifest(t) for t in entry["outputs"]),
            limits,
        )

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def input(self, name: str) -> TensorSpec:
        return _by_name(self.inputs, name, f"engine {self.name!r} has no input")

    def output(self, name: str) -> TensorSpec:
        return _by_name(self.outputs, name, f"engine {self.name!r} has no output")


def _by_name(specs, name: str, what: str) -> TensorSpec:
    for spec in specs:
        if spec.name == name:
            return spec
    raise KeyError(f"{what} {name!r} (it has {', '.join(s.name for s in specs)})")


def check_feed(spec: EngineSpec, feed: Mapping[str, Any]) -> dict[str, int]:
    """Check every input of `feed` against `spec`; returns the dynamic dimensions' values.

    numpy arrays only (no silent conversion: a float64 state or an int32 token is a caller bug
    that would otherwise be cast, or copied, on every call)."""
    missing = [t.name for t in spec.inputs if t.name not in feed]
    if missing:
        raise FeedError(f"engine {spec.name!r}: missing input(s) {', '.join(missing)} (expects {', '.join(spec.input_names)})")
    extra = sorted(set(feed) - set(spec.input_names))
    if extra:
        raise FeedError(f"engine {spec.name!r}: unexpected input(s) {', '.join(extra)} (expects {', '.join(spec.input_names)})")
    dims: dict[str, int] = {}
    for tensor in spec.inputs:
        value = feed[tensor.name]
        where = f"engine {spec.name!r} input {tensor.name!r}"
        if not isinstance(value, np.ndarray):
            raise FeedError(f"{where}: expected a numpy array {tensor.describe()}, received {type(value).__name__}")
        received = f"{value.dtype.name} {tuple(value.shape)}"
        if value.dtype != tensor.dtype:
            raise FeedError(f"{where}: expected {tensor.describe(dims)}, received {received}")
        if value.ndim != len(tensor.shape):
            raise FeedError(f"{where}: expected rank {len(tensor.shape)} {tensor.describe(dims)}, received {received}")
        for axis, (want, got) in enumerate(zip(tensor.shape, value.shape)):
            if isinstance(want, int):
                if want != got:
                    raise FeedError(f"{where}: axis {axis} expected {want} in {tensor.describe(dims)}, received {received}")
            elif dims.setdefault(want, got) != got:
                raise FeedError(
                    f"{where}: dimension {want!r} (axis {axis}) is {got}, but an earlier input set it to {dims[want]}; "
                    f"expected {tensor.describe(dims)}, received {received}"
                )
        if tensor.name in (spec.limits or {}):
            low, high = spec.limits[tensor.name]
            if any(not lo <= g <= hi for lo, g, hi in zip(low, value.shape, high)):
                raise FeedError(f"{where}: shape {tuple(value.shape)} is outside the engine's profile {low}..{high}")
        if not value.flags.c_contiguous:
            raise FeedError(f"{where}: array is not C-contiguous (use np.ascontiguousarray)")
    return dims


class Engine(ABC):
    """One graph. `run(feed)` checks the feed, runs, and returns every output by name.

    `out` optionally names preallocated arrays that outputs are written into (no allocation per
    call); their shape/dtype must match. Backends may expose faster bound paths (see the decode
    session of each backend) but every path checks what it is given."""

    spec: EngineSpec
    provider: str = "?"

    @abstractmethod
    def run(self, feed: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        ...

    def close(self) -> None:  # noqa: B027 - optional
        pass


def check_out(spec: EngineSpec, out: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Preallocated output buffers must match the outputs they receive."""
    for name, array in out.items():
        tensor = spec.output(name)
        want = shapes[name]
        if array.dtype != tensor.dtype or tuple(array.shape) != tuple(want) or not array.flags.c_contiguous:
            raise FeedError(
                f"engine {spec.name!r} output {name!r}: buffer {array.dtype.name} {tuple(array.shape)} "
                f"does not fit {tensor.dtype.name} {tuple(want)} (or is not contiguous)"
            )


BACKENDS = ("auto", "tensorrt", "onnxruntime")
