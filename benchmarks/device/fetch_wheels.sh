#!/usr/bin/env bash
# Downloads (here, where PyPI is reachable) the wheels the H200 image lacks for the policy benchmark, for
# CPython 3.12 x86-64, into $1 (default .whl at the repository root).
#   STACK=0.4 (default): LeRobot 0.4.4 with transformers 4.57.6 (Humble's stack)
#   STACK=0.6:           LeRobot 0.6.1 with transformers 5.5.4 (Jazzy's stack)
set -euo pipefail
DEST=${1:-$(cd "$(dirname "$0")/../.." && pwd)/.whl}
COMMON="timm==1.0.31 mergedeep==1.3.4 toml==0.10.2 datasets==4.8.5 multiprocess==0.70.19 dill==0.4.1
  deepdiff==8.6.2 orderly-set==5.5.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0
  typing-inspection==0.4.5 pyserial==3.5 gymnasium==1.4.0 farama-notifications==0.0.6 termcolor==3.3.0
  platformdirs==4.14.9"
case "${STACK:-0.4}" in
  0.4) PKGS="lerobot==0.4.4 transformers==4.57.6 tokenizers==0.22.2 huggingface_hub==0.35.3 draccus==0.10.0
         pyyaml-include==1.4.1 diffusers==0.35.2 importlib_metadata==10.2.0 jsonlines==4.0.0" ;;
  0.6) PKGS="lerobot==0.6.1 transformers==5.5.4 tokenizers==0.22.2 draccus==0.11.6" ;;
  *) echo "STACK must be 0.4 or 0.6" >&2; exit 2 ;;
esac
mkdir -p "$DEST"
# shellcheck disable=SC2086
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -q -d "$DEST" \
  $PKGS $COMMON
