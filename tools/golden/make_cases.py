#!/usr/bin/env python3
"""Writes the PyTorch golden cases for vnr-ops' conformance runner into tools/golden/cases/.

Each case is an .npz holding `spec` (uint8 array of UTF-8 JSON: `op`, the op's parameters,
`atol`, `rtol`), `input0`, `input1`, ... (float32, in the op's argument order), `output`, and for
ops with a backward `grad_output` and `grad_input0`, `grad_input1`, ... (see README.md).

Expected values are computed in float64 from the float32 inputs (so they are the formula's exact
answer, not one float32 rounding of it) and stored as float32. Every case is also re-run in
float32 by PyTorch itself and must pass its own tolerance: the tolerances are what a correct
float32 implementation achieves, with margin, never tuned to a particular implementation.

Deterministic: every case draws from its own generator seeded from its name, and the zip
entries carry a fixed timestamp, so regenerating gives byte-identical files.

Usage:  python tools/golden/make_cases.py [OUT_DIR]      (needs torch and numpy)
"""

import io
import json
import os
import sys
import zipfile
import zlib

import numpy as np
import torch
import torch.nn.functional as F

FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


# ----------------------------------------------------------------------------------------------
# Reference formulas that are not PyTorch built-ins.


def cumprod_ref(x, dim, exclusive):
    """torch.cumprod; `exclusive` shifts by one so out[0] = 1 and out[i] = prod(x[:i])."""
    y = torch.cumprod(x, dim=dim)
    if not exclusive:
        return y
    n = x.shape[dim]
    ones = torch.ones_like(y.narrow(dim, 0, 1))
    return torch.cat([ones, y.narrow(dim, 0, n - 1)], dim=dim)


def cumsum_ref(x, dim, exclusive):
    """torch.cumsum; `exclusive` shifts by one so out[0] = 0 and out[i] = sum(x[:i])."""
    y = torch.cumsum(x, dim=dim)
    if not exclusive:
        return y
    n = x.shape[dim]
    zeros = torch.zeros_like(y.narrow(dim, 0, 1))
    return torch.cat([zeros, y.narrow(dim, 0, n - 1)], dim=dim)


def ea_raymarch_ref(rays_densities, rays_features, surface_thickness, eps):
    """Emission-absorption ray marching, PyTorch3D's formula.

    Reimplemented from pytorch3d/renderer/implicit/raymarching.py
    (EmissionAbsorptionRaymarcher.forward and _shifted_cumprod):
      absorption = cumprod((1 + eps) - d) shifted right by `surface_thickness` (ones in front),
      features   = sum_k d_k * absorption_k * f_k,
      opacity    = 1 - prod_k (1 - d_k)          (no eps),
      returns cat(features, opacity) over the last dimension.
    densities: [..., P, 1], features: [..., P, F] -> [..., F + 1].
    """
    d = rays_densities[..., 0]
    x_cumprod = torch.cumprod((1.0 + eps) - d, dim=-1)
    s = surface_thickness
    absorption = torch.cat([torch.ones_like(x_cumprod[..., :s]), x_cumprod[..., :-s]], dim=-1)
    weights = d * absorption
    features = (weights[..., None] * rays_features).sum(dim=-2)
    opacities = 1.0 - torch.prod(1.0 - d, dim=-1, keepdim=True)
    return torch.cat((features, opacities), dim=-1)


def harmonic_embedding_ref(x, n_harmonic_functions, omega_0, logspace, append_input):
    """NeRF positional encoding, PyTorch3D's formula and output layout.

    Reimplemented from pytorch3d/renderer/implicit/harmonic_embedding.py (HarmonicEmbedding):
      frequencies = omega_0 * 2**arange(n)               if logspace
                  = omega_0 * linspace(1, 2**(n-1), n)   otherwise,
      embed = x[..., :, None] * frequencies              # [..., dim, n]
      output = cat(sin(embed).flatten(-2), cos(embed).flatten(-2), x if append_input)
    x: [..., dim] -> [..., dim * (2n + append_input)].
    """
    n = n_harmonic_functions
    if logspace:
        freqs = 2.0 ** torch.arange(n, dtype=x.dtype)
    else:
        freqs = torch.linspace(1.0, 2.0 ** (n - 1), n, dtype=x.dtype)
    embed = (x[..., None] * (freqs * omega_0)).reshape(*x.shape[:-1], -1)
    parts = [embed.sin(), embed.cos()]
    if append_input:
        parts.append(x)
    return torch.cat(parts, dim=-1)


# ----------------------------------------------------------------------------------------------
# Applying a spec (the same mapping the Rust runner implements).


def triple(v):
    return [v, v, v] if isinstance(v, int) else list(v)


def apply_op(spec, inputs):
    op = spec["op"]
    if op == "conv3d":
        x, w = inputs[0], inputs[1]
        b = inputs[2] if len(inputs) > 2 else None
        pad = spec.get("padding", 0)
        if isinstance(pad, list) and isinstance(pad[0], list):
            # [[before, after]] per D, H, W: F.pad takes the last axis first.
            (d0, d1), (h0, h1), (w0, w1) = pad
            x = F.pad(x, (w0, w1, h0, h1, d0, d1))
            pad = 0
        return F.conv3d(x, w, b, stride=spec.get("stride", 1), padding=pad,
                        dilation=spec.get("dilation", 1), groups=spec.get("groups", 1))
    if op == "conv_transpose3d":
        x, w = inputs[0], inputs[1]
        b = inputs[2] if len(inputs) > 2 else None
        return F.conv_transpose3d(x, w, b, stride=spec.get("stride", 1),
                                  padding=spec.get("padding", 0),
                                  output_padding=spec.get("output_padding", 0),
                                  groups=spec.get("groups", 1),
                                  dilation=spec.get("dilation", 1))
    if op == "max_pool3d":
        return F.max_pool3d(inputs[0], spec["kernel"], stride=spec.get("stride"),
                            padding=spec.get("padding", 0))
    if op == "avg_pool3d":
        return F.avg_pool3d(inputs[0], spec["kernel"], stride=spec.get("stride"),
                            padding=spec.get("padding", 0),
                            count_include_pad=spec.get("count_include_pad", True))
    if op == "grid_sample3d":
        return F.grid_sample(inputs[0], inputs[1], mode=spec.get("mode", "bilinear"),
                             padding_mode=spec.get("padding_mode", "zeros"),
                             align_corners=spec.get("align_corners", False))
    if op == "cumprod":
        return cumprod_ref(inputs[0], spec["dim"], spec.get("exclusive", False))
    if op == "cumsum":
        return cumsum_ref(inputs[0], spec["dim"], spec.get("exclusive", False))
    if op == "ea_raymarch":
        return ea_raymarch_ref(inputs[0], inputs[1], spec.get("surface_thickness", 1),
                               spec.get("eps", 1e-10))
    if op == "harmonic_embedding":
        return harmonic_embedding_ref(inputs[0], spec.get("n_harmonic_functions", 6),
                                      spec.get("omega_0", 1.0), spec.get("logspace", True),
                                      spec.get("append_input", True))
    raise ValueError(f"unknown op {op}")


def evaluate(spec, inputs, grad_output, dtype):
    """Output and input gradients of the op at `dtype`, by autograd."""
    xs = [t.to(dtype).detach().requires_grad_(True) for t in inputs]
    y = apply_op(spec, xs)
    grads = torch.autograd.grad(y, xs, grad_output.to(dtype), allow_unused=True)
    grads = [torch.zeros_like(x) if g is None else g for x, g in zip(xs, grads)]
    return y.detach(), [g.detach() for g in grads]


# ----------------------------------------------------------------------------------------------
# Writing a case.


def npy_bytes(array):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def write_npz(path, arrays, compress):
    """np.savez(_compressed)'s layout (zip64 entries `NAME.npy`) with a fixed timestamp."""
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    tmp = path + ".tmp"
    with zipfile.ZipFile(tmp, "w", compression=method) as zf:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=FIXED_ZIP_TIME)
            info.compress_type = method
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as fid:
                fid.write(npy_bytes(array))
    os.replace(tmp, path)


def max_errors(got, want):
    diff = (got.double() - want.double()).abs()
    rel = diff / want.double().abs().clamp_min(1e-300)
    rel = torch.where(want == 0, torch.zeros_like(rel), rel)
    return diff.max().item() if diff.numel() else 0.0, rel.max().item() if rel.numel() else 0.0


def within(got, want, atol, rtol):
    return bool(((got.double() - want.double()).abs()
                 <= atol + rtol * want.double().abs()).all())


class Case:
    def __init__(self, name, spec, inputs, compress=True):
        self.name = name
        self.spec = spec
        self.inputs = inputs
        self.compress = compress


def make(case, out_dir, rng):
    inputs32 = [t.to(torch.float32) for t in case.inputs]
    with torch.no_grad():
        out_shape = apply_op(case.spec, [t.double() for t in inputs32]).shape
    grad_output = torch.randn(out_shape, generator=rng, dtype=torch.float32)
    y64, grads64 = evaluate(case.spec, inputs32, grad_output, torch.float64)
    y32, grads32 = evaluate(case.spec, inputs32, grad_output, torch.float32)

    atol, rtol = case.spec["atol"], case.spec["rtol"]
    want_out = y64.to(torch.float32)
    report = [("output", y32, want_out)]
    arrays = {"spec": np.frombuffer(json.dumps(case.spec, sort_keys=True).encode(), np.uint8)}
    for k, t in enumerate(inputs32):
        arrays[f"input{k}"] = t.numpy()
    arrays["output"] = want_out.numpy()
    # Every op here has a backward: the expected input gradients go with each case.
    arrays["grad_output"] = grad_output.numpy()
    for k, g in enumerate(grads64):
        want = g.to(torch.float32)
        arrays[f"grad_input{k}"] = want.numpy()
        report.append((f"grad_input{k}", grads32[k], want))

    # Self-check: PyTorch's own float32 result passes the case's tolerance.
    line = []
    for label, got, want in report:
        a, r = max_errors(got, want)
        line.append(f"{label} {a:.1e}/{r:.1e}")
        if not within(got, want, atol, rtol):
            raise SystemExit(f"{case.name}: torch float32 fails its own tolerance on {label} "
                             f"(max abs {a:.3e}, atol {atol}, rtol {rtol})")
    path = os.path.join(out_dir, case.name + ".npz")
    write_npz(path, arrays, case.compress)
    print(f"{case.name:40s} {os.path.getsize(path):6d} B  torch-f32 err: " + ", ".join(line))


# ----------------------------------------------------------------------------------------------
# The cases.


def seeded(name):
    return torch.Generator().manual_seed(zlib.crc32(name.encode()))


def randn(g, *shape):
    return torch.randn(shape, generator=g, dtype=torch.float32)


def uniform(g, lo, hi, *shape):
    return lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float32)


CONV_TOL = {"atol": 1e-4, "rtol": 1e-4}
TOL = {"atol": 1e-5, "rtol": 1e-4}


def conv3d_cases():
    def case(name, x_shape, w_shape, bias, **params):
        g = seeded(name)
        inputs = [randn(g, *x_shape), randn(g, *w_shape)]
        if bias:
            inputs.append(randn(g, w_shape[0]))
        return name, {"op": "conv3d", **params, **CONV_TOL}, inputs, g

    yield case("conv3d_plain", (1, 2, 5, 4, 6), (3, 2, 3, 3, 3), True,
               stride=[1, 1, 1], padding=[[1, 1], [1, 1], [1, 1]], dilation=[1, 1, 1], groups=1)
    # Stride larger than the kernel skips input voxels; scalars are accepted like PyTorch's.
    yield case("conv3d_stride_gt_kernel_batch2", (2, 2, 7, 6, 8), (3, 2, 2, 2, 2), False,
               stride=[3, 4, 3])
    yield case("conv3d_groups_bias", (2, 4, 4, 5, 4), (6, 2, 3, 2, 3), True,
               stride=[1, 2, 1], padding=[[1, 1], [0, 0], [1, 1]], groups=2)
    yield case("conv3d_depthwise", (1, 3, 5, 4, 5), (3, 1, 3, 3, 3), False,
               padding=1, groups=3)
    yield case("conv3d_dilation", (1, 2, 7, 6, 7), (2, 2, 3, 2, 3), True,
               stride=1, padding=[[2, 2], [1, 1], [2, 2]], dilation=[2, 1, 2])
    # Asymmetric padding: what PyTorch users write as F.pad followed by conv3d.
    yield case("conv3d_asymmetric_padding", (2, 2, 4, 5, 3), (2, 2, 3, 3, 2), True,
               stride=[2, 1, 1], padding=[[1, 0], [0, 2], [2, 1]])


def conv_transpose3d_cases():
    def case(name, x_shape, w_shape, bias, **params):
        g = seeded(name)
        inputs = [randn(g, *x_shape), randn(g, *w_shape)]
        if bias:
            groups = params.get("groups", 1)
            inputs.append(randn(g, w_shape[1] * groups))
        return name, {"op": "conv_transpose3d", **params, **CONV_TOL}, inputs, g

    yield case("conv_transpose3d_stride2_output_padding", (1, 3, 3, 4, 3), (3, 2, 3, 3, 3), True,
               stride=[2, 2, 2], padding=[1, 1, 1], output_padding=[1, 0, 1],
               dilation=[1, 1, 1], groups=1)
    yield case("conv_transpose3d_groups_batch2", (2, 4, 3, 3, 4), (4, 1, 2, 3, 2), False,
               stride=[1, 2, 2], padding=[0, 1, 0], groups=2)
    yield case("conv_transpose3d_dilation", (1, 2, 3, 4, 3), (2, 3, 3, 2, 2), True,
               stride=2, padding=2, output_padding=1, dilation=[2, 3, 2])


def pool_cases():
    def case(name, op, x_shape, **params):
        g = seeded(name)
        return name, {"op": op, **params, **TOL}, [randn(g, *x_shape)], g

    yield case("max_pool3d_k2", "max_pool3d", (1, 2, 4, 6, 5), kernel=2)
    yield case("max_pool3d_padding_odd", "max_pool3d", (2, 2, 5, 7, 6),
               kernel=[3, 3, 3], stride=[2, 1, 2], padding=[1, 1, 1])
    yield case("max_pool3d_anisotropic", "max_pool3d", (1, 3, 5, 4, 6),
               kernel=[3, 2, 3], stride=1, padding=[1, 1, 0])
    yield case("avg_pool3d_k2", "avg_pool3d", (1, 2, 4, 6, 5), kernel=2)
    yield case("avg_pool3d_pad_include", "avg_pool3d", (1, 2, 5, 6, 7),
               kernel=[3, 3, 3], stride=[2, 2, 2], padding=[1, 1, 1], count_include_pad=True)
    yield case("avg_pool3d_pad_exclude", "avg_pool3d", (1, 2, 5, 6, 7),
               kernel=[3, 3, 3], stride=[2, 2, 2], padding=[1, 1, 1], count_include_pad=False)
    yield case("avg_pool3d_anisotropic_exclude_batch2", "avg_pool3d", (2, 2, 4, 5, 5),
               kernel=[3, 3, 2], stride=[1, 2, 1], padding=[1, 1, 1], count_include_pad=False)


def unnormalize(coord, size, align_corners):
    if align_corners:
        return (coord + 1) / 2 * (size - 1)
    return ((coord + 1) * size - 1) / 2


def normalize(index, size, align_corners):
    if align_corners:
        return index * 2 / (size - 1) - 1
    return (2 * index + 1) / size - 1


def keep_off_boundaries(grid, sizes_xyz, align_corners, mode):
    """Moves sample points whose source coordinate lies within 0.02 voxel of a rounding
    boundary (half-integers for nearest, integers for trilinear, where the grid gradient jumps),
    so float32 and float64 evaluations pick the same voxels."""
    grid = grid.double()
    for axis, size in enumerate(sizes_xyz):
        ix = unnormalize(grid[..., axis], size, align_corners)
        boundary = torch.floor(ix) + (0.5 if mode == "nearest" else 0.0)
        dist = torch.minimum((ix - boundary).abs(), (ix - boundary - 1).abs())
        dist = torch.minimum(dist, (ix - boundary + 1).abs())
        moved = normalize(ix + 0.1, size, align_corners)
        grid[..., axis] = torch.where(dist < 0.02, moved, grid[..., axis])
    return grid.to(torch.float32)


def grid_sample_cases():
    n, c, d, h, w = 2, 2, 3, 4, 5
    for mode in ["bilinear", "nearest"]:
        for padding_mode in ["zeros", "border"]:
            for align_corners in [False, True]:
                name = f"grid_sample3d_{mode}_{padding_mode}_{'ac' if align_corners else 'noac'}"
                g = seeded(name)
                volume = randn(g, n, c, d, h, w)
                # Points up to 30% outside [-1, 1] on every axis exercise the padding mode.
                grid = uniform(g, -1.3, 1.3, n, 2, 3, 4, 3)
                grid = keep_off_boundaries(grid, [w, h, d], align_corners, mode)
                spec = {"op": "grid_sample3d", "mode": mode, "padding_mode": padding_mode,
                        "align_corners": align_corners, **TOL}
                yield name, spec, [volume, grid], g


def cumulative_cases():
    def case(name, op, shape, zeros, **params):
        g = seeded(name)
        x = uniform(g, 0.5, 1.5, *shape) * torch.where(
            torch.rand(shape, generator=g) < 0.5, -1.0, 1.0)
        flat = x.view(-1)
        for i in zeros:
            flat[i] = 0.0
        return name, {"op": op, **params, **TOL}, [x], g

    yield case("cumprod_dim0", "cumprod", (4, 3, 5), [], dim=0, exclusive=False)
    yield case("cumprod_dim2_exclusive", "cumprod", (2, 3, 6), [], dim=2, exclusive=True)
    # One zero, two zeros in one row, and a zero at a row's start and end: the backward must
    # not divide by the input.
    yield case("cumprod_dim1_zeros", "cumprod", (3, 6, 4), [5, 9, 13, 28, 44, 60, 71],
               dim=1, exclusive=False)
    yield case("cumprod_last_dim_exclusive_zeros", "cumprod", (2, 3, 7), [2, 4, 7, 13, 20],
               dim=-1, exclusive=True)
    yield case("cumprod_1d_default_exclusive", "cumprod", (9,), [4], dim=0)
    yield case("cumsum_dim1", "cumsum", (3, 5, 4), [], dim=1, exclusive=False)
    yield case("cumsum_dim0_exclusive", "cumsum", (6, 4), [], dim=0, exclusive=True)


def raymarch_cases():
    def case(name, lead, points, features, **params):
        g = seeded(name)
        dens = uniform(g, 0.0, 1.0, *lead, points, 1)
        # Exact 0 and 1 densities: an opaque point must not make the backward divide by zero.
        flat = dens.view(-1)
        flat[1] = 1.0
        flat[(points + 3) % flat.numel()] = 0.0
        flat[-2] = 1.0
        feats = randn(g, *lead, points, features)
        return name, {"op": "ea_raymarch", **params, **TOL}, [dens, feats], g

    yield case("ea_raymarch_thickness1", (2, 3), 8, 3, surface_thickness=1, eps=1e-10)
    yield case("ea_raymarch_thickness2", (2, 3), 8, 4, surface_thickness=2, eps=1e-10)
    yield case("ea_raymarch_thickness2_eps_multibatch", (2, 1, 3), 6, 2, surface_thickness=2,
               eps=1e-3)
    yield case("ea_raymarch_defaults_no_batch", (), 7, 3)


def embedding_cases():
    def case(name, shape, **params):
        g = seeded(name)
        return name, {"op": "harmonic_embedding", **params, **TOL}, \
            [uniform(g, -2.0, 2.0, *shape)], g

    yield case("harmonic_embedding_log_append", (2, 5, 3), n_harmonic_functions=4, omega_0=1.0,
               logspace=True, append_input=True)
    yield case("harmonic_embedding_linear_no_append", (4, 3), n_harmonic_functions=5,
               omega_0=0.5, logspace=False, append_input=False)
    yield case("harmonic_embedding_log_no_append_omega", (3, 2, 2), n_harmonic_functions=3,
               omega_0=2.0, logspace=True, append_input=False)
    yield case("harmonic_embedding_linear_append", (6, 3), n_harmonic_functions=3, omega_0=1.0,
               logspace=False, append_input=True)
    # Spec with no parameters: PyTorch3D's defaults (6, 1.0, logspace, append_input).
    yield case("harmonic_embedding_defaults", (3, 3))


# Files written uncompressed (np.savez), the rest deflated (np.savez_compressed): both occur.
STORED = {"conv3d_plain", "harmonic_embedding_defaults", "cumsum_dim1"}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "cases")
    os.makedirs(out_dir, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    print(f"torch {torch.__version__}, numpy {np.__version__} -> {out_dir}")
    total = 0
    for family in [conv3d_cases, conv_transpose3d_cases, pool_cases, grid_sample_cases,
                   cumulative_cases, raymarch_cases, embedding_cases]:
        for name, spec, inputs, g in family():
            make(Case(name, spec, inputs, compress=name not in STORED), out_dir, g)
            total += os.path.getsize(os.path.join(out_dir, name + ".npz"))
    print(f"total {total} B")


if __name__ == "__main__":
    main()
