#!/usr/bin/env bash
# Install everything, then run the whole so101_pickplace loop on simulated hardware: the servo-bus
# simulator, two synthetic cameras, the Gemma3nVLA policy (a small UNTRAINED checkpoint made locally on
# first use, unless checkpoint:=... points at a real one) and the action aggregator, all on loopback DDS.
# A live status line replaces the nodes' logs (their file is printed first). Ctrl-C stops it.
# Launch arguments pass through:
#   ./scripts/demo.sh wrist_source:=file:/path/to/video.mp4 task:="put the cube in the box"
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
source scripts/ros_env.sh
exec .venv/bin/gemma3nvla-ros launch so101_pickplace mode:=sim --status "$@"
