"""`DatasetWriter`: appends episodes and image-text samples to a dataset directory (format:
sim/dataset.py), each episode's parquet file as it comes, the metadata last.

Everything is written into a hidden staging directory beside the target (`.NAME.partial-XXXX`) and
renamed into place by `close()`: the dataset directory is complete or absent. An exception inside
the `with` block (or `abort()`) removes the staging directory and leaves the target as it was.

    with DatasetWriter("out/math_game") as writer:
        writer.add_episodes(generate_episodes(...), total=100)   # progress bar
        writer.add_samples(generate_samples(...))
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from chatvla2.contract.errors import InvalidInput
from chatvla2.contract.staging import make_shareable, swap_in
from chatvla2.sim.dataset_format import (
    ACTION_KEY,
    CHUNKS_SIZE,
    DATA_PATH,
    EPISODES_FILE,
    FORMAT,
    FORMAT_VERSION,
    IMAGE_KEY,
    IMAGE_TEXT_FILE,
    IMAGE_TEXT_PATH,
    INFO_FILE,
    LAYOUT,
    README_FILE,
    REASONING_KEY,
    SAMPLE_SCHEMA,
    SAMPLES_PER_FILE,
    STATE_KEY,
    TASKS_FILE,
    checked_sample,
    encode_png,
    episode_features,
    episode_record,
    episode_schema,
    sample_features,
)


class _Progress(tqdm):
    # tqdm's monitor is a thread that outlives the bar; a writer leaves no thread behind.
    monitor_interval = 0


class DatasetWriter:
    """Writes one dataset directory. All episodes share fps, frame size and state/action widths
    (LeRobot keeps them per dataset); image-text samples may have any size.

    overwrite: replace an existing dataset at out_dir (only a directory holding this format's
    meta/info.json, never an arbitrary directory) once the new one is complete.
    png_compress_level: zlib level of the frames' PNGs (0-9); 1 encodes a 320x240 frame in about
    1-7 ms, 6 (PIL's default) takes 2-3x longer for files about 10% smaller.
    """

    def __init__(self, out_dir: str | Path, *, overwrite: bool = False, robot_type: str = "arx_bimanual",
                 chunks_size: int = CHUNKS_SIZE, samples_per_file: int = SAMPLES_PER_FILE,
                 png_compress_level: int = 1, progress: bool = True) -> None:
        if chunks_size < 1 or samples_per_file < 1:
            raise ValueError("chunks_size and samples_per_file must be positive")
        if not 0 <= png_compress_level <= 9:
            raise ValueError(f"png_compress_level must be 0-9, got {png_compress_level}")
        self.out_dir = Path(out_dir)
        self.overwrite = overwrite
        self.robot_type = robot_type
        self.chunks_size = chunks_size
        self.samples_per_file = samples_per_file
        self.png_compress_level = png_compress_level
        self.progress = progress
        self._check_target()
        self._staging: Path | None = None
        self._closed = False
        self._episodes: list[dict[str, Any]] = []
        self._tasks: dict[str, int] = {}
        self._shape: dict[str, Any] | None = None  # fps, frame size and widths, from the first episode
        self._total_frames = 0
        self._pending_samples: list[dict[str, Any]] = []
        self._sample_files: list[dict[str, int]] = []
        self._total_samples = 0

    # -- context manager ------------------------------------------------------------------------------

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- episodes ---------------------------------------------------------------------------------------

    def add_episode(self, episode: Any) -> int:
        """Checks an episode (sim/tasks' `Episode` or an `Episode`) and writes its parquet file.
        Returns its episode_index. A refused episode (ValueError) writes nothing."""
        record = episode_record(episode)
        index = len(self._episodes)
        steps, height, width, _ = record.frames.shape
        shape = {"fps": record.fps, "height": height, "width": width,
                 "state_dim": record.state.shape[1], "action_dim": record.action.shape[1]}
        if self._shape is not None and shape != self._shape:
            diff = {k: (v, self._shape[k]) for k, v in shape.items() if v != self._shape[k]}
            raise InvalidInput(f"episode {index}: " + ", ".join(f"{k} {v} differs from the dataset's {d}"
                                                             for k, (v, d) in diff.items()))
        self._require_open()
        task_index = self._tasks.get(record.instruction, len(self._tasks))
        frame_index = np.arange(steps, dtype=np.int64)
        columns = {
            IMAGE_KEY: pa.array([encode_png(frame, self.png_compress_level) for frame in record.frames], pa.binary()),
            STATE_KEY: pa.FixedSizeListArray.from_arrays(pa.array(record.state.reshape(-1)), shape["state_dim"]),
            ACTION_KEY: pa.FixedSizeListArray.from_arrays(pa.array(record.action.reshape(-1)), shape["action_dim"]),
            REASONING_KEY: pa.array(record.reasoning, pa.string()),
            "timestamp": pa.array((frame_index / record.fps).astype(np.float32)),
            "frame_index": pa.array(frame_index),
            "episode_index": pa.array(np.full(steps, index, np.int64)),
            "index": pa.array(frame_index + self._total_frames),
            "task_index": pa.array(np.full(steps, task_index, np.int64)),
        }
        schema = episode_schema(shape["state_dim"], shape["action_dim"])
        path = DATA_PATH.format(episode_chunk=index // self.chunks_size, episode_index=index)
        self._write_parquet(pa.Table.from_pydict(columns, schema=schema), path, dictionary=[REASONING_KEY])
        self._shape = shape
        self._tasks[record.instruction] = task_index
        self._episodes.append({"episode_index": index, "tasks": [record.instruction], "length": steps,
                               "task_name": record.task, "split": record.split, "seed": record.seed,
                               "instruction": record.instruction})
        self._total_frames += steps
        return index

    def add_episodes(self, episodes: Iterable[Any], total: int | None = None) -> int:
        """add_episode for each, with a progress bar (the time to produce them included). Returns how many."""
        count = 0
        with _Progress(episodes, total=total if total is not None else _length(episodes), unit="episode",
                       desc=f"{self.out_dir.name}: episodes", disable=not self.progress, dynamic_ncols=True) as bar:
            for episode in bar:
                self.add_episode(episode)
                count += 1
                bar.set_postfix(frames=self._total_frames, refresh=False)
        return count

    # -- image-text samples -------------------------------------------------------------------------

    def add_sample(self, sample: dict[str, Any]) -> int:
        """Checks an image-text sample (dict: image, question, answer, kind, split, seed) and buffers
        it; every samples_per_file samples go to one parquet file. Returns its index."""
        checked = checked_sample(sample)
        self._require_open()
        self._pending_samples.append({**checked, "image": encode_png(checked["image"], self.png_compress_level)})
        self._total_samples += 1
        if len(self._pending_samples) >= self.samples_per_file:
            self._flush_samples()
        return self._total_samples - 1

    def add_samples(self, samples: Iterable[dict[str, Any]], total: int | None = None) -> int:
        count = 0
        with _Progress(samples, total=total if total is not None else _length(samples), unit="sample",
                       desc=f"{self.out_dir.name}: image-text", disable=not self.progress, dynamic_ncols=True) as bar:
            for sample in bar:
                self.add_sample(sample)
                count += 1
        return count

    def _flush_samples(self) -> None:
        if not self._pending_samples:
            return
        file_index = len(self._sample_files)
        first = self._total_samples - len(self._pending_samples)
        rows = self._pending_samples
        columns = {"index": pa.array(np.arange(first, first + len(rows), dtype=np.int64))}
        columns.update({key: [row[key] for row in rows] for key in ("image", "question", "answer", "kind", "split", "seed")})
        path = IMAGE_TEXT_PATH.format(file_chunk=file_index // self.chunks_size, file_index=file_index)
        self._write_parquet(pa.Table.from_pydict(columns, schema=SAMPLE_SCHEMA), path, dictionary=["kind", "split"])
        self._sample_files.append({"file_index": file_index, "length": len(rows)})
        self._pending_samples = []

    # -- finishing ----------------------------------------------------------------------------------

    def close(self) -> Path:
        """Writes the last samples and the metadata, then renames the staging directory to out_dir.
        Returns out_dir. On any failure the staging directory is removed and out_dir left as it was."""
        if self._closed:
            return self.out_dir
        try:
            self._require_open()
            self._flush_samples()
            self._write_metadata()
            make_shareable(self._staging)
            self._check_target()
            swap_in(self._staging, self.out_dir)
        except BaseException:
            self.abort()
            raise
        self._staging = None
        self._closed = True
        return self.out_dir

    def abort(self) -> None:
        """Drops everything written so far; out_dir is untouched."""
        self._closed = True
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None

    def _require_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"DatasetWriter({self.out_dir}) is closed")
        if self._staging is None:
            self.out_dir.parent.mkdir(parents=True, exist_ok=True)
            self._staging = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.partial-", dir=self.out_dir.parent))

    def _check_target(self) -> None:
        if not os.path.lexists(self.out_dir):
            return
        if not self.overwrite:
            raise FileExistsError(f"{self.out_dir} exists (overwrite=True replaces a dataset)")
        if not (self.out_dir / INFO_FILE).is_file():
            raise FileExistsError(f"{self.out_dir} exists and is not a dataset (no {INFO_FILE}): not replacing it")

    def _write_parquet(self, table: pa.Table, relative: str, dictionary: list[str]) -> None:
        path = self._staging / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        # Page checksums: the reader detects a flipped byte inside a page, not only a truncated file.
        # PNGs are unique and opaque: no dictionary, no min/max statistics (two whole images per page header).
        images = {IMAGE_KEY, "image"}
        pq.write_table(table, path, write_page_checksum=True, use_dictionary=dictionary,
                       write_statistics=[name for name in table.column_names if name not in images])

    def _write_metadata(self) -> None:
        shape = self._shape or {}
        info = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "layout": LAYOUT,
            "robot_type": self.robot_type,
            "fps": shape.get("fps"),
            "total_episodes": len(self._episodes),
            "total_frames": self._total_frames,
            "total_tasks": len(self._tasks),
            "total_videos": 0,
            "total_chunks": -(-len(self._episodes) // self.chunks_size),
            "chunks_size": self.chunks_size,
            "data_path": DATA_PATH,
            "video_path": None,
            "features": episode_features(shape["height"], shape["width"], shape["state_dim"], shape["action_dim"])
            if shape else {},
            "image_text": {
                "total_samples": self._total_samples,
                "total_files": len(self._sample_files),
                "samples_per_file": self.samples_per_file,
                "path": IMAGE_TEXT_PATH,
                "features": sample_features(),
            },
        }
        meta = self._staging / "meta"
        meta.mkdir(exist_ok=True)
        _write_jsonl(self._staging / EPISODES_FILE, self._episodes)
        _write_jsonl(self._staging / TASKS_FILE, [{"task_index": i, "task": t} for t, i in self._tasks.items()])
        _write_jsonl(self._staging / IMAGE_TEXT_FILE, self._sample_files)
        (self._staging / README_FILE).write_text(_README.format(
            format=FORMAT, version=FORMAT_VERSION, episodes=len(self._episodes), frames=self._total_frames,
            samples=self._total_samples))
        # info.json last: it is what a reader opens first
        (self._staging / INFO_FILE).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n")


_README = """# {format}, format_version {version}

{episodes} demonstration episodes ({frames} frames) and {samples} image-text samples, written by
chatvla2-edge (sim/dataset_writer.py). The layout follows LeRobotDataset v2.1; its documentation,
with a plain pyarrow example, is the docstring of sim/dataset.py.

- meta/info.json: format, format_version, fps, totals, path templates, features (columns)
- meta/episodes.jsonl, meta/tasks.jsonl, meta/image_text.jsonl: one JSON object a line
- data/chunk-CCC/episode_EEEEEE.parquet: one row per frame, frames as PNG bytes
- image_text/chunk-CCC/samples_FFFFFF.parquet: one row per image-text sample, images as PNG bytes
"""


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _length(items: Iterable[Any]) -> int | None:
    try:
        return len(items)  # type: ignore[arg-type]
    except TypeError:
        return None
