#!/usr/bin/env bash
# Install everything, then run the so101_pickplace graph on simulated hardware (servo-bus simulator,
# synthetic cameras), all DDS traffic on loopback. Ctrl-C stops it. Launch arguments pass through:
#   ./scripts/demo.sh wrist_source:=file:/path/to/video.mp4
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
source scripts/ros_env.sh
exec .venv/bin/gemma3nvla-ros launch so101_pickplace mode:=sim "$@"
