"""The simulated SO-101 servo bus behind a pseudo-terminal, and the ``sim_servo_bus`` command.

feetech-servo-sdk opens the pty's slave path like a serial port (pyserial sets raw mode and a baud
rate on it, which a pty accepts and ignores), so the SDK and everything above it run unmodified.

    sim_servo_bus --link /tmp/so101_sim          # prints the pty path, serves until Ctrl-C
    ros2 run gemma3nvla_ros so101_bridge --ros-args -p port:=/tmp/so101_sim

With ``--exit-on-stdin-eof`` every line on stdin is also a command for the servos (see
:func:`apply_command`), answered by one line on stdout (``ok ...`` or ``error ...``), so a test can cut a
servo's power, move the limp joint and power it up again at exactly the moment it wants.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import signal
import sys
import threading
import tty
from pathlib import Path

from gemma3nvla_ros.hardware.calibration import EXAMPLE_CALIBRATION
from gemma3nvla_ros.hardware.sim_servo import SimServoBus, make_so101_bus


class PtySimBus:
    """Serves a :class:`SimServoBus` on a pty from a background thread.

    The server keeps its own slave fd open so the master never sees EIO while no client has the port
    open (clients may come and go, as a bridge restart does).
    """

    def __init__(self, bus: SimServoBus, link: str | os.PathLike[str] | None = None) -> None:
        self.bus = bus
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo / CR-LF mangling even before a client configures it
        self.path = os.ttyname(self._slave)
        self.link = Path(link) if link else None
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, name="sim-servo-bus", daemon=True)
        self.bytes_in = 0
        self.bytes_out = 0

    @property
    def port(self) -> str:
        """What a client should open: the stable symlink if one was asked for, else the pty."""
        return str(self.link) if self.link else self.path

    def start(self) -> "PtySimBus":
        if self.link:
            tmp = self.link.with_name(f".{self.link.name}.{os.getpid()}.tmp")
            if tmp.is_symlink() or tmp.exists():
                tmp.unlink()
            os.symlink(self.path, tmp)
            os.replace(tmp, self.link)  # atomic: a stale link from a previous run is replaced
        self._thread.start()
        return self

    def _serve(self) -> None:
        while True:
            ready, _, _ = select.select([self._master, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            try:
                data = os.read(self._master, 4096)
            except OSError:
                return
            if not data:
                return
            self.bytes_in += len(data)
            reply = self.bus.handle(data)
            if reply:
                os.write(self._master, reply)
                self.bytes_out += len(reply)

    def stop(self) -> None:
        if self._stop_w < 0:
            return
        os.write(self._stop_w, b"x")
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        for fd in (self._master, self._slave, self._stop_r, self._stop_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._stop_w = -1
        if self.link and self.link.is_symlink() and os.readlink(self.link) == self.path:
            self.link.unlink()

    def __enter__(self) -> "PtySimBus":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


COMMANDS = {
    "power-off": "ID: the servo loses its supply (stops answering, goes limp where it is)",
    "power-on": "ID: supply back: torque off, RAM at power-on values (Goal_Position not = present)",
    "move": "ID TICKS: an external force moves the joint to TICKS (present frame; sticks only while limp)",
    "alarm": "ID BITS: set the Status alarm bits (an overload trip, 32, unloads torque); 0 clears them",
    "dead": "ID 1|0: the servo stops/starts answering but keeps its power and torque (a data-line fault)",
    "block": "ID TICKS|none: an object the joint cannot move through, e.g. one the gripper closes on",
    "corrupt": "ID|all N|always|off [checksum|truncate]: the next N replies (or every one) arrive corrupted",
    "drop": "ID|all N|always|off: the next N replies (or every one) are lost",
}


def _reply_faults(bus: SimServoBus, verb: str, servo_id: int | None, rest: list[str]) -> None:
    """``corrupt`` / ``drop``: a count, ``always`` (probability 1) or ``off``."""
    count, *mode = rest
    if mode and (verb != "corrupt" or mode not in (["checksum"], ["truncate"])):
        raise ValueError(f"unexpected {' '.join(mode)!r}")
    if count == "always":
        n, probability = 0, 1.0
    elif count == "off":
        n, probability = 0, 0.0
    else:
        n, probability = int(count), 0.0
        if n < 0:
            raise ValueError("the count must be >= 0")
    changes: dict[str, object] = {f"{verb}_next": n, f"{verb}_probability": probability}
    if mode:
        changes["corrupt_mode"] = mode[0]
    bus.set_faults(servo_id, **changes)


def apply_command(bus: SimServoBus, line: str) -> str:
    """One text command (``COMMANDS``) applied to ``bus``; returns the reply line."""
    words = line.split()
    try:
        verb, servo_id, *rest = words
        if verb in ("corrupt", "drop") and 1 <= len(rest) <= 2:
            _reply_faults(bus, verb, None if servo_id == "all" else bus.servo(int(servo_id)).servo_id, rest)
            return f"ok {' '.join(words)}"
        servo = bus.servo(int(servo_id))
        if verb == "power-off" and not rest:
            bus.set_power(servo.servo_id, False)
        elif verb == "power-on" and not rest:
            bus.set_power(servo.servo_id, True)
        elif verb == "move" and len(rest) == 1:
            servo.push_to(float(rest[0]))
        elif verb == "alarm" and len(rest) == 1:
            servo.set_alarm(int(rest[0], 0))
        elif verb == "block" and len(rest) == 1:
            servo.block_at(None if rest[0] == "none" else float(rest[0]))
        elif verb == "dead" and rest in (["0"], ["1"]):
            bus.set_faults(servo.servo_id, dead=rest == ["1"])
        else:
            raise ValueError(f"expected one of: {', '.join(f'{k} {v}' for k, v in COMMANDS.items())}")
    except (ValueError, KeyError) as exc:
        return f"error {line.strip()}: {exc}"
    return f"ok {' '.join(words)}"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="sim_servo_bus",
        description="Simulated SO-101 (6 x Feetech STS3215) on a pseudo-terminal. Prints the pty path "
        "on the first line of stdout, then serves until SIGINT/SIGTERM.",
    )
    p.add_argument("--link", help="also create this symlink to the pty (a stable port path)")
    p.add_argument("--path-file", help="write the port path (the link if given) to this file")
    p.add_argument(
        "--calibration",
        help="LeRobot calibration JSON to preload into servo memory (default: the built-in example, "
        "the same as config/calibration/so101_follower_example.json)",
    )
    p.add_argument(
        "--uncalibrated", action="store_true", help="factory servo memory (offset 0, limits 0..4095)"
    )
    p.add_argument("--ids", default="1,2,3,4,5,6", help="comma-separated motor ids (default 1..6)")
    p.add_argument("--dead", type=int, action="append", default=[], help="motor id that never answers")
    p.add_argument(
        "--dead-between",
        action="append",
        default=[],
        metavar="ID:START:END",
        help="motor ID loses power START seconds after start (stops answering, limp) and powers up at END "
        "(torque off, Goal_Position reset: a brown-out) (repeatable)",
    )
    p.add_argument(
        "--cold",
        action="store_true",
        help="servos start as right after power-up (RAM at power-on values, Goal_Position not = present)",
    )
    p.add_argument("--drop-probability", type=float, default=0.0, help="chance a reply is lost")
    p.add_argument("--corrupt-probability", type=float, default=0.0, help="chance of a bad checksum")
    p.add_argument("--corrupt-mode", choices=("checksum", "truncate"), default="checksum",
                   help="how a reply is corrupted: a bad checksum, or cut short (both 'Incorrect status packet')")
    p.add_argument("--fault-motor", type=int, help="apply drop/corrupt to this id only (default all)")
    p.add_argument("--phase", type=lambda v: int(v, 0),
                   help="Phase register of every servo, e.g. 0x1C: bit 4 set (multi-turn angle feedback, "
                   "which the bridge clears at connect as LeRobot 0.6.1 does)")
    p.add_argument("--seed", type=int, default=0, help="random seed for the probabilistic faults")
    p.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="exit when stdin closes (a parent process that started us as a child has gone); "
        "lines on stdin are servo commands (power-off/power-on/move/alarm/dead/block/corrupt/drop ID ...), "
        "answered on stdout",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    calibration = None
    if not args.uncalibrated:
        calibration = EXAMPLE_CALIBRATION
        if args.calibration:
            try:
                calibration = json.loads(Path(args.calibration).read_text())
                make_so101_bus(calibration=calibration)  # fail here, with the file named, not later
            except (OSError, ValueError, KeyError, TypeError) as exc:
                print(f"sim_servo_bus: cannot use calibration {args.calibration}: {exc!r}", file=sys.stderr)
                return 2
    ids = [int(x) for x in args.ids.split(",") if x.strip()]
    bus = make_so101_bus(calibration=calibration, ids=ids, seed=args.seed, cold=args.cold)
    for dead in args.dead:
        bus.set_faults(dead, dead=True)
    if args.phase is not None:
        for servo in bus.servos:
            servo.set_register("Phase", args.phase & 0xFF)
    if args.drop_probability or args.corrupt_probability:
        bus.set_faults(
            args.fault_motor,
            drop_probability=args.drop_probability,
            corrupt_probability=args.corrupt_probability,
            corrupt_mode=args.corrupt_mode,
        )
    server = PtySimBus(bus, link=args.link).start()
    for spec in args.dead_between:
        motor, start_s, end_s = spec.split(":")
        for delay, on in ((float(start_s), False), (float(end_s), True)):
            timer = threading.Timer(delay, bus.set_power, args=(int(motor), on))
            timer.daemon = True
            timer.start()
    if args.path_file:
        Path(args.path_file).write_text(server.port + "\n")
    print(server.port, flush=True)
    print(
        f"sim_servo_bus: ids {ids} on {server.path}"
        + (f" (link {server.link})" if server.link else "")
        + ("" if calibration is None else "; calibrated servo memory"),
        file=sys.stderr,
        flush=True,
    )

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    if args.exit_on_stdin_eof:

        def _watch_stdin() -> None:
            try:
                for line in sys.stdin:
                    if line.strip():
                        print(apply_command(bus, line), flush=True)
            except (OSError, ValueError):
                pass
            done.set()

        threading.Thread(target=_watch_stdin, daemon=True).start()
    try:
        while not done.wait(0.5):
            pass
    finally:
        server.stop()
        if args.path_file:
            try:
                Path(args.path_file).unlink()
            except OSError:
                pass
    return 0



class SimBusProcess:
    """``sim_servo_bus`` as a child process (the bridge's ``mode: sim``): a separate process keeps the
    simulated servos' timing independent of the bridge's GIL, and it exits by itself when the parent
    dies (its stdin closes)."""

    def __init__(self, extra_args: list[str] | None = None, calibration_file: str | None = None) -> None:
        import subprocess

        cmd = [sys.executable, "-m", "gemma3nvla_ros.hardware.sim_bus", "--exit-on-stdin-eof"]
        if calibration_file:
            cmd += ["--calibration", calibration_file]
        cmd += list(extra_args or [])
        self.command = cmd
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # Own session: a Ctrl-C to the bridge must not kill the servos before the bridge has
            # handled torque on shutdown; the child exits when we close its stdin (or we die).
            start_new_session=True,
        )
        self.port = ""

    def wait_for_port(self, timeout_s: float = 10.0) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        line = self.proc.stdout.readline().strip() if ready else ""
        if not line:
            self.stop()
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"simulated servo bus did not start ({' '.join(self.command)}): {err.strip()}")
        self.port = line
        return line

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                if self.proc.stdin:
                    self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=3.0)
            except Exception:
                self.proc.kill()
                self.proc.wait()


if __name__ == "__main__":
    sys.exit(main())
