# Source this to build vnr's `cuda` feature on a machine without a CUDA toolkit:
#   source tools/cuda/env.sh && CARGO_TARGET_DIR=target-cuda nice -n 19 cargo build -p vnr-ops --features cuda
# (docs/cuda.md: tests, carrying the binary to a GPU machine, measured times)
# It installs nvcc and the CUDA 13.0 runtime libraries from PyPI into .cuda-venv (once), builds a
# link-time stub for libcuda.so (PyPI ships none; the real driver library is used at run time),
# and exports what candle's and our build scripts read. Versions are pinned to 13.0 because
# nvcc 13.5 writes PTX that driver 580 (the lent H100/H200 machines) refuses.
_vnr_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
_vnr_venv="$_vnr_root/.cuda-venv"
if [ ! -x "$_vnr_venv/bin/pip" ]; then
  python3 -m venv "$_vnr_venv"
fi
if [ ! -f "$_vnr_venv/.installed-13.0" ]; then
  "$_vnr_venv/bin/pip" install -q \
    "nvidia-cuda-nvcc==13.0.88" "nvidia-nvvm==13.0.88" "nvidia-cuda-crt==13.0.88" \
    "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-cccl==13.0.85" \
    "nvidia-cublas==13.0.*" "nvidia-curand==10.4.0.*" "nvidia-cuda-nvrtc==13.0.*" \
    && touch "$_vnr_venv/.installed-13.0"
fi
CUDA_HOME="$("$_vnr_venv/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')"
export CUDA_HOME
# Unversioned names for the linker, and the libcuda stub.
for lib in "$CUDA_HOME"/lib/lib*.so.*; do
  base="${lib%%.so.*}.so"
  [ -e "$base" ] || ln -s "$(basename "$lib")" "$base"
done
# Rebuilt when missing or empty (an empty stub links nothing and fails at the final link).
if [ ! -s "$CUDA_HOME/lib/stubs/libcuda_stub.c" ] || [ ! -e "$CUDA_HOME/lib/stubs/libcuda.so" ]; then
  mkdir -p "$CUDA_HOME/lib/stubs"
  # Every driver entry point of the cudarc in Cargo.lock, as a do-nothing symbol: enough for
  # the linker. cudarc declares them `pub unsafe fn cuX(..)` and, inside `extern` blocks,
  # `fn cuX(..);`, so match the bare `fn cuX(`.
  (cd "$_vnr_root" && cargo fetch -q)
  _vnr_cudarc="$(sed -n '/^name = "cudarc"$/{n;s/^version = "\(.*\)"$/\1/p;q}' "$_vnr_root/Cargo.lock")"
  _vnr_sys="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-"$_vnr_cudarc"/src/driver/sys | head -1)"
  grep -ohE '\bfn cu[A-Za-z0-9_]+\(' "$_vnr_sys"/*.rs | sed -E 's/^fn (cu[A-Za-z0-9_]+)\($/\1/' \
    | sort -u | sed 's/.*/int &(void) { return 0; }/' > "$CUDA_HOME/lib/stubs/libcuda_stub.c"
  if [ -s "$CUDA_HOME/lib/stubs/libcuda_stub.c" ]; then
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CUDA_HOME/lib/stubs/libcuda.so" \
      "$CUDA_HOME/lib/stubs/libcuda_stub.c"
  else
    echo "tools/cuda/env.sh: no cu* entry points found under '$_vnr_sys'" >&2
  fi
  unset _vnr_sys _vnr_cudarc
fi
export PATH="$CUDA_HOME/bin:$PATH"
export LIBRARY_PATH="$CUDA_HOME/lib:$CUDA_HOME/lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"   # H100/H200; no nvidia-smi on the build machine
export CUDARC_CUDA_VERSION=13000
unset _vnr_root _vnr_venv
