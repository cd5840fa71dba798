"""Thin ROS nodes (rclpy idiom, imported through gemma3nvla_ros.ros)."""
