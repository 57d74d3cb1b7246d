"""Word shape (capitalization) as a model input, for base models whose tokenizer lowercases.

An uncased tokenizer gives "Paris", "PARIS" and "paris" the same ids, yet capitalization is the
strongest cue for English names. With `model.word_shapes: true` (token classification) each
sub-token carries its word's shape in the `token_type_ids` input, whose embedding table grows to
one row per shape. The model stays a plain BERT that exports and serves as one, and the text
itself is untouched (no marker tokens, so word alignment and character offsets stay as they were).
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


def _refusal(what: str, model_type: str) -> str:
    return (f"model.word_shapes: {what} (model_type {model_type!r}) has no token type ids, and word shapes ride "
            "on them (its token type table, grown to one row per shape): there is nowhere to feed them. "
            "Set model.word_shapes: false (a lowercasing tokenizer then hides capitalization from the model), "
            "or use a base model with token types, such as builtin:all-minilm-l6-v2 (BERT)")


def word_shapes_refusal(base_model: str) -> str | None:
    """Why params' model.base_model cannot take word shapes, or None. Checked where it costs no download
    (and no transformers import): a built-in model by its table entry, a local directory by its
    config.json. A hub id is checked when the model is loaded (add_word_shapes)."""
    import json
    from pathlib import Path

    from components.assets import AssetError, builtin_model, split_builtin

    builtin = split_builtin(base_model)
    if builtin is not None:
        try:
            entry = builtin_model(builtin)
        except AssetError:
            return None  # an unknown name is reported where the model is fetched, with the known ones
        return None if entry.token_types else _refusal(base_model, entry.model_type)
    path = Path(base_model).expanduser() / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # a hub id, a missing directory or an unreadable config: loading the model reports it
    # A config class with a token type table always writes type_vocab_size (it is no PretrainedConfig default).
    if isinstance(config, dict) and not config.get("type_vocab_size"):
        return _refusal(base_model, str(config.get("model_type", "unknown")))
    return None


def add_word_shapes(model) -> None:
    """Give `model` one token type per shape (a no-op when it has them, e.g. a champion)."""
    import torch

    from components.errors import ConfigError

    embeddings = model.base_model.embeddings
    table = getattr(embeddings, "token_type_embeddings", None)
    if table is None or not token_type_rows(model.config):
        raise ConfigError(_refusal("the starting model", model.config.model_type))
    if not uses_word_shapes(model.config) or table.num_embeddings < len(SHAPES):
        grown = torch.nn.Embedding(len(SHAPES), table.embedding_dim)
        with torch.no_grad():
            # Every shape starts as the pretrained single-segment type, so the model's outputs are
            # at first exactly the base model's; fine-tuning then learns what each shape adds.
            grown.weight.copy_(table.weight[0].expand(len(SHAPES), -1))
        embeddings.token_type_embeddings = grown
        model.config.type_vocab_size = len(SHAPES)
    setattr(model.config, CONFIG_FLAG, True)
