"""The evaluation's explanation report: what the served model got most confidently wrong on the test split,
a sample of what it got right, each with the words that made it answer so, and the deletion test.

Everything here is the SERVED model's: the ONNX export in artifacts/onnx through load_predictor, its own
predictions on the test split (not the PyTorch evaluation's), its own attributions. Classification: a row
is an error when the predicted label is not the gold one; most confident = highest probability of the
predicted label. NER: a sentence is an error when its predicted entities (span and type) differ from the
gold ones; the errors section explains the WRONG predicted entities of the sentences whose wrong entities
the model was surest of (an error sentence with only missed entities has nothing to explain: counted, not
shown). The correct sample is drawn with explain.seed among rows (sentences with at least one entity) the
model got exactly right.

Outputs (artifacts/explain): report.html (one self-contained page: render_sections), summary.json (what
was chosen and why, the top words of each explanation, timings) and faithfulness.json (the deletion
test's figures, a DVC metric).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from components.config import ExplainParams, Params
    from components.explain.attributions import Explanation
    from components.layout import ProjectLayout

TOP_WORDS = 3  # words per explanation listed in summary.json


@dataclass(frozen=True)
class ExplainPaths:
    dir: Path
    report: Path
    summary: Path
    faithfulness: Path


def explain_paths(layout: ProjectLayout) -> ExplainPaths:
    """The explain stage's outputs; dvc.yaml names the same paths."""
    return ExplainPaths(layout.explain_dir, layout.explain_report, layout.explain_summary, layout.faithfulness_file)


# --- choosing the rows -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Selection:
    errors: list[int]  # row indices, most confident first
    correct: list[int]  # row indices of the sample, in row order
    errors_total: int  # every error row, shown or not


def select_rows(error: Sequence[bool], confidence: Sequence[float], explainable: Sequence[bool],
                n_errors: int, n_correct: int, seed: int) -> Selection:
    """The n_errors explainable error rows of highest confidence (ties: the earlier row first) and
    n_correct explainable correct rows drawn with `seed`."""
    errors = sorted((i for i, (e, x) in enumerate(zip(error, explainable)) if e and x), key=lambda i: -confidence[i])
    right = [i for i, (e, x) in enumerate(zip(error, explainable)) if not e and x]
    sample = sorted(random.Random(seed).sample(right, min(n_correct, len(right))))
    return Selection(errors[:n_errors], sample, sum(bool(e) for e in error))


def faithfulness_sample(explainable: Sequence[bool], n: int, seed: int) -> list[int]:
    """The rows the deletion test explains: n explainable rows drawn with `seed` (its own stream, so the
    report's sample and this one do not shift each other)."""
    rows = [i for i, x in enumerate(explainable) if x]
    return sorted(random.Random(f"faithfulness-{seed}").sample(rows, min(n, len(rows))))


# --- classification --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Report:
    html: str
    summary: dict
    faithfulness: dict


def _annotated(explanation: Explanation, **extra: Any) -> Explanation:
    return replace(explanation, extra={**explanation.extra, **extra})


def classification_report(predictor, test: pd.DataFrame, settings: ExplainParams,
                          explain_texts: Callable | None = None) -> tuple[list, list, dict, dict]:
    """(error explanations, correct explanations, faithfulness figures, facts) for a text classifier.
    explain_texts: components.explain.attributions.explain_texts unless given."""
    from components.explain.faithfulness import deletion_test_texts

    if explain_texts is None:
        from components.explain.attributions import explain_texts
    texts, gold, ids = test["text"].tolist(), test["label"].tolist(), test["id"].tolist()
    labels = list(predictor.labels)
    started = time.perf_counter()
    probabilities = predictor.predict_proba(texts)
    predicted = [labels[i] for i in probabilities.argmax(axis=1)]
    confidence = probabilities.max(axis=1).tolist()
    chosen = select_rows([p != g for p, g in zip(predicted, gold)], confidence, [True] * len(texts),
                         settings.report_errors, settings.report_correct, settings.seed)
    facts = {"test_rows": len(texts), "errors_total": chosen.errors_total,
             "seconds_predict": round(time.perf_counter() - started, 3)}

    started = time.perf_counter()
    rows = chosen.errors + chosen.correct
    explained = explain_texts(predictor.predict_proba, labels, [texts[i] for i in rows], settings.max_evals)
    annotated = [_annotated(e, id=ids[i], gold=gold[i], correct=predicted[i] == gold[i])
                 for i, e in zip(rows, explained)]
    errors, correct = annotated[:len(chosen.errors)], annotated[len(chosen.errors):]
    facts["seconds_report"] = round(time.perf_counter() - started, 3)

    started = time.perf_counter()
    sample = faithfulness_sample([True] * len(texts), settings.faithfulness_rows, settings.seed)
    explanations = explain_texts(predictor.predict_proba, labels, [texts[i] for i in sample], settings.max_evals)

    def predict_labels(batch: list[str]) -> list[str]:
        return [labels[i] for i in predictor.predict_proba(batch).argmax(axis=1)] if batch else []

    figures = deletion_test_texts(predict_labels, explanations, settings.faithfulness_k, settings.seed)
    facts["seconds_faithfulness"] = round(time.perf_counter() - started, 3)
    facts["model_calls"] = sum(e.model_calls for e in explained) + sum(e.model_calls for e in explanations)
    return errors, correct, figures, facts


# --- NER -------------------------------------------------------------------------------------------

def gold_entities(text: str, tags: str) -> set[tuple[int, int, str]]:
    """(start, end, type) character spans of a split row's gold entities: its text is the words joined
    by single spaces and its label their IOB2 tags, joined the same way."""
    from components.entities import spans_from_tags

    words, tag_list = (text.split(" ") if text else []), (tags.split(" ") if tags else [])
    if len(words) != len(tag_list):
        raise ValueError(f"{len(words)} words but {len(tag_list)} tags in {text[:60]!r}")
    starts, position = [], 0
    for word in words:
        starts.append(position)
        position += len(word) + 1
    return {(starts[s.start], starts[s.end - 1] + len(words[s.end - 1]), s.kind) for s in spans_from_tags(tag_list)}


def _describe(entities: set[tuple[int, int, str]], text: str) -> str:
    return "; ".join(f"{kind} {text[start:end]!r}" for start, end, kind in sorted(entities)) or "none"


def ner_report(predictor, test: pd.DataFrame, settings: ExplainParams,
               explain_entities: Callable | None = None) -> tuple[list, list, dict, dict]:
    """(error explanations, correct explanations, faithfulness figures, facts) for a token tagger.
    explain_entities: components.explain.attributions.explain_entities unless given."""
    from components.explain.faithfulness import deletion_test_entities

    if explain_entities is None:
        from components.explain.attributions import explain_entities
    texts, tags, ids = test["text"].tolist(), test["label"].tolist(), test["id"].tolist()
    started = time.perf_counter()
    predicted = [p["entities"] for p in predictor.predict(texts)]
    spans = [{(e["start"], e["end"], e["type"]) for e in entities} for entities in predicted]
    gold = [gold_entities(text, tag) for text, tag in zip(texts, tags)]
    wrong = [p - g for p, g in zip(spans, gold)]
    confidence = [max((e["score"] for e in entities if (e["start"], e["end"], e["type"]) in w), default=0.0)
                  for entities, w in zip(predicted, wrong)]
    has_entities = [bool(p) for p in spans]
    chosen = select_rows([p != g for p, g in zip(spans, gold)], confidence,
                         [bool(w) or (p == g and bool(p)) for p, g, w in zip(spans, gold, wrong)],
                         settings.report_errors, settings.report_correct, settings.seed)
    facts = {"test_rows": len(texts), "errors_total": chosen.errors_total,
             "errors_only_missed": sum(1 for p, g, w in zip(spans, gold, wrong) if p != g and not w),
             "seconds_predict": round(time.perf_counter() - started, 3)}

    started = time.perf_counter()
    calls = 0
    errors, correct = [], []
    for i in chosen.errors + chosen.correct:
        explained = explain_entities(predictor, texts[i], settings.max_evals)
        calls += max((e.model_calls for e in explained), default=0)  # one shared run per sentence
        for explanation in explained:
            start, end = explanation.span
            is_wrong = (start, end, explanation.label) in wrong[i]
            if i in chosen.errors and not is_wrong:
                continue  # the errors section shows what the model got wrong; the sentence's gold says the rest
            at_span = {g for g in gold[i] if g[0] < end and start < g[1]}
            annotated = _annotated(explanation, id=ids[i], gold=_describe(at_span, texts[i]), correct=not is_wrong,
                                   missed=_describe(gold[i] - spans[i], texts[i]))
            (errors if i in chosen.errors else correct).append(annotated)
    facts["seconds_report"] = round(time.perf_counter() - started, 3)

    started = time.perf_counter()
    explanations = []
    for i in faithfulness_sample(has_entities, settings.faithfulness_rows, settings.seed):
        explained = explain_entities(predictor, texts[i], settings.max_evals)
        calls += max((e.model_calls for e in explained), default=0)
        explanations.extend(explained)

    def predict_entities(batch: list[str]) -> list[list[dict]]:
        return [p["entities"] for p in predictor.predict(batch)] if batch else []

    figures = deletion_test_entities(predict_entities, explanations, settings.faithfulness_k, settings.seed)
    facts["seconds_faithfulness"] = round(time.perf_counter() - started, 3)
    facts["model_calls"] = calls
    return errors, correct, figures, facts


# --- the page and the files ------------------------------------------------------------------------

def _percent(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:.0%}"


def faithfulness_sentence(figures: dict, token_task: bool) -> str:
    """The deletion test in one sentence, as the report and the README state it."""
    if not figures.get("n"):
        return "Deletion test: no test rows with enough words to run it."
    what = "the explained entity (its context words only)" if token_task else "the predicted label"
    text = (f"Deletion test on {figures['n']} explanations: deleting the {figures['k']} top-attributed words "
            f"changed {what} {_percent(figures['topk_flip_rate'])} of the time, deleting {figures['k']} random "
            f"words {_percent(figures['random_flip_rate'])} (difference "
            f"{figures['flip_rate_difference']:+.2f}; higher means the attributions point at what the model uses).")
    if token_task:
        text += (f" The span's type changed {_percent(figures['topk_type_change_rate'])} vs "
                 f"{_percent(figures['random_type_change_rate'])}.")
    return text


def _summary_rows(section: str, explanations: list[Explanation]) -> list[dict]:
    return [{"section": section, "id": e.extra.get("id"), "text": e.text, "label": e.label,
             "gold": e.extra.get("gold"), "probability": round(e.probability, 6),
             "span": list(e.span) if e.span else None, "model_calls": e.model_calls,
             "top_words": [w.word for w in e.top_words(TOP_WORDS)]} for e in explanations]


def build_report(predictor, test: pd.DataFrame, settings: ExplainParams, *, explain_texts: Callable | None = None,
                 explain_entities: Callable | None = None, render_sections: Callable | None = None) -> Report:
    """The report of a loaded predictor (load_predictor) on a test split frame (id, text, label).
    The three callables default to components.explain's own (tests may pass others)."""
    if render_sections is None:
        from components.explain.page import render_sections
    token_task = predictor.task == "token-classification"
    started = time.perf_counter()
    if token_task:
        errors, correct, figures, facts = ner_report(predictor, test, settings, explain_entities)
        unit, judged = "sentences", "its predicted entities (span and type) differ from the gold ones"
    else:
        errors, correct, figures, facts = classification_report(predictor, test, settings, explain_texts)
        unit, judged = "rows", "the predicted label is not the gold label"
    card = getattr(predictor, "card", None)
    precision = getattr(card, "precision", "?")
    intro = (f"The served model ({precision} ONNX export, as load_predictor opens it) on the test split: "
             f"{facts['errors_total']} of {facts['test_rows']} {unit} wrong ({judged}). Highlighted words carry "
             f"Shapley values of the model's probability of the shown label (at most {settings.max_evals} model "
             f"calls per explanation): towards the label in one colour, against it in the other. "
             + faithfulness_sentence(figures, token_task))
    what = "wrong predicted entities" if token_task else "misclassified rows"
    sections = [
        (f"Most confident errors ({len(errors)})",
         f"The {what} the model was surest of, most confident first; each card shows the model's answer and, "
         "beside it, the gold one.", errors),
        (f"Correct answers, a random sample ({len(correct)})",
         f"{unit.capitalize()} the model got right, drawn with explain.seed={settings.seed}.", correct),
    ]
    html = render_sections(sections, "What the served model got wrong, and why", intro)
    facts["seconds"] = round(time.perf_counter() - started, 3)
    summary = {
        "task": predictor.task,
        "precision": precision,
        "max_evals": settings.max_evals,
        **facts,
        "errors_shown": len(errors),
        "correct_shown": len(correct),
        "faithfulness": figures,
        "explanations": _summary_rows("errors", errors) + _summary_rows("correct", correct),
    }
    return Report(html, summary, figures)


def write_skipped(layout: ProjectLayout) -> Path:
    """The stage's outputs when explain.enabled is false: a page that says so, no figures."""
    from components.explain.page import render_explanations

    paths = explain_paths(layout)
    paths.dir.mkdir(parents=True, exist_ok=True)
    paths.report.write_text(render_explanations([], "Explanations are off", "explain.enabled is false in params.yaml: "
                                                "the explain stage explained nothing."), encoding="utf-8")
    paths.summary.write_text(json.dumps({"enabled": False}, indent=2) + "\n", encoding="utf-8")
    paths.faithfulness.write_text("{}\n", encoding="utf-8")
    return paths.report


def write_report(layout: ProjectLayout, params: Params) -> Report:
    """The explain stage: the served model of artifacts/onnx on artifacts/splits/test.csv."""
    from components.export.predictor import default_providers, load_predictor, read_model_card

    card = read_model_card(layout.onnx_dir)
    predictor = load_predictor(layout.onnx_dir, default_providers(card.precision))
    test = layout.read_split("test")
    report = build_report(predictor, test, params.explain)
    paths = explain_paths(layout)
    paths.dir.mkdir(parents=True, exist_ok=True)
    paths.report.write_text(report.html, encoding="utf-8")
    paths.summary.write_text(json.dumps(report.summary, indent=2) + "\n", encoding="utf-8")
    paths.faithfulness.write_text(json.dumps(report.faithfulness, indent=2) + "\n", encoding="utf-8")
    return report
