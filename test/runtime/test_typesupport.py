"""DDS type names and RIHS01 type hashes, checked against rosbags and against hashes ROS generated."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling helpers (importlib mode)

from msg_samples import class_for, type_names  # noqa: E402

from gemma3nvla_ros.runtime import typesupport  # noqa: E402
from gemma3nvla_ros.runtime.interfaces import (  # noqa: E402
    _Builder,
    _builder,
    rmw_dds_common,
    sensor_msgs,
    service_msgs,
    std_srvs,
)
from gemma3nvla_ros.runtime.interfaces._definitions import EVENT_TEXT  # noqa: E402
from gemma3nvla_ros.runtime.interfaces._message import make_service_class  # noqa: E402

# Hashes from rosidl_generator_c output of a Jazzy build (<type>__description.c). rosbags disagrees
# on these because it hashes `char` fields as CHAR where ROS maps them to uint8 first.
ROS_GENERATED = {
    "rmw_dds_common/msg/Gid":
        "RIHS01_ab6f21cfbb0a6dbb837161e1110c2051a2850ed9f9c53944d7115d9bcebedf71",
    "rmw_dds_common/msg/NodeEntitiesInfo":
        "RIHS01_8ffef65ee2d088c63b1e8fcd31e800ba9fc8dbe0ee15ca60d1676de5218087a7",
    "rmw_dds_common/msg/ParticipantEntitiesInfo":
        "RIHS01_91a0593bacdcc50ea9bdcf849a938b128412cc1ea821245c663bcd26f83c295e",
    "service_msgs/msg/ServiceEventInfo":
        "RIHS01_41bcbbe07a75c9b52bc96bfd5c24d7f0fc0a08c0cb7921b3373c5732345a6f45",
    "builtin_interfaces/msg/Time":
        "RIHS01_b106235e25a4c5ed35098aa0a61a3ee9c9b18d197f398b0e4206cea9acf9c197",
}
# example_interfaces/srv/Trigger (same definition as std_srvs' Trigger), from the same build.
EXAMPLE_TRIGGER = {
    "example_interfaces/srv/Trigger":
        "RIHS01_cfeeee47f8105dd7685e4c92d46d4074669cb1c477402be1dea37486542a69e0",
    "example_interfaces/srv/Trigger_Request":
        "RIHS01_2521571bb7fb4de94da045720b069b2859084c689ee27382f48414ebf4dd3a8d",
    "example_interfaces/srv/Trigger_Response":
        "RIHS01_3faa1e36b834f5705a7e9aa990c4720c082f0630bf28abedf315cc69f01dc8fc",
    "example_interfaces/srv/Trigger_Event":
        "RIHS01_37216e82646e85e9dacb76811000fc4c5e303dd4ef29b4151c189a3fa734296f",
}


@pytest.mark.parametrize(
    ("cls", "dds_name", "ros_name"),
    [
        (sensor_msgs.msg.JointState, "sensor_msgs::msg::dds_::JointState_", "sensor_msgs/msg/JointState"),
        (std_srvs.srv.Trigger.Request, "std_srvs::srv::dds_::Trigger_Request_", "std_srvs/srv/Trigger_Request"),
        (std_srvs.srv.Trigger.Response, "std_srvs::srv::dds_::Trigger_Response_", "std_srvs/srv/Trigger_Response"),
        (
            rmw_dds_common.participant_entities_info_type("humble"),
            "rmw_dds_common::msg::dds_::ParticipantEntitiesInfo_",
            "rmw_dds_common/msg/ParticipantEntitiesInfo",
        ),
    ],
)
def test_type_names(cls, dds_name, ros_name):
    assert typesupport.dds_type_name(cls) == dds_name
    assert typesupport.ros_type_name(cls) == ros_name


@pytest.mark.parametrize("ros_type", [t for t in type_names() if t not in ROS_GENERATED])
def test_rihs01_matches_rosbags_jazzy(ros_type):
    from msg_rosbags_ref import typestore

    expected = typestore("jazzy").hash_rihs01(ros_type)
    assert typesupport.rihs01(class_for(ros_type, "jazzy")) == expected


@pytest.mark.parametrize("ros_type", sorted(ROS_GENERATED))
def test_rihs01_matches_ros_generated_hashes(ros_type):
    module = service_msgs if ros_type.startswith("service_msgs") else None
    cls = module.msg.ServiceEventInfo if module else class_for(ros_type, "jazzy")
    assert typesupport.rihs01(cls) == ROS_GENERATED[ros_type]


def test_rihs01_of_a_service_and_its_parts_matches_ros():
    srv = "example_interfaces/srv/Trigger"
    builder = _Builder(
        {
            f"{srv}_Request": "",
            f"{srv}_Response": "bool success\nstring message",
            f"{srv}_Event": EVENT_TEXT.format(srv=srv),
        },
        parent=_builder,
    )
    parts = [builder.get(f"{srv}_{suffix}") for suffix in ("Request", "Response", "Event")]
    service = make_service_class(srv, *parts, module=__name__)
    for cls in (service, *parts):
        assert typesupport.rihs01(cls) == EXAMPLE_TRIGGER[cls._ros_type]


def test_rihs01_depends_on_the_gid_size():
    humble = rmw_dds_common.participant_entities_info_type("humble")
    assert typesupport.rihs01(humble) != typesupport.rihs01(rmw_dds_common.msg.ParticipantEntitiesInfo)


def test_rihs01_rejects_other_classes():
    with pytest.raises(TypeError):
        typesupport.rihs01(dict)


def test_get_type_resolves_names():
    assert typesupport.get_type("sensor_msgs/msg/Image") is sensor_msgs.msg.Image
