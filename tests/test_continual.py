"""Continual learning through the real flow: a champion, a new batch, then a retraining that starts
from the champion's weights with a replayed share of the old batches and a gate that checks the
old batches' test rows for forgetting. The new batch closes the labelling loop: logged live texts go
out as a labelling queue, a person labels them in Label Studio, and `tunegate ingest` takes the export
back and retrains. Also domain-adaptive (MLM) pretraining as a stage."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from components.config.params_file import set_param
from components.data.ingest import DataStore
from components.layout import ProjectLayout
from components.lifecycle.registry import CHAMPION, ModelRegistry, resolve_tracking_uri
from components.lifecycle.tracking import RunOutcome
from components.monitoring.labelling import labelling_queue, write_labelling_queue
from flows.retrain import retrain
from tests.label_studio import annotation, choice
from tests.project import git, make_project
from tests.tiny import sentiment_frame
from tunegate.cli import main

pytestmark = pytest.mark.slow


def test_retraining_from_the_champion_replays_old_batches_and_checks_forgetting(tmp_path, tiny_base_model, prefect_api):
    root = make_project(tmp_path / "project", tiny_base_model, approval={"profile": "local"})
    first = retrain(project_dir=str(root))
    assert first["status"] == RunOutcome.PROMOTED, first

    # Live traffic the champion was unsure of goes out as a labelling queue, the served label as a suggestion
    # that is wrong for every text: only what the person answers may become a label.
    truth = sentiment_frame(300, seed=9).drop_duplicates("review")
    texts = ("new batch " + truth["review"]).tolist()
    flipped = {"positive": "negative", "negative": "positive"}
    traffic = pd.DataFrame({"time": "2026-12-01T10:00:00Z", "version": first["version"], "text": texts,
                            "label": truth["sentiment"].map(flipped).tolist(), "score": 0.51})
    store = DataStore(root / "data")
    queue = labelling_queue(traffic, store.read(), task="sequence-classification", size=len(texts),
                            low_confidence=0.6)
    assert len(queue) == len(texts) and (queue["suggestion"] != queue["text"].map(
        dict(zip(texts, truth["sentiment"])))).all()
    files = write_labelling_queue(queue, tmp_path / "queue", task="sequence-classification",
                                  labels=["negative", "positive"], model_version=first["version"])
    answers = dict(zip(texts, truth["sentiment"]))
    export = [{"id": number, **task,  # task 1 nobody labelled: set aside, not trained on
               "annotations": [] if number == 1 else [annotation([choice(answers[task["data"]["text"]])])]}
              for number, task in enumerate(json.loads(files.label_studio_json.read_text()), start=1)]
    exported = tmp_path / "project-7-at-2026-12-01-12-00.json"
    exported.write_text(json.dumps(export))

    set_param(root / "params.yaml", "train.init_from", "champion")
    set_param(root / "params.yaml", "train.replay_fraction", 0.5)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "continue from the champion")
    assert main(["--project", str(root), "ingest", str(exported)]) == 0  # the batch, then the retraining

    batch = store.batches()[-1]
    assert batch.batch_id.startswith(exported.name) and (batch.accepted, batch.quarantined) == (len(texts) - 1, 1)
    added = store.read([batch])
    assert (added["label"] == added["text"].map(answers)).all()  # the person's labels, never the suggestions
    layout = ProjectLayout(root)
    registry = ModelRegistry(resolve_tracking_uri(None, layout.mlflow_dir), "tiny-sentiment")
    (second_run,) = [run for run in registry.client.search_runs(
        [e.experiment_id for e in registry.client.search_experiments()])
        if batch.batch_id in run.data.tags.get("data_batches", "")]
    second = {"run_id": second_run.info.run_id, "status": second_run.data.tags["outcome"],
              "version": second_run.data.tags["outcome_version"]}
    start = json.loads((layout.start_dir / "start.json").read_text())
    assert (start["source"], start["champion_version"]) == ("champion", first["version"])
    assert (layout.start_dir / "model" / "model.safetensors").is_file()  # the champion's PyTorch weights

    history = json.loads(layout.train_history.read_text())
    replay = history["replay"]
    assert replay["new_rows"] > 150 and replay["replayed_rows"] == round(0.5 * replay["old_rows"])
    assert history["train_examples"] == replay["new_rows"] + replay["replayed_rows"]

    run = registry.client.get_run(second["run_id"])
    assert run.data.metrics["replay_replayed_rows"] == replay["replayed_rows"]
    decision = json.loads(open(registry.client.download_artifacts(second["run_id"], "gate/decision.json")).read())
    forgetting = [c for c in decision["checks"] if c["name"] == "no_forgetting"]
    assert len(forgetting) == 1 and "test rows of the batches" in forgetting[0]["detail"]
    assert second["status"] in (RunOutcome.PROMOTED, RunOutcome.REJECTED_BY_GATE), second
    if second["status"] == RunOutcome.PROMOTED:
        assert registry.by_alias(CHAMPION).version == second["version"]


def test_adaptive_pretraining_lowers_the_mlm_loss_and_feeds_fine_tuning(tmp_path, tiny_base_model):
    from components.config import AdaptParams
    from components.model.adapt import adapt_language_model, adapted_source, read_card
    from components.model.modeling import load_classifier

    texts = sentiment_frame(400, seed=4)["review"].tolist()
    out = tmp_path / "adapted"
    result = adapt_language_model(str(tiny_base_model), "tiny", texts,
                                  AdaptParams(enabled=True, epochs=3, learning_rate=5e-3, batch_size=32), 32, out)
    assert result.mlm_loss_last_epoch < result.mlm_loss_first_epoch
    assert read_card(out).enabled and adapted_source(out) == str(out)
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    model = load_classifier(str(out), ["negative", "positive"])  # the MLM head is dropped, a new head added
    assert model.config.num_labels == 2
