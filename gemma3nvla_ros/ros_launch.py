"""Build a ROS 2 LaunchDescription from a graph YAML (used by launch/*.launch.py under real ROS 2)."""
from __future__ import annotations

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
from launch_ros.actions import Node

from gemma3nvla_ros.launch_graph import load_graph_file, resolve_graph
from gemma3nvla_ros.network import loopback_environment
from gemma3nvla_ros.paths import graph_path


def generate_graph_launch_description(name: str) -> LaunchDescription:
    path = graph_path(name)
    arguments, _ = load_graph_file(path)

    def nodes(context, *_args, **_kwargs):
        overrides = {arg: context.launch_configurations[arg] for arg in arguments}
        graph = resolve_graph(path, overrides)
        # One host unless the user's environment says otherwise, as `gemma3nvla-ros launch` does.
        env = {k: v for k, v in loopback_environment(os.environ).items() if os.environ.get(k) != v}
        return [
            Node(
                package="gemma3nvla_ros",
                executable=spec.executable,
                name=spec.name,
                namespace=spec.namespace or None,
                parameters=[spec.parameters],
                remappings=list(spec.remappings.items()),
                respawn=spec.respawn,
                respawn_delay=spec.respawn_delay,
                on_exit=Shutdown(reason=f"required node {spec.name} exited") if spec.required else None,
                output="screen",
                emulate_tty=True,
                additional_env=env,
            )
            for spec in graph.nodes
        ]

    declared = [
        DeclareLaunchArgument(
            arg.name,
            default_value=arg.default,
            description=arg.description,
            **({"choices": list(arg.choices)} if arg.choices else {}),
        )
        for arg in arguments.values()
    ]
    return LaunchDescription([*declared, OpaqueFunction(function=nodes)])
