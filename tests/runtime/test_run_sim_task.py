"""`chatvla2 run --robot sim --task NAME`: what runs on the robot, with a simulated task's scene as
every camera view (sim/robot.py, sim/tasks/live_camera.py), through the real command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from chatvla2.cli import parse
from chatvla2.contract.errors import InvalidInput
from chatvla2.contract.scene import INSTRUCTION

REPO = Path(__file__).resolve().parents[2]
RUN = [sys.executable, "-m", "chatvla2", "run"]


def test_run_math_game_on_the_simulated_arms_reports_the_task(tiny_bundle, tmp_path):
    telemetry = tmp_path / "run.jsonl"
    result = subprocess.run([*RUN, str(tiny_bundle), "--robot", "sim", "--task", "math_game", "--duration", "3",
                             "--threads", "1", "--telemetry", str(telemetry)],
                            capture_output=True, text=True, cwd=REPO, timeout=180)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["stop_reason"] == "duration reached" and summary["damped"] and not summary["errors"]
    assert summary["steps_sent"] >= 100 and summary["inferences"] >= 2
    assert summary["stale_observations"] == 0  # the scene camera kept up
    task = summary["task"]
    assert (task["name"], task["split"], task["episode_seed"], task["instruction"]) == ("math_game", "in_domain", 0, INSTRUCTION)
    assert task["success"] is False  # the tiny model is untrained
    assert isinstance(task["picked"], list) and len(task["answer"]) in (1, 2)
    assert isinstance(task["reasoning"], str)  # the last reasoning the policy decoded, scored
    assert set(task["scores"]) >= {"ocr", "math", "parsed", "form"} and 0 <= task["scores"]["ocr"] <= 4
    assert task["camera"]["frames"] >= 60 and task["camera"]["fps_target"] == 30
    assert "cameras: sim math_game/in_domain seed 0, sim math_game/in_domain seed 0" in lines  # both views
    outcome, scores = [line for line in lines if line.startswith("task ")]  # after the summary table
    assert outcome.startswith("task math_game (in_domain, episode seed 0): ") and "the answer: " in outcome
    assert scores.startswith("task scores (last reasoning): ocr ")
    events = [json.loads(line)["event"] for line in telemetry.read_text().splitlines()]
    assert events.count("step") >= 100 and events.count("inference") >= 2 and events[-1] == "disconnected"


def _run(args, tmp_path):
    return subprocess.run([*RUN, *args], capture_output=True, text=True, cwd=tmp_path, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["--task", "math_game", "--robot", "arx", "--port", "a", "--port", "b"],
     "--task math_game is a simulated task: it runs with --robot sim"),
    (["--robot", "arx", "--task", "toy_placement"], "--task toy_placement is a simulated task"),
    (["--task", "math_game", "--camera", "static", "--camera", "static"], "--camera is not used with --task math_game"),
    (["--task", "math_game", "--instruction", "pick the 3"], "give --task NAME or --instruction TEXT, not both"),
    (["--task", "math_game", "--episode-seed", "-1"], "--episode-seed must be an integer >= 0, got -1"),
    (["--task", "math-game", "--split", "open_world"], "--split and --episode-seed choose a simulated task's scene"),
    (["--camera", "sim", "--camera", "static"], "run it with `chatvla2 run --robot sim --task NAME`"),
])
def test_task_argument_errors_are_one_line(tiny_bundle, tmp_path, args, message):
    result = _run([str(tiny_bundle), "--duration", "1", *args], tmp_path)
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("argv, task, instruction", [
    ([], None, INSTRUCTION),
    (["--task", "math_game"], "math_game", INSTRUCTION),  # the scene's instruction replaces it (sim/robot.py)
    (["--task", "toy_placement", "--split", "open_world", "--episode-seed", "4"], "toy_placement", INSTRUCTION),
    (["--task", "stack the cups"], None, "stack the cups"),  # any other text: the instruction, as before
    (["--instruction", "math_game"], None, "math_game"),  # --instruction is always the text
])
def test_task_is_a_simulated_task_or_the_instruction_text(argv, task, instruction):
    command, config = parse(["run", "BUNDLE", *argv])
    assert (config.sim_task, config.instruction_text) == (task, instruction)
    assert command.target(config) == "chatvla2.sim.robot:run_main"
    if task:
        assert (config.scene_split, config.scene_seed) == (("open_world", 4) if "--split" in argv else ("in_domain", 0))
    arx = ["run", "BUNDLE", *argv, "--robot", "arx", "--port", "a", "--port", "b"]
    if task:  # a simulated task runs on the simulated arms only: refused in one line
        with pytest.raises(InvalidInput, match=f"--task {task} is a simulated task"):
            parse(arx)
    else:  # a text instruction runs the real arms
        command, config = parse(arx)
        assert command.target(config) == "chatvla2.runtime.run:main" and config.instruction_text == instruction


def test_building_the_run_options_needs_no_simulated_task_packages():
    """On the robot (base install) `chatvla2 run` must not need gymnasium or pillow (the [sim] extra)."""
    code = ("import sys; from chatvla2.cli import parse; parse(['run', 'BUNDLE']); "
            "print(sorted(m for m in ('gymnasium', 'PIL', 'chatvla2.sim.tasks.env') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr
