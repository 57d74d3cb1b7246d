"""The deletion test: do the words an explanation ranks highest matter more to the model than any words?

For each explanation, delete its k highest-attributed words from the text and, separately, k words drawn
at random (seeded, the same k), score both texts with the model, and count how often the prediction
changes. Attributions that are faithful to the model make the first rate clearly higher than the second;
attributions no better than chance make them about equal. This is the evaluation's faithfulness figure.

Classification: the prediction changes when the predicted label of the shortened text is not the
explained label. NER: the explained span's own words are never deleted (deleting the entity itself would
change its type trivially, and the span could no longer be found), only its context; a change is the
exact entity (span and type) no longer predicted, and a type change is the type predicted at the span's
first character no longer being the explained type (no entity there counts as a change).

Pure functions: a predict function and explanations in, figures out; nothing here loads a model.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from components.explain.attributions import Explanation, WordAttribution


@dataclass(frozen=True)
class Deleted:
    """A text with some words deleted, and where a position of the original text went."""

    text: str
    removed: tuple[tuple[int, int], ...]  # character ranges of the original text that are gone, in order

    def position(self, original: int) -> int:
        """Where character `original` of the original text (not itself deleted) is in the shortened text."""
        return original - sum(min(end, original) - start for start, end in self.removed if start < original)


def delete_words(text: str, words: Sequence[WordAttribution]) -> Deleted:
    """`text` without `words` (by their character offsets), each taken out with the whitespace after it
    (or before it, at the end of the text), so no double spaces are left where a word was."""
    ranges = []
    for word in sorted(words, key=lambda w: w.start):
        start, end = word.start, word.end
        while end < len(text) and text[end].isspace():
            end += 1
        if end == len(text):  # the last word: take the whitespace before it instead
            while start > 0 and text[start - 1].isspace() and (not ranges or ranges[-1][1] < start):
                start -= 1
        if ranges and start < ranges[-1][1]:  # overlapping ranges merge (cannot happen for distinct words)
            ranges[-1] = (ranges[-1][0], max(end, ranges[-1][1]))
        else:
            ranges.append((start, end))
    kept, previous = [], 0
    for start, end in ranges:
        kept.append(text[previous:start])
        previous = end
    kept.append(text[previous:])
    return Deleted("".join(kept), tuple(ranges))


def candidates(explanation: Explanation) -> list[WordAttribution]:
    """The words the test may delete: all of them, or (NER) those outside the explained span."""
    if explanation.span is None:
        return list(explanation.words)
    start, end = explanation.span
    return [w for w in explanation.words if w.end <= start or w.start >= end]


@dataclass(frozen=True)
class Trial:
    """One explanation's two deletions."""

    top: Deleted
    random: Deleted


def plan_trials(explanations: Sequence[Explanation], k: int, seed: int) -> tuple[list[int], list[Trial]]:
    """The explanations the test can use (more than k candidate words: deleting every word would make
    both deletions the same) by index, and for each the top-k and the random-k deletion."""
    if k < 1:
        raise ValueError(f"k must be at least 1 (explain.faithfulness_k), got {k}")
    rng = random.Random(seed)
    used, trials = [], []
    for index, explanation in enumerate(explanations):
        pool = candidates(explanation)
        if len(pool) <= k:
            continue
        top = sorted(pool, key=lambda w: w.value, reverse=True)[:k]
        drawn = [pool[i] for i in sorted(rng.sample(range(len(pool)), k))]
        used.append(index)
        trials.append(Trial(delete_words(explanation.text, top), delete_words(explanation.text, drawn)))
    return used, trials


def _rate(changes: list[bool]) -> float | None:
    return sum(changes) / len(changes) if changes else None


def _figures(k: int, seed: int, total: int, changed_top: list[bool], changed_random: list[bool]) -> dict:
    top, rand = _rate(changed_top), _rate(changed_random)
    return {
        "n": len(changed_top),  # explanations tested
        "skipped": total - len(changed_top),  # too few words to delete k and keep one
        "k": k,
        "seed": seed,
        "topk_flip_rate": top,
        "random_flip_rate": rand,
        "flip_rate_difference": top - rand if top is not None and rand is not None else None,
    }


def deletion_test_texts(predict_labels: Callable[[list[str]], list[str]], explanations: Sequence[Explanation],
                        k: int, seed: int = 0) -> dict:
    """Classification: how often deleting the top-k attributed words changes the predicted label, vs k
    random words. predict_labels: texts in, one predicted label per text out (the served model)."""
    used, trials = plan_trials(explanations, k, seed)
    if not trials:
        return _figures(k, seed, len(explanations), [], [])
    predicted = list(predict_labels([t.top.text for t in trials] + [t.random.text for t in trials]))
    labels = [explanations[i].label for i in used]
    changed_top = [p != label for p, label in zip(predicted[:len(trials)], labels)]
    changed_random = [p != label for p, label in zip(predicted[len(trials):], labels)]
    return _figures(k, seed, len(explanations), changed_top, changed_random)


def _entity_outcome(entities: list[dict], kind: str, start: int, end: int) -> tuple[bool, bool]:
    """(the exact entity is gone, the type at its first character changed) among predicted entities."""
    exact = any(e["type"] == kind and e["start"] == start and e["end"] == end for e in entities)
    covering = [e["type"] for e in entities if e["start"] <= start < e["end"]]
    return not exact, (covering[0] if covering else None) != kind


def deletion_test_entities(predict_entities: Callable[[list[str]], list[list[dict]]],
                           explanations: Sequence[Explanation], k: int, seed: int = 0) -> dict:
    """NER: the same test on entity explanations (each with its span), deleting context words only.
    predict_entities: texts in, per text the predicted entities ({"type", "start", "end", ...}, character
    offsets), as OnnxTokenTagger.predict gives them under "entities"."""
    for explanation in explanations:
        if explanation.span is None:
            raise ValueError(f"an entity explanation needs its span; {explanation.label!r} of "
                             f"{explanation.text[:60]!r} has none (use deletion_test_texts for classification)")
    used, trials = plan_trials(explanations, k, seed)
    figures_of = {"top": ([], []), "random": ([], [])}  # (entity gone, type changed) per trial
    if trials:
        predicted = list(predict_entities([t.top.text for t in trials] + [t.random.text for t in trials]))
        for which, offset in (("top", 0), ("random", len(trials))):
            for row, (index, trial) in enumerate(zip(used, trials)):
                explanation = explanations[index]
                deleted = trial.top if which == "top" else trial.random
                start, end = (deleted.position(p) for p in explanation.span)
                gone, retyped = _entity_outcome(predicted[offset + row], explanation.label, start, end)
                figures_of[which][0].append(gone)
                figures_of[which][1].append(retyped)
    figures = _figures(k, seed, len(explanations), figures_of["top"][0], figures_of["random"][0])
    top, rand = _rate(figures_of["top"][1]), _rate(figures_of["random"][1])
    figures.update({
        "topk_type_change_rate": top,
        "random_type_change_rate": rand,
        "type_change_difference": top - rand if top is not None and rand is not None else None,
    })
    return figures
