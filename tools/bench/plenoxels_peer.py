"""PyTorch side of crates/vnr-render/benches/plenoxels.rs: svox2's Plenoxel rendering
(`volume_render_cuvol`: samples every `step_size` voxels along each ray inside the grid box,
trilinear density and SH degree 2, `alpha = 1 - exp(-relu(sigma) * world_step)`, colour
`relu(SH . basis + 0.5)`, white background) written with PyTorch3D's formulas: the grid is
densified and sampled with `grid_sample` (PyTorch3D's VolumeSampler, trilinear, border
clamping), the samples composited with cumulative transmittance (EmissionAbsorptionRaymarcher).

Same grid (128^3, a soft ball of radius 0.75 with pseudo-random SH) and the same rays as the
Rust bench, both built from closed formulas. Two cases, on the CPU with the same thread count:

  render_16k  forward colours of 16,384 rays (one 128x128 view)
  train_5k    forward + backward of the MSE of 5,000 rays into the sparse density and SH
              (one Plenoxels optimisation step without the optimiser update)

    cargo bench -p vnr-render --bench plenoxels                 # ours first (optional)
    /work/pyvenv/bin/python tools/bench/plenoxels_peer.py [--threads 2] [--repeat 5] [FILTER]

Prints the median/minimum milliseconds and rays/s of each case, the checksum (mean colour) to
compare with the Rust bench's, and ours / theirs when criterion's results exist.
"""

import math
import statistics
import time

import torch

from torch_peer import criterion_median_ms, parse_args

DIMS = 128
STEP = 0.5  # voxels per sample
RADIUS = 0.75
GROUP = "plenoxels_128"
SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = [1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396]


def build_grid():
    """links [D, D, D] (-1 empty), density [N, 1], sh [N, 27]: the Rust bench's formulas."""
    idx = torch.arange(DIMS, dtype=torch.float64)
    c = -1.0 + 2.0 * (idx + 0.5) / DIMS
    x, y, z = torch.meshgrid(c, c, c, indexing="ij")
    r = torch.sqrt(x * x + y * y + z * z)
    occupied = r < RADIUS
    links = torch.full((DIMS, DIMS, DIMS), -1, dtype=torch.int64)
    n = int(occupied.sum())
    links[occupied] = torch.arange(n)
    density = (60.0 * ((RADIUS - r[occupied]) / 0.1).clamp(0.0, 1.0)).to(torch.float32)[:, None]
    i = torch.arange(n * 27, dtype=torch.int64)
    sh = ((((i * 7919) % 2001).to(torch.float32) / 1000.0 - 1.0) * 0.3).reshape(n, 27)
    return links, density.contiguous(), sh


def build_rays(m):
    """Origins on a sphere of radius 3 aimed at points near the centre: the Rust bench's rays."""
    i = torch.arange(m, dtype=torch.float64)
    golden = 0.6180339887498949
    az = 2.0 * math.pi * ((i * golden) % 1.0)
    el = torch.asin(((i * 0.7548776662466927) % 1.0) * 1.6 - 0.8)
    origin = 3.0 * torch.stack((torch.cos(el) * torch.sin(az), torch.sin(el), torch.cos(el) * torch.cos(az)), -1)
    target = 0.4 * (torch.stack((((i * 0.5698402909980532) % 1.0), ((i * 0.3819660112501051) % 1.0), ((i * 0.2360679774997897) % 1.0)), -1) - 0.5)
    return origin, target - origin


def sh_basis(d):
    x, y, z = d.unbind(-1)
    return torch.stack(
        (
            torch.full_like(x, SH_C0),
            -SH_C1 * y,
            SH_C1 * z,
            -SH_C1 * x,
            SH_C2[0] * x * y,
            SH_C2[1] * y * z,
            SH_C2[2] * (2.0 * z * z - x * x - y * y),
            SH_C2[3] * x * z,
            SH_C2[4] * (x * x - y * y),
        ),
        -1,
    )


def prepare_rays(origins, dirs):
    """svox2's ray setup in grid coordinates (radius 1, centre 0): unit direction, clipped
    [tmin, tmax] against [-0.5, D - 0.5]^3, world length of a step, SH basis."""
    view = dirs / dirs.norm(dim=-1, keepdim=True)
    scaling = 0.5 * DIMS
    offset = 0.5 * DIMS - 0.5
    grid_dir = view * scaling
    delta_scale = 1.0 / grid_dir.norm(dim=-1)
    gdir = grid_dir * delta_scale[:, None]
    gorigin = origins * scaling + offset
    t1 = (-0.5 - gorigin) / gdir
    t2 = (DIMS - 0.5 - gorigin) / gdir
    tmin = torch.minimum(t1, t2).amax(-1).clamp(min=0.0)
    tmax = torch.maximum(t1, t2).amin(-1)
    return (gorigin.float(), gdir.float(), tmin.float(), tmax.float(), (delta_scale * STEP).float(), sh_basis(view).float())


def render(links, density, sh, rays):
    gorigin, gdir, tmin, tmax, world_step, basis = rays
    n = density.shape[0]
    # Densify (empty voxels read 0, as svox2's), channels first for grid_sample: [1, 28, D, D, D].
    data = torch.cat((density, sh), 1)
    data = torch.cat((data, torch.zeros(1, 28)), 0)
    dense = data[links.reshape(-1) % (n + 1)].reshape(DIMS, DIMS, DIMS, 28)
    volume = dense.permute(3, 0, 1, 2)[None]
    k = int(torch.ceil((tmax - tmin).max() / STEP).item()) + 1
    t = tmin[:, None] + STEP * torch.arange(k, dtype=torch.float32)[None]
    inside = t <= tmax[:, None]
    pos = gorigin[:, None] + t[..., None] * gdir[:, None]
    # grid_sample takes (x, y, z) = (W, H, D) = our (k, j, i), normalised with align_corners.
    norm = pos.flip(-1) * (2.0 / (DIMS - 1)) - 1.0
    samples = torch.nn.functional.grid_sample(volume, norm[None, :, :, None], mode="bilinear", padding_mode="border", align_corners=True)
    samples = samples[0, :, :, :, 0].permute(1, 2, 0)  # [R, K, 28]
    sigma = torch.relu(samples[..., 0]) * inside
    coeffs = samples[..., 1:].reshape(*samples.shape[:2], 3, 9)
    rgb = torch.relu((coeffs * basis[:, None, None, :]).sum(-1) + 0.5)
    pcnt = sigma * world_step[:, None]
    log_t = torch.cumsum(pcnt, -1)
    transmit_before = torch.exp(-(log_t - pcnt))
    weights = transmit_before * (1.0 - torch.exp(-pcnt))
    colour = (weights[..., None] * rgb).sum(1)
    return colour + torch.exp(-log_t[:, -1:])  # white background


def timed(run, repeat):
    times = []
    for i in range(repeat + 1):
        start = time.perf_counter()
        run()
        if i > 0:
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), min(times)


def main():
    args = parse_args()
    links, density, sh = build_grid()
    cases = {"render_16k": 16384, "train_5k": 5000}
    for name, m in cases.items():
        if args.filter not in name:
            continue
        rays = prepare_rays(*build_rays(m))
        if name.startswith("render"):
            def run():
                with torch.no_grad():
                    return render(links, density, sh, rays)
        else:
            d = density.clone().requires_grad_()
            s = sh.clone().requires_grad_()

            def run():
                d.grad = None
                s.grad = None
                colour = render(links, d, s, rays)
                loss = ((colour - 0.5) ** 2).mean()
                loss.backward()
                return colour
        checksum = run().detach().mean().item()
        median, best = timed(run, args.repeat)
        print(f"{name:12s} median {median:9.2f} ms   min {best:9.2f} ms   {m / median * 1e3:10.0f} rays/s   mean colour {checksum:.6f}")
        ours = criterion_median_ms(GROUP, name)
        if ours is not None:
            print(f"{'':12s} ours   {ours:9.2f} ms   {m / ours * 1e3:10.0f} rays/s   theirs / ours = {median / ours:.2f}")


if __name__ == "__main__":
    main()
