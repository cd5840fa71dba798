"""action_aggregator: merges timed action chunks and streams one setpoint per control tick.

Subscribes the contract's ``action_chunk`` topic (trajectory_msgs/JointTrajectory from the policy:
``header.stamp`` = capture time of the observation, ``time_from_start`` = i / fps, radians) and
``joint_states``; publishes ``joint_commands`` (sensor_msgs/JointState, one per tick, stamped now),
``action_chunk_request`` (std_msgs/Header: "send the next chunk"), ``~/plan`` (the queued setpoints,
for RViz/Foxglove) and ``/diagnostics``.

The queue, merge strategies, chunk checks and the per-tick logic (start, hold, step clamp, when to ask for a
chunk: ``SetpointStream``) are ``control.action_queue``; this file only wires them to ROS. Timing is the node
clock, so ``use_sim_time`` with a replayed bag runs the same code.
An empty JointTrajectory cancels the plan (as ros2_control's trajectory controller does): the arm holds.
A real-time chunk (``header.frame_id == "rtc"``, from a policy with ``rtc`` on) already continues the plan, so it
replaces it from the slot due now instead of being blended, whatever ``strategy`` says; one that finds the queue
empty is re-timed to start now from its first step not yet executed (``control.action_queue``).
It starts publishing only once it has a chunk and a measured joint state to start from; when the queue
runs dry it holds the last setpoint — it never jumps and never replays old actions.
"""
from __future__ import annotations

import sys

import diagnostic_msgs.msg
import numpy as np
import sensor_msgs.msg
import std_msgs.msg
import trajectory_msgs.msg
from rcl_interfaces.msg import FloatingPointRange
from rclpy.node import Node
from rclpy.qos import QoSProfile

from gemma3nvla_ros.contract import Contract, ContractError
from gemma3nvla_ros.control.action_queue import STRATEGIES, ActionQueue, ChunkRejected, SetpointStream, chunk_arrays
from gemma3nvla_ros.control.rtc import RTC_FRAME_ID
from gemma3nvla_ros.control.timing import PeriodStats, stamp_ns
from gemma3nvla_ros.hardware import diagnostics as diag
from gemma3nvla_ros.nodes.params import CheckedParameters
from gemma3nvla_ros.nodes.run import run_node
from gemma3nvla_ros.paths import config_dir

class StartupError(RuntimeError):
    pass


class ActionAggregator(CheckedParameters, Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("action_aggregator", **kwargs)
        path = self._declare("contract", str(config_dir() / "so101_contract.yaml"),
                             "observation/action contract YAML (joints, fps, topics)")
        rate = self._declare("control_rate", 0.0, "setpoints per second; 0 = the contract's fps",
                             floating_point_range=[FloatingPointRange(from_value=0.0, to_value=1000.0)])
        self.strategy = self._declare("strategy", "weighted_average",
                                      f"how overlapping chunks merge: {', '.join(STRATEGIES)}", read_only=False)
        self.ensemble_m = self._declare("ensemble_m", 0.01, "temporal_ensemble weight decay m (w_i = exp(-m i))",
                                        read_only=False)
        threshold = self._declare("chunk_size_threshold", 0.5,
                                  "ask for the next chunk when queued / chunk_size falls to this", read_only=False,
                                  floating_point_range=[FloatingPointRange(from_value=0.0, to_value=1.0)])
        max_step = self._declare("max_step", 0.1, "largest setpoint change per tick (rad); 0 disables",
                                 read_only=False,
                                 floating_point_range=[FloatingPointRange(from_value=0.0, to_value=3.2)])
        try:
            self.contract = Contract.load(path)
        except (ContractError, OSError) as exc:
            raise StartupError(f"contract {path}: {exc}") from exc
        self.rate = rate or self.contract.fps
        self.joints = list(self.contract.joints)
        try:
            self.queue = ActionQueue(int(1e9 / self.rate), self.strategy, self.ensemble_m)
        except ValueError as exc:
            raise StartupError(str(exc)) from exc

        self.stream = SetpointStream(self.queue, self.contract.chunk_size, threshold, max_step)
        self.counts = {"chunks": 0, "rejected": 0, "dropped_past": 0, "step_clamped": 0, "holds": 0, "rtc_chunks": 0,
                       "rtc_retimed": 0}
        self.last_rejection = ""
        self.ticks = PeriodStats(window=300)

        self.cmd_pub = self.create_publisher(sensor_msgs.msg.JointState, "joint_commands", QoSProfile(depth=10))
        self.request_pub = self.create_publisher(std_msgs.msg.Header, "action_chunk_request", QoSProfile(depth=10))
        self.plan_pub = self.create_publisher(trajectory_msgs.msg.JointTrajectory, "~/plan", QoSProfile(depth=1))
        self.diag_pub = self.create_publisher(diagnostic_msgs.msg.DiagnosticArray, "/diagnostics", QoSProfile(depth=10))
        self._watch_parameters()

    def start(self) -> None:
        self.create_subscription(trajectory_msgs.msg.JointTrajectory, self.contract.action_chunk_topic,
                                 self._on_chunk, QoSProfile(depth=10))
        self.create_subscription(sensor_msgs.msg.JointState, self.contract.joint_states_topic, self._on_joint_state,
                                 QoSProfile(depth=10))
        self.create_timer(1.0 / self.rate, self._on_tick)
        self.create_timer(1.0, self._on_diagnostics)
        self.get_logger().info(
            f"{self.rate:g} Hz, strategy {self.strategy}, threshold {self.stream.threshold:g}: waiting for a first "
            f"chunk on {self.contract.action_chunk_topic} and a joint state")

    def _check_parameter(self, name: str, value):
        if name == "strategy" and value not in STRATEGIES:
            raise ValueError(f"must be one of {list(STRATEGIES)}")
        if name == "ensemble_m" and not value > 0:
            raise ValueError("must be > 0")
        return value

    def _apply_parameter(self, name: str, value) -> None:
        if name == "strategy":
            self.strategy = self.queue.strategy = value
        elif name == "ensemble_m":
            self.ensemble_m = self.queue.ensemble_m = value
        elif name == "chunk_size_threshold":
            self.stream.threshold = value
        elif name == "max_step":
            self.stream.max_step = value

    def _on_joint_state(self, msg) -> None:
        by_name = dict(zip(msg.name, msg.position))
        if all(n in by_name for n in self.joints):
            self.stream.measured = np.array([by_name[n] for n in self.joints], dtype=np.float64)

    def _on_chunk(self, msg) -> None:
        now = self.get_clock().now().nanoseconds
        if not msg.points:  # a cancel (policy stopped): hold where the arm is commanded now
            self.queue.clear()
            self.get_logger().info("plan cancelled: holding")
            return
        try:
            if any(len(p.positions) != len(msg.joint_names) for p in msg.points):
                raise ChunkRejected("every point needs one position per joint name")
            times, positions = chunk_arrays(
                stamp_ns(msg.header.stamp) or now,  # stamp 0: "from now", as ros2_control reads it
                msg.joint_names,
                [p.positions for p in msg.points],
                [stamp_ns(p.time_from_start) for p in msg.points],
                self.joints,
            )
            rtc = msg.header.frame_id == RTC_FRAME_ID
            report = self.queue.merge(times, positions, now, rtc=rtc)
        except ChunkRejected as exc:
            self.counts["rejected"] += 1
            self.last_rejection = str(exc)
            self.get_logger().warn(f"rejected action chunk: {exc}", throttle_duration_sec=2.0)
            return
        self.counts["chunks"] += 1
        self.counts["dropped_past"] += report.dropped_past
        self.counts["rtc_chunks"] += rtc
        if report.shifted_ns:
            self.counts["rtc_retimed"] += 1
            self.get_logger().info(f"queue was empty: real-time chunk started now, {report.shifted_ns / 1e6:.0f} ms "
                                   f"after its stamp, {report.dropped_past} steps executed before it",
                                   throttle_duration_sec=5.0)
        self.stream.chunk_merged()
        self._publish_plan()

    def _on_tick(self) -> None:
        now = self.get_clock().now()
        self.ticks.add(now.nanoseconds)
        tick = self.stream.tick(now.nanoseconds)
        self.counts["holds"] += tick.started_holding
        self.counts["step_clamped"] += tick.clamped
        if tick.setpoint is not None:
            msg = sensor_msgs.msg.JointState()
            msg.header.stamp = now.to_msg()
            msg.name = self.joints
            msg.position = tick.setpoint.tolist()
            self.cmd_pub.publish(msg)
        if tick.request:
            request = std_msgs.msg.Header()
            request.stamp = now.to_msg()
            request.frame_id = "queue_empty" if self.queue.remaining(now.nanoseconds) == 0 else "queue_low"
            self.request_pub.publish(request)

    def _publish_plan(self) -> None:
        times, positions = self.queue.plan()
        msg = trajectory_msgs.msg.JointTrajectory()
        if len(times):
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(times[0]), 1_000_000_000)
        msg.joint_names = self.joints
        for t, row in zip(times, positions):
            point = trajectory_msgs.msg.JointTrajectoryPoint()
            point.positions = row.tolist()
            point.time_from_start.sec, point.time_from_start.nanosec = divmod(int(t - times[0]), 1_000_000_000)
            msg.points.append(point)
        self.plan_pub.publish(msg)

    def _on_diagnostics(self) -> None:
        now = self.get_clock().now()
        remaining = self.queue.remaining(now.nanoseconds)
        if self.stream.last is None:
            level, message = diag.WARN, "waiting for a first chunk and a joint state"
        elif self.stream.holding:
            level, message = diag.WARN, "queue empty: holding the last setpoint"
        else:
            level, message = diag.OK, f"executing, {remaining} setpoints queued"
        values = {
            "queued": remaining,
            "strategy": self.strategy,
            "chunks_accepted": self.counts["chunks"],
            "chunks_rejected": self.counts["rejected"],
            "last_rejection": self.last_rejection or "none",
            "setpoints_dropped_past": self.counts["dropped_past"],
            "ticks_step_clamped": self.counts["step_clamped"],
            "holds": self.counts["holds"],
            "rtc_chunks": self.counts["rtc_chunks"],
            "rtc_chunks_retimed": self.counts["rtc_retimed"],
            "tick_period_p50_ms": f"{self.ticks.percentile(50) * 1e3:.2f}",
            "tick_period_p99_ms": f"{self.ticks.percentile(99) * 1e3:.2f}",
        }
        status = diag.Status(f"{self.get_name()}: action queue", level, message, "action_aggregator",
                             {k: str(v) for k, v in values.items()})
        self.diag_pub.publish(diag.to_diagnostic_array([status], now.to_msg(), diagnostic_msgs.msg))

    def close(self) -> None:
        """Nothing to release: when the commands stop, the bridge's watchdog holds the arm."""


def main(args: list[str] | None = None) -> int:
    return run_node(ActionAggregator, (StartupError,), args)


if __name__ == "__main__":
    sys.exit(main())
