"""Validation of incoming joint commands (sensor_msgs/JointState on /joint_commands), no ROS.

Policy: a command names any subset of the known joints; positions in radians. The whole message is
rejected — nothing written — when anything is wrong with it: no names, a name/position length
mismatch, duplicate or unknown names, NaN or inf. Rejecting the whole message (rather than applying the
good part) keeps a half-understood command from moving some joints and not others.
Velocity and effort fields are ignored (position control only).
A stamped command older than the command timeout is stale (a replayed bag, a message stuck in a queue)
and rejected too, and so is one stamped further than that in the future (a sender whose clock is off:
its commands would otherwise count as fresh for as long as the offset); an unstamped one (stamp 0, e.g.
typed by hand) is taken as current.
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


def check_command_age(stamp_ns: int, now_ns: int, max_age_ns: int) -> None:
    """Reject a command stamped more than ``max_age_ns`` before or after ``now_ns`` (both ROS time)."""
    if stamp_ns == 0:
        return
    age_ns = now_ns - stamp_ns
    if age_ns > max_age_ns:
        raise CommandRejected(
            f"command is stale: stamped {age_ns / 1e9:.3f} s ago, more than command_timeout "
            f"{max_age_ns / 1e9:.3f} s (check the sender's clock, or use_sim_time on both sides)"
        )
    if -age_ns > max_age_ns:
        raise CommandRejected(
            f"command is stamped {-age_ns / 1e9:.3f} s in the future, more than command_timeout "
            f"{max_age_ns / 1e9:.3f} s (check the sender's clock, or use_sim_time on both sides)"
        )
