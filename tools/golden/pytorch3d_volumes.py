"""Golden files for crates/vnr-render (volumes, splat, raymarchers): PyTorch3D's formulas
re-implemented in torch (float64) and evaluated on float32 inputs.

    /work/pyvenv/bin/python tools/golden/pytorch3d_volumes.py   # writes tools/golden/render/volumes/

Sources of the formulas (facebookresearch/pytorch3d):
- Volumes / VolumeLocator: pytorch3d/structures/volumes.py
  (`_voxel_size_translation_to_transform`: local->world = Scale((size_xyz - 1) * voxel_size * 0.5)
  then translate(-volume_translation); `_calculate_coordinate_grid`: linspace(-1 + a, 1 - a, r),
  a = 0 if align_corners else 1 / r, stacked (x, y, z)).
- VolumeSampler: pytorch3d/renderer/implicit/renderer.py (world -> local, then
  F.grid_sample(..., align_corners=volumes.get_align_corners(), padding zeros)).
- Splatting: pytorch3d/ops/points_to_volumes.py and csrc/points_to_volumes/points_to_volumes_cpu.cpp
  (index position (p + 1) * 0.5 * (n - scale_offset) - offset, scale_offset/offset = 1/0 aligned,
  0/0.5 not; nearest = lround; features / clamp(densities, min_weight | 1)). ONE DELIBERATE
  DIFFERENCE: the lower trilinear corner is floor(), not the C++ modf() truncation, so points in
  (-1, 0) index space get the correct non-negative weight (vnr-render documents the fix).
- Ray marchers: pytorch3d/renderer/implicit/raymarching.py (EmissionAbsorptionRaymarcher,
  AbsorptionOnlyRaymarcher, _shifted_cumprod); NeRF: projects/nerf/nerf/implicit_function.py
  (deltas = diff(lengths) ++ 1e10, alpha = 1 - exp(-sigma * delta)) and projects/nerf/nerf/raymarcher.py.
  Expected depth = sum(weights * lengths) (implicitron's raymarcher).

Each .npz holds float32 arrays; gradients are those of sum(output_i * grad_output_i) over the
outputs listed in the file. Deterministic: generators are seeded per case.
"""

import os

import numpy as np
import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "render", "volumes")
torch.set_default_dtype(torch.float64)


def rng(seed):
    return np.random.default_rng(seed)


def f32(a):
    """float32 values, returned as float64 torch (inputs are stored as float32)."""
    return torch.tensor(np.asarray(a, dtype=np.float32), dtype=torch.float64)


def save(name, arrays):
    os.makedirs(OUT, exist_ok=True)
    out = {k: np.asarray(v.detach().numpy() if torch.is_tensor(v) else v, dtype=np.float32) for k, v in arrays.items()}
    np.savez_compressed(os.path.join(OUT, name + ".npz"), **out)
    print(name, {k: v.shape for k, v in out.items()})


# ---------------------------------------------------------------- volumes

def scale_xyz(grid_dhw, voxel_size):
    d, h, w = grid_dhw
    size_xyz = torch.tensor([w, h, d], dtype=torch.float64)
    return (size_xyz - 1)[None] * voxel_size * 0.5


def local_to_world(p, scale, translation):
    b = p.shape[0]
    return (p.reshape(b, -1, 3) * scale[:, None] - translation[:, None]).reshape(p.shape)


def world_to_local(p, scale, translation):
    b = p.shape[0]
    return ((p.reshape(b, -1, 3) + translation[:, None]) / scale[:, None]).reshape(p.shape)


def coord_grid(grid_dhw, batch, align_corners):
    axes = []
    for r in grid_dhw:
        a = 0.0 if align_corners else 1.0 / r
        axes.append(torch.linspace(-1.0 + a, 1.0 - a, r))
    z, y, x = torch.meshgrid(axes, indexing="ij")
    return torch.stack((x, y, z), dim=3)[None].repeat(batch, 1, 1, 1, 1)


def matrices(scale, translation):
    b = scale.shape[0]
    l2w = torch.zeros(b, 4, 4)
    w2l = torch.zeros(b, 4, 4)
    for i in range(b):
        l2w[i, :3, :3] = torch.diag(scale[i])
        l2w[i, 3, :3] = -translation[i]
        w2l[i, :3, :3] = torch.diag(1 / scale[i])
        w2l[i, 3, :3] = translation[i] / scale[i]
    l2w[:, 3, 3] = 1
    w2l[:, 3, 3] = 1
    return l2w, w2l


def volumes_case(align_corners):
    g = rng(1 if align_corners else 2)
    grid = (3, 4, 5)
    b = 2
    voxel_size = f32([[0.5, 0.25, 2.0], [1.5, 1.0, 0.75]])
    translation = f32([[0.3, -1.2, 0.7], [-2.0, 0.5, 1.0]])
    densities = f32(g.uniform(0, 1, (b, 1) + grid))
    features = f32(g.uniform(-1, 1, (b, 2) + grid))
    scale = scale_xyz(grid, voxel_size)
    points_world = f32(g.uniform(-3, 3, (b, 7, 3)))
    points_local = f32(g.uniform(-1.2, 1.2, (b, 7, 3)))
    l2w, w2l = matrices(scale, translation)
    cg = coord_grid(grid, b, align_corners)
    # Sampling at world points (VolumeSampler): mostly inside the volume.
    query_local = f32(g.uniform(-1.1, 1.1, (b, 3, 4, 3)))
    query_world = local_to_world(query_local, scale, translation).float().double()
    data = torch.cat((densities, features), 1)
    grid_local = world_to_local(query_world, scale, translation).reshape(b, -1, 1, 1, 3)
    sampled = F.grid_sample(data, grid_local, mode="bilinear", padding_mode="zeros", align_corners=align_corners)
    sampled = sampled.permute(0, 2, 3, 4, 1).reshape(b, 3, 4, 3)
    save(
        f"volumes_{'aligned' if align_corners else 'unaligned'}",
        dict(
            voxel_size=voxel_size, volume_translation=translation, densities=densities, features=features,
            coord_grid_local=cg, coord_grid_world=local_to_world(cg, scale, translation),
            points_world=points_world, world_to_local=world_to_local(points_world, scale, translation),
            points_local=points_local, local_to_world=local_to_world(points_local, scale, translation),
            local_to_world_matrix=l2w, world_to_local_matrix=w2l,
            query_points=query_world, query_densities=sampled[..., :1], query_features=sampled[..., 1:],
        ),
    )


# ---------------------------------------------------------------- splatting

def lround(x):
    return torch.sign(x) * torch.floor(torch.abs(x) + 0.5)


def splat(points, feats, densities0, features0, mask, mode, align_corners, min_weight, rescale):
    b, n, _ = points.shape
    _, _, d, h, w = densities0.shape
    sizes = torch.tensor([w, h, d], dtype=torch.float64)
    if align_corners:
        pos = (points + 1) * 0.5 * (sizes - 1)
    else:
        pos = (points + 1) * 0.5 * sizes - 0.5
    fdim = feats.shape[2]
    acc = torch.zeros(b, d * h * w, 1 + fdim)
    src_feats = torch.cat((torch.ones(b, n, 1), feats), 2)
    if mode == "trilinear":
        lower = torch.floor(pos.detach())
        r = pos - lower
        corners = [(cx, cy, cz) for cz in (0, 1) for cy in (0, 1) for cx in (0, 1)]
    else:
        lower = lround(pos.detach())
        r = None
        corners = [(0, 0, 0)]
    for c in corners:
        idx = lower + torch.tensor(c, dtype=torch.float64)
        valid = ((idx >= 0) & (idx < sizes)).all(-1) & (mask != 0)
        if r is None:
            wgt = torch.ones(b, n)
        else:
            wgt = torch.ones(b, n)
            for a in range(3):
                wgt = wgt * (r[..., a] if c[a] else 1 - r[..., a])
        wgt = wgt * valid
        flat = ((idx[..., 2] * h + idx[..., 1]) * w + idx[..., 0]).long()
        flat = torch.where(valid, flat, torch.zeros_like(flat))
        contrib = wgt[..., None] * src_feats
        acc = acc.scatter_add(1, flat[..., None].expand(b, n, 1 + fdim), contrib)
    acc = acc.transpose(1, 2).reshape(b, 1 + fdim, d, h, w)
    dens = densities0 + acc[:, :1]
    fts = features0 + acc[:, 1:]
    if rescale:
        fts = fts / dens.clamp(min_weight if mode == "trilinear" else 1.0)
    return fts, dens


def keep_away(pos_fn, pts, bad_frac, lo, hi, g):
    """Resamples coordinates until their index-space positions are 0.02 away from `bad_frac`
    (0 for trilinear: integers; 0.5 for nearest: half-integers)."""
    pts = pts.copy()
    for _ in range(1000):
        pos = pos_fn(pts)
        frac = pos - np.floor(pos)
        bad = np.abs(frac - bad_frac) < 0.02
        if bad_frac == 0.0:
            bad |= np.abs(frac - 1.0) < 0.02
        if not bad.any():
            return pts
        pts[bad] = g.uniform(lo, hi, bad.sum())
    raise RuntimeError("could not place points")


def splat_case(mode, align_corners, rescale=True):
    name = f"splat_{mode}_{'aligned' if align_corners else 'unaligned'}" + ("" if rescale else "_sum")
    g = rng(sum(map(ord, name)))
    grid = (3, 4, 5)
    b, n, fdim = 2, 9, 2
    sizes = np.array([5, 4, 3], dtype=np.float64)

    def pos_fn(p):
        p = p.astype(np.float32).astype(np.float64)
        return (p + 1) * 0.5 * (sizes - 1) if align_corners else (p + 1) * 0.5 * sizes - 0.5

    pts = g.uniform(-1.0, 1.0, (b, n, 3))
    # Near and outside the border: just outside -1 (index position in (-1, 0)), beyond +1, far out.
    pts[0, 0] = [-1.08, 0.1, 0.2]
    pts[0, 1] = [1.04, -1.03, 0.3]
    pts[1, 0] = [-1.3, -1.25, -1.2]
    pts[1, 1] = [0.2, 1.06, -1.05]
    pts[1, 2] = [5.0, 0.0, 0.0]
    pts = keep_away(pos_fn, pts, 0.0 if mode == "trilinear" else 0.5, -1.05, 1.05, g)
    points = f32(pts)
    feats = f32(g.uniform(-1, 1, (b, n, fdim)))
    densities0 = f32(g.uniform(0, 0.5, (b, 1) + grid))
    features0 = f32(g.uniform(-0.5, 0.5, (b, fdim) + grid))
    mask = f32(np.ones((b, n)))
    mask[1, 8] = 0
    points.requires_grad_(mode == "trilinear")
    feats.requires_grad_()
    densities0.requires_grad_()
    features0.requires_grad_()
    fts, dens = splat(points, feats, densities0, features0, mask, mode, align_corners, 1e-4, rescale)
    gf = f32(g.uniform(-1, 1, fts.shape))
    gd = f32(g.uniform(-1, 1, dens.shape))
    ((fts * gf).sum() + (dens * gd).sum()).backward()
    arrays = dict(
        points=points, point_features=feats, densities0=densities0, features0=features0, mask=mask,
        features=fts, densities=dens, grad_features=gf, grad_densities=gd,
        grad_point_features=feats.grad, grad_densities0=densities0.grad, grad_features0=features0.grad,
    )
    if mode == "trilinear":
        arrays["grad_points"] = points.grad
    save(name, arrays)


# ---------------------------------------------------------------- ray marchers

def shifted_cumprod(x, shift):
    c = torch.cumprod(x, dim=-1)
    return torch.cat([torch.ones_like(c[..., :shift]), c[..., :-shift]], dim=-1)


def march(kind, dens, feats, lengths, surface_thickness=1, eps=1e-10, last_step=None, bg=None):
    d = dens[..., 0]
    if kind == "nerf":
        deltas = lengths[..., 1:] - lengths[..., :-1]
        last = deltas[..., -1:] if last_step == "bin" else 1e10 * torch.ones_like(lengths[..., :1])
        deltas = torch.cat((deltas, last), -1)
        d = 1 - torch.exp(-d * deltas)
    if kind == "ao":
        opacity = 1.0 - torch.prod(1 - d, dim=-1, keepdim=True)
        weights = d * shifted_cumprod(1 - d, 1)
        features = feats[..., 0, :0]
    else:
        absorption = shifted_cumprod((1.0 + eps) - d, shift=surface_thickness)
        weights = d * absorption
        features = (weights[..., None] * feats).sum(dim=-2)
        opacity = 1.0 - torch.prod(1.0 - d, dim=-1, keepdim=True)
    if bg is not None:
        features = features + (1 - opacity) * torch.tensor(bg)
    depth = (weights * lengths).sum(-1, keepdim=True)
    return features, opacity, depth, weights


def march_case(name, kind, **kw):
    g = rng(len(name) * 13 + sum(map(ord, name)))
    shape = (2, 3)
    p, fdim = 6, 3
    if kind == "nerf":
        dens = f32(g.uniform(0, 3, shape + (p, 1)))
    else:
        dens = f32(g.uniform(0, 1, shape + (p, 1)))
        dens[0, 0, 2, 0] = 1.0  # an opaque sample
        dens[1, 1, :, 0] = 0.0  # an empty ray
    feats = f32(g.uniform(-1, 1, shape + (p, fdim)))
    lengths = f32(np.cumsum(g.uniform(0.05, 0.4, shape + (p,)), -1) + 1.0)
    dens.requires_grad_()
    feats.requires_grad_()
    outs = march(kind, dens, feats, lengths, **kw)
    names = ["features", "opacity", "depth", "weights"]
    grads = [f32(g.uniform(-1, 1, o.shape)) for o in outs]
    sum((o * gr).sum() for o, gr in zip(outs, grads)).backward()
    arrays = dict(densities=dens, point_features=feats, lengths=lengths)
    for nm, o, gr in zip(names, outs, grads):
        arrays[nm] = o
        arrays["grad_" + nm] = gr
    arrays["grad_densities_in"] = dens.grad
    arrays["grad_point_features"] = feats.grad if feats.grad is not None else torch.zeros_like(feats)
    save(name, arrays)


def main():
    for align in (True, False):
        volumes_case(align)
        for mode in ("trilinear", "nearest"):
            splat_case(mode, align)
    splat_case("trilinear", True, rescale=False)
    march_case("march_ea_s1", "ea")
    march_case("march_ea_s2_eps", "ea", surface_thickness=2, eps=1e-3)
    march_case("march_ea_background", "ea", bg=[0.2, 0.5, 1.0])
    march_case("march_ao", "ao")
    march_case("march_nerf_far", "nerf")
    march_case("march_nerf_bin", "nerf", last_step="bin", bg=[1.0, 1.0, 1.0])


if __name__ == "__main__":
    main()
