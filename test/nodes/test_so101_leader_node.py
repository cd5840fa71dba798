"""so101_leader as a real process over DDS: the simulated leader drives joint_commands, a hand on a
standalone simulated leader shows up in radians, torque is never on, a dead bus is on /diagnostics, a
missing calibration refuses to start with the leader's lerobot-calibrate command."""
from __future__ import annotations

import numpy as np
import pytest

from gemma3nvla_ros.control import units
from gemma3nvla_ros.hardware.calibration import EXAMPLE_CALIBRATION

from helpers_bridge import EXAMPLE_FILE, NAMES, latest_bus_status, sim_command, torque
from helpers_ros import spin_for, spin_until

LEADER = "gemma3nvla_ros.nodes.so101_leader"
RANGES = units.JointRanges.from_calibration(EXAMPLE_CALIBRATION, NAMES)


class Commands:
    def __init__(self, node):
        import diagnostic_msgs.msg
        import sensor_msgs.msg
        import std_msgs.msg
        from rclpy.qos import DurabilityPolicy, QoSProfile

        self.node, self.msgs, self.tasks, self.diags = node, [], [], []
        node.create_subscription(sensor_msgs.msg.JointState, "/joint_commands", self.msgs.append, QoSProfile(depth=100))
        node.create_subscription(std_msgs.msg.String, "/so101_leader/task", lambda m: self.tasks.append(m.data),
                                 QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        node.create_subscription(diagnostic_msgs.msg.DiagnosticArray, "/diagnostics", self.diags.append, QoSProfile(depth=50))

    def positions(self) -> dict[str, float]:
        return dict(zip(self.msgs[-1].name, self.msgs[-1].position))

    def bus_status(self):
        return latest_bus_status(self.diags)


def _set(ros, node, **values):
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient

    client = AsyncParameterClient(node, "/so101_leader")
    assert client.wait_for_services(timeout_sec=15.0)
    future = client.set_parameters([Parameter(k, value=v) for k, v in values.items()])
    assert spin_until(ros, node, future.done, 15.0)
    return future.result().results


def test_sim_leader_moves_by_itself_and_publishes_commands(ros, listener, start_node):
    cmds = Commands(listener)
    proc = start_node(LEADER, "-p", "mode:=sim", "-p", "task:=stack the cubes", "-p", "publish_rate:=30.0", name="leader")
    assert spin_until(ros, listener, lambda: len(cmds.msgs) >= 45, 40.0), proc.output
    assert spin_until(ros, listener, lambda: cmds.tasks, 5.0), proc.output
    assert cmds.tasks[-1] == "stack the cubes"
    first, last = cmds.msgs[0], cmds.msgs[-1]
    assert list(first.name) == NAMES and first.header.stamp.sec > 0
    trajectory = np.array([m.position for m in cmds.msgs])
    ticks = units.radians_to_ticks(trajectory, RANGES)
    assert (ticks >= RANGES.range_min - 1).all() and (ticks <= RANGES.range_max + 1).all()
    assert (np.ptp(trajectory, axis=0) > 0.005).all(), "the simulated leader should move every joint"
    stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in cmds.msgs]
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    assert 20.0 < rate < 40.0, rate
    assert last is not first

    # Run-time parameters: enabled stops the commands, task is re-published; read-only ones are refused.
    results = _set(ros, listener, enabled=False, task="open the drawer")
    assert all(r.successful for r in results), results
    assert spin_until(ros, listener, lambda: cmds.tasks[-1] == "open the drawer", 5.0)
    spin_for(ros, listener, 0.3)
    n = len(cmds.msgs)
    spin_for(ros, listener, 0.5)
    assert len(cmds.msgs) == n
    refused = _set(ros, listener, port="/dev/ttyUSB9")
    assert not refused[0].successful and "read-only" in refused[0].reason.lower()
    bad = _set(ros, listener, sim_motion="dance")
    assert not bad[0].successful and "wave" in bad[0].reason
    assert proc.stop() == 0


def test_hand_moved_leader_in_radians_torque_never_on_dead_bus_reported(ros, listener, start_node, standalone_sim):
    port = standalone_sim(calibration=EXAMPLE_FILE)
    sim = standalone_sim.procs[-1]
    cmds = Commands(listener)
    proc = start_node(LEADER, "-p", f"port:={port}", "-p", f"calibration_file:={EXAMPLE_FILE}",
                      "-p", "diagnostics_rate:=5.0", name="leader")
    assert spin_until(ros, listener, lambda: len(cmds.msgs) >= 5, 40.0), proc.output
    np.testing.assert_allclose(list(cmds.positions().values()), 0.0, atol=1e-3)  # at rest mid-range = 0 rad
    sim_command(sim, "move 3 2500")  # a hand moves the elbow (sticks: torque is off)
    sim_command(sim, "move 6 3000")
    expected = units.ticks_to_radians(np.array([2500.0, 3000.0]), units.JointRanges.from_calibration(
        EXAMPLE_CALIBRATION, ["elbow_flex", "gripper"]))
    assert spin_until(ros, listener, lambda: abs(cmds.positions()["elbow_flex"] - expected[0]) < 1e-9, 10.0)
    assert cmds.positions()["gripper"] == pytest.approx(expected[1], abs=1e-9)
    assert spin_until(ros, listener, lambda: (s := cmds.bus_status()) is not None and s.level == b"\x00", 10.0)

    for motor in range(1, 7):  # the data line dies: nothing answers any more
        sim_command(sim, f"dead {motor} 1")
    assert spin_until(ros, listener, lambda: (s := cmds.bus_status()) is not None and s.level != b"\x00", 15.0), proc.output
    status = cmds.bus_status()
    assert "failed" in status.message, status.message
    values = {kv.key: kv.value for kv in status.values}
    assert int(values["failed_after_retries"]) > 0
    spin_for(ros, listener, 0.5)
    n = len(cmds.msgs)
    spin_for(ros, listener, 0.5)
    assert len(cmds.msgs) == n, "no commands from a dead bus"
    assert proc.proc.poll() is None, "a dead bus must not kill the node"
    assert proc.stop() == 0
    for motor in range(1, 7):
        sim_command(sim, f"dead {motor} 0")
    assert torque(port) == [0] * 6


def test_missing_calibration_refuses_with_the_leader_command(start_node, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_LEROBOT_CALIBRATION", str(tmp_path))
    proc = start_node(LEADER, "-p", "port:=/dev/ttyACM7", "-p", "robot_id:=my_leader", name="leader")
    assert proc.wait_exit(60.0) == 2
    out = proc.output
    assert "teleoperators/so_leader/my_leader.json" in out
    assert "lerobot-calibrate --teleop.type=so101_leader --teleop.port=/dev/ttyACM7 --teleop.id=my_leader" in out


def test_every_parameter_has_a_descriptor(ros):
    from gemma3nvla_ros.nodes.so101_leader import So101Leader

    node = So101Leader()
    try:
        names = [n for n in node._parameters if n != "use_sim_time"]
        assert len(names) >= 18
        for desc in node.describe_parameters(names):
            assert desc.description, desc.name
        dynamic = {d.name for d in node.describe_parameters(names) if not d.read_only}
        assert dynamic == {"publish_rate", "enabled", "task", "sim_motion"}
    finally:
        node.destroy_node()
