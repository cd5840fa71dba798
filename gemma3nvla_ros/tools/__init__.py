"""ros2cli-like command-line verbs on rclpy (``gemma3nvla-ros topic|param|node|service``) and their pure helpers."""
