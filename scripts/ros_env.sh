# Source this (`source scripts/ros_env.sh`) before starting or inspecting nodes by hand on this machine:
# the demo, the tests and the benchmarks use the same settings. ROS 2's own variables, read by rcl:
# discovery stays on this host (nothing is sent beyond 127.0.0.0/8). See docs/NETWORKING.md to reach
# the nodes from another host instead.
_here="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-0}"
unset _here
