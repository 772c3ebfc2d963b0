"""The layer rules of the README's "Architecture", as import-linter contracts (pyproject.toml):
they hold for the code, and they catch a violation, a lazy import inside a function included."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))


def _lint(root: Path) -> subprocess.CompletedProcess:
    # lint-imports finds the packages on sys.path: run it from the tree being checked.
    return subprocess.run([LINT_IMPORTS, "--config", str(root / "pyproject.toml"), "--no-cache"], capture_output=True,
                          text=True, cwd=root, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, timeout=300)


def test_the_layer_contracts_hold():
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "3 kept, 0 broken" in result.stdout


def _copy_of_the_tree(tmp_path: Path) -> Path:
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    shutil.copytree(REPO / "chatvla2", tmp_path / "chatvla2", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_a_lazy_import_of_torch_in_the_runtime_breaks_a_contract(tmp_path):
    root = _copy_of_the_tree(tmp_path)
    with open(root / "chatvla2" / "runtime" / "safety.py", "a") as f:
        f.write("\n\ndef _sneaky():\n    import torch  # noqa: F401\n")
    result = _lint(root)
    assert result.returncode != 0
    assert "chatvla2.runtime.safety -> torch" in result.stdout


def test_the_drivers_importing_the_simulator_breaks_the_layers(tmp_path):
    root = _copy_of_the_tree(tmp_path)
    with open(root / "chatvla2" / "drivers" / "cli.py", "a") as f:
        f.write("\n\ndef _sneaky():\n    from chatvla2.sim.arm_sim import SimulatedArm  # noqa: F401\n")
    result = _lint(root)
    assert result.returncode != 0
    assert "chatvla2.drivers.cli -> chatvla2.sim.arm_sim" in result.stdout
