"""Build message classes that behave like rosidl_generator_py's from a parsed definition.

A class stores each field in a slot ``_<name>`` behind a type-checking property ``<name>``, as the
generated code does. The (de)serializer in ``cdr`` reads and writes the slots directly, so values
it produces skip the checks and values users assign cannot bypass them.
"""
from __future__ import annotations

import array
import math
from collections.abc import Callable, Iterable
from dataclasses import replace
from operator import attrgetter
from typing import Any, ClassVar

import numpy as np

from ._idl import ARRAY, SEQUENCE, STRING, Constant, Definition, FieldSpec, Primitive


class FieldTypeError(TypeError, AssertionError):
    """A value of the wrong type for a field (rclpy raises AssertionError; both are caught here)."""


class FieldValueError(ValueError, AssertionError):
    """A value out of range or too long for a field."""


_FLOAT32_MAX = 3.4028234663852886e38
_INT_RANGES = {
    "int8": (-(2**7), 2**7 - 1),
    "uint8": (0, 2**8 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}


class Message:
    """Base of every generated message class.

    Class attributes: ``_ros_type`` ("pkg/msg/Name"), ``_fields`` (FieldSpec tuple, the wire
    order), ``_constants``. Empty ROS messages have no fields here; ``cdr`` adds the one-byte
    ``structure_needs_at_least_one_member`` the wire needs.
    """

    __slots__ = ()
    _ros_type: ClassVar[str]
    _fields: ClassVar[tuple[FieldSpec, ...]]
    _constants: ClassVar[tuple[Constant, ...]]
    _init_plan: ClassVar[tuple[tuple[str, Callable, Callable, Callable], ...]]
    _field_types: ClassVar[dict[str, str]]

    def __init__(self, **kwargs: Any) -> None:
        if kwargs.keys() - self._field_types.keys():
            unknown = ", ".join(sorted(kwargs.keys() - self._field_types.keys()))
            raise FieldTypeError(f"Invalid arguments passed to constructor: {unknown}")
        for name, set_slot, convert, default in self._init_plan:
            value = kwargs.get(name, _MISSING)
            set_slot(self, default() if value is _MISSING else convert(value))

    @classmethod
    def get_fields_and_field_types(cls) -> dict[str, str]:
        return dict(cls._field_types)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, self.__class__):
            return False
        for field in self._fields:
            mine = getattr(self, "_" + field.name)
            theirs = getattr(other, "_" + field.name)
            if field.container == ARRAY:
                if not np.array_equal(mine, theirs):
                    return False
            elif mine != theirs:
                return False
        return True

    __hash__ = None  # type: ignore[assignment]  # mutable value type, as in rclpy

    def __repr__(self) -> str:
        pkg, kind, name = self._ros_type.split("/")
        parts = []
        for field in self._fields:
            value = getattr(self, "_" + field.name)
            if isinstance(value, array.array):
                # rclpy prints array-backed sequences as their list of values
                text = repr(value.tolist())
            else:
                text = repr(value)
            parts.append(f"{field.name}={text}")
        return f"{pkg}.{kind}.{name}({', '.join(parts)})"


class Service:
    """Base of service classes: ``Request``/``Response``/``Event`` message classes and ``_ros_type``.

    ``Event`` is the service-introspection message of Iron and later (absent on Humble).
    """

    Request: ClassVar[type[Message]]
    Response: ClassVar[type[Message]]
    Event: ClassVar[type[Message]]
    _ros_type: ClassVar[str]


_MISSING = object()


def make_message_class(
    ros_type: str, definition: Definition, resolve: Callable[[str], type[Message]], module: str
) -> type[Message]:
    """Create the class for ``ros_type``; ``resolve`` returns the classes of nested types."""
    name = ros_type.rsplit("/", 1)[1]
    fields = tuple(
        replace(f, msg_class=resolve(f.type)) if f.is_message else f for f in definition.fields
    )
    namespace: dict[str, Any] = {
        "__slots__": tuple("_" + f.name for f in fields),
        "__module__": module,
        "__qualname__": name,
        "_ros_type": ros_type,
        "_fields": fields,
        "_constants": definition.constants,
        "_field_types": {f.name: f.idl_type() for f in fields},
    }
    namespace.update({c.name: c.value for c in definition.constants})
    cls = type(name, (Message,), namespace)
    plan = []
    for field in fields:
        set_slot = cls.__dict__["_" + field.name].__set__
        convert = _converter(field)
        prop = property(attrgetter("_" + field.name), _setter(set_slot, convert))
        setattr(cls, field.name, prop)
        plan.append((field.name, set_slot, convert, _default_factory(field)))
    cls._init_plan = tuple(plan)
    return cls


def make_service_class(
    ros_type: str,
    request: type[Message],
    response: type[Message],
    event: type[Message],
    module: str,
) -> type[Service]:
    name = ros_type.rsplit("/", 1)[1]
    namespace = {
        "__module__": module,
        "__qualname__": name,
        "_ros_type": ros_type,
        "Request": request,
        "Response": response,
        "Event": event,
    }
    return type(name, (Service,), namespace)


def _setter(set_slot: Callable, convert: Callable) -> Callable:
    def fset(self: Message, value: Any) -> None:
        set_slot(self, convert(value))

    return fset


# --- defaults ------------------------------------------------------------------------------


def _default_factory(field: FieldSpec) -> Callable[[], Any]:
    prim = field.primitive
    if field.container == ARRAY:
        dtype = np.dtype(prim.typecode)
        return lambda: np.zeros(field.length, dtype=dtype)
    if field.container == SEQUENCE:
        if prim is not None and prim.typecode is not None:
            return lambda: array.array(prim.typecode)
        return list
    if field.is_message:
        return field.msg_class
    if field.type == STRING:
        return str
    return {"bool": bool, "byte": lambda: b"\x00", "float32": float, "float64": float}.get(
        field.type, int
    )


# --- converters: validate an assigned value and return what the slot stores -------------------


def _converter(field: FieldSpec) -> Callable[[Any], Any]:
    prim = field.primitive
    if field.container == ARRAY:
        return _fixed_array(field, prim)
    if field.container == SEQUENCE:
        if prim is not None and prim.typecode is not None:
            return _bounded(field, _numeric_sequence(field, prim))
        element = _scalar(field)
        if field.type == "byte":
            return _bounded(field, _byte_sequence(field, element))
        return _bounded(field, _list_of(field, element))
    return _scalar(field)


def _scalar(field: FieldSpec) -> Callable[[Any], Any]:
    name = field.name
    if field.is_message:
        cls = field.msg_class

        def convert_message(value: Any) -> Any:
            if not isinstance(value, cls):
                raise FieldTypeError(f"The '{name}' field must be a sub message of type '{cls.__name__}'")
            return value

        return convert_message
    if field.type == STRING:
        bound = field.string_bound

        def convert_string(value: Any) -> str:
            if not isinstance(value, str):
                raise FieldTypeError(f"The '{name}' field must be of type 'str'")
            if bound and len(value) > bound:
                raise FieldValueError(f"The '{name}' field must be no longer than {bound} characters")
            return value

        return convert_string
    if field.type == "bool":

        def convert_bool(value: Any) -> bool:
            if not isinstance(value, (bool, np.bool_)):
                raise FieldTypeError(f"The '{name}' field must be of type 'bool'")
            return bool(value)

        return convert_bool
    if field.type == "byte":

        def convert_byte(value: Any) -> bytes:
            if not isinstance(value, (bytes, bytearray)) or len(value) != 1:
                raise FieldTypeError(f"The '{name}' field must be of type 'bytes' of length 1")
            return bytes(value)

        return convert_byte
    if field.type in ("float32", "float64"):
        limit = _FLOAT32_MAX if field.type == "float32" else math.inf

        def convert_float(value: Any) -> float:
            if not isinstance(value, (float, np.floating)):
                raise FieldTypeError(f"The '{name}' field must be of type 'float'")
            value = float(value)
            if abs(value) > limit and not math.isinf(value):
                raise FieldValueError(f"The '{name}' field must be a {field.type}")
            return value

        return convert_float
    low, high = _INT_RANGES[field.type]

    def convert_int(value: Any) -> int:
        if not isinstance(value, (int, np.integer)):
            raise FieldTypeError(f"The '{name}' field must be of type 'int'")
        value = int(value)
        if not low <= value <= high:
            raise FieldValueError(f"The '{name}' field must be an integer in [{low}, {high}]")
        return value

    return convert_int


def _bounded(field: FieldSpec, convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    if not field.length:
        return convert
    bound, name = field.length, field.name

    def convert_bounded(value: Any) -> Any:
        value = convert(value)
        if len(value) > bound:
            raise FieldValueError(f"The '{name}' field must have at most {bound} elements")
        return value

    return convert_bounded


def _require_iterable(name: str, value: Any) -> None:
    if isinstance(value, (str, bytes, bytearray)) or not isinstance(value, Iterable):
        raise FieldTypeError(f"The '{name}' field must be a set or sequence")


def _list_of(field: FieldSpec, element: Callable[[Any], Any]) -> Callable[[Any], list]:
    name = field.name

    def convert_list(value: Any) -> list:
        _require_iterable(name, value)
        # a new list of converted elements (numpy bools/ints become Python values)
        return [element(item) for item in value]

    return convert_list


def _byte_sequence(field: FieldSpec, element: Callable[[Any], Any]) -> Callable[[Any], list]:
    as_list = _list_of(field, element)

    def convert_bytes(value: Any) -> list:
        # rclpy stores byte[] as a list of 1-byte bytes; accept a bytes object too
        if isinstance(value, (bytes, bytearray, memoryview)):
            return [bytes((b,)) for b in bytes(value)]
        return [bytes(b) for b in as_list(value)]

    return convert_bytes


def _numeric_sequence(field: FieldSpec, prim: Primitive) -> Callable[[Any], array.array]:
    name, typecode = field.name, prim.typecode
    dtype = np.dtype(typecode)
    is_float = prim.name.startswith("float")
    is_bytes_like = typecode in ("B", "b")

    def from_ndarray(value: np.ndarray) -> array.array:
        if value.ndim != 1 and typecode != "B":
            raise FieldValueError(f"The '{name}' field takes a one-dimensional array")
        kinds = "fiu" if is_float else "iu"
        if value.dtype.kind not in kinds:
            raise FieldTypeError(f"The '{name}' field cannot hold a {value.dtype} array")
        if value.dtype != dtype and value.size and not is_float:
            low, high = _INT_RANGES[prim.name]
            if value.min() < low or value.max() > high:
                raise FieldValueError(f"The '{name}' field values must be in [{low}, {high}]")
        out = array.array(typecode)
        out.frombytes(np.ascontiguousarray(value, dtype=dtype).tobytes())
        return out

    def convert_sequence(value: Any) -> array.array:
        if isinstance(value, array.array):
            if value.typecode != typecode:
                raise FieldTypeError(
                    f"The '{name}' field must be an array.array of typecode '{typecode}'"
                )
            return value
        if isinstance(value, np.ndarray):
            return from_ndarray(value)
        if is_bytes_like and isinstance(value, (bytes, bytearray, memoryview)):
            out = array.array(typecode)
            out.frombytes(value)
            return out
        _require_iterable(name, value)
        try:
            return array.array(typecode, value)
        except TypeError as exc:
            raise FieldTypeError(f"The '{name}' field must hold {prim.name} values: {exc}") from None
        except (OverflowError, ValueError) as exc:
            raise FieldValueError(f"The '{name}' field must hold {prim.name} values: {exc}") from None

    return convert_sequence


def _fixed_array(field: FieldSpec, prim: Primitive) -> Callable[[Any], np.ndarray]:
    as_array = _numeric_sequence(field, prim)
    dtype = np.dtype(prim.typecode)
    name, length = field.name, field.length

    def convert_fixed(value: Any) -> np.ndarray:
        values = as_array(value)
        if len(values) != length:
            raise FieldValueError(f"The '{name}' field must have exactly {length} elements")
        return np.frombuffer(values, dtype=dtype).copy()

    return convert_fixed
