"""Parameter values as ``ros2 param`` reads and prints them (pure; rcl_interfaces messages only).

``ros2 param set`` parses the value text as YAML and picks the parameter type from the result
(``100`` is an INTEGER, ``100.0`` a DOUBLE, ``[1, 2]`` an INTEGER_ARRAY, ``"'5'"`` the STRING 5,
anything else the text as a STRING); ``ros2 param get`` prints ``<Type> value is: <value>``;
``ros2 param describe`` prints the descriptor; ``ros2 param dump`` writes a ROS params file.
"""
from __future__ import annotations

from typing import Any

import yaml
from rcl_interfaces.msg import ParameterDescriptor, ParameterType, ParameterValue
from rclpy.parameter import get_parameter_value, parameter_value_to_python

# type -> (`param get` label, `param describe`/`param list --param-type` name)
_LABELS: dict[int, tuple[str, str]] = {
    ParameterType.PARAMETER_BOOL: ("Boolean value is:", "boolean"),
    ParameterType.PARAMETER_INTEGER: ("Integer value is:", "integer"),
    ParameterType.PARAMETER_DOUBLE: ("Double value is:", "double"),
    ParameterType.PARAMETER_STRING: ("String value is:", "string"),
    ParameterType.PARAMETER_BYTE_ARRAY: ("Byte values are:", "byte array"),
    ParameterType.PARAMETER_BOOL_ARRAY: ("Boolean values are:", "boolean array"),
    ParameterType.PARAMETER_INTEGER_ARRAY: ("Integer values are:", "integer array"),
    ParameterType.PARAMETER_DOUBLE_ARRAY: ("Double values are:", "double array"),
    ParameterType.PARAMETER_STRING_ARRAY: ("String values are:", "string array"),
    ParameterType.PARAMETER_NOT_SET: ("Parameter not set.", "not set"),
}


def value_from_string(text: str) -> ParameterValue:
    """A ParameterValue from the command-line text, as ``ros2 param set`` (rclpy's
    ``get_parameter_value``), except that text rclpy cannot take (a mapping, YAML it fails to
    scan) is the STRING of the text instead of a crash."""
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        parsed = None
    if parsed is None or isinstance(parsed, dict):
        return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=text)
    return get_parameter_value(text)


def python_value(value: ParameterValue) -> Any:
    """The plain Python value of a ParameterValue (None when NOT_SET; bytes as ints, for YAML)."""
    plain = parameter_value_to_python(value)
    if value.type == ParameterType.PARAMETER_BYTE_ARRAY:
        return [b[0] if isinstance(b, bytes) else int(b) for b in plain]
    return plain


def type_string(parameter_type: int) -> str:
    return _LABELS[parameter_type][1] if parameter_type in _LABELS else f"unknown ({parameter_type})"


def get_output(value: ParameterValue, hide_type: bool = False) -> str:
    """What ``ros2 param get`` prints for a value."""
    if value.type not in _LABELS:
        return f"Unknown parameter type '{value.type}'"
    label = _LABELS[value.type][0]
    if value.type == ParameterType.PARAMETER_NOT_SET:
        return "None" if hide_type else label
    shown = python_value(value)
    return str(shown) if hide_type else f"{label} {shown}"


def describe_output(descriptor: ParameterDescriptor) -> str:
    """What ``ros2 param describe`` prints for one parameter."""
    lines = [f"Parameter name: {descriptor.name}", f"  Type: {type_string(descriptor.type)}"]
    if descriptor.description:
        lines.append(f"  Description: {descriptor.description}")
    lines.append("  Constraints:")
    if descriptor.read_only:
        lines.append("    Read only: true")
    ranges = list(descriptor.floating_point_range) + list(descriptor.integer_range)
    if ranges:
        lines += [f"    Min value: {ranges[0].from_value}", f"    Max value: {ranges[0].to_value}"]
        if ranges[0].step:
            lines.append(f"    Step: {ranges[0].step}")
    if descriptor.additional_constraints:
        lines.append(f"    Additional constraints: {descriptor.additional_constraints}")
    return "\n".join(lines)


def dump_yaml(node_name: str, params: dict[str, Any]) -> str:
    """``ros2 param dump``: ``/node: ros__parameters: {...}``; dotted names nest, keys sorted."""
    tree: dict[str, Any] = {}
    for name in sorted(params):
        *parents, leaf = name.split(".")
        d = tree
        for part in parents:
            d = d.setdefault(part, {})
        d[leaf] = params[name]
    return yaml.safe_dump({node_name: {"ros__parameters": tree}}, default_flow_style=False, sort_keys=True)
