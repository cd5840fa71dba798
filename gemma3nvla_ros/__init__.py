"""gemma3nvla_ros: run the Gemma3nVLA policy on an SO-101 arm under ROS 2."""

__version__ = "0.1.0"
