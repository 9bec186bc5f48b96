"""Prompts -> token ids for the sentence encoder, without torch: the runtime and training share it.

A prompt is checked before it is encoded, and a bad one is refused with one line:
- empty, or only spaces and punctuation: nothing to condition on;
- longer than MAX_TOKENS word pieces: the captions the models learn from are a dozen pieces long, and a longer
  prompt would be silently cut by a truncating tokenizer;
- not in Latin letters (more than half of its letters from another script), or mostly outside the encoder's
  vocabulary (more than half of its pieces unknown): all-MiniLM-L6-v2 learned English, and its vocabulary spells a
  word of another script letter by letter, so a prompt in, say, Chinese, Arabic or Greek would condition on noise.
  A prompt in another language written in Latin letters is tokenised into English word pieces and accepted: the
  model then sees whatever those pieces mean to an English encoder.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np

from gvtool.errors import BadInputError

MAX_TOKENS = 32         # word pieces, [CLS] and [SEP] included: the longest built-in caption has about 20; a
                        # text encoder graph takes this many (a fixed shape every backend runs as one profile)
MAX_UNKNOWN_SHARE = 0.5
MAX_OTHER_SCRIPT_SHARE = 0.5
_UNKNOWN = "[UNK]"


class PromptTokenizer:
    """A WordPiece tokenizer read from a tokenizer.json (the `tokenizers` package), padding each batch to its longest."""

    def __init__(self, path: Path, text: str | None = None):
        """The tokenizer of the file at `path`, or of its `text` when given (read and checked by the caller)."""
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise BadInputError("prompts need the tokenizers package: pip install tokenizers") from None
        try:
            self._tokenizer = Tokenizer.from_str(text) if text is not None else Tokenizer.from_file(str(path))
        except Exception as e:  # the library raises its own exception types for a malformed file
            raise BadInputError(f"{path} is not a readable tokenizer file: {str(e)[:200]}") from None
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self._unknown = self._tokenizer.token_to_id(_UNKNOWN)

    def encode(self, prompts: list[str], length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """-> (input_ids, attention_mask), both int64 (B, T), T `length` (a text encoder graph's fixed MAX_TOKENS) or
        the longest prompt's pieces; refuses a bad prompt."""
        if not prompts:
            raise BadInputError("no prompt given")
        encodings = [self._checked(p) for p in prompts]
        t = length or max(len(ids) for ids in encodings)
        input_ids = np.zeros((len(prompts), t), np.int64)  # 0 is [PAD]
        mask = np.zeros((len(prompts), t), np.int64)
        for row, ids in enumerate(encodings):
            input_ids[row, :len(ids)] = ids
            mask[row, :len(ids)] = 1
        return input_ids, mask

    def _checked(self, prompt: str) -> list[int]:
        if not isinstance(prompt, str) or not any(c.isalnum() for c in prompt):
            raise BadInputError(f"prompt {prompt!r} has no words: describe what to draw, e.g. \"a thin 4\"")
        letters = [c for c in prompt if c.isalpha()]
        other = sum(not unicodedata.name(c, "").startswith("LATIN") for c in letters)
        if other > MAX_OTHER_SCRIPT_SHARE * len(letters):
            raise BadInputError(f"prompt {_short(prompt)} is not in Latin letters; the text encoder reads English")
        ids = self._tokenizer.encode(prompt).ids
        if len(ids) > MAX_TOKENS:
            raise BadInputError(f"prompt {_short(prompt)} is {len(ids)} word pieces long; at most {MAX_TOKENS} are "
                                "accepted (the models learn from short captions)")
        pieces = ids[1:-1]  # without [CLS] and [SEP]
        if pieces and sum(i == self._unknown for i in pieces) > MAX_UNKNOWN_SHARE * len(pieces):
            raise BadInputError(f"prompt {_short(prompt)} is mostly outside the text encoder's English vocabulary; "
                                "write it in English")
        return ids


def are_prompts(labels) -> bool:
    """Whether a caller's labels are prompts (a string, or strings), not classes."""
    return isinstance(labels, str) or (isinstance(labels, (list, tuple)) and any(isinstance(p, str) for p in labels))


def _short(prompt: str, limit: int = 40) -> str:
    return repr(prompt if len(prompt) <= limit else prompt[:limit] + "...")
