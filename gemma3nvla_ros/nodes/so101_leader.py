"""so101_leader: reads an SO-101 *leader* arm (moved by hand) and publishes ``joint_commands`` for the
follower's so101_bridge — teleoperation the way ``lerobot-teleoperate`` does it, on the ROS graph.

Publishes ``joint_commands`` (sensor_msgs/JointState, the six joints, follower radians, stamped at read on
the node clock) at ``publish_rate``, ``~/task`` (std_msgs/String, latched: the ``task`` parameter, so a
recording carries its instruction) and ``/diagnostics``. Bus I/O: ``hardware.feetech_bus`` (the
follower's code); calibration: LeRobot's ``so_leader`` location (``hardware.leader_arm``); leader ->
follower mapping: ``control.teleop.LeaderMapping`` (unit conversion in ``control.units`` only).

Never torques the leader: torque is switched off at start and after every reconnect, and again if a
motor is ever found torqued (someone ran follower code on it); no goal is ever written. Never reads stdin.

``mode: sim``: the leader runs its own simulated bus (``SimBusProcess``) and, with ``sim_motion: wave``
(default), moves it by itself — a slow scripted swing of every joint (``control.teleop.ScriptedMotion``),
fed to the simulator as an external hand would move a limp servo — so a teleop graph in sim visibly
drives the follower and a recording has motion in it. ``sim_motion: none`` leaves it at rest.

A lost port is reconnected with backoff; a failed read publishes nothing (the bridge's watchdog then holds
the follower after its command_timeout); both are reported on /diagnostics.
"""
from __future__ import annotations

import shlex
import sys
import threading
import time
from pathlib import Path

import diagnostic_msgs.msg
import sensor_msgs.msg
import std_msgs.msg
from rcl_interfaces.msg import FloatingPointRange, IntegerRange
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile

from gemma3nvla_ros.control import units
from gemma3nvla_ros.control.teleop import LeaderMapping, ScriptedMotion
from gemma3nvla_ros.hardware import diagnostics as diag
from gemma3nvla_ros.hardware.calibration import (
    EXAMPLE_CALIBRATION,
    SO101_MOTORS,
    CalibrationError,
    compare_with_servos,
    load_calibration,
    parse_calibration,
    resolve_calibration_path,
)
from gemma3nvla_ros.hardware.feetech_bus import BusError, BusPortError, FeetechBus
from gemma3nvla_ros.hardware.retry import ReconnectBackoff
from gemma3nvla_ros.hardware.leader_arm import (
    configure_leader,
    leader_mismatch_message,
    load_leader_calibration,
    resolve_leader_calibration_path,
)
from gemma3nvla_ros.nodes.params import CheckedParameters
from gemma3nvla_ros.nodes.run import run_node

SIM_MOTIONS = ("wave", "none")


class StartupError(RuntimeError):
    """Bring-up refused; the message tells the user what to do. The process exits 2."""


class So101Leader(CheckedParameters, Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("so101_leader", **kwargs)
        # Fixed at start-up (read_only).
        self.port = self._declare("port", "/dev/ttyACM1", "serial port of the leader arm (ignored in sim mode)")
        self.mode = self._declare("mode", "real", "real: the leader on `port`; sim: a simulated leader of its own")
        self.robot_id = self._declare(
            "robot_id", "", "LeRobot calibration id of the leader (teleoperators/so_leader/<id>.json)")
        self.calibration_file = self._declare("calibration_file", "", "explicit leader calibration JSON (overrides robot_id)")
        self.follower_robot_id = self._declare(
            "follower_robot_id", "", "the follower's calibration id (robots/so_follower/<id>.json): with it (or "
            "follower_calibration_file) joints map as LeRobot does, range to range for the gripper")
        self.follower_calibration_file = self._declare(
            "follower_calibration_file", "", "explicit follower calibration JSON (overrides follower_robot_id)")
        self.units_mode = self._declare(
            "units", "degrees", "LeRobot units the mapping goes through with a follower calibration: degrees "
            "(use_degrees=True) or range_m100_100")
        self.write_calibration = self._declare(
            "write_calibration_to_motors", False, "write the JSON's homing offset and limits into the leader's servos")
        self.joint_names = list(self._declare("joint_names", list(SO101_MOTORS), "joint names, bus order"))
        self.motor_ids = [int(i) for i in self._declare("motor_ids", list(SO101_MOTORS.values()), "servo ids")]
        self.diagnostics_rate = float(self._declare(
            "diagnostics_rate", 1.0, "/diagnostics rate (Hz)",
            floating_point_range=[FloatingPointRange(from_value=0.1, to_value=50.0)]))
        self.bus_timeout_ms = float(self._declare("bus_timeout_ms", 50.0, "reply timeout per transaction (ms)"))
        self.bus_retries = int(self._declare("bus_retries", 2, "retries of a failed transaction",
                                             integer_range=[IntegerRange(from_value=0, to_value=10)]))
        self.sim_args = self._declare("sim_args", "", "simulator options, e.g. fault injection (sim mode)")
        # Changeable at run time (validated and applied in _on_set_parameters).
        self.publish_rate = float(self._declare(
            "publish_rate", 30.0, "joint_commands per second (the contract's fps is the dataset's rate)",
            read_only=False, floating_point_range=[FloatingPointRange(from_value=1.0, to_value=500.0)]))
        self.enabled = bool(self._declare(
            "enabled", True, "false: publish no joint_commands (the follower holds after its command_timeout); "
            "a pause longer than bag-to-dataset's --episode-gap starts a new episode", read_only=False))
        self.task = self._declare(
            "task", "", "the instruction being demonstrated, published latched on ~/task for recordings",
            read_only=False)
        self.sim_motion = self._declare(
            "sim_motion", "wave", "sim mode: wave (the simulated leader moves by itself) or none", read_only=False)

        self.motors = dict(zip(self.joint_names, self.motor_ids))
        self.bus: FeetechBus | None = None
        self.sim = None
        self.mapping: LeaderMapping | None = None
        self.motion = ScriptedMotion()
        self.connected = False
        self.fault = ""
        self.published = 0
        self.torque_found_on = 0
        self.sim_errors = 0
        self.cal_path: Path | None = None
        self.follower_cal_path: Path | None = None
        self._timer = None
        self.reconnect = ReconnectBackoff()
        self._sim_t0 = time.monotonic()
        self.steady = Clock(clock_type=ClockType.STEADY_TIME)

        self.cmd_pub = self.create_publisher(sensor_msgs.msg.JointState, "joint_commands", QoSProfile(depth=10))
        self.task_pub = self.create_publisher(
            std_msgs.msg.String, "~/task", QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.diag_pub = self.create_publisher(diagnostic_msgs.msg.DiagnosticArray, "/diagnostics", QoSProfile(depth=10))
        self._watch_parameters()

    # -- parameters -----------------------------------------------------------------------------------
    def _check_parameter(self, name: str, value):
        if name == "sim_motion" and value not in SIM_MOTIONS:
            raise ValueError(f"must be one of {list(SIM_MOTIONS)}, not {value!r}")
        if name == "publish_rate":
            return float(value)
        return value  # rclpy refuses read_only parameters, wrong types and out-of-range values before this

    def _apply_parameter(self, name: str, value) -> None:
        if name == "publish_rate":
            self.publish_rate = value
            if self._timer is not None:  # started: the new rate takes effect at once
                self.destroy_timer(self._timer)
                self._timer = self.create_timer(1.0 / value, self._on_timer, clock=self.steady)
        elif name == "task":
            self.task = value
            self._publish_task()
        elif name == "enabled":
            self.enabled = bool(value)
        elif name == "sim_motion":
            self.sim_motion = value

    # -- bring-up -------------------------------------------------------------------------------------
    def start(self) -> None:
        """Calibration(s), bus, torque off, configuration. Raises StartupError or CalibrationError."""
        log = self.get_logger()
        if self.mode not in ("real", "sim"):
            raise StartupError(f"mode must be 'real' or 'sim', not {self.mode!r}")
        if len(self.joint_names) != len(self.motor_ids) or len(set(self.joint_names)) != len(self.joint_names):
            raise StartupError("joint_names and motor_ids must have the same length and unique names")
        try:
            self._check_parameter("sim_motion", self.sim_motion)
            mode = units.UnitMode.parse(self.units_mode)
        except ValueError as exc:
            raise StartupError(str(exc)) from exc
        self.cal_path, self.calibration = self._load_calibration()
        self.ranges = units.JointRanges.from_calibration(self.calibration, self.joint_names)
        follower = self._load_follower_calibration()
        self.mapping = LeaderMapping(
            self.ranges,
            None if follower is None else units.JointRanges.from_calibration(follower, self.joint_names),
            mode,
            gripper="gripper" if "gripper" in self.motors else None,
        )
        if follower is None:
            log.info("no follower calibration (follower_robot_id / follower_calibration_file): "
                     "publishing the leader's angles; the gripper maps by angle, not range to range")
        if self.mode == "sim":
            from gemma3nvla_ros.hardware.sim_bus import SimBusProcess

            self.sim = SimBusProcess(shlex.split(self.sim_args), calibration_file=str(self.cal_path) if self.cal_path else None)
            try:
                self.port = self.sim.wait_for_port()
            except RuntimeError as exc:
                raise StartupError(str(exc)) from exc
            threading.Thread(target=self._drain_sim_replies, name="sim-replies", daemon=True).start()
            log.info(f"simulated leader on {self.port} (sim_motion: {self.sim_motion})")
        self.bus = FeetechBus(self.port, self.motors, timeout_ms=self.bus_timeout_ms, retries=self.bus_retries)
        try:
            # The simulator is a process started just now: on a loaded machine its first replies can be late.
            self._connect(wait_s=5.0 if self.mode == "sim" else 0.0)
        except BusError as exc:
            raise StartupError(str(exc)) from exc
        self.connected = True
        self._publish_task()
        self._sim_t0 = time.monotonic()
        self._timer = self.create_timer(1.0 / self.publish_rate, self._on_timer, clock=self.steady)
        self.create_timer(1.0 / self.diagnostics_rate, self._on_diagnostics_timer, clock=self.steady)
        log.info(
            f"SO-101 leader on {self.port}: torque off (move it by hand); calibration "
            f"{self.cal_path or 'built-in example'}; publishing joint_commands at {self.publish_rate:g} Hz "
            f"({self.mapping.description})"
        )

    def _connect(self, wait_s: float = 0.0) -> None:
        """Open, check the calibration in servo memory, torque off, LeRobot's leader configuration."""
        assert self.bus is not None
        self.bus.connect(wait_s=wait_s)
        diffs = compare_with_servos(self.calibration, self.bus.read_calibration())
        if diffs:
            if not self.write_calibration:
                raise StartupError(leader_mismatch_message(
                    diffs, self.cal_path or "<built-in example>", self.port, self.robot_id))
            self.get_logger().warn(f"writing calibration {self.cal_path} to the leader's servos: {'; '.join(diffs)}")
            self.bus.write_calibration(self.calibration)  # torque off first (FeetechBus does it)
        changes = configure_leader(self.bus)
        if changes:
            self.get_logger().info(f"configured the leader's servos (LeRobot settings): {', '.join(changes)}")

    def _load_calibration(self):
        try:
            path = resolve_leader_calibration_path(self.robot_id, self.calibration_file, self.port)
        except CalibrationError:
            if self.mode != "sim":
                raise
            self.get_logger().info("sim mode without a leader calibration: using the built-in example calibration")
            return None, parse_calibration(EXAMPLE_CALIBRATION, self.motors)
        return path, load_leader_calibration(path, self.motors, self.port, self.robot_id)

    def _load_follower_calibration(self):
        if not (self.follower_robot_id or self.follower_calibration_file):
            return None
        path = resolve_calibration_path(self.follower_robot_id, self.follower_calibration_file)
        self.follower_cal_path = Path(path)
        return load_calibration(path, self.motors)

    # -- loop -------------------------------------------------------------------------------------------
    def _on_timer(self) -> None:
        now_ns = self.steady.now().nanoseconds
        if not self.connected:
            self._try_reconnect(now_ns)
            return
        assert self.bus is not None and self.mapping is not None
        if self.sim is not None and self.sim_motion == "wave":
            self._move_sim_leader()
        try:
            present = self.bus.read_positions()
        except BusPortError as exc:
            self._port_lost(exc, now_ns)
            return
        except BusError as exc:
            self.fault = str(exc)  # publish nothing stale: the follower holds after its command_timeout
            self.get_logger().warn(f"leader read failed: {exc}", throttle_duration_sec=1.0)
            return
        self.fault = ""
        if not self.enabled:
            return
        msg = sensor_msgs.msg.JointState()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.name = list(self.joint_names)
        msg.position = self.mapping.to_follower_radians(present).tolist()
        self.cmd_pub.publish(msg)
        self.published += 1

    def _move_sim_leader(self) -> None:
        """The scripted hand: `move ID TICKS` lines to the simulator (sticks because torque is off)."""
        ticks = self.motion.ticks(time.monotonic() - self._sim_t0, self.ranges)
        lines = "".join(f"move {self.motors[n]} {t:.1f}\n" for n, t in zip(self.joint_names, ticks))
        try:
            self.sim.proc.stdin.write(lines)
            self.sim.proc.stdin.flush()
        except (OSError, ValueError) as exc:  # the simulator is gone: the bus read reports it
            self.fault = f"simulated leader: {exc}"

    def _drain_sim_replies(self) -> None:
        """The simulator answers every command line on its stdout; read them so its pipe never fills."""
        try:
            for line in self.sim.proc.stdout:
                if line.startswith("error"):
                    self.sim_errors += 1
                    self.get_logger().warn(f"simulator: {line.strip()}", throttle_duration_sec=5.0)
        except (OSError, ValueError):
            pass

    def _port_lost(self, exc: Exception, now_ns: int) -> None:
        self.connected = False
        self.fault = str(exc)
        self.reconnect.lost(now_ns)
        self.get_logger().error(f"leader bus lost: {exc}; reconnecting (no joint_commands meanwhile)")

    def _try_reconnect(self, now_ns: int) -> None:
        if not self.reconnect.due(now_ns) or self.bus is None:
            return
        try:
            self._connect()
        except (BusError, StartupError) as exc:
            self.bus.close()
            self.fault = f"reconnect failed: {exc}"
            self.reconnect.failed(now_ns)
            self.get_logger().warn(self.fault, throttle_duration_sec=5.0)
            return
        self.connected = True
        self.fault = ""
        self.get_logger().info("leader bus reconnected (torque off)")

    def _publish_task(self) -> None:
        if self.task:
            self.task_pub.publish(std_msgs.msg.String(data=self.task))

    def _on_diagnostics_timer(self) -> None:
        assert self.bus is not None
        if self.connected:
            try:
                self.bus.read_diagnostics()
            except BusPortError as exc:
                self._port_lost(exc, self.steady.now().nanoseconds)
            except BusError:
                pass  # read_diagnostics isolates failing motors; the counters show it
            self._keep_torque_off()
        hw = f"so101_leader:{self.port}"
        statuses = [
            diag.bus_status(
                self.bus.counters,
                prefix=self.get_name(),
                hardware_id=hw,
                connected=self.connected,
                fault=self.fault,
                extra={
                    "port": self.port,
                    "mode": self.mode,
                    "enabled": self.enabled,
                    "publish_rate": f"{self.publish_rate:g}",
                    "commands_published": self.published,
                    "mapping": self.mapping.description if self.mapping else "",
                    "torque_found_on": self.torque_found_on,
                    "calibration": self.cal_path or "built-in example",
                    "follower_calibration": self.follower_cal_path or "none",
                },
            )
        ]
        statuses += [diag.motor_status(h, hw, self.get_name(), expect_torque=False) for h in self.bus.health.values()]
        self.diag_pub.publish(diag.to_diagnostic_array(statuses, self.get_clock().now().to_msg(), diagnostic_msgs.msg))

    def _keep_torque_off(self) -> None:
        """A leader must stay limp: a motor found torqued (follower code run on it) is switched off."""
        on = [n for n, h in self.bus.health.items() if h.torque_enabled]
        if not on:
            return
        self.torque_found_on += 1
        self.get_logger().warn(f"leader motors {on} had torque on: switching it off (the leader is moved by hand)")
        try:
            self.bus.disable_torque(on)
        except BusError as exc:
            self.fault = f"could not switch torque off on {on}: {exc}"

    # -- shutdown -------------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the port and stop the simulator (torque is already off). Never raises."""
        if self.bus is not None:
            self.bus.close()
        if self.sim is not None:
            self.sim.stop()


def main(args: list[str] | None = None) -> int:
    return run_node(So101Leader, (StartupError, CalibrationError), args)


if __name__ == "__main__":
    sys.exit(main())
