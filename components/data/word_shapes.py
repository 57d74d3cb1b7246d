"""Word shape (capitalization) as a model input, for base models whose tokenizer lowercases.

An uncased tokenizer gives "Paris", "PARIS" and "paris" the same ids, yet capitalization is the
strongest cue for English names. With `model.word_shapes: true` (token classification) each
sub-token carries its word's shape in the `token_type_ids` input. A BERT's token type table grows to
one row per shape, and the model stays a plain BERT that exports and serves as one; a model without
token types (MPNet) gets a table of its own (components/model/shape_channel.py). The text itself is
untouched (no marker tokens, so word alignment and character offsets stay as they were).
"""

from __future__ import annotations

from collections.abc import Sequence

# "lower" also covers words without letters (numbers, punctuation) and special tokens; it is type
# id 0, the single-segment id the base model was pretrained with.
SHAPES = ("lower", "title", "upper", "mixed")
LOWER, TITLE, UPPER, MIXED = range(len(SHAPES))
# Saved in the model's config.json, so the model itself says how to feed it.
CONFIG_FLAG = "tunegate_word_shapes"


def word_shape(word: str) -> int:
    """lower ("paris", "1990s", ","), title ("Paris", "I"), upper ("EU", "U.S."), mixed ("McDonald")."""
    letters = [c for c in word if c.isalpha()]
    upper = [c.isupper() for c in letters]
    if not any(upper):
        return LOWER
    if all(upper):
        return UPPER if len(letters) > 1 else TITLE
    return TITLE if upper[0] and not any(upper[1:]) else MIXED


def token_shapes(words: Sequence[str], word_ids: Sequence[int | None]) -> list[int]:
    """The shape id of each sub-token: its word's shape; LOWER for special and padding tokens."""
    shapes = [word_shape(word) for word in words]
    return [LOWER if word is None else shapes[word] for word in word_ids]


def uses_word_shapes(config) -> bool:
    return bool(getattr(config, CONFIG_FLAG, False))


def token_type_rows(config) -> int:
    """Rows of a model config's token type table; 0 where the model has none (MPNet, DistilBERT)."""
    return int(getattr(config, "type_vocab_size", 0) or 0)
