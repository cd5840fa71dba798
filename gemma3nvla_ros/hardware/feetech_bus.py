"""Feetech STS3215 bus over feetech-servo-sdk (``scservo_sdk``): the only code that talks to the servos.

Does what LeRobot 0.6.1's ``FeetechMotorsBus`` + ``SOFollower`` do on the wire (ping, the on-connect
configuration of ``servo_config``, calibration registers, sync read Present_Position, sync write
Goal_Position, torque + Lock), plus what a long-running node needs and LeRobot leaves out:

* every transaction is retried (``retry.run_with_retries``, LeRobot's ``num_retry``; ``retries`` may
  change at any time), and each failed try is counted per kind (no reply, bad checksum / "Incorrect
  status packet", port) and per motor, so /diagnostics can say *which* motor misbehaves, and how many
  transactions a retry rescued;
* stale bytes from a failed transaction are discarded before the next one (the SDK's ``clearPort``
  only drains output, so a leftover reply could otherwise be taken for the next read's answer);
* the status-packet error byte of every reply is kept (the SDK's GroupSyncRead drops it);
* configuration is written only where it differs (no needless torque-off, no EEPROM wear), and read
  back; the PID gains can also change while the arm holds (:meth:`set_gains`, torque stays on);
* Goal_Position is set to Present_Position before torque is enabled, so enabling never jumps;
* a motor whose transaction failed after its retries is marked ``unreachable`` (it may have lost power:
  an STS3215 comes back from a brown-out with torque off and its RAM reset), and :meth:`recover_motor`
  brings one such motor back alone, holding where it now is.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gemma3nvla_ros.hardware import scs_protocol as scsp
from gemma3nvla_ros.hardware.calibration import MotorCalibration
from gemma3nvla_ros.hardware.retry import MAX_RETRIES, run_with_retries
from gemma3nvla_ros.hardware.servo_config import ServoSettings, differences, motor_settings
from gemma3nvla_ros.hardware.sts3215 import MODEL_NUMBER_STS3215, REG, SIGN_BIT

DEFAULT_BAUDRATE = 1_000_000


class BusError(RuntimeError):
    """A bus transaction failed after its retries (the port itself still works)."""

    def __init__(self, message: str, motor: str | None = None) -> None:
        super().__init__(message)
        self.motor = motor


class BusPortError(BusError):
    """The serial port failed (unplugged adapter, closed pty): reconnect needed."""


class MotorsMissingError(BusError):
    """Some configured motors did not answer a ping (or have the wrong model)."""


@dataclass
class BusCounters:
    transactions: int = 0
    retries: int = 0
    recovered: int = 0  # transactions that succeeded on a retry
    no_reply: int = 0
    bad_checksum: int = 0
    port_errors: int = 0
    other_errors: int = 0
    failed: int = 0  # transactions that still failed after their retries


@dataclass
class MotorHealth:
    name: str
    motor_id: int
    no_reply: int = 0
    bad_checksum: int = 0
    consecutive_failures: int = 0
    error_bits: int = 0  # last status-packet error byte (alarm bits)
    voltage_v: float | None = None
    temperature_c: int | None = None
    status: int | None = None
    current_a: float | None = None
    torque_enabled: bool | None = None  # Torque_Enable as last read (a trip or brown-out clears it)
    last_ok: float | None = None  # bus clock time of the last good reply
    # A transaction naming this motor failed after its retries since torque was last enabled on it:
    # it may have lost power (and with it torque and RAM). Cleared by enable_torque / recover_motor.
    unreachable: bool = False
    recoveries: int = 0  # times recover_motor brought it back


@dataclass
class _Result:
    ok: bool
    comm: int
    failed_id: int | None = None
    data: dict[int, list[int]] = field(default_factory=dict)
    errors: dict[int, int] = field(default_factory=dict)


def _patched_timeout(margin_ms: float) -> Callable[[Any, int], None]:
    # LeRobot patches the same method: the SDK's own timeout is too short for some adapters. The
    # margin is a parameter here because a dead motor costs one full timeout per transaction.
    def set_packet_timeout(self: Any, packet_length: int) -> None:  # noqa: N802 (SDK name)
        self.packet_start_time = self.getCurrentTime()
        self.packet_timeout = self.tx_time_per_byte * (packet_length + 3) + margin_ms

    return set_packet_timeout


class FeetechBus:
    def __init__(
        self,
        port: str,
        motors: Mapping[str, int],
        *,
        baudrate: int = DEFAULT_BAUDRATE,
        timeout_ms: float = 50.0,
        retries: int = 2,
        settings: ServoSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if len(set(motors.values())) != len(motors):
            raise ValueError(f"duplicate motor ids in {dict(motors)}")
        self.port = port
        self.motors = dict(motors)
        self.names = list(motors)
        self.ids = [motors[n] for n in self.names]
        self._name_of = {i: n for n, i in self.motors.items()}
        self.baudrate = baudrate
        self.timeout_ms = timeout_ms
        if not 0 <= int(retries) <= MAX_RETRIES:
            raise ValueError(f"retries must be within 0..{MAX_RETRIES}, not {retries}")
        self.retries = int(retries)
        self.settings = settings or ServoSettings()
        self.clock = clock
        self.counters = BusCounters()
        self.health = {n: MotorHealth(n, i) for n, i in self.motors.items()}
        self._lock = threading.RLock()
        self._port: Any = None
        self._ph: Any = None
        import scservo_sdk as scs  # imported late: the pure parts of this package must not need it

        self._scs = scs

    # -- port -----------------------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._port is not None and bool(self._port.is_open)

    def open(self) -> None:
        """Open the serial port (no motor traffic)."""
        scs = self._scs
        with self._lock:
            self.close()
            port = scs.PortHandler(self.port)
            port.setPacketTimeout = _patched_timeout(self.timeout_ms).__get__(port, scs.PortHandler)
            try:
                opened = port.openPort() and port.setBaudRate(self.baudrate)
            except Exception as exc:  # pyserial raises SerialException / OSError / ValueError
                raise BusPortError(
                    f"Cannot open servo bus port '{self.port}': {exc}. Check the USB cable and the port "
                    "name (`lerobot-find-port`), and that no other program (another bridge, "
                    "lerobot-teleoperate) holds it."
                ) from exc
            if not opened:
                raise BusPortError(f"Cannot open servo bus port '{self.port}' at {self.baudrate} baud.")
            try:
                # Two processes on one bus steal each other's replies: take an advisory lock (what
                # pyserial's exclusive=True does) so a second bridge on the same arm fails loudly.
                import fcntl

                fcntl.flock(port.ser.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                port.closePort()
                raise BusPortError(
                    f"Servo bus port '{self.port}' is in use by another process (another so101_bridge?): {exc}"
                ) from exc
            self._port = port
            self._ph = scs.PacketHandler(0)

    def close(self) -> None:
        with self._lock:
            if self._port is not None:
                try:
                    self._port.closePort()
                except Exception:
                    pass
            self._port = None

    def connect(self, wait_s: float = 0.0) -> None:
        """Open the port and check that every motor answers with the STS3215 model number. ``wait_s``: keep
        asking for that long while motors are missing (a bus that has just come up: the simulator's process
        on a loaded machine, servos just powered) before giving up with the missing ids."""
        self.open()
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self.ping_all()
                return
            except MotorsMissingError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)

    # -- transactions ---------------------------------------------------------------------------------
    def _prepare(self) -> None:
        if self._port is None:
            raise BusPortError(f"Servo bus port '{self.port}' is not open.")
        self._port.is_using = False  # the SDK leaves it set after some failures; we serialize ourselves
        self._port.ser.reset_input_buffer()

    def _run(self, what: str, attempt: Callable[[], _Result], motor_ids: Sequence[int]) -> _Result:
        """Run one transaction with retries; count failures; raise BusError / BusPortError."""
        scs = self._scs

        def one_try() -> _Result:
            try:
                self._prepare()
                result = attempt()
            except IndexError:
                # The SDK indexes replies without checking their length; a late reply from an
                # earlier timed-out transaction (same id, other instruction) trips it. Treat it
                # as the corrupt reply it is and retry.
                result = _Result(False, scs.COMM_RX_CORRUPT, motor_ids[0] if len(motor_ids) == 1 else None)
            except self._port_exceptions() as exc:
                self.counters.port_errors += 1
                self.counters.failed += 1
                raise BusPortError(f"Servo bus port '{self.port}' failed during {what}: {exc}") from exc
            now = self.clock()
            for mid in motor_ids:
                if mid in result.errors:
                    health = self.health[self._name_of[mid]]
                    health.error_bits = result.errors[mid]
                    health.consecutive_failures = 0
                    health.last_ok = now
            return result

        with self._lock:
            result, ok = run_with_retries(one_try, lambda r: r.ok, self.retries, self.counters, self._count_failure)
            if ok:
                return result
            motor = self._name_of.get(result.failed_id) if result.failed_id is not None else None
            if motor is not None:
                self.health[motor].unreachable = True
            who = f" (motor {motor}, id {result.failed_id})" if motor else ""
            raise BusError(
                f"{what} failed after {1 + self.retries} tries{who}: {self._ph.getTxRxResult(result.comm)}",
                motor=motor,
            )

    @staticmethod
    def _port_exceptions() -> tuple[type[BaseException], ...]:
        # What a vanished port raises from pyserial: SerialException, OSError, termios.error (tcflush).
        import termios

        import serial

        return (OSError, termios.error, serial.SerialException)

    def _count_failure(self, result: _Result) -> None:
        scs = self._scs
        health = self.health.get(self._name_of.get(result.failed_id, ""), None)
        if result.comm == scs.COMM_RX_TIMEOUT:
            self.counters.no_reply += 1
            if health:
                health.no_reply += 1
        elif result.comm == scs.COMM_RX_CORRUPT:
            self.counters.bad_checksum += 1
            if health:
                health.bad_checksum += 1
        else:
            self.counters.other_errors += 1
        if health:
            health.consecutive_failures += 1

    # -- single-motor register access ----------------------------------------------------------------
    def read(self, name: str, register: str) -> int:
        addr, size = REG[register]
        mid = self.motors[name]

        def attempt() -> _Result:
            data, comm, err = self._ph.readTxRx(self._port, mid, addr, size)
            ok = comm == self._scs.COMM_SUCCESS and len(data) >= size
            return _Result(ok, comm, None if ok else mid, {mid: data} if ok else {}, {mid: err} if ok else {})

        result = self._run(f"read {register} from {name}", attempt, [mid])
        return self._decode(register, result.data[mid])

    def write(self, name: str, register: str, value: int) -> None:
        """Write with a status reply (use for configuration; goals use :meth:`sync_write`)."""
        addr, size = REG[register]
        mid = self.motors[name]
        data = self._encode(register, value)

        def attempt() -> _Result:
            comm, err = self._ph.writeTxRx(self._port, mid, addr, size, data)
            ok = comm == self._scs.COMM_SUCCESS
            return _Result(ok, comm, None if ok else mid, {}, {mid: err} if ok else {})

        self._run(f"write {register}={value} to {name}", attempt, [mid])

    def ping(self, name: str) -> int:
        mid = self.motors[name]

        def attempt() -> _Result:
            model, comm, err = self._ph.ping(self._port, mid)
            ok = comm == self._scs.COMM_SUCCESS
            return _Result(ok, comm, None if ok else mid, {mid: [model & 0xFF, model >> 8]}, {mid: err} if ok else {})

        result = self._run(f"ping {name}", attempt, [mid])
        lo, hi = result.data[mid]
        return lo | (hi << 8)

    def ping_all(self) -> None:
        missing, wrong = [], []
        for name, mid in self.motors.items():
            try:
                model = self.ping(name)
            except BusPortError:
                raise
            except BusError:
                missing.append(f"{mid} ({name})")
                continue
            if model != MODEL_NUMBER_STS3215:
                wrong.append(f"{mid} ({name}): model {model}, expected {MODEL_NUMBER_STS3215} (STS3215)")
        if missing or wrong:
            parts = []
            if missing:
                parts.append("no answer from motor ids " + ", ".join(missing))
            if wrong:
                parts.append("wrong model on " + "; ".join(wrong))
            raise MotorsMissingError(
                f"Servo bus on '{self.port}': " + "; ".join(parts) + ". Check that the arm's power supply "
                "is on, the daisy-chain cables are seated, and the ids were set with "
                "`lerobot-setup-motors --robot.type=so101_follower`."
            )

    # -- sync read / write ------------------------------------------------------------------------------
    def sync_read(self, register: str, names: Sequence[str] | None = None, length: int | None = None) -> dict[str, Any]:
        """One Sync Read of ``register`` (``length`` bytes from its address; default its size).

        Returns decoded ints per motor name (raw byte lists when ``length`` is given).
        """
        addr, size = REG[register]
        n_bytes = length or size
        names = list(names) if names is not None else self.names
        ids = [self.motors[n] for n in names]
        scs = self._scs

        def attempt() -> _Result:
            comm = self._ph.syncReadTx(self._port, addr, n_bytes, ids, len(ids))
            if comm != scs.COMM_SUCCESS:
                return _Result(False, comm, ids[0])
            res = _Result(True, comm)
            for mid in ids:
                data, comm, err = self._ph.readRx(self._port, mid, n_bytes)
                if comm != scs.COMM_SUCCESS or len(data) < n_bytes:
                    res.ok, res.comm, res.failed_id = False, comm, mid
                    return res
                res.data[mid], res.errors[mid] = data, err
            return res

        result = self._run(f"sync read {register}", attempt, ids)
        if length is not None:
            return {self._name_of[i]: result.data[i] for i in ids}
        return {self._name_of[i]: self._decode(register, result.data[i]) for i in ids}

    def sync_write(self, register: str, values: Mapping[str, int]) -> None:
        """Sync Write (no reply from the servos: a lost packet is not detectable here)."""
        addr, size = REG[register]
        param: list[int] = []
        for name, value in values.items():
            param.append(self.motors[name])
            param.extend(self._encode(register, int(value)))

        def attempt() -> _Result:
            comm = self._ph.syncWriteTxOnly(self._port, addr, size, param, len(param))
            return _Result(comm == self._scs.COMM_SUCCESS, comm)

        self._run(f"sync write {register}", attempt, [])

    def read_positions(self) -> NDArray[np.float64]:
        """Present_Position of every motor (bus order), raw ticks."""
        values = self.sync_read("Present_Position")
        return np.array([values[n] for n in self.names], dtype=np.float64)

    def write_goals(self, goals: Mapping[str, int]) -> None:
        self.sync_write("Goal_Position", goals)

    def read_diagnostics(self) -> dict[str, MotorHealth]:
        """Voltage, temperature, Status and current of every motor (one Sync Read of 62..70).

        A motor that does not answer is then probed alone, so the others still get fresh values.
        """
        start = REG["Present_Voltage"][0]
        length = REG["Present_Current"][0] + 2 - start
        try:
            blocks = self.sync_read("Present_Voltage", length=length)
        except BusPortError:
            raise
        except BusError:
            blocks = {}
            for name in self.names:
                try:
                    blocks.update(self.sync_read("Present_Voltage", [name], length=length))
                except BusPortError:
                    raise
                except BusError:
                    pass
        for name, data in blocks.items():
            health = self.health[name]
            health.voltage_v = data[0] * 0.1
            health.temperature_c = data[1]
            health.status = data[REG["Status"][0] - start]
            cur = data[REG["Present_Current"][0] - start] | (data[REG["Present_Current"][0] - start + 1] << 8)
            health.current_a = scsp.decode_sign_magnitude(cur, 15) * 0.0065
        # Torque_Enable too: an overload trip (Unloading_Condition) or a servo brown-out turns torque off
        # by itself and, once the alarm clears, nothing else shows the joint is limp.
        try:
            torque = self.sync_read("Torque_Enable", list(blocks)) if blocks else {}
        except BusPortError:
            raise
        except BusError:
            torque = {}
        for name, value in torque.items():
            self.health[name].torque_enabled = value == 1
        return self.health

    # -- calibration, configuration, torque ---------------------------------------------------------------
    def read_calibration(self) -> dict[str, MotorCalibration]:
        """Homing_Offset and position limits from servo memory (LeRobot's ``read_calibration``)."""
        out = {}
        for name, mid in self.motors.items():
            out[name] = MotorCalibration(
                id=mid,
                drive_mode=0,
                homing_offset=self.read(name, "Homing_Offset"),
                range_min=self.read(name, "Min_Position_Limit"),
                range_max=self.read(name, "Max_Position_Limit"),
            )
        return out

    def write_calibration(self, calibration: Mapping[str, MotorCalibration]) -> None:
        """Write offsets/limits into EEPROM (torque off, Lock=0) and verify by reading back."""
        self.disable_torque()
        for name, cal in calibration.items():
            self.write(name, "Homing_Offset", cal.homing_offset)
            self.write(name, "Min_Position_Limit", cal.range_min)
            self.write(name, "Max_Position_Limit", cal.range_max)
        back = self.read_calibration()
        bad = [n for n, c in calibration.items() if (back[n].homing_offset, back[n].range_min, back[n].range_max)
               != (c.homing_offset, c.range_min, c.range_max)]
        if bad:
            raise BusError(f"Calibration write did not stick on {bad} (EEPROM locked?)")

    def configure(self, gripper: str | None = "gripper", names: Sequence[str] | None = None) -> list[str]:
        """LeRobot 0.6.1's on-connect configuration (``servo_config``, with ``self.settings``), written
        only where servo memory differs (of ``names``, default every motor; only those lose torque),
        with torque off and Lock 0, then read back.

        Returns the changes made ([] when nothing needed writing). Torque is left off if anything had
        to be written; the caller enables torque afterwards (:meth:`enable_torque`, no jump).
        """
        names = list(names or self.names)
        wanted: list[tuple[str, str, int]] = []
        for name in names:
            settings = motor_settings(self.settings, gripper=name == gripper)
            current = {s.register: self.read(name, s.register) for s in settings}
            wanted += [(name, register, value) for register, value in differences(settings, current)]
        if not wanted:
            return []
        self.disable_torque(sorted({n for n, _, _ in wanted}, key=names.index))
        for name, register, value in wanted:
            self.write(name, register, value)
        stuck = [(n, r, v) for n, r, v in wanted if self.read(n, r) != v]
        if stuck:
            raise BusError(f"Configuration did not stick: {stuck}")
        return [f"{n}.{r}={v}" for n, r, v in wanted]

    def set_gains(self, settings: ServoSettings, names: Sequence[str] | None = None) -> list[str]:
        """Write the PID gains of ``settings`` where they differ (on ``names``, default every motor),
        **torque left as it is** (the arm keeps holding: the new gains act at once), then adopt
        ``settings``.

        The gains live in EEPROM: Lock goes to 0 for the write and back to what it was, and each value
        is read back. Raises BusError on the first motor that fails, naming it (earlier motors keep the
        new gains; the caller may undo with the old settings on the others)."""
        changes = []
        gains = settings.gains()
        for name in names or self.names:
            current = {r: self.read(name, r) for r in gains}
            todo = {r: v for r, v in gains.items() if current[r] != v}
            if not todo:
                continue
            locked = self.read(name, "Lock")
            if locked:
                self.write(name, "Lock", 0)
            try:
                for register, value in todo.items():
                    self.write(name, register, value)
            finally:
                if locked:
                    self.write(name, "Lock", locked)
            stuck = {r: v for r, v in todo.items() if self.read(name, r) != v}
            if stuck:
                raise BusError(f"PID gains did not stick on {name}: {stuck}", motor=name)
            changes += [f"{name}.{r}={v}" for r, v in todo.items()]
        self.settings = settings
        return changes

    def disable_torque(self, names: Sequence[str] | None = None) -> None:
        """Torque off and Lock=0 on every motor. A motor that fails does not stop the others (a
        shutdown with one silent motor must still leave the rest limp); the first error is raised
        afterwards."""
        first: BusError | None = None
        for name in names or self.names:
            try:
                self.write(name, "Torque_Enable", 0)
                self.health[name].torque_enabled = False
                self.write(name, "Lock", 0)
            except BusPortError:
                raise
            except BusError as exc:
                first = first or exc
        if first is not None:
            raise first

    def enable_torque(self, names: Sequence[str] | None = None) -> dict[str, int]:
        """Goal := present first (so the arm holds where it is), then torque on and EEPROM locked.
        Returns the positions held (ticks)."""
        names = list(names or self.names)
        present = self.sync_read("Present_Position", names)
        for name in names:
            self.write(name, "Goal_Position", present[name])
        for name in names:
            self.write(name, "Torque_Enable", 1)
            self.write(name, "Lock", 1)
            self.health[name].torque_enabled = True
            self.health[name].unreachable = False
        return present

    def refresh_torque(self, name: str) -> bool:
        """Read one motor's Torque_Enable into its health. On means it never lost power (a motor that
        only missed replies keeps holding its goal), so it is no longer ``unreachable``."""
        on = self.read(name, "Torque_Enable") == 1
        health = self.health[name]
        health.torque_enabled = on
        if on:
            health.unreachable = False
        return on

    def recover_motor(self, name: str, gripper: str | None = "gripper") -> int:
        """Bring one motor back after a brown-out or a torque trip, holding where it now is: the
        on-connect configuration where servo memory lost it (Acceleration and Maximum_Acceleration
        live in RAM), then :meth:`enable_torque` for this motor alone (goal := present before torque
        on), verified by reading Torque_Enable back (an alarm in Unloading_Condition that is still
        active switches it straight off again). Returns the position held (ticks); raises BusError
        (the motor stays ``unreachable`` / limp) if any step fails."""
        health = self.health[name]
        self.configure(gripper, names=[name])
        held = self.enable_torque([name])[name]
        if self.read(name, "Torque_Enable") != 1:
            health.torque_enabled = False
            alarm = scsp.describe_error_bits(health.error_bits) or "no alarm bit reported"
            raise BusError(f"torque on {name} did not stay on ({alarm})", motor=name)
        health.recoveries += 1
        return held

    def torque_enabled(self) -> dict[str, bool]:
        return {n: self.read(n, "Torque_Enable") == 1 for n in self.names}

    # -- encoding -------------------------------------------------------------------------------------
    @staticmethod
    def _decode(register: str, data: Sequence[int]) -> int:
        value = 0
        for i, b in enumerate(data):
            value |= (b & 0xFF) << (8 * i)
        bit = SIGN_BIT.get(register)
        return scsp.decode_sign_magnitude(value, bit) if bit is not None else value

    @staticmethod
    def _encode(register: str, value: int) -> list[int]:
        _, size = REG[register]
        bit = SIGN_BIT.get(register)
        raw = scsp.encode_sign_magnitude(value, bit) if bit is not None else int(value)
        if not 0 <= raw < (1 << (8 * size)):
            raise ValueError(f"{register}={value} does not fit in {size} byte(s)")
        return list(raw.to_bytes(size, "little"))
