"""rclpy's RcutilsLogger, without rcutils: ``[LEVEL] [<sec.nsec>] [<name>]: msg`` on stderr.

Supports the rclpy keywords ``throttle_duration_sec``, ``once``, ``skip_first`` (each call site is
tracked separately, as rcutils does) and per-logger levels from ``--ros-args --log-level``.
"""
from __future__ import annotations

import inspect
import os
import sys
import threading
import time
from enum import IntEnum
from typing import Optional


class LoggingSeverity(IntEnum):
    UNSET = 0
    DEBUG = 10
    INFO = 20
    WARN = 30
    ERROR = 40
    FATAL = 50


_NAMES = {LoggingSeverity.DEBUG: "DEBUG", LoggingSeverity.INFO: "INFO", LoggingSeverity.WARN: "WARN",
          LoggingSeverity.ERROR: "ERROR", LoggingSeverity.FATAL: "FATAL"}
_levels: dict[str, LoggingSeverity] = {}
_default_level = LoggingSeverity.INFO
_lock = threading.Lock()
_write_lock = threading.Lock()
# extra outputs (e.g. a node's /rosout publisher): cb(severity, logger_name, message, frame)
_sinks: list = []
_in_sink = threading.local()


def add_sink(callback) -> None:
    _sinks.append(callback)


def remove_sink(callback) -> None:
    if callback in _sinks:
        _sinks.remove(callback)


def set_default_level(level: LoggingSeverity) -> None:
    global _default_level
    _default_level = LoggingSeverity(level)


def set_logger_level(name: str, level: LoggingSeverity) -> None:
    _levels[name] = LoggingSeverity(level)


def severity_from_name(name: str) -> LoggingSeverity:
    return LoggingSeverity[name.upper()]


def effective_level(name: str) -> LoggingSeverity:
    # rcutils: a logger inherits the level of its closest configured ancestor (dot-separated)
    n = name
    while n:
        lvl = _levels.get(n)
        if lvl is not None and lvl != LoggingSeverity.UNSET:
            return lvl
        n = n.rpartition(".")[0]
    return _default_level


class RcutilsLogger:
    def __init__(self, name: str = ""):
        self.name = name
        self._state: dict = {}  # call site -> [last_time, count, fired_once]

    def get_child(self, name: str) -> "RcutilsLogger":
        return RcutilsLogger(f"{self.name}.{name}" if self.name else name)

    def set_level(self, level) -> None:
        set_logger_level(self.name, LoggingSeverity(level))

    def get_effective_level(self) -> LoggingSeverity:
        return effective_level(self.name)

    def is_enabled_for(self, severity) -> bool:
        return LoggingSeverity(severity) >= effective_level(self.name)

    def log(self, message, severity, *, throttle_duration_sec: Optional[float] = None,
            throttle_time_source_type=None, once: bool = False, skip_first: bool = False,
            _depth: int = 1, **_ignored) -> bool:
        severity = LoggingSeverity(severity)
        if severity < effective_level(self.name):
            return False
        if once or skip_first or throttle_duration_sec:
            frame = sys._getframe(_depth)
            site = (frame.f_code.co_filename, frame.f_lineno)
            now = time.monotonic()
            with _lock:
                st = self._state.setdefault(site, [None, 0, False])
                st[1] += 1
                if once:
                    if st[2]:
                        return False
                    st[2] = True
                if skip_first and st[1] == 1:
                    return False
                if throttle_duration_sec:
                    if st[0] is not None and now - st[0] < throttle_duration_sec:
                        return False
                    st[0] = now
        t = time.time_ns()
        line = f"[{_NAMES.get(severity, severity.name)}] [{t // 1_000_000_000}.{t % 1_000_000_000:09d}] [{self.name}]: {message}\n"
        with _write_lock:
            try:
                sys.stderr.write(line)
                sys.stderr.flush()
            except (ValueError, OSError):  # stderr closed during shutdown
                pass
        if _sinks and not getattr(_in_sink, "active", False):
            _in_sink.active = True  # a sink that logs must not recurse
            try:
                frame = sys._getframe(_depth)
                for sink in list(_sinks):
                    try:
                        sink(severity, self.name, str(message), frame, t)
                    except Exception:
                        pass
            finally:
                _in_sink.active = False
        return True

    def debug(self, message, **kw) -> bool:
        return self.log(message, LoggingSeverity.DEBUG, _depth=2, **kw)

    def info(self, message, **kw) -> bool:
        return self.log(message, LoggingSeverity.INFO, _depth=2, **kw)

    def warning(self, message, **kw) -> bool:
        return self.log(message, LoggingSeverity.WARN, _depth=2, **kw)

    warn = warning

    def error(self, message, **kw) -> bool:
        return self.log(message, LoggingSeverity.ERROR, _depth=2, **kw)

    def fatal(self, message, **kw) -> bool:
        return self.log(message, LoggingSeverity.FATAL, _depth=2, **kw)


def get_logger(name: str) -> RcutilsLogger:
    return RcutilsLogger(name)


# rclpy.logging-like module surface
def set_logger_level_by_name(name: str, level) -> None:  # pragma: no cover - convenience
    set_logger_level(name, LoggingSeverity(level))


if os.environ.get("RCUTILS_LOGGING_SEVERITY"):  # honour rcutils' env default level
    try:
        set_default_level(severity_from_name(os.environ["RCUTILS_LOGGING_SEVERITY"]))
    except KeyError:
        pass
del inspect
