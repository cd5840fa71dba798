"""Built-in rclpy-shaped runtime over Cyclone DDS that speaks ROS 2 wire conventions (no ROS needed)."""
