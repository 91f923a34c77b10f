#!/usr/bin/env python3
"""Golden values for vnr-render's cameras and ray samplers, reproducing PyTorch3D's formulas.

PyTorch3D is not pip-installable here, so this script re-derives each quantity the way
PyTorch3D computes it (4x4 row-vector transforms composed and inverted with torch.inverse,
exactly as `Transform3d` does), in float64 so that the goldens are the exact values of the
formulas. Sources (facebookresearch/pytorch3d):

- pytorch3d/renderer/cameras.py: camera_position_from_spherical_angles, look_at_rotation,
  look_at_view_transform, get_world_to_view_transform, FoVPerspectiveCameras
  (compute_projection_matrix, unproject_points), FoVOrthographicCameras (same),
  PerspectiveCameras + _get_sfm_calibration_matrix (get_projection_transform,
  unproject_points, get_ndc_camera_transform), CamerasBase.transform_points(_ndc, _screen),
  get_ndc_to_screen_transform, get_screen_to_ndc_transform.
- pytorch3d/transforms/transform3d.py: Transform3d.transform_points (row vectors, divide by w).
- pytorch3d/renderer/implicit/raysampling.py: MultinomialRaysampler.__init__ (xy grid),
  NDCMultinomialRaysampler (grid range), _xy_to_ray_bundle.
- pytorch3d/renderer/camera_conversions.py: _cameras_from_opencv_projection,
  _opencv_from_cameras_projection.

Run with the venv's python:  /work/pyvenv/bin/python tools/golden/pytorch3d_cameras_rays.py
Writes tools/golden/render/cameras_rays.json: {name: {"shape": [...], "data": [...]}}.
"""

import json
import math
import os

import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "render", "cameras_rays.json")
golden = {}


def put(name, t):
    t = torch.as_tensor(t, dtype=torch.float64)
    golden[name] = {"shape": list(t.shape), "data": [round(float(v), 12) for v in t.flatten()]}


# ---- cameras.py: look_at ------------------------------------------------------------------
def camera_position_from_spherical_angles(dist, elev, azim, degrees=True):
    dist, elev, azim = torch.broadcast_tensors(dist, elev, azim)
    if degrees:
        elev = math.pi / 180.0 * elev
        azim = math.pi / 180.0 * azim
    x = dist * torch.cos(elev) * torch.sin(azim)
    y = dist * torch.sin(elev)
    z = dist * torch.cos(elev) * torch.cos(azim)
    return torch.stack([x, y, z], dim=1).view(-1, 3)


def look_at_rotation(camera_position, at, up):
    n = max(camera_position.shape[0], at.shape[0], up.shape[0])
    camera_position, at, up = (t.expand(n, 3) for t in (camera_position, at, up))
    z_axis = F.normalize(at - camera_position, eps=1e-5)
    x_axis = F.normalize(torch.cross(up, z_axis, dim=1), eps=1e-5)
    y_axis = F.normalize(torch.cross(z_axis, x_axis, dim=1), eps=1e-5)
    is_close = torch.isclose(x_axis, torch.tensor(0.0), atol=5e-3).all(dim=1, keepdim=True)
    if is_close.any():
        replacement = F.normalize(torch.cross(y_axis, z_axis, dim=1), eps=1e-5)
        x_axis = torch.where(is_close, replacement, x_axis)
    r = torch.cat((x_axis[:, None, :], y_axis[:, None, :], z_axis[:, None, :]), dim=1)
    return r.transpose(1, 2)


def look_at_view_transform(dist, elev, azim, degrees, at, up):
    n = max(dist.shape[0], elev.shape[0], azim.shape[0], at.shape[0], up.shape[0])
    c = camera_position_from_spherical_angles(dist, elev, azim, degrees).expand(n, 3) + at
    r = look_at_rotation(c, at, up)
    t = -torch.bmm(r.transpose(1, 2), c[:, :, None])[:, :, 0]
    return r, t


LOOK_AT_CASES = [
    # dist, elev, azim, degrees, at, up
    ([2.7], [10.0, 45.0, -30.0], [0.0, 90.0, 200.0], True, [[0.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]]),
    ([1.5, 4.0], [0.3], [1.2, -2.5], False, [[0.1, -0.2, 0.3]], [[0.0, 1.0, 0.0]]),
    ([3.0], [20.0], [35.0], True, [[0.5, 0.5, -0.5], [1.0, 0.0, 2.0]], [[0.0, 0.0, 1.0], [0.2, 1.0, 0.1]]),
]
for i, (dist, elev, azim, degrees, at, up) in enumerate(LOOK_AT_CASES):
    r, t = look_at_view_transform(
        torch.tensor(dist), torch.tensor(elev), torch.tensor(azim), degrees, torch.tensor(at), torch.tensor(up)
    )
    for k, v in (("dist", dist), ("elev", elev), ("azim", azim), ("at", at), ("up", up)):
        put(f"look_at{i}.{k}", v)
    put(f"look_at{i}.degrees", [1.0 if degrees else 0.0])
    put(f"look_at{i}.R", r)
    put(f"look_at{i}.T", t)


# ---- cameras.py + transform3d.py: projections ---------------------------------------------
def world_to_view(r, t):
    """get_world_to_view_transform: Rotate(R).compose(Translate(T)) as one row-vector matrix."""
    n = r.shape[0]
    m = torch.zeros(n, 4, 4)
    m[:, :3, :3] = r
    m[:, 3, :3] = t
    m[:, 3, 3] = 1.0
    return m


def transform_points(points, m, eps=None):
    """Transform3d.transform_points: [x, y, z, 1] @ M, divided by w (clamped when eps given)."""
    n = m.shape[0]
    if points.dim() == 2:
        points = points[None].expand(n, -1, -1)
    ones = torch.ones(points.shape[:-1] + (1,))
    out = torch.bmm(torch.cat([points, ones], -1), m)
    denom = out[..., 3:]
    if eps is not None:
        sign = denom.sign() + (denom == 0.0).type_as(denom)
        denom = sign * torch.clamp(denom.abs(), eps)
    return out[..., :3] / denom


def fov_perspective_k(znear, zfar, fov_deg, aspect):
    """FoVPerspectiveCameras.compute_projection_matrix (degrees=True); returned transposed."""
    n = znear.shape[0]
    k = torch.zeros(n, 4, 4)
    fov = (math.pi / 180.0) * fov_deg
    tan_half = torch.tan(fov / 2)
    max_y = tan_half * znear
    min_y = -max_y
    max_x = max_y * aspect
    min_x = -max_x
    k[:, 0, 0] = 2.0 * znear / (max_x - min_x)
    k[:, 1, 1] = 2.0 * znear / (max_y - min_y)
    k[:, 0, 2] = (max_x + min_x) / (max_x - min_x)
    k[:, 1, 2] = (max_y + min_y) / (max_y - min_y)
    k[:, 3, 2] = 1.0
    k[:, 2, 2] = zfar / (zfar - znear)
    k[:, 2, 3] = -(zfar * znear) / (zfar - znear)
    return k.transpose(1, 2)


def fov_orthographic_k(znear, zfar, max_y, min_y, max_x, min_x, scale_xyz):
    """FoVOrthographicCameras.compute_projection_matrix; returned transposed."""
    n = znear.shape[0]
    k = torch.zeros(n, 4, 4)
    k[:, 0, 0] = (2.0 / (max_x - min_x)) * scale_xyz[:, 0]
    k[:, 1, 1] = (2.0 / (max_y - min_y)) * scale_xyz[:, 1]
    k[:, 0, 3] = -(max_x + min_x) / (max_x - min_x)
    k[:, 1, 3] = -(max_y + min_y) / (max_y - min_y)
    k[:, 3, 3] = 1.0
    k[:, 2, 2] = (1.0 / (zfar - znear)) * scale_xyz[:, 2]
    k[:, 2, 3] = -znear / (zfar - znear)
    return k.transpose(1, 2)


def sfm_perspective_k(focal, principal):
    """_get_sfm_calibration_matrix(orthographic=False); returned transposed."""
    n = focal.shape[0]
    k = torch.zeros(n, 4, 4)
    k[:, 0, 0] = focal[:, 0]
    k[:, 1, 1] = focal[:, 1]
    k[:, 0, 2] = principal[:, 0]
    k[:, 1, 2] = principal[:, 1]
    k[:, 3, 2] = 1.0
    k[:, 2, 3] = 1.0
    return k.transpose(1, 2)


def ndc_to_screen(image_hw, n, with_xyflip):
    """get_ndc_to_screen_transform (row-vector matrix)."""
    h, w = image_hw
    k = torch.zeros(n, 4, 4)
    s = min(h, w) / 2.0
    k[:, 0, 0] = s
    k[:, 1, 1] = s
    k[:, 0, 3] = -w / 2.0
    k[:, 1, 3] = -h / 2.0
    k[:, 2, 2] = 1.0
    k[:, 3, 3] = 1.0
    m = k.transpose(1, 2)
    if with_xyflip:
        flip = torch.diag(torch.tensor([-1.0, -1.0, 1.0, 1.0]))[None].expand(n, 4, 4)
        m = m @ flip
    return m


def screen_camera_ndc_transform(principal, image_hw):
    """PerspectiveCameras.get_ndc_camera_transform for in_ndc=False."""
    n = principal.shape[0]
    fix = torch.eye(4)[None].repeat(n, 1, 1)
    fix[:, :2, 3] = -2.0 * principal
    return fix.transpose(1, 2) @ torch.inverse(ndc_to_screen(image_hw, n, False))


rot, trans = look_at_view_transform(
    torch.tensor([2.5, 3.0]), torch.tensor([15.0, -25.0]), torch.tensor([30.0, 160.0]), True,
    torch.tensor([[0.1, 0.0, -0.1]]), torch.tensor([[0.0, 1.0, 0.0]]),
)
put("cam.R", rot)
put("cam.T", trans)
points = torch.tensor([[0.1, 0.2, 0.3], [-0.4, 0.5, -0.2], [0.3, -0.3, 0.6], [0.0, 0.0, 0.0]])
put("cam.points", points)
xy_depth = torch.tensor([[0.2, -0.1, 1.5], [-0.7, 0.4, 3.0], [0.05, 0.9, 2.2]])
put("cam.xy_depth", xy_depth)
w2v = world_to_view(rot, trans)
n_cams = rot.shape[0]

# (name, projection K (row form), is NDC, ndc transform for screen cameras)
screen_hw = (60, 80)
screen_principal = torch.tensor([[40.0, 30.0], [35.0, 33.0]])
cameras = {
    "fovpersp": (fov_perspective_k(torch.full((2,), 0.5), torch.full((2,), 20.0),
                                   torch.full((2,), 50.0), torch.full((2,), 1.3)), None),
    "fovortho": (fov_orthographic_k(torch.full((2,), 0.1), torch.full((2,), 10.0), torch.full((2,), 1.2),
                                    torch.full((2,), -0.8), torch.full((2,), 1.5), torch.full((2,), -1.0),
                                    torch.tensor([[1.1, 0.9, 1.3]]).expand(2, 3)), None),
    "persp_ndc": (sfm_perspective_k(torch.tensor([[1.7, 1.9], [2.1, 2.1]]),
                                    torch.tensor([[0.1, -0.05], [0.0, 0.2]])), None),
    "persp_screen": (sfm_perspective_k(torch.tensor([[120.0, 110.0], [90.0, 95.0]]), screen_principal),
                     screen_camera_ndc_transform(screen_principal, screen_hw)),
}
for name, (proj, to_ndc) in cameras.items():
    full = w2v @ proj
    put(f"{name}.projection", proj)
    put(f"{name}.full_projection", full)
    put(f"{name}.transform_points", transform_points(points, full))
    ndc_full = full if to_ndc is None else full @ to_ndc
    put(f"{name}.transform_points_ndc", transform_points(points, ndc_full))
    put(f"{name}.transform_points_screen",
        transform_points(transform_points(points, ndc_full), ndc_to_screen(screen_hw, n_cams, True)))
    # unproject_points(world_coordinates=True): scaled depth as each camera class computes it.
    d = xy_depth[None].expand(n_cams, -1, -1)
    if name == "fovpersp":
        s = (proj[:, 2, 2, None] * d[..., 2] + proj[:, 3, 2, None]) / d[..., 2]
    elif name == "fovortho":
        s = proj[:, 2, 2, None] * d[..., 2] + proj[:, 3, 2, None]
    else:
        s = 1.0 / d[..., 2]
    xy_s = torch.cat([d[..., :2], s[..., None]], -1)
    put(f"{name}.unproject_world", transform_points(xy_s, torch.inverse(full)))
    put(f"{name}.unproject_view", transform_points(xy_s, torch.inverse(proj)))
    if to_ndc is not None:
        put(f"{name}.unproject_world_from_ndc", transform_points(xy_s, torch.inverse(full @ to_ndc)))
    put(f"{name}.camera_center", torch.inverse(w2v)[:, 3, :3])


# ---- raysampling.py: full-grid rays -------------------------------------------------------
def ndc_grid(width, height):
    """NDCMultinomialRaysampler's range + MultinomialRaysampler's meshgrid, [H, W, 2]."""
    if width >= height:
        range_x, range_y = width / height, 1.0
    else:
        range_x, range_y = 1.0, height / width
    half_w, half_h = range_x / width, range_y / height
    ys = torch.linspace(range_y - half_h, -range_y + half_h, height)
    xs = torch.linspace(range_x - half_w, -range_x + half_w, width)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([x, y], dim=-1)


def xy_to_ray_bundle(unproject, xy_grid, min_depth, max_depth, n_pts, unit_directions):
    """_xy_to_ray_bundle without stratification; unproject(xy_depth [B, N, 3]) -> world."""
    b = xy_grid.shape[0]
    spatial = xy_grid.shape[1:-1]
    n = spatial.numel()
    zs = torch.linspace(min_depth, max_depth, n_pts)[None, None].expand(b, n, n_pts)
    xy = xy_grid.reshape(b, 1, n, 2).expand(b, 2, n, 2).reshape(b, 2 * n, 2)
    depth = torch.cat([torch.ones(b, n, 1), 2.0 * torch.ones(b, n, 1)], dim=1)
    world = unproject(torch.cat([xy, depth], dim=-1))
    p1, p2 = world[:, :n], world[:, n:]
    directions = p2 - p1
    origins = p1 - directions
    if unit_directions:
        directions = F.normalize(directions, dim=-1)
    return (origins.view(b, *spatial, 3), directions.view(b, *spatial, 3),
            zs.reshape(b, *spatial, n_pts), xy_grid)


def unprojector(name):
    proj, to_ndc = cameras[name]
    full = w2v @ proj if to_ndc is None else w2v @ proj @ to_ndc

    def run(xy_d):
        if name == "fovpersp":
            s = (proj[:, 2, 2, None] * xy_d[..., 2] + proj[:, 3, 2, None]) / xy_d[..., 2]
        elif name == "fovortho":
            s = proj[:, 2, 2, None] * xy_d[..., 2] + proj[:, 3, 2, None]
        else:
            s = 1.0 / xy_d[..., 2]
        return transform_points(torch.cat([xy_d[..., :2], s[..., None]], -1), torch.inverse(full))

    return run


RAY_W, RAY_H, RAY_P, RAY_MIN, RAY_MAX = 5, 3, 4, 1.0, 3.0
put("rays.config", [RAY_W, RAY_H, RAY_P, RAY_MIN, RAY_MAX])
grid = ndc_grid(RAY_W, RAY_H)[None].expand(n_cams, -1, -1, -1)
put("rays.grid_tall", ndc_grid(2, 4))
for name in cameras:
    for unit in (False, True):
        o, d, l, xys = xy_to_ray_bundle(unprojector(name), grid, RAY_MIN, RAY_MAX, RAY_P, unit)
        tag = f"rays.{name}" + (".unit" if unit else "")
        put(f"{tag}.origins", o)
        put(f"{tag}.directions", d)
        put(f"{tag}.lengths", l)
        put(f"{tag}.xys", xys)


# ---- camera_conversions.py: OpenCV ---------------------------------------------------------
def rotation_from_axis_angle(v):
    theta = v.norm()
    k = v / theta
    kx = torch.tensor([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return torch.eye(3) + math.sin(theta) * kx + (1 - math.cos(theta)) * kx @ kx


cv_r = torch.stack([rotation_from_axis_angle(torch.tensor(v)) for v in ([0.3, -0.2, 0.9], [-1.1, 0.4, 0.2])])
cv_t = torch.tensor([[0.2, -0.4, 3.5], [-1.0, 0.3, 5.0]])
cv_k = torch.tensor([[[500.0, 0.0, 320.5], [0.0, 510.0, 238.0], [0.0, 0.0, 1.0]],
                     [[250.0, 0.0, 95.0], [0.0, 240.0, 160.0], [0.0, 0.0, 1.0]]])
cv_hw = torch.tensor([[480.0, 640.0], [300.0, 200.0]])
put("opencv.R", cv_r)
put("opencv.tvec", cv_t)
put("opencv.K", cv_k)
put("opencv.image_size", cv_hw)
wh = cv_hw.flip(dims=(1,))
scale = wh.min(dim=1, keepdim=True)[0].expand(-1, 2) / 2.0
focal = torch.stack([cv_k[:, 0, 0], cv_k[:, 1, 1]], dim=-1) / scale
principal = -(cv_k[:, :2, 2] - wh / 2.0) / scale
r_p3d = cv_r.permute(0, 2, 1).clone()
t_p3d = cv_t.clone()
r_p3d[:, :, :2] *= -1
t_p3d[:, :2] *= -1
put("opencv.p3d_R", r_p3d)
put("opencv.p3d_T", t_p3d)
put("opencv.p3d_focal", focal)
put("opencv.p3d_principal", principal)
# Pixel coordinates of world points by OpenCV's formula: the Rust test checks that the converted
# cameras' transform_points_screen lands on them.
cam_pts = torch.einsum("bij,nj->bni", cv_r, points) + cv_t[:, None]
pix = torch.einsum("bij,bnj->bni", cv_k, cam_pts)
put("opencv.pixels", pix[..., :2] / pix[..., 2:])

os.makedirs(os.path.dirname(OUT), exist_ok=True)
with open(OUT, "w") as f:
    json.dump(golden, f, separators=(",", ":"))
print(f"wrote {len(golden)} arrays to {OUT} ({os.path.getsize(OUT)} bytes)")
