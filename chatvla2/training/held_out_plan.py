"""What a training run measures on held-out data every --eval-every steps, per stage.

Stage 0 (reading) is measured where it will be used: the robot's reasoning on held-out math-game
scenes of both splits (the stage-0 mixture includes that question, sim/tasks/reading.py's
`scene_reasoning`), and exact answers to the board, card and arithmetic questions in each of
reading.py's looks. Stages 1 and 2 add the toy-placement reasoning and the action error
(training/held_out.py), and keep the reading questions to show whether reading is forgotten.

The held-out reading samples use seeds from READING_SEED_BASE = 2**62 up: training draws its
scenes' seeds below 2**62 (scene_stream.SCENE_SEED_BITS), so no held-out sample is a training one.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatvla2.contract.config import ModelConfig
from chatvla2.sim.tasks import math_game, reading, toy_placement
from chatvla2.training import held_out
from chatvla2.training.scene_stream import SCENE_SEED_BITS

READING_SEED_BASE = 2**SCENE_SEED_BITS
READING_KINDS = ("board", "cards", "arithmetic")
# The figures a log line shows (all of them go to the log and the curves).
SUMMARY = (
    ("math/in_domain/read_board", "board"),
    ("math/in_domain/read_cards", "cards"),
    ("math/open_world/read_board", "ow board"),
    ("math/open_world/read_cards", "ow cards"),
    ("math/in_domain/chosen_card", "choice"),
    ("toy/in_domain/object_recognition", "toy"),
    ("action/l1", "action l1"),
)


@dataclass(frozen=True)
class HeldOutPlan:
    stage: int
    height: int
    width: int
    scenes: int  # per split and task
    reading_samples: tuple[dict, ...]

    @classmethod
    def for_stage(cls, stage: int, cfg: ModelConfig, scenes: int) -> HeldOutPlan:
        height, width = cfg.vision.image_height, cfg.vision.image_width
        # Half as many per look and kind in stages 1-2: there they only watch for forgetting.
        per = scenes if stage == 0 else max(1, scenes // 2)
        samples = []
        for k, kind in enumerate(READING_KINDS):
            for look_index, look in enumerate(reading.LOOKS):
                for i in range(per):
                    seed = READING_SEED_BASE + (k * len(reading.LOOKS) + look_index) * 1_000_000 + i
                    drawn = reading.sample(seed, height, width, look=look, kind=kind)
                    samples.append({**drawn, "kind": f"{kind}_{look}"})
        return cls(stage, height, width, scenes, tuple(samples))

    def measure(self, model) -> dict[str, float]:
        """Every figure of this stage's held-out set (deterministic: greedy text, fixed noise)."""
        if self.stage == 0:
            metrics = held_out.measure(
                model, scenes_per_split=self.scenes, tasks=(math_game.TASK,), height=self.height, width=self.width, action_frames=0
            )
        else:
            metrics = held_out.measure(
                model,
                scenes_per_split=self.scenes,
                tasks=(math_game.TASK, toy_placement.TASK),
                height=self.height,
                width=self.width,
                action_frames=self.scenes,
            )
        metrics.update(held_out.measure_reading(model, list(self.reading_samples)))
        return metrics

    @staticmethod
    def summary(metrics: dict[str, float]) -> str:
        shown = [f"{label} {metrics[key]:.2f}" for key, label in SUMMARY if key in metrics]
        reading_keys = [k for k in metrics if k.startswith("reading/")]
        if reading_keys:
            shown.append(f"reading {sum(metrics[k] for k in reading_keys) / len(reading_keys):.2f}")
        return ", ".join(shown)
