"""PyTorch side of crates/vnr-ops/benches/conv3d.rs: the same layers, forward + backward of
sum(y * r), timed on the CPU with the same thread count.

    /work/pyvenv/bin/python tools/bench/conv3d_peer.py [--threads 2] [--repeat 10] [FILTER]

Prints one line per case: name, median and minimum milliseconds.
"""

import torch.nn.functional as F

from torch_peer import filled, parse_args, time_backward


def conv(input_shape, weight_shape, stride, pad):
    return input_shape, weight_shape, lambda x, w: F.conv3d(x, w, None, stride, pad)


CASES = {
    "convdeconv_1to64_k4s2p1_64": conv([1, 1, 64, 64, 64], [64, 1, 4, 4, 4], 2, 1),
    "convdeconv_1to64_k4s2p1_128": conv([1, 1, 128, 128, 128], [64, 1, 4, 4, 4], 2, 1),
    "convdeconv_64to64_1x1_32": conv([1, 64, 32, 32, 32], [64, 64, 1, 1, 1], 1, 0),
    "convdeconv_64to64_1x1_64": conv([1, 64, 64, 64, 64], [64, 64, 1, 1, 1], 1, 0),
    "convdeconv_maxpool_3s1p1_32": ([1, 64, 32, 32, 32], None, lambda x, w: F.max_pool3d(x, 3, 1, 1)),
    "convdeconv_maxpool_3s1p1_64": ([1, 64, 64, 64, 64], None, lambda x, w: F.max_pool3d(x, 3, 1, 1)),
    "convdeconv_bias_leaky_maxpool_32": (
        [1, 64, 32, 32, 32],
        [64],
        lambda x, b: F.max_pool3d(F.leaky_relu(x + b.view(1, -1, 1, 1, 1), 0.01), 3, 1, 1),
    ),
    "rendernet_res_32ch_k3": conv([1, 32, 64, 64, 32], [32, 32, 3, 3, 3], 1, 1),
    "rendernet_small_res_8ch_k3": conv([1, 8, 32, 32, 16], [8, 8, 3, 3, 3], 1, 1),
    "large_256to512_k4s2p1_16": conv([1, 256, 16, 16, 16], [512, 256, 4, 4, 4], 2, 1),
    "large_convT_512to256_k4s2p1_8": (
        [1, 512, 8, 8, 8],
        [512, 256, 4, 4, 4],
        lambda x, w: F.conv_transpose3d(x, w, None, 2, 1),
    ),
}


def main():
    args = parse_args()
    for name, (x_shape, w_shape, run) in CASES.items():
        if args.filter not in name:
            continue
        x = filled(x_shape).requires_grad_()
        w = (filled(w_shape) * 0.05).requires_grad_() if w_shape else None
        inputs = [x] if w is None else [x, w]
        time_backward(name, lambda: run(x, w), inputs, args.repeat)


if __name__ == "__main__":
    main()
