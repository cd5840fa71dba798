"""rosbags as the independent reference: convert runtime messages to and from rosbags' objects.

rosbags' typestores hold no services; ``register_services`` adds the .srv request/response types
from the ROS definitions written out here (independently of the runtime's own table).
"""
from __future__ import annotations

import array
from typing import Any

import numpy as np
import pytest

rosbags_typesys = pytest.importorskip("rosbags.typesys")
Stores = rosbags_typesys.Stores

# std_srvs and rcl_interfaces .srv files (Humble and Jazzy agree), "---" between request/response.
SRV_TEXTS = {
    "std_srvs/srv/Empty": "---\n",
    "std_srvs/srv/Trigger": "---\nbool success\nstring message\n",
    "std_srvs/srv/SetBool": "bool data\n---\nbool success\nstring message\n",
    "rcl_interfaces/srv/GetParameters": "string[] names\n---\nParameterValue[] values\n",
    "rcl_interfaces/srv/SetParameters": "Parameter[] parameters\n---\nSetParametersResult[] results\n",
    "rcl_interfaces/srv/SetParametersAtomically": (
        "Parameter[] parameters\n---\nSetParametersResult result\n"
    ),
    "rcl_interfaces/srv/ListParameters": (
        "uint64 DEPTH_RECURSIVE=0\nstring[] prefixes\nuint64 depth\n---\nListParametersResult result\n"
    ),
    "rcl_interfaces/srv/DescribeParameters": "string[] names\n---\nParameterDescriptor[] descriptors\n",
    "rcl_interfaces/srv/GetParameterTypes": "string[] names\n---\nuint8[] types\n",
}


def typestore(store_name: str) -> Any:
    """A fresh rosbags typestore for "humble"/"jazzy" with the services registered."""
    from rosbags.typesys import get_types_from_msg, get_typestore

    store = get_typestore({"humble": Stores.ROS2_HUMBLE, "jazzy": Stores.ROS2_JAZZY}[store_name])
    types: dict[str, Any] = {}
    for srv, text in SRV_TEXTS.items():
        request, response = text.split("---\n")
        pkg = srv.split("/")[0]
        for suffix, part in (("Request", request), ("Response", response)):
            # rosbags resolves bare names against the type's own package's msg namespace
            part = "\n".join(_qualify(line, pkg) for line in part.splitlines())
            if not any(line and not "=" in line for line in part.splitlines()):
                # ROS' IDL generation gives an empty structure this one member
                part += "\nuint8 structure_needs_at_least_one_member"
            # rosbags would file "pkg/srv/Name" under "pkg/srv/msg/Name": keep the ROS name
            (fielddefs,) = get_types_from_msg(part, f"{srv}_{suffix}").values()
            types[f"{srv}_{suffix}"] = fielddefs
    store.register(types)
    return store


def _qualify(line: str, pkg: str) -> str:
    if not line.strip():
        return line
    type_token, rest = line.split(None, 1)
    base = type_token.split("[")[0]
    if base[0].isupper() and "/" not in base:
        type_token = f"{pkg}/msg/{type_token}"
    return f"{type_token} {rest}"


def to_rosbags(msg: Any, store: Any) -> Any:
    cls = store.types[msg._ros_type]
    if not msg._fields:
        return cls(structure_needs_at_least_one_member=0)
    kwargs = {}
    fielddefs = dict(store.fielddefs[msg._ros_type][1])
    for field in msg._fields:
        kwargs[field.name] = _to_rb(getattr(msg, field.name), fielddefs[field.name], store)
    return cls(**kwargs)


def _to_rb(value: Any, desc: Any, store: Any) -> Any:
    from rosbags.interfaces import Nodetype

    kind, detail = desc
    if kind == Nodetype.NAME:
        return to_rosbags(value, store)
    if kind == Nodetype.BASE:
        if isinstance(value, bytes):  # rosbags holds `byte` as a signed int8
            return int.from_bytes(value, "little", signed=True)
        return value
    (subkind, subdetail), _ = detail
    if subkind == Nodetype.NAME:
        return [to_rosbags(v, store) for v in value]
    base = subdetail[0]
    if base == "string":
        return list(value)
    if base == "byte":
        return np.frombuffer(b"".join(value), dtype=np.uint8)
    if base == "bool":
        return np.array(value, dtype=np.bool_)
    if isinstance(value, array.array):
        return np.frombuffer(value, dtype=value.typecode).copy()
    return np.asarray(value)


def from_rosbags(obj: Any, cls: type) -> Any:
    """Build a runtime message from a rosbags object, field by field, through the public setters."""
    kwargs = {}
    for field in cls._fields:
        value = getattr(obj, field.name)
        if field.is_message:
            if field.container:
                value = [from_rosbags(v, field.msg_class) for v in value]
            else:
                value = from_rosbags(value, field.msg_class)
        elif field.type == "byte":
            value = (
                [bytes((int(v) & 0xFF,)) for v in value] if field.container else bytes((value & 0xFF,))
            )
        elif field.type == "bool" and field.container:
            value = [bool(v) for v in value]
        elif field.container == "sequence" and field.type != "string":
            value = np.asarray(value)
        kwargs[field.name] = value
    return cls(**kwargs)
