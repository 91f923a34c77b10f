#!/usr/bin/python3
"""Times real OpenVDB (Debian's pyopenvdb) on the work of benches/vdb_read.rs and prints the
ratio ours/OpenVDB when given our medians.

Usage: vdb_peer.py [FIXTURE] [--ours-sparse-ms X --ours-dense-ms Y]
FIXTURE defaults to $VNR_FIXTURES/vdb/cortex-sphere.vdb (or ../shared/fixtures/...).
"""
import argparse
import os
import statistics
import time

import numpy as np
import pyopenvdb as vdb


def median_ms(fn, repeats):
    fn()  # warm the page cache and the library
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default_dir = os.environ.get("VNR_FIXTURES", os.path.join(here, "../../../shared/fixtures"))
    ap = argparse.ArgumentParser()
    ap.add_argument("fixture", nargs="?", default=os.path.join(default_dir, "vdb/cortex-sphere.vdb"))
    ap.add_argument("--grid", default="ls_sphere")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--ours-sparse-ms", type=float)
    ap.add_argument("--ours-dense-ms", type=float)
    args = ap.parse_args()

    def sparse():
        return vdb.read(args.fixture, args.grid)

    def dense():
        grid = vdb.read(args.fixture, args.grid)
        lo, hi = grid.evalActiveVoxelBoundingBox()
        shape = tuple(h - l + 1 for l, h in zip(lo, hi))
        array = np.empty(shape, dtype=np.float32)
        grid.copyToArray(array, ijk=lo)
        return array

    results = {"sparse": median_ms(sparse, args.repeats), "dense": median_ms(dense, args.repeats)}
    ours = {"sparse": args.ours_sparse_ms, "dense": args.ours_dense_ms}
    for name, theirs in results.items():
        line = f"openvdb {name}: {theirs:.3f} ms"
        if ours[name] is not None:
            line += f"  ours: {ours[name]:.3f} ms  ratio ours/OpenVDB: {ours[name] / theirs:.2f}x"
        print(line)


if __name__ == "__main__":
    main()
