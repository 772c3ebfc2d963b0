"""Robots the control loop drives, behind `get_state / send_action / damping / disconnect`.

- `BimanualRobot`: the drivers' `BimanualARX` (two ARX arms, two SLCAN adapters) as a 14-D
  robot: state = left (6 joint positions, gripper width), then right.
- `open_robot("sim")`: two simulated arms (`chatvla2 sim-arm`, each its own process behind its
  own pty, like two USB adapters; in-process simulators share the GIL with inference and the two
  500 Hz controllers and fall silent on a 2-core machine) driven through the real serial path
  (`ARXArm` -> SLCAN -> pty), with a 200 ms feedback timeout (a 2-core machine running inference, two simulators and two
  500 Hz controllers misses 100 ms now and then);
  `open_robot("arx", left_port, right_port)` with the drivers' defaults.
- `StaticCamera`: no camera driver exists yet; a fixed synthetic frame per view stands in.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import numpy as np


class BimanualRobot:
    def __init__(self, robot, sims=()):
        self.robot = robot
        self.sims = list(sims)  # simulator processes, stopped after the arms disconnect

    def get_state(self) -> np.ndarray:
        obs = self.robot.get_observation()
        return np.concatenate([
            obs["left_joint_positions"], [obs["left_gripper_width"]],
            obs["right_joint_positions"], [obs["right_gripper_width"]],
        ]).astype(np.float32)

    def send_action(self, action) -> np.ndarray:
        return self.robot.send_action(action)

    def damping(self) -> None:
        self.robot.damping()

    def disconnect(self) -> None:
        """Damping (the driver's disconnect_damping_s), then disable, then close; then the sims."""
        try:
            self.robot.disconnect()
        finally:
            _stop_sims(self.sims)

    @property
    def interventions(self) -> dict:
        return self.robot.interventions


def open_robot(kind: str, left_port: str | None = None, right_port: str | None = None, profile: str = "x5",
               disconnect_damping_s: float = 2.0, sim_faults: dict[str, str] | None = None) -> BimanualRobot:
    """sim_faults: {"left"|"right": fault spec} for the simulated arms (`chatvla2 sim-arm --faults`)."""
    from drivers.arm import ArmConfig, ARXArm
    from drivers.bimanual import BimanualARX
    from drivers.controller import ControllerConfig

    check_robot_arguments(kind, left_port, right_port, sim_faults)
    sims = []
    controller = ControllerConfig()
    if kind == "sim":
        faults = sim_faults or {}
        try:
            for seed, side in enumerate(("left", "right")):
                sims.append(_start_sim(profile, seed, faults.get(side, "")))
        except BaseException:
            _stop_sims(sims)
            raise
        left_port, right_port = sims[0].device_path, sims[1].device_path
        controller = ControllerConfig(feedback_timeout_s=0.2)
    try:
        arms = [ARXArm(ArmConfig(port, profile=profile, controller=controller, disconnect_damping_s=disconnect_damping_s))
                for port in (left_port, right_port)]
        robot = BimanualARX(*arms).connect()
    except BaseException:
        _stop_sims(sims)
        raise
    return BimanualRobot(robot, sims)


def check_robot_arguments(kind: str, left_port: str | None, right_port: str | None, sim_faults: dict[str, str] | None) -> None:
    """The robot's arguments, checked before anything starts (`chatvla2 run` calls it first)."""
    if kind not in ("sim", "arx"):
        raise ValueError(f"unknown robot {kind!r}: sim or arx")
    if kind != "sim" and sim_faults:
        raise ValueError("simulated faults are for the simulated robot (--robot sim)")
    if kind == "arx" and (not left_port or not right_port):
        raise ValueError("--robot arx needs two adapters: --port LEFT --port RIGHT (or --left-port/--right-port)")


class _SimProcess:
    def __init__(self, process, device_path: str):
        self.process, self.device_path = process, device_path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _start_sim(profile: str, seed: int, faults: str = "") -> _SimProcess:
    command = [sys.executable, "-m", "chatvla2", "sim-arm", "--profile", profile, "--seed", str(seed)]
    process = subprocess.Popen(
        command + (["--faults", faults] if faults else []),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        # its own process group: the operator's Ctrl-C goes to `run`, which stops the sims itself
        # after damping and disabling the arms
        start_new_session=True,
    )
    path = process.stdout.readline().strip()
    if not path:
        process.kill()
        raise OSError("the simulated arm did not start (chatvla2 sim-arm printed no pty path)")
    return _SimProcess(process, path)


def _stop_sims(sims) -> None:
    for sim in sims:
        sim.stop()


class StaticCamera:
    """`num_views` fixed RGB frames (240 x 320): a table, a whiteboard and three cards."""

    def __init__(self, num_views: int, height: int = 240, width: int = 320):
        base = np.empty((height, width, 3), dtype=np.uint8)
        base[:] = (150, 110, 80)
        base[height // 24 : height * 3 // 8, width * 3 // 16 : width * 13 // 16] = (245, 245, 240)
        for i in range(3):
            left = width // 8 + i * width * 5 // 16
            base[height * 7 // 12 : height * 7 // 8, left : left + width // 6] = (250, 250, 250)
        self.frames = [np.clip(base.astype(np.int16) - 12 * v, 0, 255).astype(np.uint8) for v in range(num_views)]

    def read(self) -> list[np.ndarray]:
        return self.frames
