"""The observation/action contract: the ONE mapping between the ROS graph and a policy checkpoint.

``config/so101_contract.yaml`` says which topic feeds which policy input, the joint order of
``observation.state`` and ``action``, the dataset's units and rate. The live nodes and the offline tools
(bag replay, bag -> dataset) read it, so they cannot disagree about it; a checkpoint is checked against it
(:meth:`Contract.check_features`) before it is allowed to drive the arm. No ROS imports.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from gemma3nvla_ros.control.units import DatasetUnits, JointRanges, UnitMode

IMAGE_PREFIX = "observation.images."
# Cameras the gemma3nvla policy adds itself (zero images, masked out): never provided by the graph.
EMPTY_CAMERA_PREFIX = f"{IMAGE_PREFIX}empty_camera_"
DEFAULT_CONTRACT = "so101_contract.yaml"

_REQUIRED = ("fps", "chunk_size", "joints", "units", "cameras")
_OPTIONAL = ("joint_states_topic", "action_chunk_topic")
# ROS 2 topic names (absolute or relative; ~ and substitutions are not meaningful in a shared contract).
_TOPIC = re.compile(r"^/?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")


class ContractError(ValueError):
    """The contract file is malformed, or a checkpoint does not fit it; ``str()`` lists every problem."""


def _feature_shape(feature: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in getattr(feature, "shape", ()))


@dataclass(frozen=True)
class Contract:
    fps: float
    chunk_size: int
    joints: tuple[str, ...]
    units: UnitMode
    cameras: Mapping[str, str]  # policy image key -> ROS image topic, in file order
    joint_states_topic: str = "/joint_states"
    action_chunk_topic: str = "/action_chunk"
    source: str = field(default="<dict>", compare=False)  # where it was read from, for error messages

    STATE_KEY: ClassVar[str] = "observation.state"
    ACTION_KEY: ClassVar[str] = "action"

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path) -> "Contract":
        import yaml

        path = Path(path).expanduser()
        if not path.is_file():
            raise ContractError(f"contract file {path} does not exist (see config/{DEFAULT_CONTRACT})")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ContractError(f"{path}: not valid YAML: {exc}") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "<dict>") -> "Contract":
        if not isinstance(data, Mapping):
            raise ContractError(f"{source}: a contract is a mapping of {list(_REQUIRED + _OPTIONAL)}, got {type(data).__name__}")
        problems: list[str] = []
        missing = [k for k in _REQUIRED if k not in data]
        unknown = sorted(str(k) for k in data if k not in _REQUIRED + _OPTIONAL)
        if missing:
            problems.append(f"missing keys {missing}")
        if unknown:
            problems.append(f"unknown keys {unknown} (known: {list(_REQUIRED + _OPTIONAL)})")

        fps = data.get("fps")
        if "fps" in data and not (_is_number(fps) and math.isfinite(float(fps)) and float(fps) > 0):
            problems.append(f"fps must be a positive number (Hz), got {fps!r}")
        chunk = data.get("chunk_size")
        if "chunk_size" in data and not (isinstance(chunk, int) and not isinstance(chunk, bool) and chunk > 0):
            problems.append(f"chunk_size must be a positive integer, got {chunk!r}")

        joints = data.get("joints")
        if "joints" in data:
            if not isinstance(joints, (list, tuple)) or not joints or not all(isinstance(j, str) and j.strip() for j in joints):
                problems.append(f"joints must be a non-empty list of joint names, got {joints!r}")
            else:
                dups = sorted({j for j in joints if joints.count(j) > 1})
                if dups:
                    problems.append(f"joints lists {dups} more than once")

        units = data.get("units")
        if "units" in data:
            try:
                units = UnitMode.parse(units)
            except ValueError as exc:
                problems.append(str(exc))

        cameras = data.get("cameras")
        if "cameras" in data:
            if not isinstance(cameras, Mapping) or not cameras:
                problems.append(f"cameras must map policy image keys ({IMAGE_PREFIX}<name>) to image topics, got {cameras!r}")
            else:
                for key, topic in cameras.items():
                    if not isinstance(key, str) or not key.startswith(IMAGE_PREFIX) or key == IMAGE_PREFIX:
                        problems.append(f"camera key {key!r} must be {IMAGE_PREFIX}<name>")
                    elif key.startswith(EMPTY_CAMERA_PREFIX):
                        problems.append(f"camera key {key!r}: {EMPTY_CAMERA_PREFIX}* are added by the policy, not the graph")
                    if not _is_topic(topic):
                        problems.append(f"camera {key!r}: {topic!r} is not a ROS topic name")
        for key in _OPTIONAL:
            if key in data and not _is_topic(data[key]):
                problems.append(f"{key}: {data[key]!r} is not a ROS topic name")

        if problems:
            raise ContractError(f"{source}: " + "; ".join(problems))
        return cls(
            fps=float(fps),
            chunk_size=int(chunk),
            joints=tuple(joints),
            units=units,
            cameras=MappingProxyType({str(k): str(v) for k, v in cameras.items()}),
            joint_states_topic=str(data.get("joint_states_topic", "/joint_states")),
            action_chunk_topic=str(data.get("action_chunk_topic", "/action_chunk")),
            source=source,
        )

    def to_dict(self) -> dict[str, Any]:
        """The YAML form (what :meth:`from_dict` reads)."""
        return {
            "fps": self.fps, "chunk_size": self.chunk_size, "joints": list(self.joints), "units": self.units.value,
            "joint_states_topic": self.joint_states_topic, "action_chunk_topic": self.action_chunk_topic,
            "cameras": dict(self.cameras),
        }

    # ------------------------------------------------------------------ units
    def dataset_units(self, calibration: Mapping[str, Any], gripper: str | None = "gripper") -> DatasetUnits:
        """The converter for this contract's joints, in its order and units, from a LeRobot calibration
        (``{name: MotorCalibration}`` or the JSON dicts)."""
        missing = [j for j in self.joints if j not in calibration]
        if missing:
            raise ContractError(
                f"{self.source}: the calibration has no entry for joints {missing} (it has {sorted(calibration)})"
            )
        return DatasetUnits(JointRanges.from_calibration(calibration, self.joints), self.units, gripper=gripper)

    def check_units(self, units: DatasetUnits) -> None:
        """A converter built for another joint order or unit mode would silently scramble the state vector."""
        if tuple(units.ranges.names) != self.joints or units.mode is not self.units:
            raise ContractError(
                f"{self.source}: DatasetUnits for joints {list(units.ranges.names)} in {units.mode.value}, but the "
                f"contract says joints {list(self.joints)} in {self.units.value}; build it with Contract.dataset_units"
            )

    # ------------------------------------------------------------------ checkpoint check
    def check_features(
        self,
        input_features: Mapping[str, Any],
        output_features: Mapping[str, Any],
        chunk_size: int | None = None,
    ) -> None:
        """Raises one ContractError naming every way a checkpoint's features differ from this contract.

        ``input_features``/``output_features`` are a policy config's (``{key: PolicyFeature}``). Checked:
        cameras on either side only, state/action width vs ``len(joints)``, checkpoint inputs the graph
        does not provide, and, when given, the checkpoint's ``chunk_size``.
        """
        problems: list[str] = []
        n = len(self.joints)
        ckpt_cameras = [k for k in input_features if k.startswith(IMAGE_PREFIX) and not k.startswith(EMPTY_CAMERA_PREFIX)]
        for key, topic in self.cameras.items():
            if key not in input_features:
                problems.append(f"contract camera {key!r} ({topic}) is not an input of the checkpoint")
        for key in ckpt_cameras:
            if key not in self.cameras:
                problems.append(
                    f"checkpoint input {key!r} {_feature_shape(input_features[key])} has no camera topic in the contract"
                )
        for key, feature_set, role in ((self.STATE_KEY, input_features, "input"), (self.ACTION_KEY, output_features, "output")):
            if key not in feature_set:
                problems.append(f"checkpoint has no {role} {key!r} (contract: {n} joints {list(self.joints)})")
                continue
            shape = _feature_shape(feature_set[key])
            if shape != (n,):
                problems.append(f"checkpoint {key!r} has shape {shape}, contract has {n} joints {list(self.joints)}")
        provided = {self.STATE_KEY, *self.cameras}
        extra_in = [k for k in input_features if k not in provided and not k.startswith(IMAGE_PREFIX)]
        for key in extra_in:
            problems.append(
                f"checkpoint input {key!r} {_feature_shape(input_features[key])} is not provided by the graph"
            )
        for key in output_features:
            if key != self.ACTION_KEY:
                problems.append(f"checkpoint output {key!r} {_feature_shape(output_features[key])} is not consumed by the graph")
        if chunk_size is not None and int(chunk_size) != self.chunk_size:
            problems.append(f"checkpoint chunk_size is {chunk_size}, contract chunk_size is {self.chunk_size}")
        if problems:
            raise ContractError(f"checkpoint does not fit the contract {self.source}: " + "; ".join(problems))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_topic(value: Any) -> bool:
    return isinstance(value, str) and bool(_TOPIC.match(value))


def default_contract_path() -> Path:
    """``<share>/config/so101_contract.yaml`` (a source checkout, the ament index, or a pip install)."""
    from gemma3nvla_ros.paths import config_dir

    return config_dir() / DEFAULT_CONTRACT
