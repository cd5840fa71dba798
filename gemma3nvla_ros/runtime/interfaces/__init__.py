"""Message and service classes field-compatible with ROS 2's generated Python classes.

Every class is built from its .msg/.srv text in ``_definitions`` by one generic factory. Use it
like the ROS packages::

    from gemma3nvla_ros.runtime.interfaces import sensor_msgs
    msg = sensor_msgs.msg.JointState(name=["shoulder_pan"], position=[0.1])

``from gemma3nvla_ros.runtime.interfaces.sensor_msgs.msg import JointState`` works as well: the
namespaces are registered as modules.
"""
from __future__ import annotations

import sys
from types import ModuleType

from ._definitions import EVENT_TEXT, GID_BYTES, GID_BYTES_DEFAULT, MESSAGES, SERVICES
from ._idl import parse_msg
from ._message import (
    FieldTypeError,
    FieldValueError,
    Message,
    Service,
    make_message_class,
    make_service_class,
)

__all__ = [
    "FieldTypeError",
    "FieldValueError",
    "Message",
    "Service",
    "get_type",
    "participant_entities_info_type",
    "rmw_dds_common_for_distro",
    "builtin_interfaces",
    "std_msgs",
    "sensor_msgs",
    "trajectory_msgs",
    "std_srvs",
    "rcl_interfaces",
    "rosgraph_msgs",
    "diagnostic_msgs",
    "rmw_dds_common",
    "service_msgs",
]


class _Builder:
    """Builds classes from definition texts on demand, nested types first.

    A child builder overrides some texts (rmw_dds_common on Humble) and falls back to its parent
    for every other type, so both variants share builtin classes.
    """

    def __init__(self, texts: dict[str, str], parent: _Builder | None = None) -> None:
        self._texts = texts
        self._parent = parent
        self._classes: dict[str, type[Message]] = {}

    def get(self, ros_type: str) -> type[Message]:
        if ros_type in self._classes:
            return self._classes[ros_type]
        if ros_type not in self._texts:
            if self._parent is None:
                raise KeyError(f"unknown ROS interface type {ros_type!r}")
            return self._parent.get(ros_type)
        pkg, kind, _ = ros_type.split("/")
        definition = parse_msg(self._texts[ros_type], pkg)
        cls = make_message_class(ros_type, definition, self.get, f"{__name__}.{pkg}.{kind}")
        self._classes[ros_type] = cls
        return cls


def _texts_with_services() -> dict[str, str]:
    texts = dict(MESSAGES)
    for srv, (request, response) in SERVICES.items():
        texts[f"{srv}_Request"] = request
        texts[f"{srv}_Response"] = response
        texts[f"{srv}_Event"] = EVENT_TEXT.format(srv=srv)
    return texts


_builder = _Builder(_texts_with_services())
_registry: dict[str, type] = {}


def _module(name: str) -> ModuleType:
    full = f"{__name__}.{name}"
    module = sys.modules.get(full)
    if module is None:
        module = ModuleType(full)
        sys.modules[full] = module
    return module


def _populate() -> None:
    for ros_type in MESSAGES:
        cls = _builder.get(ros_type)
        pkg, kind, name = ros_type.split("/")
        setattr(_module(pkg), kind, _module(f"{pkg}.{kind}"))
        setattr(_module(f"{pkg}.{kind}"), name, cls)
        _registry[ros_type] = cls
    for ros_type in SERVICES:
        pkg, kind, name = ros_type.split("/")
        request = _builder.get(f"{ros_type}_Request")
        response = _builder.get(f"{ros_type}_Response")
        event = _builder.get(f"{ros_type}_Event")
        module = _module(f"{pkg}.{kind}")
        setattr(_module(pkg), kind, module)
        service = make_service_class(ros_type, request, response, event, module.__name__)
        for cls in (service, request, response, event):
            setattr(module, cls.__name__, cls)
            _registry[cls._ros_type] = cls


_populate()


def get_type(ros_type: str) -> type:
    """The class for "pkg/msg/Name", "pkg/srv/Name" or "pkg/srv/Name_Request|_Response|_Event"."""
    try:
        return _registry[ros_type]
    except KeyError:
        raise KeyError(f"unknown ROS interface type {ros_type!r}") from None


builtin_interfaces = _module("builtin_interfaces")
std_msgs = _module("std_msgs")
sensor_msgs = _module("sensor_msgs")
trajectory_msgs = _module("trajectory_msgs")
std_srvs = _module("std_srvs")
rcl_interfaces = _module("rcl_interfaces")
rosgraph_msgs = _module("rosgraph_msgs")
diagnostic_msgs = _module("diagnostic_msgs")
rmw_dds_common = _module("rmw_dds_common")
service_msgs = _module("service_msgs")

_RMW_DDS_COMMON = ("Gid", "NodeEntitiesInfo", "ParticipantEntitiesInfo")


def _rmw_dds_common_variant(gid_bytes: int) -> ModuleType:
    texts = {f"rmw_dds_common/msg/{n}": MESSAGES[f"rmw_dds_common/msg/{n}"] for n in _RMW_DDS_COMMON}
    texts["rmw_dds_common/msg/Gid"] = f"char[{gid_bytes}] data"
    variant = _Builder(texts, parent=_builder)
    namespace = ModuleType(f"{__name__}.rmw_dds_common.msg[gid{gid_bytes}]")
    for name in _RMW_DDS_COMMON:
        setattr(namespace, name, variant.get(f"rmw_dds_common/msg/{name}"))
    return namespace


# Built up front: one class per variant, so instances from different threads always fit together.
_distro_variants = {size: _rmw_dds_common_variant(size) for size in set(GID_BYTES.values())}
_distro_variants[GID_BYTES_DEFAULT] = rmw_dds_common.msg


def rmw_dds_common_for_distro(distro: str) -> ModuleType:
    """rmw_dds_common's msg namespace (Gid, NodeEntitiesInfo, ParticipantEntitiesInfo) for a distro.

    Gid holds 24 bytes on Humble and 16 from Iron on; any distro but "humble" gets 16.
    """
    return _distro_variants[GID_BYTES.get(distro.strip().lower(), GID_BYTES_DEFAULT)]


def participant_entities_info_type(distro: str) -> type[Message]:
    """The ParticipantEntitiesInfo class whose Gid matches ``distro`` (24 bytes on humble)."""
    return rmw_dds_common_for_distro(distro).ParticipantEntitiesInfo


rmw_dds_common.participant_entities_info_type = participant_entities_info_type
rmw_dds_common.for_distro = rmw_dds_common_for_distro
