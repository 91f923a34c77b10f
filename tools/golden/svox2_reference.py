"""Golden files for crates/vnr-render's `plenoxels` module: svox2 checkpoints and the rays,
samples and spherical harmonics they must give, computed here in float64 numpy.

    /work/pyvenv/bin/python tools/golden/svox2_reference.py   # writes tools/golden/render/plenoxels/

Sources of the formulas (github.com/sxyu/svox2):
- Checkpoint keys and dtypes: svox2/svox2.py `SparseGrid.save` (radius f32 [3], center f32 [3],
  links int32 [X, Y, Z], density_data f32 [N, 1], sh_data float16 [N, 3K], basis_type int) and
  `SparseGrid.load`.
- world -> grid: svox2/svox2.py `SparseGrid.__init__` (_offset = 0.5 * (1 - center / radius),
  _scaling = 0.5 / radius) and `world2grid` (offset * reso - 0.5, scaling * reso).
- Ray setup: svox2/csrc/include/render_util.cuh `ray_find_bounds` and `_get_delta_scale`
  (grid-space direction normalised, world_step = step_size / |dir * scaling|, box
  [-0.5, reso - 0.5] per axis, tmin = near_clip / world_step * step_size).
- Marching and compositing: svox2/csrc/render_lerp_kernel_cuvol.cu `trace_ray_cuvol`
  (pos clamped to [0, reso - 1], lower corner min(int(pos), reso - 2), sigma > sigma_thresh,
  pcnt = world_step * sigma, weight = T * (1 - exp(-pcnt)), colour max(sum SH * basis + 0.5, 0),
  stop when T < stop_thresh with T set to 0, background T * background_brightness).
- Sparse trilinear interpolation: render_util.cuh `trilerp_cuvol_one` (a corner with a negative
  link reads 0) and svox2.py `SparseGrid.sample` (same clamping).
- SH bases: svox2/utils.py `eval_sh_bases` (SH_C0 ... SH_C4). The file `sh.npz` stores instead
  an INDEPENDENT evaluation: real spherical harmonics from associated Legendre functions
  (scipy.special.lpmv, which includes the Condon-Shortley phase), and the script checks both
  agree before writing.

Rays are marched at t = tmin + k * step (svox2 accumulates t += step; the difference is
rounding only). Everything is deterministic (fixed seeds).
"""

import math
import os

import numpy as np
from scipy.special import lpmv

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "render", "plenoxels")

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = [1.0925484305920792, -1.0925484305920792, 0.31539156525252005,
         -1.0925484305920792, 0.5462742152960396]
SH_C3 = [-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
         -0.4570457994644658, 1.445305721320277, -0.5900435899266435]
SH_C4 = [2.5033429417967046, -1.7701307697799304, 0.9461746957575601, -0.6690465435572892,
         0.10578554691520431, -0.6690465435572892, 0.47308734787878004, -1.7701307697799304,
         0.6258357354491761]


def eval_sh_svox2(k, d):
    """svox2 utils.eval_sh_bases for unit directions d [M, 3]."""
    x, y, z = d[:, 0], d[:, 1], d[:, 2]
    xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
    r = np.zeros((d.shape[0], k))
    r[:, 0] = SH_C0
    if k > 1:
        r[:, 1], r[:, 2], r[:, 3] = -SH_C1 * y, SH_C1 * z, -SH_C1 * x
    if k > 4:
        r[:, 4] = SH_C2[0] * xy
        r[:, 5] = SH_C2[1] * yz
        r[:, 6] = SH_C2[2] * (2.0 * zz - xx - yy)
        r[:, 7] = SH_C2[3] * xz
        r[:, 8] = SH_C2[4] * (xx - yy)
    if k > 9:
        r[:, 9] = SH_C3[0] * y * (3 * xx - yy)
        r[:, 10] = SH_C3[1] * xy * z
        r[:, 11] = SH_C3[2] * y * (4 * zz - xx - yy)
        r[:, 12] = SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy)
        r[:, 13] = SH_C3[4] * x * (4 * zz - xx - yy)
        r[:, 14] = SH_C3[5] * z * (xx - yy)
        r[:, 15] = SH_C3[6] * x * (xx - 3 * yy)
    if k > 16:
        r[:, 16] = SH_C4[0] * xy * (xx - yy)
        r[:, 17] = SH_C4[1] * yz * (3 * xx - yy)
        r[:, 18] = SH_C4[2] * xy * (7 * zz - 1)
        r[:, 19] = SH_C4[3] * yz * (7 * zz - 3)
        r[:, 20] = SH_C4[4] * (zz * (35 * zz - 30) + 3)
        r[:, 21] = SH_C4[5] * xz * (7 * zz - 3)
        r[:, 22] = SH_C4[6] * (xx - yy) * (7 * zz - 1)
        r[:, 23] = SH_C4[7] * xz * (xx - 3 * yy)
        r[:, 24] = SH_C4[8] * (xx * (xx - 3 * yy) - yy * (3 * xx - yy))
    return r


def eval_sh_legendre(degree, d):
    """Real SH with the Condon-Shortley phase, basis index l*l + l + m, from lpmv."""
    cos_theta = np.clip(d[:, 2], -1.0, 1.0)
    phi = np.arctan2(d[:, 1], d[:, 0])
    out = np.zeros((d.shape[0], (degree + 1) ** 2))
    for l in range(degree + 1):
        for m in range(-l, l + 1):
            am = abs(m)
            norm = math.sqrt((2 * l + 1) / (4 * math.pi)
                             * math.factorial(l - am) / math.factorial(l + am))
            p = lpmv(am, l, cos_theta)
            if m == 0:
                v = norm * p
            elif m > 0:
                v = math.sqrt(2) * norm * p * np.cos(am * phi)
            else:
                v = math.sqrt(2) * norm * p * np.sin(am * phi)
            out[:, l * l + l + m] = v
    return out


def make_grid(rng, dims, k, empty_frac):
    """Random sparse grid: links in shuffled order, a few svox2 `accelerate` skip codes."""
    n_vox = int(np.prod(dims))
    filled = rng.random(n_vox) >= empty_frac
    n = int(filled.sum())
    links = np.full(n_vox, -1, dtype=np.int32)
    links[filled] = rng.permutation(n).astype(np.int32)
    empty_idx = np.flatnonzero(~filled)
    codes = rng.choice(empty_idx, size=min(10, empty_idx.size), replace=False)
    links[codes] = -2  # accelerate() distance codes: still empty
    density = rng.uniform(-5.0, 60.0, size=(n, 1)).astype(np.float32)
    sh = (rng.normal(0.0, 0.5, size=(n, 3 * k))).astype(np.float16)
    return links.reshape(dims), density, sh


class Grid:
    def __init__(self, links, density, sh, radius, center):
        self.links = links
        self.density = density.astype(np.float64)[:, 0]
        self.sh = sh.astype(np.float64)
        self.k = sh.shape[1] // 3
        self.dims = np.array(links.shape, dtype=np.float64)
        radius = radius.astype(np.float64)
        center = center.astype(np.float64)
        self.scaling = 0.5 / radius * self.dims
        self.offset = 0.5 * (1.0 - center / radius) * self.dims - 0.5

    def corners(self, pos):
        """Trilinear corners (links, weights) at grid position pos, clamped as svox2 does."""
        size = self.links.shape
        p = np.array([min(max(pos[i], 0.0), size[i] - 1.0) for i in range(3)])
        l = [min(int(p[i]), size[i] - 2) for i in range(3)]
        f = p - np.array(l, dtype=np.float64)
        out = []
        for dx in (0, 1):
            for dy in (0, 1):
                for dz in (0, 1):
                    w = ((f[0] if dx else 1 - f[0]) * (f[1] if dy else 1 - f[1])
                         * (f[2] if dz else 1 - f[2]))
                    out.append((self.links[l[0] + dx, l[1] + dy, l[2] + dz], w))
        return out

    def sample(self, pos):
        """svox2 SparseGrid.sample at a grid position: [density, sh...] (empty corners = 0)."""
        row = np.zeros(1 + 3 * self.k)
        for link, w in self.corners(pos):
            if link >= 0:
                row[0] += w * self.density[link]
                row[1:] += w * self.sh[link]
        return row

    def render(self, origin, direction, opt):
        step, sigma_thresh, stop_thresh, bg, near_clip = opt
        d = direction / np.linalg.norm(direction)
        basis = eval_sh_svox2(self.k, d[None])[0]
        g = d * self.scaling
        delta_scale = 1.0 / np.linalg.norm(g)
        g = g * delta_scale
        o = origin * self.scaling + self.offset
        world_step = delta_scale * step
        tmin, tmax = near_clip / world_step * step, np.inf
        for i in range(3):
            if g[i] != 0.0:
                t1 = (-0.5 - o[i]) / g[i]
                t2 = (self.dims[i] - 0.5 - o[i]) / g[i]
                tmin, tmax = max(tmin, min(t1, t2)), min(tmax, max(t1, t2))
        if tmin > tmax:
            return np.full(3, bg)
        out = np.zeros(3)
        log_t = 0.0
        kk = 0
        while True:
            t = tmin + kk * step
            if not t <= tmax:
                break
            kk += 1
            row = self.sample(o + t * g)
            sigma = row[0]
            if sigma <= sigma_thresh:
                continue
            rgb = row[1:].reshape(3, self.k) @ basis + 0.5
            pcnt = world_step * sigma
            weight = math.exp(log_t) * (1.0 - math.exp(-pcnt))
            log_t -= pcnt
            out += weight * np.maximum(rgb, 0.0)
            if math.exp(log_t) < stop_thresh:
                log_t = -math.inf
                break
        return out + math.exp(log_t) * bg


def make_rays(rng, n, radius, center):
    """Rays from a shell around the box aimed near it (some miss), plus rays from inside."""
    origins, dirs = [], []
    for i in range(n):
        if i % 4 == 3:
            o = center + radius * rng.uniform(-0.8, 0.8, 3)
            d = rng.normal(size=3)
        else:
            v = rng.normal(size=3)
            o = center + 2.5 * radius.max() * v / np.linalg.norm(v)
            target = center + radius * rng.uniform(-1.3, 1.3, 3)
            d = (target - o) * rng.uniform(0.5, 3.0)  # not unit length
        origins.append(o)
        dirs.append(d)
    return np.array(origins, dtype=np.float32), np.array(dirs, dtype=np.float32)


def save_case(name, links, density, sh, radius, center, rng, options, n_rays, n_points,
              compressed_copy):
    ckpt = dict(radius=radius, center=center, links=links, density_data=density,
                sh_data=sh, basis_type=1)
    np.savez(os.path.join(OUT, f"{name}.npz"), **ckpt)
    if compressed_copy:
        np.savez_compressed(os.path.join(OUT, f"{name}_compressed.npz"), **ckpt)
    grid = Grid(links, density, sh, radius, center)
    origins, dirs = make_rays(rng, n_rays, radius.astype(np.float64), center.astype(np.float64))
    expected = {}
    for j, opt in enumerate(options):
        expected[f"colours_{j}"] = np.array(
            [grid.render(o.astype(np.float64), d.astype(np.float64), opt)
             for o, d in zip(origins, dirs)])
        expected[f"options_{j}"] = np.array(opt, dtype=np.float32)
    points = (center + radius * rng.uniform(-1.1, 1.1, size=(n_points, 3))).astype(np.float32)
    samples = np.array([grid.sample(p.astype(np.float64) * grid.scaling + grid.offset)
                        for p in points])
    np.savez_compressed(os.path.join(OUT, f"{name}_expected.npz"), origins=origins,
                        directions=dirs, points=points, samples=samples, **expected)


def main():
    os.makedirs(OUT, exist_ok=True)
    # (step_size, sigma_thresh, stop_thresh, background_brightness, near_clip)
    options = [(0.5, 1e-10, 1e-7, 1.0, 0.0), (0.37, 2.0, 0.05, 0.3, 0.1)]

    rng = np.random.default_rng(20211203)
    links, density, sh = make_grid(rng, (16, 16, 16), 4, 0.4)
    radius = np.array([1.0, 1.25, 0.8], dtype=np.float32)
    center = np.array([0.1, -0.2, 0.05], dtype=np.float32)
    save_case("grid16_sh1", links, density, sh, radius, center, rng, options, 48, 64, True)

    links, density, sh = make_grid(rng, (5, 7, 9), 25, 0.4)
    radius = np.array([0.7, 1.0, 1.2], dtype=np.float32)
    center = np.array([0.0, 0.3, -0.1], dtype=np.float32)
    save_case("grid5x7x9_sh4", links, density, sh, radius, center, rng, options, 24, 32, False)

    dirs = rng.normal(size=(64, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    legendre = eval_sh_legendre(4, dirs)
    err = np.abs(legendre - eval_sh_svox2(25, dirs)).max()
    assert err < 1e-12, f"svox2 SH constants disagree with the Legendre formula: {err}"
    np.savez_compressed(os.path.join(OUT, "sh_legendre.npz"), directions=dirs, bases=legendre)
    print("wrote", OUT, "; svox2 SH vs Legendre max error", err)


if __name__ == "__main__":
    main()
