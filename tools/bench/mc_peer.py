#!/usr/bin/env python3
"""scikit-image's marching cubes on the field of `crates/vnr-geom/benches/marching_cubes.rs`
(`bench_field`), side by side with `cargo bench -p vnr-geom --bench marching_cubes dense`.

    /work/pyvenv/bin/python tools/bench/mc_peer.py [--sizes 128 256] [--repeat 5]

Prints the median and minimum milliseconds of `skimage.measure.marching_cubes` (lewiner, the
default; single-threaded), the vertex and face counts, per size.
"""
import argparse
import statistics
import time

import numpy as np
from skimage import measure


def bench_field(n):
    """Same formula as the Rust bench: sphere ∪ torus over [-1, 1]^3 plus a small ripple."""
    c = 2.0 * np.arange(n, dtype=np.float64) / (n - 1) - 1.0
    x, y, z = np.meshgrid(c, c, c, indexing="ij")
    sphere = np.sqrt((x + 0.2) ** 2 + y**2 + (z - 0.1) ** 2) - 0.5
    ring = np.sqrt((x - 0.2) ** 2 + z**2) - 0.55
    torus = np.sqrt(ring**2 + y**2) - 0.18
    ripple = 0.02 * np.sin(12.0 * x) * np.sin(12.0 * y) * np.sin(12.0 * z)
    return (np.minimum(sphere, torus) + ripple).astype(np.float32)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    for n in args.sizes:
        values = bench_field(n)
        spacing = (2.0 / (n - 1),) * 3
        times = []
        for _ in range(args.repeat + 1):
            start = time.perf_counter()
            verts, faces, _, _ = measure.marching_cubes(values, level=0.0, spacing=spacing)
            times.append((time.perf_counter() - start) * 1e3)
        times = times[1:]
        print(
            f"skimage marching_cubes {n}^3: median {statistics.median(times):.1f} ms, "
            f"min {min(times):.1f} ms, {len(verts)} vertices, {len(faces)} faces"
        )


if __name__ == "__main__":
    main()
