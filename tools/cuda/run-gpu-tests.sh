#!/usr/bin/env bash
# Runs the carried CUDA test binary (built by tools/cuda/build-gpu-tests.sh) on a GPU machine
# whose CUDA 13 libraries live in a Python venv (driver 580). Arguments go to the test binary,
# e.g. a test-name filter. See docs/cuda.md.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
nv="$(python3 -c 'import nvidia; print(list(nvidia.__path__)[0])' 2>/dev/null || true)"
if [ -n "$nv" ]; then
  export LD_LIBRARY_PATH="$nv/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
exec "$here/vnr-ops-cuda-tests" --test-threads=1 "$@"
