#!/usr/bin/env python3
"""Golden SSIM and PSNR values for vnr-train's metrics, computed by scikit-image.

Reproduces skimage/metrics/_structural_similarity.py (structural_similarity with
gaussian_weights=True, sigma=1.5, K1=0.01, K2=0.03: Wang et al. 2004) and
skimage/metrics/simple_metrics.py (peak_signal_noise_ratio) on small deterministic images.

Writes tools/golden/train/metrics_skimage.json. Run with the project venv:
    /work/pyvenv/bin/python tools/golden/metrics_skimage.py
"""
import json
import math
import os

import numpy as np
import skimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def image(shape, seed, scale):
    # A smooth pattern plus deterministic noise, so SSIM is neither 0 nor 1.
    n = math.prod(shape)
    idx = np.arange(n, dtype=np.float64)
    noise = (np.sin(seed * 12.9898 + idx * 78.233) * 43758.5453) % 1.0
    grid = np.indices(shape).sum(axis=0).astype(np.float64).reshape(-1)
    v = 0.5 + 0.3 * np.sin(grid * 0.37 + seed) + 0.2 * (noise - 0.5)
    return (np.clip(v, 0.0, 1.0) * scale).reshape(shape)


def case(name, shape, channel_axis, data_range):
    a = image(shape, 1, data_range)
    b = np.clip(0.7 * a + 0.6 * image(shape, 2, data_range) - 0.1 * data_range, 0, data_range)
    out = {"name": name, "shape": list(shape), "data_range": data_range,
           "a": a.reshape(-1).tolist(), "b": b.reshape(-1).tolist(),
           "psnr": peak_signal_noise_ratio(a, b, data_range=data_range)}
    for sample_cov in (False, True):
        out["ssim_sample_covariance" if sample_cov else "ssim"] = structural_similarity(
            a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=sample_cov,
            data_range=data_range, channel_axis=channel_axis)
    return out


def main():
    cases = [
        # Grey [H, W], not square.
        case("grey_24x20", (24, 20), None, 1.0),
        # RGB as [C, H, W] (channel_axis=0), 8-bit range.
        case("rgb_3x16x18_range255", (3, 16, 18), 0, 255.0),
    ]
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train", "metrics_skimage.json")
    with open(out, "w") as f:
        json.dump({"skimage": skimage.__version__, "cases": cases}, f)
        f.write("\n")
    print(f"wrote {out} ({len(cases)} cases, skimage {skimage.__version__})")


if __name__ == "__main__":
    main()
