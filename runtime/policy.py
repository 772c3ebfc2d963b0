"""`Policy`: a bundle's four engines composed into `infer(observation) -> dict` (no torch).

    policy = Policy.from_bundle("bundles/tiny", backend="auto")     # hashes verified first
    result = policy.infer({"images": [frame, ...], "instruction": "...", "state": state})
    result["reasoning"], result["action_chunk"] (chunk, action_dim), result["timings"] (seconds)

The steps are those of the reference `models.vla.ChatVLA2.act`: preprocess the frames, run the
vision engine, splice its embeddings into the prompt's token embeddings at the <|image_pad|>
positions, prefill, then greedy decoding (stop at <|im_end|>, max_reasoning_tokens or a full
cache; every generated token but the EOS goes through decode, its hidden state is kept), then
o = mean prefill hidden over the prompt, r = mean of the reasoning tokens' hidden states (zeros
if none), and the action head denoises a chunk; the chunk is unnormalised with the bundle's
statistics.

Backends (`backend=`): "onnxruntime" (TensorRT EP > CUDA EP > CPU EP, whichever is present),
"tensorrt" (prebuilt engines from `chatvla2 build`, in `engines_dir`, default BUNDLE/engines),
"auto" (tensorrt when the `tensorrt` module imports and engines exist, else onnxruntime).
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from safetensors.numpy import load_file

from export.manifest import BundleError, engine_file, load_manifest  # stdlib only (no torch, no onnx)
from runtime.engine import BACKENDS, Engine, EngineSpec
from runtime.language import LanguageSession
from runtime.normalization import Normalizer
from runtime.preprocess import ImageSpec, preprocess_images
from runtime.prompt import PromptTokenizer, merged_grid, mrope_position_ids, next_text_position, prompt_token_ids

ENGINES_DIR = "engines"


def resolve_backend(backend: str, engines_dir: Path) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    if importlib.util.find_spec("tensorrt") is not None and (engines_dir / "engines.json").is_file():
        return "tensorrt"
    return "onnxruntime"


class Policy:
    def __init__(self, bundle: Path, manifest: dict, engines: dict[str, Engine], language: LanguageSession, backend: str):
        cfg = manifest["model_config"]
        self.bundle, self.manifest, self.backend = bundle, manifest, backend
        self.engines, self.language = engines, language
        self.image_spec = ImageSpec.from_model_config(cfg)
        self.grid = merged_grid(cfg)
        self.tokens_per_view = self.grid[0] * self.grid[1]
        self.max_reasoning_tokens = int(cfg["language"]["max_reasoning_tokens"])
        head = cfg["action_head"]
        self.chunk_size, self.action_dim, self.state_dim = int(head["chunk_size"]), int(head["action_dim"]), int(head["state_dim"])
        self.tokenizer = PromptTokenizer.from_file(bundle / manifest.get("tokenizer", "tokenizer.json"))
        self.normalizer = Normalizer.load(bundle / manifest.get("normalization", "normalization.json"))
        table = load_file(str(bundle / manifest.get("embeddings", "embeddings.safetensors")))
        if "token_embedding" not in table:
            raise BundleError(f"{bundle}: embeddings file has no 'token_embedding' table")
        self.token_embedding = np.ascontiguousarray(table["token_embedding"])
        dtype = engines["prefill"].spec.input("embeddings").dtype
        self.embedding_dtype = dtype
        if (self.normalizer.action_dim, self.normalizer.state_dim) != (self.action_dim, self.state_dim):
            raise BundleError(f"{bundle}: normalization.json is for {self.normalizer.action_dim}-D actions / "
                              f"{self.normalizer.state_dim}-D state, the model has {self.action_dim} / {self.state_dim}")
        self._pixels = np.empty((self.image_spec.num_views, 3, self.image_spec.height, self.image_spec.width), np.float32)

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_bundle(cls, bundle: str | Path, backend: str = "auto", engines_dir: str | Path | None = None,
                    threads: int | None = None, verify_hashes: bool = True) -> "Policy":
        bundle = Path(bundle)
        manifest = load_manifest(bundle, verify_hashes=verify_hashes)
        engines_path = Path(engines_dir) if engines_dir else bundle / ENGINES_DIR
        chosen = resolve_backend(backend, engines_path)
        specs = {name: EngineSpec.from_manifest(name, entry) for name, entry in manifest["engines"].items()}
        missing = [n for n in ("vision", "prefill", "decode", "action_head") if n not in specs]
        if missing:
            raise BundleError(f"{bundle}: the manifest has no engine(s) {', '.join(missing)}")
        if chosen == "tensorrt":
            from runtime.tensorrt_engine import load_tensorrt

            engines, language = load_tensorrt(bundle, manifest, specs, engines_path)
        else:
            from runtime.onnxruntime_engine import OnnxRuntimeEngine, OnnxRuntimeLanguage

            engines = {name: OnnxRuntimeEngine(engine_file(bundle, manifest, name), spec, threads=threads) for name, spec in specs.items()}
            language = OnnxRuntimeLanguage(engines["prefill"], engines["decode"])
        return cls(bundle, manifest, engines, language, chosen)

    @property
    def providers(self) -> dict[str, str]:
        return {name: engine.provider for name, engine in self.engines.items()}

    # -- inference ------------------------------------------------------------------------------
    def prompt(self, instruction: str) -> tuple[list[int], np.ndarray]:
        ids = prompt_token_ids(self.tokenizer, instruction, self.image_spec.num_views, self.tokens_per_view)
        if len(ids) >= self.language.max_cache_len:
            raise ValueError(f"the prompt takes {len(ids)} tokens, the KV cache holds {self.language.max_cache_len}")
        return ids, mrope_position_ids(ids, self.tokenizer.image_pad_id, self.grid)

    def infer(self, observation: Mapping[str, Any], reuse: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """observation: "images" (num_views RGB uint8 frames), "instruction" (str), "state"
        (state_dim, unnormalised); optional "noise" (chunk, action_dim) or "seed" (numpy's
        generator: not the same numbers as torch's).

        reuse: a previous result; its reasoning (text and `r`) is kept and decoding is skipped
        (the "keep until the step is done" cadence).

        Returns reasoning, reasoning_ids, action_chunk (chunk, action_dim) float32, timings
        (seconds per stage), r (the pooled reasoning state, for reuse)."""
        timings: dict[str, float] = {}
        start = clock = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[stage] = now - clock
            clock = now

        pixels = preprocess_images(observation["images"], self.image_spec, out=self._pixels)
        ids, positions = self.prompt(str(observation["instruction"]))
        state = self.normalizer.normalize_state(observation["state"]).reshape(1, self.state_dim).astype(np.float32)
        lap("preprocess")

        vision = self.engines["vision"]
        visual = vision.run({"pixels": pixels.astype(vision.spec.input("pixels").dtype, copy=False)})["visual_embeddings"]
        ids_array = np.asarray(ids, dtype=np.int64)
        embeddings = self.token_embedding[ids_array]
        image_positions = ids_array == self.tokenizer.image_pad_id
        if int(image_positions.sum()) != visual.shape[0]:
            raise ValueError(f"{int(image_positions.sum())} image tokens in the prompt, {visual.shape[0]} visual embeddings")
        embeddings[image_positions] = visual
        embeddings = embeddings.astype(self.embedding_dtype, copy=False)[None]
        lap("vision")

        hidden, logits = self.language.prefill(np.ascontiguousarray(embeddings), np.ascontiguousarray(positions[:, None, :]))
        o = hidden.astype(np.float32).mean(axis=1)
        lap("prefill")

        if reuse is not None:
            reasoning_ids, r = list(reuse["reasoning_ids"]), np.asarray(reuse["r"], np.float32)
        else:
            reasoning_ids, r = self._reason(logits, len(ids), next_text_position(positions))
        lap("decode")
        timings["decode_per_token"] = timings["decode"] / max(len(reasoning_ids), 1) if reuse is None else 0.0

        noise = observation.get("noise")
        if noise is None:
            noise = np.random.default_rng(int(observation.get("seed", 0))).standard_normal((self.chunk_size, self.action_dim))
        noise = np.ascontiguousarray(np.asarray(noise, dtype=np.float32).reshape(1, self.chunk_size, self.action_dim))
        head = self.engines["action_head"]
        feed = {"o": o.astype(head.spec.input("o").dtype), "r": r.astype(head.spec.input("r").dtype),
                "state": state.astype(head.spec.input("state").dtype), "noise": noise.astype(head.spec.input("noise").dtype)}
        normalised = head.run(feed)["actions"]
        actions = self.normalizer.unnormalize_actions(normalised[0].astype(np.float32))
        lap("action_head")
        timings["total"] = time.perf_counter() - start
        return {
            "reasoning": self.tokenizer.decode(reasoning_ids),
            "reasoning_ids": reasoning_ids,
            "action_chunk": actions,
            "timings": timings,
            "r": r,
            "tokens": len(reasoning_ids),
            "reused_reasoning": reuse is not None,
        }

    def _reason(self, logits: np.ndarray, cache_position: int, text_position: int) -> tuple[list[int], np.ndarray]:
        reasoning_ids: list[int] = []
        hidden_sum = None
        token = int(np.argmax(logits.reshape(-1)))
        while token != self.tokenizer.eos_id and len(reasoning_ids) < self.max_reasoning_tokens and cache_position < self.language.max_cache_len:
            reasoning_ids.append(token)
            step_logits, hidden = self.language.step(token, text_position, cache_position)
            hidden = hidden.astype(np.float32).reshape(1, -1)
            hidden_sum = hidden.copy() if hidden_sum is None else hidden_sum + hidden
            cache_position += 1
            text_position += 1
            token = int(np.argmax(step_logits))
        hidden_size = self.engines["action_head"].spec.input("r").shape[-1]
        r = np.zeros((1, hidden_size), np.float32) if hidden_sum is None else hidden_sum / len(reasoning_ids)
        return reasoning_ids, r

    def warmup(self, observation: Mapping[str, Any], runs: int = 1) -> None:
        for _ in range(runs):
            self.infer(observation)

    def close(self) -> None:
        for engine in self.engines.values():
            engine.close()
