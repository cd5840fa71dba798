"""Pure control logic, no ROS, clock injected: unit conversion (the one place), observations, action-chunk
merging, command checks and the bridge's goal controller, timing."""
