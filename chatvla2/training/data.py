"""Training data from datasets on disk (sim/dataset.py): robot frames and image-text samples.

A robot sample is one frame t of an episode: its image, the episode's instruction, the reasoning in
force at t, the state at t and the action chunk action[t : t + chunk_size] (shorter at the end of
the episode: make_batch pads it and marks the padding in is_pad). An image-text sample is the
image, its question as the instruction and its answer as the "reasoning" text: the cross-entropy
learns the answer, and with no actions (every step padded) it adds nothing to the diffusion loss.
The datasets have one (top) camera; a model with more views gets that frame in every view.

Episodes' states, actions and reasoning are read up front (they are small), and so are the frames a
run trains on, decoded once into memory: every `frame_stride`-th frame of each episode (at 50 Hz
consecutive frames barely differ, so a stride of 5 keeps the variety at a fifth of the memory:
600 episodes of 112x140 frames ~1.7 GB). The action chunk of a frame still comes from the full-rate
actions. Which samples a step uses depends only on (seed, step): a resumed run draws exactly what
an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from chatvla2.contract.errors import InvalidInput, MissingFile
from chatvla2.contract.normalization import NormalizationStats
from chatvla2.models.training_batch import Example
from chatvla2.sim.dataset import DatasetError, DatasetReader
from chatvla2.sim.dataset_format import ACTION_KEY, IMAGE_KEY, REASONING_KEY, STATE_KEY, decode_png
from chatvla2.training.config import IMAGE_TEXT_EVERY


@dataclass
class _Episode:
    instruction: str
    state: np.ndarray  # (T, D) float32
    action: np.ndarray  # (T, D) float32
    reasoning: list[str]
    frames: np.ndarray  # (ceil(T / stride), H, W, 3) uint8: frames 0, stride, 2 * stride, ...


class TrainingData:
    """Every `frame_stride`-th robot frame and every image-text sample of the dataset directories."""

    def __init__(self, paths: list[str | Path], *, load_image_text: bool = True, frame_stride: int = 1,
                 progress: bool = False) -> None:
        if not paths:
            raise InvalidInput("no training data: give at least one --data DIR")
        if frame_stride < 1:
            raise InvalidInput(f"--frame-stride must be at least 1, got {frame_stride}")
        from tqdm import tqdm

        self.frame_stride = frame_stride
        self.episodes: list[_Episode] = []
        self.samples: list[dict] = []
        for path in paths:
            if not Path(path).is_dir():
                raise MissingFile(f"--data {path}: no such dataset directory")
            reader = DatasetReader(path)
            for i, meta in enumerate(tqdm(reader.episodes_meta, desc=f"reading {Path(path).name}", unit="episode",
                                          disable=not progress or not reader.episodes_meta, leave=False)):
                self.episodes.append(_read_episode(reader, i, meta["instruction"], frame_stride))
            if load_image_text:
                self.samples.extend(reader.samples())
        counts = np.array([len(e.frames) for e in self.episodes], dtype=np.int64)
        self._frame_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    @property
    def num_frames(self) -> int:
        """Robot frames a step can draw (every frame_stride-th of each episode)."""
        return int(self._frame_offsets[-1])

    def normalization_stats(self) -> NormalizationStats:
        """Actions min/max and state mean/std over every frame of the training episodes."""
        if not self.episodes:
            raise InvalidInput("no robot episodes in the training data: normalisation statistics need some")
        state = np.concatenate([e.state for e in self.episodes]).astype(np.float64)
        action = np.concatenate([e.action for e in self.episodes]).astype(np.float64)
        return NormalizationStats(action.min(0), action.max(0), state.mean(0), state.std(0))

    def robot_example(self, frame: int, chunk_size: int, num_views: int) -> Example:
        e = int(np.searchsorted(self._frame_offsets, frame, side="right") - 1)
        episode, k = self.episodes[e], frame - int(self._frame_offsets[e])
        t = k * self.frame_stride
        return Example([episode.frames[k]] * num_views, episode.instruction, episode.reasoning[t], episode.state[t],
                       episode.action[t:t + chunk_size])

    def image_text_example(self, i: int, state_mean: np.ndarray, action_dim: int, num_views: int) -> Example:
        sample = self.samples[i]
        return Example([sample["image"]] * num_views, sample["question"], sample["answer"], state_mean,
                       np.zeros((0, action_dim), np.float32))


def _read_episode(reader: DatasetReader, i: int, instruction: str, stride: int) -> _Episode:
    path = reader.episode_path(i)
    try:
        table = pq.read_table(path, columns=[STATE_KEY, ACTION_KEY, REASONING_KEY, IMAGE_KEY])
        kept = table.column(IMAGE_KEY).take(pa.array(np.arange(0, len(table), stride))).to_pylist()
        frames = np.stack([decode_png(data) for data in kept])
    except (OSError, ValueError, pa.ArrowException) as exc:  # a file damaged since the reader checked it
        raise DatasetError(f"{path}: unreadable ({exc})") from None
    return _Episode(instruction, _matrix(table, STATE_KEY), _matrix(table, ACTION_KEY),
                    table.column(REASONING_KEY).to_pylist(), frames)


def draw_step(seed: int, step: int, batch_size: int, num_frames: int, num_samples: int,
              image_text: bool) -> list[tuple[str, int]]:
    """The samples of optimizer step `step`: ("robot", frame) or ("image_text", sample) each.
    With `image_text` (stage 1), sample number k of the run (k = step * batch_size + slot) is an
    image-text sample when k % IMAGE_TEXT_EVERY == IMAGE_TEXT_EVERY - 1: exactly 1:3 over the run."""
    rng = np.random.default_rng([seed, step])
    drawn = []
    for slot in range(batch_size):
        k = step * batch_size + slot
        if image_text and num_samples and k % IMAGE_TEXT_EVERY == IMAGE_TEXT_EVERY - 1:
            drawn.append(("image_text", int(rng.integers(num_samples))))
        else:
            drawn.append(("robot", int(rng.integers(num_frames))))
    return drawn


def _matrix(table, column: str) -> np.ndarray:
    values = table.column(column).combine_chunks()
    return values.flatten().to_numpy().reshape(len(table), values.type.list_size).astype(np.float32)
