"""ros2 launch gemma3nvla_ros so101_pickplace.launch.py [mode:=real port:=/dev/ttyACM0 ...]

The graph (nodes, parameters, remaps, arguments) lives in config/so101_pickplace.yaml, which the
non-ROS launcher (`gemma3nvla-ros launch so101_pickplace`) reads too.
"""
from gemma3nvla_ros.ros_launch import generate_graph_launch_description


def generate_launch_description():
    return generate_graph_launch_description("so101_pickplace")
