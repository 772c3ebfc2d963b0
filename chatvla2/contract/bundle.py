"""The engine bundle: its file names, its `manifest.json` schema, and reading it back (stdlib only).

`chatvla2 export` writes bundles (export/bundle.py); the runtime, `chatvla2 build` and the
benchmarks read them through `load_manifest`, which checks the schema and every file's hash.

Schema (version 1):
{
  "schema_version": 1,
  "model_config": {...},                     # contract.config.ModelConfig.to_dict()
  "moe_implementation": {"prefill": "dense", "decode": "gather"},
  "plan_rule": "cpu-auto: ...",              # cpu target only: how the plan was chosen (a rule, no timing),
  "cpu_isa": "generic",                      #   the class of CPU it was made for and the bits of its
  "int8_weight_bits": 7,                     #   int8 weights (export/cpu_target.py CPU_ISAS)
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
  "files": {"decode.onnx": "<sha256>", ...}, # every file of the bundle but the manifest itself; must
                                             # cover every file the runtime reads (each engine's file
                                             # and data_files, embeddings, tokenizer, normalization)
                                             # and every *.onnx / *.data file in the directory
  "tools": {"torch": "2.13.0", "onnx": "...", "onnxruntime": "...", ...}
}
Shapes: ints are static, strings name a dynamic dimension shared across engines.

Prefill and decode may name the same graph (the cpu target's `language.onnx`: one graph, one copy
of the language model's weights; export/graphs.py LanguageGraph): their entries then give the same
inputs, outputs and precision, and each its own parity and "profiles", the shapes it feeds (a
prefill: the prompt after an empty cache of 0 slots; a decode step: one token against the whole
static cache, one key_cache_<i> / value_cache_<i> input per layer). The runtime opens such a graph
once (`shared_language`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from chatvla2.contract.config import ModelConfig
from chatvla2.contract.errors import InvalidInput, MissingFile

MANIFEST_FILE = "manifest.json"
EMBEDDINGS_FILE = "embeddings.safetensors"  # the token embedding table ("token_embedding")
TOKENIZER_FILE = "tokenizer.json"
NORMALIZATION_FILE = "normalization.json"
ENGINES_DIR = "engines"  # TensorRT engines built from the bundle (`chatvla2 build`), by default
SCHEMA_VERSION = 1
ENGINE_NAMES = ("vision", "prefill", "decode", "action_head")
# The name mark of the routed MoE form's If nodes (export/routed_experts.py): ONNX Runtime sessions
# look for it to turn off a CPU fusion that computes those nodes wrongly (runtime/onnxruntime_session.py).
ROUTED_EXPERT_TAG = "chatvla2.routed_expert"
_ROUTED_NAME = re.compile(re.escape(ROUTED_EXPERT_TAG) + r"_(\d+)_of_(\d+)_top_(\d+)$")


def routed_expert_name(expert: int, num_experts: int, top_k: int) -> str:
    """How a routed If node's name ends (a name, not a doc_string: modelopt's graph rewriting keeps
    node names and drops doc strings)."""
    return f"{ROUTED_EXPERT_TAG}_{expert}_of_{num_experts}_top_{top_k}"


def parse_routed_expert_name(name: str) -> dict[str, int] | None:
    """{"expert", "num_experts", "top_k"} of a routed If node's name; None for any other name."""
    found = _ROUTED_NAME.search(name)
    return None if found is None else dict(zip(("expert", "num_experts", "top_k"), map(int, found.groups())))


PROMPT_TEMPLATE = "per view: <|vision_start|> <|image_pad|> x tokens_per_view <|vision_end|>; then the instruction and a newline"


class BundleError(InvalidInput):
    """A bundle that cannot be used: missing, malformed, or not what its manifest says."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(bundle: str | Path, verify_hashes: bool = True, runtime: bool = False) -> dict[str, Any]:
    """Read a bundle's manifest: its structure is checked; every graph and external-data file must
    be listed in `files` (a file the manifest does not list would be used unchecked), and with
    `runtime` every file the runtime reads (`runtime_files`); with verify_hashes every listed file
    must match its recorded sha256 (and none may be missing). Errors name the bundle and the first
    offending file."""
    bundle = Path(bundle)
    path = bundle / MANIFEST_FILE
    if not bundle.is_dir():
        raise MissingFile(f"bundle directory not found: {bundle}")
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
    for name, digest in manifest["files"].items():
        if not _plain_name(name):
            raise BundleError(f"{path}: 'files' lists {name!r}: expected a file name inside the bundle")
        if not isinstance(digest, str):
            raise BundleError(f"{path}: 'files' gives {name!r} a {type(digest).__name__}, expected its sha256 as a string")
    for engine, entry in manifest["engines"].items():
        if not isinstance(entry, dict):
            raise BundleError(f"{path}: engine {engine!r} must be an object, found {type(entry).__name__}")
        if not isinstance(entry.get("file"), str):
            raise BundleError(f"{path}: engine {engine!r} has no 'file' name")
        if not isinstance(entry.get("data_files", []), list):
            raise BundleError(f"{path}: engine {engine!r}: 'data_files' must be a list")
    shared_language(manifest, path)
    check_coverage(bundle, manifest, runtime_files(manifest) if runtime else None)
    if verify_hashes:
        verify_files(bundle, manifest)
    return manifest


def shared_language(manifest: dict[str, Any], where: Any = "the manifest") -> bool:
    """Whether prefill and decode are one graph (see the module docstring); entries that share a
    file but disagree on its inputs, outputs or precision are a BundleError."""
    engines = manifest["engines"]
    prefill, decode = engines.get("prefill"), engines.get("decode")
    if not (isinstance(prefill, dict) and isinstance(decode, dict)) or prefill.get("file") != decode.get("file"):
        return False
    for key in ("inputs", "outputs", "precision", "data_files"):
        if prefill.get(key) != decode.get(key):
            raise BundleError(f"{where}: engines 'prefill' and 'decode' share {prefill.get('file')} but their {key!r} differ")
    return True


def graph_files(manifest: dict[str, Any]) -> list[str]:
    """Each engine's graph and its external data files."""
    names = []
    for entry in manifest["engines"].values():
        for name in (entry["file"], *entry.get("data_files", [])):
            if name not in names:  # a graph two engines share is listed once
                names.append(name)
    return names


def runtime_files(manifest: dict[str, Any]) -> list[str]:
    """Every file a runtime reads from the bundle: the graphs and their external data, the token
    embeddings, the tokenizer, the normalisation statistics."""
    return graph_files(manifest) + [
        manifest.get(key, default)
        for key, default in (("embeddings", EMBEDDINGS_FILE), ("tokenizer", TOKENIZER_FILE), ("normalization", NORMALIZATION_FILE))
    ]


# Files a graph may pull in by itself (ONNX external data is found by the graph, not the manifest).
GRAPH_SUFFIXES = (".onnx", ".data")


def check_coverage(bundle: Path, manifest: dict[str, Any], names: list[str] | None = None) -> None:
    """`names` (default: the graphs and their external data, what `chatvla2 lint`/`build` read;
    `runtime_files(manifest)` for a runtime) and every graph or external-data file in the directory
    must be listed (with a hash) in `files`: an unlisted one would be used without being checked."""
    listed = manifest["files"]
    for name in graph_files(manifest) if names is None else names:
        if not isinstance(name, str) or not _plain_name(name):
            raise BundleError(f"{bundle}: the manifest names {name!r}: expected a file name inside the bundle")
        if name not in listed:
            raise BundleError(f"{bundle}: {name} is read by the runtime but not listed in the manifest's files (no hash to check it against)")
    for file in sorted(bundle.iterdir()):
        if file.is_file() and file.name.endswith(GRAPH_SUFFIXES) and file.name not in listed:
            raise BundleError(f"{bundle}: {file.name} is in the bundle but not listed in the manifest's files (no hash to check it against)")


def _plain_name(name: Any) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name


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


DEPLOYMENT_KEY = "deployment"  # the plan `chatvla2 calibrate select` chose for a target


def write_deployment(bundle: str | Path, deployment: dict[str, Any]) -> None:
    """Record the selected plan (target, precisions, reasoning cap and cadence, the budget it met)
    in the manifest, which `chatvla2 run` then follows. The manifest is rewritten whole and renamed
    into place (never half-written); the files and their hashes are untouched."""
    bundle = Path(bundle)
    manifest = load_manifest(bundle, verify_hashes=False)
    manifest[DEPLOYMENT_KEY] = deployment
    partial = bundle / f".{MANIFEST_FILE}.partial"
    partial.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    os.replace(partial, bundle / MANIFEST_FILE)


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


def export_target(manifest: dict) -> str:
    """"tensorrt" or "cpu": what the bundle's graphs were shaped for (`chatvla2 export --target`).
    Bundles written before the field existed are TensorRT bundles."""
    return manifest.get("target", "tensorrt")
