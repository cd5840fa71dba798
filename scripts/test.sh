#!/usr/bin/env bash
# Install everything (scripts/install.sh) and run the whole test suite on loopback DDS.
# Extra arguments go to pytest, e.g. ./scripts/test.sh test/runtime -k pubsub
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
source scripts/ros_env.sh
exec .venv/bin/python -m pytest "${@:-test}"
