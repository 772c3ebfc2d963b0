"""Engine inputs recorded from the PyTorch policy: calibration data for quantization and the
inputs of the parity check.

Calibration must see real engine inputs, never random noise: the activations that set the int8
and fp8 scales are those the engines meet on the robot. By default they are recorded by running
the policy on the PyTorch backend (`export.torch_engine`, the runtime's own inference steps) on
sample observations of the math game;
`--calibration FILE` reads an `.npz` recorded elsewhere (e.g. on the robot).

Format (`.npz`): one array per "<engine>.<input>", the samples concatenated along axis 0, so that
splitting every array of an engine into the same number of equal pieces along axis 0 gives one
sample's inputs (the layout nvidia-modelopt's calibration reader splits).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from chatvla2.contract.errors import InvalidInput, MissingFile
from chatvla2.contract.scene import INSTRUCTION, math_game_frame
from chatvla2.export.torch_engine import torch_policy
from chatvla2.models.vla import ChatVLA2

EngineInputs = dict[str, dict[str, np.ndarray]]  # engine -> input name -> array
# The action head's real-time chunking inputs (export/graphs.py), absent from files recorded before them.
PREFIX_INPUTS = ("prefix_actions", "prefix_len")

# Equations and cards of the math game, varied so calibration sees varied frames.
SCENES = [
    ("56-42", ("4", "6", "1")), ("7+7", ("8", "4", "1")), ("9-3", ("6", "2", "5")), ("12+5", ("1", "7", "3")),
    ("8-6", ("2", "9", "0")), ("3+4", ("7", "1", "5")), ("65-21", ("4", "4", "2")), ("2+9", ("1", "1", "3")),
]


def prefix_length(sample: int, chunk_size: int) -> int:
    """The committed prefix of recorded sample i: 7, 14, 21, 28, 4, ... steps for even i (so the
    first sample, the export's parity feed, has one), none for odd i (the common case)."""
    return 0 if sample % 2 else ((sample // 2 + 1) * 7) % min(chunk_size, 31)


def record_engine_inputs(model: ChatVLA2, samples: int, seed: int, decode_steps: int = 3) -> EngineInputs:
    """Run the policy on the PyTorch backend over `samples` observations and record what each
    engine receives: pixels, the prompt embeddings, `decode_steps` reasoning tokens' decode feeds
    (token, positions and the KV cache as it stands), and o/r/state/noise."""
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    head = model.cfg.action_head
    records: dict[str, dict[str, list[np.ndarray]]] = {e: {} for e in ("vision", "prefill", "decode", "action_head")}

    def keep(engine: str, feed) -> None:
        for name, value in feed.items():
            records[engine].setdefault(name, []).append(np.array(value, copy=True))

    policy = torch_policy(model, observer=keep)
    # Exactly decode_steps tokens per sample, whatever the (perhaps untrained) model would stop at.
    policy.max_reasoning_tokens = policy.min_reasoning_tokens = decode_steps
    for i in range(samples):
        equation, cards = SCENES[(i + seed) % len(SCENES)]
        base = math_game_frame(equation, cards).astype(np.int16)
        frames = [
            np.clip(base + rng.integers(-20, 21, size=base.shape), 0, 255).astype(np.uint8)
            for _ in range(model.cfg.vision.num_views)
        ]
        state = rng.normal(model.stats.state_mean, model.stats.state_std).astype(np.float32)
        noise = torch.randn(head.chunk_size, head.action_dim, generator=generator).numpy()
        observation = {"images": frames, "instruction": INSTRUCTION, "state": state, "noise": noise}
        committed = prefix_length(i, head.chunk_size)
        if committed:  # the action head's real-time chunking path: a committed prefix, in range
            normalised = rng.uniform(-0.5, 0.5, (committed, head.action_dim)).astype(np.float32)
            observation["prefix"] = model.stats.unnormalize_actions(normalised)
        policy.infer(observation)
    return {engine: {name: np.concatenate(arrays) for name, arrays in inputs.items()} for engine, inputs in records.items()}


def save_engine_inputs(path: str | Path, inputs: EngineInputs) -> None:
    np.savez(path, **{f"{engine}.{name}": array for engine, arrays in inputs.items() for name, array in arrays.items()})


def expected_inputs(model: ChatVLA2) -> dict[str, dict[str, tuple]]:
    """Each engine's input names and one sample's shape, the dynamic axes (the prompt's length, the
    views) named, so a file recorded on any prompt passes `load_engine_inputs`."""
    from chatvla2.export.onnx_export import engine_specs

    return {
        spec.name: {n: tuple(spec.dynamic_axes.get(n, {}).get(axis, size) for axis, size in enumerate(t.shape))
                    for n, t in zip(spec.input_names, spec.example_inputs)}
        for spec in engine_specs(model)
    }


def load_engine_inputs(path: str | Path, expected: dict[str, dict[str, tuple]]) -> EngineInputs:
    """Read an `.npz` of recorded inputs; `expected` gives each engine's input names and one
    sample's shape (symbolic dims as strings). Errors name the first missing or misshapen array."""
    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"calibration file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for a file that is not an npz
        raise InvalidInput(f"{path}: not an .npz of engine inputs ({exc})") from None
    result: EngineInputs = {}
    for engine, inputs in expected.items():
        result[engine] = {}
        for name, shape in inputs.items():
            key = f"{engine}.{name}"
            if key not in data and engine == "action_head" and name in PREFIX_INPUTS and f"{engine}.noise" in data:
                # recorded before real-time chunking: no committed prefix in any sample
                samples = len(data[f"{engine}.noise"])
                result[engine][name] = np.zeros((samples, *shape[1:]), np.float32 if name == "prefix_actions" else np.int64)
                continue
            if key not in data:
                raise InvalidInput(f"{path}: missing {key!r}")
            array = data[key]
            static_tail = [d for d in shape[1:]]
            if array.ndim != len(shape) or any(
                isinstance(d, int) and d != a for d, a in zip(static_tail, array.shape[1:])
            ):
                raise InvalidInput(f"{path}: {key} has shape {array.shape}, one sample is {tuple(shape)}")
            result[engine][name] = array
    return result
