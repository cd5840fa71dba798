"""How fast bag-to-dataset reads a recording: frames per second of the reading stage (pass 1: stamps,
joints, tasks, episode plan; pass 2: the images frames use, decoded to RGB), median of N runs.

    python benchmarks/bench_bag_read.py [--seconds 20] [--width 640 --height 480] [--repeat 3] [--convert]

The bag is synthetic and written with rosbags (no ROS): two rgb8 cameras at 30 Hz, /joint_states at 100 Hz,
/joint_commands at 30 Hz, a latched task; one dataset frame = state + action + both images. ``--convert``
adds the whole conversion into a LeRobotDataset (image and video features): those numbers are LeRobot's
PNG writing and video encoding, not the reading.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test"))

from helpers_record import CAMERAS, JOINTS, SyntheticBag  # noqa: E402

from gemma3nvla_ros.tools import bag_to_dataset as b2d  # noqa: E402


def spec(fps: float = 30.0) -> b2d.Spec:
    return b2d.Spec(joints=JOINTS, state_topic="/joint_states", action_topic="/joint_commands",
                    cameras=CAMERAS, fps=fps)


def read_all(bag: Path) -> tuple[int, float]:
    """The floor: rosbags iterating every message's bytes, nothing decoded."""
    t = time.perf_counter()
    with b2d._open(bag) as reader:
        n = sum(1 for _ in reader.messages())
    return n, time.perf_counter() - t


def read_frames(bag: Path) -> tuple[int, float, float]:
    t0 = time.perf_counter()
    plan = b2d.plan_bag(bag, spec())
    t1 = time.perf_counter()
    n = sum(1 for _ in b2d.iter_frames(plan))
    return n, t1 - t0, time.perf_counter() - t1


def convert(bag: Path, out: Path, video: bool) -> tuple[int, float]:
    from gemma3nvla_ros.contract import Contract, default_contract_path
    from gemma3nvla_ros.hardware.calibration import load_calibration

    units = Contract.load(default_contract_path()).dataset_units(
        load_calibration(REPO / "config" / "calibration" / "so101_follower_example.json"))
    result = b2d.convert([bag], out, spec(), units, video=video, log=lambda _line: None)
    return result.frames, result.seconds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    p.add_argument("--convert", action="store_true", help="also time whole conversions (LeRobot writing)")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_bag_"))
    try:
        bag = SyntheticBag(duration_s=args.seconds, size=(args.width, args.height), storage=args.storage).write(tmp / "bag")
        size_mb = sum(f.stat().st_size for f in bag.iterdir()) / 1e6
        rows = []
        raw = [read_all(bag) for _ in range(args.repeat)]
        n_msgs, t_raw = raw[0][0], statistics.median(r[1] for r in raw)
        rows.append(("rosbags: iterate every message (bytes only)", f"{n_msgs} msgs", t_raw, f"{n_msgs / t_raw:,.0f} msgs/s, {size_mb / t_raw:,.0f} MB/s"))
        runs = [read_frames(bag) for _ in range(args.repeat)]
        frames = runs[0][0]
        t1, t2 = statistics.median(r[1] for r in runs), statistics.median(r[2] for r in runs)
        total = statistics.median(r[1] + r[2] for r in runs)
        rows.append(("pass 1: stamps, joints, task, plan", f"{frames} frames", t1, f"{frames / t1:,.0f} frames/s"))
        rows.append(("pass 2: images decoded for the frames", f"{frames} frames", t2, f"{frames / t2:,.0f} frames/s"))
        rows.append(("bag reading (pass 1 + 2)", f"{frames} frames", total, f"{frames / total:,.0f} frames/s"))
        if args.convert:
            for video in (False, True):
                results = []
                for i in range(args.repeat):
                    out = tmp / f"ds_{video}_{i}"
                    results.append(convert(bag, out, video))
                    shutil.rmtree(out, ignore_errors=True)
                t = statistics.median(r[1] for r in results)
                what = "video (libsvtav1)" if video else "image (PNG)"
                rows.append((f"whole conversion, {what} features", f"{results[0][0]} frames", t, f"{results[0][0] / t:,.0f} frames/s"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"bag: {args.seconds:g} s, 2 x {args.width}x{args.height} rgb8 @ 30 Hz, joint_states 100 Hz, "
          f"joint_commands 30 Hz, {args.storage}, {size_mb:.0f} MB; median of {args.repeat}")
    print(f"| {'stage':<46} | {'amount':>12} | {'seconds':>8} | {'rate':<32} |")
    print(f"|{'-' * 48}|{'-' * 14}|{'-' * 10}|{'-' * 34}|")
    for name, amount, t, rate in rows:
        print(f"| {name:<46} | {amount:>12} | {t:>8.2f} | {rate:<32} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
