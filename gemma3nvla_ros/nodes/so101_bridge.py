"""so101_bridge: the only node that touches the SO-101 servo bus.

Publishes ``joint_states`` (sensor_msgs/JointState, radians, all six joints incl. the gripper, stamped
at read on the node clock) and ``/diagnostics``; subscribes ``joint_commands`` (sensor_msgs/JointState,
positions in radians for any subset of the joints). Unit conversion: ``control.units``; command
validation, clamping and the watchdog: ``hardware.commands`` / ``hardware.safety``; bus I/O:
``hardware.feetech_bus``. This file only wires them to ROS.

Recovery: a lost port is reopened and the whole arm re-enabled holding where it is (every controller
target forgotten). A single motor that stopped answering and answers again with torque off (a
brown-out: the servo comes back limp with its RAM reset), or that reads torque off without an alarm (a
cleared overload trip), is re-enabled alone: configuration re-applied, goal := present, torque on, and
only that joint's controller target reset to where it now is (``ArmGoalController.hold_joint`` says
why only that one). One that answers again with torque still on only missed replies: it kept holding
its goal, nothing is reset. A joint that came to rest far outside its calibrated range stays limp, as
at start-up.

Parameters (see README / docs): port, mode (real|sim), robot_id, calibration_file,
write_calibration_to_motors, joint_names, motor_ids, publish_rate, max_relative_target,
command_timeout, on_shutdown (disable_torque|hold), diagnostics_rate, bus_timeout_ms, bus_retries,
sim_args.
"""
from __future__ import annotations

import shlex
import sys
import threading
from pathlib import Path

import diagnostic_msgs.msg
import sensor_msgs.msg
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import QoSProfile

from gemma3nvla_ros.control import units
from gemma3nvla_ros.hardware import diagnostics as diag
from gemma3nvla_ros.hardware.calibration import (
    EXAMPLE_CALIBRATION,
    SO101_MOTORS,
    CalibrationError,
    calibrate_command,
    compare_with_servos,
    load_calibration,
    mismatch_message,
    parse_calibration,
    resolve_calibration_path,
)
from gemma3nvla_ros.hardware.commands import CommandRejected, check_command_age, validate_joint_command
from gemma3nvla_ros.hardware.feetech_bus import BusError, BusPortError, FeetechBus
from gemma3nvla_ros.hardware.safety import (
    ArmGoalController,
    joints_outside_range,
    motors_to_recover,
    parse_max_relative_target,
)
from gemma3nvla_ros.nodes.run import run_node

MAX_RECONNECT_BACKOFF_S = 5.0
# How far (ticks, ~4 deg) a joint may rest beyond its calibrated range when torque comes on: the
# firmware then pulls it to the limit at full speed, so more than this refuses to enable torque.
OUTSIDE_RANGE_TOLERANCE_TICKS = 45


class StartupError(RuntimeError):
    """Bring-up refused; the message tells the user what to do. The process exits non-zero."""


class So101Bridge(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("so101_bridge", **kwargs)
        self.port = self.declare_parameter("port", "/dev/ttyACM0").value
        self.mode = self.declare_parameter("mode", "real").value
        self.robot_id = self.declare_parameter("robot_id", "").value
        self.calibration_file = self.declare_parameter("calibration_file", "").value
        self.write_calibration = self.declare_parameter("write_calibration_to_motors", False).value
        self.joint_names = list(self.declare_parameter("joint_names", list(SO101_MOTORS)).value)
        self.motor_ids = [int(i) for i in self.declare_parameter("motor_ids", list(SO101_MOTORS.values())).value]
        self.publish_rate = float(self.declare_parameter("publish_rate", 100.0).value)
        # Float (all joints) or one value per joint, radians; 0 disables (LeRobot's None).
        max_rel = self.declare_parameter(
            "max_relative_target", 0.2, ParameterDescriptor(dynamic_typing=True)
        ).value
        self.command_timeout = float(self.declare_parameter("command_timeout", 0.5).value)
        self.on_shutdown = self.declare_parameter("on_shutdown", "disable_torque").value
        self.diagnostics_rate = float(self.declare_parameter("diagnostics_rate", 1.0).value)
        self.bus_timeout_ms = float(self.declare_parameter("bus_timeout_ms", 50.0).value)
        self.bus_retries = int(self.declare_parameter("bus_retries", 2).value)
        self.sim_args = self.declare_parameter("sim_args", "").value

        self._max_rel_param = max_rel

        self.motors = dict(zip(self.joint_names, self.motor_ids))
        self.gripper = "gripper" if "gripper" in self.motors else None
        self.bus: FeetechBus | None = None
        self.sim = None
        self.connected = False
        self.fault = ""
        self.commands_rejected = 0
        self.goals_clamped = 0
        self.goals_step_clamped = 0
        self._last_present = None
        self._next_reconnect_ns = 0
        self._reconnect_backoff_s = 0.1
        self._lock = threading.Lock()

        self.joint_state_pub = self.create_publisher(sensor_msgs.msg.JointState, "joint_states", QoSProfile(depth=10))
        self.diag_pub = self.create_publisher(diagnostic_msgs.msg.DiagnosticArray, "/diagnostics", QoSProfile(depth=10))

    # -- bring-up -------------------------------------------------------------------------------------
    def _validate_parameters(self) -> None:
        if self.mode not in ("real", "sim"):
            raise StartupError(f"mode must be 'real' or 'sim', not {self.mode!r}")
        if self.on_shutdown not in ("disable_torque", "hold"):
            raise StartupError(f"on_shutdown must be 'disable_torque' or 'hold', not {self.on_shutdown!r}")
        if len(self.joint_names) != len(self.motor_ids) or len(set(self.joint_names)) != len(self.joint_names):
            raise StartupError("joint_names and motor_ids must have the same length and unique names")
        if self.publish_rate <= 0 or self.diagnostics_rate <= 0 or self.command_timeout <= 0:
            raise StartupError("publish_rate, diagnostics_rate and command_timeout must be > 0")
        try:
            self.max_relative_target = parse_max_relative_target(self._max_rel_param, len(self.joint_names))
        except (TypeError, ValueError) as exc:
            raise StartupError(f"max_relative_target: {exc}") from exc

    def start(self) -> None:
        """Calibration, bus, configuration, torque. Raises StartupError (nothing moved)."""
        log = self.get_logger()
        self._validate_parameters()
        self.cal_path, calibration = self._load_calibration()
        self.ranges = units.JointRanges.from_calibration(calibration, self.joint_names)
        self.calibration = calibration
        if self.mode == "sim":
            from gemma3nvla_ros.hardware.sim_bus import SimBusProcess

            self.sim = SimBusProcess(shlex.split(self.sim_args), calibration_file=str(self.cal_path) if self.cal_path else None)
            try:
                self.port = self.sim.wait_for_port()
            except RuntimeError as exc:
                raise StartupError(str(exc)) from exc
            log.info(f"simulated servo bus on {self.port}")
        self.bus = FeetechBus(self.port, self.motors, timeout_ms=self.bus_timeout_ms, retries=self.bus_retries)
        try:
            self.bus.connect()
            self._check_servo_calibration()
            changes = self.bus.configure(gripper=self.gripper)
            if changes:
                log.info(f"configured servos (LeRobot settings): {', '.join(changes)}")
            self._check_inside_range()
            self.bus.enable_torque()
        except BusError as exc:
            raise StartupError(str(exc)) from exc
        self.controller = ArmGoalController(
            self.ranges,
            max_relative_target=self.max_relative_target,
            command_timeout_ns=int(self.command_timeout * 1e9),
        )
        self.connected = True
        self.create_subscription(sensor_msgs.msg.JointState, "joint_commands", self._on_command, QoSProfile(depth=10))
        self.create_timer(1.0 / self.publish_rate, self._on_control_timer)
        self.create_timer(1.0 / self.diagnostics_rate, self._on_diagnostics_timer)
        log.info(
            f"SO-101 on {self.port}: torque on, holding position; calibration {self.cal_path or 'built-in example'}; "
            f"{self.publish_rate:.0f} Hz"
        )

    def _load_calibration(self):
        try:
            path = resolve_calibration_path(self.robot_id, self.calibration_file)
        except CalibrationError:
            if self.mode != "sim":
                raise
            # Simulation without a calibration of its own: the example, also loaded into the sim servos.
            self.get_logger().info("sim mode without a calibration file: using the built-in example calibration")
            return None, parse_calibration(EXAMPLE_CALIBRATION, self.motors)
        return Path(path), load_calibration(path, self.motors)

    def _check_inside_range(self) -> None:
        """Before torque comes on: refuse if a joint rests far outside its calibrated range (the
        firmware would clamp goal := present to the limit and jump there); warn if slightly outside."""
        assert self.bus is not None
        present = self.bus.read_positions()
        far = joints_outside_range(present, self.ranges, OUTSIDE_RANGE_TOLERANCE_TICKS)
        if far:
            what = "; ".join(f"{n} at {p} (range {lo}..{hi})" for n, p, lo, hi in far)
            raise BusError(
                f"Refusing to enable torque: {what} is outside the calibrated range, and the servo would "
                "jump to its limit. With torque off, move the joint inside its range by hand, or recalibrate "
                f"(`{calibrate_command(self.port, self.robot_id or '<robot_id>')}`)."
            )
        near = joints_outside_range(present, self.ranges, 0)
        if near:
            self.get_logger().warn(
                "slightly outside the calibrated range, torque will pull to the limit: "
                + ", ".join(f"{n} at {p} (range {lo}..{hi})" for n, p, lo, hi in near)
            )

    def _check_servo_calibration(self) -> None:
        assert self.bus is not None
        diffs = compare_with_servos(self.calibration, self.bus.read_calibration())
        if not diffs:
            return
        if self.write_calibration:
            self.get_logger().warn(f"writing calibration {self.cal_path} to the servos: {'; '.join(diffs)}")
            self.bus.write_calibration(self.calibration)
            return
        raise StartupError(mismatch_message(diffs, self.cal_path or "<built-in example>", self.port, self.robot_id or "<robot_id>"))

    # -- callbacks ------------------------------------------------------------------------------------
    def _on_command(self, msg) -> None:
        try:
            cmd = validate_joint_command(msg.name, msg.position, self.joint_names)
            stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            check_command_age(stamp_ns, self.get_clock().now().nanoseconds, int(self.command_timeout * 1e9))
        except CommandRejected as exc:
            self.commands_rejected += 1
            self.get_logger().warn(f"rejected joint command, arm not moved: {exc}", throttle_duration_sec=1.0)
            return
        with self._lock:
            if self._last_present is None:
                self.commands_rejected += 1
                self.get_logger().warn("joint command before the first servo read: ignored", throttle_duration_sec=1.0)
                return
            self.controller.on_command(cmd.positions, self.get_clock().now().nanoseconds, self._last_present)

    def _on_control_timer(self) -> None:
        now_ns = self.get_clock().now().nanoseconds
        if not self.connected:
            self._try_reconnect(now_ns)
            return
        assert self.bus is not None
        try:
            present = self.bus.read_positions()
        except BusPortError as exc:
            self._port_lost(exc, now_ns)
            return
        except BusError as exc:
            # No fresh position: publish nothing stale and write nothing (cannot clamp without it).
            self.fault = str(exc)
            self.get_logger().warn(f"servo read failed: {exc}", throttle_duration_sec=1.0)
            return
        stamp = self.get_clock().now()
        self.fault = ""
        msg = sensor_msgs.msg.JointState()
        msg.header.stamp = stamp.to_msg()
        msg.name = list(self.joint_names)
        msg.position = units.ticks_to_radians(present, self.ranges).tolist()
        self.joint_state_pub.publish(msg)

        try:
            self._recover_motors(present)
        except BusPortError as exc:
            self._port_lost(exc, now_ns)
            return
        with self._lock:
            self._last_present = present
            result = self.controller.cycle(present, stamp.nanoseconds)
        if result.goals is None:
            return
        if result.step_clamped:
            self.goals_step_clamped += 1  # normal when a target is far: counted, not logged
        if result.range_clamped:
            self.goals_clamped += 1
            self.get_logger().warn(
                f"command outside the calibrated range for {result.range_clamped}: clamped",
                throttle_duration_sec=2.0,
            )
        try:
            self.bus.write_goals(dict(zip(self.joint_names, result.goals.tolist())))
        except BusPortError as exc:
            self._port_lost(exc, now_ns)
        except BusError as exc:
            self.fault = str(exc)

    def _recover_motors(self, present) -> None:
        """Every motor just answered: re-enable those that lost torque (see the module docstring)."""
        assert self.bus is not None
        due = motors_to_recover(self.bus.health)
        if not due:
            return
        far = {
            n: (p, lo, hi) for n, p, lo, hi in joints_outside_range(present, self.ranges, OUTSIDE_RANGE_TOLERANCE_TICKS)
        }
        log = self.get_logger()
        for name in due:
            who = f"motor {self.motors[name]} ({name})"
            answered_again = self.bus.health[name].unreachable
            try:
                if self.bus.refresh_torque(name):  # it only missed replies and kept holding its goal
                    log.debug(f"{who} answered again, torque still on: nothing to recover")
                    continue
            except BusPortError:
                raise
            except BusError:
                continue  # still not answering reliably: next cycle
            j = self.joint_names.index(name)
            with self._lock:
                self.controller.hold_joint(name, present[j])  # even if re-enabling fails below
            if name in far:
                p, lo, hi = far[name]
                self.fault = (
                    f"{who} is limp at {p}, outside its calibrated range {lo}..{hi}: torque stays off "
                    "(it would jump to the limit); move it inside by hand"
                )
                log.warn(self.fault, throttle_duration_sec=5.0)
                continue
            try:
                held = self.bus.recover_motor(name, gripper=self.gripper)
            except BusPortError:
                raise
            except BusError as exc:
                self.fault = f"{who}: re-enabling torque failed: {exc}"
                log.warn(self.fault, throttle_duration_sec=5.0)
                continue
            with self._lock:
                self.controller.hold_joint(name, held)
            pose = present.copy()
            pose[j] = held
            held_rad = units.ticks_to_radians(pose, self.ranges)[j]
            what = "answered again" if answered_again else "was limp (a cleared trip or a brief brown-out)"
            log.info(f"{who} {what}: torque re-enabled, holding at {held_rad:.3f} rad ({held} ticks)")

    def _port_lost(self, exc: Exception, now_ns: int) -> None:
        self.connected = False
        self.fault = str(exc)
        with self._lock:
            # The arm may move while we are blind (power cut, someone pushes it): forget the old
            # position and target; after reconnecting it holds wherever it then is.
            self.controller.reset()
            self._last_present = None
        self._reconnect_backoff_s = 0.1
        self._next_reconnect_ns = now_ns + int(self._reconnect_backoff_s * 1e9)
        self.get_logger().error(f"servo bus lost: {exc}; reconnecting")

    def _try_reconnect(self, now_ns: int) -> None:
        if now_ns < self._next_reconnect_ns or self.bus is None:
            return
        try:
            self.bus.connect()
            diffs = compare_with_servos(self.calibration, self.bus.read_calibration())
            if diffs:
                raise BusError("calibration changed while disconnected: " + "; ".join(diffs))
            self.bus.configure(gripper=self.gripper)  # RAM settings are gone if the arm lost power too
            self._check_inside_range()
            self.bus.enable_torque()  # goal = present first: no jump after the reconnect
        except BusError as exc:
            self.bus.close()
            self.fault = f"reconnect failed: {exc}"
            self._reconnect_backoff_s = min(MAX_RECONNECT_BACKOFF_S, self._reconnect_backoff_s * 2)
            self._next_reconnect_ns = now_ns + int(self._reconnect_backoff_s * 1e9)
            self.get_logger().warn(self.fault, throttle_duration_sec=5.0)
            return
        self.connected = True
        self.fault = ""
        self.get_logger().info("servo bus reconnected; holding position")

    def _on_diagnostics_timer(self) -> None:
        assert self.bus is not None
        if self.connected:
            try:
                self.bus.read_diagnostics()
            except BusPortError as exc:
                self._port_lost(exc, self.get_clock().now().nanoseconds)
            except BusError:
                pass  # read_diagnostics already isolates failing motors; counters show it
        hw = f"so101:{self.port}"
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
                    "watchdog": self.controller.state.value,
                    "commands_accepted": self.controller.commands_accepted,
                    "commands_rejected": self.commands_rejected,
                    "goals_range_clamped": self.goals_clamped,
                    "goals_step_clamped": self.goals_step_clamped,
                    "motor_recoveries": sum(h.recoveries for h in self.bus.health.values()),
                    "calibration": self.cal_path or "built-in example",
                },
            )
        ]
        statuses += [
            diag.motor_status(h, hw, self.get_name(), expect_torque=self.connected) for h in self.bus.health.values()
        ]
        out = diag.to_diagnostic_array(statuses, self.get_clock().now().to_msg(), diagnostic_msgs.msg)
        self.diag_pub.publish(out)

    # -- shutdown -------------------------------------------------------------------------------------
    def close(self) -> None:
        """Torque per on_shutdown, close the port, stop the simulator. Never raises."""
        if self.bus is not None and self.connected:
            try:
                if self.on_shutdown == "disable_torque":
                    self.bus.disable_torque()
                    self.get_logger().info("torque disabled (on_shutdown=disable_torque): the arm is limp")
                else:
                    present = self.bus.read_positions()
                    self.bus.write_goals(dict(zip(self.joint_names, units.ticks_to_goal(present).tolist())))
                    self.get_logger().info("holding position with torque on (on_shutdown=hold)")
            except BusError as exc:
                self.get_logger().error(f"shutdown torque handling failed: {exc}")
        if self.bus is not None:
            self.bus.close()
        if self.sim is not None:
            self.sim.stop()


def main(args: list[str] | None = None) -> int:
    return run_node(So101Bridge, (StartupError, CalibrationError), args)


if __name__ == "__main__":
    sys.exit(main())
