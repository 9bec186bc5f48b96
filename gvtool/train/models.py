"""The three networks, built from one ModelConfig: encoder, decoder (generator), discriminator.

Images use small conv nets; vectors (the 2-D mixtures) use MLPs. The same blocks serve vaegan, vae
and gan, so the three models differ only in their losses.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm

from gvtool.errors import BadInputError
from gvtool.train.config import ModelConfig


def conv_stages(image_size: int) -> int:
    """How many stride-2 stages take `image_size` down to a base side below 8 (or to an odd side).

    28 -> 2 stages (base 7), 32 -> 3 (base 4), 64 -> 4 (base 4), 36 -> 2 (base 9).
    """
    stages = 0
    while image_size >= 8 and image_size % 2 == 0:
        image_size //= 2
        stages += 1
    return stages


def _downsampling(cfg: ModelConfig, batch_norm: bool) -> list[nn.Module]:
    """Stride-2 4x4 convs straight from the pixels (DCGAN): channels width, 2*width, ... then cfg.extra_convs 3x3
    convs at the last resolution, then flatten.

    No full-resolution stem: at 28x28 it would cost more than every other layer together.
    """
    layers: list[nn.Module] = []
    c_in = cfg.channels
    for i in range(conv_stages(cfg.image_size)):
        c_out = cfg.width << i
        norm = batch_norm and i > 0  # DCGAN: no batch norm on the layer that sees the pixels
        layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=not norm)]
        layers += [nn.BatchNorm2d(c_out)] if norm else []
        layers += [nn.LeakyReLU(0.2)]
        c_in = c_out
    for _ in range(cfg.extra_convs):  # depth where it is cheap: 7x7 positions at MNIST size
        layers += [nn.Conv2d(c_in, c_in, 3, padding=1, bias=not batch_norm)]
        layers += [nn.BatchNorm2d(c_in)] if batch_norm else []
        layers += [nn.LeakyReLU(0.2)]
    return layers + [nn.Flatten()]


def _flat_features(cfg: ModelConfig) -> int:
    stages = conv_stages(cfg.image_size)
    base = cfg.image_size >> stages
    return (cfg.width << (stages - 1)) * base * base


def _one_hot(labels: torch.Tensor | None, num_classes: int, like: torch.Tensor) -> torch.Tensor | None:
    if num_classes == 0:
        return None
    return F.one_hot(labels, num_classes).to(like.dtype)


class Affine(nn.Module):
    """x * scale + shift per feature, with constants from the config: vector data enter the networks standardised
    and leave the decoder in data units, so a checkpoint, an ONNX graph and the runtime all speak data units."""

    def __init__(self, scale: list[float], shift: list[float]):
        super().__init__()
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32), persistent=False)
        self.register_buffer("shift", torch.tensor(shift, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


def _standardize(cfg: ModelConfig) -> nn.Module:
    """Data units -> zero mean, unit std, for vector data with statistics (else the identity).

    Kept outside the networks' Sequentials, so their parameter names are the same with and without it."""
    if not cfg.vector_std:
        return nn.Identity()
    return Affine([1 / s for s in cfg.vector_std], [-m / s for m, s in zip(cfg.vector_mean, cfg.vector_std)])


def _to_data_units(cfg: ModelConfig) -> nn.Module:
    return Affine(list(cfg.vector_std), list(cfg.vector_mean)) if cfg.vector_std else nn.Identity()


def _mlp(n_in: int, cfg: ModelConfig, activation: nn.Module) -> list[nn.Module]:
    """cfg.mlp_layers hidden layers of cfg.hidden units for vector data: [Linear, activation] * mlp_layers."""
    sizes = [n_in] + [cfg.hidden] * cfg.mlp_layers
    return [m for a, b in zip(sizes, sizes[1:]) for m in (nn.Linear(a, b), copy.deepcopy(activation))]


class Encoder(nn.Module):
    """x (B, *item) -> (mean, logvar), each (B, latent_dim)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        k = cfg.latent_dim
        if cfg.data_kind == "image":
            layers: list[nn.Module] = _downsampling(cfg, batch_norm=True)
            layers += [nn.Linear(_flat_features(cfg), 2 * k)]
        else:
            layers = _mlp(cfg.vector_dim, cfg, nn.LeakyReLU(0.2)) + [nn.Linear(cfg.hidden, 2 * k)]
        self.net = nn.Sequential(*layers)
        self.standardize = _standardize(cfg)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.net(self.standardize(x)).chunk(2, dim=1)
        return mean, logvar


class Decoder(nn.Module):
    """z (B, latent_dim) [+ labels (B,)] -> x (B, *item); images in [-1, 1] (tanh).

    Upsampling is nearest-neighbour x2 then a 3x3 conv, not a transposed conv: no checkerboard
    artefacts, and it exports to plain Resize + Conv that every ONNX backend runs well.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        z_in = cfg.latent_dim + cfg.num_classes
        if cfg.data_kind == "image":
            stages = conv_stages(cfg.image_size)
            self.base = cfg.image_size >> stages
            self.top = cfg.width << (stages - 1)  # channels at the base resolution, as in the encoder's last stage
            # An MLP in front of the projection (StyleGAN's mapping network, small): the Gaussian latent is one
            # connected blob, the digits are ten apart; fully connected layers can bend the one onto the other with
            # steep class boundaries for a few hundred thousand multiply-adds, where convs would cost millions.
            mapping: list[nn.Module] = []
            for _ in range(cfg.mapping_layers):
                mapping += [nn.Linear(z_in, cfg.hidden, bias=False), nn.BatchNorm1d(cfg.hidden), nn.ReLU()]
                z_in = cfg.hidden
            self.project = nn.Sequential(*mapping, nn.Linear(z_in, self.top * self.base * self.base, bias=False),
                                         nn.BatchNorm1d(self.top * self.base * self.base), nn.ReLU())
            layers: list[nn.Module] = []
            for _ in range(cfg.extra_convs):  # at the base resolution: depth for 1/16 of the full-size cost
                layers += [nn.Conv2d(self.top, self.top, 3, padding=1, bias=False), nn.BatchNorm2d(self.top), nn.ReLU()]
            for i in reversed(range(stages)):  # mirrors the encoder: 7x7x64 -> 14x14x32 -> 28x28xC
                c_in, c_out = cfg.width << i, (cfg.width << (i - 1)) if i else cfg.channels
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1, bias=not i)]
                layers += [nn.BatchNorm2d(c_out), nn.ReLU()] if i else [nn.Tanh()]
            self.net = nn.Sequential(*layers)
        else:
            hidden = _mlp(z_in, cfg, nn.ReLU())
            self.project = nn.Sequential(*hidden[:2])
            self.net = nn.Sequential(*hidden[2:], nn.Linear(cfg.hidden, cfg.vector_dim))
        self.to_data_units = _to_data_units(cfg)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        onehot = _one_hot(labels, self.cfg.num_classes, z)
        if onehot is not None:
            z = torch.cat([z, onehot], dim=1)  # (B, K + classes)
        h = self.project(z)
        if self.cfg.data_kind == "image":
            h = h.view(-1, self.top, self.base, self.base)  # (B, top, base, base)
        return self.to_data_units(self.net(h))


class Discriminator(nn.Module):
    """x (B, *item) [+ labels] -> (logit (B,), features (B, F)).

    The features of the last hidden layer are the "learned similarity" space of Larsen et al.:
    the VAE-GAN measures reconstruction there instead of in pixels. Conditional models add a
    projection term <embed(y), h> (Miyato & Koyama 2018), cheaper and steadier than concatenation.
    No batch norm: real and generated items share one batch, and batch statistics would leak
    between them. With cfg.spectral_norm every weight (convs, linears, the class embedding) is divided
    by its largest singular value, as in SNGAN's projection discriminator.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.data_kind == "image":
            layers: list[nn.Module] = _downsampling(cfg, batch_norm=False)
            n_features = _flat_features(cfg)
        else:
            layers = _mlp(cfg.vector_dim, cfg, nn.LeakyReLU(0.2))
            n_features = cfg.hidden
        self.features = nn.Sequential(*layers)
        self.standardize = _standardize(cfg)
        self.head = nn.Linear(n_features, 1)
        self.embed = nn.Embedding(cfg.num_classes, n_features) if cfg.conditional else None
        if cfg.spectral_norm:
            for module in self.modules():
                if isinstance(module, (nn.Conv2d, nn.Linear, nn.Embedding)):
                    spectral_norm(module)  # one power iteration per forward in training mode

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(self.standardize(x))  # (B, F)
        logit = self.head(f).squeeze(1)  # (B,)
        if self.embed is not None:
            logit = logit + (self.embed(labels) * f).sum(dim=1)
        return logit, f


def build_networks(cfg: ModelConfig) -> nn.ModuleDict:
    """The networks a model kind needs, by name: encoder (vae, vaegan), decoder, discriminator (gan, vaegan)."""
    if cfg.conditional and cfg.num_classes < 2:
        raise BadInputError(f"a conditional model needs the number of classes (>= 2) before its networks are built, "
                            f"got {cfg.num_classes}")
    nets: dict[str, nn.Module] = {}
    if cfg.has_encoder:
        nets["encoder"] = Encoder(cfg)
    nets["decoder"] = Decoder(cfg)
    if cfg.has_discriminator:
        nets["discriminator"] = Discriminator(cfg)
    return nn.ModuleDict(nets)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
