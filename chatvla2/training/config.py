"""`TrainConfig`: the settings of one training run; `chatvla2 train`'s defaults come from here.

Learning rates (docs/reference/model.md, point 5: AdamW, lr 2e-5, 3k warm-up steps, cosine to 2e-6). The paper
fine-tunes a pretrained 2B VLM with a large batch; here the VLM starts from random weights at a few
million parameters and batches of 8 on a CPU, so stage 1 uses a larger peak rate, 3e-4 (the usual
rate for transformers of this width trained from scratch), and stage 2 (the action head alone, from
its stage-1 weights) 1e-4. Both warm up linearly over `warmup_fraction` of the steps (at least one
step) and decay by a cosine to `min_lr_ratio` x the peak (0.1, the paper's 2e-5 -> 2e-6).

Stage 0 stands in for the pre-training the paper starts from (Qwen2-VL, a VLM that already reads):
the vision encoder and the language model learn to answer questions about rendered scenes whose
text is known exactly (sim/tasks/reading.py, image_text.py); the action head does not train.

Data: without --data every sample is drawn fresh, on the fly, from (seed, step, slot)
(training/scene_stream.py), by the stage's mixture of sources (MIXES, or --mix); with --data the
samples come from datasets on disk (training/data.py: recorded robot data arrives that way).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from chatvla2.contract.command_config import option
from chatvla2.contract.config import PRESETS, get_config
from chatvla2.contract.errors import InvalidInput

# Peak learning rate per stage when --lr is not given (see the module docstring). Stage 0: 5e-4, at
# which a demo-sized VLM with the reading probe trained 2,000 steps of 16 without its visual tokens
# collapsing (1e-3 collapsed them, without the probe).
DEFAULT_LR = {0: 5e-4, 1: 3e-4, 2: 1e-4}
# Image-text : robot samples in stage 1 (docs/reference/model.md, point 5: 1:3): every 4th sample is image-text.
IMAGE_TEXT_EVERY = 4
# The on-the-fly mixture of each stage (source -> weight, training/scene_stream.py). Stage 1 keeps
# the paper's 1:3 of image-text to robot samples: a third of the image-text share is stage 0's reading
# questions (so reading is not forgotten), a third the reasoning for math scenes of every look and
# operator (scene_stream.SCENE_REASONING: sums worked out with the image in context); robot data is
# the in-domain split only.
MIXES = {
    0: "reading=3,image_text=1",
    1: "robot_math=4.5,robot_toy=4.5,reading=1,scene_reasoning=1,image_text=1",
    2: "robot_math=1,robot_toy=1",
}


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """`chatvla2 train`'s options (fields with a "help": contract/command_config.py) and the
    schedule's fixed settings (the others)."""

    config: str | None = option(f"model preset of a new model: {', '.join(PRESETS)} (with --init: the checkpoint's)", None, metavar="NAME")
    stage: int = option(
        "0: the VLM learns to read (image-text only); 1: co-train everything on image-text + robot data (1:3); "
        "2: the action head only, VLM frozen",
        1,
        choices=(0, 1, 2),
    )
    data: tuple[str, ...] = option(
        "a dataset directory (chatvla2 sim generate); repeat for several (default: fresh scenes on the fly)", (), metavar="DIR"
    )
    mix: str | None = option(
        "on-the-fly sources and weights, e.g. robot_math=3,reading=1 (default: the stage's, config.MIXES)", None, metavar="SPEC"
    )
    workers: int = option("processes drawing on-the-fly samples ahead of the trainer (default %(default)s; 0: in the trainer)", 1)
    reading_loss_weight: float = option(
        "weight of the auxiliary per-visual-token reading loss, stages 0-1 (training/reading_probe.py; default %(default)s)", 1.0
    )
    reading_attention_weight: float = option(
        "weight of the auxiliary reading-attention loss, stages 0-1: one head looks at each character it copies "
        "(training/reading_attention.py; default %(default)s)",
        0.0,
    )
    reading_attention_head: int = option(
        "which head of the language model's last layer the reading-attention loss teaches (default %(default)s)", 0, metavar="H"
    )
    text_arithmetic: int = option(
        "text-only sums per step added to the language model's loss, stages 0-1 (training/text_arithmetic.py; default %(default)s)",
        0,
        metavar="N",
    )
    text_arithmetic_from: int = option(
        "the first step with --text-arithmetic sums; a run may take them up from a step after the one it resumes at (default %(default)s)",
        0,
        metavar="STEP",
    )
    eval_every: int = option("steps between held-out measurements, written to the log and curves.png (0: never)", 500, metavar="N")
    eval_scenes: int = option("held-out scenes per split and task in each measurement (default %(default)s)", 16, metavar="N")
    out: str = option("output directory: checkpoint/, training_state.pt, train_log.jsonl", metavar="DIR")
    init: str | None = option(
        "start from this checkpoint (stage 2: the stage-1 model; a training --out works too)", None, metavar="CHECKPOINT"
    )
    steps: int = option("optimizer steps of the run (default %(default)s)", 2000)
    batch_size: int = option("samples per step (default %(default)s)", 8)
    # None: DEFAULT_LR[stage]
    lr: float | None = option(f"peak learning rate (default: stage 0 {DEFAULT_LR[0]:g}, 1 {DEFAULT_LR[1]:g}, 2 {DEFAULT_LR[2]:g})", None)
    warmup_fraction: float = 0.05
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0  # max global gradient norm
    seed: int = option("seed of weights, sampling and noise (default %(default)s)", 0)
    resume: bool = option("continue the interrupted run in --out", False)
    save_every: int = option("steps between checkpoints (default %(default)s)", 200)
    stop_after: int | None = option("stop (saving a resumable state) after N steps of this invocation", None, metavar="N")
    device: str = option("auto (cuda when present), cpu, cuda, cuda:N", "auto")
    # bf16: the forward passes under torch.autocast (matrix products in bfloat16; the weights, their
    # gradients and AdamW's state stay float32). Measured on the reader at stage 1 (one thread, 2-core
    # AVX512-BF16 CPU): 1.90 -> 1.15-1.29 s/step; gradient cosine against float32 on the same batch
    # and noise 0.998-0.999 (vision), 0.992-0.999 (language), 1.0 (action head); docs/training-and-demo-model.md.
    autocast: str = option(
        "none, or bf16: forward passes in bfloat16 under torch.autocast (default %(default)s)", "none", choices=("none", "bf16")
    )
    # One thread: at these model sizes a CPU step was faster on one thread than on two (0.17 s
    # against 0.66 s, docs/training-and-demo-model.md), and the other core draws the samples.
    threads: int = option("torch threads of the trainer on the CPU (default %(default)s)", 1)
    # Every frame_stride-th frame of each episode is a training frame (training/data.py).
    frame_stride: int = option("train on every Nth frame of each episode (default %(default)s)", 5)
    # Override of the action head's reason_start_layer (None: the model's own); the head's depth
    # gives the paper's ablation "o in all layers" (models/action_head.py).
    reason_start_layer: int | None = option(
        "head blocks >= N take the reasoning r, earlier ones o (the head's depth: the o-only ablation); default: the model's",
        None,
        metavar="N",
    )
    # Real-time chunking (models/action_head.py): the head learns to continue committed prefixes of
    # 0..N steps. None: the model's own max_prefix (0 unless a checkpoint was trained with one).
    max_prefix: int | None = option(
        "train the action head to continue a committed prefix of up to N steps (real-time chunking; default: the model's)",
        None,
        metavar="N",
    )
    progress: bool = option("no progress bar", True, flag="--no-progress")

    def __post_init__(self) -> None:
        """The values alone, one line each (the datasets and checkpoints: trainer.py, before any data is read)."""
        if self.stage not in (0, 1, 2):
            raise InvalidInput(f"--stage {self.stage}: expected 0, 1 or 2")
        if self.stage == 2 and not self.init and not self.resume:
            raise InvalidInput("--stage 2 trains the action head of a stage-1 model: give --init CHECKPOINT")
        if not self.out:
            raise InvalidInput("--out DIR is required")
        if self.data and self.mix is not None:
            raise InvalidInput("--mix chooses on-the-fly sources: it does not apply to --data")
        if self.data and self.stage == 0:
            raise InvalidInput("--stage 0 draws its reading samples on the fly: leave out --data")
        if self.workers < 0 or self.eval_every < 0 or self.reading_loss_weight < 0 or self.reading_attention_weight < 0:
            raise InvalidInput("--workers, --eval-every, --reading-loss-weight and --reading-attention-weight must be at least 0")
        self.mix_weights()  # a malformed --mix: one clear error before any work
        for name in ("steps", "batch_size", "save_every", "frame_stride", "eval_scenes", "threads"):
            if getattr(self, name) < 1:
                raise InvalidInput(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.text_arithmetic < 0 or self.text_arithmetic_from < 0:
            raise InvalidInput("--text-arithmetic and --text-arithmetic-from must be at least 0")
        if self.text_arithmetic and self.stage == 2:
            raise InvalidInput("--text-arithmetic teaches the language model, which stage 2 freezes: leave it out")
        if self.max_prefix is not None and self.max_prefix < 0:
            raise InvalidInput(f"--max-prefix must be at least 0, got {self.max_prefix}")
        if self.stop_after is not None and self.stop_after < 1:
            raise InvalidInput(f"--stop-after must be at least 1, got {self.stop_after}")
        if self.peak_lr() <= 0 or not math.isfinite(self.peak_lr()):
            raise InvalidInput(f"--lr must be a positive number, got {self.lr}")
        if self.config is not None:
            get_config(self.config)  # an unknown preset: one clear error before any data is read

    def mix_weights(self) -> dict[str, float]:
        """The on-the-fly sources and weights (--mix, else the stage's MIXES entry)."""
        spec = self.mix if self.mix is not None else MIXES[self.stage]
        weights = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            name, sep, value = item.partition("=")
            try:
                weight = float(value) if sep else float("nan")
            except ValueError:
                weight = float("nan")
            if not name.strip() or not math.isfinite(weight) or weight < 0:
                raise InvalidInput(f"--mix {spec!r}: expected SOURCE=WEIGHT[,SOURCE=WEIGHT...], got {item!r}")
            weights[name.strip()] = weight
        if not any(weights.values()):
            raise InvalidInput(f"--mix {spec!r}: give at least one source a positive weight")
        if self.stage == 2 and any(not name.startswith("robot_") for name, w in weights.items() if w > 0):
            raise InvalidInput(f"--mix {spec!r}: stage 2 trains the action head, on robot sources only")
        return weights

    def peak_lr(self) -> float:
        return DEFAULT_LR[self.stage] if self.lr is None else self.lr

    def warmup_steps(self) -> int:
        return max(1, round(self.warmup_fraction * self.steps))

    def schedule_dict(self) -> dict:
        """What must match for --resume to continue the same run."""
        keys = (
            "stage",
            "steps",
            "batch_size",
            "warmup_fraction",
            "min_lr_ratio",
            "weight_decay",
            "grad_clip",
            "seed",
            "frame_stride",
            "reason_start_layer",
            "max_prefix",
            "reading_loss_weight",
            "reading_attention_weight",
            "reading_attention_head",
            "text_arithmetic",
            "text_arithmetic_from",
            "autocast",
        )
        fly = {} if self.data else {"mix": self.mix_weights()}
        return {**{k: getattr(self, k) for k in keys}, "lr": self.peak_lr(), **fly}

    def text_arithmetic_at(self, step: int) -> int:
        """How many text sums step `step` (0-based) trains on."""
        return self.text_arithmetic if step >= self.text_arithmetic_from else 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
