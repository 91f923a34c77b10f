"""Shared by the PyTorch peer scripts: deterministic inputs, the command line, and the timing of
forward + backward of sum(y * r) on the CPU."""

import argparse
import json
import os
import statistics
import time

import torch


def filled(shape, scale=1.0):
    """Deterministic values in [-1, 1) times `scale`, the same sequence the Rust benches use."""
    n = 1
    for s in shape:
        n *= s
    i = torch.arange(n, dtype=torch.int64)
    return ((((i * 7919) % 2001).to(torch.float32) / 1000.0 - 1.0) * scale).reshape(shape)


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def criterion_median_ms(group, name):
    """Median milliseconds of our criterion bench `group/name` (under target/criterion), or None
    when it has not been run."""
    path = os.path.join(ROOT, "target", "criterion", group, name, "new", "estimates.json")
    try:
        with open(path) as f:
            return json.load(f)["median"]["point_estimate"] / 1e6
    except (OSError, KeyError, ValueError):
        return None


def parse_args():
    """`[FILTER] [--threads N] [--repeat N]`; sets torch's thread count."""
    parser = argparse.ArgumentParser()
    parser.add_argument("filter", nargs="?", default="")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    return args


def time_backward(name, run, inputs, repeat):
    """Times `(run() * r).sum().backward()` `repeat` times after one warm-up run and prints the
    median and minimum milliseconds; `inputs` are the tensors whose gradients are reset.
    Returns the median in milliseconds."""
    with torch.no_grad():
        r = filled(list(run().shape))
    times = []
    for i in range(repeat + 1):
        for t in inputs:
            t.grad = None
        start = time.perf_counter()
        (run() * r).sum().backward()
        if i > 0:  # the first run warms up allocators and kernels
            times.append((time.perf_counter() - start) * 1e3)
    median = statistics.median(times)
    print(f"{name:32s} median {median:9.2f} ms   min {min(times):9.2f} ms")
    return median
