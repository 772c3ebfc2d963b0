"""The engine bundle: its file names, its `manifest.json` schema, and reading it back (stdlib only).

`chatvla2 export` writes bundles (export/bundle.py); the runtime, `chatvla2 build` and the
benchmarks read them through `load_manifest`, which checks the schema and every file's hash.

Schema (version 1):
{
  "schema_version": 1,
  "model_config": {...},                     # contract.config.ModelConfig.to_dict()
  "moe_implementation": {"prefill": "dense", "decode": "gather"},
  "engines": {
    "decode": {
      "file": "decode.onnx",
      "opset": 21,
      "precision": "int8",                   # fp32 | fp16 | int8 | int4 | fp8
      "targets": ["orin", "thor", "hopper"],  # where this precision can run (Orin has no FP8)
      "inputs":  [{"name": "...", "shape": [1, "prompt_length", 64], "dtype": "float32"}, ...],
      "outputs": [...],
      "profiles": {"input name": {"min": [...], "opt": [...], "max": [...]}},  # dynamic inputs only
      "kept_fp32": [...],                    # fp16 graphs: nodes left in fp32, and why
      "low_precision_weight_fraction": 0.97, # weight elements stored below fp32 / all weight elements
      "parity": {"cosine": 0.99999, "max_abs": 1e-5, ...}
    }, ...
  },
  "files": {"decode.onnx": "<sha256>", ...}, # every file of the bundle but the manifest itself
  "tools": {"torch": "2.13.0", "onnx": "...", "onnxruntime": "...", ...}
}
Shapes: ints are static, strings name a dynamic dimension shared across engines.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from contract.config import ModelConfig

MANIFEST_FILE = "manifest.json"
EMBEDDINGS_FILE = "embeddings.safetensors"  # the token embedding table ("token_embedding")
TOKENIZER_FILE = "tokenizer.json"
NORMALIZATION_FILE = "normalization.json"
ENGINES_DIR = "engines"  # TensorRT engines built from the bundle (`chatvla2 build`), by default
SCHEMA_VERSION = 1
ENGINE_NAMES = ("vision", "prefill", "decode", "action_head")
PROMPT_TEMPLATE = "per view: <|vision_start|> <|image_pad|> x tokens_per_view <|vision_end|>; then the instruction and a newline"


class BundleError(ValueError):
    """A bundle that cannot be used: missing, malformed, or not what its manifest says."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(bundle: str | Path, verify_hashes: bool = True) -> dict[str, Any]:
    """Read a bundle's manifest; with verify_hashes, every file must match its recorded sha256
    (and no listed file may be missing). Errors name the bundle and the first offending file."""
    bundle = Path(bundle)
    path = bundle / MANIFEST_FILE
    if not bundle.is_dir():
        raise FileNotFoundError(f"bundle directory not found: {bundle}")
    if not path.is_file():
        raise BundleError(f"{bundle}: not a bundle (no {MANIFEST_FILE})")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{path}: expected a JSON object, found {type(manifest).__name__}")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise BundleError(f"{path}: schema_version {manifest.get('schema_version')}, expected {SCHEMA_VERSION}")
    for key in ("engines", "files", "model_config"):
        if key not in manifest:
            raise BundleError(f"{path}: missing {key!r}")
        if not isinstance(manifest[key], dict):
            raise BundleError(f"{path}: {key!r} must be an object, found {type(manifest[key]).__name__}")
    if verify_hashes:
        verify_files(bundle, manifest)
    return manifest


def verify_files(bundle: Path, manifest: dict[str, Any]) -> None:
    for name, expected in sorted(manifest["files"].items()):
        file = bundle / name
        if not file.is_file():
            raise BundleError(f"{bundle}: {name} is listed in the manifest but missing")
        actual = sha256_file(file)
        if actual != expected:
            raise BundleError(
                f"{bundle}: {name} does not match the manifest (sha256 {actual[:12]}..., expected {expected[:12]}...)"
            )


def write_manifest(bundle: Path, manifest: dict[str, Any]) -> None:
    """Hash every file in the bundle and write the manifest last."""
    manifest = dict(manifest)
    manifest["schema_version"] = SCHEMA_VERSION
    manifest["files"] = {
        p.name: sha256_file(p) for p in sorted(bundle.iterdir()) if p.is_file() and p.name != MANIFEST_FILE
    }
    (bundle / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))


def engine_file(bundle: str | Path, manifest: dict[str, Any], engine: str) -> Path:
    try:
        return Path(bundle) / manifest["engines"][engine]["file"]
    except KeyError:
        raise BundleError(f"{bundle}: the manifest has no engine {engine!r}") from None


def bundle_model_config(bundle: str | Path, manifest: dict[str, Any]) -> ModelConfig:
    """The manifest's model configuration as the dataclasses every layer reads (no dict keys)."""
    try:
        return ModelConfig.from_dict(manifest["model_config"])
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{bundle}: invalid model_config in the manifest ({exc})") from None
