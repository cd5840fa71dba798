"""DDS runtime benchmark: two 1280x720 rgb8 Image streams at 30 Hz between two processes, and a
JointState ping-pong at 100 Hz between two processes. Prints a table.

    python benchmarks/bench_dds.py [--duration 60] [--rtt-duration 20] [--reliable] [--domain 190]

Every process runs the node API of the built-in runtime (``gemma3nvla_ros.ros``) on the loopback
Cyclone configuration (config/cyclonedds_loopback.xml) unless CYCLONEDDS_URI is already set.
Latency = receive time - header.stamp (same host clock). CPU% is per process over the measured run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


# --- roles (run in their own processes) ---------------------------------------------------------------

def role_image_pub(args) -> None:
    import numpy as np

    from gemma3nvla_ros.ros import Node, QoSProfile, qos_profile_sensor_data, rclpy, sensor_msgs
    rclpy.init(args=[])
    node = Node("bench_camera")
    qos = QoSProfile(depth=5) if args.reliable else qos_profile_sensor_data
    frame = np.random.default_rng(0).integers(0, 255, 720 * 1280 * 3, dtype=np.uint8).tobytes()
    pubs = [node.create_publisher(sensor_msgs.msg.Image, f"/bench/cam{i}/image_raw", qos) for i in range(2)]
    seq = [0, 0]
    deadline = [None]

    def make_tick(i):
        def tick():
            if deadline[0] is None:
                deadline[0] = time.monotonic() + args.duration + args.warmup
            if time.monotonic() > deadline[0]:
                return
            img = sensor_msgs.msg.Image(height=720, width=1280, encoding="rgb8", step=3840, data=frame)
            img.header.frame_id = str(seq[i])
            seq[i] += 1
            img.header.stamp = node.get_clock().now().to_msg()
            pubs[i].publish(img)
        return tick

    # wait for the subscriber so the first frames are not published into the void
    while min(p.get_subscription_count() for p in pubs) < 1:
        time.sleep(0.05)
    print("READY", flush=True)
    for i in range(2):
        node.create_timer(1 / 30, make_tick(i))
    try:
        while rclpy.ok() and (deadline[0] is None or time.monotonic() < deadline[0] + 2.0):
            rclpy.spin_once(node, timeout_sec=0.1)
    except KeyboardInterrupt:
        pass
    print("SENT " + json.dumps(seq), flush=True)


def role_image_sub(args) -> None:
    from gemma3nvla_ros.ros import Node, QoSProfile, qos_profile_sensor_data, rclpy, sensor_msgs
    rclpy.init(args=[])
    node = Node("bench_viewer")
    qos = QoSProfile(depth=5) if args.reliable else qos_profile_sensor_data
    lat: list[list[float]] = [[], []]
    seqs: list[set] = [set(), set()]
    t_first = [None]

    def make_cb(i):
        def cb(msg):
            now = time.time_ns()
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            if t_first[0] is None:
                t_first[0] = time.monotonic()
            seqs[i].add(int(msg.header.frame_id))
            lat[i].append((now - stamp) / 1e6)
        return cb

    for i in range(2):
        node.create_subscription(sensor_msgs.msg.Image, f"/bench/cam{i}/image_raw", make_cb(i), qos)
    print("READY", flush=True)
    end = None
    while rclpy.ok():
        rclpy.spin_once(node, timeout_sec=0.1)
        if t_first[0] is not None and end is None:
            end = t_first[0] + args.duration + args.warmup + 3.0
        if end is not None and time.monotonic() > end:
            break
    print("RESULT " + json.dumps({"lat": lat, "seqs": [sorted(s) for s in seqs]}), flush=True)


def role_echo(args) -> None:
    from gemma3nvla_ros.ros import Node, rclpy, sensor_msgs
    rclpy.init(args=[])
    node = Node("bench_echo")
    pub = node.create_publisher(sensor_msgs.msg.JointState, "/bench/pong", 10)
    node.create_subscription(sensor_msgs.msg.JointState, "/bench/ping", pub.publish, 10)
    print("READY", flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, Exception):
        pass


def role_ping(args) -> None:
    from gemma3nvla_ros.ros import Node, rclpy, sensor_msgs
    rclpy.init(args=[])
    node = Node("bench_ping")
    pub = node.create_publisher(sensor_msgs.msg.JointState, "/bench/ping", 10)
    rtt: list[float] = []
    sent = [0]
    names = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]

    def on_pong(msg):
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        rtt.append((time.time_ns() - stamp) / 1e6)

    node.create_subscription(sensor_msgs.msg.JointState, "/bench/pong", on_pong, 10)
    while pub.get_subscription_count() < 1 or len(node.subscriptions[0].reader.matched_publications()) < 1:
        time.sleep(0.05)
    time.sleep(0.5)  # let the echo's writer match our reader too (discovery is not symmetric in time)
    print("READY", flush=True)

    def tick():
        m = sensor_msgs.msg.JointState(name=names, position=[0.1 * i for i in range(6)],
                                       velocity=[0.0] * 6, effort=[0.0] * 6)
        m.header.stamp = node.get_clock().now().to_msg()
        pub.publish(m)
        sent[0] += 1

    timer = node.create_timer(0.01, tick)
    end = time.monotonic() + args.rtt_duration
    while rclpy.ok() and time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.1)
    timer.cancel()  # stop pinging before the drain, or the last pings could never be answered in time
    t_drain = time.monotonic() + 0.5
    while time.monotonic() < t_drain:
        rclpy.spin_once(node, timeout_sec=0.05)
    print("RESULT " + json.dumps({"rtt": rtt, "sent": sent[0]}), flush=True)


ROLES = {"image_pub": role_image_pub, "image_sub": role_image_sub, "echo": role_echo, "ping": role_ping}


# --- orchestration ------------------------------------------------------------------------------------

def _spawn(role: str, args, env) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--role", role, "--duration", str(args.duration), "--warmup", str(args.warmup),
           "--rtt-duration", str(args.rtt_duration)] + (["--reliable"] if args.reliable else [])
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=str(REPO))


def _wait_line(p: subprocess.Popen, prefix: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            if p.poll() is not None:
                break
            continue
        if line.startswith(prefix):
            return line[len(prefix):].strip()
    raise RuntimeError(f"{prefix} not received from pid {p.pid}")


class _Cpu:
    """CPU% of a set of processes between start() and stop() (psutil, like `top`; 100% = one core)."""

    def __init__(self, procs):
        import psutil
        self._ps = {name: psutil.Process(p.pid) for name, p in procs.items()}

    def start(self):
        self._t0 = time.monotonic()
        self._c0 = {n: sum(p.cpu_times()[:2]) for n, p in self._ps.items()}

    def stop(self) -> dict[str, float]:
        dt = time.monotonic() - self._t0
        return {n: 100.0 * (sum(p.cpu_times()[:2]) - self._c0[n]) / dt for n, p in self._ps.items()}


def run(args) -> None:
    env = dict(os.environ)
    env.setdefault("CYCLONEDDS_URI", f"file://{REPO / 'config' / 'cyclonedds_loopback.xml'}")
    env["ROS_DOMAIN_ID"] = str(args.domain)
    env["GEMMA3NVLA_ROS_RUNTIME"] = "dds"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    rows = []

    # 1) images
    sub = _spawn("image_sub", args, env)
    _wait_line(sub, "READY", 30)
    pub = _spawn("image_pub", args, env)
    _wait_line(pub, "READY", 30)
    cpu = _Cpu({"image publisher": pub, "image subscriber": sub})
    time.sleep(args.warmup)
    cpu.start()
    sent = json.loads(_wait_line(pub, "SENT ", args.duration + args.warmup + 60))
    cpu_img = cpu.stop()
    res = json.loads(_wait_line(sub, "RESULT ", 60))
    pub.wait(10)
    sub.wait(10)
    for i in range(2):
        got = set(res["seqs"][i])
        lost = sum(1 for s in range(sent[i]) if s not in got)
        lat = res["lat"][i]
        rows.append((f"image stream {i} (720p rgb8 @30Hz)", f"{len(got)}/{sent[i]}", str(lost),
                     f"{_pct(lat, 50):.2f}", f"{_pct(lat, 90):.2f}", f"{_pct(lat, 99):.2f}"))

    # 2) JointState round trip
    echo = _spawn("echo", args, env)
    _wait_line(echo, "READY", 30)
    ping = _spawn("ping", args, env)
    _wait_line(ping, "READY", 30)
    cpu = _Cpu({"JointState ping": ping, "JointState echo": echo})
    cpu.start()
    r = json.loads(_wait_line(ping, "RESULT ", args.rtt_duration + 60))
    cpu_js = cpu.stop()
    echo.terminate()
    echo.wait(10)
    ping.wait(10)
    rtt = r["rtt"]
    rows.append(("JointState RTT @100Hz", f"{len(rtt)}/{r['sent']}", str(r["sent"] - len(rtt)),
                 f"{_pct(rtt, 50):.2f}", f"{_pct(rtt, 90):.2f}", f"{_pct(rtt, 99):.2f}"))

    head = ("test", "received", "lost", "p50 ms", "p90 ms", "p99 ms")
    widths = [max(len(str(x[i])) for x in rows + [head]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    print(f"\nDDS runtime benchmark ({args.duration:.0f} s images, {args.rtt_duration:.0f} s JointState, "
          f"{'RELIABLE' if args.reliable else 'sensor-data QoS (best effort)'} images, domain {args.domain})")
    print(fmt.format(*head))
    print(fmt.format(*("-" * w for w in widths)))
    for row in rows:
        print(fmt.format(*row))
    print("\nCPU per process (100% = one core)")
    for name, v in {**cpu_img, **cpu_js}.items():
        print(f"  {name:<18} {v:6.1f}%")
    print(f"  machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=60.0, help="image test duration in seconds")
    ap.add_argument("--rtt-duration", type=float, default=20.0, help="JointState round-trip test duration")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds excluded from the CPU measurement")
    ap.add_argument("--reliable", action="store_true", help="images with RELIABLE QoS instead of sensor data QoS")
    ap.add_argument("--domain", type=int, default=190)
    ap.add_argument("--role", choices=sorted(ROLES), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role:
        ROLES[args.role](args)
    else:
        run(args)


if __name__ == "__main__":
    main()
