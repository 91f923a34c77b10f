#!/usr/bin/env python3
"""Golden data for vnr-geom's marching cubes: scikit-image's `measure.marching_cubes` on a small
signed distance field (a torus and a sphere, 48 x 40 x 44, anisotropic spacing).

Reproduces skimage/measure/_marching_cubes_lewiner.py (`marching_cubes`, method="lewiner",
the default): vertices are linear crossings on grid edges, in array-index order (axis 0, 1, 2)
times `spacing`, with no origin. The field is stored as int16 in units of 1/256 so Rust reads the
exact float32 values skimage saw, in a few dozen KB.

    /work/pyvenv/bin/python tools/golden/mc_skimage.py   # writes tools/golden/geom/mc/
"""
import os

import numpy as np
import skimage
from skimage import measure

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "geom", "mc")
DIMS = (48, 40, 44)
SPACING = (0.5, 0.25, 0.75)


def field():
    i, j, k = np.meshgrid(*[np.arange(d, dtype=np.float64) for d in DIMS], indexing="ij")
    x, y, z = i * SPACING[0], j * SPACING[1], k * SPACING[2]
    # Torus around the y axis through (12, 5, 15): major radius 6, minor 2.
    tx, ty, tz = x - 12.0, y - 5.0, z - 15.0
    torus = np.sqrt((np.sqrt(tx**2 + tz**2) - 6.0) ** 2 + ty**2) - 2.0
    # Sphere of radius 3.5 at (13, 5, 25), overlapping the torus.
    sphere = np.sqrt((x - 13.0) ** 2 + (y - 5.0) ** 2 + (z - 25.0) ** 2) - 3.5
    sdf = np.minimum(torus, sphere)
    quantised = np.clip(np.round(sdf * 256.0), -32767, 32767).astype(np.int16)
    return quantised


def main():
    os.makedirs(OUT, exist_ok=True)
    q = field()
    values = q.astype(np.float32) / np.float32(256.0)
    verts, faces, _normals, _ = measure.marching_cubes(values, level=0.0, spacing=SPACING)
    np.savez_compressed(
        os.path.join(OUT, "torus_sphere.npz"),
        values_q8=q,
        spacing=np.array(SPACING, dtype=np.float64),
        verts=verts.astype(np.float32),
        face_count=np.array([len(faces)], dtype=np.int64),
    )
    print(f"skimage {skimage.__version__}: {len(verts)} vertices, {len(faces)} faces")


if __name__ == "__main__":
    main()
