"""Golden files for vnr-models: tiny ConvDeconv and DeepSDF forwards in PyTorch, and RenderNet's
numpy Phong shading.

Run from the repository root:  /work/pyvenv/bin/python tools/golden/models_torch.py
Writes tools/golden/models/{convdeconv,deepsdf,phong}.json (weights, inputs, outputs; float32
values stored as JSON numbers). Deterministic: every generator is seeded.

Formulas reproduced (reimplemented here, with sizes made small):
- ConvDeconv: VoxelNeuralRender `models/cnn.py` (class ConvDeconv: pad 1 -> Conv3d(k4, s2) ->
  LeakyReLU -> MaxPool3d(3, 1, 1) -> Conv3d(1) -> LeakyReLU per scale, torch.reshape to
  [-1, C, M, M], ConvTranspose2d(k4, s2, p1) -> LeakyReLU -> ConvTranspose2d(1) -> LeakyReLU ->
  ConvTranspose2d(k4, s2, p1)), here with 2 scales of 2 and 3 channels on a 16^3 input.
- DeepSDF: facebookresearch/DeepSDF `networks/deep_sdf_decoder.py` (Decoder.forward: latent_in
  concatenation, weight_norm, ReLU, final tanh `th`), via the real torch.nn.utils.weight_norm.
- Phong: RenderNet `tools/Phong_shading.py` (np_phong_composite, np_phong_shading, np_mask,
  np_mask_white, generate_light_pos).
"""
import json
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")


def tensor_json(t):
    a = t.detach().cpu().numpy().astype(np.float32) if isinstance(t, torch.Tensor) else np.asarray(t, np.float32)
    # Shortest float32 text: parsed as f64 and cast back it gives the same float32.
    return {"shape": list(a.shape), "data": [float(str(v)) for v in a.reshape(-1)]}


def write(name, obj):
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, name), "w") as f:
        json.dump(obj, f, separators=(",", ":"))


class TinyConvDeconv(nn.Module):
    """models/cnn.py's ConvDeconv with the channel list and scale count as parameters."""

    def __init__(self, enc, dec):
        super().__init__()
        cin = 1
        for i, c in enumerate(enc):
            setattr(self, f"conv3d_s2_{i + 1}", nn.Conv3d(cin, c, 4, 2))
            setattr(self, f"conv3d_s1_{i + 1}", nn.Conv3d(c, c, 1, 1))
            cin = c
        self.levels = len(enc)
        self.deconv2d_s2_1 = nn.ConvTranspose2d(cin, dec[0], 4, 2, padding=1)
        self.deconv2d_s1_1 = nn.ConvTranspose2d(dec[0], dec[1], 1, 1)
        self.deconv2d_s2_2 = nn.ConvTranspose2d(dec[1], 1, 4, 2, padding=1)

    def forward(self, x):
        for i in range(self.levels):
            x = F.pad(x, (1, 1, 1, 1, 1, 1), mode="constant")
            x = getattr(self, f"conv3d_s2_{i + 1}")(x)
            x = nn.LeakyReLU()(x)
            x = nn.MaxPool3d(kernel_size=3, stride=1, padding=1)(x)
            x = getattr(self, f"conv3d_s1_{i + 1}")(x)
            x = nn.LeakyReLU()(x)
        n = x.shape[-1]
        m = int(round(math.sqrt(n ** 3)))
        x = torch.reshape(x, [-1, x.shape[1], m, m])
        x = nn.LeakyReLU()(self.deconv2d_s2_1(x))
        x = nn.LeakyReLU()(self.deconv2d_s1_1(x))
        return self.deconv2d_s2_2(x)


def convdeconv():
    torch.manual_seed(1)
    model = TinyConvDeconv([2, 3], [3, 2]).double()
    x = torch.rand(2, 1, 16, 16, 16, dtype=torch.float64)
    # Round inputs and weights to float32 first so Rust's float32 run sees the same values.
    x = x.float().double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.float().double())
    y = model(x)
    write("convdeconv.json", {
        "config": {"version": "v001", "input_size": 16, "encoder_channels": [2, 3],
                   "decoder_channels": [3, 2], "negative_slope": 0.01, "skip_channels": 4},
        "params": {k: tensor_json(v) for k, v in model.state_dict().items()},
        "input": tensor_json(x),
        "output": tensor_json(y),
    })


class Decoder(nn.Module):
    """deep_sdf_decoder.py's Decoder (inference path), same module names."""

    def __init__(self, latent_size, dims, norm_layers, latent_in, weight_norm):
        super().__init__()
        dims = [latent_size + 3] + dims + [1]
        self.num_layers = len(dims)
        self.latent_in = latent_in
        for layer in range(self.num_layers - 1):
            out_dim = dims[layer + 1] - dims[0] if layer + 1 in latent_in else dims[layer + 1]
            lin = nn.Linear(dims[layer], out_dim)
            if weight_norm and layer in norm_layers:
                lin = nn.utils.weight_norm(lin)
            setattr(self, f"lin{layer}", lin)

    def forward(self, inp):
        x = inp
        for layer in range(self.num_layers - 1):
            if layer in self.latent_in:
                x = torch.cat([x, inp], 1)
            x = getattr(self, f"lin{layer}")(x)
            if layer < self.num_layers - 2:
                x = torch.relu(x)
        return torch.tanh(x)


def deepsdf():
    torch.manual_seed(2)
    spec = {"latent_size": 3, "dims": [10, 10, 10, 10], "dropout": [], "dropout_prob": 0.0,
            "norm_layers": [0, 1, 2, 3], "latent_in": [2], "xyz_in_all": False, "use_tanh": False,
            "latent_dropout": False, "weight_norm": True, "dropout_seed": 0}
    model = Decoder(3, [10, 10, 10, 10], [0, 1, 2, 3], [2], True).double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            # Give weight_g values away from the fresh ‖v‖ so the test sees g used.
            if name.endswith("weight_g"):
                p.copy_(torch.rand_like(p) + 0.5)
            p.copy_(p.float().double())
    inp = (torch.rand(5, 6, dtype=torch.float64) * 2 - 1).float().double()
    y = model(inp)
    write("deepsdf.json", {
        "config": spec,
        "params": {k: tensor_json(v) for k, v in model.state_dict().items()},
        "input": tensor_json(inp),
        "output": tensor_json(y),
    })


def np_mask(images_in):
    mask = np.linalg.norm(images_in, axis=3, keepdims=True)
    return 1.0 / (1.0 + np.exp(-(255.0 * mask - 150)))


def np_mask_white(images_in):
    mask = np.linalg.norm(1.0 - images_in, axis=3, keepdims=True)
    return 1.0 / (1.0 + np.exp(-(255.0 * mask - 80)))


def np_phong_shading(img, light_dir, light_col, k_diffuse):
    n = (img - 0.5).reshape([-1, 3])
    n = n / np.linalg.norm(n, axis=1)[:, None]
    light_dir = light_dir / np.linalg.norm(light_dir, axis=1).reshape([-1, 1])
    light_dir = np.repeat(light_dir, np.prod(img.shape[1:3]), 0)
    light_col = np.repeat(light_col, np.prod(img.shape[1:3]), 0)
    d = np.maximum(np.sum(n * light_dir, axis=1, keepdims=True), 0.0)
    d = np.repeat(d, 3, 1)
    return np.clip((k_diffuse * d * light_col).reshape(img.shape), 0, 1)


def np_phong_composite(img, light_dir, light_col, ambient, k_diffuse, background, with_mask):
    diffuse = np_phong_shading(img, light_dir, light_col, k_diffuse)
    if with_mask:
        mask = np_mask(img) if background == "Black" else np_mask_white(img)
        compos = mask * (ambient + diffuse) + (1 - mask)
    else:
        compos = ambient + diffuse
    return np.clip(compos, 0, 1)


def generate_light_pos(elevation, azimuth):
    e = elevation * math.pi / 180.0
    a = azimuth * math.pi / 180.0
    return [-math.sin(e) * math.cos(a), math.cos(e), -math.sin(e) * math.sin(a)]


def phong():
    rng = np.random.default_rng(3)
    img = rng.uniform(0, 1, size=(2, 5, 6, 3)).astype(np.float32).astype(np.float64)
    img[0, 0, 0] = [0.0, 0.0, 0.0]   # black background pixel
    img[1, 0, 0] = [1.0, 1.0, 1.0]   # white background pixel
    lights = np.array([generate_light_pos(60, 250), generate_light_pos(30, 45)])
    col = np.ones((2, 3))
    cases = []
    for background, with_mask in [("Black", True), ("White", True), ("Black", False)]:
        out = np_phong_composite(img, lights.copy(), col, 0.1, 0.9, background, with_mask)
        cases.append({"background": background, "with_mask": with_mask,
                      "output_nchw": tensor_json(out.transpose(0, 3, 1, 2))})
    write("phong.json", {
        "normals_nchw": tensor_json(img.transpose(0, 3, 1, 2)),
        "light_pos_args": [[60, 250], [30, 45]],
        "light_dir": tensor_json(lights),
        "cases": cases,
    })


if __name__ == "__main__":
    convdeconv()
    deepsdf()
    phong()
    print("torch", torch.__version__, "numpy", np.__version__)
