"""The `chatvla2` front door: fast help without torch; each command's options from its config dataclass,
built once and handed to its `main`; user errors as one line (exit 2), bugs with their traceback;
an option typo answered with the command's usage and the closest option (the demo end to end:
tests/evaluation/test_demo.py)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

BLOCK_TORCH = "import sys; sys.modules['torch'] = None; "


def run_cli(*args: str, block_torch: bool = False) -> subprocess.CompletedProcess:
    code = (BLOCK_TORCH if block_torch else "") + "from chatvla2.cli import main; raise SystemExit(main(sys.argv[1:]))"
    if not block_torch:
        code = "import sys; " + code
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


def test_help_works_without_torch_and_lists_every_command():
    result = run_cli("--help", block_torch=True)
    assert result.returncode == 0, result.stderr
    # One help row per subcommand: "    NAME   description" (a name, not a substring of another row).
    listed = {m.group(1) for m in re.finditer(r"^ {4}(\S+) {2,}\S", result.stdout, re.MULTILINE)}
    expected = {"info", "demo", "export", "lint", "build", "run", "bench", "train", "eval", "sim", "sim-arm", "arm"}
    assert expected <= listed, f"missing from --help: {sorted(expected - listed)}"


def test_missing_torch_names_the_extra_to_install():
    result = run_cli("info", "--config", "tiny", block_torch=True)
    assert result.returncode == 2
    assert "pip install 'chatvla2-edge[export]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_preset_is_one_line_and_suggests_a_name():
    result = run_cli("info", "--config", "tinny")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "did you mean 'tiny'" in lines[0]


def test_missing_checkpoint_is_one_line(tmp_path):
    result = run_cli("demo", "--checkpoint", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"chatvla2 demo: error: checkpoint directory not found: {tmp_path / 'nope'}"]


@pytest.mark.parametrize("preset, total", [("paper", "11,261,931,278  11.262B"), ("tiny", "1,044,942  1.045M")])
def test_info_prints_the_breakdown(preset, total):
    result = run_cli("info", "--config", preset)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    for row in ("vision", "attention", "moe_experts", "router", "action_head", "active_per_token"):
        assert row in rows, f"no {row!r} row"
    assert " ".join(rows["total"].split()) == " ".join(["total", *total.split()]), rows["total"]


def test_bad_checkpoint_files_are_one_line(tmp_path):
    """A config.json that is not an object, or a weights header that is JSON but not a tensor table:
    one line naming the file, exit 2 (before: AttributeError and `error: 'data_offsets'`)."""
    import json
    import struct

    from chatvla2.contract.config import get_config
    from chatvla2.models.checkpoint import save_checkpoint
    from chatvla2.models.vla import ChatVLA2

    checkpoint = save_checkpoint(ChatVLA2(get_config("tiny")), tmp_path / "ckpt")
    config = (checkpoint / "config.json").read_text()
    (checkpoint / "config.json").write_text("[]")
    result = run_cli("info", "--checkpoint", str(checkpoint))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "config.json: expected a JSON object, found list" in result.stderr

    (checkpoint / "config.json").write_text(config)
    weights = checkpoint / "model.safetensors"
    data = weights.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    for entry in header.values():
        entry.pop("data_offsets", None)
    text = json.dumps(header).encode()
    weights.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + length:])
    result = run_cli("info", "--checkpoint", str(checkpoint))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "model.safetensors: corrupt header: tensor" in result.stderr and "data_offsets" in result.stderr


def test_run_help_documents_the_feedback_timeout_defaults():
    result = run_cli("run", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "--feedback-timeout S" in text
    assert "default 0.05 s for --robot arx" in text and "0.2 s for --robot sim" in text


# ------------------------------------------------------------------------------- options and errors
def _every_command() -> list[list[str]]:
    from chatvla2.cli import COMMANDS

    return [[name, *([step] if step else [])] for name, command in COMMANDS.items()
            for step in (command.steps or [None])]


@pytest.mark.parametrize("command", _every_command(), ids=" ".join)
def test_every_command_builds_its_options_from_its_config(command, capsys):
    """Each command's --help comes from its config dataclass (contract/command_config.py)."""
    from chatvla2.cli import main

    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    assert f"usage: chatvla2 {' '.join(command)}" in capsys.readouterr().out


def test_the_config_is_built_once_and_handed_to_main(monkeypatch):
    """`chatvla2 demo --episodes 2`: `demo.main` gets a DemoConfig, the flags' values in it and the
    other fields at their defaults."""
    from chatvla2.cli import main
    from chatvla2.evaluation import demo
    from chatvla2.evaluation.demo_config import DemoConfig

    seen = []
    monkeypatch.setattr(demo, "main", lambda config: seen.append(config) or 0)
    assert main(["demo", "--episodes", "2", "--split", "in_domain"]) == 0
    assert seen == [DemoConfig(episodes=2, split="in_domain")]


def test_a_user_error_is_one_line_and_exit_2(monkeypatch, capsys):
    from chatvla2.cli import main
    from chatvla2.contract.errors import InvalidInput
    from chatvla2.sim import cli as sim_cli

    def refuse(config):
        raise InvalidInput("--faults: the user can fix this")

    monkeypatch.setattr(sim_cli, "sim_arm_main", refuse)
    assert main(["sim-arm"]) == 2
    assert capsys.readouterr().err.splitlines() == ["chatvla2 sim-arm: error: --faults: the user can fix this"]


def test_an_option_the_config_refuses_is_one_line_and_exit_2(capsys):
    """Validation in the config's __post_init__, before the command runs."""
    from chatvla2.cli import main

    assert main(["demo", "--episodes", "0"]) == 2
    assert capsys.readouterr().err.splitlines() == ["chatvla2 demo: error: --episodes must be an integer >= 1, got 0"]


def test_another_error_is_a_bug_and_keeps_its_traceback():
    """A ValueError that is not a user error (contract/errors.py) is not turned into one line."""
    code = ("import sys; from chatvla2.sim import cli\n"
            "def broken(config): raise ValueError('a bug deep inside')\n"
            "cli.sim_arm_main = broken\n"
            "from chatvla2.cli import main; raise SystemExit(main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", code, "sim-arm"], capture_output=True, text=True, timeout=120)
    assert result.returncode not in (0, 2), result.stderr
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "ValueError: a bug deep inside"


@pytest.mark.parametrize("argv, usage, hint", [
    (["run", "bundle", "--duraton", "3"], "usage: chatvla2 run", "(did you mean --duration?)"),
    (["demo", "--episdoes", "2"], "usage: chatvla2 demo", "(did you mean --episodes?)"),
    (["calibrate", "predict", "--config", "paper", "--no-mesure"], "usage: chatvla2 calibrate predict",
     "(did you mean --no-measure?)"),
])
def test_an_option_typo_gives_the_commands_usage_and_the_closest_option(argv, usage, hint):
    result = run_cli(*argv, block_torch=True)
    assert result.returncode == 2
    assert result.stderr.startswith(usage), result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert ": error: unrecognized arguments: " in last and last.endswith(hint), last


def test_an_unknown_option_with_nothing_close_gets_no_guess():
    result = run_cli("demo", "--duraton", "3", block_torch=True)
    assert result.returncode == 2 and result.stderr.startswith("usage: chatvla2 demo")
    assert result.stderr.strip().splitlines()[-1] == "chatvla2 demo: error: unrecognized arguments: --duraton 3"
