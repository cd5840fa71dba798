"""Test-wide settings: every DDS participant on loopback, on a domain of its own.

Each pytest session picks a random ROS_DOMAIN_ID so concurrent runs on one machine never hear each
other, and every process it starts inherits the same loopback-bound CYCLONEDDS_URI (interface lo,
multicast off, peer 127.0.0.1): nothing may leave 127.0.0.0/8.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOOPBACK_XML = REPO / "config" / "cyclonedds_loopback.xml"

os.environ["CYCLONEDDS_URI"] = f"file://{LOOPBACK_XML}"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))
os.environ.setdefault("GEMMA3NVLA_ROS_RUNTIME", "dds")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
