"""distill.augment_copies: the texts the teacher labels beyond the training rows (components/data/augment.py)
keep each sentence's shape, change its words, are reproducible, and never repeat a text of any split."""

from __future__ import annotations

import pandas as pd
import pytest

from components.config import ConfigError, parse_params
from components.data.augment import perturb_words, swap_mentions
from components.entities import spans_from_tags
from components.model.distill import augmented_rows
from tests.tiny import ner_records


def test_swapped_mentions_keep_the_sentence_around_them_and_their_types():
    records = ner_records(80, seed=3) + [{"tokens": ["nothing", "here", "."], "tags": ["O", "O", "O"]}]
    sentences, tags = [r["tokens"] for r in records], [r["tags"] for r in records]
    mentions = {(s.kind, tuple(words[s.start:s.end])) for words, t in zip(sentences, tags) for s in spans_from_tags(t)}

    copies = swap_mentions(sentences, tags, copies=2, seed=7)
    assert len(copies) == 2 * 80  # the sentence without entities is not copied: its copy would be itself
    assert copies == swap_mentions(sentences, tags, copies=2, seed=7)
    changed = 0
    for copy, words, sentence_tags in zip(copies, sentences[:80] * 2, tags[:80] * 2):
        # Between mentions the sentence is the same; each new mention is one the split has, of the same type.
        spans, position, rest = spans_from_tags(sentence_tags), 0, list(copy)
        for span in spans:
            outside = words[position:span.start]
            assert rest[:len(outside)] == outside
            rest = rest[len(outside):]
            chosen = next(m for kind, m in sorted(mentions, key=lambda m: -len(m[1]))
                          if kind == span.kind and tuple(rest[:len(m)]) == m)
            rest, position = rest[len(chosen):], span.end
        assert rest == words[position:]
        changed += copy != words
    assert changed > 0.5 * len(copies)


def test_perturbed_texts_drop_and_swap_a_few_words():
    texts = [f"the film was {adjective} and the cast was {adjective} too" for adjective in ("dull", "bright")] + ["one"]
    copies = perturb_words(texts, copies=3, seed=1)
    assert len(copies) == 6 and copies == perturb_words(texts, copies=3, seed=1)
    for copy, text in zip(copies, texts[:2] * 3):
        words = copy.split()
        assert copy != text  # a pair of different words swapped, at least
        assert set(words) <= set(text.split()) and len(text.split()) - 4 <= len(words) <= len(text.split())


@pytest.mark.parametrize("task", ["token-classification", "sequence-classification"])
def test_augmented_rows_never_repeat_a_text_of_the_splits(task):
    records = ner_records(60, seed=5)
    train = pd.DataFrame({"id": [f"r{i}" for i in range(60)], "text": [" ".join(r["tokens"]) for r in records],
                          "label": [" ".join(r["tags"]) if task == "token-classification" else "positive"
                                    for r in records]})
    labels = ["PER", "LOC", "ORG"] if task == "token-classification" else ["negative", "positive"]
    params = parse_params({"task": task, "data": {"source": "x.jsonl", "labels": labels},
                           "model": {"base_model": "unused"},
                           "distill": {"enabled": True, "teacher_model": "unused", "augment_copies": 2}})
    rows = augmented_rows(train, params, known_texts=set())
    assert len(rows) > 60 and rows["id"].is_unique and rows["text"].is_unique
    held_out = set(rows["text"].iloc[:5])  # as if these read as validation or test rows
    again = augmented_rows(train, params, known_texts=held_out | set(train["text"]))
    assert not set(again["text"]) & (held_out | set(train["text"])) and len(again) >= len(rows) - 5 - 60


def test_augment_copies_are_bounded():
    with pytest.raises(ConfigError, match="augment_copies"):
        parse_params({"task": "sequence-classification", "data": {"source": "x.csv", "labels": ["a", "b"]},
                      "model": {"base_model": "unused"}, "distill": {"augment_copies": 40}})
