#!/usr/bin/python3
"""Writes seed corpora for the fuzz targets into fuzz/corpus/TARGET/ (git-ignored).

Seeds are small valid files made here (numpy, Debian's pyopenvdb, hand-rolled binvox/PLY/OBJ/PNG
writers) plus copies of the small shared fixtures when ../shared/fixtures exists. Run with the
system python (`/usr/bin/python3 fuzz/seeds/make_seeds.py`), which has numpy and pyopenvdb.
"""
import io
import os
import shutil
import struct
import sys
import zlib

import numpy as np

FUZZ = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(FUZZ, "corpus")
FIXTURES = os.environ.get("VNR_FIXTURES", os.path.join(FUZZ, "..", "..", "shared", "fixtures"))


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def copy_fixtures(target, sub, names):
    for n in names:
        p = os.path.join(FIXTURES, sub, n)
        if os.path.exists(p):
            with open(p, "rb") as f:
                put(target, "fixture-" + n, f.read())
        else:
            print(f"SKIPPED fixture {sub}/{n}", file=sys.stderr)


def binvox(version, dims, values, extra_header=b""):
    """values in file order (x, z, y), dims as the header writes them."""
    head = b"#binvox %d\n%sdim %d %d %d\ntranslate 0.5 -1 2\nscale 3.25\ndata\n" % (
        (version, extra_header) + tuple(dims))
    out = bytearray(head)
    i = 0
    flat = list(values)
    while i < len(flat):
        v, n = flat[i], 1
        while i + n < len(flat) and flat[i + n] == v and n < 255:
            n += 1
        out += bytes([v, n])
        i += n
    return bytes(out)


def binvox_seeds():
    rng = np.random.default_rng(1)
    put("binvox", "cube4-v1", binvox(1, (4, 4, 4), (rng.random(64) < 0.5).astype(int)))
    put("binvox", "noncubic-v1", binvox(1, (2, 3, 5), (rng.random(30) < 0.3).astype(int)))
    put("binvox", "v2-values", binvox(2, (3, 3, 3), rng.integers(0, 4, 27)))
    put("binvox", "comment-crlf",
        binvox(1, (2, 2, 2), [1] * 8, b"# a comment\r\n").replace(b"\n", b"\r\n", 4))
    put("binvox", "long-runs", binvox(1, (16, 16, 16), [0] * 2000 + [1] * 2096))
    copy_fixtures("binvox", "binvox", ["bunny.binvox", "chair.binvox", "suzanne.binvox"])


def npy_bytes(a, **kw):
    b = io.BytesIO()
    np.lib.format.write_array(b, a, **kw)
    return b.getvalue()


def npy_seeds():
    arrays = {
        "f32-2x3": np.arange(6, dtype="<f4").reshape(2, 3),
        "f64-be": np.linspace(0, 1, 5).astype(">f8"),
        "f16": np.array([1.5, -2, np.inf], dtype="<f2"),
        "bool": np.array([[True, False], [False, True]]),
        "u8-3d": np.arange(24, dtype="u1").reshape(2, 3, 4),
        "i8": np.array([-1, 2], dtype="i1"),
        "u16-be": np.array([1, 65535], dtype=">u2"),
        "i16": np.array([-300], dtype="<i2"),
        "u32": np.array([7, 8, 9], dtype="<u4"),
        "i32-fortran": np.asfortranarray(np.arange(12, dtype="<i4").reshape(3, 4)),
        "i64": np.array([-(2 ** 40)], dtype="<i8"),
        "scalar": np.array(3.0, dtype="<f4"),
        "empty": np.zeros((0, 3), dtype="<f4"),
    }
    for name, a in arrays.items():
        put("npy", name, npy_bytes(a))
    put("npy", "v2-header", npy_bytes(np.arange(4, dtype="<f4"), version=(2, 0)))
    put("npy", "v3-header", npy_bytes(np.arange(4, dtype="<f4"), version=(3, 0)))
    copy_fixtures("npy", "npz", ["c-order.npy", "f-order.npy", "candle-test.npy"])

    for compressed in (False, True):
        b = io.BytesIO()
        save = np.savez_compressed if compressed else np.savez
        save(b, x=arrays["f32-2x3"], y=arrays["i32-fortran"], flags=arrays["bool"])
        put("npz", "savez" + ("-compressed" if compressed else ""), b.getvalue())
    b = io.BytesIO()
    np.savez(b, np.arange(3, dtype="<i8"))
    put("npz", "savez-positional", b.getvalue())
    copy_fixtures("npz", "npz", ["candle-test.npz", "compressed.npz", "uncompressed.npz",
                                 "nerfstudio-object-arrays.npz"])


def vdb_seeds():
    try:
        import pyopenvdb as vdb
    except ImportError:
        print("SKIPPED vdb seeds: pyopenvdb missing", file=sys.stderr)
        return
    import tempfile
    tmp = tempfile.mkdtemp()

    def save(name, grids):
        p = os.path.join(tmp, name)
        vdb.write(p, grids=grids)
        with open(p, "rb") as f:
            put("vdb", name, f.read())

    g = vdb.FloatGrid(background=0.5)
    g.name = "one"
    g.transform = vdb.createLinearTransform(voxelSize=0.25)
    acc = g.getAccessor()
    acc.setValueOn((1, 2, 3), 7.0)
    acc.setValueOn((-9, 0, 4), -1.0)
    save("float-two-voxels.vdb", [g])

    h = g.deepCopy()
    h.name = "half"
    h.saveFloatAsHalf = True
    save("float-half.vdb", [h])

    t = vdb.FloatGrid()
    t.name = "tile"
    t.fill((0, 0, 0), (15, 15, 15), 2.0, True)
    t.fill((200, 0, 0), (327, 127, 127), 3.0, True)
    save("float-tiles.vdb", [t])

    ls = vdb.createLevelSetSphere(radius=3.0, center=(0, 0, 0), voxelSize=1.0, halfWidth=2.0)
    ls.name = "ls"
    save("levelset-small.vdb", [ls])

    b = vdb.BoolGrid()
    b.name = "flags"
    b.getAccessor().setValueOn((3, 3, 3), True)
    b.getAccessor().setValueOn((4, 3, 3), False)
    save("bool.vdb", [b])

    v = vdb.Vec3SGrid()
    v.name = "vel"
    v.getAccessor().setValueOn((0, 1, 2), (1.0, 2.0, 3.0))
    save("vec3s.vdb", [v])

    save("three-grids.vdb", [g, b, v])
    shutil.rmtree(tmp)
    copy_fixtures("vdb", "vdb", ["gaffer-sphere-blosc.vdb", "cortex-points.vdb"])


def ply_seeds():
    verts = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)]
    faces = [(0, 1, 2), (0, 1, 3), (1, 2, 3, 0)]

    def header(fmt, vtype="float", itype="int"):
        return (f"ply\nformat {fmt} 1.0\ncomment seed\nelement vertex {len(verts)}\n"
                f"property {vtype} x\nproperty {vtype} y\nproperty {vtype} z\n"
                f"element face {len(faces)}\nproperty list uchar {itype} vertex_indices\n"
                "end_header\n").encode()

    body = "".join(f"{x} {y} {z}\n" for x, y, z in verts)
    body += "".join(f"{len(f)} " + " ".join(map(str, f)) + "\n" for f in faces)
    put("mesh_ply", "ascii", header("ascii") + body.encode())
    for fmt, e in (("binary_little_endian", "<"), ("binary_big_endian", ">")):
        out = header(fmt, "double", "uint")
        for v in verts:
            out += struct.pack(e + "3d", *v)
        for f in faces:
            out += struct.pack(e + "B%dI" % len(f), len(f), *f)
        put("mesh_ply", fmt, out)
    cloud = b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nproperty float z\nend_header\n1 2 3\n"
    put("mesh_ply", "point-cloud", cloud)


def obj_seeds():
    put("mesh_obj", "tet", b"# tet\nv 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\nf 1 2 4\nf 2 3 4 1\n")
    put("mesh_obj", "uv-normals",
        b"o a\nv 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\nvn 0 0 1\n"
        b"f 1/1/1 2/2/1 3/3/1\ng b\nv 5 5 5\nf -1 -2 -3\nusemtl m\nmtllib x.mtl\n")
    copy_fixtures("mesh_obj", "meshes", ["suzanne.obj"])


def png(width, height, color_type, depth, rows, extra=b""):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    raw = b"".join(b"\0" + r for r in rows)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def png_seeds():
    put("png", "grey8", png(3, 2, 0, 8, [b"\x00\x80\xff", b"\x10\x20\x30"]))
    put("png", "grey1", png(9, 1, 0, 1, [b"\xaa\x80"]))
    put("png", "rgb8", png(2, 2, 2, 8, [bytes(range(6)), bytes(range(6, 12))]))
    put("png", "rgba16", png(1, 2, 6, 16, [bytes(range(8)), bytes(range(8, 16))]))
    put("png", "grey-alpha8", png(2, 1, 4, 8, [b"\x10\xff\x20\x00"]))
    plte = struct.pack(">I", 6) + b"PLTE" + b"\xff\x00\x00\x00\xff\x00"
    plte += struct.pack(">I", zlib.crc32(b"PLTE\xff\x00\x00\x00\xff\x00"))
    trns = struct.pack(">I", 1) + b"tRNS\x80" + struct.pack(">I", zlib.crc32(b"tRNS\x80"))
    put("png", "palette-trns", png(2, 1, 3, 8, [b"\x00\x01"], plte + trns))
    copy_fixtures("png", "rendernet", ["ply80024_p294_t105_r3.3_albedo.png"])


if __name__ == "__main__":
    binvox_seeds()
    npy_seeds()
    vdb_seeds()
    ply_seeds()
    obj_seeds()
    png_seeds()
    for t in sorted(os.listdir(CORPUS)):
        files = os.listdir(os.path.join(CORPUS, t))
        size = sum(os.path.getsize(os.path.join(CORPUS, t, f)) for f in files)
        print(f"{t}: {len(files)} seeds, {size} bytes")
