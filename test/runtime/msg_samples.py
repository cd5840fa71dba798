"""Sample messages for the cdr/typesupport tests: every supported type, filled with varied content.

Values are chosen to stress the wire format: empty and odd-length strings and sequences (so
alignment padding differs from field to field), non-ASCII text, integer extremes.
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np

from gemma3nvla_ros.runtime.interfaces import get_type, rmw_dds_common
from gemma3nvla_ros.runtime.interfaces._definitions import MESSAGES, SERVICES

STRINGS = ["", "a", "ab", "abc", "joint_1", "ünïcødé ✓", "日本語", "x" * 17]
INT_RANGES = {
    "int8": (-128, 127),
    "uint8": (0, 255),
    "int16": (-32768, 32767),
    "uint16": (0, 65535),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}


def type_names() -> list[str]:
    """Every message type, plus each service's request and response."""
    names = [t for t in MESSAGES if t != "service_msgs/msg/ServiceEventInfo"]
    for srv in SERVICES:
        names += [f"{srv}_Request", f"{srv}_Response"]
    return names


def class_for(ros_type: str, distro: str) -> type:
    if ros_type.startswith("rmw_dds_common/"):
        return getattr(rmw_dds_common.for_distro(distro), ros_type.rsplit("/", 1)[1])
    return get_type(ros_type)


def sample(cls: type, rng: random.Random) -> Any:
    """An instance of ``cls`` with every field set through the public constructor."""
    return cls(**{f.name: _value(f, rng) for f in cls._fields})


def _value(field: Any, rng: random.Random) -> Any:
    if field.container == "array":
        return [_scalar(field, rng) for _ in range(field.length)]
    if field.container == "sequence":
        count = rng.randint(0, min(field.length or 5, 5))
        values = [_scalar(field, rng) for _ in range(count)]
        if field.primitive is not None and field.primitive.typecode is not None:
            return np.array(values, dtype=np.dtype(field.primitive.typecode))
        return values
    return _scalar(field, rng)


def _scalar(field: Any, rng: random.Random) -> Any:
    kind = field.type
    if field.is_message:
        return sample(field.msg_class, rng)
    if kind == "string":
        text = rng.choice(STRINGS)
        return text[: field.string_bound] if field.string_bound else text
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "byte":
        return bytes((rng.randrange(256),))
    if kind == "float32":
        return float(np.float32(rng.uniform(-1e6, 1e6)))  # exactly representable
    if kind == "float64":
        return rng.choice([0.0, -1.5, 1e-300, rng.uniform(-1e9, 1e9)])
    low, high = INT_RANGES[kind]
    return rng.choice([low, high, rng.randint(low, high)])
