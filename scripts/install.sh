#!/usr/bin/env bash
# Create ./.venv (if missing) and install gemma3nvla_ros with every extra plus the LeRobot policy plugin.
# Idempotent. PYTHON=python3.12 picks another interpreter. The first run downloads PyTorch (~6 min).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[all]" -e plugins/lerobot_policy_gemma3nvla
