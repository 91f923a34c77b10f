#!/usr/bin/env python3
"""Golden values for vnr-train's optimisers, computed by torch.optim itself.

Reproduces the update formulas of torch/optim/sgd.py (_single_tensor_sgd), adam.py
(_single_tensor_adam; AdamW = Adam with decoupled weight decay) and rmsprop.py
(_single_tensor_rmsprop) by running those optimisers: each case runs 5 steps on fixed float64
parameters and gradients, with per-step learning rates per parameter group, and records the
parameters after every step.

Writes tools/golden/train/optim_torch.json. Run with the project venv:
    /work/pyvenv/bin/python tools/golden/optim_torch.py
"""
import json
import math
import os

import torch

STEPS = 5
SHAPES = {"a": [3], "b": [2, 2]}


def values(n, seed, lo=-1.0, hi=1.0):
    # Deterministic, platform-independent values (no RNG library involved).
    return [lo + (hi - lo) * ((math.sin(seed * 12.9898 + i * 78.233) * 43758.5453) % 1.0)
            for i in range(n)]


def numel(shape):
    return math.prod(shape)


# (name, torch class, torch kwargs, our config, groups: [(group name, params, lr per step)],
#  steps at which parameter b has no gradient)
CASES = [
    ("sgd_plain", torch.optim.SGD, {}, {"type": "sgd"},
     [("all", ["a", "b"], [0.1] * STEPS)], []),
    ("sgd_momentum_dampening_decay", torch.optim.SGD,
     {"momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01},
     {"type": "sgd", "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01},
     [("all", ["a", "b"], [0.05] * STEPS)], []),
    ("sgd_nesterov", torch.optim.SGD, {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
     {"type": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
     [("all", ["a", "b"], [0.05, 0.04, 0.03, 0.02, 0.01])], []),
    ("adam_default", torch.optim.Adam, {}, {"type": "adam"},
     [("all", ["a", "b"], [1e-2] * STEPS)], []),
    ("adam_l2_beta1_half", torch.optim.Adam,
     {"betas": (0.5, 0.999), "eps": 1e-6, "weight_decay": 0.1},
     {"type": "adam", "beta1": 0.5, "eps": 1e-6, "weight_decay": 0.1},
     [("all", ["a", "b"], [1e-2] * STEPS)], []),
    ("adamw_decay", torch.optim.AdamW, {"weight_decay": 0.05, "betas": (0.8, 0.99)},
     {"type": "adamw", "weight_decay": 0.05, "beta1": 0.8, "beta2": 0.99},
     [("all", ["a", "b"], [3e-2] * STEPS)], []),
    ("adamw_default", torch.optim.AdamW, {}, {"type": "adamw"},
     [("all", ["a", "b"], [1e-1] * STEPS)], []),
    ("rmsprop_default", torch.optim.RMSprop, {}, {"type": "rmsprop"},
     [("all", ["a", "b"], [1e-2] * STEPS)], []),
    ("rmsprop_centered_momentum_decay", torch.optim.RMSprop,
     {"alpha": 0.9, "momentum": 0.8, "centered": True, "weight_decay": 0.01, "eps": 1e-6},
     {"type": "rmsprop", "alpha": 0.9, "momentum": 0.8, "centered": True,
      "weight_decay": 0.01, "eps": 1e-6},
     [("all", ["a", "b"], [1e-2] * STEPS)], []),
    ("adam_two_groups_scheduled_missing_grad", torch.optim.Adam, {}, {"type": "adam"},
     [("decoder", ["a"], [1e-2, 1e-2, 5e-3, 5e-3, 2.5e-3]),
      ("latent", ["b"], [1e-1, 5e-2, 2.5e-2, 1.25e-2, 6.25e-3])], [1, 2]),
    ("sgd_momentum_missing_grad", torch.optim.SGD, {"momentum": 0.5},
     {"type": "sgd", "momentum": 0.5},
     [("all", ["a", "b"], [0.1] * STEPS)], [0, 3]),
]


def run_case(case_index, name, cls, kwargs, config, groups, b_missing):
    torch.set_default_dtype(torch.float64)
    init = {p: values(numel(s), 100 * case_index + k) for k, (p, s) in enumerate(SHAPES.items())}
    params = {p: torch.tensor(init[p], dtype=torch.float64).reshape(SHAPES[p]).requires_grad_()
              for p in SHAPES}
    grads = [{p: values(numel(s), 1000 * case_index + 10 * step + k, -2.0, 2.0)
              for k, (p, s) in enumerate(SHAPES.items())} for step in range(STEPS)]
    opt = cls([{"params": [params[p] for p in members], "lr": lrs[0]}
               for (_, members, lrs) in groups], **kwargs)
    after = []
    for step in range(STEPS):
        for gi, (_, _, lrs) in enumerate(groups):
            opt.param_groups[gi]["lr"] = lrs[step]
        for p in SHAPES:
            missing = p == "b" and step in b_missing
            params[p].grad = None if missing else torch.tensor(
                grads[step][p], dtype=torch.float64).reshape(SHAPES[p])
        opt.step()
        after.append({p: params[p].detach().flatten().tolist() for p in SHAPES})
    return {
        "name": name,
        "optimizer": config,
        "groups": [{"name": g, "params": m, "lr": lrs} for (g, m, lrs) in groups],
        "shapes": SHAPES,
        "init": init,
        "grads": [{p: (None if p == "b" and step in b_missing else grads[step][p])
                   for p in SHAPES} for step in range(STEPS)],
        "expected": after,
    }


def main():
    cases = [run_case(i, *c) for i, c in enumerate(CASES)]
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train", "optim_torch.json")
    with open(out, "w") as f:
        json.dump({"torch": torch.__version__, "steps": STEPS, "cases": cases}, f, indent=1)
        f.write("\n")
    print(f"wrote {out} ({len(cases)} cases, torch {torch.__version__})")


if __name__ == "__main__":
    main()
