"""cdr encodes exactly what rosbags encodes, decodes rosbags' bytes, and rejects malformed input."""
from __future__ import annotations

import random
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling helpers (importlib mode)

from msg_rosbags_ref import from_rosbags, to_rosbags, typestore  # noqa: E402
from msg_samples import class_for, sample, type_names  # noqa: E402

from gemma3nvla_ros.runtime import cdr  # noqa: E402
from gemma3nvla_ros.runtime.interfaces import (  # noqa: E402
    builtin_interfaces,
    diagnostic_msgs,
    rcl_interfaces,
    sensor_msgs,
    std_msgs,
    std_srvs,
    trajectory_msgs,
)

DISTROS = ("humble", "jazzy")
SAMPLES_PER_TYPE = 6


@pytest.fixture(scope="module", params=DISTROS)
def distro_store(request):
    return request.param, typestore(request.param)


def _check_against_rosbags(msg, store):
    ours = cdr.serialize(msg)
    reference = bytes(store.serialize_cdr(to_rosbags(msg, store), msg._ros_type))
    assert ours == reference
    assert cdr.deserialize(ours, type(msg)) == msg
    # rosbags reads our bytes back to the same values
    assert from_rosbags(store.deserialize_cdr(ours, msg._ros_type), type(msg)) == msg
    return ours


@pytest.mark.parametrize("ros_type", type_names())
def test_every_type_matches_rosbags_bytes(distro_store, ros_type):
    distro, store = distro_store
    cls = class_for(ros_type, distro)
    rng = random.Random(f"{ros_type}-{distro}")
    for msg in [cls()] + [sample(cls, rng) for _ in range(SAMPLES_PER_TYPE)]:
        _check_against_rosbags(msg, store)


def _joint_state() -> sensor_msgs.msg.JointState:
    msg = sensor_msgs.msg.JointState(
        name=["shoulder_pan", "wrist_röll", "g"],
        position=[0.1, -0.2, 0.3],
        velocity=[],
        effort=[1.0, 2.0, 3.0],
    )
    msg.header.stamp = builtin_interfaces.msg.Time(sec=1_700_000_000, nanosec=123)
    msg.header.frame_id = "base_link"
    return msg


def _image(width: int, height: int) -> sensor_msgs.msg.Image:
    rng = np.random.default_rng(width)
    return sensor_msgs.msg.Image(
        height=height,
        width=width,
        encoding="rgb8",
        step=width * 3,
        data=rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8),
    )


def _trajectory(points: int, joints: int) -> trajectory_msgs.msg.JointTrajectory:
    point_cls = trajectory_msgs.msg.JointTrajectoryPoint
    return trajectory_msgs.msg.JointTrajectory(
        joint_names=[f"joint_{i}" for i in range(joints)],
        points=[
            point_cls(
                positions=[i * 0.01 + j for j in range(joints)],
                velocities=[0.5] * joints,
                time_from_start=builtin_interfaces.msg.Duration(sec=i // 30, nanosec=i * 1000),
            )
            for i in range(points)
        ],
    )


def _hand_written() -> list:
    return [
        _joint_state(),
        _image(1280, 720),
        _image(7, 3),  # odd byte count: whatever follows would need padding
        sensor_msgs.msg.CompressedImage(format="jpeg", data=b"\xff\xd8\xff" + bytes(1001)),
        sensor_msgs.msg.CameraInfo(
            distortion_model="plumb_bob", d=[0.1, -0.2, 0.0, 0.0, 0.05], k=list(range(9))
        ),
        _trajectory(50, 6),
        rcl_interfaces.msg.ParameterValue(
            type=rcl_interfaces.msg.ParameterType.PARAMETER_DOUBLE_ARRAY,
            byte_array_value=b"\x01\x02\x03",  # odd: the int64 count after it needs 1 byte padding
            bool_array_value=[True],
            integer_array_value=[],  # empty int64[]: no 8-byte padding before the next count
            double_array_value=[1.5, 2.5],
            string_array_value=["", "é"],
        ),
        diagnostic_msgs.msg.DiagnosticArray(
            status=[
                diagnostic_msgs.msg.DiagnosticStatus(
                    level=diagnostic_msgs.msg.DiagnosticStatus.ERROR,
                    name="bus",
                    values=[diagnostic_msgs.msg.KeyValue(key="k", value="v")],
                )
            ]
        ),
        std_msgs.msg.Float64MultiArray(
            layout=std_msgs.msg.MultiArrayLayout(
                dim=[std_msgs.msg.MultiArrayDimension(label="rows", size=2, stride=2)]
            ),
            data=[1.0, 2.0],
        ),
        std_srvs.srv.SetBool.Response(success=True, message="done"),
    ]


@pytest.mark.parametrize("index", range(len(_hand_written())))
def test_hand_written_cases_match_rosbags(distro_store, index):
    _check_against_rosbags(_hand_written()[index], distro_store[1])


def test_known_bytes_of_a_string_message():
    # header, uint32 length 3 (incl. NUL), "hi\0"
    assert cdr.serialize(std_msgs.msg.String(data="hi")) == b"\x00\x01\x00\x00\x03\x00\x00\x00hi\x00"
    assert cdr.serialize(std_msgs.msg.Empty()) == b"\x00\x01\x00\x00\x00"


def test_service_event_round_trips():
    event = std_srvs.srv.Trigger.Event(request=[std_srvs.srv.Trigger.Request()])
    event.info.client_gid = bytes(range(16))
    assert cdr.deserialize(cdr.serialize(event), type(event)) == event


# --- input forms ---------------------------------------------------------------------------------


@pytest.mark.parametrize("padding", [1, 2, 3, 8])
def test_trailing_zero_padding_is_accepted(padding):
    data = cdr.serialize(_joint_state())
    assert cdr.deserialize(data + bytes(padding), sensor_msgs.msg.JointState) == _joint_state()


def test_memoryview_and_bytearray_inputs_and_buffer_reuse():
    data = cdr.serialize(_image(16, 4))
    arena = bytearray(b"junk" + data + bytes(3))
    view = memoryview(arena)[4 : 4 + len(data)]
    msg = cdr.deserialize(view, sensor_msgs.msg.Image)
    assert msg == _image(16, 4)
    assert cdr.deserialize(bytearray(data), sensor_msgs.msg.Image) == msg
    arena[:] = bytes(len(arena))  # the transport reuses its buffer: the message must not change
    assert msg == _image(16, 4)


def test_numpy_buffer_input():
    data = cdr.serialize(_joint_state())
    assert cdr.deserialize(np.frombuffer(data, dtype=np.uint8), sensor_msgs.msg.JointState) == _joint_state()


# --- malformed input ------------------------------------------------------------------------------


def test_every_truncation_raises_cdr_error():
    data = cdr.serialize(_joint_state())
    for length in range(len(data)):
        with pytest.raises(cdr.CdrError):
            cdr.deserialize(data[:length], sensor_msgs.msg.JointState)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "shorter than"),
        (b"\x00\x01", "shorter than"),
        (b"\x00\x00\x00\x00\x03\x00\x00\x00hi\x00", "big-endian"),
        (b"\x00\x07\x00\x00\x03\x00\x00\x00hi\x00", "unsupported encapsulation"),
        (b"\x00\x01\x00\x00\x03\x00\x00\x00hi\x01", "NUL"),
        (b"\x00\x01\x00\x00\x03\x00\x00\x00\xff\xfe\x00", "UTF-8"),
        (b"\x00\x01\x00\x00\xff\xff\xff\xffhi\x00", "does not fit"),
        (b"\x00\x01\x00\x00\x03\x00\x00\x00hi\x00\x00\x07", "non-zero bytes"),
    ],
)
def test_malformed_string_payloads(data, match):
    with pytest.raises(cdr.CdrError, match=match):
        cdr.deserialize(data, std_msgs.msg.String)


def _with_count_at(data: bytes, offset: int, count: int) -> bytes:
    return data[:offset] + struct.pack("<I", count) + data[offset + 4 :]


@pytest.mark.parametrize(
    "msg",
    [sensor_msgs.msg.Image(), sensor_msgs.msg.JointState(), trajectory_msgs.msg.JointTrajectory()],
)
def test_absurd_sequence_counts_fail_fast_without_allocating(msg):
    cls = type(msg)
    data = cdr.serialize(msg)
    # The last 4 bytes of each of these default messages are an (empty) sequence count.
    bogus = _with_count_at(data, len(data) - 4, 0xFFFFFFFF)
    # "does not fit" comes from the size check made before anything is allocated or looped over
    with pytest.raises(cdr.CdrError, match="does not fit"):
        cdr.deserialize(bogus, cls)


def test_bounded_sequence_over_its_bound_is_rejected():
    descriptor = rcl_interfaces.msg.ParameterDescriptor(
        floating_point_range=[rcl_interfaces.msg.FloatingPointRange()]
    )
    data = cdr.serialize(descriptor)
    # body: name(4+1) type(1) pad(2) description(4+1) pad(3) constraints(4+1) 2 bools pad(1) count
    count_offset = 4 + 24
    assert data[count_offset : count_offset + 4] == b"\x01\x00\x00\x00"
    with pytest.raises(cdr.CdrError, match="bound"):
        cdr.deserialize(_with_count_at(data, count_offset, 2), rcl_interfaces.msg.ParameterDescriptor)


def test_random_corruption_only_ever_raises_cdr_error():
    rng = random.Random(1234)
    payloads = [
        (cdr.serialize(m), type(m))
        for m in (_joint_state(), _trajectory(3, 2), _hand_written()[6], _hand_written()[7])
    ]
    decoded = 0
    for _ in range(3000):
        data, cls = rng.choice(payloads)
        corrupt = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(4, len(corrupt))
            corrupt[position] = rng.choice([0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        if rng.random() < 0.3:
            del corrupt[rng.randrange(4, len(corrupt)) :]
        try:
            msg = cdr.deserialize(bytes(corrupt), cls)
        except cdr.CdrError:
            continue
        assert isinstance(msg, cls)
        decoded += 1
    assert decoded > 0  # some corruptions only change values


def test_deserialize_rejects_non_message_classes():
    with pytest.raises(TypeError):
        cdr.deserialize(b"\x00\x01\x00\x00", dict)


# --- serialization errors ---------------------------------------------------------------------


def test_values_smuggled_past_the_setters_raise_cdr_error():
    msg = sensor_msgs.msg.JointState(name=["a"])
    msg.name.append(3)  # list mutation bypasses the setter, as in rclpy
    with pytest.raises(cdr.CdrError, match="JointState"):
        cdr.serialize(msg)
    traj = trajectory_msgs.msg.JointTrajectory()
    traj.points.append(std_msgs.msg.Empty())
    with pytest.raises(cdr.CdrError, match="JointTrajectoryPoint"):
        cdr.serialize(traj)
