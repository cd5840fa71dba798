"""so101_bridge: the only node that touches the SO-101 servo bus.

Publishes ``joint_states`` (sensor_msgs/JointState, radians, all six joints incl. the gripper, stamped
at read on the node clock) and ``/diagnostics``; subscribes ``joint_commands`` (sensor_msgs/JointState,
positions in radians for any subset of the joints). Unit conversion: ``control.units``; command
validation, clamping and the watchdog: ``control.commands`` / ``control.safety``; bus I/O:
``hardware.feetech_bus``. This file only wires them to ROS.

Recovery: a lost port is reopened and the whole arm re-enabled holding where it is (every controller
target forgotten). A single motor that stopped answering and answers again with torque off (a
brown-out: the servo comes back limp with its RAM reset), or that reads torque off without an alarm (a
cleared overload trip), is re-enabled alone: configuration re-applied, goal := present, torque on, and
only that joint's controller target reset to where it now is (``ArmGoalController.hold_joint`` says
why only that one). One that answers again with torque still on only missed replies: it kept holding
its goal, nothing is reset. A joint that came to rest far outside its calibrated range stays limp, as
at start-up.

Servo configuration: at connect (and after a reconnect or a motor's recovery) LeRobot 0.6.1's
``SOFollower.configure()`` values (``hardware.servo_config``), written with torque off where servo memory
differs and read back. The PID gains also apply at run time: written while the arm keeps holding
(torque stays on; dropping it would let the arm fall), read back, and refused — old gains restored —
if a servo does not take them. The other servo settings are read-only: they are set once per arm, and
the gripper's burn-out protection is not something to loosen mid-grip.

Parameters (see README / docs): port, mode (real|sim), robot_id, calibration_file,
write_calibration_to_motors, joint_names, motor_ids, publish_rate, max_relative_target,
command_timeout, on_shutdown (disable_torque|hold), hold_goal_joints, overload_recovery,
diagnostics_rate, bus_timeout_ms, bus_retries, sim_args, and the servo settings of
``servo_config.SETTINGS`` (position_p/i/d_coefficient, return_delay_time, acceleration,
maximum_acceleration, gripper_max_torque_limit, gripper_protection_current, gripper_overload_torque).
"""
from __future__ import annotations

import shlex
import sys
import threading
from dataclasses import replace
from pathlib import Path

import diagnostic_msgs.msg
import sensor_msgs.msg
import std_srvs.srv
from rcl_interfaces.msg import FloatingPointRange, IntegerRange
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import QoSProfile

from gemma3nvla_ros.control import units
from gemma3nvla_ros.control.timing import stamp_ns
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
from gemma3nvla_ros.control.commands import CommandRejected, check_command_age, validate_joint_command
from gemma3nvla_ros.hardware.feetech_bus import BusError, BusPortError, FeetechBus
from gemma3nvla_ros.hardware.retry import MAX_RETRIES, ReconnectBackoff
from gemma3nvla_ros.hardware.servo_config import GAINS, SETTINGS, ServoSettings, check_setting
from gemma3nvla_ros.hardware.scs_protocol import describe_error_bits
from gemma3nvla_ros.control.safety import (
    OVERLOAD_RECOVERY,
    SHUTDOWN_ACTIONS,
    ArmGoalController,
    WatchdogState,
    alarm_active,
    check_choice,
    joints_outside_range,
    motors_to_recover,
    parse_max_relative_target,
)
from gemma3nvla_ros.nodes.params import CheckedParameters
from gemma3nvla_ros.nodes.run import run_node

# How far (ticks, ~4 deg) a joint may rest beyond its calibrated range when torque comes on: the
# firmware then pulls it to the limit at full speed, so more than this refuses to enable torque.
OUTSIDE_RANGE_TOLERANCE_TICKS = 45


class StartupError(RuntimeError):
    """Bring-up refused; the message tells the user what to do. The process exits non-zero."""


class So101Bridge(CheckedParameters, Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("so101_bridge", **kwargs)
        # Fixed at start-up (read_only): they choose the hardware, its calibration and the loop.
        self.port = self._declare("port", "/dev/ttyACM0", "serial port of the arm (ignored in sim mode)")
        self.mode = self._declare("mode", "real", "real: the arm on `port`; sim: the byte-level servo simulator")
        self.robot_id = self._declare("robot_id", "", "LeRobot calibration id (so_follower/<id>.json)")
        self.calibration_file = self._declare("calibration_file", "", "explicit calibration JSON (overrides robot_id)")
        self.write_calibration = self._declare(
            "write_calibration_to_motors", False, "write the JSON's homing offset and limits into the servos")
        self.joint_names = list(self._declare("joint_names", list(SO101_MOTORS), "joint names, bus order"))
        self.motor_ids = [int(i) for i in self._declare("motor_ids", list(SO101_MOTORS.values()), "servo ids")]
        self.publish_rate = float(self._declare(
            "publish_rate", 100.0, "read + write cycle (Hz)", floating_point_range=[FloatingPointRange(
                from_value=1.0, to_value=1000.0)]))
        self.diagnostics_rate = float(self._declare(
            "diagnostics_rate", 1.0, "/diagnostics rate (Hz)",
            floating_point_range=[FloatingPointRange(from_value=0.1, to_value=50.0)]))
        self.bus_timeout_ms = float(self._declare("bus_timeout_ms", 50.0, "reply timeout per transaction (ms)"))
        self.sim_args = self._declare("sim_args", "", "simulator options, e.g. fault injection (sim mode)")
        # Changeable at run time (checked in _check_parameter, applied at once).
        self._max_rel_param = self._declare(
            "max_relative_target", 0.2,
            "largest goal step per cycle relative to the present position (rad): one value or one per "
            "joint; 0 disables", read_only=False, dynamic_typing=True)
        self.command_timeout = float(self._declare(
            "command_timeout", 0.5, "s without commands before the watchdog holds; also the largest "
            "accepted command stamp age (past or future)", read_only=False,
            floating_point_range=[FloatingPointRange(from_value=0.01, to_value=60.0)]))
        self.on_shutdown = self._declare(
            "on_shutdown", "disable_torque", "disable_torque (the arm goes limp) or hold (torque stays on)",
            read_only=False)
        self.hold_goal_joints = list(self._declare(
            "hold_goal_joints", ["gripper"], "joints that keep their last commanded goal when the "
            "watchdog holds or on_shutdown is hold (a gripper keeps its grip)", read_only=False))
        self.overload_recovery = self._declare(
            "overload_recovery", "manual", "manual: a motor that tripped on an alarm stays limp until "
            "~/enable is called; auto: re-enabled once the alarm clears", read_only=False)
        self.bus_retries = int(self._declare(
            "bus_retries", 2, "extra tries of a failed bus transaction (no reply, or 'Incorrect status "
            "packet'), at once; LeRobot's num_read_retries", read_only=False,
            integer_range=[IntegerRange(from_value=0, to_value=MAX_RETRIES)]))
        # Servo settings written at connect (LeRobot 0.6.1's by default); the PID gains also at run time.
        defaults = ServoSettings()
        self.servo_settings = ServoSettings.from_mapping({
            name: self._declare(name, getattr(defaults, name), description, read_only=name not in GAINS,
                                integer_range=[IntegerRange(from_value=lo, to_value=hi)])
            for name, (_register, lo, hi, description) in SETTINGS.items()})

        self.motors = dict(zip(self.joint_names, self.motor_ids))
        self.gripper = "gripper" if "gripper" in self.motors else None
        self.bus: FeetechBus | None = None
        self.sim = None
        self.controller: ArmGoalController | None = None
        self.connected = False
        self.fault = ""
        self.commands_rejected = 0
        self.commands_range_clamped = 0
        self.goals_step_clamped = 0
        self.tripped: set[str] = set()  # an alarm was seen: torque waits for ~/enable (manual recovery)
        self._last_present = None
        self.reconnect = ReconnectBackoff()
        self._lock = threading.Lock()
        # The hardware loop, watchdog and reconnect backoff run on a steady clock (as ros2_control's):
        # a ROS clock that jumps back, stops, or never starts (use_sim_time without /clock) must not
        # freeze the arm or keep an old target alive. ROS time only stamps messages.
        self.steady = Clock(clock_type=ClockType.STEADY_TIME)

        self.joint_state_pub = self.create_publisher(sensor_msgs.msg.JointState, "joint_states", QoSProfile(depth=10))
        self.diag_pub = self.create_publisher(diagnostic_msgs.msg.DiagnosticArray, "/diagnostics", QoSProfile(depth=10))
        self._watch_parameters()

    def _check_parameter(self, name: str, value):
        """The value to apply for a dynamic parameter, or TypeError/ValueError with the reason."""
        if name == "max_relative_target":
            if isinstance(value, (bool, str)) or value is None:
                raise TypeError("must be a number or a list of numbers (radians)")
            return parse_max_relative_target(value, len(self.joint_names))
        if name == "command_timeout":
            return float(value)
        if name == "on_shutdown":
            return check_choice(value, SHUTDOWN_ACTIONS)
        if name == "overload_recovery":
            return check_choice(value, OVERLOAD_RECOVERY)
        if name == "hold_goal_joints":
            unknown = [n for n in value if n not in self.joint_names]
            if unknown:
                raise ValueError(f"unknown joint names {unknown} (known: {self.joint_names})")
            return list(value)
        if name in SETTINGS:
            return check_setting(name, value)
        return value  # rclpy refuses read_only parameters and wrong types before this callback

    def _commit_parameters(self, changes: dict) -> None:
        """New PID gains go to the servos before they count as set: written while the arm holds (see
        the module docstring), or refused with the old gains put back."""
        gains = {n: v for n, v in changes.items() if n in GAINS}
        if not gains or self.bus is None:
            return
        old = self.bus.settings
        new = replace(old, **gains)
        if not self.connected:  # written by the reconnect's configure
            self.bus.settings = new
            return
        try:
            written = self.bus.set_gains(new)
        except BusError as exc:
            others = [n for n in self.bus.names if n != exc.motor]
            try:
                self.bus.set_gains(old, others)
                kept = "the previous gains are back on " + ("every other servo" if exc.motor else "every servo")
            except BusError as undo:
                kept = f"putting the previous gains back failed too ({undo}): servos may differ until reconnect"
            self.bus.settings = old
            self.get_logger().error(f"PID gains {gains} not applied: {exc}; {kept}")
            raise ValueError(f"writing {gains} to the servos failed: {exc}; {kept}") from exc
        self.get_logger().info(f"PID gains on the servos, arm holding: {', '.join(written) or 'unchanged'}")

    def _apply_parameter(self, name: str, value) -> None:
        with self._lock:  # the control timer reads these
            self._apply_locked(name, value)

    def _apply_locked(self, name: str, value) -> None:
        if name == "max_relative_target":
            self.max_relative_target = value
            if self.controller is not None:
                self.controller.set_max_relative_target(value)
        elif name == "command_timeout":
            self.command_timeout = value
            if self.controller is not None:
                self.controller.command_timeout_ns = int(value * 1e9)
        elif name == "hold_goal_joints":
            self.hold_goal_joints = value
            if self.controller is not None:
                self.controller.set_keep_goal_on_hold(value)
        elif name in ("on_shutdown", "overload_recovery"):
            setattr(self, name, value)
        elif name == "bus_retries":
            self.bus_retries = value
            if self.bus is not None:
                self.bus.retries = value
        elif name in GAINS:
            self.servo_settings = replace(self.servo_settings, **{name: value})

    # -- bring-up -------------------------------------------------------------------------------------
    def _validate_parameters(self) -> None:
        """The start-up values, through the same checks as run-time changes."""
        if self.mode not in ("real", "sim"):
            raise StartupError(f"mode must be 'real' or 'sim', not {self.mode!r}")
        if len(self.joint_names) != len(self.motor_ids) or len(set(self.joint_names)) != len(self.joint_names):
            raise StartupError("joint_names and motor_ids must have the same length and unique names")
        for name in ("max_relative_target", "command_timeout", "on_shutdown", "overload_recovery", "hold_goal_joints",
                     "bus_retries"):
            try:
                self._apply_parameter(name, self._check_parameter(name, self.get_parameter(name).value))
            except (TypeError, ValueError) as exc:
                raise StartupError(f"{name}: {exc}") from exc

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
        self.bus = FeetechBus(self.port, self.motors, timeout_ms=self.bus_timeout_ms, retries=self.bus_retries,
                              settings=self.servo_settings)
        try:
            # The simulator is a process started just now: on a loaded machine its first replies can be late.
            self.bus.connect(wait_s=5.0 if self.mode == "sim" else 0.0)
            self._check_servo_calibration()
            changes = self.bus.configure(gripper=self.gripper)
            if changes:
                log.info(f"configured servos (LeRobot 0.6.1 settings, torque off, read back): {', '.join(changes)}")
            self._check_inside_range()
            self.bus.enable_torque()
        except BusError as exc:
            raise StartupError(str(exc)) from exc
        self.controller = ArmGoalController(
            self.ranges,
            max_relative_target=self.max_relative_target,
            command_timeout_ns=int(self.command_timeout * 1e9),
            keep_goal_on_hold=self.hold_goal_joints,
        )
        self.connected = True
        self.create_subscription(sensor_msgs.msg.JointState, "joint_commands", self._on_command, QoSProfile(depth=10))
        self.create_service(std_srvs.srv.Trigger, "~/enable", self._on_enable)
        self.create_timer(1.0 / self.publish_rate, self._on_control_timer, clock=self.steady)
        self.create_timer(1.0 / self.diagnostics_rate, self._on_diagnostics_timer, clock=self.steady)
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
            check_command_age(stamp_ns(msg.header.stamp), self.get_clock().now().nanoseconds, int(self.command_timeout * 1e9))
            first = self.controller.commands_accepted == 0
        except CommandRejected as exc:
            self.commands_rejected += 1
            self.get_logger().warn(f"rejected joint command, arm not moved: {exc}", throttle_duration_sec=1.0)
            return
        with self._lock:
            if self._last_present is None:
                self.commands_rejected += 1
                self.get_logger().warn("joint command before the first servo read: ignored", throttle_duration_sec=1.0)
                return
            self.controller.on_command(cmd.positions, self.steady.now().nanoseconds, self._last_present)
            outside = self.controller.target_outside_range()
        if outside:
            self.commands_range_clamped += 1
            self.get_logger().warn(f"command outside the calibrated range for {outside}: clamped",
                                   throttle_duration_sec=2.0)
        if first:
            self.get_logger().info(
                f"first joint command accepted. Commands are a stream: after {self.command_timeout:g} s "
                "without one the arm holds where it is (command_timeout)")

    def _on_control_timer(self) -> None:
        now_ns = self.steady.now().nanoseconds
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
            was = self.controller.state
            result = self.controller.cycle(present, now_ns)
        if result.state is WatchdogState.HOLDING and was is WatchdogState.ACTIVE:
            kept = [n for n in self.hold_goal_joints if n in self.joint_names]
            self.get_logger().info(
                f"no joint command for {self.command_timeout:g} s: holding position"
                + (f" ({', '.join(kept)} keeps its last goal)" if kept else ""))
        if result.goals is None:
            return
        if result.step_clamped:
            self.goals_step_clamped += 1  # normal when a target is far: counted, not logged
        try:
            self.bus.write_goals(dict(zip(self.joint_names, result.goals.tolist())))
        except BusPortError as exc:
            self._port_lost(exc, now_ns)
        except BusError as exc:
            self.fault = str(exc)

    def _recover_motors(self, present) -> None:
        """Every motor just answered: re-enable those that lost torque (see the module docstring)."""
        assert self.bus is not None
        self._note_trips()
        due = motors_to_recover(self.bus.health, self.tripped)
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

    def _note_trips(self) -> None:
        """With manual overload recovery, a motor that raised an alarm waits for ~/enable."""
        if self.overload_recovery != "manual":
            return
        for name, health in self.bus.health.items():
            if name not in self.tripped and alarm_active(health):
                self.tripped.add(name)
                self.get_logger().warn(
                    f"motor {self.motors[name]} ({name}) reports an alarm "
                    f"({describe_error_bits((health.status or 0) | health.error_bits)}); if its torque drops it "
                    f"stays off until the alarm clears and an operator calls `ros2 service call "
                    f"{self.get_fully_qualified_name()}/enable std_srvs/srv/Trigger`")

    def _on_enable(self, _request, response):
        """Operator action after a trip: re-enable tripped motors whose alarm has cleared, holding
        where they stand."""
        if not self.connected or self.bus is None:
            response.success, response.message = False, "the servo bus is not connected"
            return response
        still = [n for n in sorted(self.tripped) if alarm_active(self.bus.health[n])]
        if still:
            response.success = False
            response.message = f"alarm still active on {still}: let the servo cool down / free the joint first"
            return response
        done = []
        for name in sorted(self.tripped):
            try:
                if not self.bus.refresh_torque(name):
                    held = self.bus.recover_motor(name, gripper=self.gripper)
                    with self._lock:
                        self.controller.hold_joint(name, held)
                done.append(name)
            except BusError as exc:
                response.success, response.message = False, f"re-enabling {name} failed: {exc}"
                return response
            self.tripped.discard(name)
        response.success = True
        response.message = f"torque on for {done}, holding where they stand" if done else "no motor was waiting"
        self.get_logger().info(f"~/enable: {response.message}")
        return response

    def _port_lost(self, exc: Exception, now_ns: int) -> None:
        self.connected = False
        self.fault = str(exc)
        with self._lock:
            # The arm may move while we are blind (power cut, someone pushes it): forget the old
            # position and target; after reconnecting it holds wherever it then is.
            self.controller.reset()
            self._last_present = None
        self.reconnect.lost(now_ns)
        self.get_logger().error(f"servo bus lost: {exc}; reconnecting")

    def _try_reconnect(self, now_ns: int) -> None:
        if not self.reconnect.due(now_ns) or self.bus is None:
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
            self.reconnect.failed(now_ns)
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
                self._port_lost(exc, self.steady.now().nanoseconds)
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
                    "commands_range_clamped": self.commands_range_clamped,
                    "goals_step_clamped": self.goals_step_clamped,
                    "motor_recoveries": sum(h.recoveries for h in self.bus.health.values()),
                    "bus_retries": self.bus.retries,
                    "position_pid": "{P_Coefficient}/{I_Coefficient}/{D_Coefficient}".format(**self.bus.settings.gains()),
                    "awaiting_enable": ", ".join(sorted(self.tripped)) or "none",
                    "hold_goal_joints": ", ".join(self.hold_goal_joints) or "none",
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
                    self.bus.write_goals(self.controller.target_goals(present))
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
