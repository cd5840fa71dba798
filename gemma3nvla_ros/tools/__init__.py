"""Command-line tools on the built-in runtime (ros2cli-like verbs) and their pure helpers."""
