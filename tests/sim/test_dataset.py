"""Datasets on disk (sim/dataset.py): exact round trip, the metadata, reading with plain pyarrow, and
every damaged directory refused with one DatasetError line naming the file."""

from __future__ import annotations

import ast
import io
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from chatvla2.sim.dataset import FORMAT, FORMAT_VERSION, DatasetError, DatasetReader, DatasetWriter, Episode

REPO = Path(__file__).resolve().parents[2]
H, W = 24, 32


def make_episode(seed: int, steps: int, task: str = "math_game", split: str = "in_domain") -> Episode:
    rng = np.random.default_rng(seed)
    change = rng.integers(1, steps)  # the reasoning changes once, mid-episode
    return Episode(
        task=task, split=split, seed=seed, instruction=f"{task} instruction {seed % 2}",
        frames=rng.integers(0, 256, (steps, H, W, 3), dtype=np.uint8),
        # full-range float32 values, tiny and huge included: stored exactly or not at all
        state=(rng.standard_normal((steps, 14)) * 10.0 ** rng.integers(-30, 30, (steps, 14))).astype(np.float32),
        action=rng.standard_normal((steps, 14)).astype(np.float32),
        reasoning=["First, count the dots: 3 + 4 = 7. ✓"] * change + [f"Then place the card {seed}."] * (steps - change),
    )


def make_sample(seed: int) -> dict:
    rng = np.random.default_rng(1000 + seed)
    return {"image": rng.integers(0, 256, (10 + seed, 12 + 2 * seed, 3), dtype=np.uint8),
            "question": f"What is {seed} + 2?", "answer": str(seed + 2), "kind": "math",
            "split": "open_world" if seed % 2 else "in_domain", "seed": seed}


EPISODES = [make_episode(0, 7), make_episode(1, 5, "toy_placement", "open_world"), make_episode(2, 9)]
SAMPLES = [make_sample(i) for i in range(5)]


def write(out: Path, episodes=EPISODES, samples=SAMPLES, **kwargs) -> Path:
    kwargs = {"chunks_size": 2, "samples_per_file": 2, "progress": False, **kwargs}
    with DatasetWriter(out, **kwargs) as writer:
        writer.add_episodes(episodes)
        writer.add_samples(samples)
    return out


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    """A dataset the tests read, never change (tampering tests copy it)."""
    return write(tmp_path_factory.mktemp("datasets") / "ds")


@pytest.fixture
def copy(written, tmp_path) -> Path:
    return Path(shutil.copytree(written, tmp_path / "ds"))


def refused(path: Path, **kwargs) -> str:
    with pytest.raises(DatasetError) as info:
        DatasetReader(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# -- round trip and metadata ------------------------------------------------------------------------


def test_the_round_trip_is_exact(written):
    reader = DatasetReader(written)
    assert len(reader) == reader.num_episodes == 3 and reader.num_frames == 21 and reader.num_samples == 5
    for i, original in enumerate(EPISODES):
        episode = reader.episode(i)
        assert isinstance(episode, Episode)
        for name in ("task", "split", "seed", "instruction", "reasoning", "fps"):
            assert getattr(episode, name) == getattr(original, name), name
        for name in ("frames", "state", "action"):
            got, want = getattr(episode, name), getattr(original, name)
            assert got.dtype == want.dtype and got.shape == want.shape, name
            assert got.tobytes() == want.tobytes(), name  # bit for bit
            assert got.flags.writeable
    assert [e.seed for e in reader.episodes()] == [0, 1, 2]
    samples = list(reader.samples())
    assert len(samples) == 5
    for got, want in zip(samples, SAMPLES, strict=True):
        assert got.keys() == want.keys()
        assert got["image"].dtype == np.uint8 and np.array_equal(got["image"], want["image"])
        assert {k: v for k, v in got.items() if k != "image"} == {k: v for k, v in want.items() if k != "image"}


def test_the_layout_and_metadata(written):
    files = sorted(str(p.relative_to(written)) for p in written.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "data/chunk-000/episode_000000.parquet", "data/chunk-000/episode_000001.parquet",
        "data/chunk-001/episode_000002.parquet",
        "image_text/chunk-000/samples_000000.parquet", "image_text/chunk-000/samples_000001.parquet",
        "image_text/chunk-001/samples_000002.parquet",
        "meta/episodes.jsonl", "meta/image_text.jsonl", "meta/info.json", "meta/tasks.jsonl",
    ]
    assert not list(written.parent.glob(".*"))  # no staging directory left beside it
    # shareable: every directory traversable, every file readable by others
    assert all(p.stat().st_mode & 0o777 == (0o755 if p.is_dir() else 0o644) for p in [written, *written.rglob("*")])

    info = json.loads((written / "meta/info.json").read_text())
    assert info["format"] == FORMAT == "chatvla2-edge/dataset" and info["format_version"] == FORMAT_VERSION == 1
    assert {k: info[k] for k in ("fps", "total_episodes", "total_frames", "total_tasks", "total_videos",
                                 "total_chunks", "chunks_size", "video_path")} == {
        "fps": 50, "total_episodes": 3, "total_frames": 21, "total_tasks": 2, "total_videos": 0,
        "total_chunks": 2, "chunks_size": 2, "video_path": None}
    assert info["data_path"] == "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
    features = info["features"]
    assert list(features) == ["observation.images.top", "observation.state", "action", "reasoning", "timestamp",
                              "frame_index", "episode_index", "index", "task_index"]
    assert features["observation.images.top"]["shape"] == [H, W, 3]
    assert features["observation.images.top"]["dtype"] == "image"
    assert features["observation.state"]["dtype"] == "float32" and features["observation.state"]["shape"] == [14]
    assert features["action"]["names"][:7] == ["left_joint1", "left_joint2", "left_joint3", "left_joint4",
                                               "left_joint5", "left_joint6", "left_gripper"]
    assert features["action"]["names"][13] == "right_gripper"
    assert {k: info["image_text"][k] for k in ("total_samples", "total_files", "samples_per_file")} == {
        "total_samples": 5, "total_files": 3, "samples_per_file": 2}

    def lines(name):
        return [json.loads(line) for line in (written / "meta" / name).read_text().splitlines()]
    assert lines("episodes.jsonl")[1] == {
        "episode_index": 1, "tasks": ["toy_placement instruction 1"], "length": 5, "task_name": "toy_placement",
        "split": "open_world", "seed": 1, "instruction": "toy_placement instruction 1"}
    # a task is an instruction, listed once: episode 2 has episode 0's
    assert lines("tasks.jsonl") == [{"task_index": 0, "task": "math_game instruction 0"},
                                    {"task_index": 1, "task": "toy_placement instruction 1"}]
    assert lines("image_text.jsonl") == [{"file_index": 0, "length": 2}, {"file_index": 1, "length": 2},
                                         {"file_index": 2, "length": 1}]

    table = pq.read_table(written / "data/chunk-001/episode_000002.parquet")
    assert table.column_names == list(features)
    assert table["episode_index"].to_pylist() == [2] * 9
    assert table["index"].to_pylist() == list(range(12, 21))  # after 7 + 5 frames
    assert table["frame_index"].to_pylist() == list(range(9))
    assert table["timestamp"].type == pa.float32() and table["timestamp"].to_pylist()[1] == pytest.approx(0.02)
    assert table["task_index"].to_pylist() == [0] * 9  # the same instruction as episode 0
    assert table["observation.state"].type == pa.list_(pa.float32(), 14)


def test_the_docstring_example_reads_an_episode_with_pyarrow_numpy_and_pillow_only(written, tmp_path):
    doc = ast.get_docstring(ast.parse((REPO / "chatvla2/sim/dataset.py").read_text()))
    example = doc.split("Reading one episode without this package (pyarrow, numpy, Pillow):\n", 1)[1]
    example = textwrap.dedent(example.split("\n\nThe same with this package", 1)[0])
    assert 'root = "path/to/dataset"' in example
    example = example.replace('"path/to/dataset"', repr(str(written)))
    want = EPISODES[0]
    np.savez(tmp_path / "want.npz", frames=want.frames, state=want.state, action=want.action)
    check = textwrap.dedent(f"""
        want = np.load({str(tmp_path / 'want.npz')!r})
        assert frames.dtype == np.uint8 and np.array_equal(frames, want["frames"])
        assert state.dtype == np.float32 and state.tobytes() == want["state"].tobytes()
        assert action.dtype == np.float32 and action.tobytes() == want["action"].tobytes()
        assert reasoning == {want.reasoning!r}
        samples = pq.read_table(f"{{root}}/image_text/chunk-000/samples_000000.parquet").to_pylist()
        assert [s["question"] for s in samples] == ["What is 0 + 2?", "What is 1 + 2?"]
        assert np.asarray(Image.open(io.BytesIO(samples[1]["image"]))).shape == (11, 14, 3)
        import sys
        assert "chatvla2" not in sys.modules, "imported this package"
        """)
    # -I: no PYTHONPATH, no current directory on sys.path; run outside the checkout
    result = subprocess.run([sys.executable, "-I", "-c", example + check], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("math_game in_domain 0 math_game instruction 0 (7, 24, 32, 3) (7, 14)")


def test_a_progress_bar_is_shown_and_leaves_no_thread(tmp_path, capsys):
    write(tmp_path / "ds", progress=True)
    err = capsys.readouterr().err
    assert "ds: episodes" in err and "3/3" in err and "5/5" in err


def test_the_sim_tasks_record_and_an_empty_dataset(tmp_path):
    reader = DatasetReader(write(tmp_path / "only_samples", episodes=[]))
    assert reader.num_episodes == 0 and reader.fps is None and len(list(reader.samples())) == 5
    reader = DatasetReader(write(tmp_path / "only_episodes", samples=[], chunks_size=1000))
    assert reader.num_episodes == 3 and list(reader.samples()) == []
    assert (tmp_path / "only_episodes/data/chunk-000/episode_000002.parquet").is_file()


# -- what the writer refuses, and failures ----------------------------------------------------------


@pytest.mark.parametrize("change, message", [
    ({"state": np.zeros((7, 14))}, "float32"),
    ({"action": np.zeros((6, 14), np.float32)}, "expected (7, D)"),
    ({"reasoning": ["x"] * 6}, "7 strings"),
    ({"frames": np.zeros((7, H, W), np.uint8)}, "(T, H, W, 3) uint8"),
    ({"frames": np.zeros((7, H + 1, W, 3), np.uint8)}, "height 25 differs from the dataset's 24"),
    ({"fps": 30}, "fps 30 differs"),
    ({"seed": 1.5}, "seed must be an integer"),
    ({"split": ""}, "split must be a non-empty string"),
    ({"state": np.full((7, 14), np.nan, np.float32)}, "NaN"),
])
def test_a_bad_episode_is_refused_and_writes_nothing(tmp_path, change, message):
    with DatasetWriter(tmp_path / "ds", progress=False) as writer:
        writer.add_episode(EPISODES[0])
        bad = make_episode(0, 7)
        for key, value in change.items():
            setattr(bad, key, value)
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            writer.add_episode(bad)
        writer.add_episode(EPISODES[1])
    reader = DatasetReader(tmp_path / "ds")
    assert [e.seed for e in reader.episodes()] == [0, 1]


def test_a_bad_sample_is_refused(tmp_path):
    with DatasetWriter(tmp_path / "ds", progress=False) as writer:
        with pytest.raises(ValueError, match="unknown"):
            writer.add_sample({**SAMPLES[0], "extra": 1})
        with pytest.raises(ValueError, match="uint8"):
            writer.add_sample({**SAMPLES[0], "image": SAMPLES[0]["image"].astype(np.float32)})
    assert DatasetReader(tmp_path / "ds").num_samples == 0


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    out = tmp_path / "ds"
    with pytest.raises(RuntimeError, match="generator broke"):
        with DatasetWriter(out, progress=False) as writer:
            writer.add_episode(EPISODES[0])
            writer.add_sample(SAMPLES[0])
            raise RuntimeError("generator broke")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="closed"):
        writer.add_episode(EPISODES[0])


def test_overwriting_replaces_a_dataset_only_when_complete(tmp_path):
    out = write(tmp_path / "ds")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        DatasetWriter(out)
    with pytest.raises(KeyError):
        with DatasetWriter(out, overwrite=True, progress=False) as writer:
            writer.add_episode(EPISODES[1])
            raise KeyError("interrupted")
    assert DatasetReader(out).num_episodes == 3  # the old dataset, untouched
    write(out, episodes=EPISODES[1:2], samples=[], overwrite=True)
    assert DatasetReader(out).num_episodes == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    (tmp_path / "not_a_dataset").mkdir()
    with pytest.raises(FileExistsError, match="not a dataset"):
        DatasetWriter(tmp_path / "not_a_dataset", overwrite=True)


# -- what the reader refuses ------------------------------------------------------------------------

EPISODE_FILE = "data/chunk-000/episode_000001.parquet"
SAMPLE_FILE = "image_text/chunk-001/samples_000002.parquet"


@pytest.mark.parametrize("name", [EPISODE_FILE, SAMPLE_FILE])
def test_a_truncated_parquet_file_is_named(copy, name):
    path = copy / name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = refused(copy, verify_data=False)  # found without reading the data
    assert message.startswith(f"{path}: not a readable parquet file, truncated or corrupt")


@pytest.mark.parametrize("name", [EPISODE_FILE, SAMPLE_FILE])
def test_a_flipped_byte_is_found_or_changes_nothing(copy, name):
    """Page checksums, the footer and the PNG CRCs between them: a damaged byte anywhere (every 37th
    here; all of them when tried) is a DatasetError naming the file, or falls where nothing read
    back depends on it (page statistics, padding)."""
    path = copy / name
    data = path.read_bytes()
    want = _contents(DatasetReader(copy), name)
    found = 0
    for offset in range(0, len(data), 37):
        damaged = bytearray(data)
        damaged[offset] ^= 0x5A
        path.write_bytes(bytes(damaged))
        try:
            reader = DatasetReader(copy)
        except DatasetError as exc:
            assert str(exc).startswith(f"{path}: "), str(exc)
            found += 1
            continue
        assert _contents(reader, name) == want, f"byte {offset} changed what is read back"
    assert found > 0.6 * len(range(0, len(data), 37))


def _contents(reader: DatasetReader, name: str) -> list:
    if name != EPISODE_FILE:
        return [(s["image"].tobytes(), s["image"].shape, {k: v for k, v in s.items() if k != "image"})
                for s in reader.samples()]
    e = reader.episode(1)
    return [e.frames.tobytes(), e.state.tobytes(), e.action.tobytes(), e.reasoning]


@pytest.mark.parametrize("name", [EPISODE_FILE, SAMPLE_FILE, "meta/episodes.jsonl", "meta/tasks.jsonl",
                                  "meta/image_text.jsonl", "meta/info.json"])
def test_a_deleted_file_is_named(copy, name):
    (copy / name).unlink()
    assert refused(copy, verify_data=False).startswith(f"{copy / name}: missing")


def test_a_missing_directory(tmp_path):
    assert refused(tmp_path / "nowhere") == f"{tmp_path / 'nowhere'}: no such dataset directory"


def _edit_info(root: Path, edit) -> Path:
    path = root / "meta/info.json"
    info = json.loads(path.read_text())
    edit(info)
    path.write_text(json.dumps(info))
    return path


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ("", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"format": "lerobot"}', "format is 'lerobot'"),
])
def test_a_bad_info_json(copy, text, message):
    path = copy / "meta/info.json"
    path.write_text(text)
    assert refused(copy).startswith(f"{path}: {message}")


@pytest.mark.parametrize("edit, named, message", [
    (lambda i: i.pop("total_frames"), "meta/info.json", "total_frames must be a count"),
    (lambda i: i.update(chunks_size=0), "meta/info.json", "chunks_size must be positive"),
    (lambda i: i["features"]["observation.state"].update(dtype="float64"), "meta/info.json", "features are not"),
    (lambda i: i.update(data_path="../{episode_index}.parquet"), "meta/info.json", "leaves the dataset directory"),
    (lambda i: i.update(data_path="data/{chunk}.parquet"), "meta/info.json", "not a path template"),
    (lambda i: i.update(total_episodes=4), "meta/episodes.jsonl", "3 episodes, info.json says total_episodes 4"),
    (lambda i: i.update(total_frames=20), "meta/episodes.jsonl", "add up to 21 frames"),
    (lambda i: i["image_text"].update(total_samples=6), "meta/image_text.jsonl", "add up to 5 samples"),
    # consistent metadata, but not what the files hold
    (lambda i: i["features"]["observation.images.top"].update(shape=[H, W + 1, 3]), EPISODE_FILE.replace("1.", "0."),
     "row 0: not a valid image (ValueError: image is 24x32, expected 24x33)"),
    (lambda i: i.update(fps=30), EPISODE_FILE.replace("1.", "0."), "column timestamp is not frame_index / fps (30)"),
])
def test_metadata_that_disagrees(copy, edit, named, message):
    _edit_info(copy, edit)
    got = refused(copy)
    assert got.startswith(f"{copy / named}: ") and message in got, got


@pytest.mark.parametrize("version, message", [
    (2, "format_version 2 is newer than this reader's (1): update chatvla2-edge to read it"),
    (0, "unknown format_version 0"),
    ("1", "unknown format_version '1'"),
    (True, "unknown format_version True"),
    (None, "unknown format_version None"),
])
def test_an_unknown_or_newer_version(copy, version, message):
    path = _edit_info(copy, lambda i: i.update(format_version=version))
    assert refused(copy) == f"{path}: {message}" + ("" if version == 2 else " (this reader knows 1)")


def test_a_row_count_that_disagrees(copy):
    # a well-formed episode file of another length in the place of episode 1 (5 frames)
    path = copy / EPISODE_FILE
    (copy / "data/chunk-000/episode_000000.parquet").replace(path)
    (copy / "data/chunk-000/episode_000000.parquet").write_bytes(path.read_bytes())
    assert refused(copy, verify_data=False) == f"{copy / 'data/chunk-000/episode_000001.parquet'}: 7 rows, the metadata lists 5"


def test_wrong_columns(copy):
    path = copy / SAMPLE_FILE
    table = pq.read_table(path)
    pq.write_table(table.drop_columns(["kind"]), path)
    assert "columns index: int64, image: binary, question: string, answer: string, split" in refused(copy)


def test_png_bytes_that_do_not_decode(copy):
    path = copy / EPISODE_FILE
    table = pq.read_table(path)
    images = table["observation.images.top"].to_pylist()
    images[3] = images[3][:40] + b"\x00" * 16 + images[3][56:]  # damaged inside, the parquet file fine
    table = table.set_column(0, "observation.images.top", pa.array(images, pa.binary()))
    pq.write_table(table, path)
    assert refused(copy).startswith(f"{path}: row 3: not a valid image")
    reader = DatasetReader(copy, verify_data=False)
    with pytest.raises(DatasetError, match=f"^{path}: row 3: the image does not decode"):
        reader.episode(1)
    reader.episode(0)
    with pytest.raises(IndexError):
        reader.episode(3)


def test_an_index_column_that_disagrees(copy):
    path = copy / EPISODE_FILE
    table = pq.read_table(path)
    table = table.set_column(6, "episode_index", pa.array([0] * 5, pa.int64()))
    pq.write_table(table, path)
    assert refused(copy).startswith(f"{path}: column episode_index disagrees with the metadata")


def test_frames_of_another_size(copy):
    from PIL import Image
    path = copy / EPISODE_FILE
    table = pq.read_table(path)
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((H, W + 2, 3), np.uint8)).save(buffer, format="PNG")
    images = table["observation.images.top"].to_pylist()
    images[0] = buffer.getvalue()
    pq.write_table(table.set_column(0, "observation.images.top", pa.array(images, pa.binary())), path)
    assert refused(copy) == f"{path}: row 0: not a valid image (ValueError: image is 24x34, expected 24x32)"
