"""Building one policy observation from the latest inputs, or refusing to (pure, numpy; the clock is passed in).

The policy must never act on a stale or half-known world: every contracted camera, the joint state and
the task must be present, finite and fresh (neither older than ``max_age_ns`` nor stamped further than that
in the future, which would keep a sender with a wrong clock "fresh" for as long as its offset). The
observation is stamped with its OLDEST input's capture time: the actions it yields are about the world as
it was then, and timing the chunk from a later stamp would claim fresher knowledge than there was.
Joint positions arrive in ROS radians and leave in the dataset's units through ``DatasetUnits`` (the only
place units are converted).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gemma3nvla_ros.control.units import DatasetUnits

if TYPE_CHECKING:
    from gemma3nvla_ros.contract import Contract


@dataclass(frozen=True)
class Stamped:
    stamp_ns: int  # capture time (header.stamp), node clock
    value: Any


class ObservationRefused(Exception):
    """No observation this time; ``str()`` says which input (camera key + topic, joint_states, task) and why."""


@dataclass(frozen=True)
class Observation:
    stamp_ns: int  # the OLDEST capture stamp among the inputs used
    values: dict[str, Any]  # {"observation.images.<k>": HxWx3 uint8 RGB, "observation.state": float32 (J,), "task": str}


def joint_state_positions(msg: Any) -> dict[str, float]:
    """``{name: position}`` of a sensor_msgs/JointState (duck-typed); names without a position are left out,
    so that :func:`build_observation` reports them as missing rather than guessing."""
    return {str(n): float(p) for n, p in zip(msg.name, msg.position)}


def _check_age(what: str, stamp_ns: int, now_ns: int, max_age_ns: int) -> None:
    age = now_ns - int(stamp_ns)
    if age > max_age_ns:
        raise ObservationRefused(f"{what} is stale: captured {age / 1e9:.3f} s ago (max age {max_age_ns / 1e9:.3f} s)")
    if -age > max_age_ns:
        raise ObservationRefused(
            f"{what} is stamped {-age / 1e9:.3f} s in the future (more than {max_age_ns / 1e9:.3f} s): check the "
            "sender's clock, or use_sim_time on both sides"
        )


def build_observation(
    contract: "Contract",
    units: DatasetUnits,
    images: Mapping[str, Stamped | None],
    joint_state: Stamped | None,
    task: str | None,
    now_ns: int,
    max_age_ns: int,
    image_shapes: Mapping[str, tuple[int, int]] | None = None,
) -> Observation:
    """The observation for ``contract`` or :class:`ObservationRefused`.

    ``images[key].value``: HxWx3 uint8 RGB (see ``hardware.image_msgs.image_to_rgb``);
    ``joint_state.value``: ``{joint name: radians}``; ``image_shapes`` (optional): ``{key: (H, W)}`` the
    checkpoint was trained on — frames are never resized here (resizing in the loop, but not in training, is
    a known way to wreck a policy), so a camera at another resolution is refused.
    """
    contract.check_units(units)  # a programming error, not a transient refusal
    stamps: list[int] = []
    values: dict[str, Any] = {}

    if task is None or not str(task).strip():
        raise ObservationRefused("no task: set one before the policy can act")

    for key, topic in contract.cameras.items():
        what = f"camera {key} ({topic})"
        frame = images.get(key)
        if frame is None:
            raise ObservationRefused(f"{what}: no frame received yet")
        _check_age(what, frame.stamp_ns, now_ns, max_age_ns)
        image = np.asarray(frame.value)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ObservationRefused(f"{what}: frame must be HxWx3 uint8 RGB, got {image.dtype} {image.shape}")
        if image_shapes is not None and key in image_shapes and tuple(image.shape[:2]) != tuple(image_shapes[key]):
            h, w = image_shapes[key]
            raise ObservationRefused(
                f"{what}: frame is {image.shape[0]}x{image.shape[1]} (HxW), the checkpoint expects {h}x{w}: set the "
                "camera to the resolution the dataset was recorded at"
            )
        values[key] = image
        stamps.append(int(frame.stamp_ns))

    what = f"joint_states ({contract.joint_states_topic})"
    if joint_state is None:
        raise ObservationRefused(f"{what}: no message received yet")
    _check_age(what, joint_state.stamp_ns, now_ns, max_age_ns)
    positions: Mapping[str, float] = joint_state.value
    missing = [j for j in contract.joints if j not in positions]
    if missing:
        raise ObservationRefused(f"{what}: lacks contracted joints {missing} (has {sorted(positions)})")
    radians = [float(positions[j]) for j in contract.joints]
    bad = [j for j, r in zip(contract.joints, radians) if not math.isfinite(r)]
    if bad:
        raise ObservationRefused(f"{what}: non-finite positions for {bad}")
    values[contract.STATE_KEY] = units.ros_to_dataset(np.asarray(radians)).astype(np.float32)
    stamps.append(int(joint_state.stamp_ns))

    values["task"] = str(task)
    return Observation(stamp_ns=min(stamps), values=values)
