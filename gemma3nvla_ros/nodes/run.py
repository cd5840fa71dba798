"""The one way every node process starts and stops."""
from __future__ import annotations

import sys
from typing import Callable, Protocol

import rclpy
from rclpy.executors import ExternalShutdownException

STARTUP_FAILED = 2  # a launch sees the required node fail; the log says what to do


class StartableNode(Protocol):
    def start(self) -> None: ...
    def close(self) -> None: ...
    def get_logger(self): ...
    def destroy_node(self) -> None: ...


def run_node(
    make_node: Callable[[], StartableNode],
    startup_errors: tuple[type[BaseException], ...],
    args: list[str] | None = None,
) -> int:
    """Initialise ROS, build and start the node, spin until Ctrl-C / SIGTERM, then close it.

    An error in ``startup_errors`` raised while building or starting is logged as fatal and exits with
    status 2. ``close()`` runs in every case, so hardware is left as configured (torque, devices).
    """
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = make_node()
        node.start()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except startup_errors as exc:
        if node is not None:
            node.get_logger().fatal(str(exc))
        else:
            print(f"FATAL: {exc}", file=sys.stderr, flush=True)
        code = STARTUP_FAILED
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return code
