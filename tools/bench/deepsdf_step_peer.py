"""DeepSDF training step side by side: PyTorch vs `vnr train deepsdf`.

One step = one batch of 16,384 SDF samples (1 scene x SamplesPerScene) through the reference
decoder (latent 256, 8 x 512, weight norm, dropout 0.2, latent re-injected at layer 4), the
clamped L1 loss with the code regularisation, backward, and Adam on the two groups (decoder,
latent codes with max-norm 1).

PyTorch: the same model written here after DeepSDF's `deep_sdf_decoder.py` and
`train_deep_sdf.py`, timed per step (median of --steps after warm-up).
vnr: `target/release/vnr train deepsdf` on a generated experiment (random sphere samples) for
--steps epochs of one step each; the per-step time is the median difference of the `seconds`
field of consecutive `log.jsonl` records (so start-up and loading are not counted).

Both sides also report CPU seconds per step (all threads): PyTorch's per-step process time
(median), vnr's whole-process CPU time divided by its steps (start-up and loading included, so
an upper bound). On a shared machine the wall times are noisy; the CPU times much less so.
`vnr` is expected to make the allocator choice of `vnr_train::allocator::keep_freed_memory`
in its `main`; `MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_` in the environment do the
same for a binary that does not.

Usage: /work/pyvenv/bin/python tools/bench/deepsdf_step_peer.py [--steps N] [--threads N]
       [--vnr PATH]   (build first: cargo build --release -p vnr-cli)
"""

import argparse
import json
import pathlib
import resource
import statistics
import subprocess
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parents[2]
LATENT = 256
DIMS = [512] * 8
SAMPLES = 16384
SPECS = {
    "DataSource": "data",
    "TrainSplit": "split.json",
    "NetworkArch": "deep_sdf_decoder",
    "NetworkSpecs": {
        "dims": DIMS,
        "dropout": list(range(8)),
        "dropout_prob": 0.2,
        "norm_layers": list(range(8)),
        "latent_in": [4],
        "xyz_in_all": False,
        "use_tanh": False,
        "latent_dropout": False,
        "weight_norm": True,
    },
    "CodeLength": LATENT,
    "SnapshotFrequency": 100000,
    "LearningRateSchedule": [
        {"Type": "Step", "Initial": 0.0005, "Interval": 500, "Factor": 0.5},
        {"Type": "Step", "Initial": 0.001, "Interval": 500, "Factor": 0.5},
    ],
    "SamplesPerScene": SAMPLES,
    "ScenesPerBatch": 1,
    "ClampingDistance": 0.1,
    "CodeRegularization": True,
    "CodeRegularizationLambda": 1e-4,
    "CodeBound": 1.0,
}


class Decoder(nn.Module):
    """DeepSDF's decoder with the reference specs (weight norm, dropout, latent_in [4])."""

    def __init__(self):
        super().__init__()
        widths = [LATENT + 3] + DIMS + [1]
        self.layers = nn.ModuleList()
        for layer in range(len(widths) - 1):
            out = widths[layer + 1] - (LATENT + 3 if layer + 1 == 4 else 0)
            lin = nn.Linear(widths[layer], out)
            if layer < 8:
                lin = nn.utils.weight_norm(lin)
            self.layers.append(lin)

    def forward(self, x):
        inp = x
        for layer, lin in enumerate(self.layers):
            if layer == 4:
                x = torch.cat([x, inp], 1)
            x = lin(x)
            if layer < 8:
                x = F.dropout(F.relu(x), p=0.2, training=self.training)
        return torch.tanh(x)


def torch_steps(steps):
    torch.manual_seed(0)
    decoder = Decoder()
    codes = nn.Embedding(1, LATENT, max_norm=1.0)
    nn.init.normal_(codes.weight, 0.0, 1.0 / LATENT**0.5)
    opt = torch.optim.Adam(
        [{"params": decoder.parameters(), "lr": 5e-4}, {"params": codes.parameters(), "lr": 1e-3}]
    )
    xyz = torch.rand(SAMPLES, 3) * 2 - 1
    sdf = xyz.norm(dim=1, keepdim=True) - 0.5
    idx = torch.zeros(SAMPLES, dtype=torch.long)
    times, cpu = [], []
    for step in range(steps + 2):
        start, start_cpu = time.perf_counter(), time.process_time()
        opt.zero_grad()
        z = codes(idx)
        pred = decoder(torch.cat([z, xyz], 1)).clamp(-0.1, 0.1)
        loss = (pred - sdf.clamp(-0.1, 0.1)).abs().sum() / SAMPLES
        loss = loss + 1e-4 * min(1, (step + 1) / 100) * z.norm(dim=1).sum() / SAMPLES
        loss.backward()
        opt.step()
        if step >= 2:
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    return statistics.median(times), statistics.median(cpu)


def vnr_steps(vnr, steps):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        rng = np.random.default_rng(0)
        p = rng.uniform(-1, 1, (200000, 3)).astype(np.float32)
        d = (np.linalg.norm(p, axis=1) - 0.5).astype(np.float32)
        rows = np.concatenate([p, d[:, None]], 1)
        (tmp / "data" / "SdfSamples").mkdir(parents=True)
        np.savez(tmp / "data" / "SdfSamples" / "sphere.npz", pos=rows[d > 0], neg=rows[d <= 0])
        (tmp / "split.json").write_text(json.dumps({"bench": {"spheres": ["sphere"]}}))
        (tmp / "specs.json").write_text(json.dumps(dict(SPECS, NumEpochs=steps + 2)))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(
            [str(vnr), "train", "deepsdf", "specs.json", "--out", "run", "--quiet"],
            cwd=tmp,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        records = [json.loads(line) for line in (tmp / "run" / "log.jsonl").read_text().splitlines()]
        seconds = [r["seconds"] for r in records if r.get("phase", "train") == "train"]
        wall = statistics.median(b - a for a, b in zip(seconds[1:], seconds[2:]))
        return wall, cpu / (steps + 2)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vnr", default=str(ROOT / "target" / "release" / "vnr"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t, t_cpu = torch_steps(args.steps)
    print(
        f"pytorch {torch.__version__} ({args.threads} threads): {t * 1e3:8.1f} ms/step,"
        f" {t_cpu:6.2f} CPU s/step"
    )
    v, v_cpu = vnr_steps(args.vnr, args.steps)
    print(
        f"vnr train deepsdf:                  {v * 1e3:8.1f} ms/step, {v_cpu:6.2f} CPU s/step"
        f" (at most)  ({t / v:.2f}x pytorch's speed)"
    )


if __name__ == "__main__":
    main()
