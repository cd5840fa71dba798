"""The one place node code imports ROS from.

With rclpy importable (a sourced ROS 2 Humble/Jazzy) this is real rclpy and the generated message
classes. Without it — CI, a pip-only GPU box, a policy venv next to a ROS install — it is the built-in
runtime in ``gemma3nvla_ros.runtime``, which speaks rmw_cyclonedds' wire conventions over Cyclone DDS so
both kinds of process join the same ROS graph.

``GEMMA3NVLA_ROS_RUNTIME=dds`` forces the built-in runtime even where rclpy is importable (e.g. a policy
node in its own venv); ``rclpy`` insists on real rclpy; ``auto`` (default) prefers rclpy.

Node code reads like rclpy::

    from gemma3nvla_ros.ros import Node, rclpy, sensor_msgs, qos_profile_sensor_data
    msg = sensor_msgs.msg.JointState()
"""
from __future__ import annotations

import os

_choice = os.environ.get("GEMMA3NVLA_ROS_RUNTIME", "auto").strip().lower()
if _choice not in ("auto", "rclpy", "dds"):
    raise RuntimeError(f"GEMMA3NVLA_ROS_RUNTIME must be auto, rclpy or dds, not {_choice!r}")

_use_rclpy = False
if _choice in ("auto", "rclpy"):
    try:
        import rclpy  # noqa: F401

        _use_rclpy = True
    except ImportError:
        if _choice == "rclpy":
            raise

if _use_rclpy:
    import builtin_interfaces.msg
    import diagnostic_msgs.msg
    import rcl_interfaces.msg
    import rcl_interfaces.srv
    import rclpy
    import rosgraph_msgs.msg
    import sensor_msgs.msg
    import std_msgs.msg
    import std_srvs.srv
    import trajectory_msgs.msg
    from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
    from rclpy.duration import Duration
    from rclpy.exceptions import ParameterNotDeclaredException
    from rclpy.executors import (
        ExternalShutdownException,
        MultiThreadedExecutor,
        SingleThreadedExecutor,
    )
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import (
        DurabilityPolicy,
        HistoryPolicy,
        QoSProfile,
        ReliabilityPolicy,
        qos_profile_sensor_data,
        qos_profile_system_default,
    )
    from rclpy.time import Time

    RUNTIME = "rclpy"
else:
    from gemma3nvla_ros.runtime import rclpy_api as rclpy  # rclpy-shaped module: init/spin/shutdown/...
    from gemma3nvla_ros.runtime.executors import (
        ExternalShutdownException,
        MultiThreadedExecutor,
        SingleThreadedExecutor,
    )
    from gemma3nvla_ros.runtime.callback_groups import (
        MutuallyExclusiveCallbackGroup,
        ReentrantCallbackGroup,
    )
    from gemma3nvla_ros.runtime.interfaces import (
        builtin_interfaces,
        diagnostic_msgs,
        rcl_interfaces,
        rosgraph_msgs,
        sensor_msgs,
        std_msgs,
        std_srvs,
        trajectory_msgs,
    )
    from gemma3nvla_ros.runtime.node import Node
    from gemma3nvla_ros.runtime.parameter import Parameter, ParameterNotDeclaredException
    from gemma3nvla_ros.runtime.qos import (
        DurabilityPolicy,
        HistoryPolicy,
        QoSProfile,
        ReliabilityPolicy,
        qos_profile_sensor_data,
        qos_profile_system_default,
    )
    from gemma3nvla_ros.runtime.time import Duration, Time

    ParameterDescriptor = rcl_interfaces.msg.ParameterDescriptor
    SetParametersResult = rcl_interfaces.msg.SetParametersResult
    RUNTIME = "dds"

__all__ = [
    "RUNTIME",
    "rclpy",
    "Node",
    "Parameter",
    "ParameterNotDeclaredException",
    "ParameterDescriptor",
    "SetParametersResult",
    "QoSProfile",
    "ReliabilityPolicy",
    "DurabilityPolicy",
    "HistoryPolicy",
    "qos_profile_sensor_data",
    "qos_profile_system_default",
    "SingleThreadedExecutor",
    "MultiThreadedExecutor",
    "ExternalShutdownException",
    "MutuallyExclusiveCallbackGroup",
    "ReentrantCallbackGroup",
    "Time",
    "Duration",
    "builtin_interfaces",
    "std_msgs",
    "sensor_msgs",
    "trajectory_msgs",
    "std_srvs",
    "rcl_interfaces",
    "rosgraph_msgs",
    "diagnostic_msgs",
]
