"""XCDR1 little-endian (de)serialization of runtime messages, byte-identical to rosbags'
``serialize_cdr`` and to what rmw_cyclonedds puts on the wire (minus the transport's padding).

Layout: the 4-byte encapsulation header ``00 01 00 00`` (CDR_LE), then the body; every primitive is
aligned to its own size (max 8) counted from the start of the body. Strings are a uint32 length
including the NUL, the UTF-8 bytes and the NUL; sequences a uint32 count then the elements.

Speed comes from compiling, once per class, a pair of Python functions specialised to its layout:
nested single messages are inlined, each run of consecutive primitives is one precompiled
``struct.Struct`` (one per possible start offset modulo 8, since the padding inside the run
depends on it), and numeric sequences/arrays are copied as whole buffers. The body is assembled as
a list of chunks joined once, so a large ``uint8[]`` is copied exactly once.
"""
from __future__ import annotations

import array
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from struct import Struct
from typing import Any, TypeVar, Union

import numpy as np

from .interfaces import Message
from .interfaces._idl import ARRAY, PRIMITIVES, SEQUENCE, STRING, FieldSpec, Primitive

__all__ = ["CdrError", "HEADER", "serialize", "deserialize"]

if sys.byteorder != "little":  # array.array/numpy buffers are copied as-is onto the LE wire
    raise ImportError("gemma3nvla_ros.runtime.cdr supports little-endian hosts only")

HEADER = b"\x00\x01\x00\x00"  # CDR_LE, no options
_BIG_ENDIAN_HEADER = b"\x00\x00"

M = TypeVar("M", bound=Message)
Buffer = Union[bytes, bytearray, memoryview]


class CdrError(ValueError):
    """Data that is not a valid CDR encoding of the requested type (or a message that cannot be
    encoded)."""


def serialize(msg: Message) -> bytes:
    """Encapsulation header + XCDR1 little-endian body of ``msg``."""
    plan = _plans.get(type(msg)) or _plan_for(type(msg))
    chunks: list[Any] = [HEADER]
    try:
        plan.ser(msg, chunks, 0)
    except CdrError:
        raise
    except (struct.error, AttributeError, TypeError, ValueError, OverflowError) as exc:
        raise CdrError(f"cannot serialize {msg._ros_type}: {exc}") from exc
    return b"".join(chunks)


def deserialize(data: Buffer, cls: type[M]) -> M:
    """Decode a CDR payload (header included) into a new ``cls`` instance.

    ``data`` may be a memoryview onto a transport buffer: it is read in place (no copy of the
    payload), and the returned message holds no reference to it, so the buffer may be reused
    afterwards. Zero bytes after the message (the transport pads to a multiple of 4) are accepted.
    """
    plan = _plans.get(cls) or _plan_for(cls)
    view = memoryview(data)
    if view.ndim != 1 or view.format != "B":
        view = view.cast("B")
    if len(view) < 4:
        raise CdrError(f"{len(view)}-byte payload is shorter than the 4-byte CDR header")
    kind = bytes(view[:2])
    if kind != HEADER[:2]:
        if kind == _BIG_ENDIAN_HEADER:
            raise CdrError("big-endian CDR (header 00 00) is not supported")
        raise CdrError(f"unsupported encapsulation {kind.hex()} (expected 0001, XCDR1 little-endian)")
    body = view[4:]
    end = len(body)
    try:
        msg, offset = plan.des(body, 0, end)
    except struct.error:
        raise CdrError(f"truncated {cls._ros_type}: {end}-byte body ends inside the message") from None
    except UnicodeDecodeError as exc:
        raise CdrError(f"string in {cls._ros_type} is not valid UTF-8: {exc.reason}") from None
    if offset < end and any(body[offset:]):
        raise CdrError(f"{end - offset} unexpected non-zero bytes after {cls._ros_type}")
    return msg


# --- compiled plans ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    ser: Callable[[Any, list, int], int]  # (msg, chunks, offset) -> offset
    des: Callable[[memoryview, int, int], tuple[Any, int]]  # (body, offset, end) -> (msg, offset)
    min_size: int  # lower bound on the encoded size, to reject absurd sequence counts early


_plans: dict[type, _Plan] = {}

_U32 = Struct("<I")
_U32_PADDED = tuple(Struct("<" + "x" * pad + "I") for pad in range(4))  # index: padding before
_ZEROS = tuple(b"\x00" * n for n in range(8))
_EMPTY_MEMBER = PRIMITIVES["uint8"]  # `structure_needs_at_least_one_member` of empty messages


def _plan_for(cls: type) -> _Plan:
    if not (isinstance(cls, type) and issubclass(cls, Message)):
        raise TypeError(f"{cls!r} is not a runtime message class")
    plan = _plans.get(cls)
    if plan is None:
        plan = _compile(cls)
        _plans[cls] = plan
    return plan


def _fail(what: str, count: int, offset: int, end: int) -> None:
    raise CdrError(f"{what}: count {count} at offset {offset} does not fit in the {end}-byte body")


@dataclass(frozen=True)
class _Op:
    kind: str  # "enter" (nested message starts), "prim", "string", "seq", "array"
    path: tuple[str, ...]  # field names from the top-level message; () for the empty member
    field: FieldSpec | None = None
    prim: Primitive | None = None
    cls: type | None = None  # "enter": the nested class


def _flatten(cls: type, path: tuple[str, ...] = ()) -> Iterator[_Op]:
    """The class's wire layout as a flat op list, single nested messages inlined."""
    if not cls._fields:
        yield _Op("prim", path + ("",), prim=_EMPTY_MEMBER)
    for field in cls._fields:
        here = path + (field.name,)
        if field.container == ARRAY:
            yield _Op("array", here, field, field.primitive)
        elif field.container == SEQUENCE:
            yield _Op("seq", here, field, field.primitive)
        elif field.is_message:
            yield _Op("enter", here, field, cls=field.msg_class)
            yield from _flatten(field.msg_class, here)
        elif field.type == STRING:
            yield _Op("string", here, field)
        else:
            yield _Op("prim", here, field, field.primitive)


def _run_structs(prims: list[Primitive]) -> tuple[Struct, ...]:
    """One Struct per start offset modulo 8, with the alignment padding spelled out as 'x'."""
    structs = []
    for start in range(8):
        pos, fmt = start, "<"
        for prim in prims:
            pad = -pos % prim.size
            fmt += "x" * pad + prim.fmt
            pos += pad + prim.size
        structs.append(Struct(fmt))
    return tuple(structs)


def _min_size(ops: list[_Op]) -> int:
    size = 0
    for op in ops:
        if op.kind == "prim":
            size += op.prim.size
        elif op.kind in ("string", "seq"):
            size += 4
        elif op.kind == "array":
            size += op.field.length * op.prim.size
    return max(size, 1)


class _Source:
    """Accumulates generated code and the constants it refers to."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.env: dict[str, Any] = {
            "CdrError": CdrError,
            "fail": _fail,
            "U32": _U32,
            "U32P": _U32_PADDED,
            "ZEROS": _ZEROS,
            "array": array.array,
            "np": np,
            "new": object.__new__,
        }
        self._count = 0

    def name(self, prefix: str, value: Any = None) -> str:
        self._count += 1
        name = f"{prefix}{self._count}"
        if value is not None:
            self.env[name] = value
        return name

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def compile(self, funcname: str) -> Callable:
        exec(compile("\n".join(self.lines) + "\n", f"<cdr {funcname}>", "exec"), self.env)  # noqa: S102
        return self.env[funcname]


def _compile(cls: type) -> _Plan:
    ops = list(_flatten(cls))
    for op in ops:  # element types of sequences first; they are called, not inlined
        if op.kind == "seq" and op.field.is_message:
            _plan_for(op.field.msg_class)
    ser = _compile_ser(cls, ops)
    des = _compile_des(cls, ops)
    return _Plan(ser, des, _min_size(ops))


# --- serializer ----------------------------------------------------------------------------------


def _compile_ser(cls: type, ops: list[_Op]) -> Callable:
    src = _Source()
    src.emit(0, "def ser(m, c, o):")
    src.emit(1, "add = c.append")
    run: list[_Op] = []

    def expr(path: tuple[str, ...]) -> str:
        return "0" if path[-1] == "" else "m." + ".".join("_" + p for p in path)

    def flush() -> None:
        if not run:
            return
        structs = src.name("RUN", _run_structs([op.prim for op in run]))
        src.emit(1, f"s = {structs}[o & 7]")
        src.emit(1, f"add(s.pack({', '.join(expr(op.path) for op in run)}))")
        src.emit(1, "o += s.size")
        run.clear()

    for op in ops:
        if op.kind == "enter":
            continue
        if op.kind == "prim":
            run.append(op)
            continue
        flush()
        if op.kind == "string":
            _ser_string(src, 1, expr(op.path))
        elif op.kind == "array":
            _ser_array(src, op, expr(op.path))
        else:
            _ser_sequence(src, op, expr(op.path))
    flush()
    src.emit(1, "return o")
    return src.compile("ser")


def _ser_string(src: _Source, indent: int, value: str) -> None:
    src.emit(indent, f"e = {value}.encode()")
    src.emit(indent, "n = len(e) + 1")
    src.emit(indent, "p = -o & 3")
    src.emit(indent, "add(U32P[p].pack(n))")
    src.emit(indent, "add(e)")
    src.emit(indent, "add(b'\\x00')")
    src.emit(indent, "o += p + 4 + n")


def _ser_align(src: _Source, indent: int, size: int) -> None:
    if size > 1:
        src.emit(indent, f"p = -o & {size - 1}")
        src.emit(indent, "if p:")
        src.emit(indent + 1, "add(ZEROS[p])")
        src.emit(indent + 1, "o += p")


def _ser_array(src: _Source, op: _Op, value: str) -> None:
    length, size = op.field.length, op.prim.size
    src.emit(1, f"v = {value}")
    src.emit(1, f"if v.size != {length}:")
    src.emit(2, f"raise CdrError('{op.field.name} must have {length} elements, not %d' % v.size)")
    _ser_align(src, 1, size)
    src.emit(1, "add(v.tobytes())")
    src.emit(1, f"o += {length * size}")


def _ser_sequence(src: _Source, op: _Op, value: str) -> None:
    field, prim = op.field, op.prim
    src.emit(1, f"v = {value}")
    src.emit(1, "n = len(v)")
    src.emit(1, "p = -o & 3")
    src.emit(1, "add(U32P[p].pack(n))")
    src.emit(1, "o += p + 4")
    if prim is not None and prim.typecode is not None:
        src.emit(1, "if n:")
        _ser_align(src, 2, prim.size)
        src.emit(2, "add(v)")  # array.array: its buffer is copied by the final join
        src.emit(2, f"o += n * {prim.size}")
    elif field.type == "bool":
        src.emit(1, "add(bytes(v))")
        src.emit(1, "o += n")
    elif field.type == "byte":
        src.emit(1, "e = b''.join(v)")
        src.emit(1, "if len(e) != n:")
        src.emit(2, f"raise CdrError('{field.name} must hold 1-byte bytes values')")
        src.emit(1, "add(e)")
        src.emit(1, "o += n")
    elif field.type == STRING:
        src.emit(1, "for x in v:")
        _ser_string(src, 2, "x")
    else:
        element = src.name("SER", _plans[field.msg_class].ser)
        element_cls = src.name("CLS", field.msg_class)
        src.emit(1, "for x in v:")
        src.emit(2, f"if x.__class__ is not {element_cls}:")
        src.emit(3, f"raise CdrError('{field.name} holds a %s, not a {field.msg_class.__name__}'"
                    " % type(x).__name__)")
        src.emit(2, f"o = {element}(x, c, o)")


# --- deserializer --------------------------------------------------------------------------------


def _compile_des(cls: type, ops: list[_Op]) -> Callable:
    src = _Source()
    objects: dict[tuple[str, ...], str] = {(): "m"}
    src.emit(0, "def des(b, o, end):")
    src.emit(1, f"m = new({src.name('CLS', cls)})")
    run: list[_Op] = []

    def target(path: tuple[str, ...]) -> str:
        return "_" if path[-1] == "" else f"{objects[path[:-1]]}._{path[-1]}"

    def flush() -> None:
        if not run:
            return
        structs = src.name("RUN", _run_structs([op.prim for op in run]))
        src.emit(1, f"s = {structs}[o & 7]")
        src.emit(1, f"{', '.join(target(op.path) for op in run)}, = s.unpack_from(b, o)")
        src.emit(1, "o += s.size")
        run.clear()

    for op in ops:
        if op.kind == "enter":  # creating the object consumes no bytes: the run may continue
            var = src.name("x")
            objects[op.path] = var
            src.emit(1, f"{var} = new({src.name('CLS', op.cls)})")
            src.emit(1, f"{target(op.path)} = {var}")
        elif op.kind == "prim":
            run.append(op)
        else:
            flush()
            if op.kind == "string":
                _des_string(src, 1, target(op.path), op.field)
            elif op.kind == "array":
                _des_array(src, op, target(op.path))
            else:
                _des_sequence(src, op, target(op.path))
    flush()
    src.emit(1, "return m, o")
    return src.compile("des")


def _des_count(src: _Source, indent: int) -> None:
    src.emit(indent, "o += -o & 3")
    src.emit(indent, "n, = U32.unpack_from(b, o)")
    src.emit(indent, "o += 4")


def _des_string(src: _Source, indent: int, target: str, field: FieldSpec) -> None:
    _des_count(src, indent)
    src.emit(indent, "if n:")
    src.emit(indent + 1, "if n > end - o:")
    src.emit(indent + 2, f"fail('string {field.name}', n, o, end)")
    src.emit(indent + 1, "if b[o + n - 1]:")
    src.emit(indent + 2, f"raise CdrError('string {field.name} at offset %d lacks its NUL' % o)")
    if field.string_bound:
        src.emit(indent + 1, f"if n - 1 > {field.string_bound}:")
        src.emit(indent + 2, f"fail('string {field.name} over its bound {field.string_bound}',"
                             " n, o, end)")
    src.emit(indent + 1, f"{target} = str(b[o:o + n - 1], 'utf-8')")
    src.emit(indent + 1, "o += n")
    src.emit(indent, "else:")  # a zero length is not what ROS writes, but it means ''
    src.emit(indent + 1, f"{target} = ''")


def _des_align(src: _Source, indent: int, size: int) -> None:
    if size > 1:
        src.emit(indent, f"o += -o & {size - 1}")


def _des_array(src: _Source, op: _Op, target: str) -> None:
    length, size = op.field.length, op.prim.size
    _des_align(src, 1, size)
    src.emit(1, f"if {length * size} > end - o:")
    src.emit(2, f"fail('array {op.field.name}', {length}, o, end)")
    src.emit(1, f"{target} = np.frombuffer(b, {src.name('DT', np.dtype(op.prim.typecode))},"
                f" {length}, o).copy()")
    src.emit(1, f"o += {length * size}")


def _des_sequence(src: _Source, op: _Op, target: str) -> None:
    field, prim = op.field, op.prim
    _des_count(src, 1)
    if field.length:
        src.emit(1, f"if n > {field.length}:")
        src.emit(2, f"fail('sequence {field.name} over its bound {field.length}', n, o, end)")
    if prim is not None and prim.typecode is not None:
        src.emit(1, f"v = array('{prim.typecode}')")
        src.emit(1, "if n:")
        _des_align(src, 2, prim.size)
        src.emit(2, f"k = n * {prim.size}")
        src.emit(2, "if k > end - o:")
        src.emit(3, f"fail('sequence {field.name}', n, o, end)")
        src.emit(2, "v.frombytes(b[o:o + k])")
        src.emit(2, "o += k")
        src.emit(1, f"{target} = v")
        return
    if field.type in ("bool", "byte"):
        src.emit(1, "if n > end - o:")
        src.emit(2, f"fail('sequence {field.name}', n, o, end)")
        element = "x != 0" if field.type == "bool" else "bytes((x,))"
        src.emit(1, f"{target} = [{element} for x in b[o:o + n]]")
        src.emit(1, "o += n")
        return
    min_size = 4 if field.type == STRING else _plans[field.msg_class].min_size
    src.emit(1, f"if n > (end - o) // {min_size}:")
    src.emit(2, f"fail('sequence {field.name}', n, o, end)")
    src.emit(1, "v = []")
    src.emit(1, f"{target} = v")
    src.emit(1, "for _ in range(n):")
    if field.type == STRING:
        _des_string(src, 2, "x", field)
        src.emit(2, "v.append(x)")
    else:
        element = src.name("DES", _plans[field.msg_class].des)
        src.emit(2, f"x, o = {element}(b, o, end)")
        src.emit(2, "v.append(x)")
