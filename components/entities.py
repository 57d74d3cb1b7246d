"""Entities from IOB2 tags, and CoNLL's entity-level scoring.

An entity is a (type, start, end) span of words; a predicted entity counts only when its type and
both boundaries equal a gold entity's (exact match, as conlleval and seqeval score CoNLL-2003).
Shared by training (validation F1), evaluation, the export parity check and the gate; split_words
turns raw text into CoNLL-style words with character offsets for the served tagger.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np

OUTSIDE = "O"


@dataclass(frozen=True)
class Span:
    kind: str
    start: int  # first word
    end: int  # one past the last word


def tag_parts(tag: str) -> tuple[str, str | None]:
    """'B-PER' -> ('B', 'PER'); 'O' -> ('O', None)."""
    if tag == OUTSIDE or "-" not in tag:
        return OUTSIDE, None
    prefix, _, kind = tag.partition("-")
    return prefix, kind


def spans_from_tags(tags: list[str]) -> list[Span]:
    """Entities in a tag sequence. An I- that does not continue an entity of its type starts one, as
    conlleval reads it: a model's stray I- is then scored as an entity, not silently dropped."""
    spans: list[Span] = []
    kind, start = None, 0
    for position, tag in enumerate(list(tags) + [OUTSIDE]):
        prefix, tag_kind = tag_parts(tag)
        continues = prefix == "I" and tag_kind == kind
        if kind is not None and not continues:
            spans.append(Span(kind, start, position))
            kind = None
        if prefix in ("B", "I") and not continues:
            kind, start = tag_kind, position
    return spans


def entity_scores(gold: list[list[str]], predicted: list[list[str]], kinds: list[str]) -> dict:
    """Micro precision/recall/F1 over all entities, the same per type, and their macro mean."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted ones")
    true_positive: Counter = Counter()
    gold_count: Counter = Counter()
    predicted_count: Counter = Counter()
    words = correct_words = 0
    for index, (gold_tags, predicted_tags) in enumerate(zip(gold, predicted)):
        if len(gold_tags) != len(predicted_tags):
            raise ValueError(f"sentence {index}: {len(gold_tags)} gold tags but {len(predicted_tags)} predicted")
        gold_spans, predicted_spans = set(spans_from_tags(gold_tags)), set(spans_from_tags(predicted_tags))
        gold_count.update(s.kind for s in gold_spans)
        predicted_count.update(s.kind for s in predicted_spans)
        true_positive.update(s.kind for s in gold_spans & predicted_spans)
        words += len(gold_tags)
        correct_words += sum(g == p for g, p in zip(gold_tags, predicted_tags))
    per_type = {kind: _prf(true_positive[kind], predicted_count[kind], gold_count[kind]) for kind in kinds}
    overall = _prf(sum(true_positive.values()), sum(predicted_count.values()), sum(gold_count.values()))
    return {
        "n": len(gold),
        "words": words,
        # Word-level tag accuracy: mostly O, so it flatters; reported, never gated on alone.
        "accuracy": correct_words / words if words else 0.0,
        "entity_precision": overall["precision"],
        "entity_recall": overall["recall"],
        "entity_f1": overall["f1"],
        "macro_f1": sum(per_type[k]["f1"] for k in kinds) / len(kinds) if kinds else 0.0,
        "per_class": per_type,
    }


def _prf(true_positive: int, predicted: int, gold: int) -> dict:
    precision = true_positive / predicted if predicted else 0.0
    recall = true_positive / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": gold}


# --- raw text to words, CoNLL style ----------------------------------------------------------------

# Alternatives are tried in order at each position:
#  - abbreviations with dots (U.S., e.g.) stay one word, as in CoNLL-2003;
#  - numbers keep their inner separators (3.5, 1,000, 12:30);
#  - the clitic 's / 's is a word of its own ("Germany 's");
#  - a word keeps inner hyphens and apostrophes (Jean-Luc, O'Neill);
#  - any other character that is not a space is a word by itself (punctuation, symbols).
_WORD = re.compile(
    r"(?:[^\W\d_]\.){2,}"
    r"|\d+(?:[.,:/]\d+)+"
    r"|['\u2019][sS](?!\w)"
    r"|\w+(?:-\w+|['\u2019](?![sS](?!\w))\w+)*"
    r"|[^\w\s]",
)


def split_words(text: str) -> list[tuple[str, int, int]]:
    """The words of raw text as (word, start, end), with text[start:end] == word.

    Whitespace separates words and punctuation is split off the words it touches, the way CoNLL-2003
    is tokenized, so a tagger trained on CoNLL-style words sees the same kind of words at serving.
    """
    return [(match.group(), match.start(), match.end()) for match in _WORD.finditer(text)]


def entity_types_of(tags: list[str]) -> list[str]:
    """The entity types of IOB2 tags, in order of first appearance: O, B-PER, I-PER, B-LOC -> [PER, LOC]."""
    kinds: list[str] = []
    for tag in tags:
        _, kind = tag_parts(tag)
        if kind is not None and kind not in kinds:
            kinds.append(kind)
    return kinds


def entity_type_counts(tag_sequences) -> Counter:
    """Entities per type over sentences given as tag lists or as IOB2 tag strings joined by single
    spaces (the dataset's `label`): one per B- tag. Nulls and empty strings count nothing."""
    counts: Counter = Counter()
    for tags in tag_sequences:
        if isinstance(tags, str):
            tags = tags.split(" ")
        elif not isinstance(tags, (list, tuple)):
            continue
        counts.update(tag[2:] for tag in tags if tag.startswith("B-"))
    return counts


def first_subtoken_positions(word_ids: Sequence[int | None], n_words: int) -> np.ndarray:
    """For each word, the position of its first sub-token; -1 for a word with none (cut off by
    truncation, or made of characters the tokenizer drops)."""
    positions = np.full(n_words, -1, dtype=np.int64)
    previous = None
    for position, word in enumerate(word_ids):
        if word is not None and word != previous and word < n_words and positions[word] < 0:
            positions[word] = position
        previous = word
    return positions
