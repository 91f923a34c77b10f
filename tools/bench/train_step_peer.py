"""One training step side by side: PyTorch vs vnr, for the small RenderNet and ConvDeconv configs.

A step is forward, the original's loss, backward and the original's optimiser update, on the
same inputs and sizes as crates/vnr-models/benches/train_step.rs (cases in its support module):

  rendernet_small_b4     RenderNetConfig::small(): an image-aligned 32-voxel patch
                         [4, 1, 32, 32, 64] -> [4, 1, 64, 64], per-image summed BCE,
                         Adam(lr 1e-3, betas (0.5, 0.999))
  convdeconv_small32_b8  ConvDeconvConfig::small32(): [8, 1, 32^3] -> [8, 1, 32, 32], L1, Adam 3e-4
  convdeconv_small64_b4  ConvDeconvConfig::small64(): [4, 1, 64^3] -> [4, 1, 256, 256], L1, Adam 3e-4

The PyTorch models below are written from our config structs (crates/vnr-models/src/rendernet.rs,
convdeconv.rs): the same layers, TensorFlow "SAME" padding (odd voxel after) and transposed-conv
cropping for RenderNet, the row-major bottleneck reshape for ConvDeconv. PyTorch is timed per
step (median of --steps after 2 warm-up steps, --threads threads), before and after our benches,
and the faster of the two is the reference; ours is the criterion median
of `cargo bench -p vnr-models --bench train_step` (run by this script unless --no-run), once
as vnr runs (candle 0.11's element-wise ops on the calling thread, `vnr_ops::threads::single_pool`)
and once with candle's own barrier pool at one thread per core (CANDLE_NUM_THREADS=nproc, candle's
default), whose spinning workers fight rayon's pool, where the vnr-ops kernels run, for the cores.

Usage: /work/pyvenv/bin/python tools/bench/train_step_peer.py [FILTER] [--steps N] [--threads N]
       [--no-run]
Prints, per case, PyTorch's and our milliseconds per step and ours / theirs (goal <= 1.0).
"""

import argparse
import os
import statistics
import subprocess
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_peer import ROOT, criterion_median_ms, filled


def filled01(shape):
    """The benches' deterministic inputs in [0, 1): torch_peer.filled mapped from [-1, 1)."""
    return (filled(shape) + 1.0) / 2.0


def same_pads(n, k, s):
    """TensorFlow "SAME": (before, after) padding of an axis of n, odd voxel after."""
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


class TfConv(nn.Module):
    """A "SAME" convolution (2D or 3D, cubic kernel k, per-axis strides)."""

    def __init__(self, cin, cout, k, stride):
        super().__init__()
        self.rank, self.k, self.stride = len(stride), k, tuple(stride)
        conv = nn.Conv3d if self.rank == 3 else nn.Conv2d
        self.conv = conv(cin, cout, k, stride=self.stride)

    def forward(self, x):
        pads = []
        for axis in reversed(range(self.rank)):  # F.pad takes the last axis first
            pads += same_pads(x.shape[2 + axis], self.k, self.stride[axis])
        return self.conv(F.pad(x, pads))


class TfDeconv(nn.Module):
    """conv2d_transpose(padding="SAME"), k4: the full output cropped to in * stride."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.stride = stride
        self.deconv = nn.ConvTranspose2d(cin, cout, 4, stride=stride)

    def forward(self, x):
        h, w = x.shape[2] * self.stride, x.shape[3] * self.stride
        top = same_pads(h, 4, self.stride)[0]
        left = same_pads(w, 4, self.stride)[0]
        return self.deconv(x)[:, :, top : top + h, left : left + w]


class ResBlock(nn.Module):
    def __init__(self, c, rank):
        super().__init__()
        self.conv1 = TfConv(c, c, 3, [1] * rank)
        self.conv2 = TfConv(c, c, 3, [1] * rank)

    def forward(self, x):
        return self.conv2(F.relu(self.conv1(x))) + x


class ResStage(nn.Module):
    def __init__(self, c, blocks, rank):
        super().__init__()
        self.blocks = nn.Sequential(*[ResBlock(c, rank) for _ in range(blocks)])
        self.skip = TfConv(c, c, 3, [1] * rank)

    def forward(self, x):
        return self.skip(self.blocks(x)) + x


def activated(layer, c):
    return nn.Sequential(layer, nn.PReLU(c, init=0.0))


class RenderNet(nn.Module):
    """RenderNetConfig::small() from an image-aligned grid [B, 1, rows, cols, depth]."""

    def __init__(self, c3d=(4, 8, 8), res3d=2, proj=64, res2d=2, c5=32, res_mid=2, c6=16,
                 deconv=(16, 16, 8, 8, 8), strides=(2, 1, 2, 1, 1), depth=64, out=1):
        super().__init__()
        c1, c2, c3 = c3d
        self.conv3d = nn.Sequential(
            activated(TfConv(1, c1, 5, [2, 2, 2]), c1),
            activated(TfConv(c1, c2, 3, [1, 1, 2]), c2),
            activated(TfConv(c2, c3, 3, [1, 1, 1]), c3),
        )
        self.res1 = ResStage(c3, res3d, 3)
        folded = (depth // 4) * c3
        self.projection = activated(TfConv(folded, proj, 1, [1, 1]), proj)
        self.res2 = ResStage(proj, res2d, 2)
        self.conv5 = activated(TfConv(proj, c5, 4, [1, 1]), c5)
        self.res3 = ResStage(c5, res_mid, 2)
        self.conv6 = activated(TfConv(c5, c6, 4, [1, 1]), c6)
        layers, cin = [], c6
        for cout, s in zip(deconv, strides):
            layers.append(activated(TfDeconv(cin, cout, s), cout))
            cin = cout
        self.deconvs = nn.Sequential(*layers)
        self.output = TfDeconv(cin, out, 1)

    def forward(self, x):
        x = self.res1(self.conv3d(x))
        b, c, d, h, w = x.shape
        # Fold depth (last axis) into channels, feature index d * C + c.
        x = x.permute(0, 4, 1, 2, 3).reshape(b, w * c, d, h)
        x = self.res3(self.conv5(self.res2(self.projection(x))))
        return torch.sigmoid(self.output(self.deconvs(self.conv6(x))))


def bce(pred, target):
    eps = 1e-6
    per_pixel = target * torch.log(pred + eps) + (1 - target) * torch.log(1 - pred + eps)
    return -per_pixel.flatten(1).sum(1).mean()


class ConvDeconv(nn.Module):
    """VoxelNeuralRender's v001 at any width (models/cnn.py)."""

    def __init__(self, encoder, decoder, slope=0.01):
        super().__init__()
        self.slope = slope
        self.encoder = nn.ModuleList()
        cin = 1
        for c in encoder:
            self.encoder.append(nn.ModuleList([nn.Conv3d(cin, c, 4, 2, 1), nn.Conv3d(c, c, 1)]))
            cin = c
        d1, d2 = decoder
        self.deconv_s2_1 = nn.ConvTranspose2d(cin, d1, 4, 2, 1)
        self.deconv_s1_1 = nn.ConvTranspose2d(d1, d2, 1)
        self.deconv_s2_2 = nn.ConvTranspose2d(d2, 1, 4, 2, 1)

    def forward(self, x):
        act = lambda t: F.leaky_relu(t, self.slope)
        for down, mix in self.encoder:
            x = act(mix(F.max_pool3d(act(down(x)), 3, 1, 1)))
        b, c, n = x.shape[0], x.shape[1], x.shape[2]
        m = round((n**3) ** 0.5)
        x = torch.reshape(x, (b, c, m, m))
        return self.deconv_s2_2(act(self.deconv_s1_1(act(self.deconv_s2_1(x)))))


def convdeconv_case(size, encoder, decoder, batch):
    model = ConvDeconv(encoder, decoder)
    n = size >> len(encoder)
    out = 4 * round((n**3) ** 0.5)  # 4M with M^2 = N^3
    x, y = filled01([batch, 1, size, size, size]), filled01([batch, 1, out, out])
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    return model, opt, lambda: (model(x) - y).abs().mean()


def rendernet_case(batch, patch=32, depth=64, factor=2):
    model = RenderNet(depth=depth)
    x = filled01([batch, 1, patch, patch, depth])
    y = filled01([batch, 1, patch * factor, patch * factor])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999))
    return model, opt, lambda: bce(model(x), y)


CASES = {
    "rendernet_small_b4": lambda: rendernet_case(4),
    "convdeconv_small32_b8": lambda: convdeconv_case(32, [8, 16, 32], [16, 16], 8),
    "convdeconv_small64_b4": lambda: convdeconv_case(64, [16, 32], [32, 16], 4),
    # The reference (48,271,745 parameters): for tools/bench/convdeconv_memory_peer.py only.
    "convdeconv_v001_256_b1": lambda: convdeconv_case(256, [64, 128, 512, 1024], [512, 512], 1),
}
TIMED = ["rendernet_small_b4", "convdeconv_small32_b8", "convdeconv_small64_b4"]


def step(opt, loss_fn):
    opt.zero_grad(set_to_none=True)
    loss = loss_fn()
    loss.backward()
    opt.step()
    return loss.item()


def torch_ms(name, steps):
    torch.manual_seed(0)
    _, opt, loss_fn = CASES[name]()
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        step(opt, loss_fn)
        if i >= 2:
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("filter", nargs="?", default="")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-run", action="store_true", help="reuse the last criterion results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = [n for n in TIMED if args.filter in n]
    cores = str(os.cpu_count())
    settings = [
        ("vnr default", "train_step", None),
        (f"CANDLE_NUM_THREADS={cores}", f"train_step_candle_threads_{cores}", cores),
    ]
    # PyTorch is timed before and after our benches and the faster of the two counts, so that a
    # load change on a shared machine does not flatter us.
    before = {name: torch_ms(name, args.steps) for name in names}
    if not args.no_run:
        for _, _, candle_threads in settings:
            env = dict(os.environ)
            env.pop("CANDLE_NUM_THREADS", None)
            if candle_threads:
                env["CANDLE_NUM_THREADS"] = candle_threads
            subprocess.run(
                ["cargo", "bench", "-p", "vnr-models", "--bench", "train_step", "--", args.filter],
                cwd=ROOT,
                env=env,
                check=True,
            )
    after = {name: torch_ms(name, args.steps) for name in names}
    print(f"pytorch {torch.__version__}, {args.threads} threads, median of {args.steps} steps")
    print(f"{'case':24} {'pytorch ms (before/after)':>26} {'vnr setting':>22} {'vnr ms':>9} {'vnr/pytorch':>12}")
    for name in names:
        theirs = min(before[name], after[name])
        for label, group, _ in settings:
            ours = criterion_median_ms(group, name)
            ratio = f"{ours / theirs:12.2f}" if ours else "   (not run)"
            ours_text = f"{ours:9.1f}" if ours else "        -"
            torch_text = f"{before[name]:.1f} / {after[name]:.1f}"
            print(f"{name:24} {torch_text:>26} {label:>22} {ours_text} {ratio}")


if __name__ == "__main__":
    main()
