"""Feetech SCS/STS protocol 0 framing, as feetech-servo-sdk (``scservo_sdk``) puts it on the wire.

Instruction packet: ``FF FF id len inst params... chk`` with ``len = len(params) + 2``.
Status packet:      ``FF FF id len err data...   chk`` with ``len = len(data) + 2``.
``chk = ~(id + len + inst_or_err + sum(params)) & 0xFF``. Multi-byte values are little-endian
(``PacketHandler(0)`` sets ``SCS_END = 0``).
"""
from __future__ import annotations

from dataclasses import dataclass

HEADER = b"\xff\xff"
BROADCAST_ID = 0xFE
MAX_ID = 0xFC

INST_PING = 0x01
INST_READ = 0x02
INST_WRITE = 0x03
INST_REG_WRITE = 0x04
INST_ACTION = 0x05
INST_SYNC_READ = 0x82
INST_SYNC_WRITE = 0x83

# Status-packet error bits (same bits as the Status register, address 65).
ERRBIT_VOLTAGE = 0x01
ERRBIT_ANGLE = 0x02
ERRBIT_OVERHEAT = 0x04
ERRBIT_OVERELE = 0x08
ERRBIT_OVERLOAD = 0x20

ERROR_BIT_NAMES = {
    ERRBIT_VOLTAGE: "input voltage",
    ERRBIT_ANGLE: "angle sensor",
    ERRBIT_OVERHEAT: "overheat",
    ERRBIT_OVERELE: "overcurrent",
    ERRBIT_OVERLOAD: "overload",
}


def describe_error_bits(bits: int) -> str:
    """Human-readable names of the alarm bits set in ``bits`` ("" when none)."""
    return ", ".join(name for bit, name in ERROR_BIT_NAMES.items() if bits & bit)


def checksum(body: bytes | bytearray | list[int]) -> int:
    """Checksum over id..last parameter (everything between header and checksum)."""
    return (~sum(body)) & 0xFF


def instruction_packet(servo_id: int, instruction: int, params: bytes | list[int] = b"") -> bytes:
    body = bytes([servo_id, len(params) + 2, instruction]) + bytes(params)
    return HEADER + body + bytes([checksum(body)])


def status_packet(servo_id: int, error: int, data: bytes | list[int] = b"") -> bytes:
    body = bytes([servo_id, len(data) + 2, error & 0xFF]) + bytes(data)
    return HEADER + body + bytes([checksum(body)])


@dataclass(frozen=True)
class Packet:
    """One decoded packet. ``code`` is the instruction (host → servo) or the error byte (servo → host)."""

    servo_id: int
    code: int
    params: bytes
    checksum_ok: bool


class PacketParser:
    """Incremental parser for a byte stream (resynchronises on garbage like the SDK does).

    Feed bytes with :meth:`feed`; it returns every complete packet, including ones whose checksum is
    wrong (``checksum_ok=False``) so the caller can decide what a real servo would do (ignore them).
    """

    MAX_LEN = 250

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Packet]:
        self._buf.extend(data)
        packets: list[Packet] = []
        buf = self._buf
        while True:
            start = buf.find(HEADER)
            if start < 0:
                # Keep a trailing 0xFF: it may be the first half of the next header.
                del buf[: max(0, len(buf) - 1) if buf.endswith(b"\xff") else len(buf)]
                return packets
            if start:
                del buf[:start]
            # Runs of FF (e.g. FF FF FF id ...) — the header is the last FF pair before the id.
            while len(buf) >= 3 and buf[2] == 0xFF:
                del buf[0]
            if len(buf) < 4:
                return packets
            length = buf[3]
            if length < 2 or length > self.MAX_LEN:
                del buf[:2]  # not a plausible packet: drop this header and resync
                continue
            total = length + 4
            if len(buf) < total:
                return packets
            body = bytes(buf[2 : total - 1])
            packets.append(
                Packet(
                    servo_id=body[0],
                    code=body[2],
                    params=body[3:],
                    checksum_ok=checksum(body) == buf[total - 1],
                )
            )
            del buf[:total]


def encode_sign_magnitude(value: int, sign_bit: int) -> int:
    """Feetech sign-magnitude encoding (Homing_Offset: bit 11; positions/velocities: bit 15)."""
    magnitude = abs(int(value))
    if magnitude >= (1 << sign_bit):
        raise ValueError(f"magnitude {magnitude} does not fit below sign bit {sign_bit}")
    return ((1 << sign_bit) if value < 0 else 0) | magnitude


def decode_sign_magnitude(raw: int, sign_bit: int) -> int:
    magnitude = raw & ((1 << sign_bit) - 1)
    return -magnitude if (raw >> sign_bit) & 1 else magnitude
