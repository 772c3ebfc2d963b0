"""`DatasetReader`: opens a dataset directory (format: sim/dataset.py) and checks it before anything
is used; every problem is one `DatasetError` line naming the file.

On open, always: meta/info.json present, valid JSON, this format and a version this reader knows;
episodes.jsonl, tasks.jsonl and image_text.jsonl parsable and consistent with info.json's totals;
every listed parquet file present, readable (its footer: a truncated file fails here), with the
columns of info.json's features and the row count the metadata lists.
With verify_data (the default) also every file's contents: each data page's checksum, the index
columns against the metadata, and each PNG's header, size and chunk CRCs (without decompressing:
about 0.05 ms a frame, so a dataset is read about once). `episode(i)` decodes the frames; a PNG that
does not decode is a DatasetError naming the file and row there.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from chatvla2.sim.dataset_format import (
    ACTION_KEY,
    EPISODES_FILE,
    FORMAT,
    FORMAT_VERSION,
    IMAGE_KEY,
    IMAGE_TEXT_FILE,
    INFO_FILE,
    REASONING_KEY,
    SAMPLE_SCHEMA,
    STATE_KEY,
    TASKS_FILE,
    DatasetError,
    Episode,
    decode_png,
    episode_features,
    episode_schema,
    exception_line,
    file_error,
    is_count,
    sample_features,
    verify_png,
)


class DatasetReader:
    """A checked dataset directory. `len(reader)` / `num_episodes`, `episode(i)`, `episodes()`,
    `num_samples`, `samples()`; `info`, `episodes_meta` (episodes.jsonl), `tasks` (instructions by
    task_index) as read."""

    def __init__(self, path: str | Path, *, verify_data: bool = True) -> None:
        self.root = Path(path)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: no such dataset directory")
        self.info = self._read_info()
        self.fps: int | None = self.info["fps"]
        self.episodes_meta = self._read_episodes()
        self.tasks = self._read_tasks()
        self.sample_files = self._read_sample_files()
        self._frame_shape: tuple[int, int] | None = None
        self._episode_schema: pa.Schema | None = None
        if self.episodes_meta:
            self._frame_shape, self._episode_schema = self._check_features()
        self._episode_offsets = np.concatenate([[0], np.cumsum([e["length"] for e in self.episodes_meta])]).astype(int)
        for i, meta in enumerate(self.episodes_meta):
            self._check_file(self.episode_path(i), self._episode_schema, meta["length"])
        self._sample_offsets = np.concatenate([[0], np.cumsum([m["length"] for m in self.sample_files])]).astype(int)
        for meta in self.sample_files:
            self._check_file(self.sample_file_path(meta["file_index"]), SAMPLE_SCHEMA, meta["length"])
        if verify_data:
            for i in range(self.num_episodes):
                self._verify_episode(i)
            for meta in self.sample_files:
                self._verify_sample_file(meta)

    # -- the API ------------------------------------------------------------------------------------

    @property
    def num_episodes(self) -> int:
        return len(self.episodes_meta)

    @property
    def num_frames(self) -> int:
        return int(self.info["total_frames"])

    @property
    def num_samples(self) -> int:
        return int(self.info["image_text"]["total_samples"])

    def __len__(self) -> int:
        return self.num_episodes

    def episode_path(self, i: int) -> Path:
        return self._path(self.info["data_path"], "data_path",
                          episode_chunk=i // self.info["chunks_size"], episode_index=i)

    def sample_file_path(self, file_index: int) -> Path:
        return self._path(self.info["image_text"]["path"], "image_text.path",
                          file_chunk=file_index // self.info["chunks_size"], file_index=file_index)

    def episode(self, i: int) -> Episode:
        """Episode i with its frames decoded: the fields of sim/tasks' `Episode`."""
        if not 0 <= i < self.num_episodes:
            raise IndexError(f"episode {i} out of range: the dataset has {self.num_episodes}")
        meta = self.episodes_meta[i]
        path = self.episode_path(i)
        table = _read_table(path)
        steps = meta["length"]
        frames = np.empty((steps, *self._frame_shape, 3), np.uint8)
        for t, data in enumerate(table.column(IMAGE_KEY).to_pylist()):
            frames[t] = _decoded(path, t, data, self._frame_shape)
        return Episode(task=meta["task_name"], split=meta["split"], seed=meta["seed"],
                             instruction=meta["instruction"], frames=frames,
                             state=_matrix(table, STATE_KEY), action=_matrix(table, ACTION_KEY),
                             reasoning=table.column(REASONING_KEY).to_pylist(), fps=self.fps)

    def episodes(self) -> Iterator[Episode]:
        for i in range(self.num_episodes):
            yield self.episode(i)

    def samples(self) -> Iterator[dict[str, Any]]:
        """The image-text samples in order, as written: {image (H, W, 3) uint8, question, answer, kind, split, seed}."""
        for meta in self.sample_files:
            path = self.sample_file_path(meta["file_index"])
            table = _read_table(path)
            for row, sample in enumerate(table.drop_columns(["index"]).to_pylist()):
                sample["image"] = _decoded(path, row, sample["image"], None)
                yield sample

    # -- metadata -----------------------------------------------------------------------------------

    def _read_info(self) -> dict[str, Any]:
        path = self.root / INFO_FILE
        if not path.is_file():
            raise file_error(path, "missing: not a complete dataset (a writer that did not finish leaves no directory)")
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise file_error(path, f"not valid JSON ({exception_line(exc)})") from None
        if not isinstance(info, dict):
            raise file_error(path, f"expected a JSON object, got {type(info).__name__}")
        if info.get("format") != FORMAT:
            raise file_error(path, f"format is {info.get('format')!r}, expected {FORMAT!r}")
        version = info.get("format_version")
        if is_count(version) and version > FORMAT_VERSION:
            raise file_error(path, f"format_version {version} is newer than this reader's ({FORMAT_VERSION}): "
                                   "update chatvla2-edge to read it")
        if version != FORMAT_VERSION or isinstance(version, bool):
            raise file_error(path, f"unknown format_version {version!r} (this reader knows {FORMAT_VERSION})")
        for key in ("total_episodes", "total_frames", "total_tasks"):
            _require(path, is_count(info.get(key)), f"{key} must be a count, got {info.get(key)!r}")
        _require(path, is_count(info.get("chunks_size"), 1), f"chunks_size must be positive, got {info.get('chunks_size')!r}")
        _require(path, isinstance(info.get("data_path"), str), "data_path must be a path template")
        _require(path, isinstance(info.get("features"), dict), "features must be an object")
        fps = info.get("fps")
        _require(path, is_count(fps, 1) if info["total_episodes"] else fps is None or is_count(fps, 1),
                 f"fps must be a positive integer, got {fps!r}")
        image_text = info.get("image_text")
        _require(path, isinstance(image_text, dict), "image_text must be an object")
        for key in ("total_samples", "total_files"):
            _require(path, is_count(image_text.get(key)), f"image_text.{key} must be a count, got {image_text.get(key)!r}")
        _require(path, isinstance(image_text.get("path"), str), "image_text.path must be a path template")
        _require(path, image_text.get("features") == sample_features(),
                 "image_text.features are not the image-text columns of format_version 1")
        return info

    def _read_episodes(self) -> list[dict[str, Any]]:
        path = self.root / EPISODES_FILE
        rows = _read_jsonl(path)
        _require(path, len(rows) == self.info["total_episodes"],
                 f"{len(rows)} episodes, info.json says total_episodes {self.info['total_episodes']}")
        for i, row in enumerate(rows):
            where = f"line {i + 1}"
            _require(path, row.get("episode_index") == i, f"{where}: episode_index {row.get('episode_index')!r}, expected {i}")
            _require(path, is_count(row.get("length"), 1), f"{where}: length must be positive, got {row.get('length')!r}")
            for key in ("task_name", "split", "instruction"):
                _require(path, isinstance(row.get(key), str), f"{where}: {key} must be a string")
            _require(path, is_count(row.get("seed"), -(2 ** 63)), f"{where}: seed must be an integer")
            _require(path, row.get("tasks") == [row["instruction"]], f"{where}: tasks must be [instruction]")
        total = sum(row["length"] for row in rows)
        _require(path, total == self.info["total_frames"],
                 f"episode lengths add up to {total} frames, info.json says total_frames {self.info['total_frames']}")
        return rows

    def _read_tasks(self) -> list[str]:
        path = self.root / TASKS_FILE
        rows = _read_jsonl(path)
        _require(path, len(rows) == self.info["total_tasks"],
                 f"{len(rows)} tasks, info.json says total_tasks {self.info['total_tasks']}")
        tasks = []
        for i, row in enumerate(rows):
            _require(path, row.get("task_index") == i and isinstance(row.get("task"), str),
                     f"line {i + 1}: expected task_index {i} and a task string")
            tasks.append(row["task"])
        _require(path, len(set(tasks)) == len(tasks), "a task is listed twice")
        missing = {e["instruction"] for e in self.episodes_meta} - set(tasks)
        _require(path, not missing, f"episodes use tasks it does not list: {sorted(missing)[:3]}")
        return tasks

    def _read_sample_files(self) -> list[dict[str, int]]:
        path = self.root / IMAGE_TEXT_FILE
        rows = _read_jsonl(path)
        image_text = self.info["image_text"]
        _require(path, len(rows) == image_text["total_files"],
                 f"{len(rows)} files, info.json says image_text.total_files {image_text['total_files']}")
        for i, row in enumerate(rows):
            _require(path, row.get("file_index") == i and is_count(row.get("length"), 1),
                     f"line {i + 1}: expected file_index {i} and a positive length")
        total = sum(row["length"] for row in rows)
        _require(path, total == image_text["total_samples"],
                 f"file lengths add up to {total} samples, info.json says image_text.total_samples {image_text['total_samples']}")
        return rows

    def _check_features(self) -> tuple[tuple[int, int], pa.Schema]:
        path = self.root / INFO_FILE
        features = self.info["features"]
        try:
            height, width, _ = features[IMAGE_KEY]["shape"]
            state_dim, = features[STATE_KEY]["shape"]
            action_dim, = features[ACTION_KEY]["shape"]
            ok = all(is_count(n, 1) for n in (height, width, state_dim, action_dim))
        except (KeyError, TypeError, ValueError):
            ok = False
        _require(path, ok and features == episode_features(height, width, state_dim, action_dim),
                 "features are not the episode columns of format_version 1")
        return (height, width), episode_schema(state_dim, action_dim)

    def _path(self, template: str, name: str, **fields: int) -> Path:
        try:
            relative = PurePosixPath(template.format(**fields))
        except (KeyError, IndexError, ValueError) as exc:
            raise file_error(self.root / INFO_FILE, f"{name} {template!r} is not a path template ({exception_line(exc)})") from None
        if relative.is_absolute() or ".." in relative.parts:
            raise file_error(self.root / INFO_FILE, f"{name} {template!r} leaves the dataset directory")
        return self.root.joinpath(*relative.parts)

    # -- files --------------------------------------------------------------------------------------

    def _check_file(self, path: Path, schema: pa.Schema, rows: int) -> None:
        if not path.is_file():
            raise file_error(path, "missing (listed in the dataset's metadata)")
        try:
            with path.open("rb") as f:
                if f.read(4) != b"PAR1":
                    raise ValueError("no parquet magic bytes at the start")
            metadata = pq.read_metadata(path)
            found = metadata.schema.to_arrow_schema()
        except Exception as exc:  # pyarrow raises OSError, ArrowException, UnicodeDecodeError ... on damaged bytes
            raise file_error(path, f"not a readable parquet file, truncated or corrupt ({exception_line(exc)})") from None
        if not found.equals(schema, check_metadata=False):
            raise file_error(path, f"columns {_columns(found)}, expected {_columns(schema)}")
        if metadata.num_rows != rows:
            raise file_error(path, f"{metadata.num_rows} rows, the metadata lists {rows}")

    def _verify_episode(self, i: int) -> None:
        path = self.episode_path(i)
        table = _read_table(path)
        steps = self.episodes_meta[i]["length"]
        first = int(self._episode_offsets[i])
        task_index = self.tasks.index(self.episodes_meta[i]["instruction"])
        expected = {"frame_index": np.arange(steps), "episode_index": np.full(steps, i),
                    "index": np.arange(first, first + steps), "task_index": np.full(steps, task_index)}
        for column, values in expected.items():
            if not np.array_equal(table.column(column).to_numpy(), values):
                raise file_error(path, f"column {column} disagrees with the metadata (episode {i}, "
                                       f"task_index {task_index}, first index {first})")
        timestamps = table.column("timestamp").to_numpy()
        if not np.array_equal(timestamps, (np.arange(steps) / self.fps).astype(np.float32)):
            raise file_error(path, f"column timestamp is not frame_index / fps ({self.fps})")
        for column in (STATE_KEY, ACTION_KEY):
            if not np.isfinite(_matrix(table, column)).all():
                raise file_error(path, f"column {column} holds NaN or infinite values")
        _verify_pngs(path, table.column(IMAGE_KEY).to_pylist(), self._frame_shape)

    def _verify_sample_file(self, meta: dict[str, int]) -> None:
        path = self.sample_file_path(meta["file_index"])
        table = _read_table(path)
        first = int(self._sample_offsets[meta["file_index"]])
        if not np.array_equal(table.column("index").to_numpy(), np.arange(first, first + meta["length"])):
            raise file_error(path, "column index disagrees with the metadata")
        _verify_pngs(path, table.column("image").to_pylist(), None)


def _read_table(path: Path) -> pa.Table:
    try:
        return pq.read_table(path, page_checksum_verification=True)
    except Exception as exc:  # as in _check_file
        raise file_error(path, f"not a readable parquet file, truncated or corrupt ({exception_line(exc)})") from None


def _verify_pngs(path: Path, images: list[Any], shape: tuple[int, int] | None) -> None:
    for row, data in enumerate(images):
        try:
            verify_png(data, shape)
        except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, struct.error ... on bad bytes
            raise file_error(path, f"row {row}: not a valid image ({exception_line(exc)})") from None


def _decoded(path: Path, row: int, data: Any, shape: tuple[int, int] | None) -> np.ndarray:
    try:
        return decode_png(data, shape)
    except Exception as exc:  # as above
        raise file_error(path, f"row {row}: the image does not decode ({exception_line(exc)})") from None


def _matrix(table: pa.Table, column: str) -> np.ndarray:
    values = table.column(column).combine_chunks()
    return values.flatten().to_numpy().reshape(len(table), values.type.list_size).copy()


def _columns(schema: pa.Schema) -> str:
    return ", ".join(f"{field.name}: {field.type}" for field in schema)


def _require(path: Path, condition: bool, what: str) -> None:
    if not condition:
        raise file_error(path, what)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise file_error(path, "missing")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise file_error(path, f"not UTF-8 text ({exception_line(exc)})") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise file_error(path, f"line {number}: not valid JSON ({exception_line(exc)})") from None
        if not isinstance(row, dict):
            raise file_error(path, f"line {number}: expected a JSON object")
        rows.append(row)
    return rows
