"""Golden file for vnr-models' NeRF: PyTorch3D's tutorial `NeuralRadianceField` in PyTorch.

Run from the repository root:  /work/pyvenv/bin/python tools/golden/nerf_torch.py
Writes tools/golden/nerf/tutorial.json: the config, the weights (by the tutorial module's
state_dict names), points [2, 3, 5, 3] and directions [2, 3, 3], the densities and colours,
the raw density-head output (the NeRF-paper sigma), the colours and opacities marched by
PyTorch3D's EmissionAbsorptionRaymarcher formula, the tutorial's huber loss of those
against fixed targets, and the gradient of that loss for every parameter. Deterministic.

Reimplemented here (small sizes; the layout is the tutorial's,
docs/tutorials/fit_simple_neural_radiance_field.ipynb): HarmonicEmbedding (frequencies
omega0 * 2**k, sin and cos, no appended input), mlp = Linear, Softplus(10), Linear,
Softplus(10); density_layer = Linear, Softplus(10) with bias -1.5, density 1 - exp(-raw);
color_layer = Linear on [features, embedded normalised direction], Softplus(10), Linear,
Sigmoid.
"""
import json
import os

import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nerf")


def tensor_json(t):
    a = t.detach().cpu().float().numpy()
    return {"shape": list(a.shape), "data": [float(str(v)) for v in a.reshape(-1)]}


class HarmonicEmbedding(torch.nn.Module):
    def __init__(self, n_harmonic_functions, omega0):
        super().__init__()
        self.register_buffer("frequencies", omega0 * (2.0 ** torch.arange(n_harmonic_functions)))

    def forward(self, x):
        embed = (x[..., None] * self.frequencies).view(*x.shape[:-1], -1)
        return torch.cat((embed.sin(), embed.cos()), dim=-1)


class NeuralRadianceField(torch.nn.Module):
    def __init__(self, n_harmonic_functions, omega0, n_hidden_neurons):
        super().__init__()
        self.harmonic_embedding = HarmonicEmbedding(n_harmonic_functions, omega0)
        embedding_dim = n_harmonic_functions * 2 * 3
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(embedding_dim, n_hidden_neurons),
            torch.nn.Softplus(beta=10.0),
            torch.nn.Linear(n_hidden_neurons, n_hidden_neurons),
            torch.nn.Softplus(beta=10.0),
        )
        self.color_layer = torch.nn.Sequential(
            torch.nn.Linear(n_hidden_neurons + embedding_dim, n_hidden_neurons),
            torch.nn.Softplus(beta=10.0),
            torch.nn.Linear(n_hidden_neurons, 3),
            torch.nn.Sigmoid(),
        )
        self.density_layer = torch.nn.Sequential(
            torch.nn.Linear(n_hidden_neurons, 1),
            torch.nn.Softplus(beta=10.0),
        )
        self.density_layer[0].bias.data[0] = -1.5

    def raw_densities(self, features):
        return self.density_layer(features)

    def colors(self, features, directions):
        spatial = features.shape[:-1]
        d = torch.nn.functional.normalize(directions, dim=-1)
        e = self.harmonic_embedding(d)
        e = e[..., None, :].expand(*spatial, e.shape[-1])
        return self.color_layer(torch.cat((features, e), dim=-1))

    def forward(self, points, directions):
        features = self.mlp(self.harmonic_embedding(points))
        raw = self.raw_densities(features)
        return 1 - (-raw).exp(), self.colors(features, directions), raw


def ea_march(densities, features, eps=1e-10):
    """PyTorch3D's EmissionAbsorptionRaymarcher (surface_thickness 1)."""
    d = densities[..., 0]
    shifted = torch.cat((torch.ones_like(d[..., :1]), (1.0 + eps) - d[..., :-1]), dim=-1)
    weights = d * torch.cumprod(shifted, dim=-1)
    colours = (weights[..., None] * features).sum(dim=-2)
    opacity = 1.0 - torch.prod(1.0 - d, dim=-1, keepdim=True)
    return colours, opacity


def huber(x, y, scaling=0.1):
    diff_sq = (x - y) ** 2
    return ((1 + diff_sq / (scaling ** 2)).clamp(1e-4).sqrt() - 1) * float(scaling)


def main():
    torch.manual_seed(0)
    cfg = {"n_harmonic_functions": 4, "omega_0": 0.5, "n_hidden_neurons": 16}
    model = NeuralRadianceField(cfg["n_harmonic_functions"], cfg["omega_0"], cfg["n_hidden_neurons"])
    points = torch.rand(2, 3, 5, 3) * 2 - 1
    directions = torch.randn(2, 3, 3)
    target_colours = torch.rand(2, 3, 3)
    target_alpha = torch.rand(2, 3, 1)
    densities, colours, raw = model(points, directions)
    marched, opacity = ea_march(densities, colours)
    loss = huber(marched, target_colours).abs().mean() + huber(opacity, target_alpha).abs().mean()
    loss.backward()
    params = {k: tensor_json(v) for k, v in model.state_dict().items() if k != "harmonic_embedding.frequencies"}
    grads = {k: tensor_json(p.grad) for k, p in model.named_parameters()}
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "tutorial.json"), "w") as f:
        json.dump(
            {
                "config": cfg,
                "params": params,
                "points": tensor_json(points),
                "directions": tensor_json(directions),
                "densities": tensor_json(densities),
                "colours": tensor_json(colours),
                "raw_densities": tensor_json(raw),
                "target_colours": tensor_json(target_colours),
                "target_alpha": tensor_json(target_alpha),
                "marched_colours": tensor_json(marched),
                "marched_opacity": tensor_json(opacity),
                "loss": float(loss.detach()),
                "grads": grads,
            },
            f,
            separators=(",", ":"),
        )


if __name__ == "__main__":
    main()
