"""Swap a model's submodules of one kind for export-side wrappers around a trace, and put them back.

The cpu target traces the language model with some modules written as ONNX Runtime's own operators
(`export.cpu_moe.OrtMoE`, `export.cpu_fused.OrtRMSNorm`) without `models/` knowing: inside
`replaced_modules(model, kind, wrapper)`, every submodule of `kind` under `model.language` is
`wrapper(module)`; the originals come back on exit, whatever happened. Graph modules
(export.graphs) hold `model.language`, so those built before or inside the block see the wrappers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from torch import nn


@contextlib.contextmanager
def replaced_modules(model: nn.Module, kind: type[nn.Module], wrapper: Callable[[nn.Module], nn.Module]) -> Iterator[int]:
    """Yields the number replaced. `model`: a ChatVLA2 or its LanguageModel."""
    language = getattr(model, "language", model)
    replaced: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        for parent in list(language.modules()):  # a snapshot: the wrappers are not walked into
            for name, child in list(parent.named_children()):
                if isinstance(child, kind):
                    replaced.append((parent, name, child))
                    setattr(parent, name, wrapper(child))
        yield len(replaced)
    finally:
        for parent, name, original in replaced:
            setattr(parent, name, original)
