"""The machine's SGEMM rate, and the large conv layers' rate as a share of it.

Issue 3 asks that large conv layers run at >= 60 % of the machine's measured SGEMM rate. The rate
is PyTorch's (MKL) single-precision matmul on the same thread count, the fastest GEMM on this
machine; the layers' figures are the criterion medians of `cargo bench -p vnr-ops --bench conv3d`
(run it first), counted as 3 GEMM-sized products (forward, input gradient, weight gradient).

    /work/pyvenv/bin/python tools/bench/sgemm_rate.py [--threads 2]
"""

import argparse
import time

import torch

from torch_peer import criterion_median_ms

# name -> multiply-adds of the forward pass (output voxels x out channels x in channels x k^3).
LARGE_LAYERS = {
    "large_256to512_k4s2p1_16": 8**3 * 512 * 256 * 4**3,
    "large_convT_512to256_k4s2p1_8": 8**3 * 512 * 256 * 4**3,
}


def sgemm_gflops(m, k, n, repeat=5):
    a = torch.randn(m, k)
    b = torch.randn(k, n)
    a @ b
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * m * k * n / best / 1e9


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rate = max(sgemm_gflops(n, n, n) for n in (2048, 4096))
    print(f"SGEMM (torch {torch.__version__}, {args.threads} threads): {rate:.1f} GFLOP/s")
    for name, macs in LARGE_LAYERS.items():
        ms = criterion_median_ms("conv3d_fwd_bwd", name)
        if ms is None:
            print(f"{name:32s} no criterion result: run cargo bench -p vnr-ops --bench conv3d")
            continue
        gflops = 3 * 2 * macs / (ms / 1e3) / 1e9
        print(f"{name:32s} {ms:8.1f} ms  {gflops:6.1f} GFLOP/s  {100 * gflops / rate:5.1f} % of SGEMM")


if __name__ == "__main__":
    main()
