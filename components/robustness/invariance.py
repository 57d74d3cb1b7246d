"""Invariance of the served model: the share of predictions that stay the same when a test text is
perturbed in a way that keeps its label (components/robustness/perturb.py).

A classifier's prediction is its label. A token classifier's prediction is its set of entity spans
(type and word positions); an original span is carried through the perturbation (an entity swap
moves the words after it) before the two sets are compared, so "the same" means the same entities at
the same words. Rows whose prediction changed are listed with both predictions, so that a person can
judge whether the label really should have stayed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from components.config import TOKEN_CLASSIFICATION, RobustnessParams
from components.entities import Span, spans_from_tags
from components.robustness.perturb import KindSample, Perturbation, applicable_kinds, perturb_rows

FLIPPED_COLUMNS = ["kind", "id", "change", "original", "perturbed", "label", "before", "after"]


@dataclass
class InvarianceReport:
    task: str
    rows: int
    kinds: dict[str, dict[str, Any]]  # kind -> {"invariance", "n", "flipped", "skipped"}
    flipped: pd.DataFrame
    not_applicable: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @classmethod
    def skipped(cls, task: str) -> "InvarianceReport":
        """robustness.enabled: false: no kind measured, no row changed."""
        return cls(task=task, rows=0, kinds={}, flipped=pd.DataFrame(columns=FLIPPED_COLUMNS))

    @property
    def min_invariance(self) -> float | None:
        shares = [figures["invariance"] for figures in self.kinds.values() if figures["invariance"] is not None]
        return min(shares) if shares else None

    def metrics(self) -> dict[str, Any]:
        """metrics.json: numbers only (what `dvc metrics` reads), each kind's figures under its name."""
        return {"rows": self.rows, "min_invariance": self.min_invariance, **self.kinds}

    def write(self, metrics: Path, flipped: Path) -> tuple[Path, Path]:
        """Where ProjectLayout (robustness_metrics, robustness_flipped) and dvc.yaml say."""
        metrics.parent.mkdir(parents=True, exist_ok=True)
        metrics.write_text(json.dumps(self.metrics(), indent=2) + "\n")
        self.flipped.to_csv(flipped, index=False, lineterminator="\n")
        return metrics, flipped

    def summary(self) -> str:
        lines = [f"invariance of the served model on {self.rows} test rows ({self.seconds:.1f} s):"]
        for kind, figures in self.kinds.items():
            share = "n/a" if figures["invariance"] is None else f"{figures['invariance']:.4f}"
            lines.append(f"  {kind:<12} {share}  ({figures['flipped']} of {figures['n']} predictions changed; "
                         f"{figures['skipped']} rows the kind does not apply to; {figures.get('same_input', 0)} "
                         "perturbed inputs the model sees as their original)")
        if self.not_applicable:
            lines.append(f"  not measured for {self.task} (they move word boundaries): {', '.join(self.not_applicable)}")
        return "\n".join(lines)


def _classify(predictor, texts: list[str], batch_size: int) -> list[tuple[str, float]]:
    labels = predictor.labels
    probabilities = predictor.predict_proba(texts, batch_size) if texts else []
    return [(labels[int(row.argmax())], float(row.max())) for row in probabilities]


def _input_keys(predictor, inputs: list) -> list:
    """What the model sees of each input (predictor.input_keys); without that method every input is its own."""
    return predictor.input_keys(inputs) if hasattr(predictor, "input_keys") else list(range(len(inputs)))


def _once_per_input(predict, predictor, inputs: list, keys: list, batch_size: int) -> list:
    """predict(predictor, inputs, batch_size), run once per distinct model input: on an uncased model
    every casing change, and often a whitespace one, tokenizes to the original's ids."""
    first: dict = {}
    for index, key in enumerate(keys):
        first.setdefault(key, index)
    unique = sorted(first.values())
    answers = dict(zip(unique, predict(predictor, [inputs[i] for i in unique], batch_size)))
    return [answers[first[key]] for key in keys]


def _describe(spans: Sequence[Span], words: Sequence[str]) -> str:
    return "; ".join(f"{s.kind} {' '.join(words[s.start:s.end])!r} @{s.start}-{s.end}" for s in spans) or "(none)"


def _kind_figures(sample: KindSample, changed: list[bool], same_input: int) -> dict[str, Any]:
    n = len(changed)
    flipped = sum(changed)
    return {"invariance": (n - flipped) / n if n else None, "n": n, "flipped": flipped, "skipped": sample.skipped,
            "same_input": same_input}


def _same_input_counts(wanted: list[str], everything: list[Perturbation], keys: list, kinds) -> dict[str, int]:
    """Per kind, the perturbations the model sees exactly as their original (answered without a call).
    keys: the originals' (in `wanted` order), then the perturbations'."""
    originals = dict(zip(wanted, keys[:len(wanted)]))
    counts = dict.fromkeys(kinds, 0)
    for perturbation, key in zip(everything, keys[len(wanted):]):
        counts[perturbation.kind] += key == originals[perturbation.row_id]
    return counts


def _measure_classifier(predictor, frame: pd.DataFrame, samples: dict[str, KindSample], batch_size: int):
    texts = dict(zip(frame["id"].astype(str), frame["text"]))
    gold = dict(zip(frame["id"].astype(str), frame["label"])) if "label" in frame else {}
    wanted = sorted({p.row_id for sample in samples.values() for p in sample.perturbations})
    everything = [p for sample in samples.values() for p in sample.perturbations]
    # Originals and perturbations in one pass, each distinct model input scored once.
    inputs = [texts[i] for i in wanted] + [p.perturbed for p in everything]
    keys = _input_keys(predictor, inputs)
    answers = _once_per_input(_classify, predictor, inputs, keys, batch_size)
    before, after = dict(zip(wanted, answers[:len(wanted)])), answers[len(wanted):]
    same = _same_input_counts(wanted, everything, keys, samples)
    changed: dict[str, list[bool]] = {kind: [] for kind in samples}
    flipped = []
    for perturbation, (label, score) in zip(everything, after):
        old_label, old_score = before[perturbation.row_id]
        changed[perturbation.kind].append(label != old_label)
        if label != old_label:
            flipped.append(_flipped_row(perturbation, gold.get(perturbation.row_id, ""),
                                        f"{old_label} ({old_score:.3f})", f"{label} ({score:.3f})"))
    return changed, flipped, same


def _words(joined: str) -> list[str]:
    """Words (or tags) of an NER split cell: joined by single spaces, as preprocessing wrote them."""
    return joined.split(" ") if joined else []


def _predict_words(predictor, sentences: list[list[str]], batch_size: int) -> list[list[str]]:
    return predictor.predict_words(sentences, batch_size) if sentences else []


def _measure_tagger(predictor, frame: pd.DataFrame, samples: dict[str, KindSample], batch_size: int):
    sentences = {row_id: _words(text) for row_id, text in zip(frame["id"].astype(str), frame["text"])}
    gold = {row_id: _words(tags) for row_id, tags in zip(frame["id"].astype(str), frame["label"])}
    wanted = sorted({p.row_id for sample in samples.values() for p in sample.perturbations})
    everything = [p for sample in samples.values() for p in sample.perturbations]
    perturbed_words = [_words(p.perturbed) for p in everything]
    inputs = [sentences[i] for i in wanted] + perturbed_words
    keys = _input_keys(predictor, inputs)
    answers = _once_per_input(_predict_words, predictor, inputs, keys, batch_size)
    before = {row_id: spans_from_tags(tags) for row_id, tags in zip(wanted, answers[:len(wanted)])}
    after_tags = answers[len(wanted):]
    same = _same_input_counts(wanted, everything, keys, samples)
    changed: dict[str, list[bool]] = {kind: [] for kind in samples}
    flipped = []
    for perturbation, words, tags in zip(everything, perturbed_words, after_tags):
        original = before[perturbation.row_id]
        moved = {perturbation.map_span(span) for span in original}
        after = spans_from_tags(tags)
        differs = None in moved or moved != set(after)
        changed[perturbation.kind].append(differs)
        if differs:
            row_words = sentences[perturbation.row_id]
            flipped.append(_flipped_row(perturbation, _describe(spans_from_tags(gold[perturbation.row_id]), row_words),
                                        _describe(original, row_words), _describe(after, words)))
    return changed, flipped, same


def _flipped_row(perturbation: Perturbation, label: str, before: str, after: str) -> dict[str, str]:
    return {"kind": perturbation.kind, "id": perturbation.row_id, "change": perturbation.change,
            "original": perturbation.original, "perturbed": perturbation.perturbed, "label": label,
            "before": before, "after": after}


def measure_invariance(predictor, frame: pd.DataFrame, params: RobustnessParams, *, batch_size: int = 64
                       ) -> InvarianceReport:
    """Perturb the rows of a split frame (columns id, text, label) with each of params.kinds that
    applies to the predictor's task, predict originals and perturbed texts, and compare.

    predictor: an OnnxTextClassifier or OnnxTokenTagger (components/export/predictor.py), i.e. the
    served model; anything with the same predict_proba / predict_words and labels works."""
    started = time.perf_counter()
    token_task = predictor.task == TOKEN_CLASSIFICATION
    if "id" not in frame:
        frame = frame.assign(id=[str(i) for i in range(len(frame))])
    kinds = applicable_kinds(params.kinds, token_task)
    skipped_kinds = [kind for kind in params.kinds if kind not in kinds]
    texts = frame["text"].astype(str).tolist()
    ids = frame["id"].astype(str).tolist()
    if token_task:
        tags = [_words(str(label)) for label in frame["label"]]
        samples = perturb_rows(ids, texts, kinds, params.seed, params.max_rows, tags=tags)
        changed, flipped, same = _measure_tagger(predictor, frame, samples, batch_size)
    else:
        samples = perturb_rows(ids, texts, kinds, params.seed, params.max_rows)
        changed, flipped, same = _measure_classifier(predictor, frame, samples, batch_size)
    return InvarianceReport(
        task=predictor.task, rows=len(frame),
        kinds={kind: _kind_figures(samples[kind], changed[kind], same[kind]) for kind in kinds},
        flipped=pd.DataFrame(flipped, columns=FLIPPED_COLUMNS), not_applicable=skipped_kinds,
        seconds=time.perf_counter() - started)

