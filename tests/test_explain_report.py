"""The evaluation's explanation report (components/explain/report.py) and the deletion test
(components/explain/faithfulness.py), on real tiny models exported to ONNX and opened as served:
the page is parsed back, the errors are the served model's own, the test tells top words from random
ones, the stage writes its files, and the run's report is linked from the approval description."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pandas as pd
import pytest

from components.config import ExplainParams, load_params
from components.explain.faithfulness import (
    delete_words,
    deletion_test_entities,
    deletion_test_texts,
)
from components.explain.report import build_report, explain_paths, gold_entities, select_rows
from components.layout import ProjectLayout
from tests.fixtures_classifier import tiny_classifier, tiny_onnx_export  # noqa: F401 - fixtures
from tests.project import tiny_params, write_params
from tests.tiny import ner_records, sentiment_frame

SETTINGS = ExplainParams(max_evals=40, report_errors=3, report_correct=2, faithfulness_rows=16, faithfulness_k=1)


# --- the page, parsed back -------------------------------------------------------------------------

class Page(HTMLParser):
    """Headings (h1-h3) in order, and per heading the highlighted words that follow it: elements with a
    data-value attribute, each with its text and value."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.headings: list[str] = []
        self.words: dict[str, list[tuple[str, float]]] = {}
        self._heading: str | None = None
        self._word: float | None = None
        self._text = ""
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("h1", "h2", "h3"):
            self._heading, self._text = tag, ""
        elif "data-value" in attrs and self.headings:
            self._word, self._text = float(attrs["data-value"]), ""

    def handle_data(self, data):
        self._text += data

    def handle_endtag(self, tag):
        if self._heading == tag:
            self.headings.append(" ".join(self._text.split()))
            self.words[self.headings[-1]] = []
            self._heading = None
        elif self._word is not None:
            self.words[self.headings[-1]].append((self._text.strip(), self._word))
            self._word = None

    def section(self, starts: str) -> list[tuple[str, float]]:
        found = [h for h in self.headings if h.startswith(starts)]
        assert len(found) == 1, f"one heading starting {starts!r} expected, found {self.headings}"
        return self.words[found[0]]


# --- the deletion test -------------------------------------------------------------------------------

def one_word_decides(texts: list[str]) -> np.ndarray:
    """A model where one word decides: positive exactly when 'great' is among the words."""
    return np.array([[0.1, 0.9] if "great" in text.split() else [0.9, 0.1] for text in texts])


def test_deleting_the_deciding_word_flips_every_prediction_random_words_rarely():
    from components.explain.attributions import explain_texts

    texts = [f"{a} the great {b} film" for a, b in zip(["a", "one", "its", "so"], ["long", "odd", "new", "bold"])]
    texts += ["what a dull film it was", "the plot was thin and slow"]
    labels = ["negative", "positive"]
    explanations = explain_texts(one_word_decides, labels, texts, max_evals=40)
    assert [e.top_words(1)[0].word for e in explanations[:4]] == ["great"] * 4  # the attribution finds it

    def predict(batch):
        return [labels[i] for i in one_word_decides(batch).argmax(axis=1)]

    figures = deletion_test_texts(predict, explanations, k=1, seed=3)
    assert figures["n"] == 6 and figures["skipped"] == 0 and figures["k"] == 1
    # Deleting 'great' flips the four positive texts; the two negative ones cannot flip at all.
    assert figures["topk_flip_rate"] == pytest.approx(4 / 6)
    assert figures["random_flip_rate"] < figures["topk_flip_rate"]
    assert figures["flip_rate_difference"] == pytest.approx(figures["topk_flip_rate"] - figures["random_flip_rate"])
    # The same seed, the same random words.
    assert deletion_test_texts(predict, explanations, k=1, seed=3) == figures


def test_deleted_words_leave_clean_text_and_known_positions():
    from components.explain.attributions import WordAttribution

    text = "John met Mary in Paris today"
    words = {w: WordAttribution(w, text.index(w), text.index(w) + len(w), 0.0) for w in text.split()}
    deleted = delete_words(text, [words["met"], words["today"]])
    assert deleted.text == "John Mary in Paris"
    start = text.index("Paris")
    assert deleted.text[deleted.position(start):deleted.position(start + 5)] == "Paris"
    assert delete_words(text, [words["John"]]).text == "met Mary in Paris today"


def test_the_top_words_of_the_served_classifier_matter_more_than_random_ones(tiny_onnx_export):
    """The tiny sentiment data: one sentiment word per review decides its label."""
    from components.explain.attributions import explain_texts
    from components.export.predictor import load_predictor

    predictor = load_predictor(tiny_onnx_export.out_dir)
    texts = sentiment_frame(24, seed=5)["review"].tolist()
    explanations = explain_texts(predictor.predict_proba, predictor.labels, texts, max_evals=40)

    def predict(batch):
        return [predictor.labels[i] for i in predictor.predict_proba(batch).argmax(axis=1)]

    figures = deletion_test_texts(predict, explanations, k=1, seed=0)
    assert figures["n"] == 24
    assert figures["topk_flip_rate"] >= figures["random_flip_rate"] + 0.2, figures


def test_entity_deletion_keeps_the_span_and_judges_its_type():
    """NER: only context words are deleted; a model that types 'Paris' LOC after 'in' and PER otherwise."""
    from components.explain.attributions import Explanation, WordAttribution

    def entities(texts):
        found = []
        for text in texts:
            start = text.index("Paris")
            kind = "LOC" if " in Paris" in text else "PER"
            found.append([{"type": kind, "start": start, "end": start + 5, "text": "Paris", "score": 0.9}])
        return found

    text = "we met in Paris on monday"
    values = {"we": 0.0, "met": 0.1, "in": 0.5, "Paris": 0.9, "on": 0.0, "monday": 0.05}
    words = [WordAttribution(w, text.index(w), text.index(w) + len(w), v) for w, v in values.items()]
    span = (text.index("Paris"), text.index("Paris") + 5)
    explanation = Explanation(text, "LOC", 0.9, 0.2, words, 10, span=span)
    figures = deletion_test_entities(entities, [explanation], k=1, seed=0)
    # The top context word is 'in' (Paris itself is never deleted): its deletion retypes the span.
    assert figures["topk_flip_rate"] == 1.0 and figures["topk_type_change_rate"] == 1.0
    assert figures["n"] == 1 and "random_type_change_rate" in figures
    with pytest.raises(ValueError, match="needs its span"):
        deletion_test_entities(entities, [Explanation(text, "LOC", 0.9, 0.2, words, 10)], k=1)


def test_row_selection_most_confident_errors_first_and_a_seeded_sample():
    error = [True, False, True, True, False, False, True]
    confidence = [0.6, 0.9, 0.95, 0.6, 0.8, 0.7, 0.99]
    chosen = select_rows(error, confidence, [True] * 6 + [False], n_errors=2, n_correct=2, seed=1)
    assert chosen.errors == [2, 0] and chosen.errors_total == 4  # 6 is not explainable; ties: earlier row first
    assert len(chosen.correct) == 2 and not any(error[i] for i in chosen.correct)
    assert select_rows(error, confidence, [True] * 7, 2, 2, seed=1).correct == \
        select_rows(error, confidence, [True] * 7, 2, 2, seed=1).correct


# --- the report ----------------------------------------------------------------------------------------

def classification_split(n: int = 40, flipped: int = 6) -> pd.DataFrame:
    """A test split the tiny classifier gets right, with the gold label of the first `flipped` rows
    turned around: those become the served model's (confident) errors."""
    frame = sentiment_frame(n, seed=11)
    gold = frame["sentiment"].tolist()
    gold[:flipped] = ["positive" if g == "negative" else "negative" for g in gold[:flipped]]
    return pd.DataFrame({"id": [f"r{i}" for i in range(n)], "text": frame["review"], "label": gold})


def test_report_shows_the_served_models_most_confident_errors_then_correct_answers(tiny_onnx_export):
    from components.export.predictor import load_predictor

    predictor = load_predictor(tiny_onnx_export.out_dir)
    test = classification_split()
    report = build_report(predictor, test, SETTINGS)

    # What the served model says, independently of the report.
    proba = predictor.predict_proba(test["text"].tolist())
    predicted = [predictor.labels[i] for i in proba.argmax(axis=1)]
    wrong = [i for i in range(len(test)) if predicted[i] != test["label"][i]]
    expected = sorted(wrong, key=lambda i: -proba[i].max())[:SETTINGS.report_errors]
    summary = report.summary
    assert summary["errors_total"] == len(wrong) >= SETTINGS.report_errors
    errors = [row for row in summary["explanations"] if row["section"] == "errors"]
    correct = [row for row in summary["explanations"] if row["section"] == "correct"]
    assert [row["id"] for row in errors] == [test["id"][i] for i in expected]
    assert all(row["label"] != row["gold"] for row in errors)  # only misclassified rows
    assert [row["probability"] for row in errors] == sorted((row["probability"] for row in errors), reverse=True)
    assert len(correct) == SETTINGS.report_correct and all(row["label"] == row["gold"] for row in correct)
    assert all(row["model_calls"] <= SETTINGS.max_evals for row in summary["explanations"])

    page = Page(report.html)
    for section, rows in (("Most confident errors", errors), ("Correct answers", correct)):
        highlighted = page.section(section)
        # every word of every explanation is highlighted, with its value
        assert len(highlighted) == sum(len(row["text"].split()) + row["text"].count("#") for row in rows)
        assert any(value != 0 for _, value in highlighted)
    assert report.faithfulness["n"] == SETTINGS.faithfulness_rows
    assert "Deletion test" in report.html


@pytest.fixture(scope="module")
def ner_export(tiny_ner_base_model, tmp_path_factory):
    from components.export.to_onnx import export_onnx
    from tests.test_ner_model import MAX_LENGTH, train_tiny_tagger

    tagger_dir = train_tiny_tagger(tiny_ner_base_model, tmp_path_factory.mktemp("explain-ner-model"), steps=120)
    return export_onnx(tagger_dir, tmp_path_factory.mktemp("explain-ner-onnx") / "int8", max_length=MAX_LENGTH)


def test_ner_report_explains_the_wrong_entities_of_error_sentences(ner_export):
    from components.export.predictor import load_predictor

    predictor = load_predictor(ner_export.out_dir)
    records = ner_records(24, seed=99)
    for record in records[:5]:  # the first entity of five sentences gets another gold type
        first = next(i for i, tag in enumerate(record["tags"]) if tag.startswith("B-"))
        kind = record["tags"][first][2:]
        other = {"PER": "LOC", "LOC": "ORG", "ORG": "PER"}[kind]
        record["tags"] = [t.replace(f"-{kind}", f"-{other}") if i >= first and t != "O" and
                          (i == first or t == f"I-{kind}") else t for i, t in enumerate(record["tags"])]
    test = pd.DataFrame({"id": [f"s{i}" for i in range(len(records))],
                         "text": [" ".join(r["tokens"]) for r in records],
                         "label": [" ".join(r["tags"]) for r in records]})
    settings = ExplainParams(max_evals=40, report_errors=3, report_correct=2, faithfulness_rows=6, faithfulness_k=1)
    report = build_report(predictor, test, settings)

    predicted = [{(e["start"], e["end"], e["type"]) for e in p["entities"]} for p in predictor.predict(test["text"])]
    gold = [gold_entities(t, tags) for t, tags in zip(test["text"], test["label"])]
    by_id = dict(zip(test["id"], zip(predicted, gold)))
    summary = report.summary
    assert summary["errors_total"] == sum(p != g for p, g in zip(predicted, gold)) >= 3
    errors = [row for row in summary["explanations"] if row["section"] == "errors"]
    correct = [row for row in summary["explanations"] if row["section"] == "correct"]
    assert errors and len({row["id"] for row in errors}) <= settings.report_errors
    for row in errors:  # each one a predicted entity the gold does not have
        spans, gold_spans = by_id[row["id"]]
        assert (*row["span"], row["label"]) in spans - gold_spans
    assert len({row["id"] for row in correct}) == settings.report_correct
    for row in correct:  # every entity of a sentence the model got exactly right
        spans, gold_spans = by_id[row["id"]]
        assert spans == gold_spans and (*row["span"], row["label"]) in spans
    assert sum(len(by_id[i][0]) for i in {row["id"] for row in correct}) == len(correct)

    page = Page(report.html)
    assert page.section("Most confident errors") and page.section("Correct answers")
    figures = report.faithfulness
    assert figures["n"] >= 1 and "topk_type_change_rate" in figures and "random_type_change_rate" in figures


# --- the stage, MLflow and the approval ------------------------------------------------------------------

def test_stage_writes_its_files_and_the_approval_links_the_logged_report(tiny_onnx_export, tiny_base_model,
                                                                          tmp_path, capsys):
    from components.lifecycle.registry import ModelRegistry
    from components.lifecycle.tracking import approval_description, artifact_link, explain_report_link, log_explanations
    from components.stages import STAGES

    layout = ProjectLayout(tmp_path)
    shutil.copytree(tiny_onnx_export.out_dir, layout.onnx_dir)
    layout.splits_dir.mkdir(parents=True)
    classification_split(24, flipped=3).to_csv(layout.split_file("test"), index=False)
    write_params(tmp_path, tiny_params(tiny_base_model, explain={"enabled": True, "max_evals": 30, "report_errors": 2,
                                                                 "report_correct": 1, "faithfulness_rows": 6}))
    STAGES["explain"](layout, load_params(layout.params_file))
    paths = explain_paths(layout)
    figures = json.loads(paths.faithfulness.read_text())
    assert {"n", "k", "topk_flip_rate", "random_flip_rate", "flip_rate_difference"} <= set(figures)
    assert figures["n"] == 6
    summary = json.loads(paths.summary.read_text())
    assert summary["errors_shown"] == 2 and summary["correct_shown"] == 1
    assert len(Page(paths.report.read_text()).section("Most confident errors")) > 0
    assert "Deletion test on 6 explanations" in capsys.readouterr().out

    registry = ModelRegistry(f"sqlite:///{tmp_path}/mlflow.db", "tiny", artifact_root=tmp_path / "mlruns")
    run_id = registry.start_run("explain-tests", "r", {})
    assert explain_report_link(registry, run_id) is None  # nothing logged yet: no link
    log_explanations(registry, run_id, layout)
    link = explain_report_link(registry, run_id)
    logged = Path(unquote(urlsplit(link).path))
    assert logged.name == "report.html" and logged.read_text() == paths.report.read_text()
    run = registry.client.get_run(run_id)
    assert run.data.metrics["explain_topk_flip_rate"] == figures["topk_flip_rate"]
    assert run.data.tags["explain_report"] == link
    verdict = {"challenger_metrics": {"accuracy": 0.9, "macro_f1": 0.9, "n": 24}, "summary": "gate passed"}
    assert f"]({link})" in approval_description("tiny", "3", verdict, link)
    assert "explanation report" not in approval_description("tiny", "3", verdict)
    # On an MLflow server: the UI's page of the artifact, without the login the URI may carry.
    assert artifact_link("https://alice:pw@mlflow.example:5000/", "7", "abc", "mlflow-artifacts:/7/abc/artifacts",
                         "explain/report.html") == \
        "https://mlflow.example:5000/#/experiments/7/runs/abc/artifacts/explain/report.html"
