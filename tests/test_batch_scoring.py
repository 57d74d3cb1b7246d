"""`tunegate predict`: a file scored in chunks with a bad row set aside by record number, and a run
killed in the middle that resumes and scores every row exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from components.export.predictor import OnnxTextClassifier
from components.serving.batch_scoring import BatchScoringError, read_chunks, score_file
from tests.fixtures_classifier import (  # noqa: F401 - fixtures
    LABELS,
    held_out,
    tiny_classifier,
    tiny_onnx_export,
)
from tests.project import REPO_ROOT
from tests.score_job import CHUNK_ROWS, score


def reviews(n: int) -> pd.DataFrame:
    texts, _ = held_out(n, seed=13)
    return pd.DataFrame({"review_id": [f"r{i}" for i in range(n)], "review": texts})


def write_csv_with_bad_rows(path, frame: pd.DataFrame, empty_at: int, bad_bytes_at: int) -> None:
    """The frame as CSV with one empty text and one text holding bytes that are not UTF-8."""
    frame = frame.copy()
    frame.loc[empty_at, "review"] = ""
    frame.loc[bad_bytes_at, "review"] = "BADBYTES"
    body = frame.to_csv(index=False).encode("utf-8").replace(b"BADBYTES", b"caf\xe9 au lait")
    path.write_bytes(body)


def test_a_file_is_scored_in_chunks_and_bad_rows_are_named_not_scored(tiny_onnx_export, tmp_path):
    frame = reviews(45)
    source = tmp_path / "reviews.csv"
    write_csv_with_bad_rows(source, frame, empty_at=3, bad_bytes_at=21)
    predictor = OnnxTextClassifier(tiny_onnx_export.out_dir)
    summary = score_file(predictor, "1", source, tmp_path / "scored.csv", text_column="review",
                         id_column="review_id", chunk_rows=CHUNK_ROWS)
    assert (summary.records, summary.scored, summary.rejected) == (45, 43, 2)
    scored = pd.read_csv(tmp_path / "scored.csv")
    assert list(scored.columns) == ["id", "label", "score"] + [f"score_{label}" for label in LABELS]
    good = frame.drop(index=[3, 21])
    assert scored["id"].tolist() == good["review_id"].tolist()
    expected = predictor.predict(good["review"].tolist())
    assert scored["label"].tolist() == [p["label"] for p in expected]
    assert scored["score"].tolist() == pytest.approx([p["score"] for p in expected], abs=1e-6)
    rejected = pd.read_csv(summary.rejected_file)
    assert rejected.to_dict("records") == [
        {"record": 4, "id": "r3", "reason": "no text"},
        {"record": 22, "id": "r21", "reason": "bytes that are not UTF-8 at character 4"}]
    assert not (tmp_path / "scored.csv.progress.json").exists()


def test_a_killed_run_resumes_and_scores_every_row_exactly_once(tiny_onnx_export, tmp_path):
    frame = reviews(57)
    source = tmp_path / "reviews.csv"
    write_csv_with_bad_rows(source, frame, empty_at=5, bad_bytes_at=40)
    output = tmp_path / "scored.csv"
    killed = subprocess.run([sys.executable, "-m", "tests.score_job", str(tiny_onnx_export.out_dir), str(source),
                             str(output), "30"], cwd=REPO_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    progress = json.loads((tmp_path / "scored.csv.progress.json").read_text())
    assert progress["records_done"] == 30 and progress["scored"] == 29
    with output.open("a") as handle:  # a chunk the crash left half-written
        handle.write("r30,positive,0.5")

    summary = score(tiny_onnx_export.out_dir, source, output)
    assert (summary.resumed_at, summary.records, summary.scored, summary.rejected) == (30, 57, 55, 2)
    scored = pd.read_csv(output)
    assert scored["id"].tolist() == frame.drop(index=[5, 40])["review_id"].tolist()  # each once, in order
    whole = score(tiny_onnx_export.out_dir, source, tmp_path / "uninterrupted.csv")
    assert whole.scored == 55
    pd.testing.assert_frame_equal(scored, pd.read_csv(tmp_path / "uninterrupted.csv"))
    rejected = pd.read_csv(summary.rejected_file)
    assert rejected["record"].tolist() == [6, 41]


def test_jsonl_and_parquet_inputs_and_a_jsonl_output(tiny_onnx_export, tmp_path):
    frame = reviews(12)
    lines = [json.dumps({"review_id": r, "review": t}) for r, t in zip(frame["review_id"], frame["review"])]
    lines.insert(4, "{not json")
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    frame.to_parquet(tmp_path / "in.parquet")
    predictor = OnnxTextClassifier(tiny_onnx_export.out_dir)
    from_jsonl = score_file(predictor, "1", tmp_path / "in.jsonl", tmp_path / "a.jsonl", text_column="review",
                            id_column="review_id", chunk_rows=5)
    assert (from_jsonl.scored, from_jsonl.rejected) == (12, 1)
    assert pd.read_csv(from_jsonl.rejected_file)["reason"].tolist() == ["line 5 is not JSON (Expecting property name "
                                                                        "enclosed in double quotes)"]
    from_parquet = score_file(predictor, "1", tmp_path / "in.parquet", tmp_path / "b.jsonl", text_column="review",
                              id_column="review_id", chunk_rows=5)
    assert from_parquet.scored == 12 and from_parquet.rejected == 0
    a = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert a == b and set(a[0]) == {"id", "label", "score", "scores"}


def test_chunks_are_bounded_and_a_resume_on_other_input_is_refused(tiny_onnx_export, tmp_path):
    source = tmp_path / "reviews.csv"
    reviews(25).to_csv(source, index=False)
    chunks = list(read_chunks(source, "review", None, chunk_rows=10))
    assert [len(c.texts) for c in chunks] == [10, 10, 5] and chunks[1].ids[0] == 11
    assert [len(c.texts) for c in read_chunks(source, "review", None, 10, skip_records=13)] == [7, 5]
    output = tmp_path / "scored.csv"
    (tmp_path / "scored.csv.progress.json").write_text(json.dumps({"input_fingerprint": "0:x", "model_version": "1"}))
    with pytest.raises(BatchScoringError, match="another input or model version"):
        score_file(OnnxTextClassifier(tiny_onnx_export.out_dir), "1", source, output, text_column="review")
    with pytest.raises(BatchScoringError, match="no column 'body'"):
        score_file(OnnxTextClassifier(tiny_onnx_export.out_dir), "1", source, tmp_path / "other.csv",
                   text_column="body")
