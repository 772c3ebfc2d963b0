"""Datasets on disk (issue 10): demonstration episodes of the simulated tasks (sim/tasks/) and the
image-text samples of stage-1 co-training, in a versioned format that pyarrow + numpy + Pillow read
without this package. `DatasetWriter` writes one (sim/dataset_writer.py), `DatasetReader` checks and
reads one (sim/dataset_reader.py), the names and columns are in sim/dataset_format.py.

Layout (format "chatvla2-edge/dataset", format_version 1):

    DATASET/
      README.md                                   what this is, pointing here
      meta/info.json                              format, format_version, fps, totals, path templates, features
      meta/episodes.jsonl                         one line per episode
      meta/tasks.jsonl                            {"task_index": 0, "task": "<instruction>"} per distinct instruction
      meta/image_text.jsonl                       {"file_index": 0, "length": 1000} per image-text file
      data/chunk-000/episode_000000.parquet       one row per frame; 1000 episodes per chunk directory
      data/chunk-000/episode_000001.parquet
      image_text/chunk-000/samples_000000.parquet one row per sample; 1000 samples per file, 1000 files per chunk

Episode files, one row per frame (T rows), in this column order:

    observation.images.top  binary                  the top camera frame, PNG (8-bit RGB, H x W)
    observation.state       fixed_size_list<float32>[D]   joint state (D = 14: left 6 joints + gripper, then right)
    action                  fixed_size_list<float32>[D]   joint targets, same order
    reasoning               string                  the reasoning text in force at this frame
    timestamp               float32                 frame_index / fps, seconds
    frame_index             int64                   0 .. T-1
    episode_index           int64                   the episode's index
    index                   int64                   the frame's index over the whole dataset
    task_index              int64                   its instruction in meta/tasks.jsonl

episodes.jsonl, one line per episode (LeRobot's three keys, then ours):

    {"episode_index": 0, "tasks": ["<instruction>"], "length": T,
     "task_name": "math_game", "split": "in_domain", "seed": 7, "instruction": "<instruction>"}

Image-text files, one row per sample: index int64 (over all samples), image binary (PNG, 8-bit RGB,
any size), question, answer, kind, split string, seed int64.

info.json: "format", "format_version", "layout", "robot_type", "fps", "total_episodes",
"total_frames", "total_tasks", "total_videos" (0), "total_chunks", "chunks_size", "data_path" and
"video_path" (null) as LeRobot, "features" ({column: {"dtype", "shape", "names"}}, LeRobot's form;
the frame's "shape" is [H, W, 3]), and "image_text": {"total_samples", "total_files",
"samples_per_file", "path", "features"}. A reader refuses another "format", a newer
"format_version" (update this package) or an unknown one. A change a format_version 1 reader would
misread (a column's meaning or type, a path) takes format_version 2.

How far this follows LeRobotDataset (v2.1, the field's convention):
- the same: meta/info.json with the same keys and meanings, meta/episodes.jsonl and
  meta/tasks.jsonl (a task is the language instruction), data/chunk-CCC/episode_EEEEEE.parquet with
  one row per frame and the columns observation.state, action, timestamp, frame_index,
  episode_index, index, task_index; state and action float32; chunks of 1000 episodes.
- frames are PNG bytes in a parquet column observation.images.top, not mp4 videos under videos/:
  no video codec dependency (ffmpeg/torchvision/av) to write or read, and pixels exactly as
  rendered, where AV1/H.264 would be lossy (the tests compare frames bit for bit). Sim frames are
  flat-shaded and compress well as PNG. LeRobot's own image columns (HF datasets' struct
  {bytes, path}) are a plain binary column here: readable with pyarrow alone.
- ours in addition: the per-frame column reasoning; per-episode task_name (math_game |
  toy_placement), split (in_domain | open_world), seed and instruction in episodes.jsonl; the
  image-text samples (image_text/, meta/image_text.jsonl, info.json "image_text"); "format" and
  "format_version" in info.json.
- left out: "codebase_version" (this is not loadable by LeRobot as is, and says so by not claiming
  it); info.json "splits" (LeRobot's "train": "0:N" ranges: our split is per episode and per
  sample); meta/episodes_stats.jsonl (normalisation statistics are computed where a model is
  trained, contract/normalization.py).

Reading one episode without this package (pyarrow, numpy, Pillow):

    import io, json
    import numpy as np
    import pyarrow.parquet as pq
    from PIL import Image

    root = "path/to/dataset"
    info = json.load(open(f"{root}/meta/info.json"))
    assert info["format"] == "chatvla2-edge/dataset" and info["format_version"] == 1
    episodes = [json.loads(line) for line in open(f"{root}/meta/episodes.jsonl")]
    ep = episodes[0]
    path = info["data_path"].format(episode_chunk=ep["episode_index"] // info["chunks_size"],
                                    episode_index=ep["episode_index"])
    table = pq.read_table(f"{root}/{path}")
    frames = np.stack([np.asarray(Image.open(io.BytesIO(png)))             # (T, H, W, 3) uint8
                       for png in table["observation.images.top"].to_pylist()])
    state = np.array(table["observation.state"].to_pylist(), np.float32)   # (T, 14), exact
    action = np.array(table["action"].to_pylist(), np.float32)             # (T, 14)
    reasoning = table["reasoning"].to_pylist()                             # T strings
    print(ep["task_name"], ep["split"], ep["seed"], ep["instruction"], frames.shape, state.shape)

The same with this package, checked (a missing, truncated or corrupt file is a DatasetError naming it):

    from chatvla2.sim.dataset import DatasetReader, DatasetWriter
    with DatasetWriter("out/math_game") as writer:       # complete or absent: staged, renamed at the end
        writer.add_episodes(episodes)                     # sim/tasks Episodes; a tqdm progress bar
        writer.add_samples(samples)                       # image-text dicts
    reader = DatasetReader("out/math_game")
    episode = reader.episode(0)                           # sim.episode.Episode, frames decoded
    for sample in reader.samples(): ...
"""

from __future__ import annotations

from chatvla2.sim.dataset_format import FORMAT, FORMAT_VERSION, DatasetError, Episode, episode_record
from chatvla2.sim.dataset_reader import DatasetReader
from chatvla2.sim.dataset_writer import DatasetWriter

__all__ = ["FORMAT", "FORMAT_VERSION", "DatasetError", "DatasetReader", "DatasetWriter", "Episode",
           "episode_record"]
