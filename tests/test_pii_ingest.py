"""data.pii on real batches: what each policy does with rows that hold personal data, what it records, and
that nothing of the data itself is left where it should not be (data/, the DVC cache, MLflow)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from components.config import DataParams
from components.data.ingest import DataStore, ingest_batch, read_file_source
from components.data.pii_screening import PII_CHECK, PiiRefusal
from tests.tiny import sentiment_frame

# One value of each pattern type, each valid (Luhn, IBAN mod 97), inside a review.
SEEDED = {
    "EMAIL": "jane.doe@example.com",
    "PHONE": "+1 415 867 5309",
    "CREDIT_CARD": "4111 1111 1111 1111",
    "IBAN": "GB82 WEST 1234 5698 7654 32",
    "IP_ADDRESS": "192.168.10.42",
    "URL": "https://jane-doe.example.org/profile",
}
PII_ROWS = pd.DataFrame({
    "review": [f"great film, write to me at {value} anytime" for value in SEEDED.values()],
    "sentiment": ["positive", "negative", "positive", "negative", "positive", "negative"],
})


def data_params(policy: str) -> DataParams:
    return DataParams(source="base.csv", text_column="review", label_column="sentiment",
                      labels=["negative", "positive"], min_rows=10, max_quarantine_fraction=0.3, pii=policy)


def ingest(tmp_path: Path, policy: str):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "base.csv"
    pd.concat([sentiment_frame(120, seed=4), PII_ROWS], ignore_index=True).to_csv(path, index=False)
    store = DataStore(tmp_path / "data")
    data = data_params(policy)
    return ingest_batch(read_file_source(path, data), data, store, base=True), store


def seeded_values_under(directory: Path) -> list[str]:
    """The seeded values found anywhere in the files under `directory`, as bytes (CSV, JSON, cache objects)."""
    found = []
    for path in directory.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            found += [f"{value} in {path}" for value in SEEDED.values() if value.encode() in content]
    return found


def batch_rows(store: DataStore, record) -> pd.DataFrame:
    return pd.read_csv(store.data_dir / record.batch_file, keep_default_na=False)


def test_report_counts_by_type_and_changes_no_row(tmp_path):
    result, store = ingest(tmp_path, "report")
    record = result.batch
    assert record.pii["found"] == {kind: 1 for kind in SEEDED}
    assert record.pii["rows_with_pii"] == 6 and record.pii["rows_scanned"] == 126
    assert "names and places are not detected" in record.pii["not_detected"]
    assert record.accepted == 126 and record.quarantined == 0
    texts = set(batch_rows(store, record)["text"])
    assert all(any(value in text for text in texts) for value in SEEDED.values())  # reported, not changed
    report = json.loads((store.data_dir / record.report_dir / "validation.json").read_text())
    assert report["pii"]["found"] == record.pii["found"]
    assert json.loads((store.data_dir / "manifest.json").read_text())["batches"][0]["pii"]["policy"] == "report"


def test_redact_puts_typed_placeholders_and_keeps_ids_and_labels(tmp_path):
    reported, report_store = ingest(tmp_path / "report", "report")
    redacted, store = ingest(tmp_path / "redact", "redact")
    before = batch_rows(report_store, reported.batch).set_index("id")
    after = batch_rows(store, redacted.batch).set_index("id")
    assert list(after.index) == list(before.index)  # ids come from the text as sent: kept
    assert (after["label"] == before["label"]).all()
    for kind in SEEDED:
        assert after["text"].str.contains(f"<{kind}>", regex=False).sum() == 1, kind
    assert redacted.batch.rows_read == redacted.batch.accepted + redacted.batch.quarantined + redacted.batch.duplicates
    assert seeded_values_under(store.data_dir) == []


def test_quarantine_sets_the_rows_aside_with_their_reason_and_redacted_text(tmp_path):
    result, store = ingest(tmp_path, "quarantine")
    record = result.batch
    assert record.accepted == 120 and record.quarantined == 6
    assert record.rows_read == record.accepted + record.quarantined + record.duplicates
    aside = pd.read_csv(store.data_dir / record.quarantine_file, keep_default_na=False)
    assert set(aside["check"]) == {PII_CHECK}
    assert sorted(aside["reason"]) == sorted(f"personal data: {kind}" for kind in SEEDED)
    assert sorted(aside["label"]) == sorted(PII_ROWS["sentiment"])
    assert seeded_values_under(store.data_dir) == []


def test_refuse_stops_the_batch_naming_file_rows_and_types_but_not_the_data(tmp_path):
    with pytest.raises(PiiRefusal) as refused:
        ingest(tmp_path, "refuse")
    message = str(refused.value)
    assert "base.csv" in message and "field 'review'" in message
    assert "in 6 row(s)" in message and "row 122" in message  # source rows count from the header line
    assert all(kind in message for kind in SEEDED)
    assert not any(value in message for value in SEEDED.values())
    assert not (tmp_path / "data" / "manifest.json").exists()


def test_off_does_not_look(tmp_path):
    result, _ = ingest(tmp_path, "off")
    assert result.batch.pii == {"policy": "off", "rows_scanned": 0, "rows_with_pii": 0, "found": {},
                                "not_detected": None}


def test_the_built_in_reviews_raise_few_false_alarms():
    """The default data holds no personal data: what the scanner flags there is a false positive. Measured:
    1 of 13,905 rows (the film FearDotCom, written as its domain); the bar is 0.1% of rows."""
    from components.config import load_params
    from components.data.ingest import default_pii_scanner, read_configured_source

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    texts = read_configured_source(params.data, Path(".")).frame["text"].fillna("").astype(str).tolist()
    flagged = [found for found in default_pii_scanner().scan_many(texts) if found]
    assert len(flagged) / len(texts) < 0.001, [f.type for found in flagged for f in found]


@pytest.mark.slow
def test_a_redacting_run_leaves_no_personal_data_in_data_the_dvc_cache_or_mlflow(tmp_path, tiny_base_model,
                                                                                 prefect_api):
    """The whole retraining flow with data.pii: redact: the seeded values are nowhere in data/, the DVC cache
    (the data version's objects), MLflow's store (params, tags, metrics, text artifacts) or artifacts/, and the
    run records what was found, by type."""
    from components.layout import ProjectLayout
    from components.lifecycle.registry import ModelRegistry, resolve_tracking_uri
    from components.lifecycle.tracking import RunOutcome
    from flows.retrain import retrain
    from tests.project import git, make_project, read_params, write_params

    root = make_project(tmp_path / "project", tiny_base_model, approval={"profile": "local"})
    reviews = root / "incoming" / "reviews.csv"
    pd.concat([pd.read_csv(reviews), PII_ROWS], ignore_index=True).to_csv(reviews, index=False)
    params = read_params(root)
    params["data"]["pii"] = "redact"
    write_params(root, params)
    git(root, "commit", "-qam", "reviews with personal data")

    result = retrain(project_dir=str(root))
    assert result["status"] == RunOutcome.PROMOTED, result

    for place in ("data", ".dvc/cache", "mlflow", "artifacts"):
        assert seeded_values_under(root / place) == [], place
    registry = ModelRegistry(resolve_tracking_uri(None, ProjectLayout(root).mlflow_dir), "tiny-sentiment")
    run = registry.client.get_run(result["run_id"])
    assert {f"data_pii_{kind}": 1.0 for kind in SEEDED}.items() <= run.data.metrics.items()
    assert run.data.metrics["data_pii_rows"] == 6
    assert run.data.tags["data_pii_policy"] == "redact"
