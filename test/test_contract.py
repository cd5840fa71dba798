"""The contract file: loading, the errors for every kind of malformed entry, and the checkpoint check."""
from __future__ import annotations

import pytest
from lerobot.configs.types import FeatureType, PolicyFeature

from gemma3nvla_ros.contract import Contract, ContractError, default_contract_path
from gemma3nvla_ros.control.units import UnitMode
from gemma3nvla_ros.hardware.calibration import EXAMPLE_CALIBRATION

JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
WRIST, TOP = "observation.images.wrist", "observation.images.top"


def valid() -> dict:
    return {
        "fps": 30, "chunk_size": 50, "joints": list(JOINTS), "units": "degrees",
        "cameras": {WRIST: "/cameras/wrist/image_raw", TOP: "/cameras/top/image_raw"},
    }


def features(cameras=(WRIST, TOP), state=6, action=6, img=(3, 480, 640), extra_inputs=None, extra_outputs=None):
    inputs = {k: PolicyFeature(type=FeatureType.VISUAL, shape=img) for k in cameras}
    if state is not None:
        inputs["observation.state"] = PolicyFeature(type=FeatureType.STATE, shape=(state,))
    inputs.update(extra_inputs or {})
    outputs = {"action": PolicyFeature(type=FeatureType.ACTION, shape=(action,))} if action is not None else {}
    outputs.update(extra_outputs or {})
    return inputs, outputs


def test_shipped_contract_loads():
    c = Contract.load(default_contract_path())
    assert c.fps == 30.0 and c.chunk_size == 50
    assert c.joints == tuple(JOINTS) and c.units is UnitMode.DEGREES
    assert list(c.cameras) == [WRIST, TOP]  # file order is kept
    assert c.cameras[TOP] == "/cameras/top/image_raw"
    assert c.joint_states_topic == "/joint_states" and c.action_chunk_topic == "/action_chunk"
    assert Contract.STATE_KEY == "observation.state" and Contract.ACTION_KEY == "action"
    with pytest.raises(TypeError):
        c.cameras["observation.images.side"] = "/x"  # immutable, as the dataclass is frozen
    assert Contract.from_dict(c.to_dict()) == c


def test_defaults_and_range_units():
    c = Contract.from_dict({**valid(), "units": "RANGE_M100_100", "fps": 15.5})
    assert c.units is UnitMode.RANGE_M100_100 and c.fps == 15.5
    assert c.joint_states_topic == "/joint_states"


@pytest.mark.parametrize("change, message", [
    ({"fps": None}, r"missing keys \['fps'\]"),
    ({"cameras": None, "units": None}, r"missing keys \['units', 'cameras'\]"),
    ({"camera": {}}, r"unknown keys \['camera'\]"),
    ({"fps": 0}, "fps must be a positive number"),
    ({"fps": "30"}, "fps must be a positive number"),
    ({"fps": float("nan")}, "fps must be a positive number"),
    ({"chunk_size": 0}, "chunk_size must be a positive integer"),
    ({"chunk_size": True}, "chunk_size must be a positive integer"),
    ({"chunk_size": 50.0}, "chunk_size must be a positive integer"),
    ({"joints": []}, "joints must be a non-empty list"),
    ({"joints": "shoulder_pan"}, "joints must be a non-empty list"),
    ({"joints": ["a", "b", "a"]}, r"joints lists \['a'\] more than once"),
    ({"units": "radians"}, "unit mode must be 'degrees' or 'range_m100_100'"),
    ({"cameras": {}}, "cameras must map policy image keys"),
    ({"cameras": {"wrist": "/cameras/wrist/image_raw"}}, r"camera key 'wrist' must be observation.images.<name>"),
    ({"cameras": {WRIST: "cameras wrist"}}, r"'cameras wrist' is not a ROS topic name"),
    ({"cameras": {"observation.images.empty_camera_0": "/x"}}, "added by the policy"),
    ({"joint_states_topic": "/joint states"}, "joint_states_topic: '/joint states' is not a ROS topic name"),
    ({"action_chunk_topic": 5}, "action_chunk_topic: 5 is not a ROS topic name"),
])
def test_bad_contract_is_refused_with_the_reason(change, message):
    data = valid()
    for key, value in change.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    with pytest.raises(ContractError, match=message):
        Contract.from_dict(data)


def test_every_problem_is_reported_at_once():
    with pytest.raises(ContractError) as err:
        Contract.from_dict({**valid(), "fps": -1, "chunk_size": 0, "extra": 1})
    text = str(err.value)
    assert "fps" in text and "chunk_size" in text and "unknown keys ['extra']" in text


def test_load_errors(tmp_path):
    with pytest.raises(ContractError, match="does not exist"):
        Contract.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("fps: [30\n")
    with pytest.raises(ContractError, match="not valid YAML"):
        Contract.load(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ContractError, match="a contract is a mapping"):
        Contract.load(bad)
    bad.write_text("fps: 30\n")
    with pytest.raises(ContractError, match=rf"{bad}: missing keys"):  # the file is named
        Contract.load(bad)


def test_check_features_accepts_a_matching_checkpoint():
    c = Contract.from_dict(valid())
    inputs, outputs = features()
    c.check_features(inputs, outputs, chunk_size=50)
    # The policy's own masked-out cameras are not the graph's business.
    inputs["observation.images.empty_camera_0"] = PolicyFeature(type=FeatureType.VISUAL, shape=(3, 480, 640))
    c.check_features(inputs, outputs)


def test_check_features_names_every_difference():
    c = Contract.from_dict(valid())
    inputs, outputs = features(
        cameras=(TOP, "observation.images.side"), state=7, action=5,
        extra_inputs={"observation.environment_state": PolicyFeature(type=FeatureType.ENV, shape=(4,))},
        extra_outputs={"reward": PolicyFeature(type=FeatureType.REWARD, shape=(1,))},
    )
    with pytest.raises(ContractError) as err:
        c.check_features(inputs, outputs, chunk_size=10)
    text = str(err.value)
    for needle in (
        f"contract camera '{WRIST}' (/cameras/wrist/image_raw) is not an input of the checkpoint",
        "checkpoint input 'observation.images.side' (3, 480, 640) has no camera topic in the contract",
        "checkpoint 'observation.state' has shape (7,), contract has 6 joints",
        "checkpoint 'action' has shape (5,), contract has 6 joints",
        "checkpoint input 'observation.environment_state' (4,) is not provided by the graph",
        "checkpoint output 'reward' (1,) is not consumed by the graph",
        "checkpoint chunk_size is 10, contract chunk_size is 50",
    ):
        assert needle in text, (needle, text)
    assert TOP not in text.replace("/cameras/top", "")  # a matching camera is not reported


def test_check_features_missing_state_and_action():
    c = Contract.from_dict(valid())
    inputs, outputs = features(state=None, action=None)
    with pytest.raises(ContractError, match=r"no input 'observation.state'.*no output 'action'"):
        c.check_features(inputs, outputs)


def test_dataset_units_follow_the_contract():
    c = Contract.from_dict({**valid(), "joints": ["gripper", "shoulder_pan"], "units": "range_m100_100"})
    units = c.dataset_units(EXAMPLE_CALIBRATION)
    assert units.ranges.names == ("gripper", "shoulder_pan") and units.mode is UnitMode.RANGE_M100_100
    c.check_units(units)
    with pytest.raises(ContractError, match="build it with Contract.dataset_units"):
        Contract.from_dict(valid()).check_units(units)
    with pytest.raises(ContractError, match=r"no entry for joints \['elbow'\]"):
        Contract.from_dict({**valid(), "joints": ["elbow", "gripper"]}).dataset_units(EXAMPLE_CALIBRATION)
