"""Token classification end to end on a tiny model: JSONL tokens + tags through GX checks, DVC
stages, training with first-sub-token labels, entity-level evaluation, int8 ONNX export with an
entity parity check, the gate, the MLflow registry and a real HTTP service answering entities."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from components.layout import ProjectLayout
from components.lifecycle.registry import CHAMPION, ModelRegistry, resolve_tracking_uri
from components.lifecycle.tracking import RunOutcome
from components.serving.deployment import build_service_app
from components.serving.server import BackgroundServer
from flows.retrain import retrain
from tests.project import SMALL_INSPECTIONS, git, make_project
from tests.tiny import ner_records

pytestmark = pytest.mark.slow

NER_SECTIONS = {
    "task": "token-classification",
    "data": {"source": "incoming/sentences.jsonl", "labels": ["PER", "LOC", "ORG"], "min_rows": 100,
             "max_duplicate_fraction": 0.2, "text_column": "text", "label_column": "label"},
    "model": {"max_length": 48, "word_shapes": True},  # as examples/ner/params.yaml sets it
    "train": {"epochs": 6, "learning_rate": 0.005, "batch_size": 16},
    "gate": {"min_accuracy": 0.0, "min_macro_f1": 0.0, "min_entity_f1": 0.8, "compare_metric": "entity_f1"},
    "registry": {"model_name": "tiny-ner"},
    "approval": {"profile": "local"},
}


@pytest.fixture(scope="module")
def ner_project(tmp_path_factory, tiny_ner_base_model, prefect_api) -> tuple[Path, dict]:
    sections = {**{k: v for k, v in NER_SECTIONS.items() if k != "task"}, **SMALL_INSPECTIONS}
    root = make_project(tmp_path_factory.mktemp("ner") / "project", tiny_ner_base_model, **sections)
    params = (root / "params.yaml").read_text().replace("task: sequence-classification", "task: token-classification")
    (root / "params.yaml").write_text(params)
    lines = [json.dumps(record) for record in ner_records(700, seed=21)]
    lines.append(json.dumps({"tokens": ["bad", "Paris"], "tags": ["O", "I-LOC"]}))  # I- without B-: quarantined
    (root / "incoming" / "sentences.jsonl").write_text("\n".join(lines) + "\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "NER data")
    return root, retrain(project_dir=str(root))


def test_ner_run_is_gated_on_entity_f1_and_promoted(ner_project):
    root, result = ner_project
    assert result["status"] == RunOutcome.PROMOTED, result
    registry = ModelRegistry(resolve_tracking_uri(None, ProjectLayout(root).mlflow_dir), "tiny-ner")
    tags = registry.version(result["version"]).tags
    assert tags["task"] == "token-classification"
    assert float(tags["test_entity_f1"]) >= 0.8
    assert "PASS min_entity_f1" in tags["gate_reasons"]
    run = registry.client.get_run(result["run_id"])
    assert {"test_entity_f1", "int8_test_entity_f1", "test_PER_f1", "export_agreement"} <= set(run.data.metrics)
    assert run.data.metrics["export_agreement"] >= 0.95  # entity F1 of int8 against PyTorch
    card = json.loads((root / "artifacts" / "onnx" / "tunegate-model.json").read_text())
    assert card["word_shapes"] is True  # the shape ids travel to the served model

    metrics = json.loads((root / "artifacts" / "eval" / "metrics.json").read_text())
    assert metrics["entity_f1"] >= 0.8 and set(metrics["per_class"]) == {"PER", "LOC", "ORG"}
    assert (root / "artifacts" / "eval" / "confusion_matrix.png").stat().st_size > 0


def test_ner_bad_sentence_is_quarantined_with_its_reason(ner_project):
    root, _ = ner_project
    quarantine = "".join(p.read_text() for p in (root / "data" / "quarantine").glob("*.csv"))
    assert "I-LOC" in quarantine and "iob2" in quarantine.lower()


def test_ner_service_answers_entities_with_offsets(ner_project):
    root, result = ner_project
    layout = ProjectLayout(root)
    registry = ModelRegistry(resolve_tracking_uri(None, layout.mlflow_dir), "tiny-ner")
    assert registry.by_alias(CHAMPION).version == result["version"]
    app = build_service_app(registry, layout.artifacts / "serving", ["CPUExecutionProvider"])
    text = "yesterday John Smith met  people from Globex in Paris."
    with BackgroundServer(app) as server:
        answer = httpx.post(f"{server.url}/predict", json={"texts": [text, "the people said"]}, timeout=30).json()
        invocations = httpx.post(f"{server.url}/invocations", json={"inputs": [text]}, timeout=30).json()
    entities = answer["predictions"][0]["entities"]
    found = {(e["type"], text[e["start"]:e["end"]]) for e in entities}
    assert {("PER", "John Smith"), ("ORG", "Globex"), ("LOC", "Paris")} <= found
    assert all(text[e["start"]:e["end"]] == e["text"] for e in entities)
    assert answer["predictions"][1]["entities"] == []
    assert answer["model_version"] == result["version"]
    # Same spans either way; scores may differ in the last digits (dynamic int8 scales each batch).
    spans = [(e["type"], e["start"], e["end"]) for e in entities]
    assert [(e["type"], e["start"], e["end"]) for e in invocations["predictions"][0]["entities"]] == spans
