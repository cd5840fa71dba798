"""`ros2 param` value parsing/printing (pure)."""
from __future__ import annotations

import pytest
import yaml

from gemma3nvla_ros.tools import param_values
from gemma3nvla_ros.tools.param_values import ParameterType as T


@pytest.mark.parametrize("text,ptype,expected", [
    ("100", T.PARAMETER_INTEGER, 100),
    ("100.0", T.PARAMETER_DOUBLE, 100.0),
    ("true", T.PARAMETER_BOOL, True),
    ("hello", T.PARAMETER_STRING, "hello"),
    ("[1, 2]", T.PARAMETER_INTEGER_ARRAY, [1, 2]),
    ("[1.5, 2.0]", T.PARAMETER_DOUBLE_ARRAY, [1.5, 2.0]),
    ("[true, false]", T.PARAMETER_BOOL_ARRAY, [True, False]),
    ("[a, b]", T.PARAMETER_STRING_ARRAY, ["a", "b"]),
    ("[1, a]", T.PARAMETER_STRING, "[1, a]"),  # mixed list: the text itself, as ros2
    ("{a: 1}", T.PARAMETER_STRING, "{a: 1}"),
    ("[", T.PARAMETER_STRING, "["),  # not YAML at all
    ("'5'", T.PARAMETER_STRING, "5"),  # YAML quotes force a string, as in ros2
    ("", T.PARAMETER_STRING, ""),
    ("a: b: c", T.PARAMETER_STRING, "a: b: c"),  # YAML rclpy cannot scan: the text
])
def test_value_from_string(text, ptype, expected):
    value = param_values.value_from_string(text)
    assert value.type == ptype
    assert param_values.python_value(value) == expected


def test_get_output_labels():
    assert param_values.get_output(param_values.value_from_string("2.5")) == "Double value is: 2.5"
    assert param_values.get_output(param_values.value_from_string("[a]")) == "String values are: ['a']"
    assert param_values.get_output(param_values.value_from_string("7"), hide_type=True) == "7"
    assert param_values.get_output(param_values.ParameterValue()) == "Parameter not set."
    assert param_values.get_output(param_values.value_from_string("[1, 2]")) == "Integer values are: [1, 2]"


def test_describe_output_as_ros2():
    from rcl_interfaces.msg import IntegerRange, ParameterDescriptor
    d = ParameterDescriptor(name="q", type=T.PARAMETER_INTEGER, description="quality", read_only=True,
                            integer_range=[IntegerRange(from_value=1, to_value=100, step=1)],
                            additional_constraints="odd only")
    assert param_values.describe_output(d).splitlines() == [
        "Parameter name: q", "  Type: integer", "  Description: quality", "  Constraints:", "    Read only: true",
        "    Min value: 1", "    Max value: 100", "    Step: 1", "    Additional constraints: odd only"]
    assert param_values.describe_output(ParameterDescriptor(name="s", type=T.PARAMETER_STRING_ARRAY)).splitlines() == [
        "Parameter name: s", "  Type: string array", "  Constraints:"]


def test_dump_nests_dotted_names():
    text = param_values.dump_yaml("/n", {"b.x": 1, "a": "s", "b.y": [1.0]})
    assert yaml.safe_load(text) == {"/n": {"ros__parameters": {"a": "s", "b": {"x": 1, "y": [1.0]}}}}
