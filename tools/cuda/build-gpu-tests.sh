#!/usr/bin/env bash
# Builds vnr-ops' CUDA test binary on this CPU-only machine and puts a stripped copy, with
# tools/cuda/run-gpu-tests.sh, in gpu-carry/ (ignored by git through .git/info/exclude) to carry
# to a GPU machine: there, `bash gpu-carry/run-gpu-tests.sh [TEST-FILTER]`. See docs/cuda.md.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
# shellcheck source=env.sh
source tools/cuda/env.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target-cuda}"
exe="$(nice -n 19 cargo test -p vnr-ops --features cuda --test cuda --no-run --message-format=json \
  | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)"
if [ -z "$exe" ]; then
  echo "build-gpu-tests.sh: cargo reported no test executable" >&2
  exit 1
fi
mkdir -p gpu-carry
strip -o gpu-carry/vnr-ops-cuda-tests "$exe"
cp tools/cuda/run-gpu-tests.sh gpu-carry/
exclude="$(git rev-parse --git-path info/exclude)"
grep -qx '/gpu-carry' "$exclude" 2>/dev/null || echo '/gpu-carry' >> "$exclude"
ls -l gpu-carry
