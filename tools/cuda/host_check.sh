#!/usr/bin/env bash
# Compiles every crates/vnr-ops/kernels/*.cu as host C++ (tools/cuda/host_check.cpp) and runs
# their checks: a way to test the kernels' arithmetic without a GPU.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
"${CXX:-g++}" -std=c++17 -O1 -Wall -Wno-unknown-pragmas -I "$root/crates/vnr-ops/kernels" \
  -x c++ "$root/tools/cuda/host_check.cpp" -o "$out/host_check"
"$out/host_check"
