"""`pip install .` puts one name at top level, `chatvla2`, with every room inside it: on a Jetson venv
made with --system-site-packages (the TensorRT instructions), a top-level `models` or `export` would
shadow, or be shadowed by, another package of that name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOMS = ("contract", "models", "export", "runtime", "drivers", "calibration", "evaluation", "sim", "training")


def test_the_install_has_chatvla2_alone_at_top_level(tmp_path):
    target = tmp_path / "site-packages"
    # --no-build-isolation: the venv's setuptools builds it (no registry needed); --no-deps: only ours.
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    top = sorted(p.name for p in target.iterdir() if p.name != "bin" and not p.name.endswith(".dist-info"))
    assert top == ["chatvla2"], top
    installed = target / "chatvla2"
    assert all((installed / room / "__init__.py").is_file() for room in ROOMS), sorted(p.name for p in installed.iterdir())
    assert not (installed / "tests").exists()
    # The console script is the front door.
    assert (target / "bin" / "chatvla2").is_file()
