"""`chatvla2 eval` (calibration/task_eval.py): the policy on the simulated tasks, scored the paper's way.

The untrained tiny preset (`--config tiny`, PyTorch) and its exported bundle (the `tiny_bundle`
fixture: the same weights, `load_model("tiny")`) on 2 episodes of each task in fast mode, episodes
capped at a few queries (`max_steps`) to keep the file at seconds; a scripted stand-in policy that
writes the expert's reasoning and plays the expert's actions checks the loop and the scoring end
to end (full scores, success); the bad inputs; one driver-mode episode (slow).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from chatvla2.contract.command_config import parse_config
from chatvla2.evaluation import task_eval
from chatvla2.evaluation.eval_config import EvalConfig
from chatvla2.evaluation.task_eval import main, run_episode
from chatvla2.sim.tasks.env import MAX_STEPS, TaskEnv

TASKS = ("math_game", "toy_placement")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The tiny model on one thread: 60 ms a query; two threads on a shared 2-core machine that
    another process is using spin against it (measured 0.7-9 s a query)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

STEPS = 60  # 3 queries of 20 steps per episode


@pytest.fixture
def record_file(tmp_path):
    return tmp_path / "eval.json"


def _run(capsys, record_file, **overrides) -> tuple[str, dict]:
    """`main` on the settings; what it printed and the record it wrote (--json-out)."""
    assert main(EvalConfig(**{"split": "in_domain", "episodes": 2, "max_steps": STEPS, "json_out": str(record_file),
                              **overrides})) == 0
    out = capsys.readouterr().out
    (line,) = record_file.read_text().splitlines()
    return out, json.loads(line)["task_eval"]


def _comparable(result: dict) -> list[dict]:
    """The episode records without what varies from run to run (timings)."""
    return [{k: v for k, v in r.items() if k not in ("latency_ms", "wall_s")} for r in result["episode_records"]]


@pytest.mark.parametrize("task", TASKS)
def test_torch_tiny_prints_episodes_table_and_json(capsys, record_file, task):
    out, result = _run(capsys, record_file, task=task, preset="tiny")
    assert "| policy | backend | split |" in out and "| PyTorch tiny | torch | in_domain |" in out
    assert "| paper: ChatVLA-2 |" in out
    # the terminal ends with the table and where the record went; the record (JSON) is in the file
    *_, paper_row, where = out.strip().splitlines()
    assert paper_row.startswith("| paper: ChatVLA-2 |") and where.endswith(str(record_file.resolve()))
    assert "task_eval" not in out
    assert out.count("episode seed ") == 2 and "latency  : p50 ms preprocess" in out
    assert result["backend"] == "torch" and result["model"] == "tiny" and result["image"] == [56, 84]
    assert [r["seed"] for r in result["episode_records"]] == [0, 1]
    for r in result["episode_records"]:
        for name, top in task_eval.SCORES[task]:
            assert 0 <= r["scores"][name] <= top
        assert r["steps"] <= STEPS and len(r["queries"]) == -(-r["steps"] // 20)
        assert r["reasoning"] == r["queries"][0]["reasoning"] and r["queries"][0]["step"] == 0
        assert set(r["latency_ms"]) >= {"preprocess", "vision", "prefill", "decode", "action_head", "total"}
    s = result["summary"]
    for name, top in task_eval.SCORES[task]:
        assert 0 <= s[name] <= top
    assert 0 <= s["successes"] <= s["episodes"] == 2
    assert result["latency"]["total"]["p50_ms"] > 0 and result["queries"] == sum(
        len(r["queries"]) for r in result["episode_records"])


def test_same_seed_same_results_other_seed_other_episodes(capsys, record_file):
    _, first = _run(capsys, record_file, task="math_game", preset="tiny", seed=3)
    _, again = _run(capsys, record_file, task="math_game", preset="tiny", seed=3)
    assert _comparable(first) == _comparable(again)
    _, other = _run(capsys, record_file, task="math_game", preset="tiny", seed=5)
    assert [r["seed"] for r in other["episode_records"]] == [5, 6]
    expected = {r["expected"] for r in first["episode_records"]}
    assert expected.isdisjoint(r["expected"] for r in other["episode_records"])
    # overlapping seeds are the same episodes: 3 + 1 == 4
    _, shifted = _run(capsys, record_file, task="math_game", preset="tiny", seed=4)
    assert _comparable(shifted)[0] == _comparable(first)[1]


@pytest.mark.parametrize("task", TASKS)
def test_torch_and_bundle_reason_the_same(capsys, record_file, tiny_bundle, task):
    _, torch_result = _run(capsys, record_file, task=task, preset="tiny")
    out, bundle_result = _run(capsys, record_file, task=task, bundle=str(tiny_bundle), backend="onnxruntime")
    assert bundle_result["backend"] == "onnxruntime" and "| bundle " in out
    for t, b in zip(torch_result["episode_records"], bundle_result["episode_records"], strict=True):
        assert (t["seed"], t["expected"]) == (b["seed"], b["expected"])
        assert t["reasoning"] == b["reasoning"]  # the first query: the same observation and weights
        assert t["scores"] == b["scores"]


class ExpertPolicy:
    """A stand-in policy: the expert's reasoning for the observation, and the expert's plan from the
    current step (so the loop, the chunk slicing and the scoring are checked with full marks)."""

    backend, num_views = "expert", 2

    def __init__(self, env: TaskEnv):
        self.env, self.seen_views = env, []

    def infer(self, observation):
        self.seen_views.append(len(observation["images"]))
        plan = self.env.expert_actions()
        step = self.env.world.step
        chunk = plan[min(step, len(plan) - 1):][:50]
        chunk = np.concatenate([chunk, np.repeat(plan[-1:], 50 - len(chunk), axis=0)]) if len(chunk) < 50 else chunk
        return {"reasoning": self.env.expert_reasoning(), "action_chunk": chunk, "tokens": 1,
                "timings": {"preprocess": 0.0, "total": 0.001}}


@pytest.mark.parametrize("task, split, seed, scores", [
    ("math_game", "open_world", 3, {"ocr": 4, "math": 2}),
    ("toy_placement", "open_world", 3, {"object_recognition": 1, "spatial_affordance": 1}),
    ("toy_placement", "in_domain", 0, {"object_recognition": 1, "spatial_affordance": 1}),
])
def test_expert_reasoning_and_actions_score_full_marks(task, split, seed, scores):
    env = TaskEnv(task, split, 56, 84)
    policy = ExpertPolicy(env)
    record = run_episode(env, policy, seed, query_every=17)
    assert record["scores"] == scores and record["parsed"]
    assert record["success"] and record["outcome"] == "success", record["picked"]
    assert [q["step"] for q in record["queries"]] == list(range(0, 17 * len(record["queries"]), 17))
    assert set(policy.seen_views) == {2}  # the top camera replicated into each view


def test_options_take_their_defaults_from_the_config():
    config = parse_config(EvalConfig, ["--task", "math_game", "--split", "open_world", "--episodes", "3", "--config", "tiny"])
    assert config == EvalConfig(task="math_game", split="open_world", episodes=3, preset="tiny")
    assert (config.query_every, config.max_steps, config.mode, config.json_out) == (20, MAX_STEPS, "fast", "eval_output/eval.json")
    with pytest.raises(SystemExit):
        parse_config(EvalConfig, ["--split", "open_world", "--episodes", "3", "--config", "tiny"])  # --task is required


@pytest.fixture
def wrong_action_bundle(tiny_bundle, tmp_path):
    bundle = tmp_path / "wrong"
    shutil.copytree(tiny_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["model_config"]["action_head"]["action_dim"] = 7
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


@pytest.mark.parametrize("overrides, message", [
    ({"task": "math"}, "unknown task 'math'"),
    ({"split": "openworld"}, "unknown split 'openworld'"),
    ({"episodes": 0}, "--episodes must be an integer >= 1"),
    ({"episodes": -2}, "--episodes must be an integer >= 1"),
    ({"preset": None}, "give exactly one of --checkpoint, --config, --bundle (got none)"),
    ({"checkpoint": "/nonexistent"}, "(got --checkpoint and --config)"),
    ({"bundle": "/nonexistent"}, "(got --config and --bundle)"),
    ({"mode": "slow"}, "unknown mode 'slow'"),
    ({"backend": "cuda"}, "unknown backend 'cuda'"),
    ({"backend": "onnxruntime"}, "--backend onnxruntime runs a --bundle"),
    ({"query_every": 0}, "--query-every must be an integer >= 1"),
    ({"query_every": 51}, "--query-every 51 is longer than the model's action chunk (50)"),
    ({"seed": -1}, "--seed must be an integer >= 0"),
    ({"preset": "tinny"}, "unknown model preset 'tinny'"),
])
def test_bad_input_is_one_line(capsys, overrides, message):
    with pytest.raises(ValueError) as error:  # from the config (its __post_init__), or from main (the model)
        main(EvalConfig(**{"task": "math_game", "split": "in_domain", "episodes": 1, "preset": "tiny", **overrides}))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_bad_bundles_are_one_line(capsys, tiny_bundle, wrong_action_bundle):
    base = {"task": "toy_placement", "split": "open_world", "episodes": 1}
    with pytest.raises(ValueError, match="7-D actions and 14-D state; the tasks need 14") as error:
        main(EvalConfig(**base, bundle=str(wrong_action_bundle)))
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="--backend torch runs --checkpoint or --config"):
        main(EvalConfig(**base, bundle=str(tiny_bundle), backend="torch"))
    with pytest.raises(ValueError, match="give exactly one"):
        main(EvalConfig(**base, bundle=str(tiny_bundle), checkpoint="/x"))


@pytest.mark.slow
def test_driver_mode_one_episode(capsys, record_file, no_threads_left_behind):
    out, result = _run(capsys, record_file, task="toy_placement", preset="tiny", episodes=1, mode="driver")
    assert result["mode"] == "driver" and len(result["episode_records"]) == 1
    record = result["episode_records"][0]
    assert record["steps"] == STEPS and record["outcome"] == "truncated"
    timing = result["driver_timing"]
    assert timing["ticks"] == STEPS and timing["rate_hz"] == 50
    assert "driver: " in out


@pytest.mark.slow
def test_an_arm_fault_ends_its_episode_and_the_next_one_gets_fresh_arms(no_threads_left_behind):
    """Through the real drivers: the left arm's motor 5 (joint4) falls silent mid-episode (the simulator's
    injected fault), the driver damps and raises CommunicationLost; that episode is an "arm fault",
    not an error, and the next reset restarts the arms for the next episode."""
    from chatvla2.sim.tasks.driver_backend import DriverBackend, open_sim_arms

    faults = [{"left": "silent=5@1.5"}, None]  # 1.5 s after the bus opens: past the ~0.4 s first reset
    backend = DriverBackend(connect=lambda: open_sim_arms("x5", faults.pop(0)))
    try:
        env = TaskEnv("math_game", "in_domain", 56, 84, backend=backend, max_steps=150)
        policy = ExpertPolicy(env)
        faulted = run_episode(env, policy, 0, query_every=20)
        assert faulted["outcome"] == "arm fault" and not faulted["success"], faulted["outcome"]
        assert faulted["arm_fault"].startswith("CommunicationLost: left arm: joint4 (motor 5) silent")
        assert 0 < faulted["steps"] < 150 and faulted["scores"] == {"ocr": 4, "math": 2}  # scored all the same
        clean = run_episode(env, policy, 1, query_every=20)
        assert clean["arm_fault"] is None and (clean["steps"] == 150 or clean["success"]), clean["outcome"]
        assert len(backend.restarts) == 1 and "motor 5" in backend.restarts[0] and not faults
    finally:
        backend.close()


def test_reason_every_reuses_the_last_reasoning_between_fresh_ones():
    """`--reason-every 3`: queries 0, 3, 6, ... reason afresh; the others pass the last result as
    `reuse` (the runtime's cadence: no decoding)."""

    class Counting(ExpertPolicy):
        def infer(self, observation, reuse=None):
            self.reused.append(reuse is not None)
            return super().infer(observation)

    env = TaskEnv("math_game", "in_domain", 56, 84, max_steps=140)
    policy = Counting(env)
    policy.reused = []
    record = run_episode(env, policy, 0, query_every=20, reason_every=3)
    assert len(record["queries"]) == 7
    assert policy.reused == [False, True, True, False, True, True, False]


class AsyncExpertPolicy(ExpertPolicy):
    """ExpertPolicy for the runtime's loop: keyword arguments, and a head trained for rtc."""

    max_prefix = 30

    def infer(self, observation, reuse=None, should_stop=None):
        result = ExpertPolicy.infer(self, observation)
        return {**result, "reasoning_ids": [1], "r": np.zeros((1, 4))}


@pytest.mark.parametrize("chunk_mode", ["switch", "rtc"])
def test_an_async_episode_keeps_the_arms_moving_while_the_policy_thinks(chunk_mode):
    from chatvla2.evaluation.async_episode import LatencyInjection, run_async_episode
    from chatvla2.evaluation.join_smoothness import largest_anywhere
    from chatvla2.runtime.loop import LoopConfig

    env = TaskEnv("math_game", "open_world", 56, 84, max_steps=100)
    policy = AsyncExpertPolicy(env)
    record = run_async_episode(env, policy, 3, LoopConfig(duration_s=10.0, chunk_mode=chunk_mode), LatencyInjection.parse("60-100"))
    assert record["outcome"] == "truncated" and record["steps"] == 100 and len(record["actions"]) == 100
    loop = record["loop"]
    assert loop["inferences"] >= 3 and loop["latency_p50_s"] >= 0.06  # the injected latency is in the loop's figure
    assert loop["stale_actions"] > 0  # steps executed while an inference ran: the arms did not wait
    assert record["joins"] and all(0 < j < 100 for j in record["joins"])
    if chunk_mode == "rtc":
        assert all(n and n > 0 for n in record["prefix_steps"][1:])  # a committed prefix at every later inference
    # the expert's chunks joined at the steps the loop chose: as smooth as the expert's own motion
    expert = largest_anywhere(env.expert_actions())
    assert record["join_smoothness"]["acceleration"] <= 2 * expert["acceleration"] + 1e-6


@pytest.mark.slow
def test_an_async_episode_through_the_drivers_keeps_the_loops_schedule(capsys, record_file, no_threads_left_behind):
    """--loop async --mode driver: the runtime's loop sends every action to the simulated arms through
    the drivers; the backend does not wait a tick of its own, so each control step is one driver tick."""
    out, result = _run(capsys, record_file, task="math_game", preset="tiny", loop="async", mode="driver", episodes=1,
                       max_steps=100)
    (r,) = result["episode_records"]
    assert r["outcome"] in ("truncated", "wrong pick", "success") and r["arm_fault"] is None
    assert result["driver_timing"]["ticks"] == r["steps"] == 100
    assert r["loop"]["inferences"] >= 2 and result["summary"]["steps_held"] >= 0
    assert "driver: 100 ticks at" in out and "loop (switch):" in out


@pytest.mark.slow
def test_an_arm_fault_ends_an_async_episode_with_the_arm_damped(no_threads_left_behind):
    """The loop's robot is the environment on the drivers: an arm falling silent mid-episode (the
    simulator's injected fault) ends the episode as an "arm fault" (the driver has damped it), the
    loop stops, and the next episode gets fresh arms."""
    from chatvla2.evaluation.async_episode import run_async_episode
    from chatvla2.runtime.loop import LoopConfig
    from chatvla2.sim.tasks.driver_backend import DriverBackend, open_sim_arms

    faults = [{"left": "silent=5@1.5"}, None]
    backend = DriverBackend(connect=lambda: open_sim_arms("x5", faults.pop(0)), paced=False)
    try:
        env = TaskEnv("math_game", "in_domain", 56, 84, backend=backend, max_steps=150)
        policy = AsyncExpertPolicy(env)
        faulted = run_async_episode(env, policy, 0, LoopConfig(duration_s=10.0))
        assert faulted["outcome"] == "arm fault" and not faulted["success"], faulted["outcome"]
        assert faulted["arm_fault"].startswith("CommunicationLost: left arm: joint4 (motor 5) silent")
        assert faulted["loop"]["stop_reason"] == "episode ended: arm fault" and 0 < faulted["steps"] < 150
        clean = run_async_episode(env, policy, 1, LoopConfig(duration_s=10.0))
        assert clean["arm_fault"] is None and clean["steps"] > 0 and len(backend.restarts) == 1
    finally:
        backend.close()


def test_an_async_eval_with_injected_latency_records_the_loop(capsys, record_file):
    out, result = _run(capsys, record_file, task="math_game", preset="tiny", loop="async", latency_ms="50", episodes=1)
    assert result["loop"] == "async" and result["chunk_mode"] == "switch" and result["latency_ms"] == "50"
    (r,) = result["episode_records"]
    assert r["loop"]["inferences"] >= 2 and r["steps"] > 0 and r["outcome"] in ("truncated", "starved", "wrong pick", "success")
    assert r["reasoning"] == r["queries"][0]["reasoning"] and "join_smoothness" in result["summary"]
    assert "| PyTorch tiny | torch | in_domain |" in out


@pytest.mark.parametrize("overrides, message", [
    ({"chunk_mode": "rtc"}, "--chunk-mode and --latency-ms apply to --loop async"),
    ({"latency_ms": "100"}, "--chunk-mode and --latency-ms apply to --loop async"),
    ({"loop": "async", "latency_ms": "fast"}, "--latency-ms 'fast': expected milliseconds"),
    ({"loop": "async", "latency_ms": "400-200"}, "expected 0 <= LOW <= HIGH"),
    ({"loop": "later"}, "unknown loop 'later'"),
    ({"loop": "async", "chunk_mode": "rtc"}, "chunk mode rtc needs an action head trained to continue"),
])
def test_bad_async_settings_are_one_line(capsys, overrides, message):
    with pytest.raises(ValueError, match=message):
        main(EvalConfig(**{"task": "math_game", "split": "in_domain", "episodes": 1, "preset": "tiny", "max_steps": 20, **overrides}))
