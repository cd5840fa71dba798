#!/usr/bin/env bash
# Create ./.venv (if missing) and install gemma3nvla_ros with every extra plus the LeRobot policy plugin.
# PYTHON=python3.12 picks another interpreter (Python >= 3.12 gets LeRobot 0.6, older ones LeRobot 0.4.4),
# VENV=.venv-py312 another environment.
#
# ROS: with a ROS 2 distro sourced (rclpy importable by $PYTHON) the venv sees it through
# --system-site-packages and nothing ROS is installed. Without one, ROS 2 Jazzy's rclpy (Fast DDS) and the
# message packages come from PyPI as community-built wheels of the official sources (x86-64 Linux only).
#
# The first run downloads PyTorch (CUDA build, ~7 min, ~8.5 GB in .venv; no GPU needed). Later runs skip pip
# entirely unless setup.py, the plugin or this script changed.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
venv=${VENV:-.venv}

if "$python" -c "import rclpy" 2>/dev/null; then
  ros="distro"            # a sourced ROS 2: use its rclpy and messages
elif [ "$(uname -s)/$(uname -m)" = "Linux/x86_64" ]; then
  ros="wheels"
else
  cat >&2 <<MSG
install.sh: no rclpy found and no rclpy wheels exist for $(uname -s)/$(uname -m).
Install ROS 2 first and source it, then run this again:
  - Ubuntu: ROS 2 Jazzy (or Humble) binary packages, https://docs.ros.org/en/jazzy/Installation.html
  - any Linux/macOS incl. aarch64 boards: RoboStack (conda/pixi): https://robostack.github.io
MSG
  exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
  if [ "$ros" = distro ]; then "$python" -m venv --system-site-packages "$venv"; else "$python" -m venv "$venv"; fi
fi

extras="all"
[ "$ros" = wheels ] && extras="all,ros"
stamp="$venv/.gemma3nvla_installed"
want="$(cat setup.py plugins/lerobot_policy_gemma3nvla/pyproject.toml scripts/install.sh | sha256sum | cut -c1-16) $extras"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -e ".[$extras]" -e plugins/lerobot_policy_gemma3nvla
echo "$want" > "$stamp"
