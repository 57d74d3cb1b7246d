"""build_data_docs with the real GX: the dataset suite's result rendered as a Data Docs site."""

from __future__ import annotations

import html
import re
import tempfile
from pathlib import Path

import pytest

from components.data.validation.data_docs import build_data_docs
from components.data.validation.suite import validate_dataset
from tests.test_validate import PARAMS, ROWS, dataset_frame, set_text

CLEAN_SUITE_TYPES = {
    "expect_table_columns_to_match_set",
    "expect_table_row_count_to_be_between",
    "expect_column_values_to_not_be_null",
    "expect_column_values_to_not_match_regex",
    "expect_column_value_lengths_to_be_between",
    "expect_column_values_to_be_in_set",
    "expect_column_distinct_values_to_contain_set",
}
BAD_LABEL = "neutralish"


def page_text(path: Path) -> str:
    """What a reader sees: the page without scripts, styles and tags, whitespace collapsed."""
    page = path.read_text(encoding="utf-8")
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.DOTALL)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


def validation_pages(out_dir: Path) -> list[Path]:
    return sorted((out_dir / "validations").rglob("*.html"))


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """An empty working directory and an empty temp directory, both checked to stay empty."""
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    yield tmp_path / "docs"
    assert list(cwd.iterdir()) == [], "build_data_docs left files in the working directory"
    assert list(tmp.iterdir()) == [], "build_data_docs left its GX context behind"


def test_clean_frame_renders_site_naming_every_expectation(isolated, capfd):
    out_dir = isolated
    index = build_data_docs(dataset_frame(), PARAMS, out_dir, source="data/clean.csv")

    assert index == out_dir / "index.html" and index.is_file()
    assert (out_dir / "static").is_dir()
    pages = validation_pages(out_dir)
    assert len(pages) == 1
    # out_dir/validations/<suite>/<run name from source>/<run time>/<batch>.html, linked from the index
    assert pages[0].relative_to(out_dir).parts[2] == "data_clean.csv"
    assert pages[0].relative_to(out_dir).as_posix().replace(" ", "%20") in index.read_text(encoding="utf-8")

    text = page_text(pages[0])
    assert "Evaluated Expectations 10 Successful Expectations 10 Unsuccessful Expectations 0" in text
    for expectation_type in CLEAN_SUITE_TYPES:
        assert expectation_type in text
    for check in ("text_not_blank", "label_in_labels", "duplicate_texts", "conflicting_labels"):
        assert f"[{check}: " in text
    assert "unexpected values found" not in text
    assert "Calculating Metrics" not in capfd.readouterr().err  # no progress bars


def test_failures_show_unexpected_values_and_match_validate_dataset(isolated):
    frame = dataset_frame()
    set_text(frame, 3, "   \t")
    frame.loc[5, "label"] = BAD_LABEL
    report = validate_dataset(frame, PARAMS, source="bad.csv")
    assert {f.check for f in report.failures} == {"text_not_blank", "text_length", "label_in_labels"}

    index = build_data_docs(frame, PARAMS, isolated, source="bad.csv")

    assert index.is_file()
    (page,) = validation_pages(isolated)
    text = page_text(page)
    assert "Status: Failed" in text
    assert (f"Evaluated Expectations {report.checked} Successful Expectations "
            f"{report.checked - len(report.failures)} Unsuccessful Expectations {len(report.failures)}") in text
    # the unknown label, in the unexpected-values table of label_in_labels
    label_section = text[text.index("[label_in_labels: expect_column_values_to_be_in_set]"):]
    assert re.match(rf"\] 1 unexpected values found\. ≈1\.667% of {ROWS} total rows\. "
                    rf"Unexpected Value Count {BAD_LABEL} 1 ", label_section[label_section.index("]"):])
    blank_section = text[text.index("[text_not_blank: expect_column_values_to_not_match_regex]"):]
    assert blank_section.startswith("[text_not_blank: expect_column_values_to_not_match_regex] 1 unexpected")


def test_rebuild_replaces_the_site_and_keeps_other_files(isolated):
    out_dir = isolated
    out_dir.mkdir()
    (out_dir / "keep.txt").write_text("mine")
    frame = dataset_frame()
    frame.loc[5, "label"] = BAD_LABEL
    build_data_docs(frame, PARAMS, out_dir, source="first")
    build_data_docs(dataset_frame(), PARAMS, out_dir, source="second")

    (page,) = validation_pages(out_dir)  # the first run's page is gone
    assert page.relative_to(out_dir).parts[2] == "second"
    assert BAD_LABEL not in page_text(page)
    assert "first" not in page_text(out_dir / "index.html")
    assert (out_dir / "keep.txt").read_text() == "mine"
