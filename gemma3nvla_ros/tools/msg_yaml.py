"""Messages <-> YAML the way ``ros2 topic echo`` / ``ros2 topic pub`` show and read them.

Pure: works on the runtime's message classes (``_fields`` = FieldSpec tuple, wire order) and plain
Python values; no DDS. Output mirrors rosidl_runtime_py's ``message_to_yaml`` (fields in definition
order, block style, sequences longer than ``truncate_length`` cut with a trailing ``'...'``,
``--no-arr`` placeholders), with one addition: byte blobs (uint8/byte sequences such as
``Image.data``) longer than ``truncate_length`` print as ``'<N bytes>'`` — a 720p frame would
otherwise fill the terminal with 128 numbers that say nothing.
"""
from __future__ import annotations

import array
import sys
from typing import Any, Callable, Optional

import numpy as np
import yaml

from gemma3nvla_ros.runtime.interfaces._idl import ARRAY, SEQUENCE, STRING, FieldSpec

DEFAULT_TRUNCATE_LENGTH = 128
_BLOB_TYPES = ("uint8", "byte")


class MessageYamlError(ValueError):
    """YAML that does not fit the message (unknown field, wrong type/shape)."""


class _Quoted(str):
    """A string YAML always single-quotes (placeholders, as ros2 prints them)."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Quoted, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", str(v), style="'"))


# --- message -> plain values -------------------------------------------------------------------------

def _base_type(field: FieldSpec) -> str:
    idl = field.idl_type()
    if field.container == SEQUENCE:
        return idl[len("sequence<"):-1].split(",")[0]
    if field.container == ARRAY:
        return idl[:idl.rindex("[")]
    return idl


def _plain(value: Any) -> Any:
    """A scalar or container of the message as plain Python (YAML-safe) values."""
    if isinstance(value, array.array):
        return value.tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, bytes) and len(value) == 1:  # a `byte` field: rclpy keeps b'\x07'
        return value[0]
    return value


def message_to_dict(msg: Any, *, truncate_length: Optional[int] = DEFAULT_TRUNCATE_LENGTH,
                    no_arr: bool = False, no_str: bool = False) -> dict[str, Any]:
    """Field name -> plain value, nested messages as dicts (``truncate_length=None``: full length)."""
    out: dict[str, Any] = {}
    for field in type(msg)._fields:
        out[field.name] = _field_value(getattr(msg, field.name), field, truncate_length, no_arr, no_str)
    return out


def _field_value(value: Any, field: FieldSpec, truncate: Optional[int], no_arr: bool, no_str: bool) -> Any:
    if field.container in (ARRAY, SEQUENCE):
        n = len(value)
        if no_arr:
            kind = "sequence" if isinstance(value, list) else "array"
            return _Quoted(f"<{kind} type: {_base_type(field)}, length: {n}>")
        if field.type in _BLOB_TYPES and truncate is not None and n > truncate:
            return _Quoted(f"<{n} bytes>")
        items = list(value[:truncate]) if truncate is not None and n > truncate else list(value)
        if field.is_message:
            items = [message_to_dict(v, truncate_length=truncate, no_arr=no_arr, no_str=no_str) for v in items]
        else:
            items = [_scalar_value(v, field, truncate, no_str) for v in items]
        if truncate is not None and n > truncate:
            items.append("...")
        return items
    if field.is_message:
        return message_to_dict(value, truncate_length=truncate, no_arr=no_arr, no_str=no_str)
    return _scalar_value(value, field, truncate, no_str)


def _scalar_value(value: Any, field: FieldSpec, truncate: Optional[int], no_str: bool) -> Any:
    value = _plain(value)
    if field.type == STRING and isinstance(value, str):
        if no_str:
            return _Quoted(f"<string length: <{len(value)}>>")
        if truncate is not None and len(value) > truncate:
            return value[:truncate] + "..."
    return value


def to_yaml(value: Any) -> str:
    """Block-style YAML of a plain value (dict/list/scalar), fields in the order given."""
    text = yaml.dump(value, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True,
                     width=sys.maxsize)
    # a bare scalar document ends with "...": ros2 prints just the value
    return text[:-4] if text.endswith("\n...\n") else text


def message_to_yaml(msg: Any, **options: Any) -> str:
    return to_yaml(message_to_dict(msg, **options))


def get_field(msg: Any, path: str) -> tuple[Any, Optional[FieldSpec]]:
    """``--field a.b``: the value at a dotted path and its FieldSpec (None for the message itself)."""
    value, spec = msg, None
    for part in [p for p in path.split(".") if p]:
        fields = {f.name: f for f in getattr(type(value), "_fields", ())}
        if part not in fields or spec is not None and spec.container:
            raise MessageYamlError(f"Invalid field '{path}': '{part}' is not a field of "
                                   f"{getattr(type(value), '_ros_type', type(value).__name__)}")
        spec = fields[part]
        value = getattr(value, part)
    return value, spec


def field_to_yaml(value: Any, spec: Optional[FieldSpec], **options: Any) -> str:
    if spec is None:
        return message_to_yaml(value, **options)
    return to_yaml(_field_value(value, spec, options.get("truncate_length", DEFAULT_TRUNCATE_LENGTH),
                                options.get("no_arr", False), options.get("no_str", False)))


# --- plain values -> message -------------------------------------------------------------------------

def parse_yaml_values(text: str) -> dict[str, Any]:
    """The ``'<yaml>'`` argument of ``topic pub``/``service call``: a mapping (empty text = ``{}``)."""
    try:
        values = yaml.safe_load(text) if text and text.strip() else {}
    except yaml.YAMLError as exc:
        raise MessageYamlError(f"the passed value is not valid YAML: {exc}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise MessageYamlError(f"the passed value needs to be a dictionary in YAML format, not {values!r}")
    return values


NowFn = Callable[[], tuple[int, int]]  # (sec, nanosec) of "now"


def fill_message(msg_cls: type, values: dict[str, Any], now: Optional[NowFn] = None) -> Any:
    """A new ``msg_cls`` with ``values`` (nested dicts/lists) set, as rosidl_runtime_py's
    ``set_message_fields``: ints are accepted for float fields, unknown fields are an error.
    As ros2 (Jazzy) ``topic pub``: ``now`` for a builtin_interfaces/Time and ``auto`` for a
    std_msgs/Header fill in the current time (``now`` is required to use them)."""
    msg = msg_cls()
    _fill(msg, values, now, msg_cls._ros_type)
    return msg


def _fill(msg: Any, values: Any, now: Optional[NowFn], where: str) -> None:
    if not isinstance(values, dict):
        raise MessageYamlError(f"{where}: expected a mapping of field values, got {values!r}")
    fields = {f.name: f for f in type(msg)._fields}
    for name, raw in values.items():
        field = fields.get(name)
        if field is None:
            raise MessageYamlError(f"{where}: {type(msg)._ros_type} has no field '{name}' "
                                   f"(fields: {', '.join(fields) or 'none'})")
        path = f"{where}.{name}"
        try:
            setattr(msg, name, _convert(field, raw, now, path))
        except MessageYamlError:
            raise
        except (TypeError, ValueError, AssertionError) as exc:
            raise MessageYamlError(f"{path}: {exc}") from None


def _convert(field: FieldSpec, raw: Any, now: Optional[NowFn], path: str) -> Any:
    if field.container in (ARRAY, SEQUENCE):
        if field.type in _BLOB_TYPES and isinstance(raw, (bytes, bytearray)):
            return raw
        if not isinstance(raw, list):
            raise MessageYamlError(f"{path}: expected a list, got {raw!r}")
        return [_convert_one(field, v, now, f"{path}[{i}]") for i, v in enumerate(raw)]
    return _convert_one(field, raw, now, path)


def _convert_one(field: FieldSpec, raw: Any, now: Optional[NowFn], path: str) -> Any:
    if field.is_message:
        cls = field.msg_class
        if isinstance(raw, cls):
            return raw
        if raw in ("now", "auto") and now is not None:
            return _stamped(cls, raw, now, path)
        sub = cls()
        _fill(sub, raw, now, path)
        return sub
    if field.type == STRING:
        if isinstance(raw, (dict, list)) or raw is None:
            raise MessageYamlError(f"{path}: expected a string, got {raw!r}")
        return raw if isinstance(raw, str) else str(raw).lower() if isinstance(raw, bool) else str(raw)
    prim = field.primitive
    if prim is None:  # pragma: no cover - every non-message, non-string field is a primitive
        return raw
    if prim.name == "bool":
        if not isinstance(raw, bool):
            raise MessageYamlError(f"{path}: expected true or false, got {raw!r}")
        return raw
    if prim.name == "byte":
        if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw <= 255:
            return bytes((raw,))
        raise MessageYamlError(f"{path}: expected a byte value 0..255, got {raw!r}")
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise MessageYamlError(f"{path}: expected a number, got {raw!r}")
    if prim.name in ("float32", "float64"):
        return float(raw)
    if isinstance(raw, float):
        if not raw.is_integer():
            raise MessageYamlError(f"{path}: expected an integer, got {raw!r}")
        raw = int(raw)
    return raw


def _stamped(cls: type, word: str, now: NowFn, path: str) -> Any:
    sec, nanosec = now()
    if word == "now" and cls._ros_type == "builtin_interfaces/msg/Time":
        return cls(sec=sec, nanosec=nanosec)
    if word == "auto" and cls._ros_type == "std_msgs/msg/Header":
        header = cls()
        header.stamp.sec, header.stamp.nanosec = sec, nanosec
        return header
    raise MessageYamlError(f"{path}: '{word}' only fills a "
                           f"{'builtin_interfaces/msg/Time' if word == 'now' else 'std_msgs/msg/Header'}")
