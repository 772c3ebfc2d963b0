"""The training loop: `train(TrainConfig)`.

Stage 0 (a VLM that reads) trains the vision encoder and the language model on image-text samples
alone: the cross-entropy of the answers; the action head is left as initialised. Stage 1 co-trains
the whole model on robot frames and image-text samples (1:3, training/data.py):
the loss is the cross-entropy on the reasoning / answer tokens plus the diffusion loss on the robot
samples' action chunks (`ChatVLA2.forward`). Stage 2 starts from a stage-1 checkpoint (`init`),
freezes the VLM (`ChatVLA2.freeze_vlm`) and trains only the action head on robot frames; the
optimizer holds only the action head's parameters, so the VLM's weights stay bit-identical.

AdamW, linear warm-up then cosine decay (training/config.py for the rates), the global gradient
norm clipped. Everything random in a step (which samples, the diffusion noise and timesteps) is
drawn from generators seeded by (seed, step), so the same seed gives the same losses and a resumed
run continues exactly where the interrupted one stopped.

The output directory:
    OUT/checkpoint/          the model, in the project's checkpoint format (models/checkpoint.py),
                             with the normalisation statistics of the training episodes
    OUT/training_state.pt    optimizer, scheduler, step, RNG states, the run's settings, and the
                             sha256 of the checkpoint's weights it goes with (for --resume)
    OUT/train_log.jsonl      one JSON line per step: losses, learning rate, samples/s, s/step, the
                             seconds the trainer waited for data; and every --eval-every steps a line
                             {"step", "eval": {...}} of held-out measurements (training/held_out.py)
    OUT/curves.png           those curves (training/curves.py), redrawn at each measurement
    OUT/train_config.json    the TrainConfig of the run

On the fly (no --data), worker processes draw each step's samples ahead of the trainer
(training/sample_workers.py); `utilisation` in the log is the share of the step's wall time the
trainer computed rather than waited.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from chatvla2.contract.config import field_default, get_config
from chatvla2.contract.errors import InvalidInput, MissingFile
from chatvla2.models.checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_checkpoint, read_checkpoint_config, save_checkpoint
from chatvla2.models.training_batch import make_batch
from chatvla2.models.vla import ChatVLA2
from chatvla2.training import text_arithmetic
from chatvla2.training.config import TrainConfig
from chatvla2.training.curves import plot_curves, write_eval_record
from chatvla2.training.data import TrainingData, draw_step
from chatvla2.training.held_out_plan import HeldOutPlan
from chatvla2.training.reading_attention import ReadingAttention
from chatvla2.training.reading_probe import ReadingProbe
from chatvla2.training.sample_workers import BatchPrefetcher
from chatvla2.training.scene_stream import ROBOT_SOURCES, Mixture, expert_normalization_stats

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "training_state.pt"
LOG_FILE = "train_log.jsonl"
CONFIG_JSON = "train_config.json"
CURVES_PNG = "curves.png"
STATE_VERSION = 1


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInput(f"--device {name}: CUDA is not available on this machine")
    return torch.device(name)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or a training output directory holding one (OUT/checkpoint)."""
    path = Path(path)
    if not path.is_dir():
        raise MissingFile(f"--init {path}: no such checkpoint directory")
    if not (path / CONFIG_FILE).is_file() and (path / CHECKPOINT_DIR / CONFIG_FILE).is_file():
        return path / CHECKPOINT_DIR
    return path


def lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    warmup, total, floor = cfg.warmup_steps(), cfg.steps, cfg.min_lr_ratio

    def factor(step: int) -> float:  # the factor of the peak rate used by optimizer step `step` (0-based)
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _check(cfg: TrainConfig) -> None:
    """What the values alone cannot say (TrainConfig checks those): the datasets and the head's depth."""
    for path in cfg.data:
        if not Path(path).is_dir():
            raise MissingFile(f"--data {path}: no such dataset directory")
    if cfg.reason_start_layer is not None or cfg.max_prefix is not None:  # checked here, before the (slow) data is read
        source = Path(cfg.out) / CHECKPOINT_DIR if cfg.resume else resolve_checkpoint(cfg.init) if cfg.init else None
        if source is not None and source.is_dir():
            head = read_checkpoint_config(source).action_head
        elif cfg.config is not None:
            head = get_config(cfg.config).action_head
        else:
            head = None  # no model to build: _build_model says so
        depth = None if head is None else head.depth
        if cfg.reason_start_layer is not None and depth is not None and not 0 <= cfg.reason_start_layer <= depth:
            raise InvalidInput(f"--reason-start-layer {cfg.reason_start_layer}: the action head has {depth} blocks (0..{depth})")
        if cfg.max_prefix is not None and head is not None and cfg.max_prefix >= head.chunk_size:
            raise InvalidInput(f"--max-prefix {cfg.max_prefix}: the action chunk has {head.chunk_size} steps (0..{head.chunk_size - 1})")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _rng_states() -> dict:
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.default_rng([seed, step, 1]).integers(2**62)))


def _build_model(cfg: TrainConfig, out: Path, stats) -> ChatVLA2:
    if cfg.resume:
        model = load_checkpoint(out / CHECKPOINT_DIR)
    elif cfg.init:
        model = load_checkpoint(resolve_checkpoint(cfg.init))
        if cfg.config is not None and cfg.config != model.cfg.name:
            raise InvalidInput(f"--config {cfg.config} disagrees with --init {cfg.init}, a {model.cfg.name!r} model")
    else:
        if cfg.config is None:
            raise InvalidInput("--config NAME is required to train a new model (or --init CHECKPOINT)")
        torch.manual_seed(cfg.seed)
        return ChatVLA2(get_config(cfg.config), stats=stats)
    if stats is None:
        return model
    head = model.cfg.action_head
    if (stats.action_dim, stats.state_dim) != (head.action_dim, head.state_dim):
        raise InvalidInput(
            f"the data has {stats.action_dim}-D actions and {stats.state_dim}-D state, the model {head.action_dim} and {head.state_dim}"
        )
    model.stats = stats
    return model


def train(cfg: TrainConfig, log: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> dict:
    """Run (or resume) one training run; returns {"step", "losses": [per-step dicts of this call]}.

    On the CPU denormal floats are flushed to zero while it runs: AdamW's second moments of the
    tiny gradients of AdaLN-Zero layers and unused experts fall into the denormal range, and x86
    arithmetic on them is ~100x slower (measured: the tiny preset's step 7.3 s -> 0.45 s)."""
    _check(cfg)
    flushed = torch.set_flush_denormal(True)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    # SIGTERM (`kill`, a session's end) stops the run as Ctrl-C does: it saves a resumable state.
    # A run started in the background by a non-interactive shell ignores SIGINT, so without this
    # nothing could stop it with a save.
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm) if threading.current_thread() is threading.main_thread() else None
    try:
        return _train(cfg, log)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        torch.set_num_threads(threads)
        if flushed:
            torch.set_flush_denormal(False)


class Terminated(KeyboardInterrupt):
    """SIGTERM during a run: handled as Ctrl-C (a save, then the exit code 128 + 15)."""

    def __init__(self, signum: int):
        super().__init__(f"signal {signum}")
        self.signum = signum


def _stop_on_sigterm(signum, frame) -> None:
    raise Terminated(signum)


def _train(cfg: TrainConfig, log: Callable[[str], None]) -> dict:
    out = Path(cfg.out)
    state_path = out / STATE_FILE
    if cfg.resume:
        if not state_path.is_file() or not (out / CHECKPOINT_DIR).is_dir():
            raise MissingFile(f"--resume: {out} holds no interrupted run ({STATE_FILE} and {CHECKPOINT_DIR}/)")
    elif (out / CHECKPOINT_DIR).exists() or state_path.exists():
        raise FileExistsError(f"--out {out} already holds a training run: --resume to continue it, or another --out")
    device = select_device(cfg.device)

    if cfg.data:
        data = TrainingData(cfg.data, load_image_text=cfg.stage == 1, frame_stride=cfg.frame_stride, progress=cfg.progress)
        if not data.episodes:
            raise InvalidInput(f"no robot episodes in {', '.join(cfg.data)}")
        stats = data.normalization_stats()
    else:
        data = None
        # A new model gets the expert's statistics on fixed scenes (the same for every run); a model
        # trained on the fly before (--init, --resume) keeps its own, which are those.
        stats = None if cfg.init or cfg.resume else _expert_statistics()
    model = _build_model(cfg, out, stats)
    stats = model.stats
    if cfg.reason_start_layer is not None:
        model.set_reason_start_layer(cfg.reason_start_layer)
    if cfg.max_prefix is not None:
        model.enable_prefix(cfg.max_prefix)
    mcfg = model.cfg
    # The MoE's training form (models/moe.py): "grouped" runs each expert on its routed tokens only;
    # measured on a demo-sized layer (1832 tokens, forward + backward, 2-core CPU): grouped 70 ms,
    # dense (every expert on every token) 169 ms, gather (per-token expert weights) 1650 ms.
    model.set_moe_implementation("grouped")
    if cfg.stage == 2:
        model.freeze_vlm()
    if cfg.stage == 0:  # the VLM learns to read; the action head has nothing to learn from text
        model.action_head.requires_grad_(False)
    model.to(device)
    if data is not None and cfg.stage == 1 and not data.samples:
        log("warning: no image-text samples in the data: stage 1 trains on robot frames only")

    # The auxiliary reading loss (training/reading_probe.py): stages 0 and 1, where the VLM learns.
    probe = ReadingProbe(mcfg, seed=cfg.seed).to(device) if cfg.reading_loss_weight > 0 and cfg.stage < 2 else None
    if probe is not None and cfg.init and not cfg.resume:
        _continue_probe(probe, cfg.init, log)
    # The auxiliary reading-attention loss (training/reading_attention.py): stages 0 and 1.
    reading_attention = (
        ReadingAttention(mcfg, model.tokenizer, head=cfg.reading_attention_head)
        if cfg.reading_attention_weight > 0 and cfg.stage < 2
        else None
    )
    if reading_attention is not None:
        reading_attention.attention(model).keep_probabilities = True
    parameters = [p for p in model.parameters() if p.requires_grad] + (list(probe.parameters()) if probe else [])
    optimizer = torch.optim.AdamW(parameters, lr=cfg.peak_lr(), weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    step = 0
    if cfg.resume:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if state.get("version") != STATE_VERSION:
            raise InvalidInput(f"{state_path}: version {state.get('version')}, expected {STATE_VERSION}")
        # A setting added after the run was saved is the one it ran with: the field's default.
        current = cfg.schedule_dict()
        saved = {**{k: field_default(TrainConfig, k) for k in current if k not in ("mix", "lr")}, **state["schedule"]}
        if saved != current and not _later_curriculum(saved, current, int(state["step"])):
            diff = {k: (v, current.get(k)) for k, v in saved.items() if current.get(k) != v}
            raise InvalidInput(f"--resume: the settings differ from the interrupted run's (saved, given): {diff}")
        if state["weights_sha256"] != _sha256(out / CHECKPOINT_DIR / WEIGHTS_FILE):
            raise InvalidInput(f"--resume: {out / CHECKPOINT_DIR} is not the checkpoint {STATE_FILE} was saved with")
        optimizer.load_state_dict(state["optimizer"])
        if probe is not None:
            probe.load_state_dict(state["reading_probe"])
        scheduler.load_state_dict(state["scheduler"])
        step = int(state["step"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        log(f"resuming {out} at step {step} of {cfg.steps}")
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_JSON).write_text(json.dumps(cfg.to_dict(), indent=2))
    _truncate_log(out / LOG_FILE, step)
    # Measured at step 0, every eval_every steps and at the end; a run shorter than eval_every is not.
    held_out = HeldOutPlan.for_stage(cfg.stage, mcfg, cfg.eval_scenes) if 0 < cfg.eval_every <= cfg.steps else None

    def save() -> None:
        save_checkpoint(model, out / CHECKPOINT_DIR)
        state = {
            "version": STATE_VERSION,
            "step": step,
            "optimizer": optimizer.state_dict(),
            "reading_probe": probe.state_dict() if probe is not None else None,
            "scheduler": scheduler.state_dict(),
            "rng": _rng_states(),
            "schedule": cfg.schedule_dict(),
            "weights_sha256": _sha256(out / CHECKPOINT_DIR / WEIGHTS_FILE),
        }
        partial = state_path.with_name(STATE_FILE + ".partial")
        torch.save(state, partial)
        os.replace(partial, state_path)

    trainable = sum(p.numel() for p in parameters)
    source = (
        f"{data.num_frames} robot frames in {len(data.episodes)} episodes, {len(data.samples)} image-text samples"
        if data is not None
        else "fresh samples on the fly: " + ", ".join(f"{k} {v:g}" for k, v in cfg.mix_weights().items())
    )
    log(
        f"stage {cfg.stage}: {mcfg.name} model, {trainable:,} trainable parameters on {device}; {source}; "
        f"{cfg.steps} steps of {cfg.batch_size}, peak lr {cfg.peak_lr():g}, warm-up {cfg.warmup_steps()}"
    )

    def train_mode() -> None:
        model.train()
        if cfg.stage == 2:
            model.vision.eval()
            model.language.eval()

    def measure() -> None:
        started = time.perf_counter()
        metrics = held_out.measure(model)
        metrics["seconds"] = time.perf_counter() - started
        write_eval_record(log_file, step, metrics)
        plot_curves(out / LOG_FILE, out / CURVES_PNG)
        train_mode()
        log(f"step {step}: held-out {held_out.summary(metrics)} ({metrics['seconds']:.0f} s)")

    train_mode()
    from tqdm import tqdm

    last = cfg.steps if cfg.stop_after is None else min(cfg.steps, step + cfg.stop_after)
    history: list[dict] = []
    bar = tqdm(
        total=cfg.steps, initial=step, desc=f"stage {cfg.stage}", unit="step", disable=not cfg.progress, file=sys.stderr, dynamic_ncols=True
    )
    batches = _batches(cfg, data, model, stats, step, last)
    try:
        with batches, (out / LOG_FILE).open("a") as log_file:
            if held_out is not None and step == 0:
                measure()  # the curves start from the untrained model
            while step < last:
                drawn_step, examples, waited = batches.next()
                assert drawn_step == step, (drawn_step, step)
                started = time.perf_counter()
                batch = {k: v.to(device) for k, v in make_batch(examples, mcfg, model.tokenizer, stats).items()}
                generator = _step_generator(cfg.seed, step)
                noise = torch.randn(batch["actions"].shape, generator=generator).to(device)
                timesteps = torch.randint(0, mcfg.scheduler.train_steps, (len(examples),), generator=generator).to(device)
                prefix_len = _prefix_lengths(mcfg.action_head.max_prefix, len(examples), generator)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.autocast == "bf16"):
                    visual = model.vision(batch["pixel_values"].flatten(0, 1))
                    losses = model(
                        **batch,
                        noise=noise,
                        timesteps=timesteps,
                        visual=visual,
                        prefix_len=None if prefix_len is None else prefix_len.to(device),
                    )
                    if (sums := cfg.text_arithmetic_at(step)) > 0:
                        drawn = text_arithmetic.text_batch(model.tokenizer, text_arithmetic.sums(cfg.seed, step, sums), mcfg.prompt_format)
                        losses["text_arithmetic_loss"] = text_arithmetic.loss(model.language, {k: v.to(device) for k, v in drawn.items()})
                        losses["loss"] = losses["loss"] + losses["text_arithmetic_loss"]
                    reading, probe_accuracy = (probe.loss(visual, examples) if probe is not None else None) or (None, None)
                attention_hit = None
                if reading is not None:
                    losses["reading_loss"] = reading
                    losses["loss"] = losses["loss"] + cfg.reading_loss_weight * reading
                if reading_attention is not None:
                    looked = reading_attention.loss(reading_attention.attention(model).probabilities, reading_attention.targets(examples))
                    if looked is not None:
                        losses["reading_attention_loss"], attention_hit = looked
                        losses["loss"] = losses["loss"] + cfg.reading_attention_weight * looked[0]
                optimizer.zero_grad(set_to_none=True)
                losses["loss"].backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(parameters, cfg.grad_clip)
                lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
                scheduler.step()
                step += 1
                seconds = time.perf_counter() - started
                record = {
                    "step": step,
                    **{k: v.item() for k, v in losses.items()},
                    "grad_norm": float(grad_norm),
                    "lr": lr,
                    "image_text": sum(len(e.actions) == 0 for e in examples),
                    "seconds_per_step": seconds,
                    "samples_per_s": len(examples) / seconds,
                    "wait_s": waited,
                    "utilisation": seconds / (seconds + waited),
                    **({"reading_probe_accuracy": probe_accuracy} if probe_accuracy is not None else {}),
                    **({"reading_attention_hit": attention_hit} if attention_hit is not None else {}),
                }
                history.append(record)
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
                bar.update(1)
                bar.set_postfix(
                    loss=f"{record['loss']:.4f}",
                    lm=f"{record['lm_loss']:.3f}",
                    act=f"{record['action_loss']:.3f}",
                    sps=f"{record['samples_per_s']:.1f}",
                )
                if held_out is not None and (step % cfg.eval_every == 0 or step == cfg.steps):
                    measure()
                if step % cfg.save_every == 0 and step < last:
                    save()
    except KeyboardInterrupt:
        bar.close()
        log(f"interrupted: saving step {step} to {out} (continue with --resume)")
        save()
        raise
    bar.close()
    save()
    if history:
        mean = lambda key: float(np.mean([r[key] for r in history]))  # noqa: E731
        computed = sum(r["seconds_per_step"] for r in history)
        utilisation = computed / (computed + sum(r["wait_s"] for r in history))
        log(
            f"step {step}/{cfg.steps}: loss {history[-1]['loss']:.4f}; {mean('samples_per_s'):.2f} samples/s, "
            f"{mean('seconds_per_step'):.3f} s/step over {len(history)} steps, trainer utilisation {utilisation:.1%}; "
            f"saved {out / CHECKPOINT_DIR}"
        )
    return {"step": step, "losses": history}


def _continue_probe(probe: ReadingProbe, init: str, log: Callable[[str], None]) -> None:
    """Start the reading probe where the --init run's ended, when --init is a training run that had one:
    a probe begun anew passes a random linear map's gradients into the vision encoder it was trained
    on (measured: stage 1's reading loss 0.55 at its first steps from a fresh probe, against stage 0's
    last 0.06). A checkpoint directory alone has no probe: it starts anew."""
    run = Path(init)
    state_path = (run.parent if run.name == CHECKPOINT_DIR else run) / STATE_FILE
    if not state_path.is_file():
        return
    saved = torch.load(state_path, map_location="cpu", weights_only=True).get("reading_probe")
    current = probe.state_dict()
    if saved and saved.keys() == current.keys() and all(saved[k].shape == current[k].shape for k in saved):
        probe.load_state_dict(saved)
        log(f"reading probe: continued from {state_path}")


# Settings a resumed run may take up from a later step (a curriculum): they change nothing before it.
_FROM_A_STEP = ("text_arithmetic", "text_arithmetic_from")


def _later_curriculum(saved: dict, given: dict, step: int) -> bool:
    """Whether `given` differs from `saved` only in text sums that neither has before `step`: the
    resumed run is then the one an uninterrupted run with `given` would be (tested)."""
    if any(saved.get(k) != given.get(k) for k in saved.keys() | given.keys() if k not in _FROM_A_STEP):
        return False
    return all(d.get("text_arithmetic", 0) == 0 or d.get("text_arithmetic_from", 0) >= step for d in (saved, given))


def _prefix_lengths(max_prefix: int, batch: int, generator: torch.Generator) -> torch.Tensor | None:
    """Each sample's committed prefix for a head trained for real-time chunking: none for half the
    samples (the first chunk of an episode, and the `switch` and `ensemble` modes, have none), 1..N
    steps uniformly for the others; None (nothing drawn) for a head without it."""
    if max_prefix <= 0:
        return None
    lengths = torch.randint(1, max_prefix + 1, (batch,), generator=generator)
    return torch.where(torch.rand(batch, generator=generator) < 0.5, 0, lengths)


@functools.cache
def _expert_statistics():
    """expert_normalization_stats of both tasks, once per process (~10 s: 200 kinematic trajectories)."""
    return expert_normalization_stats(ROBOT_SOURCES.values())


class _DatasetBatches:
    """The batches of steps start.. from datasets on disk (training/data.py), drawn in the trainer."""

    def __init__(self, cfg: TrainConfig, data: TrainingData, model: ChatVLA2, stats, start: int) -> None:
        self.cfg, self.data, self.model, self.stats, self.step = cfg, data, model, stats, start

    def next(self) -> tuple[int, list, float]:
        cfg, data, mcfg = self.cfg, self.data, self.model.cfg
        head = mcfg.action_head
        drawn = draw_step(cfg.seed, self.step, cfg.batch_size, data.num_frames, len(data.samples), cfg.stage == 1)
        examples = [
            data.robot_example(i, head.chunk_size, mcfg.vision.num_views)
            if kind == "robot"
            else data.image_text_example(i, self.stats.state_mean, head.action_dim, mcfg.vision.num_views)
            for kind, i in drawn
        ]
        self.step += 1
        return self.step - 1, examples, 0.0

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        pass


def _batches(cfg: TrainConfig, data: TrainingData | None, model: ChatVLA2, stats, start: int, end: int):
    """The step batches of the run, from --data or drawn on the fly by worker processes."""
    if data is not None:
        return _DatasetBatches(cfg, data, model, stats, start)
    mcfg = model.cfg
    mixture = Mixture(
        weights=cfg.mix_weights(),
        height=mcfg.vision.image_height,
        width=mcfg.vision.image_width,
        chunk_size=mcfg.action_head.chunk_size,
        num_views=mcfg.vision.num_views,
        action_dim=mcfg.action_head.action_dim,
        text_state=stats.state_mean,
    )
    return BatchPrefetcher(mixture, cfg.seed, cfg.batch_size, start_step=start, workers=cfg.workers, end_step=end)


def _truncate_log(path: Path, step: int) -> None:
    """Keep the log lines of steps <= step (a resumed run rewrites what came after its checkpoint)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if line.strip() and json.loads(line)["step"] <= step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            pass  # a line half-written when the run was killed
    path.write_text("".join(line + "\n" for line in kept))
