"""The runtime's message classes behave like rclpy's generated ones (docs: rclpy-facts.md)."""
from __future__ import annotations

import array
import copy
import pickle

import numpy as np
import pytest

from gemma3nvla_ros.runtime.interfaces import (
    builtin_interfaces,
    diagnostic_msgs,
    get_type,
    rcl_interfaces,
    rmw_dds_common,
    rosgraph_msgs,
    sensor_msgs,
    std_msgs,
    std_srvs,
    trajectory_msgs,
)

JointState = sensor_msgs.msg.JointState
Image = sensor_msgs.msg.Image
CameraInfo = sensor_msgs.msg.CameraInfo
Time = builtin_interfaces.msg.Time


# --- namespaces and names -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "ros_type"),
    [
        (builtin_interfaces.msg.Duration, "builtin_interfaces/msg/Duration"),
        (std_msgs.msg.Float64MultiArray, "std_msgs/msg/Float64MultiArray"),
        (sensor_msgs.msg.CompressedImage, "sensor_msgs/msg/CompressedImage"),
        (trajectory_msgs.msg.JointTrajectoryPoint, "trajectory_msgs/msg/JointTrajectoryPoint"),
        (rosgraph_msgs.msg.Clock, "rosgraph_msgs/msg/Clock"),
        (diagnostic_msgs.msg.KeyValue, "diagnostic_msgs/msg/KeyValue"),
        (rcl_interfaces.msg.ParameterEvent, "rcl_interfaces/msg/ParameterEvent"),
        (std_srvs.srv.Trigger, "std_srvs/srv/Trigger"),
        (std_srvs.srv.Trigger.Request, "std_srvs/srv/Trigger_Request"),
        (rcl_interfaces.srv.GetParameters.Response, "rcl_interfaces/srv/GetParameters_Response"),
    ],
)
def test_classes_carry_their_ros_type_and_are_registered(cls, ros_type):
    assert cls._ros_type == ros_type
    assert get_type(ros_type) is cls


def test_namespaces_import_like_ros_packages():
    from gemma3nvla_ros.runtime.interfaces.sensor_msgs.msg import JointState as imported
    from gemma3nvla_ros.runtime.interfaces.std_srvs.srv import SetBool

    assert imported is JointState
    assert SetBool.Request().get_fields_and_field_types() == {"data": "boolean"}


def test_unknown_type_name_raises_key_error():
    with pytest.raises(KeyError, match="no_msgs/msg/Nope"):
        get_type("no_msgs/msg/Nope")


# --- field types as reported by rclpy --------------------------------------------------------


def test_get_fields_and_field_types_match_rclpy():
    assert JointState.get_fields_and_field_types() == {
        "header": "std_msgs/Header",
        "name": "sequence<string>",
        "position": "sequence<double>",
        "velocity": "sequence<double>",
        "effort": "sequence<double>",
    }
    image = Image.get_fields_and_field_types()
    assert {k: image[k] for k in ("height", "width", "step", "encoding", "is_bigendian", "data")} == {
        "height": "uint32",
        "width": "uint32",
        "step": "uint32",
        "encoding": "string",
        "is_bigendian": "uint8",
        "data": "sequence<uint8>",
    }
    point = trajectory_msgs.msg.JointTrajectoryPoint.get_fields_and_field_types()
    assert point["positions"] == "sequence<double>"
    assert point["time_from_start"] == "builtin_interfaces/Duration"
    info = CameraInfo.get_fields_and_field_types()
    assert (info["d"], info["k"], info["r"], info["p"]) == (
        "sequence<double>", "double[9]", "double[9]", "double[12]"
    )
    assert rmw_dds_common.msg.NodeEntitiesInfo.get_fields_and_field_types()["node_name"] == "string<256>"
    descriptor = rcl_interfaces.msg.ParameterDescriptor.get_fields_and_field_types()
    assert descriptor["integer_range"] == "sequence<rcl_interfaces/IntegerRange, 1>"


def test_get_fields_and_field_types_returns_a_copy():
    JointState.get_fields_and_field_types()["name"] = "tampered"
    assert JointState.get_fields_and_field_types()["name"] == "sequence<string>"


# --- storage types ------------------------------------------------------------------------------


def test_numeric_sequences_are_arrays_and_convert_lists_ints_and_numpy():
    msg = JointState()
    assert msg.position == array.array("d")
    assert isinstance(msg.position, array.array) and msg.position.typecode == "d"
    msg.position = [1.5, 2.5]
    assert msg.position == array.array("d", [1.5, 2.5])
    msg.velocity = [1, 2]
    assert msg.velocity == array.array("d", [1.0, 2.0])
    msg.effort = np.array([0.25, -3.0], dtype=np.float32)
    assert msg.effort == array.array("d", [0.25, -3.0])


def test_uint8_sequences_accept_bytes_bytearray_and_uint8_numpy():
    frame = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    for value in (frame.tobytes(), bytearray(frame.tobytes()), frame, memoryview(frame.tobytes())):
        msg = Image(data=value)
        assert msg.data.typecode == "B"
        assert msg.data.tobytes() == frame.tobytes()
    assert sensor_msgs.msg.CompressedImage(data=b"\xff\xd8").data == array.array("B", [255, 216])


def test_integer_sequences_use_matching_typecodes():
    assert rcl_interfaces.msg.ParameterValue().integer_array_value.typecode == "q"
    assert rcl_interfaces.srv.GetParameterTypes.Response(types=[1, 9]).types.typecode == "B"


def test_bool_sequences_are_lists_of_python_bools():
    value = rcl_interfaces.msg.ParameterValue(bool_array_value=np.array([True, False]))
    assert value.bool_array_value == [True, False]
    assert all(type(v) is bool for v in value.bool_array_value)
    with pytest.raises(TypeError):
        rcl_interfaces.msg.ParameterValue(bool_array_value=[1])


def test_fixed_arrays_are_numpy():
    info = CameraInfo()
    assert isinstance(info.k, np.ndarray) and info.k.dtype == np.float64
    assert np.array_equal(info.k, np.zeros(9))
    info.p = list(range(12))
    assert info.p.dtype == np.float64 and info.p[11] == 11.0
    gid = rmw_dds_common.msg.Gid(data=bytes(range(16)))
    assert gid.data.dtype == np.uint8 and list(gid.data) == list(range(16))


def test_string_and_message_sequences_are_lists():
    traj = trajectory_msgs.msg.JointTrajectory(joint_names=("a", "b"))
    assert traj.joint_names == ["a", "b"] and isinstance(traj.joint_names, list)
    assert traj.points == [] and isinstance(traj.points, list)


def test_defaults_are_not_shared_between_instances():
    first, second = JointState(), JointState()
    first.name.append("x")
    first.position.append(1.0)
    first.header.stamp.sec = 7
    assert second.name == [] and len(second.position) == 0 and second.header.stamp.sec == 0


def test_byte_fields_and_constants_are_bytes_like_rclpy():
    status = diagnostic_msgs.msg.DiagnosticStatus
    assert (status.OK, status.WARN, status.ERROR, status.STALE) == (b"\x00", b"\x01", b"\x02", b"\x03")
    assert status().level == b"\x00"
    assert status(level=status.ERROR).level == b"\x02"
    with pytest.raises(TypeError):
        status(level=2)
    assert rcl_interfaces.msg.ParameterValue(byte_array_value=b"\x01\x02").byte_array_value == [
        b"\x01", b"\x02"
    ]


def test_integer_constants():
    types = rcl_interfaces.msg.ParameterType
    assert types.PARAMETER_NOT_SET == 0 and types.PARAMETER_STRING == 4
    assert types.PARAMETER_STRING_ARRAY == 9
    assert rcl_interfaces.msg.Log.INFO == 20 and rcl_interfaces.msg.Log.FATAL == 50
    assert rcl_interfaces.srv.ListParameters.Request.DEPTH_RECURSIVE == 0


# --- slots and type checking --------------------------------------------------------------------


def test_slots_reject_unknown_attributes():
    msg = JointState()
    assert not hasattr(msg, "__dict__")
    with pytest.raises(AttributeError):
        msg.positions = [1.0]


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: JointState(position=["a"]), TypeError),
        (lambda: JointState(position="12"), TypeError),
        (lambda: JointState(name=[1]), TypeError),
        (lambda: JointState(header=std_msgs.msg.String()), TypeError),
        (lambda: Image(height=-1), ValueError),
        (lambda: Image(height=2**32), ValueError),
        (lambda: Image(height="1"), TypeError),
        (lambda: Image(data=[256]), ValueError),
        (lambda: Image(data=np.array([1.5])), TypeError),
        (lambda: Image(data=np.array([300], dtype=np.int32)), ValueError),
        (lambda: std_msgs.msg.Float64(data=1), TypeError),
        (lambda: std_msgs.msg.Float32(data=1e39), ValueError),
        (lambda: std_msgs.msg.Bool(data=1), TypeError),
        (lambda: std_msgs.msg.String(data=b"bytes"), TypeError),
        (lambda: CameraInfo(k=[0.0] * 8), ValueError),
        (lambda: rmw_dds_common.msg.NodeEntitiesInfo(node_name="n" * 257), ValueError),
        (
            lambda: rcl_interfaces.msg.ParameterDescriptor(
                integer_range=[rcl_interfaces.msg.IntegerRange()] * 2
            ),
            ValueError,
        ),
        (lambda: JointState(nmae=["typo"]), TypeError),
    ],
)
def test_assignments_are_type_checked(make, error):
    with pytest.raises(error) as info:
        make()
    assert isinstance(info.value, AssertionError)  # what rclpy raises, so either except works


def test_failed_assignment_keeps_the_old_value():
    msg = JointState(position=[1.0])
    with pytest.raises(TypeError):
        msg.position = ["x"]
    assert msg.position == array.array("d", [1.0])


def test_array_with_wrong_typecode_is_refused():
    with pytest.raises(TypeError):
        JointState(position=array.array("f", [1.0]))
    kept = array.array("d", [1.0])
    assert JointState(position=kept).position is kept  # rclpy keeps a matching array as-is


# --- value semantics -----------------------------------------------------------------------------


def test_equality_is_by_value():
    assert JointState(name=["a"]) == JointState(name=["a"])
    assert JointState(name=["a"]) != JointState(name=["b"])
    assert JointState(position=[1.0]) != JointState(position=[1.0, 2.0])
    assert CameraInfo(k=[1.0] * 9) == CameraInfo(k=[1.0] * 9)
    assert CameraInfo(k=[1.0] * 9) != CameraInfo()
    assert builtin_interfaces.msg.Time() != builtin_interfaces.msg.Duration()


def test_repr_matches_rclpy():
    assert repr(Time(sec=1, nanosec=2)) == "builtin_interfaces.msg.Time(sec=1, nanosec=2)"
    assert repr(JointState(name=["a"], position=[0.5])) == (
        "sensor_msgs.msg.JointState(header=std_msgs.msg.Header(stamp=builtin_interfaces.msg.Time("
        "sec=0, nanosec=0), frame_id=''), name=['a'], position=[0.5], velocity=[], effort=[])"
    )
    assert repr(std_srvs.srv.Trigger.Request()) == "std_srvs.srv.Trigger_Request()"


def test_copy_deepcopy_and_pickle_preserve_values():
    msg = JointState(name=["a"], position=[1.0])
    msg.header.frame_id = "base"
    for clone in (copy.deepcopy(msg), pickle.loads(pickle.dumps(msg))):
        assert clone == msg and clone is not msg
        assert clone.position is not msg.position
    shallow = copy.copy(msg)
    assert shallow == msg and shallow.header is msg.header


# --- services and distro variants ------------------------------------------------------------


def test_services_expose_request_response_and_event():
    trigger = std_srvs.srv.Trigger
    assert trigger.Request.get_fields_and_field_types() == {}
    assert trigger.Response.get_fields_and_field_types() == {"success": "boolean", "message": "string"}
    response = trigger.Response(success=True, message="ok")
    assert (response.success, response.message) == (True, "ok")
    assert trigger.Event._ros_type == "std_srvs/srv/Trigger_Event"
    assert rcl_interfaces.srv.SetParametersAtomically.Response().result == (
        rcl_interfaces.msg.SetParametersResult()
    )


@pytest.mark.parametrize(("distro", "size"), [("humble", 24), ("iron", 16), ("jazzy", 16), ("rolling", 16)])
def test_participant_entities_info_gid_size_per_distro(distro, size):
    info_cls = rmw_dds_common.participant_entities_info_type(distro)
    assert info_cls._ros_type == "rmw_dds_common/msg/ParticipantEntitiesInfo"
    assert info_cls().gid.data.shape == (size,)
    variant = rmw_dds_common.for_distro(distro)
    assert variant.ParticipantEntitiesInfo is info_cls
    node = variant.NodeEntitiesInfo(reader_gid_seq=[variant.Gid()])
    info_cls(node_entities_info_seq=[node])  # nested classes of the same variant fit together
    assert rmw_dds_common.msg.Gid().data.shape == (16,)


def test_humble_and_jazzy_gids_do_not_mix():
    humble = rmw_dds_common.for_distro("humble")
    with pytest.raises(TypeError):
        rmw_dds_common.msg.NodeEntitiesInfo(reader_gid_seq=[humble.Gid()])
