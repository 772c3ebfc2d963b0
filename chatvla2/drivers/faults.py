"""Typed arm faults: what a motor reported, or what the host-side watchdog saw.

Every fault is an OSError subclass (a device condition, printed as one line by the CLI) and
carries the motor id and the joint name, and once raised by an arm, the arm's name (`fault.arm`,
"left" / "right") as the message's prefix: "joint4 (motor 5) silent" names which joint4.
A fault latches the arm into damping until disconnect.
"""

from __future__ import annotations

from chatvla2.drivers.damiao import DamiaoState
from chatvla2.drivers.errors import DriverDeviceError


class ArmFault(DriverDeviceError):
    """Base of every arm fault."""

    def __init__(self, message: str, motor_id: int | None = None) -> None:
        super().__init__(message)
        self.motor_id = motor_id
        self.arm = ""

    def __str__(self) -> str:
        return str(self.args[0])


def arm_prefix(name: str) -> str:
    """"left arm: " for a named arm, "" for an unnamed one (a single arm needs no name)."""
    return f"{name} arm: " if name else ""


def named(error: BaseException, arm: str) -> BaseException:
    """`error` with the arm's name in front of its message (once); returns the same object."""
    prefix = arm_prefix(arm)
    message = error.args[0] if error.args else None
    if prefix and isinstance(message, str) and not message.startswith(f"{arm} arm"):  # "left arm: " / "left arm on"
        error.args = (prefix + message,) + error.args[1:]
    if isinstance(error, ArmFault) and arm:
        error.arm = arm
    return error


class OverVoltage(ArmFault):
    pass


class UnderVoltage(ArmFault):
    pass


class OverCurrent(ArmFault):
    pass


class OverTemperature(ArmFault):
    pass


class Overload(ArmFault):
    pass


class CommunicationLost(ArmFault):
    """The motor reported losing commands, or the host heard nothing from it in time."""


class LinkLost(ArmFault):
    """The serial link itself is gone (cable pulled, adapter reset)."""


class AdapterStalled(ArmFault):
    """The adapter stopped taking frames (a write missed its deadline): the link may recover, the
    arm stays damped until disconnect."""


class PositionOutOfRange(ArmFault):
    pass


class AbsurdReading(ArmFault):
    """A reading no healthy motor produces (torque far beyond the limit)."""


class MotorError(ArmFault):
    """A motor reported an error code this driver has no name for."""


class StartupRefused(ArmFault):
    """`connect()` refused to start: missing feedback, all-zero positions or a motor error."""


_DAMIAO_FAULTS = {
    DamiaoState.OVER_VOLTAGE: (OverVoltage, "over-voltage"),
    DamiaoState.UNDER_VOLTAGE: (UnderVoltage, "under-voltage"),
    DamiaoState.OVER_CURRENT: (OverCurrent, "over-current"),
    DamiaoState.MOSFET_OVER_TEMPERATURE: (OverTemperature, "MOSFET over-temperature"),
    DamiaoState.COIL_OVER_TEMPERATURE: (OverTemperature, "coil over-temperature"),
    DamiaoState.COMMUNICATION_LOST: (CommunicationLost, "communication lost (motor side)"),
    DamiaoState.OVERLOAD: (Overload, "overload"),
}


def fault_from_damiao_state(motor_id: int, joint: str, state: int) -> ArmFault | None:
    """The typed fault for a Damiao error nibble, None for 0 (disabled) and 1 (enabled)."""
    if state in (DamiaoState.DISABLED, DamiaoState.ENABLED):
        return None
    kind, what = _DAMIAO_FAULTS.get(state, (MotorError, f"unknown error code {state:#x}"))
    return kind(f"{joint} (motor {motor_id}) reports {what} (Damiao code {state:#x})", motor_id)


def fault_from_ec_error(motor_id: int, joint: str, error: int) -> ArmFault | None:
    """EC-A4310 error bits: docs/reference/arx.md gives no meaning per bit, so any non-zero value is a MotorError."""
    if error == 0:
        return None
    return MotorError(f"{joint} (motor {motor_id}) reports EC error bits {error:#07b}", motor_id)
