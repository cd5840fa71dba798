"""Parse ROS 2 .msg text into field and constant descriptions.

Supports what the runtime's interfaces use: primitives, (bounded) strings, nested types, fixed
arrays, bounded and unbounded sequences, and constants. Default values are not supported.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Primitive:
    name: str  # .msg spelling, e.g. "float64"
    idl: str  # spelling rclpy reports in get_fields_and_field_types(), e.g. "double"
    fmt: str  # struct format character (little-endian, no implicit alignment)
    size: int  # bytes on the wire, also the XCDR1 alignment
    typecode: str | None  # array.array typecode for sequences; None: stored as a list
    type_id: int  # REP-2011 type_description_interfaces/FieldType id


PRIMITIVES: dict[str, Primitive] = {
    p.name: p
    for p in (
        Primitive("bool", "boolean", "?", 1, None, 15),
        Primitive("byte", "octet", "c", 1, None, 16),
        Primitive("int8", "int8", "b", 1, "b", 2),
        Primitive("uint8", "uint8", "B", 1, "B", 3),
        Primitive("int16", "int16", "h", 2, "h", 4),
        Primitive("uint16", "uint16", "H", 2, "H", 5),
        Primitive("int32", "int32", "i", 4, "i", 6),
        Primitive("uint32", "uint32", "I", 4, "I", 7),
        Primitive("int64", "int64", "q", 8, "q", 8),
        Primitive("uint64", "uint64", "Q", 8, "Q", 9),
        Primitive("float32", "float", "f", 4, "f", 10),
        Primitive("float64", "double", "d", 8, "d", 11),
    )
}
# ROS 2's .msg -> IDL translation turns `char` into uint8 (rosidl_adapter), so the generated
# classes, the wire and the type hash all see uint8.
_ALIASES = {"char": "uint8"}

STRING = "string"
SINGLE, ARRAY, SEQUENCE = "", "array", "sequence"


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str  # a PRIMITIVES key, STRING, or a message type "pkg/msg/Name"
    container: str = SINGLE  # SINGLE, ARRAY or SEQUENCE
    length: int = 0  # ARRAY: element count; SEQUENCE: upper bound, 0 = unbounded
    string_bound: int = 0  # STRING elements: upper bound in characters, 0 = unbounded
    msg_class: Any = None  # filled in by the class factory for message-typed fields

    @property
    def primitive(self) -> Primitive | None:
        return PRIMITIVES.get(self.type)

    @property
    def is_message(self) -> bool:
        return self.type != STRING and self.type not in PRIMITIVES

    def idl_type(self) -> str:
        """The type string rclpy's get_fields_and_field_types() reports for this field."""
        if self.primitive is not None:
            base = self.primitive.idl
        elif self.type == STRING:
            base = f"string<{self.string_bound}>" if self.string_bound else "string"
        else:
            pkg, _, name = self.type.split("/")
            base = f"{pkg}/{name}"
        if self.container == ARRAY:
            return f"{base}[{self.length}]"
        if self.container == SEQUENCE:
            return f"sequence<{base}, {self.length}>" if self.length else f"sequence<{base}>"
        return base


@dataclass(frozen=True)
class Constant:
    name: str
    type: str
    value: Any


@dataclass(frozen=True)
class Definition:
    fields: tuple[FieldSpec, ...]
    constants: tuple[Constant, ...]


_TYPE_RE = re.compile(
    r"^(?P<base>[A-Za-z][\w/]*)(?:<=(?P<sbound>\d+))?(?:\[(?P<arr>(?:<=)?\d*)\])?$"
)


def parse_msg(text: str, package: str) -> Definition:
    """Parse .msg text; bare nested names resolve within ``package``."""
    fields: list[FieldSpec] = []
    constants: list[Constant] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        type_token, rest = line.split(None, 1)
        if "=" in rest:
            name, value = (part.strip() for part in rest.split("=", 1))
            constants.append(_constant(name, type_token, value))
            continue
        if len(rest.split()) != 1:
            raise ValueError(f"unsupported .msg line (default values?): {raw.strip()!r}")
        fields.append(_field(rest, type_token, package))
    return Definition(tuple(fields), tuple(constants))


def _field(name: str, type_token: str, package: str) -> FieldSpec:
    match = _TYPE_RE.match(type_token)
    if match is None:
        raise ValueError(f"cannot parse field type {type_token!r}")
    base = _ALIASES.get(match["base"], match["base"])
    string_bound = int(match["sbound"] or 0)
    if base != STRING and base not in PRIMITIVES:
        base = _qualify(base, package)
    container, length = SINGLE, 0
    arr = match["arr"]
    if arr is not None:
        if arr.startswith("<="):
            container, length = SEQUENCE, int(arr[2:])
        elif arr:
            container, length = ARRAY, int(arr)
        else:
            container = SEQUENCE
    if container == ARRAY and (base not in PRIMITIVES or base in ("bool", "byte")):
        # Only numeric fixed arrays occur in the supported interfaces; they map to numpy arrays.
        raise ValueError(f"fixed arrays of {base} are not supported")
    return FieldSpec(name, base, container, length, string_bound)


def _qualify(base: str, package: str) -> str:
    parts = base.split("/")
    if len(parts) == 1:
        return f"{package}/msg/{base}"
    if len(parts) == 2:
        return f"{parts[0]}/msg/{parts[1]}"
    return base


def _constant(name: str, type_token: str, value: str) -> Constant:
    type_token = _ALIASES.get(type_token, type_token)
    if type_token == STRING:
        parsed: Any = value
    elif type_token == "bool":
        parsed = value.lower() in ("true", "1")
    elif type_token == "byte":
        parsed = bytes((int(value, 0),))  # rclpy exposes byte constants as 1-byte bytes
    elif type_token in ("float32", "float64"):
        parsed = float(value)
    elif type_token in PRIMITIVES:
        parsed = int(value, 0)
    else:
        raise ValueError(f"constant {name} has unsupported type {type_token!r}")
    return Constant(name, type_token, parsed)
