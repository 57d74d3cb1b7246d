"""Word attributions of the served model (components/explain): shap's Partition explainer over the
words of a text, run on real tiny ONNX exports through onnxruntime, the HTML page, and `tunegate explain`
on the champion of a real MLflow registry."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import numpy as np
import pytest

from components.explain.attributions import Explanation, WordAttribution, explain, explain_texts
from components.explain.page import render_explanations, render_sections
from components.export.predictor import OnnxTextClassifier, OnnxTokenTagger
from tests.fixtures_classifier import tiny_classifier, tiny_onnx_export  # noqa: F401 - fixtures
from tests.project import write_params
from tunegate.cli import main

# The tiny classifier learned reviews whose label is decided by one sentiment word among neutral filler
# (tests/tiny.py). It learned it as "negative when a negative word is there, else positive" (a positive
# text stays positive with its positive word masked), so a negative word is the one that decides.
TEXT = "the acting was dreadful and the plot really quite a story"


@pytest.fixture(scope="module")
def classifier(tiny_onnx_export) -> OnnxTextClassifier:  # noqa: F811 - the imported fixture
    return OnnxTextClassifier(tiny_onnx_export.out_dir)


@pytest.fixture(scope="module")
def tagger(tiny_ner_base_model, tmp_path_factory) -> OnnxTokenTagger:
    """A tiny NER model (the training of tests/test_ner_model.py, fewer steps) and its int8 export."""
    from components.export.to_onnx import export_onnx
    from tests.test_ner_model import train_tiny_tagger

    model = train_tiny_tagger(tiny_ner_base_model, tmp_path_factory.mktemp("explain-ner-model"), steps=150)
    return OnnxTokenTagger(export_onnx(model, tmp_path_factory.mktemp("explain-ner") / "int8", max_length=64).out_dir)


class CountingProba:
    """predict_proba that counts the texts it scores: model_calls must be the number really scored."""

    def __init__(self, predictor: OnnxTextClassifier) -> None:
        self.predictor, self.texts = predictor, 0

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.texts += len(texts)
        return self.predictor.predict_proba(texts)


def test_the_deciding_word_comes_first_with_its_offsets(classifier):
    [explanation] = explain(classifier, TEXT, max_evals=200)
    served = classifier.predict([TEXT])[0]
    assert explanation.label == served["label"] == "negative"
    assert explanation.probability == pytest.approx(served["score"], abs=1e-6)  # the served answer, unmasked
    top = explanation.top_words(1)[0]
    assert (top.word, top.start, top.end) == ("dreadful", TEXT.index("dreadful"), TEXT.index("dreadful") + 8)
    assert top.value > 0.2 and top.value > 3 * max(abs(w.value) for w in explanation.words if w.word != "dreadful")
    assert [TEXT[w.start:w.end] for w in explanation.words] == [w.word for w in explanation.words] == TEXT.split()
    # Shapley values add up: all words' values = p(text) - p(every word masked).
    assert explanation.base_value + sum(w.value for w in explanation.words) == pytest.approx(explanation.probability,
                                                                                             abs=1e-5)
    # Asked about the other label, the same word pushes against it.
    [positive] = explain_texts(classifier.predict_proba, classifier.labels, [TEXT], 200, target="positive")
    assert positive.label == "positive" and positive.extra["mask_token"] == "[MASK]"
    assert min(positive.words, key=lambda w: w.value).word == "dreadful"


def test_model_calls_are_counted_bounded_and_the_values_repeat(classifier):
    text = "the film , the story and the cast : a plot with its acting was really quite dreadful , really"
    for bound in (10, 25, 60):
        counter = CountingProba(classifier)
        [explanation] = explain_texts(counter, classifier.labels, [text], bound, mask_token="[MASK]")
        assert explanation.model_calls == counter.texts <= bound
        assert explanation.base_value + sum(w.value for w in explanation.words) == pytest.approx(
            explanation.probability, abs=1e-5)  # coarser with fewer calls, never wrong in total
    assert explanation.model_calls == 60  # a 20-word text can use all of them
    np.random.seed(123)  # the caller's random state neither changes the values nor is changed
    state = np.random.get_state()[1].copy()
    again = explain_texts(classifier.predict_proba, classifier.labels, [text, text], 60)
    assert (np.random.get_state()[1] == state).all()
    assert [w.value for w in again[0].words] == [w.value for w in again[1].words] == [w.value for w in explanation.words]
    # Texts of one word or none have exact values and no shap clustering to build.
    one, empty = explain_texts(classifier.predict_proba, classifier.labels, ["dreadful", ""], 10)
    assert one.words[0].value == pytest.approx(one.probability - one.base_value) and one.model_calls == 2
    assert empty.words == [] and empty.model_calls == 1
    with pytest.raises(ValueError, match="not one of the model's labels"):
        explain_texts(classifier.predict_proba, classifier.labels, [text], 60, target="neutral")


def test_each_entity_is_explained_with_its_span(tagger):
    text = "John Smith  visited Paris, with Acme Corp !"
    entities = tagger.predict([text])[0]["entities"]
    assert [e["type"] for e in entities] == ["PER", "LOC", "ORG"]
    explanations = explain(tagger, text, max_evals=120)
    assert [(e.label, e.span) for e in explanations] == [(e["type"], (e["start"], e["end"])) for e in entities]
    for explanation in explanations:
        start, end = explanation.span
        assert explanation.model_calls <= 120 and explanation.extra["shared_by"] == 3
        assert [text[w.start:w.end] for w in explanation.words] == [w.word for w in explanation.words]
        assert explanation.probability > 0.5 and explanation.base_value < explanation.probability
        # Masking the entity's own words is what takes its type away.
        top = explanation.top_words(1)[0]
        assert start <= top.start and top.end <= end, (explanation.label, top)
        as_json = json.loads(json.dumps(explanation.to_dict()))
        assert set(as_json) >= {"text", "label", "probability", "base_value", "model_calls", "span", "words"}
        assert as_json["span"] == [start, end] and as_json["text"] == text
        assert set(as_json["words"][0]) == {"word", "start", "end", "value"}
    assert explain(tagger, "the people said today .", max_evals=50) == []


class Spans(HTMLParser):
    """The page's word spans, its visible text per explanation, and any tag that must not be there."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.words: list[dict] = []
        self.texts: list[str] = []
        self.tags: set[str] = set()
        self._in_text = 0

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        attrs = dict(attrs)
        if tag == "div" and attrs.get("class") == "text":
            self._in_text = 1
            self.texts.append("")
        elif self._in_text:
            self._in_text += 1
            if tag == "span" and attrs.get("class", "").startswith("w "):
                self.words.append({**attrs, "text": ""})

    def handle_endtag(self, tag):
        if self._in_text:
            self._in_text -= 1

    def handle_data(self, data):
        if self._in_text:
            self.texts[-1] += data
            if self._in_text == 2 and self.words:
                self.words[-1]["text"] += data


def test_the_page_shows_every_word_with_its_value_and_escapes_the_text(classifier):
    hostile = 'it was dreadful <script>alert("x")</script> & "quoted"'
    explanations = explain_texts(classifier.predict_proba, classifier.labels, [TEXT, hostile], 100)
    page = render_explanations(explanations, "Why <b>", intro="a <i>test</i>")
    parser = Spans()
    parser.feed(page)
    assert "script" not in parser.tags and "b" not in parser.tags and "i" not in parser.tags
    assert "<link" not in page and "src=" not in page and "<style>" in page
    assert parser.texts == [TEXT, hostile]  # the text as it was, unescaped by the parser
    words = [w for e in explanations for w in e.words]
    assert len(parser.words) == len(words)
    for span, word in zip(parser.words, words):
        assert float(span["data-value"]) == word.value and span["text"] == word.word
        assert span["class"].split()[1] == ("pos" if word.value > 0 else "neg" if word.value < 0 else "zero")
        assert span["title"] == f"{word.value:+.4f}"
    dreadful = next(s for s in parser.words if s["text"] == "dreadful")
    assert "rgba(22, 163, 74, 0.750)" in dreadful["style"]  # the strongest word towards the label: full colour
    sections = render_sections([("Errors", "most confident", explanations[:1]), ("Empty", "", [])], "report")
    parser = Spans()
    parser.feed(sections)
    assert len(parser.words) == len(explanations[0].words) and "<h2>Errors</h2>" in sections


def test_an_entity_page_marks_the_span():
    text = "Mary visited Paris"
    words = [WordAttribution("Mary", 0, 4, 0.1), WordAttribution("visited", 5, 12, -0.02),
             WordAttribution("Paris", 13, 18, 0.6)]
    explanation = Explanation(text, "LOC", 0.9, 0.2, words, model_calls=7, span=(13, 18))
    page = render_explanations([explanation], "NER")
    assert page.count('class="w pos span-word"') == 1 and "&ldquo;Paris&rdquo;" in page
    assert explanation.to_dict()["words"][2] == {"word": "Paris", "start": 13, "end": 18, "value": 0.6}


def test_cli_explains_the_champion_and_writes_the_page(tiny_onnx_export, tmp_path, capsys):  # noqa: F811
    from components.config import load_params
    from components.layout import ProjectLayout
    from components.lifecycle.registry import CHAMPION
    from components.lifecycle.tracking import open_registry

    project = tmp_path / "project"
    project.mkdir()
    write_params(project, {"data": {"source": "x.csv", "labels": ["negative", "positive"]},
                           "model": {"base_model": "org/m"},
                           "registry": {"model_name": "tiny-explain",
                                        "tracking_uri": f"sqlite:///{project}/mlflow/mlflow.db"},
                           "explain": {"max_evals": 80}})
    layout = ProjectLayout(project)
    registry = open_registry(load_params(layout.params_file), layout)
    run_id = registry.start_run("tunegate-explain-tests", "r", {})
    registry.set_alias(CHAMPION, registry.register(run_id, tiny_onnx_export.out_dir, {"gate": "passed"}).version)
    registry.end_run(run_id)

    assert main(["--project", str(project), "explain", TEXT, "--html", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "tiny-explain v1" in out and "negative: p = " in out and "model calls" in out
    table = out.split("chars\n", 1)[1].splitlines()
    assert table[0].split()[0] == "dreadful" and len(table) >= 3
    page = project / "artifacts" / "explain" / "explanation.html"
    assert f"page: {page}" in out and 'data-value="' in page.read_text(encoding="utf-8")


def test_cli_explains_an_export_dir_as_json(tiny_onnx_export, tmp_path, capsys):  # noqa: F811
    # --model-dir needs no project; --json prints to_dict() and nothing else on stdout.
    html = tmp_path / "out.html"
    assert main(["--project", str(tmp_path / "nowhere"), "explain", TEXT, "--model-dir",
                 str(tiny_onnx_export.out_dir), "--json", "--max-evals", "40", "--html", str(html)]) == 0
    captured = capsys.readouterr()
    answer = json.loads(captured.out)
    [explanation] = answer["explanations"]
    assert answer["max_evals"] == 40 and explanation["model_calls"] <= 40 and explanation["label"] == "negative"
    assert html.is_file() and f"page: {html}" in captured.err
    # Wrong settings are a message, not a traceback.
    assert main(["--project", str(tmp_path), "explain", TEXT, "--model-dir", str(tmp_path)]) == 2
    assert "--model-dir" in capsys.readouterr().err
    assert main(["--project", str(tmp_path), "explain", TEXT, "--model-dir", str(tiny_onnx_export.out_dir),
                 "--max-evals", "5"]) == 2
    assert "at least 10" in capsys.readouterr().err
