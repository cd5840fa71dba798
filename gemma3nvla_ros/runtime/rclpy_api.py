"""The ``rclpy`` module surface of the built-in runtime: init/shutdown/ok/spin/create_node/...

``from gemma3nvla_ros.ros import rclpy`` gives this module when real rclpy is not used.
"""
from __future__ import annotations

import atexit
import sys
import threading
from typing import Optional, Sequence

from gemma3nvla_ros.runtime.arguments import remove_ros_args  # noqa: F401  (rclpy.utilities)
from gemma3nvla_ros.runtime.context import Context, default_context, install_signal_handlers
from gemma3nvla_ros.runtime.executors import (  # noqa: F401
    Executor,
    ExternalShutdownException,
    MultiThreadedExecutor,
    SingleThreadedExecutor,
)
from gemma3nvla_ros.runtime.futures import Future

from gemma3nvla_ros.runtime import callback_groups, executors, futures, node, parameter, qos, rcutils_logger  # noqa: E402,F401
from gemma3nvla_ros.runtime import time as _time_mod  # noqa: E402
import types as _types  # noqa: E402

# rclpy's submodules, for code that writes rclpy.qos.QoSProfile, rclpy.logging.get_logger(...), etc.
logging = rcutils_logger
task = futures
time = _time_mod
duration = _types.SimpleNamespace(Duration=_time_mod.Duration)
clock = _types.SimpleNamespace(Clock=_time_mod.Clock, ClockType=_time_mod.ClockType, ROSClock=_time_mod.ROSClock)
exceptions = _types.SimpleNamespace(
    ParameterNotDeclaredException=parameter.ParameterNotDeclaredException,
    ParameterAlreadyDeclaredException=parameter.ParameterAlreadyDeclaredException,
    InvalidParameterTypeException=parameter.InvalidParameterTypeException,
    InvalidParameterValueException=parameter.InvalidParameterValueException,
    ParameterImmutableException=parameter.ParameterImmutableException,
    ParameterUninitializedException=parameter.ParameterUninitializedException,
    ParameterException=parameter.ParameterException,
)
utilities = _types.SimpleNamespace(remove_ros_args=remove_ros_args, ok=lambda context=None: ok(context=context),
                                   get_default_context=lambda: default_context())

_global_executor: Optional[Executor] = None
_executor_lock = threading.Lock()


def init(*, args: Optional[Sequence[str]] = None, context: Optional[Context] = None,
         domain_id: Optional[int] = None, signal_handler_options=None) -> None:
    ctx = context or default_context()
    ctx.init(sys.argv if args is None else args, domain_id=domain_id)  # rclpy: None means sys.argv
    if signal_handler_options is None or signal_handler_options:
        install_signal_handlers(ctx)


def ok(*, context: Optional[Context] = None) -> bool:
    return (context or default_context()).ok()


def shutdown(*, context: Optional[Context] = None, uninstall_handlers: Optional[bool] = None) -> None:
    ctx = context or default_context()
    ctx.shutdown()
    _after_shutdown(ctx)


def try_shutdown(*, context: Optional[Context] = None, uninstall_handlers: Optional[bool] = None) -> None:
    ctx = context or default_context()
    ctx.try_shutdown()
    _after_shutdown(ctx)


def _after_shutdown(ctx: Context) -> None:
    global _global_executor
    with _executor_lock:
        ex = _global_executor if _global_executor is not None and _global_executor.context is ctx else None
        if ex is not None:
            _global_executor = None
    if ex is not None:
        ex.shutdown(timeout_sec=0)


def get_default_context() -> Context:
    return default_context()


def get_global_executor() -> Executor:
    global _global_executor
    with _executor_lock:
        if _global_executor is None:
            _global_executor = SingleThreadedExecutor()
        return _global_executor


def create_node(node_name: str, *, context: Optional[Context] = None, cli_args=None, namespace=None,
                use_global_arguments: bool = True, enable_rosout: bool = True, start_parameter_services: bool = True,
                parameter_overrides=None, allow_undeclared_parameters: bool = False,
                automatically_declare_parameters_from_overrides: bool = False):
    from gemma3nvla_ros.runtime.node import Node
    return Node(node_name, context=context, cli_args=cli_args, namespace=namespace,
                use_global_arguments=use_global_arguments, enable_rosout=enable_rosout,
                start_parameter_services=start_parameter_services, parameter_overrides=parameter_overrides,
                allow_undeclared_parameters=allow_undeclared_parameters,
                automatically_declare_parameters_from_overrides=automatically_declare_parameters_from_overrides)


def spin(node, executor: Optional[Executor] = None) -> None:
    executor = get_global_executor() if executor is None else executor
    try:
        executor.add_node(node)
        while executor.context.ok():
            executor.spin_once()
    finally:
        executor.remove_node(node)


def spin_once(node, *, executor: Optional[Executor] = None, timeout_sec: Optional[float] = None) -> None:
    executor = get_global_executor() if executor is None else executor
    try:
        executor.add_node(node)
        executor.spin_once(timeout_sec=timeout_sec)
    finally:
        executor.remove_node(node)


def spin_until_future_complete(node, future: Future, executor: Optional[Executor] = None,
                               timeout_sec: Optional[float] = None) -> None:
    executor = get_global_executor() if executor is None else executor
    try:
        executor.add_node(node)
        executor.spin_until_future_complete(future, timeout_sec)
    finally:
        executor.remove_node(node)


def _at_exit() -> None:
    ctx = default_context()
    ctx.try_shutdown()
    ctx.destroy()


atexit.register(_at_exit)
