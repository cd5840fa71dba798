"""``gemma3nvla-ros view <image topic> --out frame.jpg``: look at a camera without ROS tools.

Writes the newest frame of a sensor_msgs/Image or CompressedImage topic to a JPEG/PNG file, replaced
atomically every ``--period`` seconds (open it in any image viewer: most reload on change), or once
with ``--once``. Headless machines included: no window is opened.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import cv2
import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from gemma3nvla_ros.hardware.image_msgs import image_to_rgb
from gemma3nvla_ros.tools.cli_session import DISCOVERY_TIMEOUT_S, CliError, cli_node, wait_for

TYPES = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CompressedImage": CompressedImage}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("view", help="write a camera topic's newest frame to an image file")
    p.add_argument("topic_name", help="e.g. /cameras/wrist/image_raw")
    p.add_argument("--out", default="frame.jpg", help="image file to (re)write (.jpg or .png)")
    p.add_argument("--period", type=float, default=1.0, help="seconds between rewrites")
    p.add_argument("--once", action="store_true", help="write one frame and exit")
    p.add_argument("--timeout", type=float, default=DISCOVERY_TIMEOUT_S, help="longest wait for the topic (s)")
    p.set_defaults(handler=cmd_view, verb="")


def write_frame(msg, out: Path) -> None:
    """The frame as BGR into ``out``, through a temporary file so a viewer never reads half a frame."""
    tmp = out.with_name(f".{out.name}.tmp{out.suffix}")
    if not cv2.imwrite(str(tmp), cv2.cvtColor(image_to_rgb(msg), cv2.COLOR_RGB2BGR)):
        raise CliError(f"cannot write {out} (a .jpg or .png path in a writable folder)")
    os.replace(tmp, out)


def cmd_view(options: argparse.Namespace) -> int:
    out = Path(options.out)
    with cli_node() as node:
        types: list[str] = []
        found = wait_for(lambda: types.extend(dict(node.get_topic_names_and_types()).get(options.topic_name, []))
                         or types, options.timeout)
        kind = next((t for t in types if t in TYPES), None)
        if not found or kind is None:
            raise CliError(f"no image topic {options.topic_name} (types seen: {types or 'none'})")
        latest: list = []
        node.create_subscription(TYPES[kind], options.topic_name, lambda m: latest.__setitem__(slice(None), [m]),
                                 qos_profile_sensor_data)
        written, next_at = 0, 0.0
        while rclpy.ok():
            rclpy.spin_once(node, timeout_sec=0.05)
            if latest and time.monotonic() >= next_at:
                write_frame(latest[0], out)
                written += 1
                if options.once:
                    print(f"wrote {out} ({latest[0].width}x{latest[0].height})" if kind.endswith("/Image")
                          else f"wrote {out}")
                    return 0
                if written == 1:
                    print(f"writing {options.topic_name} to {out} every {options.period:g} s (Ctrl-C stops)")
                next_at = time.monotonic() + options.period
    return 0
