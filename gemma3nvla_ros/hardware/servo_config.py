"""The STS3215 configuration the follower bridge writes at connect, as LeRobot 0.6.1 does it.

LeRobot 0.6.1 ``SOFollower.configure()``, under ``bus.torque_disabled()`` (Torque_Enable 0 + Lock 0 on
every motor, then Torque_Enable 1 + Lock 1 afterwards):

* ``FeetechMotorsBus.configure_motors()``: Return_Delay_Time 0 (factory 250 = 500 us before each
  reply), Maximum_Acceleration 254, Acceleration 254, and bit 4 of Phase cleared where it is set
  (single-turn angle feedback: with it set, Present_Position can leave 0..4095 — LeRobot PR #3373);
* Operating_Mode 0 (position), P_Coefficient ``position_p_coefficient`` (16), I_Coefficient (0),
  D_Coefficient (32) — the PID gains became ``SOFollowerConfig`` fields in 0.6;
* gripper only: Max_Torque_Limit 500, Protection_Current 250, Overload_Torque 25 (burn-out protection
  when it squeezes an object for long).

:class:`ServoSettings` holds the values a user may want otherwise (their names are the bridge's ROS
parameters), :func:`motor_settings` turns them into register writes for one motor, and
:class:`Setting.wanted` says what a register must hold given what it holds now (Phase keeps its other
bits). Pure: no I/O.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from gemma3nvla_ros.hardware.sts3215 import PHASE_MULTI_TURN_FEEDBACK

POSITION_MODE = 0

# Parameter name -> (register, lowest, highest, description). Ranges are the register's meaningful
# values; P starts at 1 because a servo with P 0 does not hold its goal (the arm sags under gravity).
SETTINGS: dict[str, tuple[str, int, int, str]] = {
    "position_p_coefficient": ("P_Coefficient", 1, 255,
                               "position P gain of every servo (LeRobot 16; factory 32: stiffer, can shake)"),
    "position_i_coefficient": ("I_Coefficient", 0, 255, "position I gain of every servo (LeRobot 0)"),
    "position_d_coefficient": ("D_Coefficient", 0, 255, "position D gain of every servo (LeRobot 32)"),
    "return_delay_time": ("Return_Delay_Time", 0, 254,
                          "servo reply delay in 2 us units (LeRobot 0; factory 250 = 0.5 ms per reply)"),
    "acceleration": ("Acceleration", 0, 254,
                     "goal acceleration of every servo (LeRobot 254; lower = smoother, slower starts)"),
    "maximum_acceleration": ("Maximum_Acceleration", 0, 254, "acceleration cap of every servo (LeRobot 254)"),
    "gripper_max_torque_limit": ("Max_Torque_Limit", 1, 1000,
                                 "gripper torque limit in 0.1 % of stall torque (LeRobot 500 = 50 %)"),
    "gripper_protection_current": ("Protection_Current", 1, 500,
                                   "gripper current protection in 6.5 mA units (LeRobot 250)"),
    "gripper_overload_torque": ("Overload_Torque", 1, 100,
                                "gripper torque in % once its overload protection triggers (LeRobot 25)"),
}
GAINS = ("position_p_coefficient", "position_i_coefficient", "position_d_coefficient")
GRIPPER_ONLY = ("gripper_max_torque_limit", "gripper_protection_current", "gripper_overload_torque")


@dataclass(frozen=True)
class ServoSettings:
    """LeRobot 0.6.1's values by default."""

    position_p_coefficient: int = 16
    position_i_coefficient: int = 0
    position_d_coefficient: int = 32
    return_delay_time: int = 0
    acceleration: int = 254
    maximum_acceleration: int = 254
    gripper_max_torque_limit: int = 500
    gripper_protection_current: int = 250
    gripper_overload_torque: int = 25

    def __post_init__(self) -> None:
        for f in fields(self):
            check_setting(f.name, getattr(self, f.name))

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> "ServoSettings":
        """From parameter values (unknown keys ignored); ValueError/TypeError names the bad one."""
        return cls(**{f.name: check_setting(f.name, values[f.name]) for f in fields(cls) if f.name in values})

    def gains(self) -> dict[str, int]:
        """Register -> value of the PID gains."""
        return {SETTINGS[n][0]: getattr(self, n) for n in GAINS}


def check_setting(name: str, value: object) -> int:
    """``value`` as the register value for setting ``name``, or TypeError/ValueError with the reason."""
    register, lo, hi, _ = SETTINGS[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"must be an integer ({register} register value), not {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{value} is outside {lo}..{hi} ({register})")
    return value


@dataclass(frozen=True)
class Setting:
    register: str
    value: int
    keep_mask: int = 0  # bits of the present value left as they are

    def wanted(self, current: int) -> int:
        return (current & self.keep_mask) | (self.value & ~self.keep_mask)


# Only bit 4 changes; the other Phase bits (direction and drive settings) stay as the servo has them.
PHASE_SETTING = Setting("Phase", 0, keep_mask=0xFF & ~PHASE_MULTI_TURN_FEEDBACK)


def motor_settings(settings: ServoSettings, gripper: bool) -> list[Setting]:
    """The register writes for one motor, in LeRobot's order."""
    out = [
        Setting("Return_Delay_Time", settings.return_delay_time),
        Setting("Maximum_Acceleration", settings.maximum_acceleration),
        Setting("Acceleration", settings.acceleration),
        PHASE_SETTING,
        Setting("Operating_Mode", POSITION_MODE),
        Setting("P_Coefficient", settings.position_p_coefficient),
        Setting("I_Coefficient", settings.position_i_coefficient),
        Setting("D_Coefficient", settings.position_d_coefficient),
    ]
    if gripper:
        out += [
            Setting("Max_Torque_Limit", settings.gripper_max_torque_limit),
            Setting("Protection_Current", settings.gripper_protection_current),
            Setting("Overload_Torque", settings.gripper_overload_torque),
        ]
    return out


def differences(settings: list[Setting], current: Mapping[str, int]) -> list[tuple[str, int]]:
    """(register, value to write) where ``current`` (register -> value read) is not what it must be."""
    return [(s.register, s.wanted(current[s.register])) for s in settings
            if s.wanted(current[s.register]) != current[s.register]]
