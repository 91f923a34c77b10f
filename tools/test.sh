#!/usr/bin/env bash
# The project's test command (README): installs the small test oracles, then runs every test.
# Real-world fixtures are read from $VNR_FIXTURES (default: ../shared/fixtures beside the checkout).
set -euo pipefail
cd "$(dirname "$0")/.."

fixtures="${VNR_FIXTURES:-$(cd .. && pwd)/shared/fixtures}"
if [ -d "$fixtures" ]; then
  export VNR_FIXTURES="$fixtures"
  # With the fixtures present, a test that cannot find one is a failure, not a skip.
  export VNR_REQUIRE_FIXTURES=1
else
  echo "note: no fixtures at $fixtures: fixture tests will print SKIPPED" >&2
fi

# Real OpenVDB (pyopenvdb, vdb_print) is the oracle for the VDB interop tests; g++ builds the
# CUDA kernels as host C++ for their GPU-less check (tools/cuda/host_check.sh).
packages=()
if ! /usr/bin/python3 -c 'import pyopenvdb' 2>/dev/null || ! command -v vdb_print >/dev/null; then
  packages+=(python3-openvdb libopenvdb-tools python3-numpy)
fi
command -v "${CXX:-g++}" >/dev/null || packages+=(g++)
if [ ${#packages[@]} -gt 0 ]; then
  # Best effort: without them the tests that need them print SKIPPED (or fail where
  # VNR_REQUIRE_ORACLES asks for the oracles).
  if ! { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null &&
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      "${packages[@]}" >/dev/null; }; then
    echo "note: could not install ${packages[*]}: the tests that need them print SKIPPED" >&2
  fi
fi
if /usr/bin/python3 -c 'import pyopenvdb' 2>/dev/null; then
  export VNR_REQUIRE_ORACLES=1
fi

# Benches are compiled by clippy --all-targets; their heavy set-ups do not run here.
cargo test --workspace --lib --bins --tests --examples "$@"
cargo test --workspace --doc
