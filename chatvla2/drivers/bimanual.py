"""`BimanualARX`: two ARX arms on two links presented as one 14-D robot (left 7, then right 7)."""

from __future__ import annotations

import os
import stat
import threading

import numpy as np

from chatvla2.drivers.arm import ARXArm
from chatvla2.drivers.errors import DriverInvalidInput
from chatvla2.drivers.profiles import ARM_DIMS
from chatvla2.drivers.shutdown import ShutdownReport

SIDES = ("left", "right")  # the order of the 14-D vector (contract/embodiment.py composes the same)
PER_ARM = len(ARM_DIMS)  # 7 values per arm: joints 1..6, then the gripper width (profiles.py)


class BimanualARX:
    def __init__(self, left: ARXArm, right: ARXArm) -> None:
        _refuse_same_device(left, right)
        # every fault and error names its arm ("left arm: joint4 (motor 5) silent ...")
        for side, arm in zip(SIDES, (left, right)):
            if not arm.name:
                arm.name = side
        self.left, self.right = left, right

    def connect(self) -> BimanualARX:
        self.left.connect()
        try:
            self.right.connect()
        except BaseException:
            self.left.disconnect()
            raise
        return self

    def disconnect(self) -> dict[str, ShutdownReport]:
        """Both arms damp at the same time, then each disconnects (damping, disable, close) in its own
        thread: an adapter that hangs cannot delay the other arm's disable. Each arm's disconnect is
        bounded, so both threads end; they are not daemons, so even an interrupted caller does not
        end the process before both arms are disabled. Never raises for a dead link; returns each
        arm's report."""
        for arm in (self.left, self.right):
            controller = arm.controller
            if controller is not None and controller.running:
                controller.damp()
        reports: dict[str, ShutdownReport] = {}
        errors: list[BaseException] = []

        def disconnect(side: str, arm: ARXArm) -> None:
            try:
                reports[side] = arm.disconnect()
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after both arms are done
                errors.append(exc)

        threads = [threading.Thread(target=disconnect, args=(side, arm), name=f"disconnect {side} arm")
                   for side, arm in zip(SIDES, (self.left, self.right))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return reports

    def __enter__(self) -> BimanualARX:
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.disconnect()

    def get_observation(self) -> dict:
        out = {}
        for side, arm in zip(SIDES, (self.left, self.right)):
            for key, value in arm.get_observation().items():
                out[f"{side}_{key}"] = value
        return out

    def send_action(self, action) -> np.ndarray:
        """14 values: left (6 joints, gripper width), right (same). Returns what was sent after clipping.
        Both arms are checked before either gets its target."""
        a = np.asarray(action, dtype=float).reshape(-1)
        if a.shape != (len(SIDES) * PER_ARM,):
            raise ValueError(f"a bimanual ARX action has 14 values, got shape {np.shape(action)}")
        for arm in (self.left, self.right):
            if arm.fault is not None:
                raise arm.fault
        return np.concatenate([self.left.send_action(a[:PER_ARM]), self.right.send_action(a[PER_ARM:])])

    def damping(self) -> None:
        """Both arms damp even if one of them fails to (a pulled cable): then the first error is raised."""
        errors = []
        for arm in (self.left, self.right):
            try:
                arm.damping()
            except Exception as exc:  # noqa: BLE001 - the other arm must still be damped
                errors.append(exc)
        if errors:
            raise errors[0]

    @property
    def interventions(self) -> dict[str, dict[str, int]]:
        return {"left": self.left.interventions, "right": self.right.interventions}


def _refuse_same_device(left: ARXArm, right: ARXArm) -> None:
    """One adapter under two names (a symlink, /dev/serial/by-id/... and /dev/ttyACM0) is one arm:
    compare the devices, not the strings."""
    a, b = left.config, right.config
    if a.interface != b.interface:
        return
    same = a.port == b.port
    if not same and a.interface == "slcan":
        same = _device_id(a.port) is not None and _device_id(a.port) == _device_id(b.port)
    if same:
        where = a.port if a.port == b.port else f"{a.port} and {b.port} are the same device ({os.path.realpath(a.port)})"
        raise DriverInvalidInput(f"left and right arms must be on different adapters: {where}")


def _device_id(port: str) -> tuple | None:
    """What identifies the device behind a path: the device number of a character device (two
    device nodes can name one device), else the file's inode; None for a pyserial URL or a path
    that does not exist (opening it fails later, with its own message)."""
    try:
        st = os.stat(port)  # follows symlinks
    except (OSError, ValueError):
        return None
    if stat.S_ISCHR(st.st_mode):
        return ("char", st.st_rdev)
    return ("file", st.st_dev, st.st_ino)
