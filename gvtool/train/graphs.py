"""The graphs a model kind exports, as torch modules with named tensors, and the chains that run them.

One declaration serves every user of a trained model: export traces these modules (their tensor names and shapes
become the manifest's contract), the PyTorch baseline of `gvtool bench` times them, and a run samples and
reconstructs through them (snapshots, `gvtool eval` of a run), chained as manifest.CHAINS declares, so a run and
its bundle compute the same thing by the same wiring. Tensors are wired by name: a graph takes what earlier graphs
of its chain returned, the caller's labels, and draws any other input as noise.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from gvtool.manifest import (CAPTION_GRAPH, DOMAIN_GRAPHS, LABEL_POSTERIOR, MASK_INPUT, NOISE_INPUTS, TEXT_EMBEDDING,
                             TEXT_GRAPH, TEXT_INPUTS, item_name, model_graphs, restyled)
from gvtool.prompts import MAX_TOKENS
from gvtool.train.config import ModelConfig
from gvtool.train.models import unlabelled
from gvtool.train.text import load_text_encoder

Tensor = tuple[str, str, tuple[int, ...]]  # name, dtype, shape after the batch axis
LABELS: Tensor = ("labels", "int64", ())


def condition_input(cfg: ModelConfig) -> Tensor | None:
    """The condition a conditional model's graphs take: labels, or a text-conditioned model's sentence embeddings."""
    if not cfg.conditional:
        return None
    return (TEXT_EMBEDDING, "float32", (cfg.text_dim,)) if cfg.text_conditioned else LABELS


class Graph(nn.Module):
    """A module whose forward takes `inputs` positionally and returns `outputs`, named as in the manifest."""

    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.conditional = cfg.conditional
        self.condition = condition_input(cfg)

    def _labelled(self, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return inputs + ((self.condition,) if self.condition else ())


class EncoderGraph(Graph):
    """items (B, *item) -> mean, logvar (B, K): the posterior, without sampling. The encoder takes no labels."""

    def __init__(self, cfg: ModelConfig, encoder: nn.Module):
        super().__init__(cfg)
        self.encoder = encoder
        self.inputs = ((item_name(cfg.data_kind), "float32", cfg.item_shape),)
        self.outputs = (("mean", "float32", (cfg.latent_dim,)), ("logvar", "float32", (cfg.latent_dim,)))

    def forward(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(items)


class DecoderGraph(Graph):
    """latents (B, K) [+ labels (B,)] -> items in model range."""

    def __init__(self, cfg: ModelConfig, decoder: nn.Module):
        super().__init__(cfg)
        self.decoder = decoder
        self.inputs = self._labelled((("latents", "float32", (cfg.latent_dim,)),))
        self.outputs = ((item_name(cfg.data_kind), "float32", cfg.item_shape),)

    def forward(self, latents: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(latents, labels if self.conditional else None)


class PriorGraph(Graph):
    """prior: noise (B, P), latent_noise (B, K) [+ labels] -> latents (B, K), drawn from the learnt distribution of
    the base's codes: z = mean(u) + sqrt(gamma) * e, with u the noise and e the latent noise."""

    def __init__(self, cfg: ModelConfig, prior_decoder: nn.Module):
        super().__init__(cfg)
        self.prior_decoder = prior_decoder
        self.inputs = self._labelled((("noise", "float32", (cfg.noise_dim,)),
                                      ("latent_noise", "float32", (cfg.latent_dim,))))
        self.outputs = (("latents", "float32", (cfg.latent_dim,)),)

    def forward(self, noise: torch.Tensor, latent_noise: torch.Tensor,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        mean = self.prior_decoder(noise, labels if self.conditional else None)
        return mean + (0.5 * self.prior_decoder.log_gamma).exp() * latent_noise


class CoarseGraph(Graph):
    """hier: latents (B, K) [+ labels] -> coarse (B, *coarse): the structure."""

    def __init__(self, cfg: ModelConfig, coarse: nn.Module):
        super().__init__(cfg)
        self.coarse = coarse
        self.inputs = self._labelled((("latents", "float32", (cfg.latent_dim,)),))
        self.outputs = (("coarse", "float32", cfg.coarse_shape),)

    def forward(self, latents: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.coarse(latents, labels if self.conditional else None)


class DetailGraph(Graph):
    """hier: coarse (B, *coarse), detail_noise (B, N) [+ labels] -> items: the detail on the structure."""

    def __init__(self, cfg: ModelConfig, detail: nn.Module):
        super().__init__(cfg)
        self.detail = detail
        self.inputs = self._labelled((("coarse", "float32", cfg.coarse_shape),
                                      ("detail_noise", "float32", (cfg.detail_dim,))))
        self.outputs = ((item_name(cfg.data_kind), "float32", cfg.item_shape),)

    def forward(self, coarse: torch.Tensor, detail_noise: torch.Tensor,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.detail(coarse, detail_noise, labels if self.conditional else None)


class EncoderBGraph(Graph):
    """cyclevae: domain B's images (B, *item_b) -> mean, logvar (B, K) in the latent both domains share."""

    def __init__(self, cfg: ModelConfig, encoder: nn.Module):
        super().__init__(cfg)
        self.encoder = encoder
        self.inputs = ((item_name(cfg.data_kind), "float32", cfg.item_shape_b),)
        self.outputs = (("mean", "float32", (cfg.latent_dim,)), ("logvar", "float32", (cfg.latent_dim,)))

    def forward(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(items, 1)


class DecoderBGraph(Graph):
    """cyclevae: latents (B, K) -> domain B's images: from the codes of A's images, A translated into B."""

    def __init__(self, cfg: ModelConfig, decoder: nn.Module):
        super().__init__(cfg)
        self.decoder = decoder
        self.inputs = (("latents", "float32", (cfg.latent_dim,)),)
        self.outputs = ((item_name(cfg.data_kind), "float32", cfg.item_shape_b),)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(latents, None, 1)


class MaskedEncoderGraph(Graph):
    """mvae: images (B, *item), mask (B, 1, H, W) (1 observed) -> mean, logvar (B, K): the posterior given the pixels
    observed (the image's expert times the prior). The mask of a whole image is all ones."""

    def __init__(self, cfg: ModelConfig, encoder: nn.Module):
        super().__init__(cfg)
        self.encoder = encoder
        self.inputs = ((item_name(cfg.data_kind), "float32", cfg.item_shape),
                       (MASK_INPUT, "float32", (1, cfg.image_size, cfg.image_size)))
        self.outputs = (("mean", "float32", (cfg.latent_dim,)), ("logvar", "float32", (cfg.latent_dim,)))

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(images, mask)


class LabelEncoderGraph(Graph):
    """mvae: labels (B,), latent_noise (B, K) -> latents (B, K) drawn from the posterior given the label, and that
    posterior's label_mean, label_logvar (B, K), which the runtime multiplies with an image's to impute with both."""

    def __init__(self, cfg: ModelConfig, label_encoder: nn.Module):
        super().__init__(cfg)
        self.posterior = label_encoder  # the label's (a caption's) posterior: its expert times the prior
        self.inputs = (LABELS, ("latent_noise", "float32", (cfg.latent_dim,)))
        self.outputs = (("latents", "float32", (cfg.latent_dim,)),
                        *((name, "float32", (cfg.latent_dim,)) for name in LABEL_POSTERIOR))

    def forward(self, labels: torch.Tensor, latent_noise: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, logvar = self.posterior(labels)
        return mean + (0.5 * logvar).exp() * latent_noise, mean, logvar


class CaptionEncoderGraph(LabelEncoderGraph):
    """mvae with captions: text_embedding (B, text_dim), latent_noise (B, K) -> latents drawn from the posterior given
    the caption, and that posterior (LABEL_POSTERIOR's names), as the label's graph gives them for a label."""

    def __init__(self, cfg: ModelConfig, caption_encoder: nn.Module):
        super().__init__(cfg, caption_encoder)
        self.inputs = ((TEXT_EMBEDDING, "float32", (cfg.text_dim,)), ("latent_noise", "float32", (cfg.latent_dim,)))


class ClassifierGraph(Graph):
    """mvae: latents (B, K) -> logits (B, classes): the label decoded from a latent (softmax gives its probabilities)."""

    def __init__(self, cfg: ModelConfig, classifier: nn.Module):
        super().__init__(cfg)
        self.classifier = classifier
        self.inputs = (("latents", "float32", (cfg.latent_dim,)),)
        self.outputs = (("logits", "float32", (cfg.num_classes,)),)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.classifier(latents)


class TextEncoderGraph(Graph):
    """A text-conditioned model's prompts: input_ids, attention_mask (B, T) int64, padded to T = prompts.MAX_TOKENS ->
    text_embedding (B, text_dim), the condition the decoder takes. The frozen sentence encoder (train/text.py)."""

    def __init__(self, cfg: ModelConfig, text_encoder: nn.Module):
        super().__init__(cfg)
        self.text_encoder = text_encoder
        self.inputs = tuple((name, "int64", (MAX_TOKENS,)) for name in TEXT_INPUTS)
        self.outputs = ((TEXT_EMBEDDING, "float32", (cfg.text_dim,)),)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(input_ids, attention_mask)


_GRAPHS = {  # graph -> (its module, the network it runs)
    "encoder": (EncoderGraph, "encoder"),
    "decoder": (DecoderGraph, "decoder"),
    "prior": (PriorGraph, "prior_decoder"),
    "coarse": (CoarseGraph, "coarse"),
    "detail": (DetailGraph, "detail"),
    "encoder_b": (EncoderBGraph, "encoder"),
    "decoder_b": (DecoderBGraph, "decoder"),
    TEXT_GRAPH: (TextEncoderGraph, TEXT_GRAPH),
    "label_encoder": (LabelEncoderGraph, "label_encoder"),
    "classifier": (ClassifierGraph, "classifier"),
    CAPTION_GRAPH: (CaptionEncoderGraph, CAPTION_GRAPH),
}
# a joint model's graphs of its label and caption; its image graphs take neither
MODALITY_GRAPHS = ("label_encoder", "classifier", CAPTION_GRAPH, TEXT_GRAPH)


def graph_modules(cfg: ModelConfig, nets, replace: dict[str, nn.Module] | None = None) -> dict[str, Graph]:
    """The model's graphs (manifest.model_graphs) over `nets`, in eval mode. `replace` swaps a network for another
    of the same function (export's faster inference decoder). A text-conditioned model's text encoder is the frozen
    packaged one unless `nets` or `replace` holds one."""
    nets = dict(nets.items()) | (replace or {})
    if cfg.text_dim and TEXT_GRAPH not in nets:
        nets[TEXT_GRAPH] = load_text_encoder()
    def build(graph: str) -> Graph:
        module, network = _GRAPHS[graph]
        if cfg.kind == "mvae" and graph == "encoder":  # the image's expert takes the mask of observed pixels too
            module = MaskedEncoderGraph
        # a joint model's image graphs take no labels: its label is a modality, not a condition (models.unlabelled)
        return module(cfg if graph in MODALITY_GRAPHS else unlabelled(cfg), nets[network])

    return {graph: build(graph).eval() for graph in model_graphs(cfg.kind, bool(cfg.text_dim))}


def translate(graphs: dict[str, Graph], x: torch.Tensor, target: int, style_dim: int) -> torch.Tensor:
    """A translation model's items x (model range) of the other domain translated into domain `target` (0: A,
    1: B): the source's encoder's posterior mean, with the target's typical style where the model has a style
    code (manifest.restyled), through the target's decoder. The runtime's translate does the same on a bundle."""
    (encoder, _), (_, decoder) = DOMAIN_GRAPHS[1 - target], DOMAIN_GRAPHS[target]
    mean, _ = graphs[encoder](x)
    return graphs[decoder](restyled(mean, style_dim))


Draw = Callable[[str, int, tuple[int, ...]], torch.Tensor]  # (input name, batch, shape) -> noise


def run_chain(graphs: dict[str, Graph], chain: tuple[str, ...], values: dict[str, torch.Tensor], n: int,
              draw: Draw) -> dict[str, torch.Tensor]:
    """Run `chain` on `values` (by name: "latents", "labels", ...) for n items; inputs nothing gives are drawn with
    `draw`. Returns every value, given and computed."""
    values = dict(values)
    for name in chain:
        graph = graphs[name]
        args = []
        for tensor, _, shape in graph.inputs:
            if tensor not in values:
                if tensor not in NOISE_INPUTS:
                    raise ValueError(f"the {name} graph needs {tensor}, which nothing before it in the chain gives")
                values[tensor] = draw(tensor, n, shape)
            args.append(values[tensor])
        out = graph(*args)
        values.update(zip((t for t, _, _ in graph.outputs), out if isinstance(out, tuple) else (out,)))
    return values


def torch_draw(generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> Draw:
    """Noise from a torch generator (a run's own snapshots)."""
    def draw(name: str, n: int, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn((n, *shape), generator=generator).to(device)
    return draw
