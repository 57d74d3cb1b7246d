"""read_labelled_file: good files in every format, and a clear IngestError for each kind of bad file."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import pandas as pd
import pytest

from components.config import DataParams
from components.data.readers import IngestError, read_labelled_file
from tests.tiny import sentiment_frame

PARAMS = DataParams(source="unused", labels=["positive", "negative"])
# A user's file whose columns are not called text/label: the reader maps them.
MAPPED = DataParams(source="unused", labels=["positive", "negative"], text_column="review", label_column="sentiment")


def write(directory: Path, name: str, content: str | bytes) -> Path:
    path = directory / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def ingest_error(path: Path, params: DataParams = PARAMS) -> IngestError:
    with pytest.raises(IngestError) as caught:
        read_labelled_file(path, params)
    assert str(path) in str(caught.value), "the message must name the file"
    return caught.value


# --- good files -------------------------------------------------------------------------------------


def test_csv_maps_columns_ignores_extras_and_keeps_everything_as_strings(tmp_path):
    reviews = sentiment_frame(30)
    reviews.insert(0, "stars", range(30))  # an extra column, numeric: ignored
    reviews["sentiment"] = " " + reviews["sentiment"] + " "  # labels are stripped
    path = tmp_path / "reviews.csv"
    reviews.to_csv(path, index=False)

    frame = read_labelled_file(path, MAPPED)

    assert list(frame.columns) == ["text", "label", "source_row"]
    assert frame["text"].tolist() == sentiment_frame(30)["review"].tolist()
    assert frame["label"].tolist() == sentiment_frame(30)["sentiment"].tolist()
    assert frame["source_row"].tolist() == list(range(2, 32))  # the header is line 1
    assert frame["text"].dtype == "str" and frame["label"].dtype == "str"


def test_numeric_labels_stay_as_written(tmp_path):
    path = write(tmp_path, "numbers.csv", "text,label\ngood,1\nbad,0\nodd,007\nempty,\n")
    frame = read_labelled_file(path, PARAMS)
    assert frame["label"].tolist() == ["1", "0", "007", ""]  # never 1.0, never NaN


def test_quoted_newlines_are_one_row_and_rows_keep_their_line(tmp_path):
    content = 'text,label\n"first line\nsecond line, with comma",positive\n"plain",negative\n\nlast,positive\n'
    frame = read_labelled_file(write(tmp_path, "multi.csv", content), PARAMS)
    assert frame["text"].tolist() == ["first line\nsecond line, with comma", "plain", "last"]
    assert frame["source_row"].tolist() == [2, 4, 6]  # the line each record starts on


def test_crlf_line_endings(tmp_path):
    path = write(tmp_path, "windows.csv", "text,label\r\nhello,positive\r\nbye,negative\r\n")
    frame = read_labelled_file(path, PARAMS)
    assert frame["text"].tolist() == ["hello", "bye"]
    assert frame["label"].tolist() == ["positive", "negative"]


def test_tsv(tmp_path):
    path = write(tmp_path, "reviews.tsv", "id\treview\tsentiment\n1\tgreat, really\tpositive\n2\tawful\tnegative\n")
    frame = read_labelled_file(path, MAPPED)
    assert frame["text"].tolist() == ["great, really", "awful"]
    assert frame["label"].tolist() == ["positive", "negative"]


def test_jsonl_with_blank_lines_and_integer_labels(tmp_path):
    lines = [
        json.dumps({"review": "great", "sentiment": 1, "meta": {"x": [1]}}),
        "",
        json.dumps({"review": "2020-01-01", "sentiment": 0}),  # a date-looking text stays text
    ]
    frame = read_labelled_file(write(tmp_path, "reviews.jsonl", "\n".join(lines) + "\n"), MAPPED)
    assert frame["text"].tolist() == ["great", "2020-01-01"]
    assert frame["label"].tolist() == ["1", "0"]
    assert frame["source_row"].tolist() == [1, 3]


def test_ndjson_suffix(tmp_path):
    frame = read_labelled_file(write(tmp_path, "reviews.ndjson", '{"text": "a", "label": "positive"}\n'), PARAMS)
    assert frame["text"].tolist() == ["a"]


def test_parquet_with_integer_labels(tmp_path):
    path = tmp_path / "reviews.parquet"
    pd.DataFrame({"review": ["good", "bad"], "sentiment": [1, 0], "extra": [0.5, 0.7]}).to_parquet(path)
    frame = read_labelled_file(path, MAPPED)
    assert frame["text"].tolist() == ["good", "bad"]
    assert frame["label"].tolist() == ["1", "0"]
    assert frame["source_row"].tolist() == [1, 2]


def test_utf16_with_bom_is_decoded(tmp_path):
    content = "text,label\ncafé crème,positive\n\"naïve\nplot\",negative\n"
    path = write(tmp_path, "excel.csv", codecs.BOM_UTF16_LE + content.encode("utf-16-le"))
    frame = read_labelled_file(path, PARAMS)
    assert frame["text"].tolist() == ["café crème", "naïve\nplot"]
    assert frame["label"].tolist() == ["positive", "negative"]


def test_utf8_bom_does_not_leak_into_the_header(tmp_path):
    frame = read_labelled_file(write(tmp_path, "bom.csv", "\ufefftext,label\nhello,positive\n"), PARAMS)
    assert frame["text"].tolist() == ["hello"]


def test_ten_megabyte_text_is_read(tmp_path):
    long_text = "word " * 2_000_000  # 10 MB in one field: length limits are validation's job
    path = write(tmp_path, "long.csv", f'text,label\n"{long_text}",positive\nshort,negative\n')
    frame = read_labelled_file(path, PARAMS)
    assert frame["text"].str.len().tolist() == [len(long_text), 5]
    jsonl = write(tmp_path, "long.jsonl", json.dumps({"text": long_text, "label": "positive"}) + "\n")
    assert read_labelled_file(jsonl, PARAMS)["text"].str.len().tolist() == [len(long_text)]


# --- bad files ---------------------------------------------------------------------------------------


def test_path_that_does_not_exist(tmp_path):
    assert "no such file" in str(ingest_error(tmp_path / "missing.csv"))


def test_directory_instead_of_file(tmp_path):
    folder = tmp_path / "data.csv"
    folder.mkdir()
    assert "directory" in str(ingest_error(folder))


def test_unsupported_suffix(tmp_path):
    message = str(ingest_error(write(tmp_path, "reviews.xlsx", "text,label\na,positive\n")))
    assert "'.xlsx'" in message and ".csv" in message


@pytest.mark.parametrize("name", ["empty.csv", "empty.jsonl", "empty.parquet"])
def test_empty_file(tmp_path, name):
    assert "empty" in str(ingest_error(write(tmp_path, name, b"")))


def test_whitespace_only_file(tmp_path):
    assert "empty" in str(ingest_error(write(tmp_path, "blank.csv", "\n  \n\n")))


def test_header_only_file(tmp_path):
    message = str(ingest_error(write(tmp_path, "header.csv", "text,label\n")))
    assert "no data rows" in message


def test_missing_text_column_lists_columns_found(tmp_path):
    error = ingest_error(write(tmp_path, "cols.csv", "review,label\ngood,positive\n"))
    assert error.field == "text"
    assert "['review', 'label']" in str(error)


def test_missing_label_column(tmp_path):
    error = ingest_error(write(tmp_path, "cols.csv", "text,sentiment\ngood,positive\n"))
    assert error.field == "label"
    assert "['text', 'sentiment']" in str(error)


def test_missing_column_in_jsonl_and_parquet(tmp_path):
    error = ingest_error(write(tmp_path, "cols.jsonl", '{"text": "a", "sentiment": "positive"}\n'))
    assert error.field == "label" and "sentiment" in str(error)
    path = tmp_path / "cols.parquet"
    pd.DataFrame({"body": ["a"], "label": ["positive"]}).to_parquet(path)
    assert ingest_error(path).field == "text"


def test_semicolon_file_says_the_delimiter_looks_wrong(tmp_path):
    message = str(ingest_error(write(tmp_path, "euro.csv", "text;label\ngood;positive\n")))
    assert "delimiter looks wrong" in message and "';'" in message


def test_latin1_bytes_name_row_offset_and_fix(tmp_path):
    content = "text,label\nhello,positive\ncafé au lait,negative\n".encode("latin-1")
    error = ingest_error(write(tmp_path, "latin1.csv", content))
    assert error.row == 3 and error.field == "text"
    assert "byte offset 29" in str(error) and "0xe9" in str(error)
    assert "UTF-8" in str(error) and "re-encode" in str(error)


def test_truncated_last_line(tmp_path):
    error = ingest_error(write(tmp_path, "cut.csv", "text,label\nhello,positive\nbye,negative\nhalf a li"))
    assert error.row == 4
    assert "truncated" in str(error)


def test_unbalanced_quote_that_would_swallow_rows(tmp_path):
    # A C parser reads this as 2 rows, the second label holding three lines: rows silently lost.
    content = 'text,label\nhello,positive\nbye,"negative\nthird,positive\nfourth,negative\n'
    error = ingest_error(write(tmp_path, "quote.csv", content))
    assert error.row == 3
    assert "never closed" in str(error)


def test_unbalanced_quote_in_text(tmp_path):
    error = ingest_error(write(tmp_path, "quote.csv", 'text,label\nhello,positive\n"bye,negative\nthird,positive\n'))
    assert error.row == 3


def test_row_with_too_many_fields(tmp_path):
    error = ingest_error(write(tmp_path, "extra.csv", "text,label\ngood film, really,positive\nbad,negative\n"))
    assert error.row == 2 and "3 field(s)" in str(error) and "quoted" in str(error)


def test_nul_byte_names_the_row(tmp_path):
    content = 'text,label\nhello,positive\n"two\nlines",negative\nbro\x00ken,positive\n'
    error = ingest_error(write(tmp_path, "nul.csv", content))
    assert error.row == 5 and error.field == "text"
    assert "NUL" in str(error)


def test_utf16_without_bom_is_reported_as_nul_bytes_with_a_hint(tmp_path):
    error = ingest_error(write(tmp_path, "u16.csv", "text,label\nhello,positive\n".encode("utf-16-le")))
    assert "NUL" in str(error) and "UTF-16" in str(error)


def test_jsonl_with_one_broken_line(tmp_path):
    lines = [json.dumps({"text": f"t{i}", "label": "positive"}) for i in range(5)]
    lines[3] = '{"text": "t3", "label": "positive"'  # missing brace
    error = ingest_error(write(tmp_path, "broken.jsonl", "\n".join(lines) + "\n"))
    assert error.row == 4
    assert "not valid JSON" in str(error)


def test_jsonl_text_that_is_not_a_string(tmp_path):
    content = '{"text": "fine", "label": "positive"}\n{"text": 42, "label": "negative"}\n'
    error = ingest_error(write(tmp_path, "types.jsonl", content))
    assert (error.row, error.field) == (2, "text")
    assert "a number" in str(error)


def test_jsonl_record_missing_the_label(tmp_path):
    content = '{"text": "fine", "label": "positive"}\n{"text": "no label"}\n'
    error = ingest_error(write(tmp_path, "partial.jsonl", content))
    assert (error.row, error.field) == (2, "label")


def test_parquet_text_column_of_the_wrong_type(tmp_path):
    path = tmp_path / "ints.parquet"
    pd.DataFrame({"text": [1, 2], "label": ["positive", "negative"]}).to_parquet(path)
    error = ingest_error(path)
    assert error.field == "text"
    assert "int64" in str(error)


def test_parquet_null_text_names_the_row(tmp_path):
    path = tmp_path / "nulls.parquet"
    pd.DataFrame({"text": ["a", None, "c"], "label": ["positive", "negative", "positive"]}).to_parquet(path)
    error = ingest_error(path)
    assert (error.row, error.field) == (2, "text")


def test_file_that_is_not_parquet(tmp_path):
    assert "not a readable Parquet file" in str(ingest_error(write(tmp_path, "fake.parquet", "text,label\n")))
