"""Model and training configs: frozen dataclasses that validate themselves and round-trip through JSON."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from dataclasses import dataclass, field

from gvtool.errors import BadInputError
from gvtool.fileio import load_json_bounded
from gvtool.manifest import MODEL_KINDS, TEXT_KINDS

# The networks each model kind trains, by name (models.build_networks builds them). A prior run also holds its base
# run's encoder and decoder, frozen: FROZEN names them.
NETWORKS = {
    "vaegan": ("encoder", "decoder", "discriminator"),
    "vae": ("encoder", "decoder"),
    "gan": ("decoder", "discriminator"),
    "ali": ("encoder", "decoder", "discriminator"),    # discriminator on (item, latent) pairs
    "prior": ("encoder", "decoder", "prior_encoder", "prior_decoder"),
    "hier": ("encoder", "coarse", "detail", "discriminator"),
    "cyclevae": ("encoder", "decoder", "discriminator"),  # each holds both domains' layers (models.Domain*)
    # the image's expert (a partly observed image with its mask), the label's expert, and a decoder per modality
    "mvae": ("encoder", "label_encoder", "decoder", "classifier", "discriminator"),
}
FROZEN = {"prior": ("encoder", "decoder")}
PRIOR_BASES = ("vaegan", "vae", "ali")  # the kinds a prior can learn the codes of: an encoder, and a decoder of latents
GAN_LOSSES = ("hinge", "bce")
AUGMENTATIONS = ("translation", "cutout")  # DiffAugment's policies that suit digits (colour would not)
# What a config written before a field existed meant by it: old runs load and resume as they trained.
LEGACY_MODEL_FIELDS = {"gan_loss": "bce", "spectral_norm": False, "augment": (), "ema_decay": 0.0, "extra_convs": 0,
                       "mapping_layers": 0}
TRAIN_PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # --precision of training (autocast); a bundle's are manifest.PRECISIONS
# What a resumed run may change; anything else would break the exact continuation.
RESUME_OVERRIDES = ("epochs", "device", "precision", "cuda_graphs")
CUDA_GRAPHS = ("auto", "on", "off")
# Image defaults on CUDA train this many times the CPU default's epochs (see TrainConfig.defaults_for): 140 MNIST
# epochs take about as long on an H200 with today's loop (~2,300 items/s) as 35 do on 2 CPU cores.
CUDA_EPOCH_FACTOR = 4
MAX_WIDTH = 1024        # conv channels of the first stage (the default is 32)
MAX_HIDDEN = 16384      # MLP units (the default is 128)
MAX_BATCH = 1 << 16
MAX_EPOCHS = 1_000_000
CYCLE_EPOCHS = 20       # cyclevae: epochs of domain A in the CPU default
MVAE_EPOCHS = 25        # mvae: a step decodes two subsets of the modalities and prior samples: 25 epochs take
                        # about the time of the vaegan's 35 (289-356 s on 2 cores)
COARSE_FACTOR = 4       # hier: the coarse stage's images are average-pooled by this factor per side (28 -> 7)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise BadInputError(message)


def _known_fields(cls, data: dict, what: str) -> dict:
    _check(isinstance(data, dict), f"{what} must be a JSON object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    _check(not unknown, f"{what} has unknown keys {unknown}; expected some of {sorted(names)}")
    for name, value in data.items():
        _check_type(cls.__annotations__[name], value, f"{what} {name}")
    return data


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_TYPE_CHECKS = {  # the annotations the configs use -> (test, what it expects)
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "float": (_is_number, "a finite number"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "int | None": (lambda v: v is None or isinstance(v, int) and not isinstance(v, bool), "an integer or null"),
    "str | None": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "tuple[float, ...]": (lambda v: isinstance(v, (list, tuple)) and all(map(_is_number, v)), "a list of finite numbers"),
    "tuple[str, ...]": (lambda v: isinstance(v, (str, list, tuple)) and all(isinstance(a, str) for a in
                                                                           ([v] if isinstance(v, str) else v)),
                        "a list of strings"),
    "ModelConfig": (lambda v: isinstance(v, (dict, ModelConfig)), "an object"),
}


def _check_type(annotation: str, value, what: str) -> None:
    """A stored config's value against its field's annotation: what JSON can hold that the field cannot (a string
    for a size, 1e400 for a count, a dict for a data source) is refused with the field's name."""
    test, expected = _TYPE_CHECKS[annotation]
    _check(test(value), f"{what} must be {expected}, got {json.dumps(value)[:60] if _jsonable(value) else repr(value)}")


def _jsonable(value) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def conv_stages(image_size: int) -> int:
    """How many stride-2 stages take `image_size` down to a base side below 8 (or to an odd side).

    28 -> 2 stages (base 7), 32 -> 3 (base 4), 64 -> 4 (base 4), 36 -> 2 (base 9).
    """
    stages = 0
    while image_size >= 8 and image_size % 2 == 0:
        image_size //= 2
        stages += 1
    return stages


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the networks and their losses (stored in every checkpoint)."""

    kind: str = "vaegan"
    conditional: bool = False
    num_classes: int = 0            # conditional: filled in from the labelled data; 0 until then
    text_dim: int = 0               # text-conditioned (--captions): the sentence embedding's size (384, filled in when
                                    # training starts); the decoder and discriminator take it in place of labels,
                                    # or (mvae) a caption expert takes it, a third modality beside images and labels
    data_kind: str = "image"        # "image" (conv nets) or "vector" (MLPs)
    channels: int = 1               # images: 1 or 3
    channels_b: int = 0             # cyclevae: domain B's channels (1 or 3, from its data); 0 for every other model
    image_size: int = 28            # images: square side, a multiple of 4 from 16 to 64
    vector_dim: int = 2             # vectors: item size
    latent_dim: int = 16            # MNIST: 16 gave clearer prior samples than 32 at the same budget
    width: int = 32                 # conv: channels after the stem, doubled at each stride; decoder mirrors it
    extra_convs: int = 1            # conv: 3x3 convs (c -> c) at the base resolution (7x7 on MNIST), in the decoder,
                                    # encoder and discriminator alike; MNIST seed 0: FD 24.9 -> 14.1 for 1.4x the
                                    # step time (2: 30.1, worse; wider nets or twice the epochs gained less per second)
    mapping_layers: int = 0         # conv: fully connected layers of `hidden` units between the latent and the decoder's
                                    # projection (MNIST seed 0, 2 layers: more confident digits, 64% against 53%, but
                                    # FD 21 against 14 and worse reconstructions beside extra_convs)
    hidden: int = 128               # MLP hidden units (vector data; the decoder's mapping layers for images)
    mlp_layers: int = 2             # MLP hidden layers (vector data), in the encoder, decoder and discriminator alike
    vector_mean: tuple[float, ...] = ()  # vector data: per-feature mean and std of the training data, filled in when the
    vector_std: tuple[float, ...] = ()   # data loads; the networks standardise with them inside (empty: no scaling)
    kl_weight: float = 2.0          # beta on KL(q(z|x) || N(0, I)), nats summed over latent dims; 2 keeps the codes
                                    # near the prior, so prior samples look like reconstructions (clearer MNIST digits)
    recon_sigma: float = 0.2        # std of the Gaussian pixel likelihood on the [-1, 1] scale (vae; vaegan's pixel term)
    pixel_weight: float = 0.0       # vaegan: share of the pixel likelihood kept beside the feature one (0 = pure Larsen)
    feature_weight: float = 0.1     # vaegan: gamma on the feature likelihood in the decoder's loss; at 1 it drowns
                                    # the adversarial terms and prior samples stay blurred (Larsen et al. use gamma < 1)
    adv_weight: float = 1.0         # vaegan/gan: weight of the adversarial terms in the decoder's loss
    r1_weight: float = 0.0          # vaegan/gan: gamma of the R1 penalty gamma/2 * E||grad_x D(x)||^2 on real items
                                    # (Mescheder et al. 2018): keeps D from sharp cliffs that drive mode hopping
    gan_loss: str = "hinge"         # vaegan/gan: hinge (Lim & Ye 2017; Miyato et al. 2018) or bce (non-saturating);
                                    # the 2-D mixtures keep bce (see defaults_for)
    spectral_norm: bool = True      # vaegan/gan: spectral norm on every D layer (Miyato et al. 2018): a 1-Lipschitz
                                    # D whose gradients stay useful to the decoder as it sharpens. Not for the 2-D
                                    # mixtures: a 1-Lipschitz D cannot tell a mode's centre (std 0.01) from a point
                                    # 0.03 away by more than 0.03 in its logit (ring8 seed 0: 0 modes with it)
    augment: tuple[str, ...] = ()   # images: DiffAugment policies (Zhao et al. 2020) applied alike to every item D
                                    # sees, real and generated, so D cannot memorise the training set. Off: in the
                                    # 3,500 steps of the MNIST default it slows learning (seed 0: FD 24.9 -> 40.7)
    prior_latent_dim: int = 0       # prior: the second VAE's latent size (0: the base's latent_dim, as Dai & Wipf 2019)
    prior_hidden: int = 256         # prior: hidden units of the second VAE's MLPs
    prior_layers: int = 3           # prior: hidden layers of each of its MLPs
    prior_free_bits: float = 0.5    # prior: nats per dimension of its latent that its KL term leaves free ("free bits",
                                    # Kingma et al. 2016). Without them it collapsed on ring8's vaegan (KL 0.1 nats:
                                    # it learnt one Gaussian over the codes, 97.9% high quality); with 0.5 it kept 4.8
                                    # nats and sampled 98.7% (N(0, I): 98.2%)
    base_kind: str = ""             # prior: the kind of the run whose codes it learns (vaegan, vae or ali)
    detail_dim: int = 16            # hier: size of the detail stage's own noise
    structure_weight: float = 1.0   # hier: weight of the Gaussian likelihood (recon_sigma) of the coarse input given
                                    # the detail stage's output, pooled back to the coarse size: keeps the detail true
                                    # to the structure it was given (0 for vector data: there the coarse item is a
                                    # whole, blurred item, which the detail must move, not keep)
    latent_channels: int = 0        # cyclevae: > 0 makes the shared latent spatial, this many maps at the convs' base
                                    # resolution (UNIT's latent is a feature map too), so latent_dim becomes
                                    # latent_channels * base**2 (8 * 7 * 7 = 392 at 28 px); 0: a flat latent_dim vector
    label_weight: float = 50.0      # mvae: weight of the label's likelihood (cross-entropy, nats) beside the image's,
                                    # which sums hundreds of features: MVAE (Wu & Goodman 2018) weighs MNIST's label 50
    class_weight: float = 0.0       # cyclevae: > 0 when domain A is labelled (a domain-adaptation setting): a classifier
                                    # of A's images learns A's labels, and translations must keep the class it reads
                                    # (CyCADA's semantic consistency); the weight of that cross-entropy, which trains the
                                    # encoders alone (not the decoders). 0: unsupervised
    classes_b: int = 0              # cyclevae with class_weight: domain B's classes, where B is labelled with as many as
                                    # A (the same classes): B's own classifier then reads A's translations into B
    content_adv_weight: float = 0.0  # cyclevae: > 0 adds a discriminator of the shared content codes that tells domain
                                    # A's from B's, and the encoders learn to leave it guessing (DRIT's content
                                    # adversary, Lee et al. 2018), with this weight: one domain's codes must not sit
                                    # apart from the other's where its decoder has never learnt to draw
    invariance_weight: float = 0.0  # cyclevae with style_dim: > 0 asks each domain's content code to stay the same when
                                    # the image's colours are inverted or its channels reordered (augment.recolour),
                                    # with this weight on the squared distance: what the colours say goes to the style.
                                    # With the class term on the decoders too, 5 made MNIST-M's dark strokes over light
                                    # patches read as digits (seed 1: 70% kept their class into MNIST against 18%);
                                    # with it on the encoders alone it cost 2-4 points
    style_dim: int = 0              # cyclevae: the last style_dim values of the flat latent are each domain's own
                                    # (MUNIT, Huang et al. 2018: a shared content code, a style code per domain): a
                                    # translation decodes the source's content with a style of the target's prior,
                                    # and the cycle gives the source its own style back. 0: the whole code is shared.
                                    # Not the default: unsupervised mnist <-> digits with 4 kept 46.0% / 55.0% of
                                    # digits' classes at seed 0 (shared code: 39.2% / 41.1%) but 12.6% / 15.6% at
                                    # seed 1, the style taking the class; with both domains' labels 4 kept 93.2% /
                                    # 95.9% over three seeds (shared code, seed 0: 91.8% / 94.4%)
    cycle_weight: float = 1.0       # cyclevae: weight of the cycle terms (A -> B -> A and B -> A -> B), measured like
                                    # the reconstruction they extend
    ema_decay: float = 0.999        # decoder weights averaged over ~1/(1-decay) steps (Karras et al. 2018; Yazici et
                                    # al. 2019); the average samples, exports and evaluates; 0 turns it off. MNIST
                                    # seed 0: FD 31.7 -> 24.9 at no measurable cost

    def __post_init__(self) -> None:
        _check(self.kind in MODEL_KINDS, f"unknown model {self.kind!r}; expected one of {', '.join(MODEL_KINDS)}")
        _check(self.data_kind in ("image", "vector"), f"data_kind must be 'image' or 'vector', got {self.data_kind!r}")
        if self.conditional:
            _check(self.num_classes == 0 or self.num_classes >= 2,
                   f"a conditional model needs >= 2 classes, got {self.num_classes}")
        else:
            _check(self.num_classes == 0 or self.class_weight > 0,  # a translation model learning domain A's classes
                   f"an unconditional model has num_classes 0, got {self.num_classes}")
        if self.data_kind == "image":
            _check(self.channels in (1, 3), f"images must have 1 or 3 channels, got {self.channels}")
            _check(16 <= self.image_size <= 64 and self.image_size % 4 == 0,
                   f"--image-size must be a multiple of 4 from 16 to 64, got {self.image_size}")
        else:
            _check(self.vector_dim >= 1, f"vector_dim must be >= 1, got {self.vector_dim}")
        for name in ("vector_mean", "vector_std"):  # JSON gives lists: keep tuples, so configs compare equal
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        _check(len(self.vector_mean) == len(self.vector_std) and len(self.vector_std) in (0, self.vector_dim),
               f"vector_mean and vector_std must both be empty or have vector_dim ({self.vector_dim}) values, got "
               f"{len(self.vector_mean)} and {len(self.vector_std)}")
        _check(all(math.isfinite(m) for m in self.vector_mean) and all(v > 0 and math.isfinite(v) for v in self.vector_std),
               f"vector_std must be finite and > 0 and vector_mean finite, got {self.vector_mean}, {self.vector_std}")
        _check(1 <= self.latent_dim <= 4096, f"--latent-dim must be from 1 to 4096, got {self.latent_dim}")
        # Bounds on sizes: far above anything trained here, far below what would exhaust a machine's memory
        # (--width 1000000 asked torch for 128 TB)
        _check(4 <= self.width <= MAX_WIDTH and 4 <= self.hidden <= MAX_HIDDEN,
               f"--width must be from 4 to {MAX_WIDTH} and --hidden from 4 to {MAX_HIDDEN}, got {self.width}, {self.hidden}")
        _check(1 <= self.mlp_layers <= 16, f"--mlp-layers must be from 1 to 16, got {self.mlp_layers}")
        _check(0 <= self.num_classes <= 1 << 16, f"num_classes must be from 0 to 65536, got {self.num_classes}")
        _check(1 <= self.vector_dim <= 1 << 16, f"vector_dim must be from 1 to 65536, got {self.vector_dim}")
        _check(0 <= self.extra_convs <= 8, f"extra_convs must be from 0 to 8, got {self.extra_convs}")
        _check(0 <= self.mapping_layers <= 8, f"mapping_layers must be from 0 to 8, got {self.mapping_layers}")
        for name in ("kl_weight", "pixel_weight", "feature_weight", "adv_weight", "r1_weight"):
            _check(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        _check(self.recon_sigma > 0, f"recon_sigma must be > 0, got {self.recon_sigma}")
        _check(self.gan_loss in GAN_LOSSES, f"unknown gan_loss {self.gan_loss!r}; expected one of {', '.join(GAN_LOSSES)}")
        augment = (self.augment,) if isinstance(self.augment, str) else self.augment
        object.__setattr__(self, "augment", tuple(a for a in augment if a))  # JSON gives a list; "" is none
        unknown = [a for a in self.augment if a not in AUGMENTATIONS]
        _check(not unknown, f"unknown augmentation {unknown}; expected some of {', '.join(AUGMENTATIONS)}")
        _check(not self.augment or self.data_kind == "image",
               f"augmentations {list(self.augment)} apply to images only, not to {self.data_kind} data")
        _check(isinstance(self.spectral_norm, bool), f"spectral_norm must be true or false, got {self.spectral_norm!r}")
        _check(0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay}")
        _check(0 <= self.prior_latent_dim <= 4096 and 4 <= self.prior_hidden <= MAX_HIDDEN
               and 1 <= self.prior_layers <= 16,
               f"the prior's sizes must be latent 0 to 4096, hidden 4 to {MAX_HIDDEN} and layers 1 to 16, got "
               f"{self.prior_latent_dim}, {self.prior_hidden}, {self.prior_layers}")
        _check(self.kind != "prior" or self.base_kind in PRIOR_BASES,
               f"a prior learns the codes of a {' or '.join(PRIOR_BASES)} run, not of {self.base_kind or 'nothing'!r}")
        _check(1 <= self.detail_dim <= 4096, f"--detail-dim must be from 1 to 4096, got {self.detail_dim}")
        _check(self.structure_weight >= 0, f"structure_weight must be >= 0, got {self.structure_weight}")
        _check(0 <= self.prior_free_bits <= 100, f"prior_free_bits must be from 0 to 100, got {self.prior_free_bits}")
        _check(self.cycle_weight >= 0, f"cycle_weight must be >= 0, got {self.cycle_weight}")
        _check(self.style_dim == 0 or self.kind == "cyclevae",
               f"--style-dim gives each domain of a translation model a style code; a {self.kind} model has one domain")
        _check(self.style_dim == 0 or not self.latent_channels,
               "--style-dim splits a flat latent; a spatial one (--latent-channels) has no style part")
        _check(0 <= self.style_dim < self.latent_dim,
               f"--style-dim must be from 0 to --latent-dim - 1 ({self.latent_dim - 1}): the rest is the shared "
               f"content, got {self.style_dim}")
        _check(0 <= self.text_dim <= 4096, f"text_dim must be from 0 to 4096, got {self.text_dim}")
        if self.text_dim:
            _check(self.conditional, "a text-conditioned model (text_dim > 0) is conditional")
            _check(self.kind in (*TEXT_KINDS, "mvae"), f"--captions conditions a {', '.join(TEXT_KINDS)} model on "
                                                       f"text, or give a joint model (mvae) a third modality; not a {self.kind}")
            _check(self.data_kind == "image", "--captions describe images, not vector data")
        if self.kind == "cyclevae":
            _check(self.data_kind == "image", "--model cyclevae translates between two image domains, not vector data")
            _check(not self.conditional, "--model cyclevae is unconditional: it learns from unpaired, unlabelled "
                                         "domains (--conditional does not apply)")
            _check(self.channels_b in (0, 1, 3), f"channels_b must be 1 or 3, got {self.channels_b}")
        else:
            _check(self.channels_b == 0, f"channels_b is for --model cyclevae, not {self.kind}")
        _check(self.label_weight >= 0, f"label_weight must be >= 0, got {self.label_weight}")
        _check(self.class_weight >= 0, f"class_weight must be >= 0, got {self.class_weight}")
        _check(self.classes_b == 0 or (self.class_weight > 0 and self.classes_b == self.num_classes),
               f"classes_b is domain B's classes beside domain A's under --class-weight, got {self.classes_b}")
        _check(self.content_adv_weight >= 0, f"content_adv_weight must be >= 0, got {self.content_adv_weight}")
        _check(self.content_adv_weight == 0 or self.kind == "cyclevae",
               f"--content-adv-weight aligns a translation model's two domains' codes; a {self.kind} model has one domain")
        _check(self.invariance_weight >= 0, f"invariance_weight must be >= 0, got {self.invariance_weight}")
        _check(self.invariance_weight == 0 or self.style_dim > 0,
               "--invariance-weight needs --style-dim: the style keeps the colours the content code is made to ignore")
        _check(self.class_weight == 0 or self.kind == "cyclevae",
               f"--class-weight teaches a translation model domain A's classes; a {self.kind} model has none")
        if self.kind == "mvae":
            _check(self.data_kind == "image", "--model mvae models images with their labels, not vector data")
            _check(self.conditional, "--model mvae learns images with their labels (labelled data)")
        _check(0 <= self.latent_channels <= 256, f"--latent-channels must be from 0 to 256, got {self.latent_channels}")
        if self.latent_channels:
            _check(self.kind == "cyclevae", f"--latent-channels (a spatial latent) is for --model cyclevae, not {self.kind}")
            _check(self.mapping_layers == 0, "--mapping-layers act on a flat latent; a spatial one (--latent-channels) "
                                             "goes straight to the convs")
            side = self.image_size >> conv_stages(self.image_size)
            object.__setattr__(self, "latent_dim", self.latent_channels * side * side)
            _check(self.latent_dim <= 4096, f"--latent-channels {self.latent_channels} at {self.image_size} px makes a "
                                            f"latent of {self.latent_dim} values; at most 4096")

    @property
    def content_dim(self) -> int:
        """cyclevae: the content part of the flat latent, the values both domains share (all but the style)."""
        return self.latent_dim - self.style_dim

    @property
    def text_conditioned(self) -> bool:
        """Whether the networks take a sentence embedding in place of labels (--captions on a vaegan, vae or gan); a
        joint model's caption is a modality of its own instead (its caption expert)."""
        return self.text_dim > 0 and self.kind != "mvae"

    @property
    def condition_size(self) -> int:
        """What a conditional network takes beside its input: a sentence embedding's size, or the one-hot classes."""
        return self.text_dim if self.text_conditioned else (self.num_classes if self.conditional else 0)

    @property
    def networks(self) -> tuple[str, ...]:
        """Every network of the model, by name (a translation model that learns domain A's classes has a classifier
        of A's images too, and one that aligns its domains' codes a discriminator of its content codes; a joint
        model with captions, the caption's expert)."""
        return NETWORKS[self.kind] + (("classifier",) if self.class_weight > 0 else ()) + (
            ("classifier_b",) if self.classes_b else ()) + (
            ("content_discriminator",) if self.content_adv_weight > 0 else ()) + (
            ("caption_encoder",) if self.kind == "mvae" and self.text_dim else ())

    @property
    def trained(self) -> tuple[str, ...]:
        """The networks training updates (a prior's base encoder and decoder stay as the base run left them)."""
        return tuple(n for n in self.networks if n not in FROZEN.get(self.kind, ()))

    @property
    def has_encoder(self) -> bool:
        return "encoder" in self.networks

    @property
    def averaged(self) -> str | None:
        """The network whose weight average samples and exports (ema_decay > 0): the generator of items."""
        if self.ema_decay <= 0 or self.kind == "prior":
            return None
        return "detail" if self.kind == "hier" else "decoder"

    @property
    def noise_dim(self) -> int:
        """The size of the noise sampling starts from: the prior's own latent, else the latent."""
        return (self.prior_latent_dim or self.latent_dim) if self.kind == "prior" else self.latent_dim

    @property
    def coarse_shape(self) -> tuple[int, ...]:
        """hier: the coarse item: images at 1/4 of the side (COARSE_FACTOR), vectors whole."""
        if self.data_kind == "image":
            return (self.channels, self.image_size // COARSE_FACTOR, self.image_size // COARSE_FACTOR)
        return (self.vector_dim,)

    @property
    def item_shape(self) -> tuple[int, ...]:
        if self.data_kind == "image":
            return (self.channels, self.image_size, self.image_size)
        return (self.vector_dim,)

    @property
    def item_shape_b(self) -> tuple[int, ...]:
        """cyclevae: domain B's images, at domain A's size."""
        return (self.channels_b, self.image_size, self.image_size)

    def item_shape_of(self, domain: int) -> tuple[int, ...]:
        """The items of domain 0 (A: every model's items) or 1 (B, a translation model's)."""
        return self.item_shape if domain == 0 else self.item_shape_b

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        """A config from JSON; fields it predates take the meaning they had before they existed."""
        return cls(**(LEGACY_MODEL_FIELDS | _known_fields(cls, data, "model config")))


@dataclass(frozen=True)
class TrainConfig:
    """How a run trains. The model part is filled in from the data once it is loaded."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: str = "mnist"
    image_size: int | None = None   # None: the data's own size when valid, else 32 (see data.load_dataset)
    epochs: int = 35                # the default MNIST run, under 5 minutes on 2 CPU cores: FD 10.1 -> 9.4 (seed 0) and
                                    # 10.9 -> 8.9 (seed 1) against 25 epochs
    batch_size: int = 32            # 4,500 digits: more updates per epoch beat bigger batches on a small CPU budget
    lr: float = 5e-4                # Adam for every network; 2e-4 (DCGAN) learnt the small nets too slowly
    beta1: float = 0.0              # Adam (0, 0.9), as SNGAN and BigGAN train hinge + spectral norm: MNIST FD 12.6 ->
    beta2: float = 0.9              # 10.1 (seed 0) and 14.5 -> 10.9 (seed 1) against DCGAN's (0.5, 0.999)
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"         # auto: fp32 on CPU, bf16 (or fp16 without bf16) autocast on CUDA
    cuda_graphs: str = "auto"       # capture the training step as one CUDA graph (train/captured.py): auto where it
                                    # can (CUDA, one process, fp32 or bf16), on (or refuse), off
    val_fraction: float = 0.1       # held out of training for reconstruction error and evaluation
    split_seed: int = 0             # fixed, so every training seed holds out the same items
    n_vectors: int = 20_000         # items drawn for the 2-D mixtures
    log_every: int = 25             # steps per metrics flush: per-step rows without a host sync per step
    n_fixed: int = 64               # fixed latents for the per-epoch sample grid
    base: str | None = None         # prior: the run folder whose encoder's codes it learns (copied in at the start)
    data_b: str | None = None       # cyclevae: domain B's data (as --data), loaded at domain A's image size
    captions: str | None = None     # text conditioning: "builtin" (captions made from the digits, train/captions.py)
                                    # or a captions file (.txt, .json or .csv) for the images of --data

    def __post_init__(self) -> None:
        _check(isinstance(self.model, ModelConfig), "model must be a ModelConfig")
        _check(self.image_size is None or (16 <= self.image_size <= 64 and self.image_size % 4 == 0),
               f"--image-size must be a multiple of 4 from 16 to 64, got {self.image_size}")
        _check(1 <= self.epochs <= MAX_EPOCHS, f"--epochs must be from 1 to {MAX_EPOCHS:,}, got {self.epochs}")
        _check(2 <= self.batch_size <= MAX_BATCH,
               f"--batch-size must be from 2 (batch norm needs two items) to {MAX_BATCH}, got {self.batch_size}")
        _check(self.lr > 0, f"--lr must be > 0, got {self.lr}")
        _check(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, f"Adam betas must be in [0, 1), got {self.beta1}, {self.beta2}")
        _check(self.precision in TRAIN_PRECISIONS,
               f"unknown --precision {self.precision!r}; expected one of {', '.join(TRAIN_PRECISIONS)}")
        _check(self.cuda_graphs in CUDA_GRAPHS,
               f"unknown --cuda-graphs {self.cuda_graphs!r}; expected one of {', '.join(CUDA_GRAPHS)}")
        _check(0 <= self.val_fraction <= 0.5, f"val_fraction must be in [0, 0.5], got {self.val_fraction}")
        _check(10 <= self.n_vectors <= 10**8, f"n_vectors must be from 10 to 100,000,000, got {self.n_vectors}")
        _check(self.captions is None or self.model.conditional,
               "--captions conditions the model on text: it needs model.conditional")
        _check(self.data_b is None or self.model.kind == "cyclevae",
               f"--data-b is domain B of --model cyclevae; a {self.model.kind} model learns one domain")
        _check(1 <= self.log_every <= 10**6 and 1 <= self.n_fixed <= 4096,
               f"log_every must be from 1 to 1,000,000 and n_fixed from 1 to 4096, got {self.log_every}, {self.n_fixed}")

    @classmethod
    def defaults_for(cls, data: str, device: str = "cpu", kind: str = "vaegan") -> "TrainConfig":
        """The defaults of a model kind for a data source on a device type ("cpu" or "cuda", as --device resolves).

        The 2-D mixtures (20,000 points) take a small latent, batches of 128 at lr 1e-3 for 170 epochs (~24k steps),
        a VAE-GAN gamma of 0.03 and the plain ELBO's KL weight of 1: at batch 32 / 20 epochs every model smeared the
        grid's modes into lines (under 20% high quality); gamma 0.1 kept the grid's VAE-GAN samples softer (71% high
        quality against 88% at 0.03, seed 0), and KL weight 2 let one seed in three spread them unevenly (KL to
        uniform 0.088 against 0.015 at 1, seed 1). They keep the BCE loss without spectral norm (with both, ring8
        seed 0 covered no mode; hinge alone: grid25 81% against 88%), and take the decoder's weight average like
        every model, and DCGAN's Adam betas (0.5, 0.999), with which they were measured. Batch 128 in place of 256
        (seeds 0 and 1, 2 threads): grid25 94.0% / 94.7% high quality against 88.3% / 86.2%, ring8 97.7% / 97.2%
        against 95.6% / 95.5%, for about 84 s a run against 55 s. The gain is more updates, not more items: batch 256
        for 280 epochs (the same steps) gave about the same, batch 512 for 280 epochs 81% on grid25 and batch 64 for
        70 epochs 91%. 170 epochs in place of 140 (about 100 s a run, inside the 2-minute budget) on the weakest
        seeds: grid25 seeds 2 and 4 95.0% / 95.4% against 93.6% / 93.4%, ring8 seeds 1 and 4 97.7% / 97.9% against
        97.2% / 97.0%; over seeds 0-4 x 1 and 2 threads, ring8 97.2-98.2% and grid25 94.5-95.9%.

        On CUDA, images train CUDA_EPOCH_FACTOR times the epochs, on the same networks and batch (so the exported
        model and its edge latency do not change). The CPU defaults are sized to a few minutes on 2 cores; on a GPU
        the same minutes buy longer training. The MNIST default continued on the CPU (seeds 0 and 1, mean of the
        two) at 35 / 70 / 105 / 140 epochs: FD 9.2 / 8.3 / 8.1 / 8.3, confidently classified 65.4% / 66.9% / 67.6% /
        67.8%, precision 0.79 / 0.82 / 0.82 / 0.83, held-out reconstruction 0.11 / 0.09 / 0.08 / 0.07: a steady
        gain, small beside the techniques in ModelConfig. The 2-D mixtures keep their defaults: their steps are too
        small to fill a GPU."""
        if device not in ("cpu", "cuda"):
            raise ValueError(f"defaults_for takes a device type, 'cpu' or 'cuda', not {device!r}")
        config = cls._data_defaults(data, device)
        # a joint model of images and labels learns from labelled data, always
        config = config.replace(model=dataclasses.replace(config.model, kind=kind, conditional=kind == "mvae"))
        factor = CUDA_EPOCH_FACTOR if device == "cuda" else 1
        if kind == "cyclevae":  # a step trains both domains' networks both ways: CYCLE_EPOCHS of A
            config = config.replace(epochs=CYCLE_EPOCHS * factor)
        if kind == "mvae":
            config = config.replace(epochs=MVAE_EPOCHS * factor)
        return config

    @classmethod
    def _data_defaults(cls, data: str, device: str) -> "TrainConfig":
        if data in ("ring8", "grid25"):
            model = ModelConfig(latent_dim=8, feature_weight=0.03, kl_weight=1.0, gan_loss="bce", spectral_norm=False,
                                structure_weight=0.0)
            return cls(data=data, model=model, epochs=170, batch_size=128, lr=1e-3, beta1=0.5, beta2=0.999)
        factor = CUDA_EPOCH_FACTOR if device == "cuda" else 1
        if data == "stacked-mnist":  # 18,000 training stacks: 9 epochs are about the steps of the MNIST default
            return cls(data=data, epochs=9 * factor)
        return cls(data=data, epochs=cls.epochs * factor)

    @classmethod
    def for_prior(cls, base: "TrainConfig", base_dir: str | Path) -> "TrainConfig":
        """A prior over the codes of the run `base_dir` (config `base`): the base's model and data, and the second
        VAE's own training: Adam (0.9, 0.999) at lr 1e-3, batches of 128, about 5,000 steps (150 epochs of the 4,500
        MNIST digits; 40 of a 2-D mixture's 18,000 points or Stacked MNIST's 18,000 stacks). The base's decoder is
        taken as it samples (its weight average), so the prior run keeps no average of its own."""
        _check(base.model.kind in PRIOR_BASES, f"--base {base_dir} is a {base.model.kind} run; a prior learns the codes "
                                               f"of a {', '.join(PRIOR_BASES)} run (one with an encoder)")
        model = dataclasses.replace(base.model, kind="prior", base_kind=base.model.kind, ema_decay=0.0)
        epochs = 40 if base.data in ("ring8", "grid25", "stacked-mnist") else 150
        return cls(model=model, data=base.data, image_size=base.image_size, epochs=epochs, batch_size=128, lr=1e-3,
                   beta1=0.9, beta2=0.999, seed=base.seed, val_fraction=base.val_fraction, split_seed=base.split_seed,
                   n_vectors=base.n_vectors, base=str(Path(base_dir).resolve()))

    def resume_differences(self, stored: "TrainConfig") -> list[str]:
        """The fields (model fields as model.NAME) that differ from `stored` beyond RESUME_OVERRIDES."""
        now, then = self.to_dict(), stored.to_dict()
        fields = [k for k in now if k != "model" and k not in RESUME_OVERRIDES and now[k] != then[k]]
        return fields + [f"model.{k}" for k in now["model"] if now["model"][k] != then["model"][k]]

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_file(cls, path: str | Path) -> "TrainConfig":
        """A run's config.json; one BadInputError naming the file for anything that is not a valid config."""
        path = Path(path)
        if not path.is_file():
            raise BadInputError(f"{path.parent} has no {path.name}")
        try:
            return cls.from_dict(load_json_bounded(path, "run config"))
        except BadInputError as error:
            message = str(error)
            named = message if message.startswith(str(path)) else f"{path} is not a valid config: {message}"
            raise BadInputError(named) from None

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        data = dict(_known_fields(cls, data, "train config"))
        if isinstance(data.get("model"), dict):
            data["model"] = ModelConfig.from_dict(data["model"])
        return cls(**data)
