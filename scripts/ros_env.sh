# Source this (`source scripts/ros_env.sh`) before starting or inspecting nodes by hand on this machine:
# the demo, the tests and the benchmarks use the same one-host settings (config/loopback.env: LOCALHOST
# discovery, Fast DDS, malloc thresholds; config/fastdds_loopback.xml: shared memory sized for 720p
# images, UDP on 127.0.0.1). Nothing is sent beyond 127.0.0.0/8. docs/NETWORKING.md says how to reach the
# nodes from another host instead.
_gemma3nvla_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
set -a
. "$_gemma3nvla_root/config/loopback.env"
set +a
export FASTRTPS_DEFAULT_PROFILES_FILE="$_gemma3nvla_root/config/fastdds_loopback.xml"
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-0}"
unset _gemma3nvla_root
