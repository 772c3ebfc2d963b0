"""`Policy`: four engines composed into `infer(observation) -> result` (no torch).

    policy = Policy.from_bundle("bundles/tiny", backend="auto")     # hashes verified first
    result = policy.infer({"images": [frame, ...], "instruction": "...", "state": state})
    result["reasoning"], result["action_chunk"] (chunk, action_dim), result["timings"] (seconds)

This is the one implementation of the inference steps; every backend runs through it (ONNX
Runtime and TensorRT here, the exported PyTorch modules in `export.torch_engine` for the eager
reference timing and calibration capture). The steps: preprocess the frames and build the prompt
(`contract/`), run the vision engine, splice its embeddings into the prompt's token embeddings at
the <|image_pad|> positions, prefill, then greedy decoding (stop at <|im_end|>,
max_reasoning_tokens or a full cache; every generated token but the EOS goes through decode, its
hidden state is kept), then o = mean prefill hidden over the prompt, r = mean of the reasoning
tokens' hidden states (zeros if none), and the action head denoises a chunk, unnormalised with the
model's statistics. `models.vla.ChatVLA2.act` is the independent reference the parity tests
compare this against.

Backends (`backend=`): "onnxruntime" (TensorRT EP > CUDA EP > CPU EP, whichever is present),
"tensorrt" (prebuilt engines from `chatvla2 build`, in `engines_dir`, default BUNDLE/engines),
"auto" (tensorrt when the `tensorrt` module imports and engines exist, else onnxruntime).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

from chatvla2.contract.bundle import (
    DEPLOYMENT_KEY,
    EMBEDDINGS_FILE,
    ENGINE_NAMES,
    ENGINES_DIR,
    NORMALIZATION_FILE,
    TOKENIZER_FILE,
    BundleError,
    bundle_model_config,
    engine_file,
    export_target,
    load_manifest,
    shared_language,
)
from chatvla2.contract.config import ModelConfig
from chatvla2.contract.errors import InvalidInput, MissingFile
from chatvla2.contract.names import UnknownChoice
from chatvla2.contract.normalization import NormalizationStats
from chatvla2.contract.preprocess import pixels_shape, preprocess_images
from chatvla2.contract.prompt import build_prompt, next_text_position
from chatvla2.contract.stage_timer import StageTimer
from chatvla2.contract.tokenizer import TextTokenizer
from chatvla2.runtime.engine import BACKENDS, Engine, EngineSpec
from chatvla2.runtime.language_session import LanguageSession
from chatvla2.runtime.loop import InferenceStopped
from chatvla2.runtime.numbers import is_whole_number
from chatvla2.runtime.tensorrt_identity import ENGINES_JSON


def check_threads(threads: int | None) -> None:
    """ONNX Runtime's intra-op threads: None (its default) or a whole number >= 1."""
    if threads is None:
        return
    if not is_whole_number(threads) or threads < 1:
        raise InvalidInput(f"--threads must be >= 1 (or left out for ONNX Runtime's default), got {threads!r}")


def load_embeddings(path: Path, bundle: Path) -> np.ndarray:
    """The bundle's token embedding table; a file safetensors cannot read is a BundleError naming it."""
    try:
        table = load_file(str(path))
    except FileNotFoundError:
        raise BundleError(f"{bundle}: {path.name} is missing") from None
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type (and others on bad headers)
        raise BundleError(f"{bundle}: {path.name} is not a readable safetensors file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if "token_embedding" not in table:
        raise BundleError(f"{bundle}: {path.name} has no 'token_embedding' table")
    return table["token_embedding"]


def resolve_backend(backend: str, engines_dir: Path) -> str:
    if backend not in BACKENDS:
        raise UnknownChoice(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    if importlib.util.find_spec("tensorrt") is not None and (engines_dir / ENGINES_JSON).is_file():
        return "tensorrt"
    return "onnxruntime"


class Policy:
    def __init__(self, config: ModelConfig, tokenizer: TextTokenizer, stats: NormalizationStats,
                 token_embedding: np.ndarray, engines: Mapping[str, Engine], language: LanguageSession,
                 backend: str, source: str = ""):
        missing = [n for n in ENGINE_NAMES if n not in engines]
        if missing:
            raise BundleError(f"{source}: no engine(s) {', '.join(missing)}")
        head = config.action_head
        if (stats.action_dim, stats.state_dim) != (head.action_dim, head.state_dim):
            raise BundleError(f"{source}: normalization statistics are for {stats.action_dim}-D actions / "
                              f"{stats.state_dim}-D state, the model has {head.action_dim} / {head.state_dim}")
        if token_embedding.ndim != 2 or token_embedding.shape[1] != config.language.hidden:
            raise BundleError(f"{source}: token embedding table {token_embedding.shape}, expected (vocab, {config.language.hidden})")
        self.config, self.tokenizer, self.stats = config, tokenizer, stats
        self.token_embedding = np.ascontiguousarray(token_embedding)
        self.engines, self.language = dict(engines), language
        self.backend, self.source = backend, source
        self.max_reasoning_tokens = config.language.max_reasoning_tokens
        # EOS is not accepted before this many reasoning tokens (as Hugging Face's min_new_tokens):
        # calibration capture needs decode inputs even from an untrained model; 0 on the robot.
        self.min_reasoning_tokens = 0
        self.deployment: dict | None = None  # the manifest's selected plan, when it has one
        self.embedding_dtype = self.engines["prefill"].spec.input("embeddings").dtype
        self._pixels = np.empty(pixels_shape(config.vision), np.float32)

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_bundle(cls, bundle: str | Path, backend: str = "auto", engines_dir: str | Path | None = None,
                    threads: int | None = None, verify_hashes: bool = True, spin: bool = False) -> Policy:
        """spin: ONNX Runtime's intra-op threads spin while waiting (runtime/onnxruntime_session.py)."""
        check_threads(threads)
        bundle = Path(bundle)
        manifest = load_manifest(bundle, verify_hashes=verify_hashes, runtime=True)
        config = bundle_model_config(bundle, manifest)
        if engines_dir is not None and not Path(engines_dir).is_dir():
            raise MissingFile(f"engines directory not found: {engines_dir}")
        engines_path = Path(engines_dir) if engines_dir else bundle / ENGINES_DIR
        chosen = resolve_backend(backend, engines_path)
        if chosen == "tensorrt" and export_target(manifest) == "cpu":
            raise BundleError(f"{bundle}: exported for the cpu target (ONNX Runtime's own operators): "
                              "run it with --backend onnxruntime, or export with --target tensorrt")
        specs = {name: EngineSpec.from_manifest(name, entry) for name, entry in manifest["engines"].items()}
        missing = [n for n in ENGINE_NAMES if n not in specs]
        if missing:
            raise BundleError(f"{bundle}: the manifest has no engine(s) {', '.join(missing)}")
        token_embedding = load_embeddings(bundle / manifest.get("embeddings", EMBEDDINGS_FILE), bundle)
        tokenizer = TextTokenizer.from_file(bundle / manifest.get("tokenizer", TOKENIZER_FILE))
        stats = NormalizationStats.load(bundle / manifest.get("normalization", NORMALIZATION_FILE))
        if chosen == "tensorrt":
            from chatvla2.runtime.tensorrt_engine import load_tensorrt

            engines, language = load_tensorrt(bundle, manifest, specs, engines_path)
        else:
            from chatvla2.runtime.onnxruntime_engine import OnnxRuntimeEngine, OnnxRuntimeLanguage

            shared = shared_language(manifest, bundle)
            # A graph prefill and decode share (the cpu target) is one session: its weights once in memory.
            opened = [n for n in specs if not (shared and n == "decode")]
            engines = {name: OnnxRuntimeEngine(engine_file(bundle, manifest, name), specs[name], threads=threads, spin=spin)
                       for name in opened}
            if shared:
                from chatvla2.runtime.onnxruntime_shared_language import OnnxRuntimeSharedLanguage

                engines["decode"] = engines["prefill"]
                language = OnnxRuntimeSharedLanguage(engines["prefill"], specs["decode"], token_embedding)
            else:
                language = OnnxRuntimeLanguage(engines["prefill"], engines["decode"])
        try:
            policy = cls(config, tokenizer, stats, token_embedding, engines, language, chosen, source=str(bundle))
        except BaseException:
            for engine in engines.values():
                engine.close()
            raise
        # The plan `chatvla2 calibrate select` chose for this bundle: its reasoning cap is followed.
        policy.deployment = manifest.get(DEPLOYMENT_KEY)
        cap = (policy.deployment or {}).get("max_reasoning_tokens")
        if cap:
            policy.max_reasoning_tokens = min(policy.max_reasoning_tokens, int(cap))
        return policy

    @property
    def providers(self) -> dict[str, str]:
        return {name: engine.provider for name, engine in self.engines.items()}

    @property
    def num_views(self) -> int:
        return self.config.vision.num_views

    @property
    def state_dim(self) -> int:
        return self.config.action_head.state_dim

    @property
    def max_prefix(self) -> int:
        """The longest committed prefix the action head was trained to continue (0: none; the
        loop's rtc chunk mode needs > 0)."""
        return self.config.action_head.max_prefix

    # -- inference ------------------------------------------------------------------------------
    def prompt(self, instruction: str) -> tuple[list[int], np.ndarray]:
        """The prompt's token ids and (3, S) M-RoPE position ids for this model's cameras."""
        return build_prompt(self.tokenizer, instruction, self.config)

    def infer(self, observation: Mapping[str, Any], reuse: Mapping[str, Any] | None = None,
              should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
        """observation: "images" (num_views RGB uint8 frames), "instruction" (str), "state"
        (state_dim, unnormalised); optional "noise" (chunk, action_dim) or "seed" (numpy's
        generator: not the same numbers as torch's); optional "prefix" (k, action_dim),
        unnormalised: the actions committed to the arms while this inference runs (real-time
        chunking), which the chunk starts with exactly and continues (k < chunk size).

        reuse: a previous result; its reasoning (text and `r`) is reused and decoding is skipped
        (the "reuse the reasoning until the step is done" cadence).

        should_stop: checked before each stage and each decode token; when it returns True the
        inference is given up (`runtime.loop.InferenceStopped`): a stopping control loop does not
        wait for a result it will not use.

        Returns reasoning, reasoning_ids, action_chunk (chunk, action_dim) float32, timings
        (seconds per stage), r (the pooled reasoning state, for reuse)."""
        stop = should_stop or _never
        timer = StageTimer()
        head = self.config.action_head
        pixels = preprocess_images(observation["images"], self.config.vision, out=self._pixels)
        ids, positions = self.prompt(str(observation["instruction"]))
        state = np.asarray(observation["state"], dtype=np.float32)
        if state.shape != (head.state_dim,):
            raise InvalidInput(f"state has shape {state.shape}, expected ({head.state_dim},)")
        state = self.stats.normalize_state(state).reshape(1, head.state_dim)
        timer.lap("preprocess")

        _check_stop(stop)
        vision = self.engines["vision"]
        visual = vision.run({"pixels": pixels.astype(vision.spec.input("pixels").dtype, copy=False)})["visual_embeddings"]
        ids_array = np.asarray(ids, dtype=np.int64)
        embeddings = self.token_embedding[ids_array]
        image_positions = ids_array == self.tokenizer.image_pad_id
        if int(image_positions.sum()) != visual.shape[0]:
            raise ValueError(f"{int(image_positions.sum())} image tokens in the prompt, {visual.shape[0]} visual embeddings")
        embeddings[image_positions] = visual
        embeddings = embeddings.astype(self.embedding_dtype, copy=False)[None]
        timer.lap("vision")

        _check_stop(stop)
        hidden, logits = self.language.prefill(np.ascontiguousarray(embeddings), np.ascontiguousarray(positions[:, None, :]))
        o = hidden.astype(np.float32).mean(axis=1)
        timer.lap("prefill")

        if reuse is not None:
            reasoning_ids, r = list(reuse["reasoning_ids"]), np.asarray(reuse["r"], np.float32)
        else:
            reasoning_ids, r = self._reason(logits, len(ids), next_text_position(positions), stop)
        timer.lap("decode")

        _check_stop(stop)

        noise = observation.get("noise")
        if noise is None:
            noise = np.random.default_rng(int(observation.get("seed", 0))).standard_normal((head.chunk_size, head.action_dim))
        noise = np.ascontiguousarray(np.asarray(noise, dtype=np.float32).reshape(1, head.chunk_size, head.action_dim))
        action_head = self.engines["action_head"]
        feed = {"o": o, "r": r, "state": state, "noise": noise, **self._prefix_feed(observation.get("prefix"))}
        feed = {name: np.ascontiguousarray(value.astype(action_head.spec.input(name).dtype, copy=False)) for name, value in feed.items()}
        normalised = action_head.run(feed)["actions"]
        actions = self.stats.unnormalize_actions(normalised[0].astype(np.float32))
        committed = int(feed.get("prefix_len", np.zeros(1))[0])
        if committed:  # the head returns them as given; the normalisation round trip is not exact
            actions[:committed] = np.asarray(observation["prefix"], np.float32).reshape(committed, -1)
        timer.lap("action_head")
        return {
            "reasoning": self.tokenizer.decode(reasoning_ids),
            "reasoning_ids": reasoning_ids,
            "action_chunk": actions,
            "timings": timer.finish(len(reasoning_ids), decoded=reuse is None),
            "r": r,
            "tokens": len(reasoning_ids),
            "reused_reasoning": reuse is not None,
        }

    def _prefix_feed(self, prefix) -> dict[str, np.ndarray]:
        """The action head's prefix inputs: the committed actions normalised into a chunk-sized
        buffer, and their count (0 and zeros without a prefix)."""
        head = self.config.action_head
        takes_prefix = "prefix_len" in self.engines["action_head"].spec.input_names
        if prefix is None:
            if not takes_prefix:
                return {}  # a bundle exported before real-time chunking
            return {"prefix_actions": np.zeros((1, head.chunk_size, head.action_dim), np.float32), "prefix_len": np.zeros(1, np.int64)}
        if not takes_prefix:
            raise InvalidInput("this bundle's action head takes no prefix (exported before real-time chunking): export it again")
        prefix = np.asarray(prefix, dtype=np.float32).reshape(-1, head.action_dim) if np.size(prefix) else np.zeros((0, head.action_dim), np.float32)
        if len(prefix) >= head.chunk_size:
            raise InvalidInput(f"prefix of {len(prefix)} actions: at most {head.chunk_size - 1} (the chunk has {head.chunk_size})")
        if not np.all(np.isfinite(prefix)):
            raise InvalidInput("prefix: actions must be finite")
        buffer = np.zeros((1, head.chunk_size, head.action_dim), np.float32)
        buffer[0, : len(prefix)] = self.stats.normalize_actions(prefix)
        return {"prefix_actions": buffer, "prefix_len": np.array([len(prefix)], np.int64)}

    def _next_token(self, logits: np.ndarray, generated: int) -> int:
        logits = logits.reshape(-1)
        if generated < self.min_reasoning_tokens:
            logits = logits.copy()
            logits[self.tokenizer.eos_id] = -np.inf
        return int(np.argmax(logits))

    def _reason(self, logits: np.ndarray, cache_position: int, text_position: int,
                should_stop: Callable[[], bool] | None = None) -> tuple[list[int], np.ndarray]:
        stop = should_stop or _never
        reasoning_ids: list[int] = []
        hidden_sum = None
        token = self._next_token(logits, 0)
        while token != self.tokenizer.eos_id and len(reasoning_ids) < self.max_reasoning_tokens and cache_position < self.language.max_cache_len:
            _check_stop(stop)
            reasoning_ids.append(token)
            step_logits, hidden = self.language.step(token, text_position, cache_position)
            hidden = hidden.astype(np.float32).reshape(1, -1)
            hidden_sum = hidden.copy() if hidden_sum is None else hidden_sum + hidden
            cache_position += 1
            text_position += 1
            token = self._next_token(step_logits, len(reasoning_ids))
        hidden_size = self.config.language.hidden
        r = np.zeros((1, hidden_size), np.float32) if hidden_sum is None else hidden_sum / len(reasoning_ids)
        return reasoning_ids, r

    def warmup(self, observation: Mapping[str, Any], runs: int = 1) -> None:
        for _ in range(runs):
            self.infer(observation)

    def close(self) -> None:
        """Release the engines. Never while an inference runs in another thread (the control loop
        joins its inference thread before the caller closes)."""
        for engine in {id(e): e for e in self.engines.values()}.values():  # a shared graph once
            engine.close()


def _never() -> bool:
    return False


def _check_stop(should_stop: Callable[[], bool]) -> None:
    if should_stop():
        raise InferenceStopped("inference given up: the loop is stopping")
