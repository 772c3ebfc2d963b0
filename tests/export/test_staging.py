"""`staged_directory`: the target holds the old contents or the new, never a mix, never leftovers."""

from __future__ import annotations

import stat

import pytest

from contract.staging import staged_directory


def test_new_contents_replace_the_old_and_are_shareable(tmp_path):
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "old.onnx").write_text("old")
    with staged_directory(target) as staging:
        (staging / "new.onnx").write_text("new")
        assert not (target / "new.onnx").exists()  # nothing visible before the swap
    assert [p.name for p in target.iterdir()] == ["new.onnx"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert stat.S_IMODE((target / "new.onnx").stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no staging, no old copy


def test_a_failure_leaves_the_old_contents_and_nothing_else(tmp_path):
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "old.onnx").write_text("old")
    with pytest.raises(RuntimeError, match="parity"):
        with staged_directory(target) as staging:
            (staging / "new.onnx").write_text("new")
            raise RuntimeError("parity missed")
    assert [p.name for p in target.iterdir()] == ["old.onnx"]
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]
