#!/usr/bin/env bash
# Runs benchmarks/bench_policy.py on a machine whose Python lacks LeRobot and PyAV and has another
# transformers (the lent H200 image): installs the carried wheels (benchmarks/device/fetch_wheels.sh) into
# $SITE (default /tmp/site), puts the PyAV stand-in on the path, and passes its arguments on to the benchmark.
#   WHEELS=<dir of wheels> OUT=<dir for bench.json / bench.txt> bash benchmarks/device/run_h200.sh [args]
# (WHEELS=.whl6 SITE=/tmp/site6 for the LeRobot 0.6 / transformers 5 stack: see fetch_wheels.sh)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WHEELS=${WHEELS:-$ROOT/.whl}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "${SITE:=/tmp/site}" "$WHEELS"/*.whl
export PYTHONPATH=$SITE:$ROOT:$ROOT/benchmarks/device/stubs
export PYTHONUNBUFFERED=1
cd "$ROOT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,utilization.gpu --format=csv || true
python3 -c "import torch, transformers, timm; print('torch', torch.__version__, 'transformers', transformers.__version__, 'timm', timm.__version__)"
exec python3 benchmarks/bench_policy.py --out "${OUT:-/tmp/bench_out}" "$@"
