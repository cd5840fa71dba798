"""rclpy.parameter.Parameter (with Parameter.Type) and rclpy.exceptions' parameter exceptions."""
from __future__ import annotations

import array
from enum import Enum
from typing import Any, Optional


class ParameterException(Exception):
    def __init__(self, error_msg: str, parameters: Any = None, *args):
        Exception.__init__(self, error_msg, parameters, *args)


class ParameterNotDeclaredException(ParameterException):
    def __init__(self, parameters: Any, *args):
        Exception.__init__(self, "Invalid access to undeclared parameter(s)", parameters, *args)


class ParameterAlreadyDeclaredException(ParameterException):
    def __init__(self, parameters: Any, *args):
        Exception.__init__(self, "Parameter(s) already declared", parameters, *args)


class InvalidParameterException(ParameterException):
    def __init__(self, parameter: Any, *args):
        Exception.__init__(self, "Invalid parameter name", parameter, *args)


class InvalidParameterTypeException(ParameterException):
    def __init__(self, desired_parameter, expected_type: str, *args):
        Exception.__init__(
            self, f"Trying to set parameter '{desired_parameter._name}' to '{desired_parameter._value}' "
            f"of type '{desired_parameter._type_.name}', expecting type '{expected_type}'", *args)


class InvalidParameterValueException(ParameterException):
    def __init__(self, parameter: str, value: Any, reason: str, *args):
        Exception.__init__(self, f"Invalid parameter value ({value}) for parameter. Reason: {reason}",
                           parameter, *args)


class ParameterImmutableException(ParameterException):
    def __init__(self, parameter: Any, *args):
        Exception.__init__(self, "Attempted to modify read-only parameter", parameter, *args)


class ParameterUninitializedException(ParameterException):
    def __init__(self, parameter_name: str, *args):
        Exception.__init__(self, f"The parameter '{parameter_name}' is not initialized", *args)


class Parameter:
    class Type(Enum):
        NOT_SET = 0
        BOOL = 1
        INTEGER = 2
        DOUBLE = 3
        STRING = 4
        BYTE_ARRAY = 5
        BOOL_ARRAY = 6
        INTEGER_ARRAY = 7
        DOUBLE_ARRAY = 8
        STRING_ARRAY = 9

        @classmethod
        def from_parameter_value(cls, value: Any) -> "Parameter.Type":
            # same order of checks as rclpy (an empty list is a BYTE_ARRAY there, too)
            if value is None:
                return cls.NOT_SET
            if isinstance(value, bool):
                return cls.BOOL
            if isinstance(value, int):
                return cls.INTEGER
            if isinstance(value, float):
                return cls.DOUBLE
            if isinstance(value, str):
                return cls.STRING
            if isinstance(value, (list, tuple, array.array)) or _is_ndarray(value):
                seq = list(value)
                if all(isinstance(v, bytes) for v in seq):
                    return cls.BYTE_ARRAY
                if all(isinstance(v, bool) for v in seq):
                    return cls.BOOL_ARRAY
                if all(isinstance(v, int) and not isinstance(v, bool) for v in seq) or _int_ndarray(value):
                    return cls.INTEGER_ARRAY
                if all(isinstance(v, float) for v in seq) or _float_ndarray(value):
                    return cls.DOUBLE_ARRAY
                if all(isinstance(v, str) for v in seq):
                    return cls.STRING_ARRAY
                raise TypeError(f"The given value is not a list of one of the allowed types '{value}'.")
            if isinstance(value, (bytes, bytearray)):
                return cls.BYTE_ARRAY
            raise TypeError(f"The given value is not one of the allowed types '{value}'.")

        def check(self, value: Any) -> bool:
            try:
                return Parameter.Type.from_parameter_value(value) == self or (
                    self == Parameter.Type.NOT_SET and value is None)
            except TypeError:
                return False

    def __init__(self, name: str, type_: Optional["Parameter.Type"] = None, value: Any = None):
        if type_ is None:
            type_ = Parameter.Type.from_parameter_value(value)
        if not isinstance(type_, Parameter.Type):
            raise TypeError("type must be an instance of Parameter.Type")
        if value is not None and not type_.check(value):
            raise ValueError(f"Type '{type_}' and value '{value}' do not agree")
        self._name = name
        self._type_ = type_
        self._value = value

    @property
    def name(self) -> str:
        return self._name

    @property
    def type_(self) -> "Parameter.Type":
        return self._type_

    @property
    def value(self) -> Any:
        return self._value

    def __repr__(self) -> str:
        return f"Parameter(name={self._name!r}, type_={self._type_}, value={self._value!r})"

    def __eq__(self, other) -> bool:
        return (isinstance(other, Parameter) and self._name == other._name and self._type_ == other._type_
                and _values_equal(self._value, other._value))

    # --- rcl_interfaces conversions ---------------------------------------------------------------------
    def get_parameter_value(self):
        from gemma3nvla_ros.runtime.interfaces import rcl_interfaces
        pv = rcl_interfaces.msg.ParameterValue(type=self._type_.value)
        t, v = self._type_, self._value
        if t == Parameter.Type.BOOL:
            pv.bool_value = v
        elif t == Parameter.Type.INTEGER:
            pv.integer_value = v
        elif t == Parameter.Type.DOUBLE:
            pv.double_value = v
        elif t == Parameter.Type.STRING:
            pv.string_value = v
        elif t == Parameter.Type.BYTE_ARRAY:
            pv.byte_array_value = list(v)
        elif t == Parameter.Type.BOOL_ARRAY:
            pv.bool_array_value = list(v)
        elif t == Parameter.Type.INTEGER_ARRAY:
            pv.integer_array_value = [int(x) for x in v]
        elif t == Parameter.Type.DOUBLE_ARRAY:
            pv.double_array_value = [float(x) for x in v]
        elif t == Parameter.Type.STRING_ARRAY:
            pv.string_array_value = list(v)
        return pv

    def to_parameter_msg(self):
        from gemma3nvla_ros.runtime.interfaces import rcl_interfaces
        return rcl_interfaces.msg.Parameter(name=self._name, value=self.get_parameter_value())

    @classmethod
    def from_parameter_msg(cls, msg) -> "Parameter":
        return cls(msg.name, Parameter.Type(msg.value.type), parameter_value_to_python(msg.value))


def parameter_value_to_python(pv) -> Any:
    t = Parameter.Type(pv.type)
    if t == Parameter.Type.NOT_SET:
        return None
    if t == Parameter.Type.BOOL:
        return bool(pv.bool_value)
    if t == Parameter.Type.INTEGER:
        return int(pv.integer_value)
    if t == Parameter.Type.DOUBLE:
        return float(pv.double_value)
    if t == Parameter.Type.STRING:
        return str(pv.string_value)
    if t == Parameter.Type.BYTE_ARRAY:
        return [bytes([b]) if isinstance(b, int) else bytes(b) for b in pv.byte_array_value]
    if t == Parameter.Type.BOOL_ARRAY:
        return [bool(x) for x in pv.bool_array_value]
    if t == Parameter.Type.INTEGER_ARRAY:
        return [int(x) for x in pv.integer_array_value]
    if t == Parameter.Type.DOUBLE_ARRAY:
        return [float(x) for x in pv.double_array_value]
    if t == Parameter.Type.STRING_ARRAY:
        return [str(x) for x in pv.string_array_value]
    raise ValueError(f"unknown parameter type {pv.type}")


def _is_ndarray(v) -> bool:
    return type(v).__module__ == "numpy" and type(v).__name__ == "ndarray"


def _int_ndarray(v) -> bool:
    return _is_ndarray(v) and v.dtype.kind in "iu"


def _float_ndarray(v) -> bool:
    return _is_ndarray(v) and v.dtype.kind == "f"


def _values_equal(a, b) -> bool:
    try:
        return bool(a == b) if not _is_ndarray(a) else list(a) == list(b)
    except Exception:
        return False
