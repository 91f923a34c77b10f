"""PyTorch side of crates/vnr-render/benches/raymarch.rs: the same ray marching formulas
(PyTorch3D's EmissionAbsorptionRaymarcher, pytorch3d/renderer/implicit/raymarching.py, plus
weights and expected depth; NeRF's alpha = 1 - exp(-sigma * delta) with a 1e10 last step,
projects/nerf/nerf/implicit_function.py), forward + backward of sum([features, opacity, depth] * r)
on 64k rays x 128 samples x 3 features, timed on the CPU with the same thread count.

    cargo bench -p vnr-render --bench raymarch                 # ours first (optional)
    /work/pyvenv/bin/python tools/bench/raymarch_peer.py [--threads 2] [--repeat 10] [FILTER]

Prints one line per case (median and minimum milliseconds) and, where criterion's results of
our bench exist under target/criterion, our median / theirs.
"""

import torch

from torch_peer import criterion_median_ms, filled, parse_args, time_backward

RAYS, SAMPLES, FEATURES = 65536, 128, 3
GROUP = "raymarch_fwd_bwd_64k_x128_f3"


def shifted_cumprod(x, shift=1):
    c = torch.cumprod(x, dim=-1)
    return torch.cat([torch.ones_like(c[..., :shift]), c[..., :-shift]], dim=-1)


def ea_march(alpha, feats, lengths, eps=1e-10):
    """alpha [R, P] in [0, 1] -> cat(features, opacity, depth) [R, F + 2]."""
    weights = alpha * shifted_cumprod((1.0 + eps) - alpha)
    features = (weights[..., None] * feats).sum(dim=-2)
    opacity = 1.0 - torch.prod(1.0 - alpha, dim=-1, keepdim=True)
    depth = (weights * lengths).sum(-1, keepdim=True)
    return torch.cat((features, opacity, depth), -1)


def nerf_alpha(sigma, lengths):
    deltas = torch.cat((lengths[..., 1:] - lengths[..., :-1], 1e10 * torch.ones_like(lengths[..., :1])), -1)
    return 1 - torch.exp(-sigma * deltas)


def main():
    args = parse_args()
    lengths = (2.0 + 0.01 * torch.arange(SAMPLES, dtype=torch.float32))[None].expand(RAYS, SAMPLES).contiguous()
    cases = {
        "emission_absorption": (0.5, 0.5, lambda d, f: ea_march(d[..., 0], f, lengths)),
        "nerf": (2.0, 2.0, lambda d, f: ea_march(nerf_alpha(d[..., 0], lengths), f, lengths)),
    }
    for name, (scale, shift, march) in cases.items():
        if args.filter not in name:
            continue
        # Same inputs as the Rust bench: EA opacities in [0, 1), NeRF sigma in [0, 4).
        d = (filled([RAYS, SAMPLES, 1], scale) + shift).requires_grad_()
        f = filled([RAYS, SAMPLES, FEATURES]).requires_grad_()
        theirs = time_backward(name, lambda: march(d, f), [d, f], args.repeat)
        ours = criterion_median_ms(GROUP, name)
        if ours is not None:
            print(f"{'':32s} ours   {ours:9.2f} ms   ours / theirs = {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
