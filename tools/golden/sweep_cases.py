#!/usr/bin/env python3
"""Writes randomly drawn PyTorch cases for the conformance runner: a wider check than the small
committed cases in tools/golden/cases/, at sizes that reach every fast CPU path.

The committed cases are a few hand-picked shapes each. This script draws 160 cases per seed
(60 conv3d, 40 conv_transpose3d, 30 pools, 30 grid_sample3d) over channel counts up to 68, W up
to 40 voxels (so the f32 direct convolution kernels and the many-channel grid_sample path run),
strides, dilations, groups, asymmetric padding and output_padding. Cases are made exactly as
make_cases.py makes them (same file format, float64 expectations, PyTorch float32 must pass its
own tolerance, else the case is skipped and said so). Nothing it writes is committed.

Convolution tolerances grow with the square root of the number of terms a result sums (atol =
4e-5 * sqrt(terms), rtol 1e-4; the most terms of the output's and the gradients' sums), which is
how float32 rounding error grows. Max-pool
inputs are a permutation of distinct values, so float32 and float64 pick the same winners.

Usage:  python tools/golden/sweep_cases.py OUT_DIR [SEED]         (needs torch and numpy)
        cargo run --release -p vnr-ops --example conformance -- OUT_DIR
"""

import math
import os
import random
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_cases as mc  # noqa: E402  (the case writer and helpers live there)

# Inputs × output channels × kernel taps above this are skipped, to keep each case small.
MAX_WORK = 3e7


def conv_case(rnd, seed, i, transpose):
    """A random valid conv3d (or conv_transpose3d) case."""
    while True:
        groups = rnd.choice([1, 1, 1, 2, 4])
        cin = groups * rnd.choice([1, 2, 3, 8, 16])
        cout = groups * rnd.choice([1, 2, 5, 16, 17])
        k = [rnd.choice([1, 2, 3, 4, 5]) for _ in range(3)]
        s = [rnd.choice([1, 1, 2, 3]) for _ in range(3)]
        d = [rnd.choice([1, 1, 2]) for _ in range(3)]
        size = [rnd.randint(1, 9), rnd.randint(1, 12), rnd.randint(1, 40)]
        n = rnd.choice([1, 1, 2, 3])
        if not transpose:
            pad = [[rnd.randint(0, 3), rnd.randint(0, 3)] for _ in range(3)]
            if any(size[a] + sum(pad[a]) < d[a] * (k[a] - 1) + 1 for a in range(3)):
                continue
            spec = {"op": "conv3d", "stride": s, "padding": pad, "dilation": d, "groups": groups}
            x_shape, w_shape = (n, cin, *size), (cout, cin // groups, *k)
            out = [(size[a] + sum(pad[a]) - d[a] * (k[a] - 1) - 1) // s[a] + 1 for a in range(3)]
        else:
            pad = [rnd.randint(0, 2) for _ in range(3)]
            out_pad = [rnd.randint(0, max(s[a], d[a]) - 1) for a in range(3)]
            out = [(size[a] - 1) * s[a] - 2 * pad[a] + d[a] * (k[a] - 1) + out_pad[a] + 1
                   for a in range(3)]
            if min(out) < 1:
                continue
            spec = {"op": "conv_transpose3d", "stride": s, "padding": pad,
                    "output_padding": out_pad, "dilation": d, "groups": groups}
            x_shape, w_shape = (n, cin, *size), (cin, cout // groups, *k)
        if math.prod(x_shape) * cout * math.prod(k) <= MAX_WORK:
            break
    name = f"sweep{seed}_{spec['op']}_{i}"
    g = mc.seeded(name)
    inputs = [mc.randn(g, *x_shape), mc.randn(g, *w_shape)]
    if rnd.random() < 0.5:
        inputs.append(mc.randn(g, cout))
    # Terms per sum: an output sums (channels per group × taps) products, a weight or bias
    # gradient element one per output voxel of the batch.
    terms = max(max(cin, cout) // groups * math.prod(k), n * math.prod(out))
    spec.update(atol=4e-5 * math.sqrt(terms), rtol=1e-4)
    return name, spec, inputs, g


def pool_case(rnd, seed, i):
    """A random max_pool3d or avg_pool3d case (PyTorch wants the input at least the kernel)."""
    while True:
        op = rnd.choice(["max_pool3d", "avg_pool3d"])
        k = [rnd.randint(1, 4) for _ in range(3)]
        s = [rnd.randint(1, 3) for _ in range(3)]
        p = [rnd.randint(0, k[a] // 2) for a in range(3)]
        size = [rnd.randint(1, 9), rnd.randint(1, 12), rnd.randint(1, 40)]
        if all(size[a] >= k[a] for a in range(3)):
            break
    spec = {"op": op, "kernel": k, "stride": s, "padding": p, **mc.TOL}
    if op == "avg_pool3d":
        spec["count_include_pad"] = rnd.random() < 0.5
    name = f"sweep{seed}_{op}_{i}"
    g = mc.seeded(name)
    x = mc.randn(g, rnd.choice([1, 2]), rnd.choice([1, 3, 16, 64]), *size)
    if op == "max_pool3d":
        x = (torch.randperm(x.numel(), generator=g).float() / x.numel()).reshape(x.shape)
    return name, spec, [x], g


def grid_case(rnd, seed, i):
    """A random grid_sample3d case, points up to 30% outside [-1, 1]."""
    mode = rnd.choice(["bilinear", "nearest"])
    padding_mode = rnd.choice(["zeros", "border"])
    align_corners = rnd.random() < 0.5
    # With align_corners a 1-voxel axis has no boundary to keep off (normalize divides by
    # size - 1): at least 2 voxels there.
    least = 2 if align_corners else 1
    d, h, w = (rnd.randint(least, 9), rnd.randint(least, 9), rnd.randint(least, 12))
    points = [rnd.randint(1, 6), rnd.randint(1, 6), rnd.randint(1, 40)]
    n, c = rnd.choice([1, 2]), rnd.choice([1, 3, 8, 16, 20])
    name = f"sweep{seed}_grid_sample3d_{i}"
    g = mc.seeded(name)
    volume = mc.randn(g, n, c, d, h, w)
    grid = mc.uniform(g, -1.3, 1.3, n, *points, 3)
    grid = mc.keep_off_boundaries(grid, [w, h, d], align_corners, mode)
    spec = {"op": "grid_sample3d", "mode": mode, "padding_mode": padding_mode,
            "align_corners": align_corners, "atol": 1e-4, "rtol": 1e-4}
    return name, spec, [volume, grid], g


def main():
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    out_dir = sys.argv[1]
    seed = int(sys.argv[2]) if len(sys.argv) == 3 else 0
    rnd = random.Random(seed)
    os.makedirs(out_dir, exist_ok=True)
    cases = [conv_case(rnd, seed, i, False) for i in range(60)]
    cases += [conv_case(rnd, seed, i, True) for i in range(40)]
    cases += [pool_case(rnd, seed, i) for i in range(30)]
    cases += [grid_case(rnd, seed, i) for i in range(30)]
    skipped = 0
    for name, spec, inputs, g in cases:
        try:
            mc.make(mc.Case(name, spec, inputs), out_dir, g)
        except SystemExit as e:
            skipped += 1
            print(f"skipped: {e}")
    print(f"{len(cases) - skipped} cases written to {out_dir}, {skipped} skipped")


if __name__ == "__main__":
    main()
