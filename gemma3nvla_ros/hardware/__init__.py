"""Hardware edge, pure Python (no ROS): Feetech SCS protocol, a simulated STS3215 bus behind a pty,
the Feetech bus over scservo_sdk, LeRobot calibration files, camera sources, image message fields and diagnostics content."""
