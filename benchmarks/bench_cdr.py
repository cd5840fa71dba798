"""Serialize/deserialize timings of runtime.cdr next to rosbags (when installed).

    python benchmarks/bench_cdr.py [--repeat N]

Prints the median per call in microseconds. rosbags works on its own message objects, built once
up front, so neither side pays for conversions.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from gemma3nvla_ros.runtime import cdr
from gemma3nvla_ros.runtime.interfaces import builtin_interfaces, sensor_msgs, trajectory_msgs


def joint_state() -> sensor_msgs.msg.JointState:
    names = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
    msg = sensor_msgs.msg.JointState(
        name=names, position=[0.1] * 6, velocity=[0.2] * 6, effort=[0.3] * 6
    )
    msg.header.frame_id = "base_link"
    return msg


def image(width: int, height: int) -> sensor_msgs.msg.Image:
    data = np.random.default_rng(0).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return sensor_msgs.msg.Image(
        height=height, width=width, encoding="rgb8", step=width * 3, data=data
    )


def trajectory(points: int, joints: int) -> trajectory_msgs.msg.JointTrajectory:
    point = trajectory_msgs.msg.JointTrajectoryPoint
    return trajectory_msgs.msg.JointTrajectory(
        joint_names=[f"joint_{j}" for j in range(joints)],
        points=[
            point(
                positions=[0.01 * i + j for j in range(joints)],
                velocities=[0.0] * joints,
                time_from_start=builtin_interfaces.msg.Duration(sec=i // 30, nanosec=i),
            )
            for i in range(points)
        ],
    )


def to_rosbags(msg: Any, store: Any) -> Any:
    """Field-by-field copy into rosbags' dataclasses (numeric sequences as numpy arrays)."""
    fields = {}
    for field in msg._fields:
        value = getattr(msg, field.name)
        if field.is_message:
            value = [to_rosbags(v, store) for v in value] if field.container else to_rosbags(value, store)
        elif field.container and field.type != "string":
            value = np.frombuffer(value, dtype=value.typecode).copy()
        fields[field.name] = value
    return store.types[msg._ros_type](**fields)


def median_us(func: Callable[[], Any], repeat: int) -> float:
    func()  # warm up (plan compilation, caches)
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        func()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    try:
        from rosbags.typesys import Stores, get_typestore

        store = get_typestore(Stores.ROS2_JAZZY)
    except ImportError:
        store = None

    cases = [
        ("JointState (6 joints)", joint_state()),
        ("Image 640x480 rgb8", image(640, 480)),
        ("Image 1280x720 rgb8", image(1280, 720)),
        ("JointTrajectory 50x6", trajectory(50, 6)),
    ]
    header = f"{'message':<24}{'bytes':>10}{'ser us':>10}{'des us':>10}{'rb ser us':>12}{'rb des us':>12}"
    print(header)
    print("-" * len(header))
    for label, msg in cases:
        data = cdr.serialize(msg)
        ser = median_us(lambda: cdr.serialize(msg), args.repeat)
        des = median_us(lambda: cdr.deserialize(data, type(msg)), args.repeat)
        row = f"{label:<24}{len(data):>10}{ser:>10.1f}{des:>10.1f}"
        if store is not None:
            reference = to_rosbags(msg, store)
            assert bytes(store.serialize_cdr(reference, msg._ros_type)) == data
            rb_ser = median_us(lambda: store.serialize_cdr(reference, msg._ros_type), args.repeat)
            rb_des = median_us(lambda: store.deserialize_cdr(data, msg._ros_type), args.repeat)
            row += f"{rb_ser:>12.1f}{rb_des:>12.1f}"
        print(row)


if __name__ == "__main__":
    main()
