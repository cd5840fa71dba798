#!/usr/bin/env python
"""Latency of one action chunk through PolicyRunner on the demo checkpoint (what the policy node pays per chunk on
a machine without a trained model), for several torch thread counts. Builds the demo under a temp dir.

    python benchmarks/bench_demo_runner.py                      # 480x640 frames, image_size 64, threads 1 and 2
    python benchmarks/bench_demo_runner.py --threads 1 --iters 50

Per chunk: LeRobot's prepare_observation_for_inference (two 480x640 uint8 frames -> float CHW), the saved
preprocessor (tokenize, normalize), predict_action_chunk (resize to image_size, vision tower, 2 backbone layers,
10 Euler steps of the expert, chunk 50) and the postprocessor. Threads are set per run in a fresh process:
torch's thread pool cannot be shrunk reliably once used.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def measure(directory: str, threads: int, iters: int, shape: tuple[int, int]) -> None:
    import numpy as np

    from gemma3nvla_ros.policy.runner import PolicyRunner

    runner = PolicyRunner(directory, device="cpu", threads=threads)
    rng = np.random.default_rng(0)
    values = {key: rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for key in runner.image_shapes}
    values["observation.state"] = np.zeros(runner.input_features["observation.state"].shape, np.float32)
    values["task"] = "pick the red cube and put it in the box"
    runner.warmup(values, runs=2)
    times = []
    for _ in range(iters):
        runner.infer(values)
        times.append(runner.last_infer_s * 1000)
    times.sort()
    p90 = times[min(len(times) - 1, int(0.9 * len(times)))]
    print(f"| {threads:7d} | {statistics.median(times):10.1f} | {times[0]:7.1f} | {p90:7.1f} | {1000 / statistics.median(times):8.1f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--_measure", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    shape = (args.height, args.width)
    if args._measure:
        measure(args._measure[0], int(args._measure[1]), args.iters, shape)
        return

    from gemma3nvla_ros.contract import Contract, default_contract_path
    from gemma3nvla_ros.policy.demo_checkpoint import ensure_demo_checkpoint

    contract = Contract.load(default_contract_path())
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = ensure_demo_checkpoint(Path(tmp), contract, image_size=args.image_size, camera_shape=shape)
        print(f"demo checkpoint: {len(contract.cameras)} cameras {shape[0]}x{shape[1]} -> {args.image_size}x"
              f"{args.image_size}, chunk {contract.chunk_size}, {os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f}")
        print("| threads | median ms | min ms | p90 ms | chunks/s |")
        print("|---------|-----------|--------|--------|----------|")
        for threads in args.threads:
            subprocess.run([sys.executable, __file__, "--_measure", str(ckpt), str(threads), "--iters", str(args.iters),
                            "--height", str(args.height), "--width", str(args.width)], check=True,
                           env={**os.environ, "OMP_NUM_THREADS": str(threads)}, stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
