"""Byte-level model of a bus of Feetech STS3215 servos (protocol 0), no I/O.

:class:`SimServoBus.handle` takes the bytes a host writes and returns the bytes the servos would send
back, so the same model serves a pty (``sim_bus``), tests and benchmarks. What is modelled, and why:

* Control table per motor (``sts3215.REG``) with read-only and EEPROM areas; EEPROM writes are ignored
  while ``Lock`` = 1, as on the real servo (LeRobot clears Lock when it disables torque).
* ``Present_Position = (actual - Homing_Offset) mod 4096`` — the firmware's rule that LeRobot's
  calibration relies on (it writes ``Homing_Offset = present - 2047`` so the homed pose reads 2047).
  Changing the offset keeps the physical (actual) position and shifts the reported one.
* Goals are clamped to ``[Min_Position_Limit, Max_Position_Limit]`` (in the offset frame).
* A first-order motion model (time constant + velocity cap) integrated lazily on the clock, so a
  servo moves between packets exactly as much real time has passed.
* Torque off: the motor stays where it is (no gravity) and Goal_Position is *not* synced to present:
  enabling torque then drives to the stale goal. That is the pessimistic reading of the firmware and it
  makes a host that forgets to write goal = present before enabling torque visibly jump.
* Power loss and power-up (a brown-out, :meth:`SimServo.power_off` / :meth:`SimServo.power_on`): an
  unpowered servo never answers and is limp (it can be moved by hand); on power-up the EEPROM area
  (calibration, PID, limits) is kept and RAM comes back at its power-on values: torque off, Lock 1,
  Acceleration 0, Torque_Limit = Max_Torque_Limit, and Goal_Position **0**, not the present position.
  That last one is again the pessimistic reading (the firmware may well initialize it otherwise): with
  the firmware's clamp to the position limits, a host that re-enables torque after a brown-out without
  writing goal := present first drives the joint to its Min_Position_Limit at full speed.
* Phase bit 4 (angle feedback mode, which LeRobot 0.6.1 clears at connect): while set, Present_Position
  is ``actual - Homing_Offset`` without the wrap into 0..4095, so a calibrated joint can read negative
  or past 4095 (sign-magnitude, bit 15) — the overflow LeRobot's PR #3373 fixed on real arms.
* Faults: a dead motor (never answers, ignores writes, but keeps its power and torque: a broken data
  line), dropped replies and corrupted status packets — a bad checksum, or a reply cut short — by count,
  by probability, or always (probability 1); both read "Incorrect status packet" in the SDK. Alarm bits
  in Status and in every status packet's error byte.
"""
from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from gemma3nvla_ros.hardware import scs_protocol as scs
from gemma3nvla_ros.hardware.sts3215 import (
    EEPROM_END,
    MODEL_NUMBER_STS3215,
    PHASE_MULTI_TURN_FEEDBACK,
    READ_ONLY,
    REG,
    RESOLUTION,
    SIGN_BIT,
)

Clock = Callable[[], float]

# Factory-ish defaults (Feetech STS3215 manual); what LeRobot later overwrites is irrelevant here.
_DEFAULTS: dict[str, int] = {
    "Firmware_Major_Version": 3,
    "Firmware_Minor_Version": 10,
    "Model_Number": MODEL_NUMBER_STS3215,
    "Baud_Rate": 0,
    "Return_Delay_Time": 250,
    "Response_Status_Level": 1,
    "Min_Position_Limit": 0,
    "Max_Position_Limit": 4095,
    "Max_Temperature_Limit": 70,
    "Max_Voltage_Limit": 140,
    "Min_Voltage_Limit": 40,
    "Max_Torque_Limit": 1000,
    "Phase": 12,
    "Unloading_Condition": 44,
    "LED_Alarm_Condition": 47,
    "P_Coefficient": 32,
    "D_Coefficient": 32,
    "I_Coefficient": 0,
    "Minimum_Startup_Force": 16,
    "CW_Dead_Zone": 1,
    "CCW_Dead_Zone": 1,
    "Protection_Current": 500,
    "Angular_Resolution": 1,
    "Homing_Offset": 0,
    "Operating_Mode": 0,
    "Protective_Torque": 20,
    "Protection_Time": 200,
    "Overload_Torque": 80,
    "Torque_Limit": 1000,
    "Lock": 1,
    "Maximum_Acceleration": 0,
}

# RAM at power-up (everything else below EEPROM_END is EEPROM and survives a power loss).
POWER_ON_GOAL = 0  # see the module docstring: deliberately not the present position
_POWER_ON_RAM: dict[str, int] = {
    "Torque_Enable": 0,
    "Acceleration": 0,
    "Goal_Position": POWER_ON_GOAL,
    "Goal_Time": 0,
    "Goal_Velocity": 0,
    "Lock": 1,
    "Maximum_Acceleration": 0,
}


@dataclass
class FaultConfig:
    """Per-motor fault injection. Counts are consumed first, then probabilities apply."""

    dead: bool = False
    drop_next: int = 0
    corrupt_next: int = 0
    drop_probability: float = 0.0
    corrupt_probability: float = 0.0
    corrupt_mode: str = "checksum"  # or "truncate": the reply stops before its checksum byte


@dataclass
class MotionModel:
    time_constant_s: float = 0.05
    max_velocity_ticks_s: float = 3000.0  # ~ 265 deg/s, about an STS3215 at 12 V without load


@dataclass
class SimServo:
    servo_id: int
    position: float = 2047.0  # present frame (after Homing_Offset), ticks
    clock: Clock = time.monotonic
    motion: MotionModel = field(default_factory=MotionModel)
    faults: FaultConfig = field(default_factory=FaultConfig)
    voltage_dv: int = 120  # 12.0 V
    temperature_c: int = 30
    alarm: int = 0
    powered: bool = True
    obstacle: float | None = None  # ticks (present frame) the joint cannot move through
    mem: bytearray = field(default_factory=lambda: bytearray(256))

    def __post_init__(self) -> None:
        for name, value in _DEFAULTS.items():
            self._poke(name, value)
        self._poke("ID", self.servo_id)
        self._poke("Goal_Position", int(round(self.position)))
        self._velocity = 0.0
        self._last = self.clock()

    # -- raw register access (no protection) -------------------------------------------------------
    def _poke(self, name: str, value: int) -> None:
        addr, size = REG[name]
        self.mem[addr : addr + size] = int(value).to_bytes(size, "little")

    def peek(self, name: str) -> int:
        addr, size = REG[name]
        return int.from_bytes(self.mem[addr : addr + size], "little")

    def set_register(self, name: str, value: int) -> None:
        """Set a register directly, bypassing Lock and the offset shift (setup: preloading a
        calibration). Signed registers (Homing_Offset, Goal_Position) take signed ints."""
        self.update()
        if name in SIGN_BIT:
            value = scs.encode_sign_magnitude(value, SIGN_BIT[name])
        self._poke(name, value)
        if name == "ID":
            self.servo_id = value

    @property
    def homing_offset(self) -> int:
        return scs.decode_sign_magnitude(self.peek("Homing_Offset"), 11)

    @property
    def torque_enabled(self) -> bool:
        return self.peek("Torque_Enable") == 1

    @property
    def goal(self) -> int:
        return scs.decode_sign_magnitude(self.peek("Goal_Position"), 15)

    # -- physics ------------------------------------------------------------------------------------
    def target(self) -> float:
        lo, hi = self.peek("Min_Position_Limit"), self.peek("Max_Position_Limit")
        goal = self.goal
        if lo < hi:  # lo == hi == 0 would be multi-turn mode; not used by LeRobot
            goal = min(max(goal, lo), hi)
        return float(goal)

    def update(self) -> None:
        now = self.clock()
        dt = max(0.0, now - self._last)
        self._last = now
        if dt == 0.0:
            return
        if not self.torque_enabled:
            self._velocity = 0.0
            return
        error = self.target() - self.position
        step = error * (1.0 - math.exp(-dt / self.motion.time_constant_s))
        cap = self.motion.max_velocity_ticks_s * dt
        step = max(-cap, min(cap, step))
        if abs(error - step) < 0.5:  # settle on the integer goal instead of creeping forever
            step = error
        new = self.position + step
        if self.obstacle is not None:  # stopped by an object (a gripper closing on it): the error remains
            new = min(new, self.obstacle) if self._obstacle_side > 0 else max(new, self.obstacle)
        self._velocity = (new - self.position) / dt
        self.position = new

    def block_at(self, position: float | None) -> None:
        """An object the joint cannot move through (None removes it)."""
        self.update()
        self.obstacle = None if position is None else float(position)
        if position is not None:
            self._obstacle_side = 1.0 if self.obstacle >= self.position else -1.0

    def push_to(self, position: float) -> None:
        """An external hand moves the joint (only sticks while torque is off, as on the arm)."""
        self.update()
        self.position = float(position)

    def _refresh_present(self) -> None:
        self.update()
        present = int(round(self.position)) % RESOLUTION
        if self.peek("Phase") & PHASE_MULTI_TURN_FEEDBACK:
            offset = self.homing_offset
            present = (present + offset) % RESOLUTION - offset  # actual - offset, unwrapped
        self._poke("Present_Position", scs.encode_sign_magnitude(present, 15))
        self._poke("Present_Velocity", scs.encode_sign_magnitude(int(round(self._velocity)), 15))
        effort = 0.0
        if self.torque_enabled:
            effort = min(1000.0, abs(self.target() - self.position) * 2.0 + 20.0)
        self._poke("Present_Load", scs.encode_sign_magnitude(int(effort), 10))
        self._poke("Present_Current", int(effort * 0.3))
        self._poke("Present_Voltage", self.voltage_dv)
        self._poke("Present_Temperature", self.temperature_c)
        self._poke("Status", self.alarm)
        self._poke("Moving", int(abs(self.target() - self.position) > 1.0 and self.torque_enabled))

    # -- protocol-level operations -------------------------------------------------------------------
    def read(self, address: int, length: int) -> bytes:
        self._refresh_present()
        return bytes(self.mem[address : address + length]).ljust(length, b"\x00")

    def write(self, address: int, data: bytes) -> None:
        self.update()
        old_offset = self.homing_offset
        locked = self.peek("Lock") == 1
        for i, byte in enumerate(data):
            addr = address + i
            if addr >= len(self.mem) or addr in READ_ONLY:
                continue
            if addr < EEPROM_END and locked:
                continue  # EEPROM is write-protected while Lock=1 (silently, like the firmware)
            self.mem[addr] = byte
        new_offset = self.homing_offset
        if new_offset != old_offset:
            # Same physical position, new zero: present = actual - offset.
            actual = self.position + old_offset
            self.position = float((actual - new_offset) % RESOLUTION)
        self.servo_id = self.mem[REG["ID"][0]]
        if self.peek("Torque_Enable") not in (0, 1):
            self._poke("Torque_Enable", 1)
        self._apply_unloading()

    def _apply_unloading(self) -> None:
        # Alarms listed in Unloading_Condition switch torque off (e.g. overload, overheat).
        if self.alarm & self.peek("Unloading_Condition"):
            self._poke("Torque_Enable", 0)

    def set_alarm(self, bits: int) -> None:
        self.update()
        self.alarm = bits & 0x7F
        self._apply_unloading()

    def error_byte(self) -> int:
        return self.alarm

    # -- power ----------------------------------------------------------------------------------------
    def power_off(self) -> None:
        """Supply lost (brown-out, loose power wire): the servo stops answering and goes limp where it
        is; :meth:`push_to` then moves it, as gravity or a hand would."""
        self.update()
        self.powered = False
        self._poke("Torque_Enable", 0)
        self._velocity = 0.0

    def power_on(self) -> None:
        """Power-up: EEPROM kept, RAM at its power-on values (torque off, Goal_Position
        ``POWER_ON_GOAL``), alarms cleared."""
        self.update()
        self.powered = True
        self.alarm = 0
        for name, value in _POWER_ON_RAM.items():
            self._poke(name, value)
        self._poke("Torque_Limit", self.peek("Max_Torque_Limit"))
        self._velocity = 0.0


class SimServoBus:
    """A daisy chain of :class:`SimServo`; turns host bytes into the servos' reply bytes."""

    def __init__(
        self,
        servos: Iterable[SimServo],
        *,
        seed: int | None = 0,
    ) -> None:
        self._servos = {s.servo_id: s for s in servos}
        self._parser = scs.PacketParser()
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._pending: dict[int, tuple[int, bytes]] = {}  # REG_WRITE buffered until ACTION
        self.stats = {"packets": 0, "bad_checksum_in": 0, "dropped": 0, "corrupted": 0, "unknown": 0}

    # -- accessors for tests / CLI --------------------------------------------------------------------
    def servo(self, servo_id: int) -> SimServo:
        with self._lock:
            return self._servos[servo_id]

    @property
    def servos(self) -> list[SimServo]:
        with self._lock:
            return list(self._servos.values())

    def set_faults(self, servo_id: int | None = None, **changes: object) -> None:
        """Change fault injection at runtime, e.g. ``set_faults(3, dead=True)`` or
        ``set_faults(None, drop_probability=0.1)`` for every motor."""
        with self._lock:
            targets = self._servos.values() if servo_id is None else [self._servos[servo_id]]
            for servo in targets:
                for key, value in changes.items():
                    if not hasattr(servo.faults, key):
                        raise AttributeError(f"unknown fault {key!r}")
                    setattr(servo.faults, key, value)

    # -- byte stream ----------------------------------------------------------------------------------
    def handle(self, data: bytes) -> bytes:
        with self._lock:
            out = bytearray()
            for packet in self._parser.feed(data):
                self.stats["packets"] += 1
                if not packet.checksum_ok:
                    self.stats["bad_checksum_in"] += 1
                    continue  # a servo ignores a corrupted instruction
                out += self._dispatch(packet)
            return bytes(out)

    def _reply(self, servo: SimServo, data: bytes = b"") -> bytes:
        faults = servo.faults
        if faults.drop_next > 0:
            faults.drop_next -= 1
            self.stats["dropped"] += 1
            return b""
        if faults.drop_probability and self._rng.random() < faults.drop_probability:
            self.stats["dropped"] += 1
            return b""
        packet = bytearray(scs.status_packet(servo.servo_id, servo.error_byte(), data))
        corrupt = False
        if faults.corrupt_next > 0:
            faults.corrupt_next -= 1
            corrupt = True
        elif faults.corrupt_probability and self._rng.random() < faults.corrupt_probability:
            corrupt = True
        if corrupt:
            if faults.corrupt_mode == "truncate":
                del packet[-2:]  # the host waits for the rest, then gives up: an incomplete packet
            else:
                packet[-1] ^= 0x5A
            self.stats["corrupted"] += 1
        return bytes(packet)

    def set_power(self, servo_id: int, on: bool) -> None:
        """Cut (``on=False``) or restore one servo's supply; see :meth:`SimServo.power_off` / ``power_on``."""
        with self._lock:
            servo = self._servos[servo_id]
            if on and not servo.powered:
                servo.power_on()
            elif not on and servo.powered:
                servo.power_off()

    def _alive(self, servo_id: int) -> SimServo | None:
        servo = self._servos.get(servo_id)
        if servo is None or servo.faults.dead or not servo.powered:
            return None
        return servo

    def _dispatch(self, p: scs.Packet) -> bytes:
        inst, params, sid = p.code, p.params, p.servo_id
        broadcast = sid == scs.BROADCAST_ID
        targets = (
            [s for s in self._servos.values() if self._alive(s.servo_id) is not None]
            if broadcast
            else [s for s in [self._alive(sid)] if s is not None]
        )
        if inst == scs.INST_PING:
            return b"".join(self._reply(s) for s in sorted(targets, key=lambda s: s.servo_id))
        if inst == scs.INST_READ and len(params) == 2 and not broadcast:
            return b"".join(self._reply(s, s.read(params[0], params[1])) for s in targets)
        if inst in (scs.INST_WRITE, scs.INST_REG_WRITE) and len(params) >= 2:
            for s in targets:
                if inst == scs.INST_WRITE:
                    s.write(params[0], params[1:])
                else:
                    self._pending[s.servo_id] = (params[0], params[1:])
            return b"" if broadcast else b"".join(self._status_reply(s) for s in targets)
        if inst == scs.INST_ACTION:
            for s in targets:
                pending = self._pending.pop(s.servo_id, None)
                if pending:
                    s.write(*pending)
            return b"" if broadcast else b"".join(self._status_reply(s) for s in targets)
        if inst == scs.INST_SYNC_READ and broadcast and len(params) >= 2:
            address, length = params[0], params[1]
            out = bytearray()
            for servo_id in params[2:]:  # replies come in the order the host listed the ids
                s = self._alive(servo_id)
                if s is not None:
                    out += self._reply(s, s.read(address, length))
            return bytes(out)
        if inst == scs.INST_SYNC_WRITE and broadcast and len(params) >= 2:
            address, length = params[0], params[1]
            body = params[2:]
            stride = 1 + length
            for i in range(0, len(body) - stride + 1, stride):
                s = self._alive(body[i])
                if s is not None:
                    s.write(address, body[i + 1 : i + stride])
            return b""  # sync write never answers
        self.stats["unknown"] += 1
        return b""

    def _status_reply(self, servo: SimServo) -> bytes:
        # Response_Status_Level 0: only PING and READ answer.
        if servo.peek("Response_Status_Level") == 0:
            return b""
        return self._reply(servo)


def make_so101_bus(
    *,
    calibration: dict[str, dict] | None = None,
    ids: Iterable[int] = range(1, 7),
    clock: Clock = time.monotonic,
    seed: int | None = 0,
    motion: MotionModel | None = None,
    cold: bool = False,
) -> SimServoBus:
    """Six servos. With ``calibration`` (LeRobot JSON dict), servo memory holds it as if
    ``lerobot-calibrate`` had run, and every joint rests mid-range (the homed pose) with its goal there.
    ``cold``: the servos were just powered up instead (RAM at power-on values, Goal_Position not the
    present position), as when the arm's supply comes back together with the USB adapter."""
    by_id = {int(entry["id"]): entry for entry in (calibration or {}).values()}
    servos = []
    for servo_id in ids:
        servo = SimServo(servo_id, clock=clock, motion=motion or MotionModel())
        entry = by_id.get(servo_id)
        if entry is not None:
            # As if lerobot-calibrate had written it: offset first (shifts the reported frame), limits.
            servo.set_register("Homing_Offset", int(entry["homing_offset"]))
            servo.set_register("Min_Position_Limit", int(entry["range_min"]))
            servo.set_register("Max_Position_Limit", int(entry["range_max"]))
            mid = round((int(entry["range_min"]) + int(entry["range_max"])) / 2)
            servo.position = float(mid)  # the arm rests at the homed pose (mid-range)
            servo.set_register("Goal_Position", mid)
        if cold:
            servo.power_on()
        servos.append(servo)
    return SimServoBus(servos, seed=seed)
