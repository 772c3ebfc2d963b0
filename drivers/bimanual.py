"""`BimanualARX`: two ARX arms on two links presented as one 14-D robot (left 7, then right 7)."""

from __future__ import annotations

import numpy as np

from drivers.arm import ARXArm


class BimanualARX:
    def __init__(self, left: ARXArm, right: ARXArm) -> None:
        if left.config.port == right.config.port:
            raise ValueError(f"left and right arms must be on different ports, both are on {left.config.port}")
        self.left, self.right = left, right

    def connect(self) -> "BimanualARX":
        self.left.connect()
        try:
            self.right.connect()
        except BaseException:
            self.left.disconnect()
            raise
        return self

    def disconnect(self) -> None:
        """Both arms damp at the same time, then both disable."""
        arms = [a for a in (self.left, self.right) if a.controller is not None]
        for arm in arms:
            if arm.controller.running:
                arm.controller.damp()
        try:
            self.left.disconnect()
        finally:
            self.right.disconnect()

    def __enter__(self) -> "BimanualARX":
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.disconnect()

    def get_observation(self) -> dict:
        out = {}
        for side, arm in (("left", self.left), ("right", self.right)):
            for key, value in arm.get_observation().items():
                out[f"{side}_{key}"] = value
        return out

    def send_action(self, action) -> np.ndarray:
        """14 values: left (6 joints, gripper width), right (same). Returns what was sent after clipping.
        Both arms are checked before either gets its target."""
        a = np.asarray(action, dtype=float).reshape(-1)
        if a.shape != (14,):
            raise ValueError(f"a bimanual ARX action has 14 values, got shape {np.shape(action)}")
        for arm in (self.left, self.right):
            if arm.fault is not None:
                raise arm.fault
        return np.concatenate([self.left.send_action(a[:7]), self.right.send_action(a[7:])])

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
