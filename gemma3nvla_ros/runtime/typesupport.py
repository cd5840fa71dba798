"""Type names and REP-2011 type hashes of runtime interface classes.

``rihs01`` builds the type description ROS computes at build time (type_description_interfaces:
the type's fields plus every referenced type, sorted by name, without constants or defaults),
renders it as JSON the way rosidl does (``json.dumps`` defaults) and hashes it with SHA-256.
``char`` counts as uint8, as it does in ROS (the .msg -> IDL step maps it), so for rmw_dds_common
and service_msgs the result matches ROS, not rosbags (which hashes ``char`` as CHAR).
"""
from __future__ import annotations

import json
from functools import lru_cache
from hashlib import sha256
from typing import Any

from .interfaces import Message, Service, get_type
from .interfaces._idl import ARRAY, SEQUENCE, STRING, FieldSpec

__all__ = ["dds_type_name", "ros_type_name", "rihs01", "get_type"]

# type_description_interfaces/msg/FieldType ids
_NESTED_TYPE = 1
_STRING = 17
_BOUNDED_STRING = 21
_ARRAY_OFFSET = 48
_BOUNDED_SEQUENCE_OFFSET = 96
_UNBOUNDED_SEQUENCE_OFFSET = 144


def ros_type_name(cls: type) -> str:
    """"sensor_msgs/msg/JointState", "std_srvs/srv/Trigger_Request", "std_srvs/srv/Trigger"."""
    return cls._ros_type


def dds_type_name(cls: type) -> str:
    """The DDS type name rmw_cyclonedds registers: "sensor_msgs::msg::dds_::JointState_"."""
    pkg, kind, name = ros_type_name(cls).split("/")
    return f"{pkg}::{kind}::dds_::{name}_"


@lru_cache(maxsize=None)
def rihs01(cls: type) -> str:
    """"RIHS01_<sha256 hex>" of a message or service class, as ROS 2 (Iron and later) computes it."""
    if issubclass(cls, Service):
        main, referenced = _service_description(cls)
    elif issubclass(cls, Message):
        main, referenced = _description(cls), _referenced(cls)
    else:
        raise TypeError(f"{cls!r} is not a runtime message or service class")
    document = {
        "type_description": main,
        "referenced_type_descriptions": [
            _description(referenced[name]) for name in sorted(referenced)
        ],
    }
    return "RIHS01_" + sha256(json.dumps(document).encode()).hexdigest()


def _service_description(cls: type[Service]) -> tuple[dict[str, Any], dict[str, type]]:
    # A service is described as a struct of its three generated messages.
    members = (("request_message", cls.Request), ("response_message", cls.Response),
               ("event_message", cls.Event))
    fields = [_field_json(name, _NESTED_TYPE, nested=member._ros_type) for name, member in members]
    referenced: dict[str, type] = {}
    for _, member in members:
        referenced[member._ros_type] = member
        referenced.update(_referenced(member))
    return {"type_name": cls._ros_type, "fields": fields}, referenced


def _referenced(cls: type) -> dict[str, type]:
    """Every message type reachable from ``cls``'s fields, by name."""
    found: dict[str, type] = {}
    pending = [cls]
    while pending:
        for field in pending.pop()._fields:
            if field.is_message and field.type not in found:
                found[field.type] = field.msg_class
                pending.append(field.msg_class)
    return found


def _description(cls: type) -> dict[str, Any]:
    if cls._fields:
        fields = [_field_description(f) for f in cls._fields]
    else:  # the IDL of an empty message has this one member
        fields = [_field_json("structure_needs_at_least_one_member", 3)]
    return {"type_name": cls._ros_type, "fields": fields}


def _field_description(field: FieldSpec) -> dict[str, Any]:
    string_capacity = 0
    nested = ""
    if field.is_message:
        type_id, nested = _NESTED_TYPE, field.type
    elif field.type == STRING:
        type_id = _BOUNDED_STRING if field.string_bound else _STRING
        string_capacity = field.string_bound
    else:
        type_id = field.primitive.type_id
    capacity = 0
    if field.container == ARRAY:
        type_id += _ARRAY_OFFSET
        capacity = field.length
    elif field.container == SEQUENCE:
        type_id += _BOUNDED_SEQUENCE_OFFSET if field.length else _UNBOUNDED_SEQUENCE_OFFSET
        capacity = field.length
    return _field_json(field.name, type_id, capacity, string_capacity, nested)


def _field_json(
    name: str, type_id: int, capacity: int = 0, string_capacity: int = 0, nested: str = ""
) -> dict[str, Any]:
    return {
        "name": name,
        "type": {
            "type_id": type_id,
            "capacity": capacity,
            "string_capacity": string_capacity,
            "nested_type_name": nested,
        },
    }
