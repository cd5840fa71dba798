#!/usr/bin/env python
"""Closed-loop benchmark: what the stack adds around the model, and what each node costs.

Runs the so101_pickplace nodes as separate processes on loopback DDS (bridge on the simulated bus, two
synthetic cameras at WxH@30, the policy on the demo checkpoint on CPU, the aggregator) and measures from
a listener process:

- capture -> chunk: the chunk's stamp (its observation's capture time) to its arrival (includes the model)
- chunk -> command: chunk arrival to the first /joint_commands after it (the aggregator's share)
- capture -> first command, and the same minus the policy's own inference time (from /diagnostics):
  the latency the stack adds excluding model compute
- aggregator tick period jitter (|period - nominal|, p50/p99) at each control rate
- CPU per node (% of one core) over the run

    python benchmarks/bench_loop.py                      # 1280x720 cameras, 30 and 100 Hz control, 30 s each
    python benchmarks/bench_loop.py --width 640 --height 480 --seconds 20
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from _nodes import ros_env, stop  # noqa: E402


def start(module: str, *ros_args: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", module, "--ros-args", *ros_args], cwd=REPO,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)


def pct(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def measure(rate: float, seconds: float, width: int, height: int, checkpoint: str, tmp: Path) -> dict:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.node import Node
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory

    cam = ("-p", f"width:={width}", "-p", f"height:={height}", "-p", "fps:=30.0")
    procs = {
        "so101_bridge": start("gemma3nvla_ros.nodes.so101_bridge", "-p", "mode:=sim", log=tmp / "bridge.log"),
        "camera_wrist": start("gemma3nvla_ros.nodes.camera_node", "-r", "__node:=camera_wrist", "-p", "name:=wrist",
                              *cam, log=tmp / "wrist.log"),
        "camera_top": start("gemma3nvla_ros.nodes.camera_node", "-r", "__node:=camera_top", "-p", "name:=top", *cam,
                            log=tmp / "top.log"),
        "gemma3nvla_policy": start("gemma3nvla_ros.nodes.policy_node", "-p", f"checkpoint:={checkpoint}",
                                   "-p", "device:=cpu", "-p", "task:=pick up the cube", log=tmp / "policy.log"),
        "action_aggregator": start("gemma3nvla_ros.nodes.action_aggregator", "-p", f"control_rate:={rate}",
                                   log=tmp / "aggregator.log"),
    }
    rclpy.init(args=[])
    node = Node("bench_loop_listener")
    chunks, commands, policy_ms = [], [], []
    clock = node.get_clock()

    def on_chunk(msg):
        if msg.points:
            chunks.append((clock.now().nanoseconds, msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec))

    def on_command(msg):
        commands.append((clock.now().nanoseconds, msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec))

    def on_diag(msg):
        for s in msg.status:
            if s.name.endswith(": policy"):
                v = {kv.key: kv.value for kv in s.values}
                policy_ms.append(float(v.get("latency_p50_ms", "nan")))

    node.create_subscription(JointTrajectory, "/action_chunk", on_chunk, 10)
    node.create_subscription(JointState, "/joint_commands", on_command, 100)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 50)
    deadline = time.monotonic() + 180
    while len(chunks) < 3 and time.monotonic() < deadline:  # warm: model loaded, loop running
        rclpy.spin_once(node, timeout_sec=0.1)
    chunks.clear()
    commands.clear()
    policy_ms.clear()
    ps = {name: psutil.Process(p.pid) for name, p in procs.items()}
    for p in ps.values():
        p.cpu_percent(None)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    cpu = {name: p.cpu_percent(None) for name, p in ps.items()}
    node.destroy_node()
    rclpy.try_shutdown()
    for p in procs.values():
        stop(p)

    cmd_arrivals = np.array([a for a, _ in commands])
    capture_to_chunk, chunk_to_cmd, capture_to_cmd = [], [], []
    for arrival, stamp in chunks:
        i = np.searchsorted(cmd_arrivals, arrival)
        if i < len(cmd_arrivals):
            capture_to_chunk.append((arrival - stamp) / 1e6)
            chunk_to_cmd.append((cmd_arrivals[i] - arrival) / 1e6)
            capture_to_cmd.append((cmd_arrivals[i] - stamp) / 1e6)
    model_ms = statistics.median(policy_ms) if policy_ms else float("nan")
    stamps = np.array([s for _, s in commands], dtype=np.int64)
    jitter = np.abs(np.diff(stamps) / 1e6 - 1e3 / rate) if len(stamps) > 1 else np.array([])
    return {
        "rate": rate, "chunks": len(chunks), "commands": len(commands), "model_ms": model_ms,
        "capture_to_chunk": capture_to_chunk, "chunk_to_cmd": chunk_to_cmd, "capture_to_cmd": capture_to_cmd,
        "jitter": jitter, "cpu": cpu,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--rates", type=float, nargs="+", default=[30.0, 100.0])
    args = ap.parse_args()
    ros_env()  # one host, Fast DDS profile, a random domain: every process below inherits it
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from gemma3nvla_ros.contract import Contract, default_contract_path
    from gemma3nvla_ros.policy.demo_checkpoint import ensure_demo_checkpoint

    with tempfile.TemporaryDirectory(prefix="bench_loop_") as tmp:
        tmp = Path(tmp)
        ckpt = ensure_demo_checkpoint(tmp / "demo", Contract.load(default_contract_path()),
                                      camera_shape=(args.height, args.width))
        results = [measure(rate, args.seconds, args.width, args.height, str(ckpt), tmp) for rate in args.rates]

    print(f"\nclosed loop, two {args.width}x{args.height}@30 synthetic cameras, demo checkpoint on CPU, "
          f"{args.seconds:g} s per rate, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
    print("| control rate | chunks | capture->chunk p50 | chunk->first command p50 / p99 | capture->first command "
          "p50 / p99 | model p50 | stack-added p50 / p99 | tick jitter p50 / p99 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        added = [x - r["model_ms"] for x in r["capture_to_cmd"]]
        print(f"| {r['rate']:g} Hz | {r['chunks']} | {pct(r['capture_to_chunk'], 50):.1f} ms | "
              f"{pct(r['chunk_to_cmd'], 50):.1f} / {pct(r['chunk_to_cmd'], 99):.1f} ms | "
              f"{pct(r['capture_to_cmd'], 50):.1f} / {pct(r['capture_to_cmd'], 99):.1f} ms | {r['model_ms']:.1f} ms | "
              f"{pct(added, 50):.1f} / {pct(added, 99):.1f} ms | "
              f"{pct(r['jitter'], 50):.2f} / {pct(r['jitter'], 99):.2f} ms |")
    print("\n| node | " + " | ".join(f"CPU at {r['rate']:g} Hz" for r in results) + " |")
    print("|---|" + "---|" * len(results))
    for name in results[0]["cpu"]:
        print(f"| {name} | " + " | ".join(f"{r['cpu'][name]:.0f} %" for r in results) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
