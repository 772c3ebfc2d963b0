"""`TrainConfig`: the settings of one training run; `chatvla2 train`'s defaults come from here.

Learning rates (docs/reference/model.md, point 5: AdamW, lr 2e-5, 3k warm-up steps, cosine to 2e-6). The paper
fine-tunes a pretrained 2B VLM with a large batch; here the VLM starts from random weights at a few
million parameters and batches of 8 on a CPU, so stage 1 uses a larger peak rate, 3e-4 (the usual
rate for transformers of this width trained from scratch), and stage 2 (the action head alone, from
its stage-1 weights) 1e-4. Both warm up linearly over `warmup_fraction` of the steps (at least one
step) and decay by a cosine to `min_lr_ratio` x the peak (0.1, the paper's 2e-5 -> 2e-6).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from chatvla2.contract.config import field_default

# Peak learning rate per stage when --lr is not given (see the module docstring).
DEFAULT_LR = {1: 3e-4, 2: 1e-4}
# Image-text : robot samples in stage 1 (docs/reference/model.md, point 5: 1:3): every 4th sample is image-text.
IMAGE_TEXT_EVERY = 4


@dataclass
class TrainConfig:
    config: str | None = None  # model preset (stage 1 from scratch); with --init the checkpoint's config
    stage: int = 1
    data: list[str] = field(default_factory=list)
    out: str | None = None
    init: str | None = None  # a checkpoint (or a training output directory) to start from
    steps: int = 2000  # optimizer steps of the whole run (the schedule's length)
    batch_size: int = 8
    lr: float | None = None  # peak learning rate; None: DEFAULT_LR[stage]
    warmup_fraction: float = 0.05
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0  # max global gradient norm
    seed: int = 0
    resume: bool = False
    save_every: int = 200  # steps between checkpoints (and one at the end)
    stop_after: int | None = None  # stop (and save) after this many steps of this invocation
    device: str = "auto"  # "auto": cuda when present, else cpu
    # Every frame_stride-th frame of each episode is a training frame (training/data.py).
    frame_stride: int = 5
    # Override of the action head's reason_start_layer (None: the model's own); the head's depth
    # gives the paper's ablation "o in all layers" (models/action_head.py).
    reason_start_layer: int | None = None
    progress: bool = True  # the tqdm bar

    def peak_lr(self) -> float:
        return DEFAULT_LR[self.stage] if self.lr is None else self.lr

    def warmup_steps(self) -> int:
        return max(1, round(self.warmup_fraction * self.steps))

    def schedule_dict(self) -> dict:
        """What must match for --resume to continue the same run."""
        keys = ("stage", "steps", "batch_size", "warmup_fraction", "min_lr_ratio", "weight_decay", "grad_clip", "seed",
                "frame_stride", "reason_start_layer")
        return {**{k: getattr(self, k) for k in keys}, "lr": self.peak_lr()}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def default(name: str):
    return field_default(TrainConfig, name)
