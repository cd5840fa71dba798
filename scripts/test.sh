#!/usr/bin/env bash
# Install everything (scripts/install.sh) and run the test suite on loopback DDS, on both LeRobot stacks the
# package supports:
#   .venv         python3: the whole suite (LeRobot 0.4.4 + transformers 4.57 where python3 is 3.10/3.11,
#                 LeRobot 0.6 + transformers 5 where it is 3.12+)
#   .venv-other   the other stack's Python (3.12 if python3 is older, else 3.11/3.10): the tests that touch
#                 LeRobot or transformers (OTHER_STACK_TESTS below); skipped with a notice if no such Python.
# Extra arguments go to pytest and run in .venv only, e.g. ./scripts/test.sh test/control -k queue
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
source scripts/ros_env.sh
if [ $# -gt 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi

OTHER_STACK_TESTS=(test/policy test/control test/hardware test/test_contract.py test/nodes/test_closed_loop.py
                   test/tools/test_bag_to_dataset.py test/tools/test_eval_bag.py test/tools/test_record_roundtrip.py)

status=0
.venv/bin/python -m pytest test || status=$?

# A Python of the other stack: pyenv's or the system's.
main_minor=$(.venv/bin/python -c 'import sys; print(sys.version_info[1])')
if [ "$main_minor" -ge 12 ]; then wanted=(3.11 3.10); else wanted=(3.12 3.13); fi
other=""
for v in "${wanted[@]}"; do
  for c in "python$v" "$(pyenv root 2>/dev/null || echo /nonexistent)/versions/$v"*/bin/"python$v"; do
    if "$c" -c 'import sys' 2>/dev/null; then other=$c; break 2; fi
  done
done
if [ -z "$other" ]; then
  echo "test.sh: no Python ${wanted[*]} found: the other LeRobot stack was NOT tested" >&2
  exit "$status"
fi
PYTHON="$other" VENV=.venv-other ./scripts/install.sh
.venv-other/bin/python -m pytest "${OTHER_STACK_TESTS[@]}" || status=$?
exit "$status"
