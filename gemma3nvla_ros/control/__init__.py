"""Pure control logic, no ROS: unit conversion (units.py) and action-chunk handling."""
