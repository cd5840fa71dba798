"""Diagnostics content for the bridge and the cameras, as plain data (the nodes turn it into
diagnostic_msgs/DiagnosticArray). Levels follow diagnostic_msgs/DiagnosticStatus: OK 0, WARN 1, ERROR 2,
STALE 3."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gemma3nvla_ros.hardware.feetech_bus import BusCounters, MotorHealth
from gemma3nvla_ros.hardware.scs_protocol import describe_error_bits

OK, WARN, ERROR, STALE = 0, 1, 2, 3

TEMPERATURE_WARN_C = 60  # STS3215 Max_Temperature_Limit defaults to 70 °C, where it unloads
TEMPERATURE_ERROR_C = 70
VOLTAGE_WARN_LOW_V = 6.0  # SO-101 runs the 7.4 V (or 12 V) STS3215 variants

# A camera whose read blocks without an error (a wedged USB device, a stream that stops sending) raises
# nothing and reconnects nothing: the only symptom is that frames stop. Seconds without a frame, relative
# to the frame period with a floor:
# - WARN past max(3 periods, 0.2 s): three missed frames in a row is more than a USB camera's occasional
#   drop; the floor keeps scheduling hiccups of a busy machine at 30 fps (GC, a shared 2-core box) quiet.
# - ERROR past max(10 periods, 1.0 s): the policy is then acting on a view at least a second old while
#   the arm moves (a 50-step chunk at 30 Hz lasts under 2 s): no longer a glitch. Relative to the period
#   so that a camera run slowly on purpose (2 fps) is not an error between two of its frames.
STALE_WARN_PERIODS, STALE_WARN_MIN_S = 3.0, 0.2
STALE_ERROR_PERIODS, STALE_ERROR_MIN_S = 10.0, 1.0


@dataclass
class Status:
    name: str
    level: int
    message: str
    hardware_id: str = ""
    values: dict[str, str] = field(default_factory=dict)


def motor_status(health: MotorHealth, hardware_id: str, prefix: str, expect_torque: bool = False) -> Status:
    """``expect_torque``: the bridge believes this motor holds a goal (connected, torque enabled)."""
    level, problems = OK, []
    if expect_torque and health.torque_enabled is False:
        level = ERROR
        problems.append(
            "torque off (overload/overheat trip or power loss): the joint is limp; after a power loss the "
            "bridge re-enables it where it stands once it answers inside its calibrated range; after an "
            "alarm trip once the alarm clears and an operator calls ~/enable (overload_recovery manual)"
        )
    if health.consecutive_failures:
        level = ERROR
        problems.append(f"not answering ({health.consecutive_failures} failed transactions in a row)")
    alarm = (health.status or 0) | health.error_bits
    if alarm:
        level = ERROR
        problems.append(f"alarm: {describe_error_bits(alarm) or hex(alarm)}")
    if health.temperature_c is not None:
        if health.temperature_c >= TEMPERATURE_ERROR_C:
            level = ERROR
            problems.append(f"temperature {health.temperature_c} C")
        elif health.temperature_c >= TEMPERATURE_WARN_C:
            level = max(level, WARN)
            problems.append(f"temperature {health.temperature_c} C")
    if health.voltage_v is not None and health.voltage_v < VOLTAGE_WARN_LOW_V:
        level = max(level, WARN)
        problems.append(f"low voltage {health.voltage_v:.1f} V")

    def fmt(v: object, spec: str = "") -> str:
        return "unknown" if v is None else format(v, spec)

    return Status(
        name=f"{prefix}: motor {health.name} (id {health.motor_id})",
        level=level,
        message="; ".join(problems) if problems else "OK",
        hardware_id=hardware_id,
        values={
            "id": str(health.motor_id),
            "voltage_V": fmt(health.voltage_v, ".1f"),
            "temperature_C": fmt(health.temperature_c),
            "status": fmt(health.status),
            "status_bits": describe_error_bits(alarm) or "none",
            "current_A": fmt(health.current_a, ".3f"),
            "torque": "unknown" if health.torque_enabled is None else ("on" if health.torque_enabled else "off"),
            "no_reply": str(health.no_reply),
            "bad_checksum": str(health.bad_checksum),
            "consecutive_failures": str(health.consecutive_failures),
            "recoveries": str(health.recoveries),
        },
    )


def bus_status(
    counters: BusCounters,
    *,
    prefix: str,
    hardware_id: str,
    connected: bool,
    fault: str,
    extra: Mapping[str, object],
) -> Status:
    if not connected:
        level, message = ERROR, fault or "servo bus disconnected"
    elif fault:
        level, message = WARN, fault
    else:
        level, message = OK, "OK"
    values = {
        "transactions": counters.transactions,
        "retries": counters.retries,
        "recovered_by_retry": counters.recovered,
        "no_reply": counters.no_reply,
        "bad_checksum": counters.bad_checksum,
        "port_errors": counters.port_errors,
        "failed_after_retries": counters.failed,
    }
    values.update(extra)
    return Status(f"{prefix}: servo bus", level, message, hardware_id, {k: str(v) for k, v in values.items()})


def to_diagnostic_array(statuses: list[Status], stamp: Any, msgs: Any) -> Any:
    """A ``diagnostic_msgs/DiagnosticArray``; ``msgs`` is the ``diagnostic_msgs.msg`` module, passed in
    so this module imports no ROS and is tested without it."""
    out = msgs.DiagnosticArray()
    out.header.stamp = stamp
    for s in statuses:
        status = msgs.DiagnosticStatus()
        status.level = bytes([s.level])  # a `byte` field: bytes of length 1, as in rclpy
        status.name, status.message, status.hardware_id = s.name, s.message, s.hardware_id
        status.values = [msgs.KeyValue(key=k, value=v) for k, v in s.values.items()]
        out.status.append(status)
    return out


def stale_thresholds(fps: float) -> tuple[float, float]:
    """Seconds without a frame after which a camera configured for ``fps`` is WARN, and ERROR."""
    period = 1.0 / fps
    return max(STALE_WARN_PERIODS * period, STALE_WARN_MIN_S), max(STALE_ERROR_PERIODS * period, STALE_ERROR_MIN_S)


def staleness_level(seconds_since_last_frame: float, fps: float) -> int:
    warn_s, error_s = stale_thresholds(fps)
    if seconds_since_last_frame > error_s:
        return ERROR
    return WARN if seconds_since_last_frame > warn_s else OK


def stale_message(seconds_since_last_frame: float, fps: float) -> str:
    return f"no frame for {seconds_since_last_frame:.1f} s (configured {fps:g} fps): the source stalled"


def camera_status(
    *,
    node: str,
    camera: str,
    source: str,
    connected: bool,
    ended: bool,
    last_error: str,
    configured_fps: float,
    measured_fps: float,
    seconds_since_last_frame: float,
    frames: int,
    values: Mapping[str, object],
) -> Status:
    stale = staleness_level(seconds_since_last_frame, configured_fps)
    if ended:
        level, message = OK, "end of file (loop is false)"
    elif not connected:
        level, message = ERROR, f"camera lost, reconnecting: {last_error}"
    elif stale != OK:
        level, message = stale, stale_message(seconds_since_last_frame, configured_fps)
    elif frames > 10 and measured_fps < 0.5 * configured_fps:
        level, message = WARN, f"publishing {measured_fps:.1f} fps, configured {configured_fps:g}"
    else:
        level, message = OK, "OK"
    all_values = {"source": source, "configured_fps": f"{configured_fps:g}", "measured_fps": f"{measured_fps:.1f}",
                  "seconds_since_last_frame": f"{seconds_since_last_frame:.2f}", "frames": frames, **values}
    return Status(f"{node}: camera {camera}", level, message, source, {k: str(v) for k, v in all_values.items()})
