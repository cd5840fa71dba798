"""ROS 2 middleware benchmark on real rclpy: two 1280x720 rgb8 Image streams at 30 Hz from one process
to another, and a JointState ping-pong at 100 Hz between two processes. Prints a table.

    python benchmarks/bench_dds.py [--duration 60] [--rtt-duration 20] [--runs 3] [--reliable]
                                   [--profile config/fastdds_loopback.xml | --profile none] [--default-malloc]
                                   [--load 2] [--json raw.json]

Every process gets benchmarks/_nodes.py's ros_env(): LOCALHOST discovery, a random ROS_DOMAIN_ID in
150..199 (or --domain), the Fast DDS profile (--profile none: Fast DDS' defaults, as a ROS user has
them) and the glibc malloc thresholds (--default-malloc: glibc's defaults). Other middleware variables in the caller's environment (FASTDDS_BUILTIN_TRANSPORTS,
RMW_FASTRTPS_PUBLICATION_MODE, ...) pass through, so candidates can be compared with one command.

Images use the sensor-data QoS (best effort, keep last 5) as camera_node does; each frame is filled
the way camera_node fills it (one copy of the numpy frame into an ``array('B')``). Latency = receive
time in the subscriber's callback - header.stamp taken just before publish() (one host clock), so it
includes serialization, transport, deserialization into the Python message and executor dispatch.
A frame is lost when its sequence number (header.frame_id) never reaches the callback; "in transport"
counts those Fast DDS never received (the rest arrived but were overwritten in the keep-last-5 history
because the subscriber's Python thread was late, as the sensor-data QoS intends). CPU% is per
process over the measured window (100% = one core). --load N adds N busy-looping processes for the
duration of the run, to see what a loaded machine does to delivery.
"""
from __future__ import annotations

import argparse
import array
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _nodes import FASTDDS_PROFILE, REPO, ros_env  # noqa: E402

MIDDLEWARE_VARS = ("RMW_IMPLEMENTATION", "ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTRTPS_DEFAULT_PROFILES_FILE",
                   "RMW_FASTRTPS_USE_QOS_FROM_XML", "RMW_FASTRTPS_PUBLICATION_MODE", "FASTDDS_BUILTIN_TRANSPORTS",
                   "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
WIDTH, HEIGHT = 1280, 720


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def _stdin_flag(word: str) -> threading.Event:
    """An event set when the orchestrator writes ``word`` on our stdin (the roles spin meanwhile)."""
    ev = threading.Event()

    def read():
        for line in sys.stdin:
            if line.strip() == word:
                ev.set()
                return
        ev.set()  # orchestrator gone: stop too

    threading.Thread(target=read, daemon=True).start()
    return ev


# --- roles (each runs in its own process) --------------------------------------------------------------

def role_image_pub(args) -> None:
    import numpy as np
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    rclpy.init(args=[])
    node = rclpy.create_node("bench_camera")
    qos = QoSProfile(depth=5) if args.reliable else qos_profile_sensor_data
    frame = np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    pubs = [node.create_publisher(Image, f"/bench/cam{i}/image_raw", qos) for i in range(2)]
    seq = [0, 0]
    fill_ms: list[float] = []
    publish_ms: list[float] = []
    deadline = [0.0]

    def make_tick(i):
        def tick():
            if time.monotonic() > deadline[0]:
                return
            t0 = time.perf_counter()
            img = Image(height=HEIGHT, width=WIDTH, encoding="rgb8", step=WIDTH * 3)
            # camera_node's fill: one copy into array('B'); a numpy array or bytes assigned to
            # Image.data would be walked element by element by the generated setter instead.
            data = array.array("B")
            data.frombytes(frame.reshape(-1))
            img.data = data
            img.header.frame_id = str(seq[i])
            img.header.stamp = node.get_clock().now().to_msg()
            t1 = time.perf_counter()
            pubs[i].publish(img)
            t2 = time.perf_counter()
            seq[i] += 1
            fill_ms.append((t1 - t0) * 1e3)
            publish_ms.append((t2 - t1) * 1e3)
        return tick

    # Not a frame into the void: wait until both subscriptions are matched.
    while min(p.get_subscription_count() for p in pubs) < 1:
        time.sleep(0.05)
    go = _stdin_flag("GO")
    print("READY", flush=True)
    go.wait()
    deadline[0] = time.monotonic() + args.warmup + args.duration
    for i in range(2):
        node.create_timer(1 / 30, make_tick(i))
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    while time.monotonic() < deadline[0] + 0.1:
        executor.spin_once(timeout_sec=0.05)
    print("SENT " + json.dumps({"sent": seq, "fill_ms": fill_ms, "publish_ms": publish_ms}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


def role_image_sub(args) -> None:
    import rclpy
    from rclpy.event_handler import SubscriptionEventCallbacks
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    rclpy.init(args=[])
    node = rclpy.create_node("bench_viewer")
    qos = QoSProfile(depth=5) if args.reliable else qos_profile_sensor_data
    lat: list[list[float]] = [[], []]
    seqs: list[list[int]] = [[], []]
    sizes_ok = [True]

    def make_cb(i):
        def cb(msg):
            now = time.time_ns()
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            seqs[i].append(int(msg.header.frame_id))
            lat[i].append((now - stamp) / 1e6)
            if len(msg.data) != HEIGHT * WIDTH * 3:
                sizes_ok[0] = False
        return cb

    # Fast DDS reports a sample it never received (a missing sequence number: the transport lost it)
    # as "message lost"; a frame that arrived but was pushed out of the keep-last-5 history before
    # the callback took it is not reported, so the two causes of a lost frame can be told apart.
    transport_lost = [0, 0]

    def make_lost_cb(i):
        def on_lost(info):
            transport_lost[i] = info.total_count
        return on_lost

    subs = [node.create_subscription(Image, f"/bench/cam{i}/image_raw", make_cb(i), qos,
                                     event_callbacks=SubscriptionEventCallbacks(message_lost=make_lost_cb(i)))
            for i in range(2)]
    stop = _stdin_flag("STOP")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    print("READY", flush=True)
    matched = False
    while not stop.is_set():
        executor.spin_once(timeout_sec=0.05)
        if not matched and min(s.get_publisher_count() for s in subs) >= 1:
            matched = True
            print("MATCHED", flush=True)
    print("RESULT " + json.dumps({"lat": lat, "seqs": seqs, "sizes_ok": sizes_ok[0], "transport_lost": transport_lost}),
          flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


def role_echo(args) -> None:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import JointState

    rclpy.init(args=[])
    node = rclpy.create_node("bench_echo")
    pub = node.create_publisher(JointState, "/bench/pong", 10)
    node.create_subscription(JointState, "/bench/ping", pub.publish, 10)
    stop = _stdin_flag("STOP")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    print("READY", flush=True)
    while not stop.is_set():
        executor.spin_once(timeout_sec=0.05)
    node.destroy_node()
    rclpy.try_shutdown()


def role_ping(args) -> None:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import JointState

    rclpy.init(args=[])
    node = rclpy.create_node("bench_ping")
    pub = node.create_publisher(JointState, "/bench/ping", 10)
    rtt: list[float] = []
    sent = [0]
    names = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]

    def on_pong(msg):
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        rtt.append((time.time_ns() - stamp) / 1e6)

    sub = node.create_subscription(JointState, "/bench/pong", on_pong, 10)
    while pub.get_subscription_count() < 1 or sub.get_publisher_count() < 1:
        time.sleep(0.05)
    time.sleep(0.5)  # the echo's own reader/writer pair matches on its side a little later
    print("READY", flush=True)

    def tick():
        m = JointState(name=names, position=[0.1 * i for i in range(6)], velocity=[0.0] * 6, effort=[0.0] * 6)
        m.header.stamp = node.get_clock().now().to_msg()
        pub.publish(m)
        sent[0] += 1

    executor = SingleThreadedExecutor()
    executor.add_node(node)
    timer = node.create_timer(0.01, tick)
    end = time.monotonic() + args.rtt_duration
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)
    timer.cancel()  # stop pinging before the drain, or the last pings could never be answered in time
    t_drain = time.monotonic() + 0.5
    while time.monotonic() < t_drain:
        executor.spin_once(timeout_sec=0.05)
    print("RESULT " + json.dumps({"rtt": rtt, "sent": sent[0]}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


def role_burn(args) -> None:
    """CPU load for --load: a busy loop that ends by itself."""
    end = time.monotonic() + args.duration
    x = 0
    while time.monotonic() < end:
        for _ in range(10_000):
            x += 1


ROLES = {"image_pub": role_image_pub, "image_sub": role_image_sub, "echo": role_echo, "ping": role_ping,
         "burn": role_burn}


# --- orchestration ---------------------------------------------------------------------------------------

def _spawn(role: str, args, env, duration: float | None = None) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--role", role, "--duration", str(duration or args.duration),
           "--warmup", str(args.warmup), "--rtt-duration", str(args.rtt_duration)]
    cmd += ["--reliable"] if args.reliable else []
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, cwd=str(REPO))


def _wait_line(p: subprocess.Popen, prefix: str, timeout: float) -> str:
    result: list[str] = []
    seen: list[str] = []

    def read():
        for line in p.stdout:
            if line.startswith(prefix):
                result.append(line[len(prefix):].strip())
                return
            seen.append(line.rstrip())

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(timeout)
    if not result:
        tail = "\n".join(seen[-20:])
        raise RuntimeError(f"{prefix.strip()} not received from pid {p.pid} in {timeout:.0f} s; its output:\n{tail}")
    return result[0]


def _tell(p: subprocess.Popen, word: str) -> None:
    try:
        p.stdin.write(word + "\n")
        p.stdin.flush()
    except (BrokenPipeError, ValueError):
        pass


def _finish(*procs: subprocess.Popen) -> None:
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


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


def run_once(args, env) -> dict:
    burners = [_spawn("burn", args, env, duration=args.duration + args.rtt_duration + 60) for _ in range(args.load)]
    load_before = os.getloadavg()[0]
    try:
        # 1) images
        sub = _spawn("image_sub", args, env)
        _wait_line(sub, "READY", 60)
        pub = _spawn("image_pub", args, env)
        _wait_line(pub, "READY", 60)
        _wait_line(sub, "MATCHED", 60)
        cpu = _Cpu({"image publisher": pub, "image subscriber": sub})
        _tell(pub, "GO")
        time.sleep(args.warmup)
        cpu.start()
        sent = json.loads(_wait_line(pub, "SENT ", args.duration + args.warmup + 60))
        cpu_img = cpu.stop()
        time.sleep(1.0)  # frames still in flight
        _tell(sub, "STOP")
        res = json.loads(_wait_line(sub, "RESULT ", 60))
        _finish(pub, sub)
        load_images = os.getloadavg()[0]

        # 2) JointState round trip
        echo = _spawn("echo", args, env)
        _wait_line(echo, "READY", 60)
        ping = _spawn("ping", args, env)
        _wait_line(ping, "READY", 60)
        cpu = _Cpu({"JointState ping": ping, "JointState echo": echo})
        cpu.start()
        r = json.loads(_wait_line(ping, "RESULT ", args.rtt_duration + 60))
        cpu_js = cpu.stop()
        _tell(echo, "STOP")
        _finish(echo, ping)
    finally:
        for b in burners:
            b.kill()
            b.wait()
    streams = []
    for i in range(2):
        got = set(res["seqs"][i])
        n = sent["sent"][i]
        streams.append({"received": len(got & set(range(n))), "sent": n, "lat": res["lat"][i],
                        "transport_lost": res["transport_lost"][i]})
    return {"streams": streams, "sizes_ok": res["sizes_ok"], "fill_ms": sent["fill_ms"],
            "publish_ms": sent["publish_ms"], "rtt": r["rtt"], "pings": r["sent"], "cpu": {**cpu_img, **cpu_js},
            "load": (load_before, load_images, os.getloadavg()[0])}


def _table(head, rows) -> str:
    widths = [max(len(str(x[i])) for x in rows + [head]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row) for row in rows]
    return "\n".join(lines)


def _run_rows(k: int, res: dict) -> list[tuple]:
    rows = []
    for i, s in enumerate(res["streams"]):
        lat = s["lat"]
        rows.append((k, f"image stream {i} (720p rgb8 @30Hz)", f"{s['received']}/{s['sent']}",
                     f"{s['sent'] - s['received']} ({s['transport_lost']})",
                     f"{_pct(lat, 50):.2f}", f"{_pct(lat, 90):.2f}", f"{_pct(lat, 99):.2f}", f"{max(lat, default=0):.1f}"))
    rtt = res["rtt"]
    rows.append((k, "JointState RTT @100Hz", f"{len(rtt)}/{res['pings']}", str(res["pings"] - len(rtt)),
                 f"{_pct(rtt, 50):.2f}", f"{_pct(rtt, 90):.2f}", f"{_pct(rtt, 99):.2f}", f"{max(rtt, default=0):.1f}"))
    return rows


def report(args, env, results: list[dict]) -> None:
    print(f"\nROS 2 middleware benchmark, real rclpy ({args.duration:.0f} s images, {args.rtt_duration:.0f} s "
          f"JointState, {'RELIABLE depth 5' if args.reliable else 'sensor-data QoS (best effort, depth 5)'} images, "
          f"{len(results)} run(s), domain {env['ROS_DOMAIN_ID']}{f', +{args.load} busy processes' if args.load else ''})")
    for v in MIDDLEWARE_VARS:
        if env.get(v):
            print(f"  {v}={env[v]}")
    head = ("run", "test", "received", "lost (in transport)", "p50 ms", "p90 ms", "p99 ms", "max ms")
    rows = [row for k, res in enumerate(results, 1) for row in _run_rows(k, res)]
    print(_table(head, rows))
    if any(not r["sizes_ok"] for r in results):
        print("!! some received images had the wrong size")

    print("\nper run: CPU per process (100% = one core), publisher cost per frame, load average")
    head = ("run", "img pub %", "img sub %", "ping %", "echo %", "fill p50 ms", "publish() p50 ms",
            "publish() p99 ms", "load before/images/after")
    rows = []
    for k, r in enumerate(results, 1):
        c = r["cpu"]
        rows.append((k, f"{c['image publisher']:.1f}", f"{c['image subscriber']:.1f}", f"{c['JointState ping']:.1f}",
                     f"{c['JointState echo']:.1f}", f"{_pct(r['fill_ms'], 50):.2f}", f"{_pct(r['publish_ms'], 50):.2f}",
                     f"{_pct(r['publish_ms'], 99):.2f}", "/".join(f"{x:.2f}" for x in r["load"])))
    print(_table(head, rows))

    if len(results) > 1:
        med = statistics.median
        print(f"\nmedian of {len(results)} runs")
        head = ("test", "lost (total)", "p50 ms", "p99 ms", "CPU %")
        rows = []
        for i in range(2):
            ss = [r["streams"][i] for r in results]
            rows.append((f"image stream {i}", f"{sum(s['sent'] - s['received'] for s in ss)} "
                         f"({sum(s['transport_lost'] for s in ss)} in transport)",
                         f"{med(_pct(s['lat'], 50) for s in ss):.2f}", f"{med(_pct(s['lat'], 99) for s in ss):.2f}",
                         ""))
        rows.append(("JointState RTT", str(sum(r["pings"] - len(r["rtt"]) for r in results)),
                     f"{med(_pct(r['rtt'], 50) for r in results):.2f}", f"{med(_pct(r['rtt'], 99) for r in results):.2f}",
                     ""))
        for name in ("image publisher", "image subscriber", "JointState ping", "JointState echo"):
            rows.append((f"  {name}", "", "", "", f"{med(r['cpu'][name] for r in results):.1f}"))
        print(_table(head, rows))
    print(f"\nmachine: {os.cpu_count()} cores, load average now {os.getloadavg()[0]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=60.0, help="image test duration in seconds")
    ap.add_argument("--rtt-duration", type=float, default=20.0, help="JointState round-trip test duration")
    ap.add_argument("--warmup", type=float, default=2.0, help="first seconds of images left out of the CPU figures")
    ap.add_argument("--runs", type=int, default=1, help="repeat the whole benchmark; medians are printed")
    ap.add_argument("--reliable", action="store_true", help="images with RELIABLE QoS instead of sensor data QoS")
    ap.add_argument("--profile", default=str(FASTDDS_PROFILE),
                    help="Fast DDS XML profile for every process, or 'none' for Fast DDS' defaults")
    ap.add_argument("--default-malloc", action="store_true",
                    help="leave glibc's malloc thresholds at their defaults (see benchmarks/_nodes.py)")
    ap.add_argument("--domain", type=int, help="ROS_DOMAIN_ID (default: random in 150..199)")
    ap.add_argument("--load", type=int, default=0, help="busy-looping processes running beside the benchmark")
    ap.add_argument("--json", help="also write every run's raw samples to this file")
    ap.add_argument("--role", choices=sorted(ROLES), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role:
        ROLES[args.role](args)
        return
    env = dict(os.environ)
    if args.domain is not None:
        env["ROS_DOMAIN_ID"] = str(args.domain)
    ros_env(env, profile=None if args.profile == "none" else Path(args.profile).resolve(),
            malloc=not args.default_malloc)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    results = []
    for k in range(args.runs):
        results.append(run_once(args, env))
        r = results[-1]
        lost = [s["sent"] - s["received"] for s in r["streams"]]
        print(f"run {k + 1}/{args.runs}: images lost {lost} (in transport {[s['transport_lost'] for s in r['streams']]}), "
              f"image p50 "
              f"{_pct(r['streams'][0]['lat'], 50):.2f}/{_pct(r['streams'][1]['lat'], 50):.2f} ms, "
              f"RTT p50 {_pct(r['rtt'], 50):.2f} ms", flush=True)
    report(args, env, results)
    if args.json:
        Path(args.json).write_text(json.dumps({"env": {v: env.get(v) for v in MIDDLEWARE_VARS}, "runs": results}))


if __name__ == "__main__":
    main()
