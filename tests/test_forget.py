"""`tunegate forget` on a real project: a git repo with DVC (its cache and a local remote), a SQLite MLflow
registry holding versions whose lineage names the batches, and the logs a service and monitoring write."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from components.config import load_params
from components.data.ingest import DataStore, ingest_batch, normalize_text, read_configured_source, read_file_source
from components.layout import ProjectLayout
from components.lifecycle.registry import ModelRegistry
from components.lifecycle.tracking import open_registry
from components.lifecycle.versioning import data_hash, git_commit, run_dvc, version_data
from components.monitoring.traffic import LABELLING_DIR
from components.privacy.forget import (
    FORGOTTEN_TAG,
    RETRAIN_TAG,
    Matcher,
    read_removals,
    scrub_jsonl_text,
    scrub_prediction_log,
)
from tests.project import make_project, read_params, write_params
from tests.tiny import sentiment_frame
from tunegate.cli import main

# The person's rows: A and C in the second batch (accepted), B in its quarantine (a label no one configured),
# D in the base batch. A and C are forgotten by --text, B and D by one --regex.
A = "My name is Jane Roe and the blender broke"
B = "Jane Roe again: refund please"
C = "Email me at jroe@example.com, love it"
D = "Jane Roe says great value"
REGEX = r"Jane\s+Roe"
# What must appear nowhere once they are forgotten.
TRACES = ["Jane Roe", "jroe@example.com", "blender broke", "refund please"]
UNRELATED = "fine product works as described"


@dataclass
class Forgotten:
    root: Path
    layout: ProjectLayout
    registry: ModelRegistry
    base_batch: str
    second_batch: str
    rows_before: int
    hash_before: str
    versions: dict[str, str]  # v1: base only, v2: base and second, v3: another batch
    outputs: list[tuple[int, str, str]]  # (exit code, stdout, stderr) of each forget
    history: str


def run_cli(root: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--project", str(root), *args])
    return code, out.getvalue(), err.getvalue()


def register(registry: ModelRegistry, root: Path, model_dir: Path, version_hash: str, batches: list[str]) -> str:
    """A registered version with the lineage tags retraining writes (tracking.start_run, version_tags)."""
    lineage = {"git_commit": git_commit(root), "data_hash": version_hash, "data_batches": batches}
    run_id = registry.start_run("forget-test", "retrain", lineage)
    return registry.register(run_id, model_dir, lineage).version


def write_logs(root: Path, params) -> None:
    """What a service and monitoring leave behind: prediction log, shadow disagreements, a labelling queue."""
    def line(text: str) -> str:
        return json.dumps({"time": "2025-01-01T00:00:00.000+00:00", "version": "2", "text": text,
                          "label": "positive", "score": 0.9}) + "\n"

    log = root / params.serve.prediction_log
    log.parent.mkdir(parents=True)
    # A as a client typed it (double space, zero-width space): the same text after normalization.
    log.write_text(line("My name is Jane  Roe and the\u200b blender broke") + line(UNRELATED) + line(D)
                   + '{"time": "2025-01-01T00:00:01", "text": "Jane Roe says gr' + "\n")  # cut by a crash
    shadow = root / params.serve.shadow_log
    shadow.parent.mkdir(parents=True, exist_ok=True)
    shadow.write_text(json.dumps({"text": C, "champion": {"label": "positive"}}) + "\n"
                      + json.dumps({"text": UNRELATED, "champion": {"label": "positive"}}) + "\n")
    queue = root / LABELLING_DIR / "20250101T000000Z"
    queue.mkdir(parents=True)
    pd.DataFrame({"id": ["x", "y"], params.data.text_column: [B, UNRELATED], params.data.label_column: ["", ""]}
                 ).to_csv(queue / "labelling-queue.csv", index=False)
    (queue / "labelling-queue.label-studio.json").write_text(json.dumps(
        [{"data": {"text": B}}, {"data": {"text": UNRELATED}}], indent=1))


@pytest.fixture(scope="module")
def forgotten(tmp_path_factory) -> Forgotten:
    tmp = tmp_path_factory.mktemp("forget")
    # No model is needed to ingest, register (a stand-in file) or forget; pii off: no Presidio to load.
    root = make_project(tmp / "project", tmp / "no-model", rows=300, data={"pii": "off"},
                        serve={"prediction_log": "logs/predictions.jsonl"})
    source = root / "incoming" / "reviews.csv"
    pd.concat([pd.read_csv(source), pd.DataFrame({"review": [D], "sentiment": ["positive"]})]).to_csv(source, index=False)
    params = load_params(root / "params.yaml")
    layout = ProjectLayout(root)
    store = DataStore(layout.data_dir)
    base = ingest_batch(read_configured_source(params.data, root, task=params.task), params.data, store, base=True)
    first_hash = version_data(root, layout.data_dir)
    registry = open_registry(params, layout)
    model_dir = tmp / "model"
    model_dir.mkdir()
    (model_dir / "model.onnx").write_bytes(b"a stand-in: the registry does not read it")
    v1 = register(registry, root, model_dir, first_hash, [base.batch.batch_id])

    more = pd.concat([sentiment_frame(60, seed=8), pd.DataFrame(
        {"review": [A, B, C], "sentiment": ["negative", "angry", "positive"]})])
    more.to_csv(tmp / "more.csv", index=False)
    second = ingest_batch(read_file_source(tmp / "more.csv", params.data), params.data, store, base=False)
    assert second.batch.quarantined >= 1  # B
    hash_before = version_data(root, layout.data_dir)
    v2 = register(registry, root, model_dir, hash_before, [base.batch.batch_id, second.batch.batch_id])
    v3 = register(registry, root, model_dir, hash_before, ["another.csv@000000000000"])
    write_logs(root, params)
    rows_before = len(store.read())

    (tmp / "texts.txt").write_text(f"{C}\n")  # one text from a file, one on the command line
    outputs = [run_cli(root, "forget", "--text", "My name is Jane Roe and  the blender broke",
                       "--texts-file", str(tmp / "texts.txt"), "--reason", "erasure request 1"),
               run_cli(root, "forget", "--regex", REGEX, "--reason", "erasure request 2")]
    history = run_cli(root, "history")
    assert history[0] == 0, history
    return Forgotten(root, layout, registry, base.batch.batch_id, second.batch.batch_id, rows_before, hash_before,
                     {"v1": v1, "v2": v2, "v3": v3}, outputs, history[1])


def all_data_text(data_dir: Path) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace")
                     for path in sorted(data_dir.rglob("*")) if path.is_file())


def test_the_rows_are_gone_from_every_batch_and_the_counts_still_add_up(forgotten):
    for code, out, err in forgotten.outputs:
        assert code == 0, (out, err)
    first, second = forgotten.outputs[0][1], forgotten.outputs[1][1]
    assert "forgot 2 row(s)" in first and f"{forgotten.second_batch}: 2 accepted + 0 quarantined" in first
    assert f"{forgotten.second_batch}: 0 accepted + 1 quarantined" in second
    assert f"{forgotten.base_batch}: 1 accepted + 0 quarantined" in second
    assert "the base batch held some" in second and "the base batch" not in first

    data_dir = forgotten.layout.data_dir
    everything = all_data_text(data_dir)  # batches, quarantine, reports, manifest, removals.jsonl
    for trace in TRACES:
        assert trace not in everything
    store = DataStore(data_dir)
    retraining_reads = store.read()  # what the next retraining's preprocess stage reads
    assert len(retraining_reads) == forgotten.rows_before - 3
    assert not retraining_reads["text"].str.contains("Jane Roe|jroe@", regex=True).any()
    for batch in store.batches():
        assert batch.rows_read == batch.accepted + batch.quarantined + batch.duplicates + batch.forgotten
        assert batch.accepted == len(pd.read_csv(data_dir / batch.batch_file))
        assert batch.quarantined == len(pd.read_csv(data_dir / batch.quarantine_file))
    assert {b.batch_id: b.forgotten for b in store.batches()} == {forgotten.base_batch: 1, forgotten.second_batch: 3}


def test_the_removal_is_a_new_dvc_version_and_is_recorded_without_the_texts(forgotten):
    root, data_dir = forgotten.root, forgotten.layout.data_dir
    new_hash = data_hash(root / "data.dvc")
    assert new_hash != forgotten.hash_before
    assert f"data.dvc: {new_hash}" in forgotten.outputs[1][1]
    status = run_dvc(root, "status", "data.dvc", capture=True).stdout
    assert "changed" not in status and "modified" not in status, status
    # The current version as DVC holds it: data/ thrown away and checked out again from the cache.
    shutil.rmtree(data_dir)
    run_dvc(root, "checkout", "data.dvc", capture=True)
    for trace in TRACES:
        assert trace not in all_data_text(data_dir)

    first, second = read_removals(data_dir)
    assert first["reason"] == "erasure request 1" and first["matcher"] == {"kind": "text", "asked": 2}
    assert first["rows_removed"] == {forgotten.second_batch: {"accepted": 2, "quarantined": 0}}
    assert first["removed_ids"] == sorted(hashlib.sha256(normalize_text(t).encode()).hexdigest()[:16] for t in (A, C))
    assert first["previous_data_hash"] == forgotten.hash_before
    # The regex is personal data too: only its hash is kept.
    assert second["matcher"] == {"kind": "regex", "sha256": hashlib.sha256(REGEX.encode()).hexdigest()}
    assert len(second["removed_ids"]) == 2
    removals = (data_dir / "removals.jsonl").read_text()
    assert REGEX not in removals and "Jane" not in removals


def test_the_versions_trained_on_them_are_tagged_and_history_says_so(forgotten):
    first_id, second_id = (r["removal_id"] for r in read_removals(forgotten.layout.data_dir))
    tags = {name: forgotten.registry.version(v).tags for name, v in forgotten.versions.items()}
    # v2 was trained on the second batch (both removals), v1 on the base batch only (the regex's), v3 on neither.
    assert tags["v2"][FORGOTTEN_TAG] == f"{first_id},{second_id}" and tags["v2"][RETRAIN_TAG] == "true"
    assert tags["v1"][FORGOTTEN_TAG] == second_id and tags["v1"][RETRAIN_TAG] == "true"
    assert FORGOTTEN_TAG not in tags["v3"] and RETRAIN_TAG not in tags["v3"]
    v1, v2 = forgotten.versions["v1"], forgotten.versions["v2"]
    assert f"versions trained on them: v{v2} (tagged" in forgotten.outputs[0][1]

    events = [e for e in forgotten.registry.history() if e["action"] == "forget"]
    assert [(e["removal_id"], e["rows"], e["versions"]) for e in events] == [(first_id, 2, [v2]), (second_id, 2, [v1, v2])]
    lines = [line for line in forgotten.history.splitlines() if " forget " in line]
    assert len(lines) == 2
    assert "forgot 2 rows (erasure request 1)" in lines[0] and f"versions v{v2} trained on them" in lines[0]
    assert f"versions v{v1}, v{v2} trained on them; schedule a retraining" in lines[1]


def test_the_logged_texts_are_scrubbed(forgotten):
    root = forgotten.root
    params = load_params(root / "params.yaml")
    log = (root / params.serve.prediction_log).read_text()
    assert [json.loads(line)["text"] for line in log.splitlines()] == [UNRELATED]  # the cut line went too
    assert [json.loads(line)["text"] for line in (root / params.serve.shadow_log).read_text().splitlines()] == [UNRELATED]
    queue = root / LABELLING_DIR / "20250101T000000Z"
    assert pd.read_csv(queue / "labelling-queue.csv")[params.data.text_column].tolist() == [UNRELATED]
    assert json.loads((queue / "labelling-queue.label-studio.json").read_text()) == [{"data": {"text": UNRELATED}}]
    first, second = forgotten.outputs[0][1], forgotten.outputs[1][1]
    assert "predictions.jsonl: 1 line(s) scrubbed" in first and "shadow_disagreements.jsonl: 1 line(s)" in first
    assert "predictions.jsonl: 2 line(s) scrubbed" in second and "labelling: 2 line(s) scrubbed" in second


def test_nothing_matched_is_an_error_and_changes_nothing(forgotten):
    root = forgotten.root
    before = (root / "data.dvc").read_text(), (forgotten.layout.data_dir / "removals.jsonl").read_text()
    code, out, err = run_cli(root, "forget", "--text", "a text nobody ever sent", "--reason", "request 3")
    assert code != 0 and "nothing matched" in err and "no new data version" in err
    assert ((root / "data.dvc").read_text(), (forgotten.layout.data_dir / "removals.jsonl").read_text()) == before
    assert run_cli(root, "forget", "--regex", "(unclosed", "--reason", "r")[0] == 2


@pytest.mark.slow
def test_a_retraining_trains_without_the_forgotten_rows(forgotten, tiny_base_model):
    """The real stages a retraining runs first, on the data as forgotten: preprocess, start, train (1 epoch)."""
    from components.stages import STAGES

    root = forgotten.root
    params = read_params(root)
    params["model"]["base_model"] = str(tiny_base_model)
    params["train"]["epochs"] = 1
    write_params(root, params)
    settings = load_params(root / "params.yaml")
    for stage in ("preprocess", "start", "train"):
        STAGES[stage](forgotten.layout, settings)
    splits = pd.concat([forgotten.layout.read_split(name) for name in ("train", "validation", "test")])
    assert len(splits) == forgotten.rows_before - 3
    assert not splits["text"].str.contains("Jane Roe|jroe@", regex=True).any()
    assert forgotten.layout.model_dir.is_dir()


# --- the pieces, without a project ------------------------------------------------------------
def test_texts_match_after_ingests_normalization_and_ids_reach_logs():
    by_text = Matcher.for_texts(["Jane  Roe\u200b wrote"])
    assert by_text.matches("Jane Roe wrote") and by_text.matches(" Jane Roe  wrote ") and not by_text.matches("Jane")
    row_id = hashlib.sha256(b"Jane Roe wrote").hexdigest()[:16]
    by_id = Matcher.for_ids([row_id])
    assert by_id.matches("anything", row_id) and by_id.matches("Jane  Roe wrote")  # a log line: the id of its text
    assert Matcher.for_regex("roe@").record(1) == {"kind": "regex", "sha256": hashlib.sha256(b"roe@").hexdigest()}
    with pytest.raises(ValueError) as refused:
        Matcher.for_regex("Jane(Roe")
    assert "Jane" not in str(refused.value)  # the message must not repeat the pattern


def test_scrubbing_json_lines_keeps_the_rest_byte_for_byte():
    content = ('{"text": "keep me", "x": 1}\n' '{"text": "Jane Roe"}\n' "not json: Jane Roe\n" "not json either\n")
    scrubbed, dropped = scrub_jsonl_text(content, Matcher.for_texts(["Jane Roe"]))
    assert dropped == 2 and scrubbed == '{"text": "keep me", "x": 1}\n' "not json either\n"


def test_a_partitioned_log_is_scrubbed_in_every_hour_and_a_remote_one_is_named(tmp_path):
    for hour, replica in (("00", "a"), ("01", "b")):
        folder = tmp_path / "log" / "date=2025-01-01" / f"hour={hour}"
        folder.mkdir(parents=True)
        (folder / f"{replica}.jsonl").write_text(json.dumps({"text": D}) + "\n" + json.dumps({"text": "ok"}) + "\n")
    matcher = Matcher.for_regex(REGEX)
    assert scrub_prediction_log(tmp_path / "log", matcher).dropped == 2
    assert all(f.read_text() == '{"text": "ok"}\n' for f in (tmp_path / "log").rglob("*.jsonl"))
    remote = scrub_prediction_log("s3://bucket/predictions", matcher)
    assert remote.dropped == 0 and "remote" in remote.skipped
