"""Fresh training samples drawn on the fly: the sample of (seed, step, slot) is a pure function of those integers.

Training once read 600 fixed scenes from disk, and the model memorised them. Here every sample is a
new scene: its source (robot_math, robot_toy, image_text, or one registered later, such as reading)
is drawn by the `Mixture`'s weights from the generator of (seed, step, slot), and so is everything
else about it. Nothing depends on what was drawn before or on which process draws it, so worker
processes (sample_workers.py) and a resumed run draw exactly what one uninterrupted run would.

A robot sample is one frame t of a new in-domain scene's scripted demonstration (robot data never
shows the open world): the expert's trajectory is computed kinematically, without rendering, up to
a frame index t drawn uniformly, and only frame t is rendered; it is exactly generate_episode's
frames[t] of the same scene. The sample holds that frame, the instruction, the reasoning in force
at t, the state at t and the actions [t, t + chunk_size) (fewer at the end: make_batch pads them).
An image-text sample (image_text.py, either split's look, 50/50) is the image with its question as
the instruction and its answer as the reasoning, the given state (the statistics' mean) and no
actions, as training/data.py makes them.
"""

from __future__ import annotations

import importlib.util
import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from chatvla2.contract.embodiment import ACTION_DIM
from chatvla2.contract.errors import InvalidInput
from chatvla2.contract.names import unknown_name
from chatvla2.contract.normalization import NormalizationStats
from chatvla2.models.training_batch import Example
from chatvla2.sim.tasks import image_text, math_game, toy_placement
from chatvla2.sim.tasks.env import TASKS, TaskEnv
from chatvla2.sim.tasks.splits import IN_DOMAIN, SPLITS
from chatvla2.training import text_arithmetic

# --- Random streams: every tag in one place -------------------------------------------------------------
# A scene is drawn from the generator of [tag, split, seed] (math_game.make_scene, toy_placement.make_scene),
# so scenes of different tags come from disjoint random streams, whatever their seeds:
#   evaluation  1 (math), 2 (toy): the tasks' default tags; chatvla2 eval plays make_scene(split, seed)
#   image-text  3, 11, 12: image_text.py's own (which kind; its math and toy scenes)
#   training    21 (math), 22 (toy): every robot scene this module draws
#   held out    31 (math), 32 (toy): held_out_scene, for checks on scenes neither trained on nor evaluated
#   reading     41..44: reading.py's own (reading.TAGS), the "reading" source's samples
#   text sums   51: text_arithmetic.py's [seed, step, 51] (no scene: sums in text alone)
# No training or held-out scene is an evaluation scene, nor one of the image-text samples' scenes. (The
# streams are disjoint; the content can still repeat: the in-domain math game has at most 169 sums.)
EVAL_TAG_MATH, EVAL_TAG_TOY = 1, 2
TRAIN_TAG_MATH, TRAIN_TAG_TOY = 21, 22
HELD_OUT_TAG_MATH, HELD_OUT_TAG_TOY = 31, 32
EVALUATION_TAGS = {math_game.TASK: EVAL_TAG_MATH, toy_placement.TASK: EVAL_TAG_TOY}
TRAINING_TAGS = {math_game.TASK: TRAIN_TAG_MATH, toy_placement.TASK: TRAIN_TAG_TOY}
HELD_OUT_TAGS = {math_game.TASK: HELD_OUT_TAG_MATH, toy_placement.TASK: HELD_OUT_TAG_TOY}
IMAGE_TEXT_TAGS = (image_text.TAG_KIND, image_text.TAG_MATH, image_text.TAG_TOY)
# Last words of the generators of a slot ([seed, step, slot, SLOT_TAG]) and of the statistics' scenes
# ([seed, STATS_TAG, task tag, index]): their own streams, apart from each other and from the trainer's
# [seed, step] and [seed, step, 1].
SLOT_TAG = 20
STATS_TAG = 23

SCENE_SEED_BITS = 62  # a scene's own seed: a 62-bit int drawn from its slot's generator
MAX_REDRAWS = 8  # seeds a slot tries before an unplaceable layout is an error (one in millions fails once)
DEFAULT_STATS_SCENES = 100  # per task, ~50 ms a scene (plan and kinematic steps, no rendering): ~10 s for both tasks

ROBOT_MATH, ROBOT_TOY, IMAGE_TEXT, READING = "robot_math", "robot_toy", "image_text", "reading"
# The reading kinds whose answers are the digits themselves: 1 of 16 reading samples is a board to read
# (reading.KINDS), and the reader at step 3,600 answered "4x1" to every board (docs/training-and-demo-model.md).
READING_DIGITS = "reading_digits"
DIGIT_KINDS = ("board", "cards", "arithmetic", "card_at")
# Sums given in the question, to work out (arithmetic_drill_example).
ARITHMETIC_DRILL = "arithmetic_drill"
# The robot's whole first reasoning for a math scene of any look and vocabulary (scene_reasoning_example).
SCENE_REASONING = "scene_reasoning"
ROBOT_SOURCES = {ROBOT_MATH: math_game.TASK, ROBOT_TOY: toy_placement.TASK}


@dataclass(frozen=True, kw_only=True)
class Mixture:
    """What a step draws: source weights (any non-negative numbers; zero leaves a source out), the image
    size, the action chunk, the views per sample, and what the text-only samples carry (the state the
    model sees with them, normally the normalisation statistics' state_mean, and the image-text kinds).

    `weights` may be given as a mapping; it is kept as (name, weight) pairs sorted by name, without the
    zero ones, so the same weights always draw the same sources."""

    weights: tuple[tuple[str, float], ...]
    height: int
    width: int
    chunk_size: int
    num_views: int = 1
    action_dim: int = ACTION_DIM
    text_state: tuple[float, ...] | None = None
    image_text_kinds: tuple[str, ...] = image_text.KINDS

    def __post_init__(self) -> None:
        given = dict(self.weights.items() if isinstance(self.weights, Mapping) else self.weights)
        for name, weight in given.items():
            if name not in SOURCES:
                raise unknown_name(name, SOURCES, "training source", "sources")
            if not (isinstance(weight, numbers.Real) and math.isfinite(weight) and weight >= 0):
                raise InvalidInput(f"mixture: the weight of {name!r} must be a non-negative number, got {weight!r}")
        weights = tuple(sorted((name, float(w)) for name, w in given.items() if w > 0))
        if not weights:
            raise InvalidInput("mixture: give at least one source a positive weight")
        object.__setattr__(self, "weights", weights)
        for name in ("height", "width", "chunk_size", "num_views", "action_dim"):
            if getattr(self, name) < 1:
                raise InvalidInput(f"mixture: {name} must be at least 1, got {getattr(self, name)}")
        kinds = tuple(self.image_text_kinds)
        for kind in kinds:
            if kind not in image_text.KINDS:
                raise unknown_name(kind, image_text.KINDS, "image-text kind", "kinds")
        if not kinds:
            raise InvalidInput("mixture: image_text_kinds is empty")
        object.__setattr__(self, "image_text_kinds", kinds)
        if self.text_state is not None:
            state = tuple(float(v) for v in np.asarray(self.text_state, dtype=np.float64).reshape(-1))
            if not state or not all(map(math.isfinite, state)):
                raise InvalidInput("mixture: text_state must be a non-empty vector of finite numbers")
            object.__setattr__(self, "text_state", state)
        elif any(name not in ROBOT_SOURCES for name, _ in weights):
            raise InvalidInput("mixture: text samples need text_state (the normalisation statistics' state_mean)")

    @property
    def sources(self) -> tuple[str, ...]:
        """The sources with a positive weight, sorted by name."""
        return tuple(name for name, _ in self.weights)

    @property
    def robot_tasks(self) -> tuple[str, ...]:
        """The tasks of the weighted robot sources (what expert_normalization_stats needs)."""
        return tuple(ROBOT_SOURCES[name] for name in self.sources if name in ROBOT_SOURCES)

    def choose(self, u: float) -> str:
        """The source of a uniform number u in [0, 1): each source owns a share of [0, 1) by its weight."""
        total = sum(w for _, w in self.weights)
        edge = 0.0
        for name, weight in self.weights:
            edge += weight / total
            if u < edge:
                return name
        return self.weights[-1][0]  # u within rounding of 1


# A source: (mixture, scene_seed, rng) -> Example. scene_seed is the sample's own 62-bit seed, rng the
# slot's generator (after the source and the seed were drawn from it); both are for the source alone.
Source = Callable[[Mixture, int, np.random.Generator], Example]


# --- The sample of (seed, step, slot) -----------------------------------------------------------------------
def slot_draw(mixture: Mixture, seed: int, step: int, slot: int) -> tuple[str, int, np.random.Generator]:
    """(source, scene_seed, rng) of the slot: its generator, after the source and the scene's own seed were drawn."""
    for name, value in (("seed", seed), ("step", step), ("slot", slot)):
        if int(value) < 0:
            raise InvalidInput(f"training stream: {name} must be non-negative, got {value}")
    rng = np.random.default_rng([int(seed), int(step), int(slot), SLOT_TAG])
    source = mixture.choose(float(rng.random()))
    return source, int(rng.integers(2**SCENE_SEED_BITS)), rng


def source_of(mixture: Mixture, seed: int, step: int, slot: int) -> str:
    """Which source the sample of (seed, step, slot) comes from (cheap: no scene is drawn)."""
    return slot_draw(mixture, seed, step, slot)[0]


def sample(mixture: Mixture, seed: int, step: int, slot: int, sources: Mapping[str, Source] | None = None) -> Example:
    """The sample of (seed, step, slot): always the same Example. `sources`: the registry (default SOURCES)."""
    source, scene_seed, rng = slot_draw(mixture, seed, step, slot)
    draw = (SOURCES if sources is None else sources)[source]
    for _ in range(MAX_REDRAWS):
        try:
            return draw(mixture, scene_seed, rng)
        except toy_placement.NoLayout:  # a seed the toy layout sampler cannot place (rare): the slot's next seed
            scene_seed = int(rng.integers(2**SCENE_SEED_BITS))
    return draw(mixture, scene_seed, rng)


def step_examples(mixture: Mixture, seed: int, step: int, batch_size: int, sources: Mapping[str, Source] | None = None) -> list[Example]:
    """The batch of optimizer step `step`: the samples of slots 0 .. batch_size - 1."""
    return [sample(mixture, seed, step, slot, sources) for slot in range(batch_size)]


# --- Scenes ---------------------------------------------------------------------------------------------------
def training_scene(task: str, scene_seed: int):
    """The in-domain training scene of `scene_seed` (training tags)."""
    if task not in TRAINING_TAGS:
        raise unknown_name(task, TRAINING_TAGS, "task", "tasks")
    return TASKS[task](IN_DOMAIN, int(scene_seed), tag=TRAINING_TAGS[task])


def held_out_scene(task: str, split: str, index: int):
    """Scene number `index` of a held-out set (held-out tags): never trained on, never an evaluation scene."""
    if task not in HELD_OUT_TAGS:
        raise unknown_name(task, HELD_OUT_TAGS, "task", "tasks")
    if int(index) < 0:
        raise InvalidInput(f"held-out scene index must be non-negative, got {index}")
    return TASKS[task](split, int(index), tag=HELD_OUT_TAGS[task])


# --- Sources ------------------------------------------------------------------------------------------------
def robot_example(task: str, mixture: Mixture, scene_seed: int, rng: np.random.Generator) -> Example:
    """Frame t (uniform) of the expert's demonstration of a new training scene; only frame t is rendered."""
    env = TaskEnv(task, IN_DOMAIN, mixture.height, mixture.width, render_images=False)
    observation, info = env.reset(options={"scene": training_scene(task, scene_seed)})
    actions = env.expert_actions()
    t = int(rng.integers(len(actions)))
    # Frames after t are not needed: stepping stops at t, about half the trajectory on average.
    for action in actions[:t]:
        observation, _, _, _, info = env.step(action)
    frame = env.render()  # the world at step t: the same frame (and sensor-noise image) generate_episode stores
    chunk = np.array(actions[t : t + mixture.chunk_size], dtype=np.float32)
    return Example([frame] * mixture.num_views, observation["instruction"], info["reasoning"], observation["state"], chunk)


def robot_math_example(mixture: Mixture, scene_seed: int, rng: np.random.Generator) -> Example:
    return robot_example(math_game.TASK, mixture, scene_seed, rng)


def robot_toy_example(mixture: Mixture, scene_seed: int, rng: np.random.Generator) -> Example:
    return robot_example(toy_placement.TASK, mixture, scene_seed, rng)


def text_example(mixture: Mixture, image: np.ndarray, question: str, answer: str) -> Example:
    """A text-only sample: the question as the instruction, the answer as the reasoning, no actions."""
    return Example(
        [image] * mixture.num_views,
        question,
        answer,
        np.asarray(mixture.text_state, dtype=np.float32),
        np.zeros((0, mixture.action_dim), np.float32),
    )


def image_text_example(mixture: Mixture, scene_seed: int, rng: np.random.Generator) -> Example:
    """An image-text sample in either split's look (50/50), of a kind from the mixture's kinds."""
    split = SPLITS[int(rng.integers(len(SPLITS)))]
    kind = mixture.image_text_kinds[int(rng.integers(len(mixture.image_text_kinds)))]
    drawn = image_text.sample(split, scene_seed, mixture.height, mixture.width, kind=kind)
    return text_example(mixture, drawn["image"], drawn["question"], drawn["answer"])


def _reading_text_example(mixture: Mixture, scene_seed: int, kind: str | None = None, drill: bool = False) -> Example:
    """A text sample from reading.py's sample of `kind` (None: drawn by reading.py), with where its
    characters are for the auxiliary reading losses. `drill`: the arithmetic's expression is given in
    the question, so no answer character is read off the image (no answer boxes)."""
    from chatvla2.sim.tasks import reading

    drawn = reading.sample(scene_seed, mixture.height, mixture.width, kind=kind)
    question = text_arithmetic.question(drawn["answer"].split("=")[0]) if drill else drawn["question"]
    example = text_example(mixture, drawn["image"], question, drawn["answer"])
    example.chars = drawn["chars"] or None  # a reading image: the per-token reading loss holds
    example.answer_boxes = None if drill else drawn["answer_boxes"] or None
    return example


def reading_example(mixture: Mixture, scene_seed: int, rng: np.random.Generator) -> Example:
    """A reading sample (chatvla2/sim/tasks/reading.py), look and kind drawn by reading.py itself."""
    return _reading_text_example(mixture, scene_seed)


def reading_digits_example(mixture: Mixture, scene_seed: int, rng: np.random.Generator) -> Example:
    """A reading sample of one of DIGIT_KINDS (drawn by the slot's generator), look drawn by reading.py."""
    return _reading_text_example(mixture, scene_seed, kind=DIGIT_KINDS[int(rng.integers(len(DIGIT_KINDS)))])


def arithmetic_drill_example(mixture: Mixture, scene_seed: int, rng: np.random.Generator) -> Example:
    """A sum to work out, its expression given in the question ("What is 56-42?" -> "56-42=14."), on a
    reading image of the same board (any look). Stage 0 stands in for the pre-training a real VLM
    brings, arithmetic included: at step 13,000 the reader read boards it could not compute
    (docs/training-and-demo-model.md). The answer is written as the reasoning and the arithmetic
    questions write it."""
    return _reading_text_example(mixture, scene_seed, kind="arithmetic", drill=True)


def scene_reasoning_example(mixture: Mixture, scene_seed: int, rng: np.random.Generator) -> Example:
    """The instruction and the expert's first reasoning for a math scene of reading.py (any look, both
    splits' operands and every operator; no actions: image-text, not robot data). At stage 0's step
    17,500 the reader wrote 0.99 of text sums right but 0.5 of the robot view's (given a right read:
    "2+7=11", "6x6=42"): a sum written inside the reasoning, with the image in context, is what this
    source practises. 1 in 16 reading samples is of this kind."""
    return _reading_text_example(mixture, scene_seed, kind="scene_reasoning")


# The registry: name -> Source. The trainer may add to it (before building its Mixture); worker processes
# get the sources by reference, so a registered source must be a module-level function.
SOURCES: dict[str, Source] = {ROBOT_MATH: robot_math_example, ROBOT_TOY: robot_toy_example, IMAGE_TEXT: image_text_example}
if importlib.util.find_spec("chatvla2.sim.tasks.reading") is not None:  # written separately; absent until it lands
    SOURCES[READING] = reading_example
    SOURCES[READING_DIGITS] = reading_digits_example
    SOURCES[ARITHMETIC_DRILL] = arithmetic_drill_example
    SOURCES[SCENE_REASONING] = scene_reasoning_example


def register_source(name: str, source: Source) -> None:
    SOURCES[name] = source


# --- Normalisation statistics -----------------------------------------------------------------------------------
def expert_trajectory(task: str, scene) -> tuple[np.ndarray, np.ndarray]:
    """(states (T, D), actions (T, D)) float32 of the expert on `scene`, kinematically, nothing rendered:
    states[t] is the state before actions[t], as in generate_episode."""
    env = TaskEnv(task, scene.split, render_images=False)
    observation, _ = env.reset(options={"scene": scene})
    actions = env.expert_actions()
    states = np.empty(actions.shape, np.float32)
    for t, action in enumerate(actions):
        states[t] = observation["state"]
        observation, *_ = env.step(action)
    return states, np.asarray(actions, np.float32)


def expert_normalization_stats(tasks: Iterable[str], n_scenes: int = DEFAULT_STATS_SCENES, seed: int = 0) -> NormalizationStats:
    """Actions min/max and state mean/std over every step of the expert's trajectories on `n_scenes`
    fixed in-domain training scenes per task (training tags), computed as TrainingData.normalization_stats
    computes them over a dataset's episodes. Deterministic in (tasks, n_scenes, seed)."""
    tasks = list(tasks)
    if not tasks:
        raise InvalidInput("normalisation statistics need at least one robot task")
    if n_scenes < 1:
        raise InvalidInput(f"normalisation statistics need at least one scene per task, got {n_scenes}")
    states, actions = [], []
    for task in tasks:
        if task not in TRAINING_TAGS:
            raise unknown_name(task, TRAINING_TAGS, "task", "tasks")
        for index in range(n_scenes):
            seed_words = [int(seed), STATS_TAG, TRAINING_TAGS[task], index]
            scene_seed = int(np.random.default_rng(seed_words).integers(2**SCENE_SEED_BITS))
            state, action = expert_trajectory(task, training_scene(task, scene_seed))
            states.append(state)
            actions.append(action)
    state = np.concatenate(states).astype(np.float64)
    action = np.concatenate(actions).astype(np.float64)
    return NormalizationStats(action.min(0), action.max(0), state.mean(0), state.std(0))
