"""Signed distance side by side: libigl (fast winding number sign) and trimesh, on the bunny.

Compare with `VNR_SDF_BENCH_ONCE=1 cargo bench -p vnr-geom --bench signed_distance` (vnr; wall
and CPU time) or `cargo bench -p vnr-geom --bench signed_distance sdf/bunny_winding`
(criterion), which query the same points: POINTS points in the bounding box (of the vertices
used by faces) grown by 10 % per side, point i at lo + (hi - lo) * (1.2 f - 0.1),
f = ((i * p_k) mod 10007) / 10007, p = (7919, 104729, 1299709).

`--deepsdf-points N` also times libigl on N points drawn as DeepSDF draws its samples (mesh
normalised to the unit sphere; 94 % area-weighted surface points perturbed with variance 0.005
or 0.0005, 6 % uniform in [-1, 1]^3): the distribution of vnr's `deepsdf_points_*` cases (the
same distribution, not the same random numbers).

`--vnr` also runs vnr's bench right after libigl (`VNR_SDF_BENCH_ONCE`, release build through
cargo, fixtures from `VNR_FIXTURES` or `shared/fixtures`) and prints vnr ÷ libigl for the box
points (vnr's `bunny_winding`: 100,000 points) and, with `--deepsdf-points`, the DeepSDF points
(vnr's `deepsdf_points_signed`: 500,000 points), wall and per CPU-second. Rates are per point,
so the libigl point counts need not equal vnr's; use `--points 100000 --deepsdf-points 500000`
for like-for-like batches.

Usage: /work/pyvenv/bin/python tools/bench/sdf_peer.py [--points N] [--trimesh-points N]
       [--deepsdf-points N] [--repeat N] [--mesh PATH] [--vnr]
Needs `pip install libigl trimesh rtree` in the venv. libigl runs on its own thread pool (all
cores); trimesh is single-threaded numpy. On a shared machine compare the points per CPU-second
(process user + system time), which do not depend on the other load; the load average is
printed for the record.
"""

import argparse
import os
import pathlib
import re
import statistics
import subprocess
import time

import igl
import numpy as np
import trimesh

HERE = pathlib.Path(__file__).resolve().parent
DEFAULT_MESH = HERE.parents[2] / "shared" / "fixtures" / "meshes" / "stanford-bunny.obj"


def bench_points(vertices, faces, n):
    used = vertices[np.unique(faces)]
    lo, hi = used.min(axis=0), used.max(axis=0)
    i = np.arange(n, dtype=np.int64)[:, None]
    primes = np.array([7919, 104729, 1299709], dtype=np.int64)[None, :]
    f = ((i * primes) % 10007).astype(np.float32) / np.float32(10007.0)
    return (lo + (hi - lo) * (1.2 * f - 0.1)).astype(np.float32)


def deepsdf_points(vertices, faces, n, seed=0):
    """`n` points distributed as DeepSDF's samples of the mesh, in its normalised space."""
    rng = np.random.default_rng(seed)
    used = vertices[np.unique(faces)]
    centre = 0.5 * (used.min(axis=0) + used.max(axis=0))
    scale = 1.0 / (1.03 * np.linalg.norm(used - centre, axis=1).max())
    v = (vertices - centre) * scale
    a, b, c = v[faces[:, 0]], v[faces[:, 1]], v[faces[:, 2]]
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    near = (47 * n // 50) // 2
    tri = rng.choice(len(faces), size=near, p=area / area.sum())
    r1 = np.sqrt(rng.random((near, 1)))
    r2 = rng.random((near, 1))
    surface = (1 - r1) * a[tri] + r1 * (1 - r2) * b[tri] + r1 * r2 * c[tri]
    samples = [surface + rng.normal(0, np.sqrt(var), surface.shape) for var in (0.005, 0.0005)]
    uniform = rng.uniform(-1, 1, (n - 2 * near, 3))
    return v, np.concatenate(samples + [uniform])


def timed(name, n, run, repeat):
    run()  # warm-up: builds trees, fills caches
    times, cpus = [], []
    for _ in range(repeat):
        start, cpu = time.perf_counter(), time.process_time()
        out = run()
        times.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    best = min(times)
    # Points per CPU-second (all threads) does not depend on other load on a shared machine.
    print(f"{name:40s} {n:8d} points  median {statistics.median(times) * 1e3:9.1f} ms"
          f"  best {best * 1e3:9.1f} ms  {n / best / 1e3:9.1f} k points/s"
          f"  {n / min(cpus) / 1e3:9.1f} k points/cpu-s")
    return out, (n / best, n / min(cpus))


def vnr_rates(case):
    """Best (points/s, points/cpu-s) of vnr's bench case `case` over its three runs."""
    repo = HERE.parents[1]
    env = dict(os.environ)
    env.setdefault("VNR_FIXTURES", str(repo.parent / "shared" / "fixtures"))
    env["VNR_SDF_BENCH_ONCE"] = case
    out = subprocess.run(
        ["cargo", "bench", "-q", "-p", "vnr-geom", "--bench", "signed_distance"],
        cwd=repo, env=env, check=True, capture_output=True, text=True).stdout
    rows = re.findall(rf"^{case}\s+\d+ points.*?\(\s*(\d+) points/s\).*?\(\s*(\d+) points/cpu-s\)",
                      out, re.M)
    if not rows:
        raise RuntimeError(f"no {case} figures in vnr's bench output:\n{out}")
    print(out.strip())
    return max(float(w) for w, _ in rows), max(float(c) for _, c in rows)


def ratio(what, vnr, igl):
    print(f"vnr / libigl, {what:15s}: wall {vnr[0] / igl[0]:5.2f}x"
          f" ({vnr[0] / 1e3:7.1f}k vs {igl[0] / 1e3:7.1f}k points/s),"
          f" per CPU-s {vnr[1] / igl[1]:5.2f}x ({vnr[1] / 1e3:7.1f}k vs {igl[1] / 1e3:7.1f}k)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mesh", type=pathlib.Path, default=DEFAULT_MESH)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--trimesh-points", type=int, default=1_000)
    parser.add_argument("--deepsdf-points", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--vnr", action="store_true",
                        help="also run vnr's bench and print the speed ratios")
    args = parser.parse_args()
    print("load average (1, 5, 15 min): %.2f %.2f %.2f" % os.getloadavg())

    v, f = igl.read_triangle_mesh(str(args.mesh))
    v = v.astype(np.float64)
    points = bench_points(v, f, args.points).astype(np.float64)

    fwn = igl.SIGNED_DISTANCE_TYPE_FAST_WINDING_NUMBER
    s_igl, igl_box = timed("libigl signed_distance (FWN)", len(points),
                           lambda: igl.signed_distance(points, v, f, sign_type=fwn)[0],
                           args.repeat)
    if args.vnr:
        ratio("box points", vnr_rates("bunny_winding"), igl_box)

    if args.deepsdf_points > 0:
        v_unit, near = deepsdf_points(v, f, args.deepsdf_points)
        _, igl_near = timed("libigl signed_distance (FWN), deepsdf", len(near),
                            lambda: igl.signed_distance(near, v_unit, f, sign_type=fwn)[0],
                            args.repeat)
        if args.vnr:
            ratio("DeepSDF points", vnr_rates("deepsdf_points_signed"), igl_near)

    mesh = trimesh.Trimesh(v, f, process=False)
    few = points[: args.trimesh_points]
    s_tri, _ = timed("trimesh proximity.signed_distance", len(few),
                     lambda: trimesh.proximity.signed_distance(mesh, few), 1)
    # trimesh is positive inside, libigl (and vnr) positive outside.
    agree = np.mean(np.sign(-s_tri) == np.sign(s_igl[: len(few)]))
    print(f"sign agreement libigl vs trimesh on {len(few)} points: {agree * 100:.2f} %")


if __name__ == "__main__":
    main()
