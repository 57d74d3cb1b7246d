"""New texts near the training split, for the distillation teacher to label (distill.augment_copies).

A teacher's outputs on the rows it was fine-tuned on are close to one-hot: they say little that the
labels do not. On texts it has not seen, its distributions carry what it knows about neighbouring
classes and uncertain words, and that is what a student learns from it beyond the labels (TinyBERT's
data augmentation; mention replacement for NER, Dai & Adel 2020). The copies made here have no labels
of their own: the student learns them from the teacher's distributions alone, as unlabelled text.

- token classification: each copy of a sentence with entities has every mention replaced by a mention
  of the same type drawn from the split (sentences without one are not copied: a copy would be the same);
- sequence classification: each copy drops some words and swaps a pair of neighbouring ones.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

from components.entities import spans_from_tags

# Sequence classification: the share of words dropped and the neighbouring pairs swapped per copy
# (EDA's defaults, Wei & Zou 2019): the text stays readable and its class mostly stays, and where it
# does not, the teacher's distribution says so.
DROP_PROBABILITY = 0.1
SWAPS = 1


def swap_mentions(sentences: Sequence[Sequence[str]], tags: Sequence[Sequence[str]], copies: int, seed: int
                  ) -> list[list[str]]:
    """Token classification: `copies` new sentences (word lists) per sentence with entities, each
    mention replaced by one of the same type from `sentences` (its own mention when it is the only one)."""
    mentions: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    parsed = []
    for words, sentence_tags in zip(sentences, tags):
        spans = spans_from_tags(list(sentence_tags))
        parsed.append((list(words), spans))
        for span in spans:
            mentions[span.kind].append(tuple(words[span.start:span.end]))
    rng = random.Random(seed)
    copied: list[list[str]] = []
    for _ in range(copies):
        for words, spans in parsed:
            if not spans:
                continue
            new, position = [], 0
            for span in spans:
                new += words[position:span.start] + list(rng.choice(mentions[span.kind]))
                position = span.end
            copied.append(new + words[position:])
    return copied


def perturb_words(texts: Sequence[str], copies: int, seed: int) -> list[str]:
    """Sequence classification: `copies` new texts per text of two words or more, with about
    DROP_PROBABILITY of the words dropped (never all) and SWAPS neighbouring pairs swapped."""
    rng = random.Random(seed)
    copied: list[str] = []
    for _ in range(copies):
        for text in texts:
            words = text.split()
            if len(words) < 2:
                continue
            kept = [word for word in words if rng.random() >= DROP_PROBABILITY] or [rng.choice(words)]
            for _ in range(SWAPS if len(kept) > 1 else 0):
                i = rng.randrange(len(kept) - 1)
                kept[i], kept[i + 1] = kept[i + 1], kept[i]
            copied.append(" ".join(kept))
    return copied
