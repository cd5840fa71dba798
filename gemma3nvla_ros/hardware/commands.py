"""Validation of incoming joint commands (sensor_msgs/JointState on /joint_commands), no ROS.

Policy: a command names any subset of the known joints; positions in radians. The whole message is
rejected — nothing written — when anything is wrong with it: no names, a name/position length
mismatch, duplicate or unknown names, NaN or inf. Rejecting the whole message (rather than applying the
good part) keeps a half-understood command from moving some joints and not others.
Velocity and effort fields are ignored (position control only).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


class CommandRejected(ValueError):
    """The command was not applied; ``str(exc)`` says why, for a throttled warning."""


@dataclass(frozen=True)
class JointCommand:
    positions: dict[str, float]  # radians, by joint name


def validate_joint_command(
    names: Sequence[str], positions: Sequence[float], known: Sequence[str]
) -> JointCommand:
    names = list(names)
    positions = list(positions)
    if not names:
        raise CommandRejected("command has no joint names")
    if len(names) != len(positions):
        raise CommandRejected(
            f"command has {len(names)} names but {len(positions)} positions (position control needs one each)"
        )
    seen: set[str] = set()
    dups = sorted({n for n in names if n in seen or seen.add(n)})  # type: ignore[func-returns-value]
    if dups:
        raise CommandRejected(f"duplicate joint names {dups}")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise CommandRejected(f"unknown joint names {unknown} (known: {list(known)})")
    bad = [n for n, p in zip(names, positions) if not math.isfinite(float(p))]
    if bad:
        raise CommandRejected(f"non-finite positions for {bad}")
    return JointCommand({n: float(p) for n, p in zip(names, positions)})
