"""Messages <-> YAML the way ``ros2 topic echo`` / ``ros2 topic pub`` show and read them.

Pure: works on rosidl-generated message classes (``get_fields_and_field_types()`` zipped with
``SLOT_TYPES``, as rosidl_runtime_py does) and plain Python values; no rclpy, no DDS. Output mirrors
rosidl_runtime_py's ``message_to_yaml`` (fields in definition order, block style, sequences longer
than ``truncate_length`` cut with a trailing ``'...'``, ros2's ``--no-arr``/``--no-str``
placeholders), with one addition: byte blobs (uint8/byte sequences such as ``Image.data``) longer
than ``truncate_length`` print as ``'<N bytes>'``: a 720p frame would otherwise fill the terminal
with 128 numbers that say nothing.

Reading (``fill_message``) follows rosidl_runtime_py's ``set_message_fields`` but is stricter and
says which field is wrong: a typo, a wrong type, an integer out of range or a fixed-size array of
the wrong length is an error naming the field path (the generated setters only check with
ROS_PYTHON_CHECK_FIELDS set; otherwise such values fail later, at publish, without a field name).
"""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Iterator, Optional

import numpy as np
import yaml
from rosidl_parser.definition import (
    AbstractGenericString,
    AbstractNestedType,
    AbstractType,
    Array,
    BasicType,
    BoundedSequence,
    NamespacedType,
)

DEFAULT_TRUNCATE_LENGTH = 128
_BLOB_TYPES = ("uint8", "octet")  # rosidl_parser's names for uint8 and byte
_FLOAT_TYPES = ("float", "double", "long double")
_INT_RANGES = {f"{sign}int{bits}": ((0, 2 ** bits - 1) if sign else (-2 ** (bits - 1), 2 ** (bits - 1) - 1))
               for sign in ("", "u") for bits in (8, 16, 32, 64)}
TIME_TYPE = "builtin_interfaces/msg/Time"
HEADER_TYPE = "std_msgs/msg/Header"


class MessageYamlError(ValueError):
    """YAML that does not fit the message (unknown field, wrong type/shape)."""


class _Quoted(str):
    """A string YAML always single-quotes (placeholders, as ros2 prints them)."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Quoted, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", str(v), style="'"))


# --- introspection -----------------------------------------------------------------------------------

def type_name(msg_cls: type) -> str:
    """``pkg/msg/Name`` of a generated class (its module is ``pkg.msg._name``)."""
    package, kind = msg_cls.__module__.split(".")[:2]
    return f"{package}/{kind}/{msg_cls.__name__}"


def fields(msg_cls: type) -> Iterator[tuple[str, AbstractType]]:
    """(name, rosidl_parser type) per field, in definition order."""
    return zip(msg_cls.get_fields_and_field_types(), msg_cls.SLOT_TYPES)


def is_message(value: Any) -> bool:
    return hasattr(type(value), "SLOT_TYPES")


def _message_class(t: NamespacedType) -> type:
    return getattr(importlib.import_module(".".join(t.namespaces)), t.name)


def _element_name(t: AbstractType) -> str:
    """The element type as ros2's placeholders name it."""
    if isinstance(t, BasicType):
        return t.typename
    if isinstance(t, AbstractGenericString):
        return "wstring" if "WString" in type(t).__name__ else "string"
    if isinstance(t, NamespacedType):
        return "/".join(t.namespaced_name())
    return "unknown"


def _array_placeholder(value: Any, t: AbstractNestedType) -> str:
    """rosidl_runtime_py's ``--no-arr`` text."""
    name = _element_name(t.value_type)
    if isinstance(t, Array):
        return f"<array type: {name}[{t.size}]>"
    if isinstance(t, BoundedSequence):
        return f"<sequence type: {name}[{t.maximum_size}], length: {len(value)}>"
    return f"<sequence type: {name}, length: {len(value)}>"


# --- message -> plain values -------------------------------------------------------------------------

def message_to_dict(msg: Any, *, truncate_length: Optional[int] = DEFAULT_TRUNCATE_LENGTH,
                    no_arr: bool = False, no_str: bool = False) -> dict[str, Any]:
    """Field name -> plain value, nested messages as dicts (``truncate_length=None``: full length)."""
    return {name: _field_value(getattr(msg, name), t, truncate_length, no_arr, no_str)
            for name, t in fields(type(msg))}


def _field_value(value: Any, t: AbstractType, truncate: Optional[int], no_arr: bool, no_str: bool) -> Any:
    if isinstance(t, AbstractNestedType):
        n = len(value)
        if no_arr:
            return _Quoted(_array_placeholder(value, t))
        cut = truncate is not None and n > truncate
        if cut and isinstance(t.value_type, BasicType) and t.value_type.typename in _BLOB_TYPES:
            return _Quoted(f"<{n} bytes>")
        items = [_field_value(v, t.value_type, truncate, no_arr, no_str) for v in value[:truncate if cut else n]]
        return items + ["..."] if cut else items
    if isinstance(t, NamespacedType):
        return message_to_dict(value, truncate_length=truncate, no_arr=no_arr, no_str=no_str)
    if isinstance(value, str):
        if no_str:
            return _Quoted(f"<string length: <{len(value)}>>")
        return value[:truncate] + "..." if truncate is not None and len(value) > truncate else value
    if isinstance(value, bytes) and len(value) == 1:  # a `byte` field: rclpy keeps b'\x07'
        return value[0]
    if isinstance(value, np.generic):  # elements of fixed-size arrays (numpy.ndarray)
        return value.item()
    return value


def to_yaml(value: Any) -> str:
    """Block-style YAML of a plain value (dict/list/scalar), fields in the order given."""
    text = yaml.dump(value, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True,
                     width=sys.maxsize)
    # a bare scalar document ends with "...": ros2 prints just the value
    return text[:-4] if text.endswith("\n...\n") else text


def message_to_yaml(msg: Any, **options: Any) -> str:
    return to_yaml(message_to_dict(msg, **options))


def get_field(msg: Any, path: str) -> tuple[Any, Optional[AbstractType]]:
    """``--field a.b``: the value at a dotted path and its field type (None for the message itself)."""
    value, t = msg, None
    for part in [p for p in path.split(".") if p]:
        types = dict(fields(type(value))) if is_message(value) else {}
        if part not in types:
            owner = type_name(type(value)) if is_message(value) else type(value).__name__
            raise MessageYamlError(f"Invalid field '{path}': '{part}' is not a field of {owner}")
        value, t = getattr(value, part), types[part]
    return value, t


def field_to_yaml(value: Any, t: Optional[AbstractType], *, truncate_length: Optional[int] = DEFAULT_TRUNCATE_LENGTH,
                  no_arr: bool = False, no_str: bool = False) -> str:
    if t is None:
        return message_to_yaml(value, truncate_length=truncate_length, no_arr=no_arr, no_str=no_str)
    return to_yaml(_field_value(value, t, truncate_length, no_arr, no_str))


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
    std_msgs/Header fill in the current time (``now`` is required to use them); call again per
    message for a fresh stamp."""
    msg = msg_cls()
    _fill(msg, values, now, type_name(msg_cls))
    return msg


def _fill(msg: Any, values: Any, now: Optional[NowFn], where: str) -> None:
    if not isinstance(values, dict):
        raise MessageYamlError(f"{where}: expected a mapping of field values, got {values!r}")
    types = dict(fields(type(msg)))
    for name, raw in values.items():
        if name not in types:
            raise MessageYamlError(f"{where}: {type_name(type(msg))} has no field '{name}' "
                                   f"(fields: {', '.join(types) or 'none'})")
        path = f"{where}.{name}"
        try:
            setattr(msg, name, _convert(types[name], raw, now, path))
        except MessageYamlError:
            raise
        except (TypeError, ValueError, AssertionError) as exc:  # the generated setters' own checks
            raise MessageYamlError(f"{path}: {str(exc) or 'value does not fit the field type'}") from None


def _convert(t: AbstractType, raw: Any, now: Optional[NowFn], path: str) -> Any:
    if isinstance(t, AbstractNestedType):
        element = t.value_type
        if isinstance(element, BasicType) and element.typename in _BLOB_TYPES and isinstance(raw, (bytes, bytearray)):
            return raw
        if not isinstance(raw, list):
            raise MessageYamlError(f"{path}: expected a list, got {raw!r}")
        if isinstance(t, Array) and len(raw) != t.size:
            raise MessageYamlError(f"{path}: expected exactly {t.size} values, got {len(raw)}")
        if isinstance(t, BoundedSequence) and len(raw) > t.maximum_size:
            raise MessageYamlError(f"{path}: expected at most {t.maximum_size} values, got {len(raw)}")
        return [_convert(element, v, now, f"{path}[{i}]") for i, v in enumerate(raw)]
    if isinstance(t, NamespacedType):
        cls = _message_class(t)
        if raw in ("now", "auto") and now is not None:
            return _stamped(cls, raw, now, path)
        sub = cls()
        _fill(sub, raw, now, path)
        return sub
    if isinstance(t, AbstractGenericString) or (isinstance(t, BasicType) and t.typename in ("char", "wchar")):
        if isinstance(raw, (dict, list)) or raw is None:
            raise MessageYamlError(f"{path}: expected a string, got {raw!r}")
        text = str(raw).lower() if isinstance(raw, bool) else str(raw)
        limit = getattr(t, "maximum_size", None)  # bounded strings
        if isinstance(limit, int) and len(text) > limit:
            raise MessageYamlError(f"{path}: longer than the {limit} characters allowed")
        return text
    return _convert_number(t.typename, raw, path)


def _convert_number(typename: str, raw: Any, path: str) -> Any:
    if typename == "boolean":
        if not isinstance(raw, bool):
            raise MessageYamlError(f"{path}: expected true or false, got {raw!r}")
        return raw
    if typename == "octet":
        if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw <= 255:
            return bytes((raw,))
        raise MessageYamlError(f"{path}: expected a byte value 0..255, got {raw!r}")
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise MessageYamlError(f"{path}: expected a number, got {raw!r}")
    if typename in _FLOAT_TYPES:
        return float(raw)
    if isinstance(raw, float):
        if not raw.is_integer():
            raise MessageYamlError(f"{path}: expected an integer, got {raw!r}")
        raw = int(raw)
    low, high = _INT_RANGES.get(typename, (raw, raw))
    if not low <= raw <= high:
        raise MessageYamlError(f"{path}: {raw} is out of range for {typename} ({low}..{high})")
    return raw


def _stamped(cls: type, word: str, now: NowFn, path: str) -> Any:
    sec, nanosec = now()
    if word == "now" and type_name(cls) == TIME_TYPE:
        return cls(sec=sec, nanosec=nanosec)
    if word == "auto" and type_name(cls) == HEADER_TYPE:
        header = cls()
        header.stamp.sec, header.stamp.nanosec = sec, nanosec
        return header
    raise MessageYamlError(f"{path}: '{word}' only fills a {TIME_TYPE if word == 'now' else HEADER_TYPE}")
