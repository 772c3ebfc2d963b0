"""`chatvla2 calibrate capture`: run the PyTorch policy over observations and record what each engine
really receives (the quantization scales are set from these) and what it returns (the fp32
reference every plan is measured against).

    chatvla2 calibrate capture (--config NAME | --checkpoint DIR) --observations SOURCE --out FILE.npz
        [--decode-calls N] [--min-tokens N] [--max-tokens N] [--stride S]

SOURCE: calibration/observations.py (`sim:math_game:in_domain:0-15`, a dataset directory, `+`).
The policy is the runtime's own inference code on the PyTorch backend (`export.torch_engine`),
every engine in the form export writes it, fp32.

The file (`.npz`, no pickles), format `chatvla2-capture` version 1:
- `<engine>.<input>`: the engine's inputs over the captured calls, concatenated along axis 0, what
  `chatvla2 export --calibration FILE` reads (export/calibration_data.py). The prefill takes the
  calls whose prompt is as long as the first one's (modelopt splits the arrays into equal samples);
  the decode step `--decode-calls` per observation, spread over its reasoning.
- `calls/<engine>/<i>/in/<name>`, `calls/<engine>/<i>/out/<name>`: every captured call's inputs and
  reference outputs, one by one (engine-level accuracy).
- `policy/<j>/images`, `policy/<j>/state`, `policy/<j>/noise`, `policy/<j>/reasoning_ids`,
  `policy/<j>/actions`: each observation and the reference policy's answer to it with that noise
  (reasoning token ids; the action chunk, unnormalised: policy-level accuracy).
- `meta`: a JSON string: format, version, the model (name, source, sha256 of its weights), the
  source, each observation's id and instruction, min/max reasoning tokens, decode calls.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from chatvla2.calibration.capture_config import DEFAULT_DECODE_CALLS, CaptureConfig, check_reasoning_tokens
from chatvla2.calibration.observations import observations
from chatvla2.contract.errors import InvalidInput, MissingFile

FORMAT = "chatvla2-capture"
VERSION = 1
ENGINES = ("vision", "prefill", "decode", "action_head")


def model_fingerprint(model) -> str:
    digest = hashlib.sha256(model.cfg.to_json().encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def capture(model, source: str, decode_calls: int = DEFAULT_DECODE_CALLS, min_tokens: int = 0,
            max_tokens: int | None = None, seed: int = 0, stride: int = 25, model_source: str = "",
            progress: bool = True) -> dict[str, np.ndarray]:
    """The capture's arrays (module docstring) for `model` on the observations of `source`."""
    from chatvla2.export.torch_engine import torch_policy

    check_reasoning_tokens(decode_calls, min_tokens, max_tokens)
    found = observations(source, model.cfg, stride=stride)
    head = model.cfg.action_head
    policy = torch_policy(model)
    policy.min_reasoning_tokens = min_tokens
    if max_tokens is not None:
        policy.max_reasoning_tokens = max_tokens
    calls: list[tuple[str, dict[str, np.ndarray], dict[str, np.ndarray]]] = []
    for engine in policy.engines.values():
        _record_calls(engine, calls)
    arrays: dict[str, np.ndarray] = {}
    per_observation_decode: list[list[int]] = []
    rng = np.random.default_rng(seed)
    iterator = found
    if progress:
        from tqdm import tqdm

        iterator = tqdm(found, desc="capture", unit="obs", leave=False)
    for j, observation in enumerate(iterator):
        first_call = len(calls)
        noise = rng.standard_normal((head.chunk_size, head.action_dim)).astype(np.float32)
        result = policy.infer({**observation.data, "noise": noise})
        per_observation_decode.append([i for i in range(first_call, len(calls)) if calls[i][0] == "decode"])
        arrays[f"policy/{j}/images"] = np.stack(observation.data["images"])
        arrays[f"policy/{j}/state"] = observation.data["state"]
        arrays[f"policy/{j}/noise"] = noise
        arrays[f"policy/{j}/reasoning_ids"] = np.asarray(result["reasoning_ids"], np.int64)
        arrays[f"policy/{j}/actions"] = np.asarray(result["action_chunk"], np.float32)
    kept = _kept_calls(calls, per_observation_decode, decode_calls)
    counters = dict.fromkeys(ENGINES, 0)
    for index in kept:
        engine, inputs, outputs = calls[index]
        i = counters[engine]
        counters[engine] += 1
        for name, value in inputs.items():
            arrays[f"calls/{engine}/{i}/in/{name}"] = value
        for name, value in outputs.items():
            arrays[f"calls/{engine}/{i}/out/{name}"] = value
    arrays.update(calibration_inputs([calls[i] for i in kept]))
    meta = {
        "format": FORMAT, "version": VERSION, "model": model.cfg.name, "model_source": model_source,
        "model_sha256": model_fingerprint(model), "source": source,
        "observations": [{"id": o.id, "instruction": o.data["instruction"]} for o in found],
        "min_reasoning_tokens": min_tokens, "max_reasoning_tokens": policy.max_reasoning_tokens,
        "decode_calls": decode_calls, "calls": counters, "noise_seed": seed,
    }
    arrays["meta"] = np.array(json.dumps(meta))
    return arrays


def _record_calls(engine, calls: list) -> None:
    """Wrap one engine's `run` so every call's inputs and outputs are copied into `calls`."""
    run = engine.run

    def recording_run(feed, out=None):
        inputs = {name: np.array(value, copy=True) for name, value in feed.items()}
        result = run(feed, out)
        calls.append((engine.spec.name, inputs, {name: np.array(value, copy=True) for name, value in result.items()}))
        return result

    engine.run = recording_run


def _kept_calls(calls: list, per_observation_decode: list[list[int]], decode_calls: int) -> list[int]:
    """Every vision, prefill and action-head call; per observation `decode_calls` decode calls spread
    evenly over its reasoning (the first and the last included)."""
    kept = [i for i, call in enumerate(calls) if call[0] != "decode"]
    for decodes in per_observation_decode:
        if len(decodes) <= decode_calls:
            kept += decodes
        else:
            picks = np.unique(np.linspace(0, len(decodes) - 1, decode_calls).round().astype(int))
            kept += [decodes[p] for p in picks]
    return sorted(kept)


def calibration_inputs(calls: list) -> dict[str, np.ndarray]:
    """`<engine>.<input>` concatenated over calls of the same shapes (the first call's, per engine)."""
    arrays: dict[str, np.ndarray] = {}
    for engine in ENGINES:
        feeds = [inputs for name, inputs, _ in calls if name == engine]
        if not feeds:
            continue
        shapes = {k: v.shape for k, v in feeds[0].items()}
        same = [f for f in feeds if {k: v.shape for k, v in f.items()} == shapes]
        for name in shapes:
            arrays[f"{engine}.{name}"] = np.concatenate([f[name] for f in same])
    return arrays


# --- reading ---------------------------------------------------------------------------------------


class CaptureError(InvalidInput):
    pass


def load_capture(path: str | Path) -> tuple[dict[str, Any], Any]:
    """(meta, the open npz). A file that is not a capture is a one-line CaptureError."""
    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"capture file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
        meta = json.loads(str(data["meta"]))
    except Exception as exc:  # numpy and json raise several types for a file that is not a capture
        raise CaptureError(f"{path}: not a chatvla2 capture ({type(exc).__name__}: {exc})") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise CaptureError(f"{path}: format {meta.get('format')!r} version {meta.get('version')!r}, "
                           f"expected {FORMAT!r} version {VERSION}")
    return meta, data


def engine_calls(data, meta: dict[str, Any], engine: str) -> list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """[(inputs, reference outputs)] of every captured call of `engine`."""
    result = []
    for i in range(meta["calls"][engine]):
        prefix = f"calls/{engine}/{i}/"
        inputs = {k[len(prefix) + 3:]: data[k] for k in data.files if k.startswith(prefix + "in/")}
        outputs = {k[len(prefix) + 4:]: data[k] for k in data.files if k.startswith(prefix + "out/")}
        result.append((inputs, outputs))
    return result


def policy_cases(data, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """Each observation with its noise and the reference policy's reasoning ids and actions."""
    cases = []
    for j, observation in enumerate(meta["observations"]):
        p = f"policy/{j}/"
        cases.append({"id": observation["id"], "images": list(data[p + "images"]), "instruction": observation["instruction"],
                      "state": data[p + "state"], "noise": data[p + "noise"],
                      "reasoning_ids": [int(t) for t in data[p + "reasoning_ids"]], "actions": data[p + "actions"]})
    return cases


def quantization_inputs(data) -> dict[str, dict[str, np.ndarray]]:
    """{engine: {input: array}}: the `<engine>.<input>` arrays, as export's calibration takes them."""
    result: dict[str, dict[str, np.ndarray]] = {}
    for key in data.files:
        if "." in key and "/" not in key:
            engine, name = key.split(".", 1)
            result.setdefault(engine, {})[name] = data[key]
    return result


def check_out_path(path: str | Path) -> Path:
    """A capture's target: a .npz in an existing directory (checked before any work is done)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise InvalidInput(f"--out {path}: write a .npz file")
    if not path.parent.is_dir():
        raise MissingFile(f"--out {path}: no directory {path.parent}")
    return path


def write_capture(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Written beside the target and renamed into place: a capture is complete or absent."""
    path = check_out_path(path)
    partial = path.with_name(f".{path.name}.partial.npz")
    try:
        np.savez(partial, **arrays)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def main(config: CaptureConfig) -> int:
    from chatvla2.models.loading import load_model

    out = check_out_path(config.out)
    if config.checkpoint and not Path(config.checkpoint).is_dir():
        raise MissingFile(f"checkpoint directory not found: {config.checkpoint}")
    model = load_model(config.preset, config.checkpoint, seed=config.seed)
    arrays = capture(model, config.observations, config.decode_calls, config.min_tokens, config.max_tokens, config.seed,
                     config.stride, model_source=config.checkpoint or f"preset {config.preset} seed {config.seed}")
    write_capture(out, arrays)
    meta = json.loads(str(arrays["meta"]))
    size = out.stat().st_size
    print(f"captured {len(meta['observations'])} observations of {config.observations}: calls "
          + ", ".join(f"{k} {v}" for k, v in meta["calls"].items()) + f"; {out} ({size / 2**20:.1f} MB)")
    print(json.dumps({"capture": {"out": str(out), "bytes": size, **{k: meta[k] for k in ("model", "source", "calls")}}}))
    return 0
