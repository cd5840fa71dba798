#!/usr/bin/env python
"""Speed of the bag tools on this machine: reading, offline evaluation with the tiny CPU model, live replay.

    python benchmarks/bench_eval_bag.py                 # 2 cameras 480x640 @ 30 fps, 10 s bags, 3 runs each
    python benchmarks/bench_eval_bag.py --seconds 20 --runs 5 --image-size 64

Writes its bags (rosbags, under a temp dir) and prints three tables, each number the median of ``--runs``:

1. reading: ``tools.bag_io`` over every message of a 2-camera bag — camera frames per second read and
   deserialized, and read + deserialized + decoded to RGB (``image_to_rgb``), raw (mcap, sqlite3) and JPEG.
2. eval-bag: ``tools.eval_bag.evaluate`` on the raw mcap bag with the untrained demo checkpoint on the CPU
   (``threads=1``), default settings (chunk 50 at 30 Hz, threshold 0.5, zero latency); speed = bag seconds per
   wall second (model loading excluded, shown apart).
3. bag play: ``tools.bag_replay.Player`` at ``--rate 1000`` without /clock or subscribers: the most it can
   publish (frames/s and × real time), i.e. the headroom for ``--rate``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "test")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


def write_bags(root: Path, seconds: float, shape: tuple[int, int]) -> dict[str, Path]:
    from helpers_bags import synthetic_bag

    bags = {}
    for name, storage, compressed in (("raw mcap", "mcap", False), ("raw sqlite3", "sqlite3", False),
                                      ("jpeg mcap", "mcap", True)):
        t0 = time.perf_counter()
        bags[name] = synthetic_bag(root / name.replace(" ", "_"), storage=storage, compressed=compressed,
                                   duration=seconds, shape=shape)
        print(f"  wrote {name}: {sum(p.stat().st_size for p in bags[name].iterdir()) / 1e6:.0f} MB in "
              f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return bags


def read_rate(path: Path, decode: bool) -> tuple[float, float]:
    from gemma3nvla_ros.hardware.image_msgs import image_to_rgb
    from gemma3nvla_ros.tools.bag_io import IMAGE_TYPES, Bag

    frames = 0
    nbytes = 0
    t0 = time.perf_counter()
    with Bag(path) as bag:
        for m in bag.messages():
            msg = m.msg
            nbytes += len(m.raw)
            if m.msgtype in IMAGE_TYPES:
                frames += 1
                if decode:
                    image_to_rgb(msg)
    wall = time.perf_counter() - t0
    return frames / wall, nbytes / wall / 1e6


def eval_speed(bag: Path, checkpoint: str, runs: int) -> dict:
    import torch

    from gemma3nvla_ros.tools import eval_bag as eb
    from gemma3nvla_ros.tools.bag_io import Bag

    contract = eb.load_contract(None)
    units, _ = eb.load_units(contract)
    t0 = time.perf_counter()
    from gemma3nvla_ros.policy.runner import PolicyRunner

    runner = PolicyRunner(checkpoint, device="cpu", threads=1)
    load_s = time.perf_counter() - t0
    speeds, walls, chunks, p50 = [], [], 0, []
    for _ in range(runs):
        torch.manual_seed(0)
        with Bag(bag) as b:
            result = eb.evaluate(b, contract, units, runner, eb.EvalOptions(task="pick up the cube"))
        bag_s = (result.range_ns[1] - result.range_ns[0]) / 1e9
        walls.append(result.wall_s)
        speeds.append(bag_s / result.wall_s)
        chunks = result.metrics["overall"]["counts"]["chunks"]
        p50.append(result.metrics["overall"]["latency"]["p50_s"])
    return {"load_s": load_s, "x": statistics.median(speeds), "wall": statistics.median(walls), "chunks": chunks,
            "p50_ms": statistics.median(p50) * 1e3, "all_x": speeds}


def play_speed(bag: Path, runs: int) -> tuple[float, float, float]:
    import rclpy

    from gemma3nvla_ros.contract import Contract, default_contract_path
    from gemma3nvla_ros.tools.bag_io import Bag
    from gemma3nvla_ros.tools.bag_replay import Player, select_topics

    rclpy.init()
    node = rclpy.create_node("bench_bag_player")
    rates, xs, msgs = [], [], []
    try:
        with Bag(bag) as b:
            topics = select_topics(b, Contract.load(default_contract_path()))
            for _ in range(runs):
                player = Player(node, b, topics, rate=1000.0, clock_hz=0.0, delay=0.0)
                wall = player.run()
                frames = sum(n for t, n in player.published.items() if "image" in t)
                rates.append(frames / wall)
                msgs.append(sum(player.published.values()) / wall)
                xs.append((b.end_ns - b.start_ns) / 1e9 / wall)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return statistics.median(rates), statistics.median(msgs), statistics.median(xs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--image-size", type=int, nargs="*", default=[64, 32],
                   help="demo checkpoint's internal image size(s) (its vision cost)")
    p.add_argument("--skip", nargs="*", default=[], choices=["read", "eval", "play"])
    args = p.parse_args()
    shape = (args.height, args.width)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; 2 cameras {shape[0]}x{shape[1]} @ 30 fps "
          f"+ joint states + commands @ 30 Hz, {args.seconds:g} s bags; median of {args.runs} runs")
    with tempfile.TemporaryDirectory() as tmp:
        bags = write_bags(Path(tmp), args.seconds, shape)
        if "read" not in args.skip:
            print("\n| bag | frames/s read + deserialized | frames/s + decoded to RGB | MB/s read |")
            print("|---|---|---|---|")
            for name, path in bags.items():
                plain = [read_rate(path, decode=False) for _ in range(args.runs)]
                decoded = [read_rate(path, decode=True)[0] for _ in range(args.runs)]
                print(f"| {name} | {statistics.median(r for r, _ in plain):.0f} | {statistics.median(decoded):.0f} "
                      f"| {statistics.median(mb for _, mb in plain):.0f} |", flush=True)
        if "eval" not in args.skip:
            from gemma3nvla_ros.contract import Contract, default_contract_path
            from gemma3nvla_ros.policy.demo_checkpoint import ensure_demo_checkpoint

            contract = Contract.load(default_contract_path())
            print("\n| demo image_size | chunks | infer p50 ms | eval wall s | × real time (runs) | model load s |")
            print("|---|---|---|---|---|---|")
            for size in args.image_size:
                ckpt = ensure_demo_checkpoint(Path(tmp) / f"demo{size}", contract, image_size=size, camera_shape=shape)
                r = eval_speed(bags["raw mcap"], str(ckpt), args.runs)
                runs = ", ".join(f"{x:.1f}" for x in r["all_x"])
                print(f"| {size} | {r['chunks']} | {r['p50_ms']:.0f} | {r['wall']:.2f} | **{r['x']:.1f}** ({runs}) "
                      f"| {r['load_s']:.1f} |", flush=True)
        if "play" not in args.skip:
            frames, msgs, x = play_speed(bags["raw mcap"], args.runs)
            print("\n| bag play (raw mcap, no subscribers) | frames/s | messages/s | × real time |")
            print("|---|---|---|---|")
            print(f"| as fast as it can (--rate 1000) | {frames:.0f} | {msgs:.0f} | {x:.1f} |")


if __name__ == "__main__":
    main()
