"""so101_bridge safety as a user relies on it: shutdown that completes whatever signals arrive, no
unsupervised arm when the parent dies, parameters that are applied or refused (never ignored), a
hardware loop that does not depend on the ROS clock, and a gripper that keeps its grip."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import rosgraph_msgs.msg
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter

from gemma3nvla_ros.control import units
from gemma3nvla_ros.hardware.calibration import EXAMPLE_CALIBRATION
from helpers_bridge import BRIDGE, EXAMPLE_FILE, NAMES, registers, sim_command, torque, wait_states
from helpers_ros import REPO, spin_for, spin_until


def _set_parameters(ros, node, **values) -> list:
    """`ros2 param set` as the CLI does it: a SetParameters call to the node's parameter service."""
    client = node.create_client(SetParameters, "/so101_bridge/set_parameters")
    assert client.wait_for_service(timeout_sec=10.0)
    request = SetParameters.Request()
    request.parameters = [ParameterMsg(name=k, value=Parameter(k, value=v).get_parameter_value()) for k, v in values.items()]
    future = client.call_async(request)
    assert spin_until(ros, node, future.done, 10.0)
    node.destroy_client(client)
    return future.result().results


def _bridge_on(standalone_sim, start_node, *params: str):
    port = standalone_sim()
    args = ["-p", f"port:={port}", "-p", f"calibration_file:={EXAMPLE_FILE}"]
    for p in params:
        args += ["-p", p]
    return port, start_node(BRIDGE, *args, name="bridge")


def test_repeated_signals_never_interrupt_torque_off(ros, arm, start_node, standalone_sim):
    """`ros2 launch` delivers Ctrl-C twice (terminal group + its own forward), then escalates to
    SIGTERM: the torque-off must still complete, with a clean exit and no traceback."""
    port, proc = _bridge_on(standalone_sim, start_node)
    wait_states(ros, arm, proc)
    for sig in (signal.SIGINT, signal.SIGINT, signal.SIGTERM, signal.SIGINT):
        proc.proc.send_signal(sig)
        time.sleep(0.002)
    assert proc.wait_exit(timeout=15) == 0, proc.output
    assert torque(port) == [0] * 6, proc.output
    assert "Traceback" not in proc.output and "KeyboardInterrupt" not in proc.output
    assert "torque disabled" in proc.output
    assert "context is invalid" not in proc.output  # logged before ROS shut down


def test_bridge_stops_when_its_parent_is_killed(standalone_sim, tmp_path):
    """A launcher killed with SIGKILL (or a crashed terminal) must not leave the arm torqued and
    obeying commands with nobody supervising it."""
    port = standalone_sim()
    log = tmp_path / "bridge.log"
    parent_code = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-m', '{BRIDGE}', '--ros-args', '-p', 'port:={port}',"
        f" '-p', 'calibration_file:={EXAMPLE_FILE}'], stdout=open({str(log)!r}, 'w'), stderr=subprocess.STDOUT)\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True, cwd=REPO)
    bridge_pid = int(parent.stdout.readline())
    deadline = time.monotonic() + 30
    while "torque on" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "torque on" in log.read_text(), log.read_text()
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 15
    while _alive(bridge_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(bridge_pid), log.read_text()
    assert torque(port) == [0] * 6, log.read_text()
    assert "is gone" in log.read_text()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def test_run_time_parameter_changes_are_applied_or_refused(ros, arm, start_node, standalone_sim):
    port, proc = _bridge_on(standalone_sim, start_node)
    wait_states(ros, arm, proc)
    refused = _set_parameters(ros, arm.node, max_relative_target="not_a_number")
    assert not refused[0].successful and "max_relative_target" in refused[0].reason
    refused = _set_parameters(ros, arm.node, max_relative_target=[0.1, 0.2])
    assert not refused[0].successful and "1 or 6 values" in refused[0].reason
    refused = _set_parameters(ros, arm.node, on_shutdown="explode")
    assert not refused[0].successful and "disable_torque" in refused[0].reason
    refused = _set_parameters(ros, arm.node, hold_goal_joints=["gripper", "elbow"])
    assert not refused[0].successful and "unknown joint names ['elbow']" in refused[0].reason
    refused = _set_parameters(ros, arm.node, port="/dev/ttyUSB0")
    assert not refused[0].successful and "read-only" in refused[0].reason.lower()
    refused = _set_parameters(ros, arm.node, command_timeout=0.0)
    assert not refused[0].successful
    # Accepted means applied: on_shutdown=hold set at run time keeps torque on at Ctrl-C.
    assert _set_parameters(ros, arm.node, on_shutdown="hold")[0].successful
    assert proc.stop() == 0, proc.output
    assert torque(port) == [1] * 6, proc.output


def test_max_relative_target_changed_at_run_time_limits_the_next_step(ros, arm, start_node):
    proc = start_node(BRIDGE, "-p", "mode:=sim", "-p", "max_relative_target:=0.0", name="bridge")
    wait_states(ros, arm, proc)
    assert _set_parameters(ros, arm.node, max_relative_target=0.002)[0].successful
    start = len(arm.states)
    spin_for(ros, arm.node, 0.5, each=lambda: arm.command(["elbow_flex"], [1.0]))
    moved = abs(arm.positions()["elbow_flex"])
    # 0.5 s at 100 Hz with 0.002 rad per cycle: at most ~0.1 rad (a clamp of 0 would have let it fly)
    assert 0.0 < moved < 0.15, (moved, len(arm.states) - start, proc.output)


def test_hardware_loop_runs_without_a_ros_clock(ros, arm, start_node):
    """use_sim_time with no /clock: ROS time stands at 0, yet the arm follows commands and the
    watchdog still latches (both run on the steady clock)."""
    proc = start_node(BRIDGE, "-p", "mode:=sim", "-p", "use_sim_time:=true", name="bridge")
    wait_states(ros, arm, proc)
    assert arm.states[-1].header.stamp.sec == 0  # stamps are ROS time: none yet
    reached = spin_until(ros, arm.node, lambda: (arm.command(["elbow_flex"], [0.3]) or True)
                         and abs(arm.positions()["elbow_flex"] - 0.3) < 0.01, 20.0)
    assert reached, proc.output
    assert spin_until(ros, arm.node, lambda: arm.bus_value("watchdog") == "holding", 10.0), proc.output


def test_a_malformed_clock_sample_is_logged_not_fatal(ros, arm, start_node, standalone_sim):
    port, proc = _bridge_on(standalone_sim, start_node, "use_sim_time:=true")
    clock_pub = arm.node.create_publisher(rosgraph_msgs.msg.Clock, "/clock", 10)
    wait_states(ros, arm, proc)
    bad = rosgraph_msgs.msg.Clock()
    bad.clock.sec = -5
    spin_for(ros, arm.node, 1.0, each=lambda: clock_pub.publish(bad))
    assert spin_until(ros, arm.node, lambda: "a callback raised" in proc.output, 10.0), proc.output
    n = len(arm.states)
    spin_for(ros, arm.node, 0.5)
    assert len(arm.states) > n and proc.proc.poll() is None  # still running, still publishing
    assert proc.stop() == 0
    assert "torque disabled" in proc.output  # the planned shutdown, only now


def _grasp(ros, arm, standalone_sim, start_node, *params: str):
    """The gripper closes on an object (the simulator's obstacle) and stands short of its goal: its
    position error is the grip."""
    port, proc = _bridge_on(standalone_sim, start_node, *params)
    sim = standalone_sim.procs[-1]
    wait_states(ros, arm, proc)
    gripper = NAMES.index("gripper")
    ranges = units.JointRanges.from_calibration(EXAMPLE_CALIBRATION, NAMES)
    rad = np.zeros(len(NAMES))
    rad[gripper] = 0.2
    sim_command(sim, f"block 6 {units.radians_to_ticks(rad, ranges)[gripper]:.0f}")  # an object at 0.2 rad
    spin_for(ros, arm.node, 1.0, each=lambda: arm.command(["gripper", "elbow_flex"], [0.6, 0.2]))
    squeeze = arm.positions()["gripper"]
    assert abs(squeeze - 0.2) < 0.02, (squeeze, proc.output)  # stopped by the object, short of 0.6
    return port, proc, gripper


def test_gripper_keeps_its_grip_when_the_watchdog_holds(ros, arm, start_node, standalone_sim):
    port, proc, gripper = _grasp(ros, arm, standalone_sim, start_node, "max_relative_target:=0.05")
    assert spin_until(ros, arm.node, lambda: arm.bus_value("watchdog") == "holding", 10.0), proc.output
    assert proc.stop(sig=signal.SIGKILL) is not None  # no shutdown action: see what the watchdog left
    goals, present = registers(port, 42), registers(port, 56)
    assert goals[gripper] - present[gripper] > 20, (goals, present)  # still squeezing the object
    assert all(abs(g - p) <= 1 for i, (g, p) in enumerate(zip(goals, present)) if i != gripper), (goals, present)


def test_gripper_keeps_its_grip_on_shutdown_hold(ros, arm, start_node, standalone_sim):
    port, proc, gripper = _grasp(ros, arm, standalone_sim, start_node, "on_shutdown:=hold")
    assert proc.stop() == 0, proc.output
    goals, present = registers(port, 42), registers(port, 56)
    assert goals[gripper] - present[gripper] > 20, (goals, present)
    assert all(abs(g - p) <= 1 for i, (g, p) in enumerate(zip(goals, present)) if i != gripper), (goals, present)


@pytest.mark.parametrize("bad", ["publish_rate:=0.0", "bus_retries:=-1", "on_shutdown:=explode"])
def test_bad_parameter_values_refuse_to_start(start_node, bad):
    proc = start_node(BRIDGE, "-p", "mode:=sim", "-p", bad, name="bridge")
    assert proc.wait_exit() == 2, proc.output
    assert "Traceback" not in proc.output


def test_an_incompatible_qos_publisher_is_reported_not_silently_ignored(ros, arm, start_node):
    """A best-effort publisher never reaches the bridge's reliable /joint_commands subscription: rclpy
    says so in the bridge's log (and nothing moves)."""
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import JointState

    proc = start_node(BRIDGE, "-p", "mode:=sim", name="bridge")
    wait_states(ros, arm, proc)
    best_effort = arm.node.create_publisher(JointState, "/joint_commands", qos_profile_sensor_data)
    before = arm.positions()
    spin_for(ros, arm.node, 1.0, each=lambda: best_effort.publish(JointState(name=["elbow_flex"], position=[0.5])))
    assert spin_until(ros, arm.node, lambda: "incompatible QoS" in proc.output, 15.0), proc.output
    assert abs(arm.positions()["elbow_flex"] - before["elbow_flex"]) < 0.005


def test_a_node_whose_output_pipe_breaks_stops_instead_of_running_unseen(standalone_sim):
    """The terminal or the process reading the logs is gone: the next log line raises SIGPIPE, and the
    bridge stops through its shutdown action (torque off) rather than driving the arm unseen."""
    port = standalone_sim()
    proc = subprocess.Popen([sys.executable, "-m", BRIDGE, "--ros-args", "-p", f"port:={port}",
                             "-p", f"calibration_file:={EXAMPLE_FILE}", "-p", "diagnostics_rate:=5.0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO)
    seen = b""
    deadline = time.monotonic() + 30
    while b"torque on" not in seen and time.monotonic() < deadline:
        seen += proc.stdout.read1(4096)
    assert b"torque on" in seen, seen
    proc.stdout.close()  # the reader is gone; a healthy bridge logs nothing more by itself
    try:
        assert proc.wait(timeout=20) == 0
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the bridge kept running with nobody reading its output")
    assert torque(port) == [0] * 6


def test_servo_settings_at_start_and_pid_gains_at_run_time(ros, arm, start_node, standalone_sim):
    """Start: the servos get the configured gains and LeRobot 0.6.1's settings (Phase bit 4 cleared on
    servos that had multi-turn feedback on). Run time: new gains are written while the arm holds —
    accepted means on the servos; out of range or a start-up-only setting is refused with the reason."""
    port = standalone_sim("--phase", "0x1C")
    proc = start_node(
        BRIDGE, "-p", f"port:={port}", "-p", f"calibration_file:={EXAMPLE_FILE}", "-p", "position_p_coefficient:=20",
        "-p", "diagnostics_rate:=5.0", name="bridge",
    )
    wait_states(ros, arm, proc)
    assert spin_until(ros, arm.node, lambda: arm.bus_value("position_pid") == "20/0/32", 10.0), proc.output
    reference = arm.positions()

    refused = _set_parameters(ros, arm.node, position_d_coefficient=300)
    assert not refused[0].successful  # rclpy's range check (0..255)
    refused = _set_parameters(ros, arm.node, position_p_coefficient=0)
    assert not refused[0].successful
    refused = _set_parameters(ros, arm.node, acceleration=100)
    assert not refused[0].successful and "read-only" in refused[0].reason.lower()
    sim_command(standalone_sim.procs[-1], "dead 4 1")  # gains cannot reach wrist_flex: refused, undone
    refused = _set_parameters(ros, arm.node, position_p_coefficient=30)
    assert not refused[0].successful and "wrist_flex" in refused[0].reason, refused[0].reason
    assert "previous gains are back on every other servo" in refused[0].reason
    sim_command(standalone_sim.procs[-1], "dead 4 0")
    assert spin_until(ros, arm.node, lambda: arm.bus_status().level[0] == 0, 10.0), arm.bus_status().message
    assert arm.bus_value("position_pid") == "20/0/32"
    since = len(arm.states)
    assert _set_parameters(ros, arm.node, position_p_coefficient=24, position_d_coefficient=20)[0].successful
    assert _set_parameters(ros, arm.node, bus_retries=4)[0].successful
    assert spin_until(
        ros, arm.node, lambda: arm.bus_value("position_pid") == "24/0/20" and arm.bus_value("bus_retries") == "4", 10.0
    ), proc.output
    assert max(arm.max_excursion(since, reference).values()) < 0.005  # held still throughout
    assert arm.bus_value("watchdog") is not None and arm.bus_status().level[0] == 0, arm.bus_status().message
    assert all(arm.motor_value(n, "torque") == "on" for n in NAMES)

    assert _set_parameters(ros, arm.node, on_shutdown="hold")[0].successful
    assert proc.stop() == 0, proc.output
    assert torque(port) == [1] * 6
    assert registers(port, 21, size=1) == [24] * 6  # P_Coefficient
    assert registers(port, 22, size=1) == [20] * 6  # D_Coefficient
    assert registers(port, 18, size=1) == [0x0C] * 6  # Phase: bit 4 cleared, the rest kept
    assert registers(port, 7, size=1) == [0] * 6  # Return_Delay_Time
    assert registers(port, 16)[5] == 500  # the gripper's Max_Torque_Limit
