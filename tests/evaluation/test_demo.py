"""`chatvla2 demo`: the shipped checkpoint exported (once, cached), driving simulated ARX arms through
the runtime and the drivers; the GIF; bad input as one line with nothing written."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from chatvla2.evaluation.demo import SHIPPED_CHECKPOINT, cached_bundle, checkpoint_fingerprint
from chatvla2.evaluation.episode_gif import EpisodeGif

REPO = Path(__file__).resolve().parents[2]


def _demo(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chatvla2", "demo", *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("demo_cache")


@pytest.fixture(scope="module")
def first_run(cache, tmp_path_factory):
    """One in-domain math-game episode of the shipped model through the drivers and the runtime's loop
    (the demo's default mode and loop)."""
    cwd = tmp_path_factory.mktemp("demo_run")
    result = _demo("--task", "math_game", "--split", "in_domain", "--episodes", "1", "--cache", str(cache), cwd=cwd)
    return result, cwd


def test_the_shipped_checkpoint_is_small_and_documented():
    files = {p.name: p.stat().st_size for p in SHIPPED_CHECKPOINT.rglob("*") if p.is_file()}
    assert {"config.json", "model.safetensors", "train_log_stage1.jsonl", "train_log_stage2.jsonl", "TRAINING.md"} <= set(files), files
    assert sum(files.values()) <= 20 * 2 ** 20
    text = (SHIPPED_CHECKPOINT / "TRAINING.md").read_text()
    assert "chatvla2 train" in text and "chatvla2 eval" in text  # the exact commands and the evaluation


def demo_record(cwd: Path) -> dict:
    """The record the demo writes (--json-out, default demo_output/demo.json under its folder)."""
    (line,) = (cwd / "demo_output" / "demo.json").read_text().splitlines()
    return json.loads(line)["demo"]


def test_demo_exports_then_drives_the_simulated_arms(first_run):
    result, cwd = first_run
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "(exported now" in out and "through the drivers, real time" in out
    if importlib.util.find_spec("tensorrt") is None:
        # The default plan is then the cpu target's auto: a rule (each engine's first of int8, fp32 within
        # its parity budget) for the generic CPU class, whose int8 arithmetic is the same on every CPU, so
        # the plan is int8 on any machine, fast or slow, with or without VNNI.
        from chatvla2.contract.bundle import load_manifest
        from chatvla2.export.cpu_target import AUTO_RULE

        assert "cpu target, plan {" in out and f"({AUTO_RULE}; for generic CPUs)" in out
        record = demo_record(cwd)
        assert record["resolved_plan"] == {"vision": "int8", "prefill": "int8", "decode": "int8", "action_head": "int8"}
        manifest = load_manifest(record["bundle"], verify_hashes=False)
        assert (manifest["plan_rule"], manifest["cpu_isa"], manifest["int8_weight_bits"]) == (AUTO_RULE, "generic", 7)
        assert Path(record["bundle"]).name.startswith("cpu-auto-generic-")  # the cache key names the CPU class
    assert "episode seed 0:" in out and "reasoning:" in out and "picks    :" in out and "latency  : p50 ms" in out
    assert "| paper: ChatVLA-2 | - | in_domain |" in out
    record = demo_record(cwd)
    (result_in,) = record["results"]
    assert result_in["mode"] == "driver" and result_in["backend"] in ("onnxruntime", "tensorrt")
    assert result_in["loop"] == "async" and result_in["chunk_mode"] in ("switch", "rtc")
    episode = result_in["episode_records"][0]
    # the drivers ran at 50 Hz, one tick per control step the loop executed, over a second
    assert result_in["driver_timing"]["ticks"] == episode["steps"] > 50
    assert episode["loop"]["inferences"] >= 2 and "math_game in_domain: driver: " in out
    episode = result_in["episode_records"][0]
    assert episode["reasoning"].startswith("On the whiteboard is")  # a trained model, not noise
    gif = cwd / "demo_output" / "demo.gif"
    assert Path(record["gif"]).resolve() == gif.resolve() and f"{gif.resolve()}" in out
    # what a person reads comes last: the table, where the record and the GIF are; no JSON on the terminal
    last = out.strip().splitlines()[-6:]
    assert any(line.startswith("| paper: ChatVLA-2 |") for line in last), last
    assert last[-3].endswith(str((cwd / "demo_output" / "demo.json").resolve())) and last[-2].startswith("GIF of ")
    assert last[-1].startswith("demo finished in ") and max(map(len, out.splitlines())) < 1000
    with Image.open(gif) as image:
        assert image.n_frames >= 10 and image.size[0] == 3 * 140


def test_a_second_run_reuses_the_exported_bundle(first_run, cache, tmp_path):
    result, _ = first_run
    bundle = demo_record(first_run[1])["bundle"]
    again = _demo("--split", "open_world", "--episodes", "1", "--mode", "fast", "--loop", "sync", "--cache", str(cache),
                  "--gif", str(tmp_path / "g.gif"), "--json-out", str(tmp_path / "r" / "again.json"), cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    record = json.loads((tmp_path / "r" / "again.json").read_text())["demo"]
    assert record["bundle"] == bundle and record["exported"] is False and "(cached" in again.stdout
    assert [(r["task"], r["split"], r["loop"]) for r in record["results"]] == [  # both tasks by default
        ("math_game", "open_world", "sync"), ("toy_placement", "open_world", "sync")]
    assert "| paper: ChatVLA-2 | - | open_world | 0.94 |" in again.stdout  # toy placement's table, with its scores


def test_a_damaged_cached_bundle_is_exported_again(first_run, cache, tmp_path):
    result, _ = first_run
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    bundle = next((copy / "bundles").iterdir())
    graph = bundle / "action_head.onnx"
    graph.write_bytes(graph.read_bytes()[:-10])
    messages = []
    again, exported = cached_bundle(SHIPPED_CHECKPOINT, "auto", copy, log=messages.append)
    assert again == bundle and exported and "not usable" in messages[0]


def test_the_cache_key_follows_the_model_files_not_the_notes(tmp_path):
    shutil.copytree(SHIPPED_CHECKPOINT, tmp_path / "ckpt")
    before = checkpoint_fingerprint(tmp_path / "ckpt")
    assert before == checkpoint_fingerprint(SHIPPED_CHECKPOINT)
    with (tmp_path / "ckpt" / "TRAINING.md").open("a") as f:
        f.write("a note")
    assert checkpoint_fingerprint(tmp_path / "ckpt") == before
    with (tmp_path / "ckpt" / "config.json").open("a") as f:
        f.write(" ")
    assert checkpoint_fingerprint(tmp_path / "ckpt") != before


@pytest.mark.parametrize("args, message", [
    (["--split", "both_splits"], "unknown split 'both_splits'"),
    (["--task", "chess"], "unknown task 'chess'"),
    (["--episodes", "0"], "--episodes must be an integer >= 1"),
    (["--plan", "int3"], "unknown precision 'int3'"),
    (["--backend", "torch"], "the demo runs the exported bundle"),
    (["--gif", "out.png"], "write a .gif file"),
    (["--mode", "slow"], "unknown mode 'slow'"),
    (["--loop", "later"], "unknown loop 'later'"),
    (["--chunk-mode", "blend"], "unknown chunk mode 'blend'"),
    (["--loop", "sync", "--latency-ms", "300"], "--chunk-mode and --latency-ms apply to --loop async"),
    (["--latency-ms", "soon"], "--latency-ms 'soon': expected milliseconds"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    result = _demo(*args, "--cache", str(tmp_path / "cache"), cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "cache").exists() and not (tmp_path / "demo_output").exists()


def test_gif_keeps_every_nth_step_and_plays_in_robot_time(tmp_path):
    import numpy as np

    gif = EpisodeGif(every=5, scale=2)
    frame = np.zeros((56, 84, 3), np.uint8)
    for step in range(23):
        gif.add(step, frame + step, "On the whiteboard is 1+2. " * 8, caption="test")
    assert len(gif.frames) == 5  # steps 0, 5, 10, 15, 20
    path = gif.save(tmp_path / "sub" / "e.gif")
    with Image.open(path) as image:
        assert image.n_frames == 5 and image.size[0] == 168 and image.info["duration"] == 100
    assert not list(path.parent.glob("*.partial"))
    with pytest.raises(ValueError, match="no frames"):
        EpisodeGif().save(tmp_path / "empty.gif")


def test_two_episode_eval_of_the_shipped_checkpoint_writes_the_papers_template():
    """The PyTorch reference of the shipped model on two fresh open-world episodes: the reasoning
    parses as the paper's template (an untrained model's does not), scores within their ranges."""
    from chatvla2.evaluation.eval_config import EvalConfig
    from chatvla2.evaluation.task_eval import evaluate

    result = evaluate(EvalConfig(task="math_game", split="open_world", episodes=2, seed=5000, max_steps=40,
                                 checkpoint=str(SHIPPED_CHECKPOINT)))
    assert result["backend"] == "torch" and result["model"] == "demo" and result["summary"]["episodes"] == 2
    for record in result["episode_records"]:
        assert record["parsed"], record["reasoning"]
        assert 0 <= record["scores"]["ocr"] <= 4 and 0 <= record["scores"]["math"] <= 2
