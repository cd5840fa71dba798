"""Helpers for the so101_bridge tests (imported absolutely; setup.cfg puts test/ on the path): the
listener side of the arm, the standalone simulator's command channel, servo registers read directly."""
from __future__ import annotations

import select
import subprocess

import scservo_sdk as scs

from gemma3nvla_ros.hardware.calibration import EXAMPLE_CALIBRATION
from helpers_ros import REPO, spin_until

BRIDGE = "gemma3nvla_ros.nodes.so101_bridge"
NAMES = list(EXAMPLE_CALIBRATION)
EXAMPLE_FILE = str(REPO / "config" / "calibration" / "so101_follower_example.json")


class Arm:
    """Listener side: latest joint state by name, diagnostics, a command publisher."""

    def __init__(self, node):
        import diagnostic_msgs.msg
        import sensor_msgs.msg
        from rclpy.qos import QoSProfile

        self.node, self.states, self.diags = node, [], []
        self._msg = sensor_msgs.msg.JointState
        node.create_subscription(sensor_msgs.msg.JointState, "joint_states", self.states.append, QoSProfile(depth=50))
        node.create_subscription(diagnostic_msgs.msg.DiagnosticArray, "/diagnostics", self.diags.append, QoSProfile(depth=50))
        self.pub = node.create_publisher(sensor_msgs.msg.JointState, "joint_commands", QoSProfile(depth=10))

    def positions(self) -> dict[str, float]:
        last = self.states[-1]
        return dict(zip(last.name, last.position))

    def command(self, names, positions, age_s: float | None = None):
        """Publish a command; ``age_s`` stamps it that many seconds in the past (None: unstamped)."""
        msg = self._msg()
        msg.name = list(names)
        msg.position = [float(p) for p in positions]
        if age_s is not None:
            stamp_ns = self.node.get_clock().now().nanoseconds - int(age_s * 1e9)
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        self.pub.publish(msg)

    def bus_status(self):
        """The latest servo-bus DiagnosticStatus (level, message, values), or None."""
        return latest_bus_status(self.diags)

    def bus_value(self, key: str) -> str | None:
        for array in reversed(self.diags):
            for status in array.status:
                if status.name.endswith("servo bus"):
                    return {kv.key: kv.value for kv in status.values}.get(key)
        return None

    def motor_status(self, name: str):
        for array in reversed(self.diags):
            for status in array.status:
                if f"motor {name} " in status.name:
                    return status
        return None

    def motor_level(self, name: str) -> int | None:
        status = self.motor_status(name)
        return None if status is None else status.level[0]

    def motor_value(self, name: str, key: str) -> str | None:
        status = self.motor_status(name)
        return None if status is None else {kv.key: kv.value for kv in status.values}.get(key)

    def max_excursion(self, since: int, reference: dict[str, float]) -> dict[str, float]:
        """Largest distance from ``reference`` per joint over the states received from index ``since``."""
        return {
            n: max(abs(dict(zip(s.name, s.position))[n] - v) for s in self.states[since:])
            for n, v in reference.items()
        }


def wait_states(ros, arm, proc):
    ok = spin_until(ros, arm.node, lambda: len(arm.states) >= 5, 30.0)
    assert ok, f"no joint_states from the bridge:\n{proc.output}"


def sim_command(proc: subprocess.Popen, line: str) -> None:
    """A servo command to a standalone simulator (sim_bus.apply_command), applied once acknowledged."""
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    assert select.select([proc.stdout], [], [], 10.0)[0], f"simulator did not acknowledge {line!r}"
    assert proc.stdout.readline().strip() == f"ok {line}"


def registers(port: str, address: int, size: int = 2) -> list[int]:
    ph = scs.PortHandler(port)
    assert ph.openPort()
    pk = scs.PacketHandler(0)
    read = pk.read2ByteTxRx if size == 2 else pk.read1ByteTxRx
    values = [read(ph, i, address)[0] for i in range(1, 7)]
    ph.closePort()
    return values


def torque(port: str) -> list[int]:
    return registers(port, 40, size=1)


def call_enable(ros, node, timeout: float = 10.0):
    import std_srvs.srv

    client = node.create_client(std_srvs.srv.Trigger, "/so101_bridge/enable")
    assert client.wait_for_service(timeout_sec=timeout)
    future = client.call_async(std_srvs.srv.Trigger.Request())
    assert spin_until(ros, node, future.done, timeout)
    node.destroy_client(client)
    return future.result()


def latest_bus_status(diags):
    """The newest DiagnosticStatus named "... servo bus" in a list of DiagnosticArray messages, or None."""
    for array in reversed(diags):
        for status in array.status:
            if status.name.endswith("servo bus"):
                return status
    return None
