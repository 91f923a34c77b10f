"""Peak memory of one training step of the reference ConvDeconv v001 at 256^3 (batch 1,
48,271,745 parameters, L1, Adam 3e-4): PyTorch vs vnr, each in its own process.

Each side runs in a child process and is measured by the child's maximum resident set size
(os.wait4's ru_maxrss): the whole process, with the model, its gradients, Adam's two moments,
the activations kept for backward and the convolution workspaces. PyTorch runs the model of
train_step_peer.py (case convdeconv_v001_256_b1); ours runs
`cargo bench -p vnr-models --bench train_step_once -- convdeconv_v001_256_b1` (the same case as
the train_step bench, built here first). Heavy (several GB, minutes on 2 cores): run it once, at
a quiet moment; it is not part of any test suite.

Usage: /work/pyvenv/bin/python tools/bench/convdeconv_memory_peer.py [--threads N] [--steps N]
       [--exe target/release/deps/train_step_once-HASH]
Prints both peaks in MiB and ours / theirs (goal <= 1.2).
"""

import argparse
import json
import os
import subprocess
import sys
import time

from torch_peer import ROOT

CASE = "convdeconv_v001_256_b1"


def child_peak(cmd, env=None):
    """Runs cmd, returns (peak RSS in MiB, wall seconds); its output goes to stderr."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=sys.stderr)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{cmd[0]} failed with status {status}")
    return usage.ru_maxrss / 1024.0, time.perf_counter() - start  # ru_maxrss is in KiB


def torch_child(threads, steps):
    import torch

    import train_step_peer as peer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    _, opt, loss_fn = peer.CASES[CASE]()
    for i in range(steps):
        start = time.perf_counter()
        loss = peer.step(opt, loss_fn)
        print(f"pytorch step {i}: loss {loss:.6f}, {time.perf_counter() - start:.1f} s", file=sys.stderr)


def ours_executable():
    """Builds the train_step_once bench and returns its executable's path."""
    out = subprocess.run(
        ["cargo", "bench", "-p", "vnr-models", "--bench", "train_step_once", "--no-run",
         "--message-format=json"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("target", {}).get("name") == "train_step_once":
            if msg.get("executable"):
                return msg["executable"]
    sys.exit("cargo did not report the train_step_once executable")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--exe", help="our train_step_once executable (default: build it)")
    parser.add_argument("--torch-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torch_child:
        torch_child(args.threads, args.steps)
        return
    exe = args.exe or ours_executable()
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    here = os.path.dirname(os.path.abspath(__file__))
    theirs, t_theirs = child_peak(
        [sys.executable, os.path.join(here, "convdeconv_memory_peer.py"), "--torch-child",
         "--threads", str(args.threads), "--steps", str(args.steps)]
    )
    ours, t_ours = child_peak([exe, CASE, str(args.steps)], env=env)
    print(f"ConvDeconv v001 256^3, batch 1, {args.steps} training step(s), {args.threads} threads")
    print(f"pytorch peak RSS: {theirs:9.0f} MiB  ({t_theirs:.0f} s)")
    print(f"vnr peak RSS:     {ours:9.0f} MiB  ({t_ours:.0f} s)")
    print(f"vnr / pytorch:    {ours / theirs:9.2f}  (goal <= 1.2)")


if __name__ == "__main__":
    main()
