"""Parameter values as ``ros2 param`` reads and prints them (pure; rcl_interfaces messages only).

``ros2 param set`` parses the value text as YAML and picks the parameter type from the result
(``100`` is an INTEGER, ``100.0`` a DOUBLE, ``[1, 2]`` an INTEGER_ARRAY, anything else a STRING);
``ros2 param get`` prints ``<Type> value is: <value>``; ``ros2 param dump`` writes a ROS params file.
"""
from __future__ import annotations

from typing import Any

import yaml

from gemma3nvla_ros.runtime.interfaces import rcl_interfaces

ParameterType = rcl_interfaces.msg.ParameterType
ParameterValue = rcl_interfaces.msg.ParameterValue

# type -> (ParameterValue field, `param get` label)
_FIELDS: dict[int, tuple[str, str]] = {
    ParameterType.PARAMETER_BOOL: ("bool_value", "Boolean value is:"),
    ParameterType.PARAMETER_INTEGER: ("integer_value", "Integer value is:"),
    ParameterType.PARAMETER_DOUBLE: ("double_value", "Double value is:"),
    ParameterType.PARAMETER_STRING: ("string_value", "String value is:"),
    ParameterType.PARAMETER_BYTE_ARRAY: ("byte_array_value", "Byte values are:"),
    ParameterType.PARAMETER_BOOL_ARRAY: ("bool_array_value", "Boolean values are:"),
    ParameterType.PARAMETER_INTEGER_ARRAY: ("integer_array_value", "Integer values are:"),
    ParameterType.PARAMETER_DOUBLE_ARRAY: ("double_array_value", "Double values are:"),
    ParameterType.PARAMETER_STRING_ARRAY: ("string_array_value", "String values are:"),
}


def value_from_string(text: str) -> Any:
    """A ParameterValue from the command-line text, exactly as ros2param's get_parameter_value."""
    value = ParameterValue()
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        parsed = text
    if isinstance(parsed, bool):
        value.type, value.bool_value = ParameterType.PARAMETER_BOOL, parsed
    elif isinstance(parsed, int):
        value.type, value.integer_value = ParameterType.PARAMETER_INTEGER, parsed
    elif isinstance(parsed, float):
        value.type, value.double_value = ParameterType.PARAMETER_DOUBLE, parsed
    elif isinstance(parsed, list) and all(isinstance(v, bool) for v in parsed):
        value.type, value.bool_array_value = ParameterType.PARAMETER_BOOL_ARRAY, parsed
    elif isinstance(parsed, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in parsed):
        value.type, value.integer_array_value = ParameterType.PARAMETER_INTEGER_ARRAY, parsed
    elif isinstance(parsed, list) and all(isinstance(v, float) for v in parsed):
        value.type, value.double_array_value = ParameterType.PARAMETER_DOUBLE_ARRAY, parsed
    elif isinstance(parsed, list) and all(isinstance(v, str) for v in parsed):
        value.type, value.string_array_value = ParameterType.PARAMETER_STRING_ARRAY, parsed
    else:  # mixed lists, mappings, null: the text itself, as ros2 does
        value.type, value.string_value = ParameterType.PARAMETER_STRING, text
    return value


def python_value(value: Any) -> Any:
    """The plain Python value of a ParameterValue (None when NOT_SET)."""
    entry = _FIELDS.get(value.type)
    if entry is None:
        return None
    v = getattr(value, entry[0])
    if value.type == ParameterType.PARAMETER_BYTE_ARRAY:
        return [b[0] if isinstance(b, bytes) else int(b) for b in v]
    return list(v) if not isinstance(v, (bool, int, float, str)) else v


def get_output(value: Any, hide_type: bool = False) -> str:
    """What ``ros2 param get`` prints for a value."""
    if value.type == ParameterType.PARAMETER_NOT_SET:
        return "Parameter not set."
    entry = _FIELDS.get(value.type)
    if entry is None:
        return f"Unknown parameter type '{value.type}'"
    shown = python_value(value)
    return str(shown) if hide_type else f"{entry[1]} {shown}"


def dump_yaml(node_name: str, params: dict[str, Any]) -> str:
    """``ros2 param dump``: ``/node: ros__parameters: {...}``; dotted names nest, keys sorted."""
    tree: dict[str, Any] = {}
    for name in sorted(params):
        parts = name.split(".")
        d = tree
        for part in parts[:-1]:
            d = d.setdefault(part, {})
        d[parts[-1]] = params[name]
    return yaml.safe_dump({node_name: {"ros__parameters": tree}}, default_flow_style=False, sort_keys=True)
