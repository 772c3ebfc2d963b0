"""Accuracy-vs-latency calibration (`chatvla2 calibrate capture | sweep | select`) on the tiny preset.

The sweep runs for real: the tiny model is captured, exported at each precision (ONNX Runtime),
timed and measured against the fp32 PyTorch reference on held-out observations. Each precision
must stay within export/thresholds.py's budgets at the engine and the policy level; a quantization
calibrated on all-zero inputs must be caught by the sweep and rejected by select; a plan a target
cannot run is never selected for it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from chatvla2.calibration import selection
from chatvla2.calibration import sweep as sweep_module
from chatvla2.calibration.capture import load_capture
from chatvla2.calibration.observations import check_disjoint, observations
from chatvla2.calibration.plans import parse_plans
from chatvla2.calibration.sweep import action_errors, token_agreement
from chatvla2.calibration.sweep_config import SweepConfig
from chatvla2.contract.command_config import parse_config
from chatvla2.contract.config import get_config

pytestmark = pytest.mark.calibration

CALIBRATION = "sim:math_game:in_domain:100-103"
HELD_OUT = "sim:math_game:in_domain:0-2+sim:math_game:open_world:0"
PRECISIONS = ("fp32", "fp16", "int8", "fp8", "int4")
# An untrained model would end its reasoning at once: a few tokens forced, a short cap.
TOKENS = ["--min-tokens", "4", "--max-tokens", "10"]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _sweep_args(out: Path, plans: str, calibration: str = CALIBRATION, held_out: str = HELD_OUT) -> SweepConfig:
    return parse_config(
        SweepConfig,
        [
            "--config",
            "tiny",
            "--plans",
            plans,
            "--out",
            str(out),
            "--calibration",
            calibration,
            "--held-out",
            held_out,
            "--runs",
            "3",
            "--warmup",
            "1",
            "--quiet",
            *TOKENS,
        ],
    )


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    report = sweep_module.sweep(_sweep_args(out, ",".join(PRECISIONS)), log=lambda line: None)
    return out, report


@pytest.fixture(scope="module")
def broken_sweep(tiny_sweep, tmp_path_factory):
    """int8 calibrated on all-zero inputs: every activation scale collapses."""
    out, _ = tiny_sweep
    data = np.load(out / "captures" / "calibration.npz")
    zeros = {k: (np.zeros_like(v) if "." in k and "/" not in k and v.dtype.kind == "f" else v) for k, v in data.items()}
    broken = tmp_path_factory.mktemp("broken")
    np.savez(broken / "zeros.npz", **zeros)
    # The same weights trace the same fp32 graphs: start from the first sweep's traces (the sweep
    # keeps them in OUT/trace_cache), so this sweep pays only for its own quantization.
    shutil.copytree(out / "trace_cache", broken / "sweep" / "trace_cache")
    report = sweep_module.sweep(_sweep_args(broken / "sweep", "int8", calibration=str(broken / "zeros.npz")), log=lambda line: None)
    return broken / "sweep", report


# --- the sweep on the tiny preset ------------------------------------------------------------------


@pytest.mark.slow
def test_every_precision_within_its_engine_and_policy_budgets(tiny_sweep):
    from chatvla2.export.thresholds import BUDGETS, policy_budget_for

    _, report = tiny_sweep
    plans = {p["name"]: p for p in report["plans"]}
    assert set(plans) == set(PRECISIONS)
    for name, plan in plans.items():
        for engine, figures in plan["engines"].items():
            budget = BUDGETS[figures["precision"]]
            assert figures["cosine"] >= budget.cosine_min, (name, engine, figures["cosine"])
            assert figures["relative_error"] <= budget.relative_error_max, (name, engine, figures["relative_error"])
            assert figures["latency"]["p50_ms"] > 0 and figures["calls"] >= 4
        budget = policy_budget_for(set(plan["plan"]["precisions"].values()))
        assert plan["policy"]["action_deg_same_reasoning"] <= budget.action_deg_max, (name, plan["policy"])
        assert plan["policy"]["token_agreement"] >= budget.token_agreement_min, (name, plan["policy"])
        assert plan["ok"], plan["status"]
    # fp32 is the reference arithmetic reordered: the same reasoning, actions within a hundredth of a degree
    assert plans["fp32"]["policy"]["reasoning_identical"] == plans["fp32"]["policy"]["observations"] == 4
    assert plans["fp32"]["policy"]["action_deg"] < 0.01
    assert plans["fp8"]["targets"] == ["hopper", "thor"] and "orin" in plans["int8"]["targets"]


@pytest.mark.slow
def test_the_report_files(tiny_sweep):
    out, report = tiny_sweep
    text = (out / "report.md").read_text()
    assert "| PyTorch eager (reference) | fp32 |" in text and "| int4 |" in text and "CPU latency does not" in text
    assert json.loads((out / "report.json").read_text())["plans"][0]["name"] == "fp32"
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for plan in report["plans"]:
        assert (out / "results" / f"{plan['name']}.json").is_file()


@pytest.mark.slow
def test_an_interrupted_sweep_resumes(tiny_sweep):
    """Run again over the same directory: every plan is taken from its saved result, nothing exported."""
    out, report = tiny_sweep
    lines = []
    again = sweep_module.sweep(_sweep_args(out, ",".join(PRECISIONS)), log=lines.append)
    assert sum("resumed" in line for line in lines) == len(PRECISIONS) + 1  # the plans and the reference
    assert not any("exporting" in line for line in lines)
    assert [p["policy"] for p in again["plans"]] == [p["policy"] for p in report["plans"]]


@pytest.mark.slow
def test_a_broken_quantization_is_caught_and_rejected(broken_sweep, tiny_sweep):
    out, report = broken_sweep
    (plan,) = report["plans"]
    assert not plan["ok"] and "cosine" in plan["status"]
    assert plan["policy"]["action_deg"] > 10 * tiny_sweep[1]["plans"][2]["policy"]["action_deg"]
    with pytest.raises(ValueError, match="no plan that runs on cpu meets the budget; closest: int8: misses"):
        selection.select(report, selection.parse_budget("action_deg<=1000"), "cpu")


# --- select ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_select_on_the_tiny_sweep_and_the_bundle_follows(tiny_sweep, tmp_path):
    out, report = tiny_sweep
    budget = "action_deg<=1000,token_agreement>=0"
    result = subprocess.run(
        [sys.executable, "-m", "chatvla2", "calibrate", "select", str(out), "--budget", budget, "--target", "orin"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["target"] == "orin" and "fp8" not in record["plan"].values()
    assert result.stdout.startswith("chosen for orin:")
    # recorded in the sweep's own bundle of that plan; the runtime follows the plan's reasoning cap
    chosen = next(p for p in report["plans"] if p["name"] == record["name"])
    capped = tmp_path / "capped"
    import shutil

    shutil.copytree(chosen["bundle"], capped)
    record["max_reasoning_tokens"] = 3
    selection.record_in_bundle(capped, record)
    from chatvla2.runtime.policy import Policy

    policy = Policy.from_bundle(capped)
    assert policy.deployment["target"] == "orin" and policy.max_reasoning_tokens == 3
    policy.close()
    other = next(p for p in report["plans"] if p["plan"]["precisions"] != chosen["plan"]["precisions"])
    with pytest.raises(ValueError, match="its engines are"):
        selection.record_in_bundle(other["bundle"], record)


def _plan(name, step, targets, ok=True, action_deg=0.1, agreement=1.0, drop=None, orin=None):
    plan = {
        "name": name,
        "ok": ok,
        "status": "within budgets" if ok else "misses: decode cosine 0.5 < 0.98",
        "targets": targets,
        "plan": {
            "precisions": dict.fromkeys(("vision", "prefill", "decode", "action_head"), name),
            "steps": None,
            "tokens": None,
            "every": 1,
        },
        "engines": {"decode": {"cosine": 0.999}},
        "policy": {
            "latency": {"p50_ms": step},
            "action_deg": action_deg,
            "token_agreement": agreement,
            "first_divergence_min": None,
            "gripper_mm": 0.0,
        },
        "predicted": {"targets": {t: {"step_ms": (orin or step) / 10} for t in ("orin", "thor", "h100")}},
    }
    if drop is not None:
        plan["task"] = {"success_drop_pp": drop}
    return plan


REPORT = {
    "reference": {"policy": {"latency": {"p50_ms": 100}}},
    "plans": [
        _plan("fp32", 100, ["hopper", "orin", "thor"]),
        _plan("fp16", 80, ["hopper", "orin", "thor"], action_deg=0.2),
        _plan("int8", 60, ["hopper", "orin", "thor"], action_deg=0.9),
        _plan("fp8", 40, ["hopper", "thor"], action_deg=0.3),
        _plan("int4", 30, ["hopper", "orin", "thor"], ok=False, action_deg=0.05),
    ],
}


def test_select_takes_the_fastest_plan_the_target_runs_within_the_budget():
    budget = selection.parse_budget("action_deg<=0.5, token_agreement>=0.99")
    assert selection.select(REPORT, budget, "thor")["chosen"]["name"] == "fp8"
    orin = selection.select(REPORT, budget, "orin")
    assert orin["chosen"]["name"] == "fp16"  # fp8 is faster and within budget, but Orin has no FP8
    assert orin["not_runnable"] == ["fp8"]
    assert [p["name"] for p, _ in orin["excluded"]] == ["int4", "int8"]  # int4 missed its own budget
    lines = selection.explain(REPORT, orin, "orin", budget)
    assert lines[0].startswith("chosen for orin: fp16") and "next best: fp32" in "\n".join(lines)
    assert selection.select(REPORT, selection.parse_budget("action_deg<=1"), "cpu")["chosen"]["name"] == "fp8"


@pytest.mark.parametrize(
    "budget, target, message",
    [
        ("action_deg<=0.01", "orin", "no plan that runs on orin meets the budget; closest: fp32: action_deg 0.1"),
        ("success_drop<=2", "orin", "measured no task level"),
        ("speed>=3", "orin", "unknown metric 'speed'"),
        ("action_deg<0.5", "orin", "cannot read 'action_deg<0.5'"),
        ("action_deg<=1", "jetson", "unknown target 'jetson'"),
    ],
)
def test_select_refuses_with_one_line(budget, target, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        selection.select(REPORT, selection.parse_budget(budget), target)


def test_select_cli_bad_input_is_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "chatvla2", "calibrate", "select", str(tmp_path), "--budget", "action_deg<=1", "--target", "orin"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "no sweep report" in result.stderr


# --- plans, observations, figures --------------------------------------------------------------------


def test_plans_by_name_per_engine_and_with_knobs():
    plans = parse_plans("fp32,int8+steps=5+tokens=64,mixed:vision=int8,prefill=fp16,decode=int4,action_head=fp16+every=4")
    assert [p.name for p in plans] == ["fp32", "int8+steps=5+tokens=64", "mixed"]
    assert plans[1].steps == 5 and plans[1].tokens == 64 and set(plans[1].precisions.values()) == {"int8"}
    assert plans[2].precisions == {"vision": "int8", "prefill": "fp16", "decode": "int4", "action_head": "fp16"}
    assert plans[2].every == 4 and plans[0].export_key != plans[1].export_key
    for bad, message in [
        ("int9", "unknown precision"),
        ("int8+speed=2", "unknown setting"),
        ("int8+steps=0", ">= 1"),
        ("vision=int8", "needs a NAME"),
        ("fp16,fp16", "given twice"),
        ("", "no plan"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_plans(bad)


def test_calibration_and_evaluation_observations_are_disjoint(tmp_path):
    cfg = get_config("tiny")
    found = observations("sim:math_game:in_domain:3-5+sim:toy_placement:open_world:7", cfg)
    assert [o.id for o in found] == [
        "sim:math_game:in_domain:3",
        "sim:math_game:in_domain:4",
        "sim:math_game:in_domain:5",
        "sim:toy_placement:open_world:7",
    ]
    assert found[0].data["images"][0].shape == (cfg.vision.image_height, cfg.vision.image_width, 3)
    check_disjoint([o.id for o in found[:2]], [o.id for o in found[2:]])
    with pytest.raises(ValueError, match="overlap: sim:math_game:in_domain:4"):
        check_disjoint([o.id for o in found[:2]], [o.id for o in found[1:]])
    # and the sweep refuses overlapping sources before it exports anything
    with pytest.raises(ValueError, match="overlap"):
        sweep_module.sweep(
            _sweep_args(tmp_path / "s", "fp32", calibration="sim:math_game:in_domain:0-1", held_out="sim:math_game:in_domain:1-2"),
            log=lambda line: None,
        )
    assert not (tmp_path / "s" / "bundles").exists()
    for bad, message in [
        ("sim:math_game:in_domain", "write sim:TASK:SPLIT"),
        ("sim:chess:in_domain:0", "unknown task"),
        ("sim:math_game:in_domain:5-2", "increasing"),
        (str(tmp_path / "none"), "no such dataset"),
    ]:
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            observations(bad, cfg)


def test_token_agreement_and_action_errors():
    assert token_agreement([1, 2, 3], [1, 2, 3]) == (1.0, None)
    assert token_agreement([1, 2, 9, 9], [1, 2, 3]) == (0.5, 2)
    assert token_agreement([], []) == (1.0, None)
    reference = np.zeros((50, 14))
    actions = reference.copy()
    actions[10, 3] = np.radians(2.0)  # a joint 2 degrees off
    actions[20, 13] = 0.004  # the right gripper 4 mm off
    joint_deg, gripper_mm = action_errors(actions, reference)
    assert joint_deg == pytest.approx(2.0) and gripper_mm == pytest.approx(4.0)


def _capture_command(observations: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """`chatvla2 calibrate capture` of the tiny preset, in a subprocess, as a user runs it."""
    argv = [sys.executable, "-m", "chatvla2", "calibrate", "capture", "--config", "tiny", "--observations", observations]
    return subprocess.run([*argv, "--out", str(out), *extra], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_capture_cli_writes_what_export_reads(tmp_path):
    out = tmp_path / "capture.npz"
    result = _capture_command("sim:math_game:in_domain:0-1+sim:toy_placement:in_domain:0", out, *TOKENS)
    assert result.returncode == 0, result.stderr
    meta, data = load_capture(out)
    assert [o["id"] for o in meta["observations"]] == [
        "sim:math_game:in_domain:0",
        "sim:math_game:in_domain:1",
        "sim:toy_placement:in_domain:0",
    ]
    assert 3 * 4 <= meta["calls"]["decode"] <= 3 * 8 and meta["calls"]["vision"] == 3  # 8 a reasoning at most
    # what `chatvla2 export --calibration FILE` reads, checked by its own loader (any prompt length)
    from chatvla2.export.calibration_data import expected_inputs, load_engine_inputs
    from chatvla2.models.loading import load_model

    inputs = load_engine_inputs(out, expected_inputs(load_model("tiny", None, 0)))
    assert inputs["decode"]["token"].shape == (meta["calls"]["decode"], 1)
    # the prefill takes the calls as long as the first prompt (the math game's two, not the toy's)
    assert inputs["prefill"]["embeddings"].shape[0] == 2 and inputs["action_head"]["noise"].shape[0] == 3
    bad = _capture_command("sim:math_game:nowhere:0", tmp_path / "x.npz")
    assert bad.returncode == 2 and "unknown split 'nowhere'" in bad.stderr and not (tmp_path / "x.npz").exists()
