"""build_observation: what it produces (dataset units as LeRobot computes them, oldest stamp) and every reason
it refuses; image_to_rgb lives in test/hardware/test_image_msgs.py."""
from __future__ import annotations

import types

import numpy as np
import pytest

from gemma3nvla_ros.contract import Contract, ContractError, default_contract_path
from gemma3nvla_ros.control import units as u
from gemma3nvla_ros.control.observation import (
    Observation,
    ObservationRefused,
    Stamped,
    build_observation,
    joint_state_positions,
)
from gemma3nvla_ros.hardware.calibration import EXAMPLE_CALIBRATION, SO101_MOTORS

S = 1_000_000_000
NOW = 100 * S
MAX_AGE = S // 2
WRIST, TOP = "observation.images.wrist", "observation.images.top"


@pytest.fixture(scope="module")
def contract() -> Contract:
    return Contract.load(default_contract_path())


def frame(value: int = 7, shape=(48, 64, 3)) -> np.ndarray:
    return np.full(shape, value, dtype=np.uint8)


def inputs(contract: Contract, stamp: int = NOW):
    """Fresh, complete inputs: both cameras, all joints at mid-range (0 rad)."""
    images = {key: Stamped(stamp, frame(i)) for i, key in enumerate(contract.cameras)}
    joints = Stamped(stamp, {name: 0.0 for name in contract.joints})
    return images, joints


def build(contract: Contract, images, joints, task="pick the red cube", units=None, **kw) -> Observation:
    units = units or contract.dataset_units(EXAMPLE_CALIBRATION)
    return build_observation(contract, units, images, joints, task, now_ns=kw.pop("now_ns", NOW),
                             max_age_ns=kw.pop("max_age_ns", MAX_AGE), **kw)


def test_observation_values_and_oldest_stamp(contract):
    images, joints = inputs(contract)
    images[TOP] = Stamped(NOW - 300_000_000, images[TOP].value)
    joints = Stamped(NOW - 100_000_000, {**joints.value, "extra_joint": 1.0})  # others' joints are ignored
    obs = build(contract, images, joints)
    assert obs.stamp_ns == NOW - 300_000_000  # the oldest input, not the newest
    assert set(obs.values) == {WRIST, TOP, "observation.state", "task"}
    assert obs.values[WRIST] is images[WRIST].value and obs.values[TOP] is images[TOP].value
    state = obs.values["observation.state"]
    assert state.dtype == np.float32 and state.shape == (6,)
    np.testing.assert_allclose(state[:5], 0.0, atol=1e-4)  # 0 rad = mid-range = 0 degrees
    assert obs.values["task"] == "pick the red cube"


def _lerobot_normalize(calibration, use_degrees: bool, ticks_row):
    from lerobot.motors import Motor, MotorCalibration, MotorNormMode
    from lerobot.motors.feetech import FeetechMotorsBus

    body = MotorNormMode.DEGREES if use_degrees else MotorNormMode.RANGE_M100_100
    motors = {n: Motor(i, "sts3215", MotorNormMode.RANGE_0_100 if n == "gripper" else body) for n, i in SO101_MOTORS.items()}
    bus = FeetechMotorsBus(port="/dev/null-not-opened", motors=motors,
                           calibration={n: MotorCalibration(**c) for n, c in calibration.items()})
    out = bus._normalize({SO101_MOTORS[n]: int(t) for n, t in zip(SO101_MOTORS, ticks_row)})
    return np.array([out[SO101_MOTORS[n]] for n in SO101_MOTORS])


@pytest.mark.parametrize("mode", ["degrees", "range_m100_100"])
@pytest.mark.parametrize("drive_modes", [(0,) * 6, (1, 0, 1, 0, 1, 1)])
def test_state_is_what_lerobot_computes_from_the_same_ticks(mode, drive_modes):
    """The bridge publishes ticks as radians; the state must be LeRobot's normalization of those ticks."""
    calibration = {n: {**c, "drive_mode": dm} for (n, c), dm in zip(EXAMPLE_CALIBRATION.items(), drive_modes)}
    contract = Contract.from_dict({**Contract.load(default_contract_path()).to_dict(), "units": mode})
    units = contract.dataset_units(calibration)
    images, _ = inputs(contract)
    rng = np.random.default_rng(1)
    for ticks in rng.integers([c["range_min"] for c in calibration.values()],
                              [c["range_max"] + 1 for c in calibration.values()], size=(20, 6)):
        radians = u.ticks_to_radians(ticks, units.ranges)  # what /joint_states carries
        joints = Stamped(NOW, dict(zip(contract.joints, radians.tolist())))
        state = build(contract, images, joints, units=units).values["observation.state"]
        expected = _lerobot_normalize(calibration, mode == "degrees", ticks)
        np.testing.assert_allclose(state, expected, rtol=0, atol=1e-4)


def test_joint_order_is_the_contract_order(contract):
    images, joints = inputs(contract)
    positions = {name: 0.01 * (i + 1) for i, name in enumerate(reversed(contract.joints))}
    state = build(contract, images, Stamped(NOW, positions)).values["observation.state"]
    units = contract.dataset_units(EXAMPLE_CALIBRATION)
    expected = units.ros_to_dataset([positions[n] for n in contract.joints])
    np.testing.assert_allclose(state, expected, rtol=1e-6)


def _refusal(contract, images, joints, task="pick", **kw) -> str:
    with pytest.raises(ObservationRefused) as err:
        build(contract, images, joints, task=task, **kw)
    return str(err.value)


def test_refuses_camera_without_frame(contract):
    images, joints = inputs(contract)
    images[WRIST] = None
    assert _refusal(contract, images, joints) == f"camera {WRIST} (/cameras/wrist/image_raw): no frame received yet"
    del images[WRIST]
    assert "no frame received yet" in _refusal(contract, images, joints)


def test_refuses_stale_and_future_camera(contract):
    images, joints = inputs(contract)
    images[TOP] = Stamped(NOW - MAX_AGE - 1, frame())
    text = _refusal(contract, images, joints)
    assert text.startswith(f"camera {TOP} (/cameras/top/image_raw) is stale: captured 0.500 s ago")
    images[TOP] = Stamped(NOW + MAX_AGE + S, frame())
    text = _refusal(contract, images, joints)
    assert f"camera {TOP} (/cameras/top/image_raw) is stamped 1.500 s in the future" in text
    images[TOP] = Stamped(NOW - MAX_AGE, frame())  # exactly max_age old is still fresh
    assert build(contract, images, joints).stamp_ns == NOW - MAX_AGE


def test_refuses_stale_and_future_joint_states(contract):
    images, joints = inputs(contract)
    text = _refusal(contract, images, Stamped(NOW - 2 * S, joints.value))
    assert text.startswith("joint_states (/joint_states) is stale: captured 2.000 s ago")
    text = _refusal(contract, images, Stamped(NOW + MAX_AGE + 1, joints.value))
    assert text.startswith("joint_states (/joint_states) is stamped") and "in the future" in text
    assert _refusal(contract, images, None) == "joint_states (/joint_states): no message received yet"


def test_refuses_missing_joints(contract):
    images, joints = inputs(contract)
    partial = {k: v for k, v in joints.value.items() if k not in ("gripper", "wrist_roll")}
    text = _refusal(contract, images, Stamped(NOW, partial))
    assert "joint_states (/joint_states): lacks contracted joints ['wrist_roll', 'gripper']" in text


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_refuses_non_finite_positions(contract, bad):
    images, joints = inputs(contract)
    text = _refusal(contract, images, Stamped(NOW, {**joints.value, "elbow_flex": bad}))
    assert text == "joint_states (/joint_states): non-finite positions for ['elbow_flex']"


@pytest.mark.parametrize("task", [None, "", "   ", "\n\t"])
def test_refuses_without_task(contract, task):
    images, joints = inputs(contract)
    assert _refusal(contract, images, joints, task=task) == "no task: set one before the policy can act"


def test_refuses_frames_that_are_not_rgb8_or_at_another_resolution(contract):
    images, joints = inputs(contract)
    images[WRIST] = Stamped(NOW, frame().astype(np.float32))
    assert "frame must be HxWx3 uint8 RGB, got float32 (48, 64, 3)" in _refusal(contract, images, joints)
    images[WRIST] = Stamped(NOW, np.zeros((48, 64), np.uint8))
    assert "frame must be HxWx3 uint8 RGB" in _refusal(contract, images, joints)
    images, joints = inputs(contract)
    shapes = {WRIST: (48, 64), TOP: (480, 640)}
    text = _refusal(contract, images, joints, image_shapes=shapes)
    assert text.startswith(f"camera {TOP} (/cameras/top/image_raw): frame is 48x64 (HxW), the checkpoint expects 480x640")
    shapes[TOP] = (48, 64)
    assert build(contract, images, joints, image_shapes=shapes).values[TOP].shape == (48, 64, 3)


def test_units_for_another_contract_are_a_programming_error(contract):
    images, joints = inputs(contract)
    other = Contract.from_dict({**contract.to_dict(), "units": "range_m100_100"}).dataset_units(EXAMPLE_CALIBRATION)
    with pytest.raises(ContractError, match="build it with Contract.dataset_units"):
        build(contract, images, joints, units=other)


def test_joint_state_positions_from_a_message():
    msg = types.SimpleNamespace(name=["a", "b", "c"], position=[0.5, -1.0])  # c has no position
    assert joint_state_positions(msg) == {"a": 0.5, "b": -1.0}
