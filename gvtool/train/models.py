"""The networks of every model kind, built from one ModelConfig (config.NETWORKS names them per kind).

Images use small conv nets; vectors (the 2-D mixtures) use MLPs. vaegan, vae and gan share one encoder, decoder
and discriminator and differ only in their losses; ali swaps in a discriminator of (item, latent) pairs; prior adds
a second, small VAE over the latents; hier builds a coarse VAE and a detail generator from the same blocks; cyclevae
gives each of two image domains its own outer layers around shared inner ones.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm

from gvtool.errors import BadInputError
from gvtool.train.config import COARSE_FACTOR, ModelConfig, conv_stages


def _downsampling(cfg: ModelConfig, batch_norm: bool, in_channels: int | None = None) -> list[nn.Module]:
    """Stride-2 4x4 convs straight from the pixels (DCGAN): channels width, 2*width, ... then cfg.extra_convs 3x3
    convs at the last resolution, then flatten.

    No full-resolution stem: at 28x28 it would cost more than every other layer together.
    """
    return _stride_stages(cfg, batch_norm, in_channels) + _base_convs(cfg, batch_norm) + [nn.Flatten()]


def _stride_stages(cfg: ModelConfig, batch_norm: bool, in_channels: int | None = None) -> list[nn.Module]:
    """The stride-2 4x4 convs of _downsampling: from the pixels down to the base resolution."""
    layers: list[nn.Module] = []
    c_in = in_channels or cfg.channels
    for i in range(conv_stages(cfg.image_size)):
        c_out = cfg.width << i
        norm = batch_norm and i > 0  # DCGAN: no batch norm on the layer that sees the pixels
        layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=not norm)]
        layers += [nn.BatchNorm2d(c_out)] if norm else []
        layers += [nn.LeakyReLU(0.2)]
        c_in = c_out
    return layers


def _base_convs(cfg: ModelConfig, batch_norm: bool) -> list[nn.Module]:
    """cfg.extra_convs 3x3 convs (c -> c) at the base resolution: depth where it is cheap (7x7 positions at MNIST
    size)."""
    c = cfg.width << (conv_stages(cfg.image_size) - 1)
    layers: list[nn.Module] = []
    for _ in range(cfg.extra_convs):
        layers += [nn.Conv2d(c, c, 3, padding=1, bias=not batch_norm)]
        layers += [nn.BatchNorm2d(c)] if batch_norm else []
        layers += [nn.LeakyReLU(0.2)]
    return layers


def _flat_features(cfg: ModelConfig) -> int:
    stages = conv_stages(cfg.image_size)
    base = cfg.image_size >> stages
    return (cfg.width << (stages - 1)) * base * base


def _one_hot(labels: torch.Tensor | None, num_classes: int, like: torch.Tensor) -> torch.Tensor | None:
    if num_classes == 0:
        return None
    return F.one_hot(labels, num_classes).to(like.dtype)


def condition_vector(labels: torch.Tensor | None, cfg: ModelConfig, like: torch.Tensor) -> torch.Tensor | None:
    """What a conditional network appends to its input: the sentence embeddings (B, text_dim) of a text-conditioned
    model as they are, else the labels one-hot; None for an unconditional model."""
    if not cfg.conditional:  # (a translation model learning domain A's classes knows them, but takes none)
        return None
    if cfg.text_conditioned:  # no cast when the types agree: an exported fp16 graph keeps no stray Cast-to-float32 then
        return labels if labels.dtype == like.dtype else labels.to(like.dtype)
    return _one_hot(labels, cfg.num_classes, like)


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
    """z (B, latent_dim) [+ labels (B,), or sentence embeddings (B, text_dim)] -> x (B, *item); images in [-1, 1] (tanh).

    Upsampling is nearest-neighbour x2 then a 3x3 conv, not a transposed conv: no checkerboard
    artefacts, and it exports to plain Resize + Conv that every ONNX backend runs well.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        z_in = cfg.latent_dim + cfg.condition_size
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
            if cfg.latent_channels:  # a spatial latent (cyclevae): its maps, a 3x3 conv to the base channels
                self.project = nn.Sequential(nn.Unflatten(1, (cfg.latent_channels, self.base, self.base)),
                                             nn.Conv2d(cfg.latent_channels, self.top, 3, padding=1, bias=False),
                                             nn.BatchNorm2d(self.top), nn.ReLU())
            else:
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
        condition = condition_vector(labels, self.cfg, z)
        if condition is not None:
            z = torch.cat([z, condition], dim=1)  # (B, K + classes or text_dim)
        h = self.project(z)
        if self.cfg.data_kind == "image":
            h = h.view(-1, self.top, self.base, self.base)  # (B, top, base, base)
        return self.to_data_units(self.net(h))


class Discriminator(nn.Module):
    """x (B, *item) [+ labels, or sentence embeddings] -> (logit (B,), features (B, F)).

    The features of the last hidden layer are the "learned similarity" space of Larsen et al.:
    the VAE-GAN measures reconstruction there instead of in pixels. Conditional models add a
    projection term <embed(y), h> (Miyato & Koyama 2018), cheaper and steadier than concatenation; a text-conditioned
    model's embed is a linear map of its sentence embedding.
    No batch norm: real and generated items share one batch, and batch statistics would leak
    between them. With cfg.spectral_norm every weight (convs, linears, the class embedding) is divided
    by its largest singular value, as in SNGAN's projection discriminator.
    """

    def __init__(self, cfg: ModelConfig, in_channels: int | None = None):
        super().__init__()
        self.cfg = cfg
        if cfg.data_kind == "image":
            layers: list[nn.Module] = _downsampling(cfg, batch_norm=False, in_channels=in_channels)
            n_features = _flat_features(cfg)
        else:
            layers = _mlp(cfg.vector_dim, cfg, nn.LeakyReLU(0.2))
            n_features = cfg.hidden
        self.features = nn.Sequential(*layers)
        self.standardize = _standardize(cfg)
        self.head = nn.Linear(n_features, 1)
        # a text-conditioned model projects its sentence embedding instead of looking up a class's
        self.embed = (None if not cfg.conditional else nn.Linear(cfg.text_dim, n_features, bias=False)
                      if cfg.text_conditioned else nn.Embedding(cfg.num_classes, n_features))
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


class JointDiscriminator(nn.Module):
    """ALI / BiGAN: (x (B, *item), z (B, K)) [+ labels] -> (logit (B,), joint features (B, hidden)).

    The item goes through the Discriminator's own feature layers, the latent through an MLP of `hidden` units, and
    the two meet in one more layer (Dumoulin et al. 2016's D(x, z) = D_xz(D_x(x), D_z(z))). A pair it calls real is
    an item with its encoder's code; a fake one, a decoded prior latent with that latent."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.items = Discriminator(dataclasses.replace(cfg, conditional=False, num_classes=0, spectral_norm=False))
        n_features = self.items.head.in_features
        del self.items.head, self.items.embed  # only its feature layers are used
        self.latents = nn.Sequential(nn.Linear(cfg.latent_dim, cfg.hidden), nn.LeakyReLU(0.2),
                                     nn.Linear(cfg.hidden, cfg.hidden), nn.LeakyReLU(0.2))
        self.joint = nn.Sequential(nn.Linear(n_features + cfg.hidden, cfg.hidden), nn.LeakyReLU(0.2))
        self.head = nn.Linear(cfg.hidden, 1)
        self.embed = nn.Embedding(cfg.num_classes, cfg.hidden) if cfg.conditional else None
        if cfg.spectral_norm:
            for module in self.modules():
                if isinstance(module, (nn.Conv2d, nn.Linear, nn.Embedding)):
                    spectral_norm(module)

    def forward(self, x: torch.Tensor, z: torch.Tensor,
                labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.items.features(self.items.standardize(x))  # (B, F)
        h = self.joint(torch.cat([f, self.latents(z.to(f.dtype))], dim=1))  # (B, hidden)
        logit = self.head(h).squeeze(1)
        if self.embed is not None:
            logit = logit + (self.embed(labels) * h).sum(dim=1)
        return logit, h


def _labelled(x: torch.Tensor, labels: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    onehot = _one_hot(labels, num_classes, x)
    return x if onehot is None else torch.cat([x, onehot], dim=1)


class PriorEncoder(nn.Module):
    """prior: a latent of the base model z (B, K) [+ labels] -> (mean, logvar) of the prior's own latent u, (B, P)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        sizes = [cfg.latent_dim + cfg.num_classes] + [cfg.prior_hidden] * cfg.prior_layers
        layers = [m for a, b in zip(sizes, sizes[1:]) for m in (nn.Linear(a, b), nn.ReLU())]
        self.net = nn.Sequential(*layers, nn.Linear(cfg.prior_hidden, 2 * cfg.noise_dim))

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.net(_labelled(z, labels, self.cfg.num_classes)).chunk(2, dim=1)
        return mean, logvar


class PriorDecoder(nn.Module):
    """prior: u (B, P) [+ labels] -> the mean of p(z | u) = N(mean, diag(gamma)) over the base model's latent z (B, K).

    The likelihood's variance gamma is learnt, as in Dai & Wipf's second stage: as the fit tightens it shrinks, and
    the KL term's pull can no longer blur the codes' distribution. It is learnt per latent dimension (`log_gamma`,
    (K,)): a base model leaves some dimensions unused, and there its codes are N(0, 1) noise that no mean can
    fit. One shared gamma then stayed near 1 (ring8's vaegan: the prior's KL fell to 0.2 nats, its samples to one
    point); per dimension, the unused ones keep gamma ~1 and the used ones can fit tightly. Sampling adds that noise
    back (train/graphs.PriorGraph), so the prior samples p(z | u) itself."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        sizes = [cfg.noise_dim + cfg.num_classes] + [cfg.prior_hidden] * cfg.prior_layers
        layers = [m for a, b in zip(sizes, sizes[1:]) for m in (nn.Linear(a, b), nn.ReLU())]
        self.net = nn.Sequential(*layers, nn.Linear(cfg.prior_hidden, cfg.latent_dim))
        self.log_gamma = nn.Parameter(torch.zeros(cfg.latent_dim))

    def forward(self, u: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(_labelled(u, labels, self.cfg.num_classes))


def coarsen(cfg: ModelConfig, x: torch.Tensor) -> torch.Tensor:
    """hier: the coarse item of x: images average-pooled by COARSE_FACTOR per side (B, C, H/4, W/4); vectors whole."""
    return F.avg_pool2d(x, COARSE_FACTOR) if cfg.data_kind == "image" else x


def _coarse_vectors(cfg: ModelConfig) -> ModelConfig:
    """hier on images: the coarse images as vectors of C*H/4*W/4 values, for the MLPs of the coarse VAE."""
    return dataclasses.replace(cfg, data_kind="vector", vector_dim=math.prod(cfg.coarse_shape), vector_mean=(),
                               vector_std=(), augment=())


class CoarseEncoder(nn.Module):
    """hier: x (B, *item) -> (mean, logvar) (B, K) of the coarse item's latent: images are pooled to 1/4 of their side
    first (inside, so the exported encoder takes full-size images like any other)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.net = Encoder(_coarse_vectors(cfg) if cfg.data_kind == "image" else cfg)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(coarsen(self.cfg, x).flatten(1) if self.cfg.data_kind == "image" else x)


class CoarseDecoder(nn.Module):
    """hier: z (B, K) [+ labels] -> the coarse item: images (B, C, H/4, W/4) in [-1, 1], vectors (B, D) in data units.
    An MLP either way: a 7x7 image is 49 values."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.net = Decoder(_coarse_vectors(cfg) if cfg.data_kind == "image" else cfg)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        out = self.net(z, labels)
        if self.cfg.data_kind == "image":
            return torch.tanh(out).view(-1, *self.cfg.coarse_shape)
        return out


class DetailGenerator(nn.Module):
    """hier: (coarse (B, *coarse), noise (B, N)) [+ labels] -> the full item, its detail drawn by the noise.

    Images: the coarse image and the noise (projected to a map) meet at the coarse resolution, then two x2
    upsampling stages (nearest + 3x3 conv, as the decoder) reach the full size. Vectors: an MLP gives a correction
    to the coarse item, in units of the data's std per feature."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        labelled_noise = cfg.detail_dim + cfg.num_classes
        if cfg.data_kind == "image":
            c, h, w = cfg.coarse_shape
            top = cfg.width * 2
            self.noise = nn.Sequential(nn.Linear(labelled_noise, top * h * w, bias=False), nn.BatchNorm1d(top * h * w),
                                       nn.ReLU())
            self.stem = nn.Sequential(nn.Conv2d(c, top, 3, padding=1, bias=False), nn.BatchNorm2d(top), nn.ReLU())
            layers: list[nn.Module] = [nn.Conv2d(2 * top, top, 3, padding=1, bias=False), nn.BatchNorm2d(top), nn.ReLU()]
            for c_in, c_out in ((top, cfg.width), (cfg.width, cfg.channels)):
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1,
                                                                                  bias=c_out == cfg.channels)]
                layers += [nn.BatchNorm2d(c_out), nn.ReLU()] if c_out != cfg.channels else [nn.Tanh()]
            self.net = nn.Sequential(*layers)
        else:
            self.standardize = _standardize(cfg)
            self.net = nn.Sequential(*_mlp(cfg.vector_dim + labelled_noise, cfg, nn.ReLU()),
                                     nn.Linear(cfg.hidden, cfg.vector_dim))
            self.register_buffer("std", torch.tensor(cfg.vector_std or [1.0] * cfg.vector_dim), persistent=False)

    def forward(self, coarse: torch.Tensor, noise: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        noise = _labelled(noise, labels, self.cfg.num_classes)
        if self.cfg.data_kind == "image":
            _, h, w = self.cfg.coarse_shape
            n = self.noise(noise).view(-1, 2 * self.cfg.width, h, w)  # (B, top, h, w)
            return self.net(torch.cat([self.stem(coarse), n], dim=1))
        delta = self.net(torch.cat([self.standardize(coarse), noise], dim=1))
        return coarse + delta * self.std


class PairDiscriminator(nn.Module):
    """hier: (x (B, *item), coarse (B, *coarse)) [+ labels] -> (logit, features): the Discriminator on the item beside
    its coarse item (images: upsampled to full size as extra channels; vectors: concatenated), so it judges both the
    detail's realism and its agreement with the structure it was given."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.data_kind == "image":
            self.net = Discriminator(cfg, in_channels=2 * cfg.channels)
        else:
            self.net = Discriminator(dataclasses.replace(cfg, vector_dim=2 * cfg.vector_dim,
                                                         vector_mean=cfg.vector_mean * 2, vector_std=cfg.vector_std * 2))

    def forward(self, x: torch.Tensor, coarse: torch.Tensor,
                labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cfg.data_kind == "image":
            coarse = F.interpolate(coarse, scale_factor=COARSE_FACTOR, mode="nearest")
        return self.net(torch.cat([x, coarse.to(x.dtype)], dim=1), labels)


Domains = int | tuple[int, ...]  # cyclevae: 0 is domain A, 1 domain B; a tuple gives one domain per chunk of a batch


class DomainEncoder(nn.Module):
    """cyclevae: images of domain A or B -> (mean, logvar) (B, K) in the one latent space the domains share (UNIT,
    Liu et al. 2017). Each domain has its own stride-2 stages (the low-level features: a stroke over black, or over
    a photograph); the convs at the base resolution and the projection to the latent are one set of weights, which
    both domains go through.

    forward(x, 0) encodes A images, forward(x, 1) B images; forward((x_a, x_b), (0, 1)) encodes both in one pass
    of the shared layers, as training does: their batch norm then sees both domains at every step, which is what
    its running statistics (used at inference, on one domain at a time) average over."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fronts = nn.ModuleList(nn.Sequential(*_stride_stages(cfg, True, channels))
                                    for channels in (cfg.channels, cfg.channels_b))
        if cfg.latent_channels:  # a spatial latent: mean and log-variance maps at the base resolution
            top = cfg.width << (conv_stages(cfg.image_size) - 1)
            self.shared = nn.Sequential(*_base_convs(cfg, True), nn.Conv2d(top, 2 * cfg.latent_channels, 3, padding=1))
        else:
            self.shared = nn.Sequential(*_base_convs(cfg, True), nn.Flatten(),
                                        nn.Linear(_flat_features(cfg), 2 * cfg.latent_dim))

    def forward(self, x: torch.Tensor | tuple[torch.Tensor, ...], domain: Domains = 0
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(domain, int):
            h = self.fronts[domain](x)
        else:  # one chunk per domain, concatenated after their own stages
            h = torch.cat([self.fronts[d](chunk) for chunk, d in zip(x, domain)])
        mean, logvar = self.shared(h).chunk(2, dim=1)  # spatial: (B, C, base, base) each, flattened to (B, K)
        return mean.flatten(1), logvar.flatten(1)


class DomainDecoder(nn.Module):
    """cyclevae: z (B, K) -> images of domain A or B, in [-1, 1]. The mirror of DomainEncoder: the projection and the
    convs at the base resolution are shared, each domain has its own upsampling stages (the decoder's, nearest x2 +
    3x3 conv).

    forward(z, None, 0) decodes to A, (z, None, 1) to B; domain (0, 1) sends the first half of z to A and the second
    to B, and None decodes every latent into both domains (a tuple: (to A, to B)).

    With cfg.style_dim the shared layers take the content (z but its last style_dim values) and the style reaches
    the domain's own stages alone, as a per-channel scale and shift of the shared features (FiLM, Perez et al. 2018;
    MUNIT's AdaIN in spirit): a style can restyle every stroke alike but hardly say where the strokes go."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.shared = Decoder(dataclasses.replace(cfg, latent_dim=cfg.content_dim, style_dim=0,
                                                  invariance_weight=0.0))
        self.styles = None  # each domain's style -> a scale and a shift per shared channel
        if cfg.style_dim:
            self.styles = nn.ModuleList(nn.Linear(cfg.style_dim, 2 * self.shared.top) for _ in range(2))
            for film in self.styles:  # every style starts as no change
                nn.init.zeros_(film.weight)
                nn.init.zeros_(film.bias)
        # the shared Decoder's upsampling stages are replaced by the fronts below
        base = self.shared.net
        n_base = 3 * cfg.extra_convs  # conv, batch norm, ReLU per extra conv
        self.shared.net = nn.Sequential(*list(base)[:n_base])
        self.fronts = nn.ModuleList([nn.Sequential(*list(base)[n_base:]),
                                     nn.Sequential(*list(Decoder(dataclasses.replace(cfg, channels=cfg.channels_b))
                                                        .net)[n_base:])])

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None, domain: Domains | None = 0):
        style = None
        if self.styles is not None:  # the content to the shared layers, the style to the domain's own
            content = self.cfg.latent_dim - self.cfg.style_dim  # a constant: the graph's shapes stay known
            z, style = z[:, :content], z[:, content:]
        h = self.shared(z)  # (B, top, base, base)
        if domain is None:
            return tuple(self._front(d, h, style) for d in range(2))
        if isinstance(domain, int):
            return self._front(domain, h, style)
        n = len(domain)
        styles = (None,) * n if style is None else style.chunk(n)
        return tuple(self._front(d, chunk, s) for chunk, s, d in zip(h.chunk(n), styles, domain))

    def _front(self, domain: int, h: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        if style is not None:
            film, top = self.styles[domain](style)[:, :, None, None], self.shared.top  # sliced by constants
            scale, shift = film[:, :top], film[:, top:]
            h = h * (1 + scale) + shift
        return self.fronts[domain](h)


class DomainDiscriminators(nn.Module):
    """cyclevae: one Discriminator per domain (nothing shared): (x, None, d) -> domain d's (logit, features)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.domains = nn.ModuleList([Discriminator(cfg), Discriminator(dataclasses.replace(cfg, channels=cfg.channels_b))])

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None,
                domain: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        return self.domains[domain](x)


def unlabelled(cfg: ModelConfig) -> ModelConfig:
    """mvae: the config its image decoder and discriminator are built from. The joint model's label is a modality
    it encodes and decodes, not a condition: those two networks take none, as a VAE-GAN's."""
    return (dataclasses.replace(cfg, kind="vaegan", conditional=False, num_classes=0, text_dim=0)
            if cfg.kind == "mvae" else cfg)


LOGVAR_BOUND = 10.0  # mvae: experts' log-variances are bounded to +-10 (softly, by a tanh): precisions up to e^10
                     # stay finite in fp16


def _bounded(out: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An expert's (B, 2K) output -> (mean, logvar), logvar bounded by LOGVAR_BOUND. Static slices (not chunk), so the
    ONNX graph keeps its shapes for FLOP counting, and a tanh (not a Clip, whose fp16 bounds onnxconverter-common
    leaves in fp32)."""
    return out[:, :k], LOGVAR_BOUND * torch.tanh(out[:, k:] / LOGVAR_BOUND)


def product_of_experts(*experts: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The Gaussian posterior of the modalities observed: the N(0, I) prior times each expert's N(mean, exp(logvar))
    (Wu & Goodman 2018). Precisions add; the mean is the precision-weighted mean. -> (mean, logvar), each (B, K)."""
    if not experts:
        raise ValueError("a product of experts needs at least one expert beside the prior")
    precision, weighted = 1.0, 0.0
    for mean, logvar in experts:
        p = torch.exp(-logvar)
        precision = precision + p
        weighted = weighted + mean * p
    return weighted / precision, -torch.log(precision)


class MaskedEncoder(nn.Module):
    """mvae: the image's expert. (x (B, C, H, W), mask (B, 1, H, W), 1 observed) -> its Gaussian over the latent. The
    missing pixels are zeroed (mid-grey) and the mask is a channel of its own, so it knows what it did not see and
    widens its variance there. forward returns the posterior given the image (times the prior); expert() the expert
    alone, as training multiplies it with the label's."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        layers = _downsampling(cfg, batch_norm=True, in_channels=cfg.channels + 1)
        self.latent_dim = cfg.latent_dim
        self.net = nn.Sequential(*layers, nn.Linear(_flat_features(cfg), 2 * cfg.latent_dim))

    def expert(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if mask is None:
            mask = torch.ones_like(x[:, :1])
        # A pixel is observed where its mask is above 0.5 (a resized or soft mask is read as 0/1). One node reads the
        # graph input: onnxconverter-common's fp16 conversion fails on a graph input that several nodes read
        mask = (mask > 0.5).to(x.dtype)
        return _bounded(self.net(torch.cat([x * mask, mask], dim=1)), self.latent_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return product_of_experts(self.expert(x, mask))


class LabelEncoder(nn.Module):
    """mvae: the label's expert. labels (B,) -> its Gaussian over the latent: where that class's images lie. forward
    returns the posterior given the label (times the prior), expert() the expert alone."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.latent_dim, self.num_classes = cfg.latent_dim, cfg.num_classes
        # one-hot into a linear layer, not an embedding: the same map, and its int8 weights quantize per channel
        self.net = nn.Sequential(nn.Linear(cfg.num_classes, cfg.hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(cfg.hidden, cfg.hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(cfg.hidden, 2 * cfg.latent_dim))

    def expert(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _bounded(self.net(F.one_hot(labels, self.num_classes).float()), self.latent_dim)

    def forward(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return product_of_experts(self.expert(labels))


class CaptionEncoder(nn.Module):
    """mvae with captions: the caption's expert. A caption's sentence embedding (B, text_dim), from the frozen text
    encoder, -> its Gaussian over the latent: where the images it describes lie. forward returns the posterior given
    the caption (times the prior), expert() the expert alone."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.latent_dim = cfg.latent_dim
        self.net = nn.Sequential(nn.Linear(cfg.text_dim, cfg.hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(cfg.hidden, cfg.hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(cfg.hidden, 2 * cfg.latent_dim))

    def expert(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _bounded(self.net(embeddings), self.latent_dim)

    def forward(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return product_of_experts(self.expert(embeddings))


class Classifier(nn.Module):
    """mvae: the label's decoder. latents (B, K) -> class logits (B, num_classes)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(cfg.latent_dim, cfg.hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(cfg.hidden, cfg.num_classes))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class ContentDiscriminator(nn.Module):
    """cyclevae with content_adv_weight: the shared content codes (B, K - style_dim), flattened -> one logit each,
    > 0 for "from domain A's encoder", < 0 for B's (DRIT's content discriminator, Lee et al. 2018, on a code
    vector: an MLP)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(cfg.content_dim, cfg.hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(cfg.hidden, cfg.hidden), nn.LeakyReLU(0.2), nn.Linear(cfg.hidden, 1))

    def forward(self, content: torch.Tensor) -> torch.Tensor:
        return self.net(content.flatten(1)).squeeze(1)


class PixelClassifier(nn.Module):
    """cyclevae with domain A's labels: a classifier of A's images (classifier_b: of B's, where B is labelled too),
    (B, C, H, W) -> logits (B, classes): the
    discriminator's conv layers (no batch norm: it also reads translations, which must not move its statistics),
    then a linear layer."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.net = nn.Sequential(*_downsampling(cfg, batch_norm=False), nn.Linear(_flat_features(cfg), cfg.num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


_BUILDERS = {
    "encoder": lambda cfg: (CoarseEncoder(cfg) if cfg.kind == "hier" else DomainEncoder(cfg) if cfg.kind == "cyclevae"
                            else MaskedEncoder(cfg) if cfg.kind == "mvae" else Encoder(cfg)),
    "decoder": lambda cfg: DomainDecoder(cfg) if cfg.kind == "cyclevae" else Decoder(unlabelled(cfg)),
    "discriminator": lambda cfg: (JointDiscriminator(cfg) if cfg.kind == "ali" else
                                  PairDiscriminator(cfg) if cfg.kind == "hier" else
                                  DomainDiscriminators(cfg) if cfg.kind == "cyclevae" else Discriminator(unlabelled(cfg))),
    "label_encoder": LabelEncoder,
    "caption_encoder": CaptionEncoder,
    "classifier": lambda cfg: PixelClassifier(cfg) if cfg.kind == "cyclevae" else Classifier(cfg),
    "classifier_b": lambda cfg: PixelClassifier(dataclasses.replace(cfg, channels=cfg.channels_b)),
    "content_discriminator": ContentDiscriminator,
    "prior_encoder": PriorEncoder,
    "prior_decoder": PriorDecoder,
    "coarse": CoarseDecoder,
    "detail": DetailGenerator,
}


def build_networks(cfg: ModelConfig) -> nn.ModuleDict:
    """The networks of the model kind, by name (config.NETWORKS)."""
    if cfg.conditional and not cfg.text_conditioned and cfg.num_classes < 2:
        raise BadInputError(f"a conditional model needs the number of classes (>= 2) before its networks are built, "
                            f"got {cfg.num_classes}")
    return nn.ModuleDict({name: _BUILDERS[name](cfg) for name in cfg.networks})


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
