"""Golden signed distances on the spot fixture from trimesh, for crates/vnr-geom/tests/signed_distance.rs.

Reproduces `trimesh.proximity.signed_distance` (trimesh/proximity.py: closest point on the
triangles for the magnitude, `mesh.contains` ray tests for the sign, POSITIVE INSIDE). The file
stores the sign flipped to vnr's convention (positive outside), so the Rust test compares directly.

Usage: /work/pyvenv/bin/python tools/golden/sdf_trimesh.py [FIXTURES_DIR]
Writes tools/golden/geom/spot_trimesh_sdf.npz:
  points  float32 [N, 3]  query points (mesh units)
  sdf     float64 [N]     signed distance, positive outside
Made with trimesh 4.x + rtree, numpy; deterministic (seeded).
"""

import pathlib
import sys

import numpy as np
import trimesh

HERE = pathlib.Path(__file__).resolve().parent
FIXTURES = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else HERE.parents[2] / "shared" / "fixtures")


def main():
    mesh = trimesh.load(FIXTURES / "meshes" / "spot.obj", force="mesh")
    # spot.obj splits vertices along UV seams; merged it is closed (2,930 positions).
    mesh.merge_vertices(merge_tex=True, merge_norm=True)
    assert mesh.is_watertight, "spot.obj should be closed once seams are merged"

    rng = np.random.default_rng(20240611)
    surface, _ = trimesh.sample.sample_surface(mesh, 1500, seed=7)
    near = surface + rng.normal(0.0, 0.03, size=surface.shape)
    lo, hi = mesh.bounds
    pad = 0.2 * (hi - lo)
    uniform = rng.uniform(lo - pad, hi + pad, size=(1500, 3))
    points = np.concatenate([near, uniform]).astype(np.float32)

    # Distances from the float32 points, evaluated in float64; trimesh is positive inside.
    sdf = -trimesh.proximity.signed_distance(mesh, points.astype(np.float64))

    out = HERE / "geom" / "spot_trimesh_sdf.npz"
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, points=points, sdf=sdf.astype(np.float64))
    print(f"wrote {out}: {len(points)} points, {np.sum(sdf < 0)} inside")


if __name__ == "__main__":
    main()
