"""ros2 launch gemma3nvla_ros so101_teleop.launch.py [mode:=real port:=/dev/ttyACM0 leader_port:=/dev/ttyACM1 ...]

Teleoperation for recording demonstrations: the leader arm drives the follower, cameras run, no policy.
The graph (nodes, parameters, remaps, arguments) lives in config/so101_teleop.yaml, which the non-ROS
launcher (`gemma3nvla-ros launch so101_teleop`) reads too.
"""
from gemma3nvla_ros.ros_launch import generate_graph_launch_description


def generate_launch_description():
    return generate_graph_launch_description("so101_teleop")
