"""User errors (chatvla2/contract/errors.py): the mistakes a user can make and fix raise a type in
USER_ERRORS (the front door prints it as one line, exit 2); an internal check does not (it keeps its
traceback). Every user-error type still is the built-in error it was, so `except ValueError` works."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from chatvla2.contract.errors import USER_ERRORS, DeviceError, InvalidInput, MissingFile, UnknownName, UserError
from chatvla2.drivers.errors import DriverUserError


def test_an_unknown_preset_is_an_unknown_name_and_still_a_value_error():
    from chatvla2.contract.config import get_config

    with pytest.raises(USER_ERRORS) as info:
        get_config("tinny")
    assert isinstance(info.value, UnknownName) and isinstance(info.value, ValueError)
    assert "unknown model preset 'tinny' (did you mean 'tiny'?)" in str(info.value)


def test_a_missing_checkpoint_directory_is_a_missing_file(tmp_path):
    from chatvla2.models.checkpoint import load_checkpoint

    with pytest.raises(MissingFile, match="checkpoint directory not found"):
        load_checkpoint(tmp_path / "nope")


def test_a_corrupt_bundle_manifest_is_invalid_input(tmp_path):
    from chatvla2.contract.bundle import MANIFEST_FILE, BundleError, load_manifest

    (tmp_path / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON") as info:
        load_manifest(tmp_path)
    assert isinstance(info.value, InvalidInput) and isinstance(info.value, USER_ERRORS)


def test_a_bad_fault_spec_is_invalid_input():
    from chatvla2.sim.faults import FaultSpecError, parse_faults

    with pytest.raises(FaultSpecError, match="unknown fault 'unplugg'") as info:
        parse_faults("unplugg=5")
    assert isinstance(info.value, InvalidInput) and isinstance(info.value, USER_ERRORS)


def test_an_unknown_arm_profile_is_a_driver_user_error():
    from chatvla2.drivers.profiles import UnknownProfileError, get_profile

    with pytest.raises(UnknownProfileError, match="unknown arm profile 'x9'") as info:
        get_profile("x9")
    assert isinstance(info.value, DriverUserError) and isinstance(info.value, LookupError)
    assert isinstance(info.value, USER_ERRORS)


def test_internal_errors_are_not_user_errors():
    from chatvla2.runtime.safety import ActionSafety

    with pytest.raises(ValueError) as info:  # only our own code builds these limits
        ActionSafety(low=np.zeros(2), high=np.ones(3), max_step=np.ones(2))
    assert not isinstance(info.value, USER_ERRORS)
    with pytest.raises(ValueError) as info:  # a ValueError from deep inside numpy
        np.zeros(6).reshape(4, 4)
    assert not isinstance(info.value, USER_ERRORS)
    assert not isinstance(KeyError("x"), USER_ERRORS) and not isinstance(OSError("x"), USER_ERRORS)


def _classes():
    from chatvla2.calibration.capture import CaptureError
    from chatvla2.contract.bundle import BundleError
    from chatvla2.drivers.cli import ArmNotDisabled, MotorsNotAnswering
    from chatvla2.drivers.faults import ArmFault, OverCurrent
    from chatvla2.drivers.profiles import UnknownProfileError
    from chatvla2.drivers.slcan_link import LinkDisconnected, LinkError
    from chatvla2.export.lint import LintError
    from chatvla2.export.parity import ParityError
    from chatvla2.export.tensorrt_build import BuildError
    from chatvla2.models.checkpoint import CheckpointError
    from chatvla2.models.hf_weights import SourceError
    from chatvla2.runtime.camera_source import CameraError, EndOfStream
    from chatvla2.runtime.engine import FeedError
    from chatvla2.runtime.tensorrt_identity import EngineMismatch, TensorRTUnavailable
    from chatvla2.sim.dataset_format import DatasetError
    from chatvla2.sim.faults import FaultSpecError

    return [
        (BundleError, InvalidInput, ValueError),
        (CheckpointError, InvalidInput, ValueError),
        (SourceError, InvalidInput, ValueError),
        (DatasetError, InvalidInput, ValueError),
        (FaultSpecError, InvalidInput, ValueError),
        (LintError, InvalidInput, ValueError),
        (BuildError, InvalidInput, ValueError),
        (ParityError, InvalidInput, ValueError),
        (CaptureError, InvalidInput, ValueError),
        (FeedError, InvalidInput, ValueError),
        (EngineMismatch, InvalidInput, ValueError),
        (TensorRTUnavailable, DeviceError, OSError),
        (CameraError, DeviceError, OSError),
        (EndOfStream, DeviceError, OSError),
        (UnknownProfileError, DriverUserError, LookupError),
        (LinkError, DriverUserError, OSError),
        (LinkDisconnected, DriverUserError, OSError),
        (ArmFault, DriverUserError, OSError),
        (OverCurrent, DriverUserError, OSError),
        (MotorsNotAnswering, DriverUserError, OSError),
        (ArmNotDisabled, DriverUserError, OSError),
    ]


def test_each_user_facing_class_keeps_its_built_in_base():
    for cls, user_base, builtin in _classes():
        assert issubclass(cls, user_base) and issubclass(cls, builtin), cls
        assert issubclass(cls, USER_ERRORS), cls
    assert issubclass(InvalidInput, UserError) and not issubclass(ValueError, USER_ERRORS)


def test_export_with_an_unknown_preset_prints_one_line_and_exits_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "chatvla2", "export", "--config", "nope", "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "unknown model preset 'nope'" in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "x").exists()
