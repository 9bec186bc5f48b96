"""The baseline a user would otherwise write: plain PyTorch loads the checkpoint and makes 64 samples.

    python benchmarks/cold_start/torch_sample.py RUN_DIR [--n 64] [--out samples.png]

It rebuilds the decoder from the run's own config (the model code is gvtool's, as a user's would be
their own), loads the weights from the safetensors checkpoint, samples on the CPU and writes a PNG grid
with Pillow: the same work as `gvtool sample --n 64`.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open

from gvtool.train.config import TrainConfig
from gvtool.train.models import Decoder

parser = argparse.ArgumentParser()
parser.add_argument("run_dir", type=Path)
parser.add_argument("--n", type=int, default=64)
parser.add_argument("--out", type=Path, default=Path("samples.png"))
args = parser.parse_args()

checkpoint = args.run_dir / "checkpoint.safetensors"
with safe_open(str(checkpoint), framework="pt") as f:
    config = TrainConfig.from_dict(json.loads(f.metadata()["meta"])["config"])
    prefix = "model/decoder/"
    weights = {k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
decoder = Decoder(config.model)
decoder.load_state_dict(weights)
decoder.eval()
with torch.inference_mode():
    z = torch.randn(args.n, config.model.latent_dim, generator=torch.Generator().manual_seed(0))
    x = decoder(z)  # (n, C, H, W) in [-1, 1]
pixels = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
n, h, w, c = pixels.shape
cols = int(np.ceil(np.sqrt(n)))
rows = int(np.ceil(n / cols))
grid = np.zeros((rows * (h + 2) + 2, cols * (w + 2) + 2, c), np.uint8)
for i, image in enumerate(pixels):
    r, q = divmod(i, cols)
    grid[2 + r * (h + 2):2 + r * (h + 2) + h, 2 + q * (w + 2):2 + q * (w + 2) + w] = image
Image.fromarray(grid[..., 0] if c == 1 else grid).save(args.out)
