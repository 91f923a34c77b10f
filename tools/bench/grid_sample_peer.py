"""PyTorch side of crates/vnr-ops/benches/grid_sample.rs: the same F.grid_sample (5-D) calls,
forward + backward of sum(y * r) with gradients for input and grid, timed on the CPU with the
same thread count.

    /work/pyvenv/bin/python tools/bench/grid_sample_peer.py [--threads 2] [--repeat 10] [FILTER]

Prints one line per case: name, median and minimum milliseconds.
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def filled(shape, scale=1.0):
    n = 1
    for s in shape:
        n *= s
    i = torch.arange(n, dtype=torch.int64)
    return ((((i * 7919) % 2001).to(torch.float32) / 1000.0 - 1.0) * scale).reshape(shape)


# name: (input shape, grid shape, mode, padding_mode, align_corners)
CASES = {
    "resample_1ch_64_to_128": ([1, 1, 64, 64, 64], [1, 128, 128, 128, 3], "bilinear", "zeros", True),
    "rays_16ch_64_4096x32": ([1, 16, 64, 64, 64], [1, 1, 4096, 32, 3], "bilinear", "zeros", False),
    "batch4_8ch_32_border": ([4, 8, 32, 32, 32], [4, 32, 32, 32, 3], "bilinear", "border", False),
    "nearest_16ch_64_4096x32": ([1, 16, 64, 64, 64], [1, 1, 4096, 32, 3], "nearest", "zeros", False),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("filter", nargs="?", default="")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name, (x_shape, g_shape, mode, padding, align) in CASES.items():
        if args.filter not in name:
            continue
        x = filled(x_shape).requires_grad_()
        g = filled(g_shape, 1.05).requires_grad_()

        def run():
            return F.grid_sample(x, g, mode=mode, padding_mode=padding, align_corners=align)

        with torch.no_grad():
            r = filled(list(run().shape))
        times = []
        for i in range(args.repeat + 1):
            x.grad = None
            g.grad = None
            start = time.perf_counter()
            (run() * r).sum().backward()
            if i > 0:  # the first run warms up allocators
                times.append((time.perf_counter() - start) * 1e3)
        print(f"{name:32s} median {statistics.median(times):9.2f} ms   min {min(times):9.2f} ms")


if __name__ == "__main__":
    main()
