"""PyTorch side of crates/vnr-ops/benches/grid_sample.rs: the same F.grid_sample (5-D) calls,
forward + backward of sum(y * r) with gradients for input and grid, timed on the CPU with the
same thread count.

    /work/pyvenv/bin/python tools/bench/grid_sample_peer.py [--threads 2] [--repeat 10] [FILTER]

Prints one line per case: name, median and minimum milliseconds, then, where our criterion bench
has been run (`cargo bench -p vnr-ops --bench grid_sample`), our median and the ratio ours / theirs.
"""

import torch.nn.functional as F

from torch_peer import criterion_median_ms, filled, parse_args, time_backward


GROUP = "grid_sample3d_fwd_bwd"

# name: (input shape, grid shape, mode, padding_mode, align_corners)
CASES = {
    "resample_1ch_64_to_128": ([1, 1, 64, 64, 64], [1, 128, 128, 128, 3], "bilinear", "zeros", True),
    "rays_16ch_64_4096x32": ([1, 16, 64, 64, 64], [1, 1, 4096, 32, 3], "bilinear", "zeros", False),
    "batch4_8ch_32_border": ([4, 8, 32, 32, 32], [4, 32, 32, 32, 3], "bilinear", "border", False),
    "nearest_16ch_64_4096x32": ([1, 16, 64, 64, 64], [1, 1, 4096, 32, 3], "nearest", "zeros", False),
}


def main():
    args = parse_args()
    for name, (x_shape, g_shape, mode, padding, align) in CASES.items():
        if args.filter not in name:
            continue
        x = filled(x_shape).requires_grad_()
        g = filled(g_shape, 1.05).requires_grad_()

        def run():
            return F.grid_sample(x, g, mode=mode, padding_mode=padding, align_corners=align)

        theirs = time_backward(name, run, [x, g], args.repeat)
        ours = criterion_median_ms(GROUP, name)
        if ours is not None:
            print(f"{'':32s} ours   {ours:9.2f} ms   ours / theirs = {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
