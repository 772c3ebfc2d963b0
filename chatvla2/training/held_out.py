"""What the model has learned, measured while it trains, on fresh held-out scenes.

The training loss says how well the model fits its own data; these numbers say whether it can
do the tasks on scenes it never trained on, read the way the paper reads them, and one level finer
so a learning curve shows *which* skill comes first (reading the board, reading the cards,
the sum, the choice of card):

- `measure` queries the model at the first frame of held-out math-game and toy-placement episodes
  (both splits: the scene as the camera sees it before anything moves, arms at home, the task's
  instruction, the start state) and scores its greedy reasoning with the strict parser of
  sim/tasks/scoring.py: a text that does not parse scores 0 on every read. It also measures the
  action chunk's L1 error against the scripted expert on held-out in-domain robot frames, with
  the model's own reasoning and teacher-forced with the expert's.
- `measure_reading` scores stage-0 question answering (image_text.py-style samples) by exact match.

Held-out scenes come from random streams of their own (make_scene's `tag`, scene_stream.py), so they are
never a training or an evaluation episode. Everything is deterministic: greedy decoding and a
fixed diffusion noise per query.
"""

from __future__ import annotations

import contextlib
import difflib
from collections import defaultdict

import numpy as np
import torch

from chatvla2.contract.names import UnknownChoice
from chatvla2.models.training_batch import Example, make_batch
from chatvla2.models.vla import ChatVLA2, masked_mean
from chatvla2.sim.tasks import math_game, scoring, toy_placement
from chatvla2.sim.tasks.env import START_STATE, TaskEnv, still_world
from chatvla2.sim.tasks.splits import IN_DOMAIN, SPLITS
from chatvla2.training.scene_stream import HELD_OUT_TAG_MATH, HELD_OUT_TAG_TOY, held_out_scene

MATH, TOY = math_game.TASK, toy_placement.TASK
# The metric keys' task names, and the held-out random streams (make_scene's `tag`): scene_stream.py keeps
# every stream's tag in one place (evaluation 1/2, image-text 3/11/12, training 21/22, held out 31/32).
PREFIXES = {MATH: "math", TOY: "toy"}
TAGS = {MATH: HELD_OUT_TAG_MATH, TOY: HELD_OUT_TAG_TOY}
MATH_READS = ("read_board", "read_cards", "read_each_card", "arithmetic", "arithmetic_given_read", "chosen_card", "parses", "ocr", "math")
TOY_READS = ("object_recognition", "spatial_affordance", "parses")
READING_MARGIN = 8  # tokens decoded past the answer's length: enough to see that the model does not stop


def query_seed(seed: int, *where: int) -> int:
    """The diffusion noise's seed of one query: fixed by (seed, where), so a measurement repeats."""
    return int(np.random.SeedSequence([seed, *where]).generate_state(1)[0])


# --- scoring one text ---------------------------------------------------------------------------------


def math_reads(text: str, truth: scoring.MathTruth) -> dict[str, float]:
    """The reads of one math-game reasoning text (module docstring of scoring.py for the forms).

    read_board: "On the whiteboard is A?B." has both numbers and the operator right; read_cards:
    all three cards right; read_each_card: the fraction of them right; arithmetic: "A?B=R." has the
    true result; arithmetic_given_read: the text restates the expression it read and R is that
    expression's value (right or wrong reading, it computed what it read); chosen_card: score_math's
    math_cards; ocr (/4) and math (/2): the paper's points."""
    parsed = scoring.parse_math(text)
    if parsed is None:
        return dict.fromkeys(MATH_READS, 0.0)
    points = scoring.score_math(text, truth)
    groups = parsed[1]
    read, restated, result, cards = groups[0:3], groups[3:6], groups[6], groups[7:10]
    computed = str(math_game.evaluate(int(read[0]), read[1], int(read[2])))
    return {
        "read_board": float(read == (str(truth.a), truth.op, str(truth.b))),
        "read_cards": float(tuple(cards) == tuple(truth.cards)),
        "read_each_card": sum(c == t for c, t in zip(cards, truth.cards)) / 3.0,
        "arithmetic": float(points["math_answer"]),
        "arithmetic_given_read": float(restated == read and result == computed),
        "chosen_card": float(points["math_cards"]),
        "parses": 1.0,
        "ocr": float(points["ocr"]),
        "math": float(points["math"]),
    }


def toy_reads(text: str, truth: scoring.ToyTruth) -> dict[str, float]:
    points = scoring.score_toy(text, truth)
    return {
        "object_recognition": float(points["object_recognition"]),
        "spatial_affordance": float(points["spatial_affordance"]),
        "parses": float(points["parsed"]),
    }


def first_frame(scene, height: int, width: int) -> tuple[np.ndarray, object]:
    """(image, truth) of an episode's first observation: what `chatvla2 eval` scores."""
    image, world = still_world(scene, height, width, START_STATE)
    truth = scene.truth() if scene.task == MATH else scene.truth(world)
    return image, truth


# --- the model ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _inference(model):
    """Eval mode while measuring, then every submodule's own mode back (stage 2 trains the action head
    with the VLM in eval mode: a blanket model.train() would undo that)."""
    modules = list(model.modules()) if isinstance(model, torch.nn.Module) else []
    modes = [m.training for m in modules]
    for m in modules:
        m.training = False
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in zip(modules, modes):
            m.training = mode


def _views(model, image: np.ndarray) -> list[np.ndarray]:
    return [image] * model.cfg.vision.num_views  # the top camera in every view, as `chatvla2 eval` feeds it


def _noise(model, seed: int) -> torch.Tensor:
    """ChatVLA2.act's own draw for `seed`, made here so the teacher-forced chunk starts from the same noise."""
    head = model.cfg.action_head
    return torch.randn(1, head.chunk_size, head.action_dim, generator=torch.Generator().manual_seed(seed))


def reason(model, image: np.ndarray, instruction: str, seed: int = 0) -> str:
    """The model's greedy reasoning for one frame at the start state, bounded by max_reasoning_tokens."""
    out = model.act(_views(model, image), instruction, START_STATE, seed=seed, max_new_tokens=model.cfg.language.max_reasoning_tokens)
    return out.reasoning


def teacher_forced_actions(model: ChatVLA2, frames, instruction: str, reasoning: str, state, noise) -> np.ndarray:
    """The unnormalised chunk the action head denoises when the reasoning is `reasoning` (not the
    model's own): one teacher-forced forward pooled into o and r exactly as training pools them
    (models/training_batch.py: the positions ChatVLA2.act pools), then ChatVLA2.act's sampler."""
    device = model.language.embed_tokens.weight.device
    dtype = model.language.embed_tokens.weight.dtype
    head = model.cfg.action_head
    example = Example(list(frames), instruction, reasoning, np.asarray(state), np.zeros((0, head.action_dim), np.float32))
    batch = make_batch([example], model.cfg, model.tokenizer, model.stats)
    batch = {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in batch.items()}
    embeddings = model.embed(batch["input_ids"], batch["pixel_values"])
    hidden, _, _ = model.language(embeddings, batch["position_ids"], batch["attention_mask"])
    o = masked_mean(hidden, batch["observation_mask"])
    r = masked_mean(hidden, batch["reasoning_mask"])
    normalised = model.action_head.sample(o, r, batch["state"], noise.to(device, dtype))
    return model.stats.unnormalize_actions(normalised[0].float().cpu().numpy())


# --- measurements -----------------------------------------------------------------------------------------


def measure_reads(model, *, scenes_per_split: int, tasks=(MATH, TOY), height: int, width: int, seed: int = 0) -> dict[str, float]:
    """Each read's mean over the held-out scenes of each split, as "<math|toy>/<split>/<read>"."""
    metrics: dict[str, float] = {}
    for t, task in enumerate(_check_tasks(tasks)):
        for s, split in enumerate(SPLITS):
            rows = []
            for i in range(scenes_per_split):
                scene = held_out_scene(task, split, i)
                image, truth = first_frame(scene, height, width)
                text = reason(model, image, scene.instruction, seed=query_seed(seed, t, s, i))
                rows.append(math_reads(text, truth) if task == MATH else toy_reads(text, truth))
            for key in rows[0] if rows else ():
                metrics[f"{PREFIXES[task]}/{split}/{key}"] = float(np.mean([row[key] for row in rows]))
    return metrics


def _check_tasks(tasks) -> tuple[str, ...]:
    """The tasks, checked before any (slow) query is made."""
    tasks = tuple(tasks)
    for task in tasks:
        if task not in PREFIXES:
            raise UnknownChoice(f"unknown task {task!r}; tasks: {', '.join(PREFIXES)}")
    return tasks


def expert_frame(task: str, index: int, height: int, width: int, seed: int = 0) -> dict:
    """A held-out in-domain robot frame: frame t (drawn by `seed`) of the expert's trajectory of the
    held-out scene `index`, moved to kinematically (nothing rendered on the way), then rendered.
    {"image", "instruction", "state", "reasoning" (the expert's at t), "actions" (expert[t:t+...]), "t"}."""
    env = TaskEnv(task, IN_DOMAIN, height, width, render_images=False)
    env.reset(options={"scene": held_out_scene(task, IN_DOMAIN, index)})
    expert = env.expert_actions()
    t = int(np.random.default_rng([seed, TAGS[task], index]).integers(len(expert)))
    for action in expert[:t]:
        env.step(action)
    return {
        "image": env.render(),
        "instruction": env.scene.instruction,
        "state": env.world.state.copy(),
        "reasoning": env.expert_reasoning(),
        "actions": expert[t:],
        "t": t,
    }


def measure_actions(
    model, *, frames: int, tasks=(MATH, TOY), height: int, width: int, seed: int = 0, teacher_forced: bool | None = None
) -> dict[str, float]:
    """The mean absolute error ("action/l1"), in normalised units (model.stats.normalize_actions), of
    the model's chunk against the expert's next actions, over every step the episode still has
    (pooled over frames); "action/l1_teacher_forced" the same with the expert's reasoning in place of
    the model's (only for a ChatVLA2: `teacher_forced` None means when possible)."""
    tasks = _check_tasks(tasks)
    if not tasks:
        return {}
    if teacher_forced is None:
        teacher_forced = isinstance(model, ChatVLA2)
    chunk = model.cfg.action_head.chunk_size
    total = {"action/l1": 0.0, "action/l1_teacher_forced": 0.0}
    count = 0
    for k in range(frames):
        task = tasks[k % len(tasks)]
        frame = expert_frame(task, k // len(tasks), height, width, seed)
        expert = model.stats.normalize_actions(frame["actions"][:chunk])
        n = len(expert)
        noise = _noise(model, query_seed(seed, 1000, k))
        views = _views(model, frame["image"])
        own = model.act(
            views, frame["instruction"], frame["state"], noise=noise, max_new_tokens=model.cfg.language.max_reasoning_tokens
        ).actions
        total["action/l1"] += float(np.abs(model.stats.normalize_actions(own[:n]) - expert).sum())
        if teacher_forced:
            forced = teacher_forced_actions(model, views, frame["instruction"], frame["reasoning"], frame["state"], noise)
            total["action/l1_teacher_forced"] += float(np.abs(model.stats.normalize_actions(forced[:n]) - expert).sum())
        count += expert.size
    if not count:
        return {}
    keys = ("action/l1", "action/l1_teacher_forced") if teacher_forced else ("action/l1",)
    return {key: total[key] / count for key in keys}


def measure(
    model, *, scenes_per_split: int, tasks=(MATH, TOY), height: int, width: int, action_frames: int, seed: int = 0
) -> dict[str, float]:
    """Every held-out metric in one flat dict of floats (module docstring): "<math|toy>/<split>/<read>"
    from `scenes_per_split` scenes per task and split, and "action/l1" (and
    "action/l1_teacher_forced" for a ChatVLA2) from `action_frames` in-domain robot frames.

    `model`: a ChatVLA2, or anything with its .act, .cfg and .stats (a scripted policy)."""
    tasks = _check_tasks(tasks)
    with _inference(model):
        metrics = measure_reads(model, scenes_per_split=scenes_per_split, tasks=tasks, height=height, width=width, seed=seed)
        metrics.update(measure_actions(model, frames=action_frames, tasks=tasks, height=height, width=width, seed=seed))
    return metrics


def measure_reading(model, samples, margin: int = READING_MARGIN) -> dict[str, float]:
    """Per kind of sample ({"image", "question", "answer", "kind"}): the fraction whose greedy answer is
    the answer exactly ("reading/<kind>/exact"), and the mean character similarity of answer and
    truth ("reading/<kind>/chars", difflib's ratio: 2 x matched characters / both lengths), which
    rises before exact reads do and so shows whether a run is learning. Decoding stops `margin` tokens
    past the answer's length: a longer answer is wrong however it goes on, and the cut keeps stage 0's
    checks fast."""
    hits: dict[str, list[bool]] = defaultdict(list)
    similarity: dict[str, list[float]] = defaultdict(list)
    state = model.stats.state_mean  # what training feeds with image-text samples (training/data.py)
    with _inference(model):
        for sample in samples:
            answer = sample["answer"]
            length = len(model.tokenizer.encode(answer)) if getattr(model, "tokenizer", None) else len(answer)
            out = model.act(_views(model, sample["image"]), sample["question"], state, seed=0, max_new_tokens=length + margin)
            hits[sample["kind"]].append(out.reasoning.strip() == answer.strip())
            similarity[sample["kind"]].append(difflib.SequenceMatcher(None, out.reasoning.strip(), answer.strip()).ratio())
    exact = {f"reading/{kind}/exact": float(np.mean(values)) for kind, values in sorted(hits.items())}
    return exact | {f"reading/{kind}/chars": float(np.mean(values)) for kind, values in sorted(similarity.items())}
