"""Tiny models and easy data built on the fly, saved and loaded back like a user's model."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd

POSITIVE = ["great", "wonderful", "brilliant", "moving", "delightful", "superb", "charming", "funny"]
NEGATIVE = ["awful", "boring", "dreadful", "clumsy", "tedious", "terrible", "bland", "painful"]
NEUTRAL = ["the", "film", "movie", "story", "acting", "was", "a", "plot", "cast", "and", "with", "its", "really", "quite"]


def sentiment_frame(n: int, seed: int = 0) -> pd.DataFrame:
    """Short reviews whose label is obvious from one sentiment word: a tiny model learns them fast."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if rng.random() < 0.5 else "negative"
        words = rng.sample(NEUTRAL, rng.randint(3, 8))
        words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label == "positive" else NEGATIVE))
        rows.append({"review": " ".join(words) + f" #{i}", "sentiment": label})
    return pd.DataFrame(rows)


def build_tiny_base_model(directory: Path, corpus: list[str]) -> Path:
    """A 2-layer BERT with a WordPiece vocabulary built from `corpus`, saved with save_pretrained.

    The vocabulary is built here, not by tokenizers' WordPieceTrainer: the trainer breaks ties between
    equally frequent pieces by hash-map order, which Rust randomizes per process, so every test session
    got another vocabulary (seen: two sessions, two tokenizer.json) and learning tests another model.
    Here: the special tokens, every character alone and as a continuation piece, then the commonest
    words (ties by spelling) up to VOCAB_SIZE; WordPiece splits any other word into characters."""
    from collections import Counter

    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)  # the same tiny model every session: test outcomes do not vary by draw

    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    words = Counter(word for text in corpus
                    for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    characters = sorted({char for word in words for char in word})
    pieces = specials + characters + [f"##{char}" for char in characters]
    common = [word for word, _ in sorted(words.items(), key=lambda item: (-item[1], item[0])) if len(word) > 1]
    pieces += common[:max(0, VOCAB_SIZE - len(pieces))]
    tokenizer = Tokenizer(models.WordPiece({piece: i for i, piece in enumerate(pieces)}, unk_token="[UNK]"))
    tokenizer.normalizer, tokenizer.pre_tokenizer = normalizer, pre_tokenizer
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    fast = BertTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                             cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", model_max_length=128)
    config = BertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    directory.mkdir(parents=True, exist_ok=True)
    BertModel(config).save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


VOCAB_SIZE = 400
PERSONS = [["john", "smith"], ["mary"], ["ali", "khan"], ["wei"], ["anna", "berg"], ["pedro"]]
PLACES = [["paris"], ["new", "york"], ["berlin"], ["lagos"], ["tokyo"], ["san", "diego"]]
ORGS = [["acme", "corp"], ["globex"], ["initech"], ["united", "nations"], ["umbrella", "inc"]]
FILLER = ["visited", "met", "said", "in", "from", "the", "on", "monday", "with", "at", "today", "of", "people"]


def ner_records(n: int, seed: int = 0) -> list[dict]:
    """Sentences of filler words and 1-3 entities from small closed lists, IOB2-tagged: a tiny
    token classifier learns them in a few epochs. Records are {"tokens": [...], "tags": [...]}."""
    rng = random.Random(seed)
    kinds = [("PER", PERSONS), ("LOC", PLACES), ("ORG", ORGS)]
    records = []
    for _ in range(n):
        tokens: list[str] = []
        tags: list[str] = []
        for _ in range(rng.randint(1, 3)):
            for _ in range(rng.randint(1, 3)):
                tokens.append(rng.choice(FILLER))
                tags.append("O")
            kind, names = rng.choice(kinds)
            name = rng.choice(names)
            tokens.extend(w.capitalize() for w in name)
            tags.extend([f"B-{kind}"] + [f"I-{kind}"] * (len(name) - 1))
        tokens.append(".")
        tags.append("O")
        records.append({"tokens": tokens, "tags": tags})
    return records


def ner_corpus(n: int = 300, seed: int = 123) -> list[str]:
    return [" ".join(r["tokens"]) for r in ner_records(n, seed)]
