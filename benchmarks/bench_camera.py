"""camera_node publish rate and CPU at N x 1280x720 @ 30 fps (synthetic source), on real rclpy.

    python benchmarks/bench_camera.py [--cameras 2] [--seconds 10] [--subscribe] [--compressed]

The publish rate is each node's own count (its /diagnostics: frames, late timer ticks); --subscribe
also receives the first camera's images here and reports the delivered rate (this process's CPU then
competes with the nodes on small machines). Prints a table. Every process gets _nodes.ros_env(): loopback
Fast DDS with config/fastdds_loopback.xml, a random ROS_DOMAIN_ID.
"""
from __future__ import annotations

import argparse
import time

import psutil

from _nodes import ros_env, start, stop


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cameras", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--subscribe", action="store_true")
    ap.add_argument("--compressed", action="store_true", help="publish_compressed:=true as well")
    args = ap.parse_args()

    ros_env()
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    names = [f"bench_cam{i}" for i in range(args.cameras)]
    procs = [
        start(
            "gemma3nvla_ros.nodes.camera_node", "-r", f"__node:={n}", "-p", f"width:={args.width}",
            "-p", f"height:={args.height}", "-p", f"fps:={args.fps}",
            "-p", f"publish_compressed:={'true' if args.compressed else 'false'}",
        )
        for n in names
    ]
    rclpy.init(args=[])
    node = rclpy.create_node("bench_camera_listener")
    latest: dict[str, dict[str, str]] = {}

    def on_diag(msg) -> None:
        for s in msg.status:
            for n in names:
                if s.name.endswith(f"camera {n}"):
                    latest[n] = {kv.key: kv.value for kv in s.values}
                    latest[n]["_t"] = str(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, QoSProfile(depth=50))
    received: list[float] = []
    if args.subscribe:
        node.create_subscription(
            Image, f"/cameras/{names[0]}/image_raw",
            lambda m: received.append(m.header.stamp.sec + m.header.stamp.nanosec * 1e-9), qos_profile_sensor_data,
        )
    deadline = time.monotonic() + 60
    while len(latest) < len(names) and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    time.sleep(1.0)  # past start-up
    ps = [psutil.Process(p.pid) for p in procs]
    for p in ps:
        p.cpu_percent(None)
    me = psutil.Process()
    me.cpu_percent(None)
    start_frames = {n: int(latest.get(n, {}).get("frames", 0)) for n in names}
    start_late = {n: int(latest.get(n, {}).get("late_ticks", 0)) for n in names}
    start_t = {n: float(latest.get(n, {}).get("_t", 0)) for n in names}
    t0 = time.monotonic()
    while time.monotonic() - t0 < args.seconds:
        rclpy.spin_once(node, timeout_sec=0.05)
    elapsed = time.monotonic() - t0
    cpu = [p.cpu_percent(None) for p in ps]
    my_cpu = me.cpu_percent(None)
    # One more diagnostics round so the frame counters cover the window.
    t1 = time.monotonic()
    while time.monotonic() - t1 < 1.2:
        rclpy.spin_once(node, timeout_sec=0.05)
    node.destroy_node()
    rclpy.try_shutdown()
    for p in procs:
        stop(p)

    print(f"\ncamera_node x{args.cameras}, synthetic {args.width}x{args.height} @ {args.fps:g} fps rgb8"
          f"{' + JPEG' if args.compressed else ''}, {args.seconds:g} s, {psutil.cpu_count()} CPUs on this machine")
    print("| camera        | published fps | late ticks | node CPU % |")
    print("|---------------|---------------|------------|------------|")
    for n, c in zip(names, cpu):
        frames = int(latest.get(n, {}).get("frames", 0)) - start_frames[n]
        late = int(latest.get(n, {}).get("late_ticks", 0)) - start_late[n]
        window = float(latest.get(n, {}).get("_t", 0)) - start_t[n]  # between two diagnostics stamps
        print(f"| {n:<13} | {frames / window if window > 0 else 0:13.1f} | {late:10d} | {c:10.0f} |")
    if args.subscribe:
        window = [t for t in received if t >= received[-1] - elapsed] if received else []
        rate = (len(window) - 1) / (window[-1] - window[0]) if len(window) > 1 else 0.0
        print(f"\nsubscriber here received {rate:.1f} fps of {names[0]} over the last {elapsed:.0f} s of capture "
              f"stamps (listener CPU {my_cpu:.0f} %)")


if __name__ == "__main__":
    main()
