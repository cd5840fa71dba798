"""The one way every node process starts and stops.

A node that drives hardware must finish its shutdown action (torque off, or hold) whatever happens
around it, and must not keep running unsupervised. So this process, not rclpy, owns the signals:

- The first SIGINT, SIGTERM, SIGHUP (terminal closed, ssh lost), SIGQUIT or SIGPIPE (our stdout reader
  is gone) asks the node to stop; the spin loop ends and ``close()`` runs while ROS is still up (its
  log lines still reach /rosout). Signals that arrive later — ``ros2 launch`` forwards Ctrl-C a second
  time, then escalates to SIGTERM — are logged and otherwise ignored: they never interrupt ``close()``
  half-way. ``close()`` is bounded by ``CLOSE_TIMEOUT_S`` (a wedged driver must not hang forever).
- A parent that disappears (a launcher killed with SIGKILL, a crashed terminal), or an output pipe that
  nobody reads any more, is noticed within a spin slice, and the node stops as on Ctrl-C.
- An exception escaping a callback (a malformed sample, e.g. a negative ``/clock``) is logged with its
  traceback and the node keeps running: a bad message never turns into an unplanned torque-off.
"""
from __future__ import annotations

import os
import select
import signal
import stat
import sys
import threading
import traceback
from typing import Callable, Protocol

import rclpy
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

STARTUP_FAILED = 2  # a launch sees the required node fail; the log says what to do
CLOSE_TIMEOUT = 3  # exit status when close() overran its bound
CLOSE_TIMEOUT_S = 8.0  # below ros2 launch's SIGINT→SIGKILL escalation (5 s + 5 s)
SPIN_SLICE_S = 0.1  # how often the loop looks at signals and at its parent
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE)


class StartableNode(Protocol):
    def start(self) -> None: ...
    def close(self) -> None: ...
    def get_logger(self): ...
    def destroy_node(self) -> None: ...


class StopRequests:
    """Turns stop signals into one recorded request; never raises from a handler."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.ignored: list[str] = []

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.request(signal.Signals(signum).name)

    def request(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        else:
            self.ignored.append(reason)


class ParentWatch:
    """Notices that the process that started us is gone (we were re-parented), and that nobody reads
    our output any more (a pipe's write end polls POLLERR once its read end is closed; waiting for the
    next log line's SIGPIPE could take forever on a quiet node)."""

    def __init__(self) -> None:
        self.parent = os.getppid()
        self._pipes = select.poll()
        for fd in (1, 2):
            try:
                if stat.S_ISFIFO(os.fstat(fd).st_mode):
                    self._pipes.register(fd, 0)  # POLLERR/POLLHUP are always reported
            except OSError:
                pass

    def gone(self) -> str | None:
        """Why we should stop, or None."""
        if os.getppid() != self.parent:
            return f"parent process {self.parent} is gone"
        if any(events & (select.POLLERR | select.POLLHUP) for _, events in self._pipes.poll(0)):
            return "nobody reads our output any more"
        return None


def run_node(
    make_node: Callable[[], StartableNode],
    startup_errors: tuple[type[BaseException], ...],
    args: list[str] | None = None,
) -> int:
    """Initialise ROS, build and start the node, spin until asked to stop, then close it.

    An error in ``startup_errors`` (or a parameter given with a wrong type or outside its range) raised
    while building or starting is logged as fatal and exits with status 2. ``close()`` runs in every case, so hardware is left as configured (torque, devices).
    """
    stop = StopRequests()
    stop.install()  # before rclpy.init: a Ctrl-C during start-up is deferred, not a KeyboardInterrupt
    parent = ParentWatch()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node: StartableNode | None = None
    code = 0
    try:
        node = make_node()
        node.start()
        _spin(node, stop, parent)
    except (*startup_errors, InvalidParameterTypeException, InvalidParameterValueException) as exc:
        if node is not None:
            node.get_logger().fatal(str(exc))
        else:
            print(f"FATAL: {exc}", file=sys.stderr, flush=True)
        code = STARTUP_FAILED
    except ExternalShutdownException:
        pass
    finally:
        if node is not None:
            code = _close(node, stop) or code
        rclpy.try_shutdown()
    return code


def _spin(node: StartableNode, stop: StopRequests, parent: ParentWatch) -> None:
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    log = node.get_logger()
    errors = 0
    while stop.reason is None and rclpy.ok():
        why = parent.gone()
        if why:
            stop.request(why)
            break
        try:
            executor.spin_once(timeout_sec=SPIN_SLICE_S)
        except ExternalShutdownException:
            raise
        except Exception as exc:  # noqa: BLE001 - see the module docstring
            errors += 1
            if errors == 1:
                log.error(f"a callback raised; the node keeps running:\n{traceback.format_exc().rstrip()}")
            else:
                log.error(f"a callback raised ({errors} so far): {type(exc).__name__}: {exc}",
                          throttle_duration_sec=5.0)
    executor.remove_node(node)


def _close(node: StartableNode, stop: StopRequests) -> int:
    """``close()`` + ``destroy_node()`` under the close bound; returns CLOSE_TIMEOUT if it overran."""
    log = node.get_logger()
    if stop.reason is not None:
        log.info(f"stopping ({stop.reason})")

    def overran() -> None:
        log.error(f"shutdown did not finish within {CLOSE_TIMEOUT_S:g} s; exiting anyway")
        os._exit(CLOSE_TIMEOUT)

    bound = threading.Timer(CLOSE_TIMEOUT_S, overran)
    bound.daemon = True
    bound.start()
    try:
        node.close()
    except Exception:  # noqa: BLE001 - destroy the node and shut ROS down whatever close() did
        log.error(f"close() failed:\n{traceback.format_exc().rstrip()}")
    finally:
        bound.cancel()
    if stop.ignored:
        log.info(f"ignored during shutdown: {', '.join(stop.ignored)}")
    node.destroy_node()
    return 0
