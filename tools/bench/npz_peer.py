#!/usr/bin/env python3
"""numpy peer of `cargo bench -p vnr-formats --bench npz_chunks`.

Times `numpy.load(f)["arr_0"]` over the same VoxelNeuralRender chunk files the Rust bench
streams (4 chunks x 100 samples: 64^3 f32 volumes + 256x256 f64 images), and prints the
throughput ratio ours/numpy from the `rust_throughput.json` the Rust bench leaves beside them.

Usage:
    python3 tools/bench/npz_peer.py [DIR] [--runs 7]

DIR defaults to $VNR_BENCH_DIR, else target/npz-chunks-bench. Missing chunk files are
generated with `numpy.savez` (the same contents the Rust bench writes), so either side can
run first. Ratios compare medians of --runs timed passes (files in the page cache). Peak
memory: run under `/usr/bin/time -v` and read "Maximum resident set size"; our streaming peak
is measured with `crates/vnr-formats/examples/stream_chunks.rs` the same way.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

CHUNKS, SAMPLES, SIDE, IMAGE = 4, 100, 64, 256
SAMPLE_BYTES = SIDE**3 * 4 + IMAGE * IMAGE * 8


def chunk_paths(d: Path, c: int):
    return d / f"volume_samples_{c:03d}.npz", d / f"image_samples_{c:03d}.npz"


def ensure_dataset(d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for c in range(CHUNKS):
        vol_path, img_path = chunk_paths(d, c)
        if vol_path.is_file() and img_path.is_file():
            continue
        ids = np.arange(c * SAMPLES, (c + 1) * SAMPLES)
        base = np.arange(SIDE**3, dtype=np.float32)
        vols = np.stack([base * np.float32(1.0 / (i + 1)) for i in ids]).reshape(SAMPLES, 1, SIDE, SIDE, SIDE)
        imgs = np.stack([np.arange(IMAGE * IMAGE, dtype=np.float64) * 1e-3 + i for i in ids])
        np.savez(vol_path, vols)
        np.savez(img_path, imgs.reshape(SAMPLES, IMAGE, IMAGE, 1))


def decode_all(d: Path) -> int:
    elements = 0
    for c in range(CHUNKS):
        for path in chunk_paths(d, c):
            with np.load(path) as z:
                elements += z["arr_0"].size
    return elements


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_dir = os.environ.get("VNR_BENCH_DIR") or str(Path(__file__).resolve().parents[2] / "target" / "npz-chunks-bench")
    parser.add_argument("dir", nargs="?", default=default_dir)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    d = Path(args.dir)
    ensure_dataset(d)

    decode_all(d)  # warm the page cache, as the Rust bench does
    seconds = sorted(timed(lambda: decode_all(d)) for _ in range(args.runs))
    median = seconds[len(seconds) // 2]
    samples = CHUNKS * SAMPLES
    numpy_sps = samples / median
    print(f"numpy {np.__version__}: np.load decode of {samples} samples, median of {args.runs}: "
          f"{median:.3f} s = {numpy_sps:.1f} samples/s ({samples / seconds[-1]:.1f}..{samples / seconds[0]:.1f}), "
          f"{samples * SAMPLE_BYTES / median / 1e9:.3f} GB/s")

    ours_path = d / "rust_throughput.json"
    if not ours_path.is_file():
        print(f"no {ours_path}: run `cargo bench -p vnr-formats --bench npz_chunks` for the ratio")
        return 0
    ours = json.loads(ours_path.read_text())
    for kind in ("decode", "stream"):
        sps = ours[f"{kind}_samples_per_s"]
        spread = f"({ours[f'{kind}_samples_per_s_min']:.1f}..{ours[f'{kind}_samples_per_s_max']:.1f})"
        print(f"ours {kind:6}: median {sps:.1f} samples/s {spread}, {ours[f'{kind}_bytes_per_s'] / 1e9:.3f} GB/s, "
              f"ratio ours/numpy (medians) = {sps / numpy_sps:.2f}x")
    return 0


def timed(f) -> float:
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
