#!/usr/bin/python3
"""Times OpenVDB's own ray tracer (`/usr/bin/vdb_render`, Debian's OpenVDB 10) on the scenes of
crates/vnr-render/benches/reference.rs and prints the ratio ours/vdb_render when given our
medians (release build: `cargo bench -p vnr-render --bench reference`).

Scenes (same cameras as the Rust bench: orbit azimuth 30, elevation 20, 40 degree field of view,
256x256; vdb_render's -fov is horizontal, equal to our vertical one for square images):
  cortex: cortex-sphere.vdb level set, radius 10, vdb_render's diffuse shader.
  fog:    a 100^3 fog volume, every voxel active (density 0.05 + 0.95 * max(0, 1 - r) with r the
          distance from the cube centre in half-widths, the formula of the Rust bench's
          `fog_density`), voxel size 0.02, voxel (0,0,0) at index (-50,-50,-50), radius 4,
          vdb_render's default fog parameters (the defaults of our FogSettings).

vdb_render's own `-v` timing of the ray tracing (not the file reading) is used, median of
--repeats runs, using all CPUs as our renderer does (--cpus 1 against RAYON_NUM_THREADS=1).

Usage: vdb_render_peer.py [FIXTURE] [--repeats N] [--cpus N] [--ours-cortex-ms X]
       [--ours-fog-ms Y] [--keep DIR]   (keeps the fog .vdb and vdb_render's PNGs in DIR)
"""
import argparse
import math
import os
import re
import statistics
import subprocess
import tempfile

import numpy as np
import pyopenvdb as vdb

VDB_RENDER = "/usr/bin/vdb_render"


def orbit(azimuth, elevation, radius):
    """PyTorch3D's camera position (look_at_view_transform), at = origin."""
    a, e = math.radians(azimuth), math.radians(elevation)
    return (radius * math.cos(e) * math.sin(a), radius * math.sin(e), radius * math.cos(e) * math.cos(a))


def fog_grid():
    n = 100
    idx = (np.arange(n, dtype=np.float64) - 49.5) / 49.5
    x, y, z = np.meshgrid(idx, idx, idx, indexing="ij")
    r = np.sqrt(x * x + y * y + z * z)
    density = (0.05 + 0.95 * np.maximum(0.0, 1.0 - r)).astype(np.float32)
    grid = vdb.FloatGrid()
    grid.copyFromArray(density, ijk=(-50, -50, -50), tolerance=0.0)
    grid.transform = vdb.createLinearTransform(voxelSize=0.02)
    grid.gridClass = vdb.GridClass.FOG_VOLUME
    grid.name = "density"
    assert grid.activeVoxelCount() == n ** 3, grid.activeVoxelCount()
    return grid


def render_ms(path, out_png, eye, repeats, cpus):
    cmd = [
        VDB_RENDER, path, out_png, "-res", "256x256", "-fov", "40",
        "-translate", ",".join(f"{c:.17g}" for c in eye), "-lookat", "0,0,0", "-up", "0,1,0", "-v",
        "-cpus", str(cpus),
    ]
    times = []
    for _ in range(repeats + 1):
        log = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        # "vdb_render: ...completed in 0.0361 sec" follows "ray-tracing"; the first is reading.
        tracing = log[log.index("ray-tracing"):]
        times.append(float(re.search(r"completed in ([0-9.e+-]+) sec", tracing).group(1)) * 1e3)
    return statistics.median(times[1:])


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default_dir = os.environ.get("VNR_FIXTURES", os.path.join(here, "../../../shared/fixtures"))
    ap = argparse.ArgumentParser()
    ap.add_argument("fixture", nargs="?", default=os.path.join(default_dir, "vdb/cortex-sphere.vdb"))
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--ours-cortex-ms", type=float)
    ap.add_argument("--ours-fog-ms", type=float)
    ap.add_argument("--cpus", type=int, default=0, help="vdb_render -cpus (0: all, like rayon)")
    ap.add_argument("--keep")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or tmp
        os.makedirs(out, exist_ok=True)
        fog_path = os.path.join(out, "fog-1m.vdb")
        vdb.write(fog_path, grids=[fog_grid()])
        results = {
            "cortex": render_ms(args.fixture, os.path.join(out, "cortex.png"), orbit(30, 20, 10), args.repeats, args.cpus),
            "fog": render_ms(fog_path, os.path.join(out, "fog.png"), orbit(30, 20, 4), args.repeats, args.cpus),
        }
    ours = {"cortex": args.ours_cortex_ms, "fog": args.ours_fog_ms}
    for name, theirs in results.items():
        line = f"vdb_render {name} 256x256: {theirs:.1f} ms"
        if ours[name] is not None:
            line += f"  ours: {ours[name]:.1f} ms  ratio ours/vdb_render: {ours[name] / theirs:.2f}x"
        print(line)


if __name__ == "__main__":
    main()
