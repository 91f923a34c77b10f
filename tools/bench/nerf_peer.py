"""PyTorch side of the NeRF speed comparison: the tutorial's NeuralRadianceField trained and
rendered with PyTorch3D's formulas (EmissionAbsorptionRaymarcher, stratified depths, the
tutorial's huber on colours + silhouettes, Adam), at the sizes of `examples/nerf.rs`.

Run:  /work/pyvenv/bin/python tools/bench/nerf_peer.py [--steps 60] [--tutorial]
Prints training rays/s (forward + backward + Adam step, rays_per_step rays of P samples) and
rendering rays/s (no_grad, chunks of `chunk` rays), for comparison with the rays/s that
`cargo run --release -p vnr --example nerf` and `vnr train nerf` print.
`--tutorial` uses the tutorial's own sizes (60 harmonics, 256 hidden, 128 samples, 4500 rays).
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "golden"))
from nerf_torch import NeuralRadianceField, ea_march, huber  # noqa: E402


def rays(n, generator):
    """Rays from cameras at distance 4 towards the unit ball (origins [n, 3], directions [n, 3])."""
    o = torch.randn(n, 3, generator=generator)
    o = 4.0 * o / o.norm(dim=-1, keepdim=True)
    target = (torch.rand(n, 3, generator=generator) * 2 - 1) * 0.8
    return o, target - o


def depths(n, p, near, far, stratified, generator):
    z = torch.linspace(near, far, p).expand(n, p)
    if not stratified:
        return z
    mids = 0.5 * (z[:, 1:] + z[:, :-1])
    lo = torch.cat((z[:, :1], mids), dim=-1)
    hi = torch.cat((mids, z[:, -1:]), dim=-1)
    return lo + (hi - lo) * torch.rand(n, p, generator=generator)


def render(model, o, d, z, background):
    points = o[:, None, :] + z[..., None] * d[:, None, :]
    densities, colours, _ = model(points, d)
    c, opacity = ea_march(densities, colours)
    return c + (1 - opacity) * background, opacity


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--tutorial", action="store_true")
    ap.add_argument("--render-rays", type=int, default=16384)
    a = ap.parse_args()
    if a.tutorial:
        n_harm, omega, hidden, p, batch, near, far = 60, 0.1, 256, 128, 4500, 0.1, 3.0
    else:
        n_harm, omega, hidden, p, batch, near, far = 8, 1.0, 64, 32, 512, 2.5, 5.5
    chunk = 8192
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = NeuralRadianceField(n_harm, omega, hidden)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    bg = torch.zeros(3)
    target_c = torch.rand(batch, 3, generator=g)
    target_a = torch.rand(batch, 1, generator=g)

    def train_step():
        o, d = rays(batch, g)
        z = depths(batch, p, near, far, True, g)
        c, op = render(model, o, d, z, bg)
        loss = huber(c, target_c).abs().mean() + huber(op, target_a).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3):
        train_step()
    t = time.perf_counter()
    for _ in range(a.steps):
        train_step()
    dt = time.perf_counter() - t
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; harmonics {n_harm}, hidden {hidden}, "
          f"P {p}, {batch} rays/step")
    print(f"train: {a.steps} steps in {dt:.2f} s = {a.steps * batch / dt:.0f} rays/s")

    o, d = rays(a.render_rays, g)
    z = depths(a.render_rays, p, near, far, False, g)
    with torch.no_grad():
        render(model, o[:chunk], d[:chunk], z[:chunk], bg)
        t = time.perf_counter()
        for s in range(0, a.render_rays, chunk):
            render(model, o[s:s + chunk], d[s:s + chunk], z[s:s + chunk], bg)
        dt = time.perf_counter() - t
    print(f"render: {a.render_rays} rays in {dt:.2f} s = {a.render_rays / dt:.0f} rays/s")


if __name__ == "__main__":
    main()
