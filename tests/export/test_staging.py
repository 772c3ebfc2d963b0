"""`staged_directory`: the target holds the old contents or the new, never a mix, never leftovers."""

from __future__ import annotations

import stat

import pytest

from chatvla2.contract.staging import staged_directory


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


def test_before_swap_can_refuse_and_the_target_is_untouched(tmp_path):
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "old.onnx").write_text("old")
    seen = []

    def refuse(path):
        seen.append(path)
        raise FileExistsError("not ours")

    with pytest.raises(FileExistsError, match="not ours"):
        with staged_directory(target, before_swap=refuse) as staging:
            (staging / "new.onnx").write_text("new")
    assert seen == [target]
    assert [p.name for p in target.iterdir()] == ["old.onnx"]
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]
    # a new target: nothing to replace, nothing to check
    with staged_directory(tmp_path / "fresh", before_swap=refuse) as staging:
        (staging / "a").write_text("a")
    assert seen == [target] and (tmp_path / "fresh" / "a").read_text() == "a"
