"""gemma3nvla_policy: camera frames + joint state + task -> timed action chunks.

Subscribes the contract's camera topics (sensor-data QoS), ``joint_states``, ``action_chunk_request``
(from the aggregator) and ``~/task`` (std_msgs/String, for programs that stream instructions);
publishes the contract's ``action_chunk`` (trajectory_msgs/JointTrajectory: ``header.stamp`` = the
capture stamp of the observation used, ``points[i].time_from_start`` = i / fps, radians) and
``/diagnostics``. Services ``~/start`` and ``~/stop`` (std_srvs/Trigger): stop publishes an empty
trajectory, which makes the aggregator drop its plan and hold.

With ``rtc`` (real-time chunking) each chunk is guided to continue the one before it: the previous chunk (in
the policy's normalized space) and the latency window live in ``control.rtc``, and RTC chunks carry
``header.frame_id = "rtc"`` so that the aggregator executes them instead of blending them.

Observation building and refusals: ``control.observation``; units: ``control.units`` (through the
contract); loading and running the checkpoint: ``policy.runner``. Inference runs on a worker thread, so
subscriptions and services stay responsive during a 150 ms GPU chunk or a multi-second CPU chunk.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import diagnostic_msgs.msg
import numpy as np
import sensor_msgs.msg
import std_msgs.msg
import std_srvs.srv
import trajectory_msgs.msg
from rcl_interfaces.msg import FloatingPointRange, IntegerRange
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, qos_profile_sensor_data

from gemma3nvla_ros.contract import Contract, ContractError
from gemma3nvla_ros.control.observation import ObservationRefused, Stamped, build_observation, joint_state_positions
from gemma3nvla_ros.control.rtc import RTC_FRAME_ID, RTC_SCHEDULES, RealTimeChunking
from gemma3nvla_ros.control.timing import LatencyWindow, stamp_ns
from gemma3nvla_ros.hardware import diagnostics as diag
from gemma3nvla_ros.hardware.calibration import (
    EXAMPLE_CALIBRATION,
    CalibrationError,
    load_calibration,
    parse_calibration,
    resolve_calibration_path,
)
from gemma3nvla_ros.hardware.image_msgs import image_to_rgb
from gemma3nvla_ros.nodes.params import CheckedParameters
from gemma3nvla_ros.nodes.run import run_node
from gemma3nvla_ros.paths import config_dir

MAX_TASK_CHARS = 500
DEMO_CHECKPOINT = "demo"


class StartupError(RuntimeError):
    pass


def check_task(task: str) -> str:
    """The task as the policy will see it, or ValueError with the reason."""
    if not isinstance(task, str) or not task.strip():
        raise ValueError("the task is empty: say what the robot should do, e.g. 'pick up the red cube'")
    if len(task) > MAX_TASK_CHARS:
        raise ValueError(f"the task is {len(task)} characters long; at most {MAX_TASK_CHARS}")
    return task.strip()


def dummy_inputs(input_features, task: str) -> dict:
    """Black frames and a zero state shaped as the checkpoint expects: the warm-up observation."""
    values: dict = {"task": task}
    for key, feature in input_features.items():
        shape = tuple(feature.shape)
        if key.startswith("observation.images."):
            values[key] = np.zeros((shape[1], shape[2], shape[0]), np.uint8)
        elif key == Contract.STATE_KEY:
            values[key] = np.zeros(shape, np.float32)
    return values


class PolicyNode(CheckedParameters, Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("gemma3nvla_policy", **kwargs)
        self.contract_path = self._declare("contract", str(config_dir() / "so101_contract.yaml"),
                                           "observation/action contract YAML (cameras, joints, units, fps)")
        self.checkpoint = self._declare(
            "checkpoint", DEMO_CHECKPOINT, "LeRobot checkpoint: a pretrained_model dir, a training output dir, "
            "a hub id, or 'demo' (a small untrained model created locally on first use)")
        self.device = self._declare("device", "auto", "auto | cuda | cuda:N | cpu (ROCm builds answer to cuda)")
        self.dtype = self._declare("dtype", "auto", "auto | float32 | bfloat16")
        self.robot_id = self._declare("robot_id", "", "LeRobot calibration id of the arm (units of range modes, gripper)")
        self.calibration_file = self._declare("calibration_file", "", "explicit calibration JSON (overrides robot_id)")
        self.task = self._declare("task", "", "what the robot should do; changes take effect on the next chunk",
                                  read_only=False)
        self.cpu_threads = int(self._declare(
            "cpu_threads", 0, "torch CPU threads for inference; 0 = half the cores (the other nodes need some)"))
        self.demo_size = [int(v) for v in self._declare(
            "demo_camera_size", [640, 480], "checkpoint 'demo': the cameras' width and height it is built for")]
        self.max_age = self._declare(
            "max_observation_age", 0.5, "refuse to infer on any input older than this (s)", read_only=False,
            floating_point_range=[FloatingPointRange(from_value=0.01, to_value=60.0)])
        self.running = bool(self._declare("autostart", True, "produce chunks from the start (else wait for ~/start)"))
        self.rtc_on = bool(self._declare(
            "rtc", False, "real-time chunking: guide each chunk to continue the executing one (LeRobot's RTC); the "
            "aggregator then executes chunks instead of blending them", read_only=False))
        self.rtc_horizon = int(self._declare(
            "rtc_execution_horizon", 10, "RTC: steps of the new chunk guided towards the previous one's leftover "
            "(always at least the inference delay)", read_only=False,
            integer_range=[IntegerRange(from_value=1, to_value=1000, step=1)]))
        self.rtc_weight = float(self._declare(
            "rtc_max_guidance_weight", 10.0, "RTC: the guidance weight's cap (beta; the paper uses 5-10)",
            read_only=False, floating_point_range=[FloatingPointRange(from_value=0.1, to_value=100.0)]))
        self.rtc_schedule = self._declare(
            "rtc_schedule", "LINEAR", f"RTC prefix weights past the frozen steps: {', '.join(RTC_SCHEDULES)}",
            read_only=False)
        self.rtc_window = int(self._declare(
            "rtc_latency_window", 10, "RTC: the inference delay uses the largest latency of this many last chunks",
            integer_range=[IntegerRange(from_value=1, to_value=1000, step=1)]))

        self._lock = threading.Lock()
        self._images: dict[str, Stamped | None] = {}
        self._joint_state: Stamped | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._busy = False
        self._worker: threading.Thread | None = None
        self.runner = None
        self.latency = LatencyWindow()
        self.chunks = 0
        self.refusals = 0
        self.last_refusal = ""
        self.last_obs_age = 0.0
        self._reported = (0, 0)  # (chunks, refusals) at the last diagnostics report
        self._rtc_forget = False  # set from callbacks: nothing of the last chunk is executing any more
        self._rtc_applied: tuple | None = None  # the RTC settings the runner has
        self._last_publish_ns = 0
        self.rtc_guided = 0
        self.rtc_delay = 0
        try:
            self.rtc_schedule = self._check_parameter("rtc_schedule", self.rtc_schedule)
        except ValueError as exc:
            raise StartupError(f"rtc_schedule: {exc}") from exc
        self._watch_parameters()

    # -- bring-up -------------------------------------------------------------------------------------
    def start(self) -> None:
        from gemma3nvla_ros.policy.runner import PolicyLoadError, PolicyRunner

        log = self.get_logger()
        try:
            self.contract = Contract.load(self.contract_path)
        except (ContractError, OSError) as exc:
            raise StartupError(f"contract {self.contract_path}: {exc}") from exc
        self.units = self.contract.dataset_units(self._calibration())
        self.rtc = RealTimeChunking(int(round(1e9 / self.contract.fps)), self.rtc_window)
        if self.task:
            try:
                self.task = check_task(self.task)
            except ValueError as exc:
                raise StartupError(f"task: {exc}") from exc
        checkpoint = self._resolve_checkpoint()
        log.info(f"loading {checkpoint} on {self.device} ({self.dtype})")
        threads = self.cpu_threads or max(1, (os.cpu_count() or 2) // 2)
        try:
            self.runner = PolicyRunner(checkpoint, device=self.device, dtype=self.dtype, threads=threads)
            self.contract.check_features(self.runner.input_features, self.runner.output_features,
                                         self.runner.chunk_size)
        except (PolicyLoadError, ContractError) as exc:
            raise StartupError(str(exc)) from exc
        t0 = time.monotonic()
        self.runner.warmup(dummy_inputs(self.runner.input_features, self.task or "warm up"))
        log.info(f"policy ready on {self.runner.device} (warm-up {time.monotonic() - t0:.2f} s; "
                 f"{self.runner.fast_report.get('path', 'eager')} path)")

        for key, topic in self.contract.cameras.items():
            self._images[key] = None
            self.create_subscription(sensor_msgs.msg.Image, topic, lambda m, k=key: self._on_image(k, m),
                                     qos_profile_sensor_data)
        self.create_subscription(sensor_msgs.msg.JointState, self.contract.joint_states_topic, self._on_joint_state,
                                 QoSProfile(depth=10))
        self.create_subscription(std_msgs.msg.Header, "action_chunk_request", self._on_request, QoSProfile(depth=10))
        self.create_subscription(std_msgs.msg.String, "~/task", self._on_task_topic, QoSProfile(depth=10))
        self.chunk_pub = self.create_publisher(trajectory_msgs.msg.JointTrajectory, self.contract.action_chunk_topic,
                                               QoSProfile(depth=10))
        self.diag_pub = self.create_publisher(diagnostic_msgs.msg.DiagnosticArray, "/diagnostics", QoSProfile(depth=10))
        self.create_service(std_srvs.srv.Trigger, "~/start", self._on_start)
        self.create_service(std_srvs.srv.Trigger, "~/stop", self._on_stop)
        self.create_timer(1.0, self._on_diagnostics)
        self._worker = threading.Thread(target=self._work, name="inference", daemon=True)
        self._worker.start()
        if not self.task:
            log.warn(f"no task yet: `ros2 param set {self.get_fully_qualified_name()} task \"pick up the cube\"`")

    def _resolve_checkpoint(self) -> str:
        if self.checkpoint != DEMO_CHECKPOINT:
            return self.checkpoint
        from gemma3nvla_ros.policy.demo_checkpoint import ensure_demo_checkpoint

        path = Path.home() / ".cache" / "gemma3nvla_ros" / "demo_checkpoint"
        self.get_logger().warn(
            f"checkpoint 'demo': a small UNTRAINED Gemma3nVLA ({path}); its actions are random-looking. "
            "Point `checkpoint` at a trained LeRobot checkpoint for real work")
        width, height = self.demo_size
        return str(ensure_demo_checkpoint(path, self.contract, camera_shape=(height, width)))

    def _calibration(self):
        """The arm's LeRobot calibration: range and gripper units depend on it."""
        motors = {n: i for i, n in enumerate(self.contract.joints, start=1)}
        if not (self.robot_id or self.calibration_file):
            self.get_logger().info("no robot_id/calibration_file: the built-in example calibration (sim)")
            return parse_calibration(EXAMPLE_CALIBRATION, motors)
        return load_calibration(resolve_calibration_path(self.robot_id, self.calibration_file), motors)

    # -- inputs ---------------------------------------------------------------------------------------
    def _on_image(self, key: str, msg) -> None:
        with self._lock:
            self._images[key] = Stamped(stamp_ns(msg.header.stamp), msg)  # decoded only when used

    def _on_joint_state(self, msg) -> None:
        with self._lock:
            self._joint_state = Stamped(stamp_ns(msg.header.stamp), joint_state_positions(msg))

    def _on_task_topic(self, msg) -> None:
        result = self.set_parameters([Parameter("task", value=msg.data)])[0]
        if not result.successful:
            self.get_logger().warn(f"task from ~/task refused: {result.reason}")

    def _check_parameter(self, name: str, value):
        if name == "task":
            return check_task(value)
        if name == "rtc_schedule" and value not in RTC_SCHEDULES:
            raise ValueError(f"must be one of {list(RTC_SCHEDULES)}")
        return value

    def _apply_parameter(self, name: str, value) -> None:
        if name == "task":
            self.task = value  # the worker reads it for the next observation
        elif name == "max_observation_age":
            self.max_age = value
        elif name == "rtc":  # the worker applies RTC settings before its next chunk
            self.rtc_on, self._rtc_forget = value, True
        elif name == "rtc_execution_horizon":
            self.rtc_horizon = value
        elif name == "rtc_max_guidance_weight":
            self.rtc_weight = value
        elif name == "rtc_schedule":
            self.rtc_schedule = value

    def _on_request(self, msg) -> None:
        # "queue_empty" asked after our last chunk was out: nothing of it executes (ran dry, a restarted
        # aggregator); one stamped before could predate the chunk's arrival.
        if msg.frame_id == "queue_empty" and stamp_ns(msg.stamp) > self._last_publish_ns:
            self._rtc_forget = True
        if self.running and not self._busy:
            self._wake.set()

    def _on_start(self, _request, response):
        if not self.task:
            response.success, response.message = False, "no task set: set the `task` parameter first"
            return response
        self.running = True
        self._wake.set()
        response.success, response.message = True, f"running: {self.task!r}"
        return response

    def _on_stop(self, _request, response):
        self.running = False
        self._rtc_forget = True
        cancel = trajectory_msgs.msg.JointTrajectory()
        cancel.header.stamp = self.get_clock().now().to_msg()
        cancel.joint_names = list(self.contract.joints)
        self.chunk_pub.publish(cancel)  # empty: the aggregator drops its plan and holds
        response.success, response.message = True, "stopped: no new chunks, the arm holds"
        self.get_logger().info(response.message)
        return response

    # -- inference (worker thread) --------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            if not self._wake.wait(timeout=0.2):
                continue
            self._wake.clear()
            if not self.running or self._stop.is_set():
                continue
            self._busy = True
            try:
                self._infer_once()
            except Exception as exc:  # noqa: BLE001 - a failed chunk must not end the worker
                self._refuse(f"inference failed: {type(exc).__name__}: {exc}")
            finally:
                self._busy = False

    def _infer_once(self) -> None:
        start = time.monotonic()
        now = self.get_clock().now().nanoseconds
        with self._lock:
            images, joint_state, task = dict(self._images), self._joint_state, self.task
        try:
            decoded = {k: None if v is None else Stamped(v.stamp_ns, image_to_rgb(v.value)) for k, v in images.items()}
            obs = build_observation(self.contract, self.units, decoded, joint_state, task, now,
                                    int(self.max_age * 1e9), image_shapes=self.runner.image_shapes)
        except (ObservationRefused, ValueError) as exc:
            self._refuse(str(exc))
            return
        rtc = self._rtc_inputs(obs.stamp_ns, now)
        t0 = time.monotonic()
        actions = self.runner.infer(obs.values, **rtc)
        self.latency.add(time.monotonic() - t0)
        self.last_obs_age = (now - obs.stamp_ns) * 1e-9
        if not self.running:  # stopped while we computed: publish nothing
            return
        self.chunk_pub.publish(self._trajectory(obs.stamp_ns, self.units.dataset_to_ros(actions), self.rtc_on))
        self.chunks += 1
        self._last_publish_ns = self.get_clock().now().nanoseconds
        if self.rtc_on:
            self.rtc.record(obs.stamp_ns, self.runner.last_normalized, time.monotonic() - start, self._last_publish_ns)

    def _rtc_inputs(self, stamp: int, now: int) -> dict:
        """Apply changed RTC settings, and the previous chunk's leftover and the delay for this observation."""
        settings = (self.rtc_on, self.rtc_horizon, self.rtc_weight, self.rtc_schedule)
        if settings != self._rtc_applied:
            self.runner.configure_rtc(*settings)
            self._rtc_applied = settings
        if self._rtc_forget:
            self._rtc_forget = False
            self.rtc.forget()
        if not self.rtc_on:
            return {}
        inputs = self.rtc.prepare(stamp, now, self.rtc_horizon)
        self.rtc_delay = inputs.inference_delay
        if inputs.leftover is None:
            return {}
        self.rtc_guided += 1
        return {"prev_chunk_left_over": inputs.leftover, "inference_delay": inputs.inference_delay,
                "execution_horizon": inputs.execution_horizon}

    def _trajectory(self, stamp: int, radians, rtc: bool = False) -> trajectory_msgs.msg.JointTrajectory:
        msg = trajectory_msgs.msg.JointTrajectory()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        msg.header.frame_id = RTC_FRAME_ID if rtc else ""
        msg.joint_names = list(self.contract.joints)
        period_ns = int(round(1e9 / self.contract.fps))
        for i, row in enumerate(radians):
            point = trajectory_msgs.msg.JointTrajectoryPoint()
            point.positions = [float(x) for x in row]
            point.time_from_start.sec, point.time_from_start.nanosec = divmod(i * period_ns, 1_000_000_000)
            msg.points.append(point)
        return msg

    def _refuse(self, reason: str) -> None:
        self.refusals += 1
        self.last_refusal = reason
        self.get_logger().warn(f"no chunk: {reason}", throttle_duration_sec=2.0)

    def _on_diagnostics(self) -> None:
        stalled = self.refusals != self._reported[1] and self.chunks == self._reported[0]
        self._reported = (self.chunks, self.refusals)
        if not self.running:
            level, message = diag.OK, "stopped (~/start to resume)"
        elif stalled:  # refused since the last report and published nothing: the loop is not running
            level, message = diag.WARN, f"not inferring: {self.last_refusal}"
        else:
            level, message = diag.OK, "running"
        values = {
            "task": self.task or "(none)",
            "running": self.running,
            "device": str(self.runner.device) if self.runner else "",
            "chunks_published": self.chunks,
            "refusals": self.refusals,
            "last_refusal": self.last_refusal or "none",
            "latency_p50_ms": f"{self.latency.percentile(50) * 1e3:.1f}",
            "latency_p95_ms": f"{self.latency.percentile(95) * 1e3:.1f}",
            "observation_age_ms": f"{self.last_obs_age * 1e3:.1f}",
            "rtc": self.rtc_on,
        }
        if self.rtc_on:
            values.update({"rtc_guided_chunks": self.rtc_guided, "rtc_inference_delay": self.rtc_delay,
                           "rtc_latency_estimate_ms": f"{self.rtc.latency.estimate() * 1e3:.1f}"})
        status = diag.Status(f"{self.get_name()}: policy", level, message, str(self.checkpoint),
                             {k: str(v) for k, v in values.items()})
        self.diag_pub.publish(diag.to_diagnostic_array([status], self.get_clock().now().to_msg(), diagnostic_msgs.msg))

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._worker is not None:
            self._worker.join(timeout=5.0)


def main(args: list[str] | None = None) -> int:
    return run_node(PolicyNode, (StartupError, CalibrationError), args)


if __name__ == "__main__":
    sys.exit(main())
