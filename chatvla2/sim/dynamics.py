"""Joint dynamics of one simulated motor: MIT-mode PD tracking with the motor's torque limit,
inertia, friction and a first-order thermal model (temperature rises with torque squared).

Units: N*m, rad, rad/s, degrees C. The numbers are plausible for 4310/4340-class motors, not
measured: they make the simulated arm behave like an arm, not like a specific one.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_SUBSTEP_S = 0.0005
MAX_GAP_S = 0.2  # a longer silence is integrated as 0.2 s: the state has settled by then


@dataclass
class MotorDynamics:
    inertia: float = 0.02  # kg*m^2 seen at the joint
    viscous_friction: float = 0.05  # N*m per rad/s
    coulomb_friction: float = 0.05  # N*m
    torque_limit: float = 10.0  # N*m
    ambient_c: float = 30.0
    heating_c_per_nm2_s: float = 0.02  # dT/dt = heating * torque^2 - (T - ambient) / tau
    cooling_tau_s: float = 120.0
    position: float = 0.0
    velocity: float = 0.0
    applied_torque: float = 0.0
    temperature_c: float = 30.0

    def step(self, dt: float, kp: float, kd: float, p_des: float, v_des: float, t_ff: float, enabled: bool) -> None:
        """Advance by `dt` seconds under a constant MIT command (zero torque when disabled)."""
        dt = min(max(dt, 0.0), MAX_GAP_S)
        while dt > 1e-9:
            h = min(dt, MAX_SUBSTEP_S)
            dt -= h
            if enabled:
                tau = kp * (p_des - self.position) + kd * (v_des - self.velocity) + t_ff
                tau = min(max(tau, -self.torque_limit), self.torque_limit)
            else:
                tau = 0.0
            friction = self.viscous_friction * self.velocity
            net = tau - friction
            if self.velocity == 0.0 and abs(net) <= self.coulomb_friction:
                net = 0.0  # static friction holds
            else:
                net -= self.coulomb_friction * (1.0 if self.velocity > 0 else -1.0 if self.velocity < 0 else (1.0 if net > 0 else -1.0))
            new_velocity = self.velocity + net / self.inertia * h
            if self.velocity != 0.0 and (new_velocity > 0) != (self.velocity > 0) and not enabled:
                new_velocity = 0.0  # friction stops a free joint instead of reversing it
            self.velocity = new_velocity
            self.position += self.velocity * h  # semi-implicit Euler: stable for these gains
            self.applied_torque = tau
            self.temperature_c += (
                self.heating_c_per_nm2_s * tau * tau - (self.temperature_c - self.ambient_c) / self.cooling_tau_s
            ) * h
