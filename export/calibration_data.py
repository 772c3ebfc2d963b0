"""Engine inputs recorded from the PyTorch policy: calibration data for quantization and the
inputs of the parity check.

Calibration must see real engine inputs, never random noise: the activations that set the int8
and fp8 scales are those the engines meet on the robot. By default they are recorded by running
the model's reference pipeline (`ChatVLA2.act`'s stages) on sample observations of the math game;
`--calibration FILE` reads an `.npz` recorded elsewhere (e.g. on the robot).

Format (`.npz`): one array per "<engine>.<input>", the samples concatenated along axis 0, so that
splitting every array of an engine into the same number of equal pieces along axis 0 gives one
sample's inputs (the layout nvidia-modelopt's calibration reader splits).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from models.language import write_cache
from models.prompt import mrope_position_ids, next_text_position, prompt_token_ids
from models.preprocess import preprocess_images
from models.sample_observation import INSTRUCTION, math_game_frame
from models.vla import ChatVLA2

EngineInputs = dict[str, dict[str, np.ndarray]]  # engine -> input name -> array

# Equations and cards of the math game, varied so calibration sees varied frames.
SCENES = [
    ("56-42", ("4", "6", "1")), ("7+7", ("8", "4", "1")), ("9-3", ("6", "2", "5")), ("12+5", ("1", "7", "3")),
    ("8-6", ("2", "9", "0")), ("3+4", ("7", "1", "5")), ("65-21", ("4", "4", "2")), ("2+9", ("1", "1", "3")),
]


@torch.no_grad()
def record_engine_inputs(model: ChatVLA2, samples: int, seed: int, decode_steps: int = 3) -> EngineInputs:
    """Run the reference pipeline on `samples` observations and record what each engine receives:
    pixels, the prompt embeddings, a few decode steps' tokens and caches, and o/r/state/noise."""
    cfg = model.cfg
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    tokenizer, language = model.tokenizer, model.language
    head = cfg.action_head
    records: dict[str, dict[str, list[np.ndarray]]] = {e: {} for e in ("vision", "prefill", "decode", "action_head")}

    def keep(engine: str, name: str, value) -> None:
        value = value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        records[engine].setdefault(name, []).append(value)

    for i in range(samples):
        equation, cards = SCENES[(i + seed) % len(SCENES)]
        base = math_game_frame(equation, cards).astype(np.int16)
        frames = [
            np.clip(base + rng.integers(-20, 21, size=base.shape), 0, 255).astype(np.uint8)
            for _ in range(cfg.vision.num_views)
        ]
        pixels = torch.from_numpy(preprocess_images(frames, cfg.vision))
        keep("vision", "pixels", pixels)

        ids = prompt_token_ids(tokenizer, INSTRUCTION, cfg.vision.num_views, cfg.vision.tokens_per_view)
        positions = mrope_position_ids(ids, tokenizer.image_pad_id, cfg.vision.merged_grid)
        embeddings = model.embed(torch.tensor([ids]), pixels.unsqueeze(0))
        position_ids = torch.from_numpy(positions).unsqueeze(1)
        keep("prefill", "embeddings", embeddings)
        keep("prefill", "position_ids", position_ids)

        hidden, logits, keys, values = language.prefill(embeddings, position_ids)
        key_cache, value_cache = language.new_cache()
        write_cache(key_cache, keys, 0)
        write_cache(value_cache, values, 0)
        cache_position, text_position = len(ids), next_text_position(positions)
        token = int(logits.argmax())
        reasoning_hidden = []
        for _ in range(decode_steps):
            step_inputs = (
                torch.tensor([[token]]), torch.tensor([text_position]), torch.tensor([cache_position]),
                key_cache.clone(), value_cache.clone(),
            )
            for name, value in zip(("token", "position", "cache_position", "key_cache", "value_cache"), step_inputs):
                keep("decode", name, value)
            logits, token_hidden, new_keys, new_values = language.decode_step(
                language.embed_tokens(step_inputs[0]), step_inputs[1].view(1, 1, 1).expand(3, 1, 1),
                step_inputs[2], key_cache, value_cache,
            )
            write_cache(key_cache, new_keys, cache_position)
            write_cache(value_cache, new_values, cache_position)
            reasoning_hidden.append(token_hidden)
            cache_position, text_position, token = cache_position + 1, text_position + 1, int(logits.argmax())

        keep("action_head", "o", hidden.mean(dim=1))
        keep("action_head", "r", torch.stack(reasoning_hidden).mean(dim=0))
        state = rng.normal(model.stats.state_mean, model.stats.state_std).astype(np.float32)
        keep("action_head", "state", model.stats.normalize_state(state)[None])
        keep("action_head", "noise", torch.randn(1, head.chunk_size, head.action_dim, generator=generator))
    return {engine: {name: np.concatenate(arrays) for name, arrays in inputs.items()} for engine, inputs in records.items()}


def save_engine_inputs(path: str | Path, inputs: EngineInputs) -> None:
    np.savez(path, **{f"{engine}.{name}": array for engine, arrays in inputs.items() for name, array in arrays.items()})


def load_engine_inputs(path: str | Path, expected: dict[str, dict[str, tuple]]) -> EngineInputs:
    """Read an `.npz` of recorded inputs; `expected` gives each engine's input names and one
    sample's shape (symbolic dims as strings). Errors name the first missing or misshapen array."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"calibration file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for a file that is not an npz
        raise ValueError(f"{path}: not an .npz of engine inputs ({exc})") from None
    result: EngineInputs = {}
    for engine, inputs in expected.items():
        result[engine] = {}
        for name, shape in inputs.items():
            key = f"{engine}.{name}"
            if key not in data:
                raise ValueError(f"{path}: missing {key!r}")
            array = data[key]
            static_tail = [d for d in shape[1:]]
            if array.ndim != len(shape) or any(
                isinstance(d, int) and d != a for d, a in zip(static_tail, array.shape[1:])
            ):
                raise ValueError(f"{path}: {key} has shape {array.shape}, one sample is {tuple(shape)}")
            result[engine][name] = array
    return result
