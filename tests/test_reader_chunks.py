"""iter_labelled_file: read_labelled_file's frame in chunks of rows, read a piece of the file at a time.

Files are small here; pieces of a few bytes (PIECE_BYTES patched) put piece boundaries everywhere a large
file would have them: inside quoted newlines, between a record and a blank line, inside a long field.
"""

from __future__ import annotations

import codecs
import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

import components.data.readers.parquet as parquet_reader
import components.data.readers.stream as stream
from components.config import DataParams
from components.data.readers import IngestError, file_digest, iter_labelled_file, read_labelled_file

PARAMS = DataParams(source="unused", labels=["positive", "negative"])
KEEP = DataParams(source="unused", labels=["positive", "negative"], keep_columns=["lang"])
ROW_COUNTS = (1, 2, 7, 1_000_000)
# None: the default (every file here is one piece); the rest cut files into many.
PIECE_SIZES = (None, 1, 7, 64)

# Quoted newlines (one with a blank line inside), a blank line between records, doubled quotes, an empty
# kept value, a BOM, no newline at the end.
CSV = ('\ufeffid,text,label,lang\n'
       '1,"first line\nsecond, with comma",positive,en\n'
       '2,plain,negative,de\n'
       '\n'
       '3,"para one\n\npara two", positive ,\n'
       '4,"say ""hi""",negative,fr\n'
       '5,last,positive,en')
CSV_TEXTS = ["first line\nsecond, with comma", "plain", "para one\n\npara two", 'say "hi"', "last"]
CSV_LABELS = ["positive", "negative", "positive", "negative", "positive"]
CSV_ROWS = [2, 4, 6, 9, 10]  # the line each record starts on (the header is line 1)
CSV_LANGS = ["en", "de", "", "fr", "en"]


@pytest.fixture(params=PIECE_SIZES, ids=lambda size: f"piece{size or 'default'}")
def pieces(request, monkeypatch):
    if request.param is not None:
        monkeypatch.setattr(stream, "PIECE_BYTES", request.param)
    return request.param


def write(directory: Path, name: str, content: str | bytes) -> Path:
    path = directory / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def whole(path: Path, data: DataParams) -> pd.DataFrame:
    """read_labelled_file as it reads a file of this size: one piece."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stream, "PIECE_BYTES", 16 * 1024 * 1024)
        return read_labelled_file(path, data)


def assert_chunks_make_the_frame(path: Path, data: DataParams, expected: pd.DataFrame) -> None:
    """Every chunk size gives `rows`-row chunks (the last shorter) that concatenate to `expected`."""
    pd.testing.assert_frame_equal(read_labelled_file(path, data), expected)
    for rows in ROW_COUNTS:
        chunks = list(iter_labelled_file(path, data, rows))
        assert [len(c) for c in chunks[:-1]] == [rows] * (len(chunks) - 1) and 0 < len(chunks[-1]) <= rows
        for chunk in chunks:
            assert list(chunk.index) == list(range(len(chunk)))
        pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), expected)


def chunked_error(path: Path, data: DataParams = PARAMS, rows: int = 2) -> tuple[IngestError, int]:
    """The error the chunked reader raises, and how many rows it yielded before it."""
    yielded = 0
    with pytest.raises(IngestError) as caught:
        for chunk in iter_labelled_file(path, data, rows):
            yielded += len(chunk)
    return caught.value, yielded


# --- the same frame, whatever the chunks and pieces ------------------------------------------------------


def test_csv_with_quoted_newlines_blank_lines_a_bom_and_a_kept_column(tmp_path, pieces):
    path = write(tmp_path, "reviews.csv", CSV)
    expected = whole(path, KEEP)
    assert expected["text"].tolist() == CSV_TEXTS
    assert expected["label"].tolist() == CSV_LABELS  # stripped
    assert expected["source_row"].tolist() == CSV_ROWS
    assert expected["lang"].tolist() == CSV_LANGS
    assert list(expected.columns) == ["text", "label", "source_row", "lang"]
    assert [str(t) for t in expected.dtypes] == ["str", "str", "int64", "str"]
    assert_chunks_make_the_frame(path, KEEP, expected)


def test_tsv_and_crlf_line_ends(tmp_path, pieces):
    tsv = write(tmp_path, "reviews.tsv", CSV.replace(",", "\t").replace("second\t with comma", "second, with comma"))
    expected = whole(tsv, KEEP)
    assert expected["text"].tolist() == CSV_TEXTS and expected["source_row"].tolist() == CSV_ROWS
    assert_chunks_make_the_frame(tsv, KEEP, expected)
    crlf = write(tmp_path, "windows.csv", CSV.replace("\n", "\r\n"))
    expected = whole(crlf, KEEP)
    assert expected["text"].tolist() == [t.replace("\n", "\r\n") for t in CSV_TEXTS]  # inside quotes, kept as is
    assert expected["source_row"].tolist() == CSV_ROWS
    assert_chunks_make_the_frame(crlf, KEEP, expected)


def test_old_mac_line_ends(tmp_path, pieces):
    # A lone "\r" ends a line; a newline inside a quoted field is a line too, as the csv module counts them.
    path = write(tmp_path, "mac.csv", 'text,label\r"a\nb",positive\rc,negative\r\rd,positive\r')
    expected = whole(path, PARAMS)
    assert expected["text"].tolist() == ["a\nb", "c", "d"]
    assert expected["source_row"].tolist() == [2, 4, 6]
    assert_chunks_make_the_frame(path, PARAMS, expected)


def test_many_rows_with_quoted_newlines_keep_their_lines(tmp_path, pieces):
    lines, rows, line = ["text,label"], [], 2
    for i in range(60):
        text = f'"review {i}\nwith a second line"' if i % 7 == 0 else f"review {i}"
        lines.append(f"{text},{'positive' if i % 2 else 'negative'}")
        rows.append(line)
        line += 2 if i % 7 == 0 else 1
        if i % 11 == 5:
            lines.append("")  # a blank line between records
            line += 1
    path = write(tmp_path, "many.csv", "\n".join(lines) + "\n")
    expected = whole(path, PARAMS)
    assert expected["source_row"].tolist() == rows
    assert expected["text"].iloc[7] == "review 7\nwith a second line"
    assert_chunks_make_the_frame(path, PARAMS, expected)


def test_stray_quotes_in_unquoted_fields(tmp_path, pieces):
    # A quote inside an unquoted field is a character (a 5" screen), for pyarrow and the csv module alike.
    content = 'text,label\n5" screen,positive\n"two\nlines",negative\n12" record,positive\nfine,negative\n'
    path = write(tmp_path, "inches.csv", content)
    expected = whole(path, PARAMS)
    assert expected["text"].tolist() == ['5" screen', "two\nlines", '12" record', "fine"]
    assert expected["source_row"].tolist() == [2, 3, 5, 6]
    assert_chunks_make_the_frame(path, PARAMS, expected)


def test_a_field_longer_than_a_piece(tmp_path, pieces):
    long_text = "word, " * 500
    path = write(tmp_path, "long.csv", f'text,label\nshort,negative\n"{long_text}",positive\nafter,negative\n')
    expected = whole(path, PARAMS)
    assert expected["text"].str.len().tolist() == [5, len(long_text), 5]
    assert expected["source_row"].tolist() == [2, 3, 4]
    assert_chunks_make_the_frame(path, PARAMS, expected)


def test_utf16_with_bom(tmp_path, pieces):
    content = "text,label\ncafé crème,positive\n\"naïve\nplot\",negative\nlast,positive\n"
    path = write(tmp_path, "excel.csv", codecs.BOM_UTF16_LE + content.encode("utf-16-le"))
    expected = whole(path, PARAMS)
    assert expected["text"].tolist() == ["café crème", "naïve\nplot", "last"]
    assert expected["source_row"].tolist() == [2, 3, 5]
    assert_chunks_make_the_frame(path, PARAMS, expected)


def test_jsonl_with_blank_lines_mixed_label_types_and_a_kept_column(tmp_path, pieces):
    records = [{"text": f"t{i}", "label": ("positive" if i % 2 else "negative") if i < 6 else i % 2,
                "lang": ["en", None, 2021][i % 3]} for i in range(12)]
    lines = [json.dumps(r) for r in records]
    lines.insert(4, "")
    path = write(tmp_path, "reviews.jsonl", "\n".join(lines) + "\n")
    expected = whole(path, KEEP)
    assert expected["text"].tolist() == [f"t{i}" for i in range(12)]
    assert expected["label"].tolist() == ["negative", "positive"] * 3 + ["0", "1"] * 3
    assert expected["source_row"].tolist() == [1, 2, 3, 4, *range(6, 14)]
    assert expected["lang"].tolist() == ["en", "", "2021"] * 4
    assert_chunks_make_the_frame(path, KEEP, expected)


def test_parquet_in_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(parquet_reader, "BATCH_ROWS", 3)
    path = tmp_path / "reviews.parquet"
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(10)], "label": [i % 2 for i in range(10)],
                          "lang": pd.Categorical(["en", "de"] * 5), "stars": range(10)})
    frame.to_parquet(path, row_group_size=4)
    expected = read_labelled_file(path, KEEP)
    assert expected["label"].tolist() == ["0", "1"] * 5
    assert expected["source_row"].tolist() == list(range(1, 11))
    assert expected["lang"].tolist() == ["en", "de"] * 5
    assert_chunks_make_the_frame(path, KEEP, expected)


def test_label_studio_export_is_cut_into_chunks(tmp_path):
    tasks = [{"id": i, "text": f"t{i}", "label": "positive"} for i in range(1, 6)] + [{"id": 6, "text": "t6"}]
    path = write(tmp_path, "export.json", json.dumps(tasks))
    expected = read_labelled_file(path, PARAMS)
    assert expected["source_row"].tolist() == list(range(1, 7))
    assert expected["rejected"].tolist()[:5] == [""] * 5 and "no annotation" in expected["rejected"].iloc[5]
    assert_chunks_make_the_frame(path, PARAMS, expected)


def test_rows_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="at least 1"):
        next(iter_labelled_file(write(tmp_path, "a.csv", "text,label\na,positive\n"), PARAMS, 0))


# --- the same error, through the chunks ----------------------------------------------------------------


def clean_rows(count: int) -> list[str]:
    return [f"review number {i},{'positive' if i % 2 else 'negative'}" for i in range(count)]


def test_bad_utf8_byte_deep_in_the_file(tmp_path, pieces):
    rows = clean_rows(300)
    rows[250] = "caf\xe9 au lait,negative"  # written as Latin-1 below: one byte that is not UTF-8
    content = ("text,label\n" + "\n".join(rows) + "\n").encode("latin-1")
    path = write(tmp_path, "latin1.csv", content)
    with pytest.raises(IngestError) as caught:
        whole(path, PARAMS)
    offset = content.index(b"\xe9")
    assert (caught.value.row, caught.value.field) == (252, "text")
    assert f"byte 0xe9 at byte offset {offset} " in str(caught.value)
    error, yielded = chunked_error(path)
    assert str(error) == str(caught.value) and (error.row, error.field) == (252, "text")
    if pieces:
        assert yielded > 0  # earlier pieces came first: the caller discards them


def test_bad_field_count_at_row_n(tmp_path, pieces):
    rows = clean_rows(200)
    rows[150] = "an unquoted, comma,positive"
    path = write(tmp_path, "extra.csv", 'text,label\n"two\nlines",negative\n' + "\n".join(rows) + "\n")
    with pytest.raises(IngestError) as caught:
        whole(path, PARAMS)
    assert caught.value.row == 154 and "3 field(s)" in str(caught.value)
    error, _ = chunked_error(path)
    assert str(error) == str(caught.value)


def test_truncated_last_line_and_unbalanced_quote(tmp_path, pieces):
    cut = write(tmp_path, "cut.csv", "text,label\n" + "\n".join(clean_rows(40)) + "\nhalf a li")
    error, _ = chunked_error(cut)
    assert error.row == 42 and "truncated" in str(error) and "last line" in str(error)
    assert str(error) == str(pytest.raises(IngestError, whole, cut, PARAMS).value)
    rows = clean_rows(40)
    rows[30] = 'bye,"negative'
    quote = write(tmp_path, "quote.csv", "text,label\n" + "\n".join(rows) + "\n")
    error, _ = chunked_error(quote)
    assert error.row == 32 and "never closed" in str(error)
    assert str(error) == str(pytest.raises(IngestError, whole, quote, PARAMS).value)


def test_nul_byte_and_undecodable_utf16_deep_in_the_file(tmp_path, pieces):
    rows = clean_rows(100)
    rows[80] = "bro\x00ken,positive"
    nul = write(tmp_path, "nul.csv", "text,label\n" + "\n".join(rows) + "\n")
    error, _ = chunked_error(nul)
    assert (error.row, error.field) == (82, "text") and "NUL" in str(error)
    assert str(error) == str(pytest.raises(IngestError, whole, nul, PARAMS).value)
    text = ("text,label\n" + "\n".join(clean_rows(100)) + "\n").encode("utf-16-le")
    bad_at = text.index("review number 90".encode("utf-16-le"))
    raw = codecs.BOM_UTF16_LE + text[:bad_at] + b"\x00\xdc" + text[bad_at:]  # a lone low surrogate
    utf16 = write(tmp_path, "u16.csv", raw)
    error, _ = chunked_error(utf16)
    assert error.row == 92 and f"byte offset {bad_at + 2} are not valid UTF-16-LE" in str(error)
    assert str(error) == str(pytest.raises(IngestError, whole, utf16, PARAMS).value)


def test_header_only_empty_and_missing_column(tmp_path, pieces):
    error, _ = chunked_error(write(tmp_path, "header.csv", "text,label\n\n"))
    assert "no data rows" in str(error)
    error, _ = chunked_error(write(tmp_path, "blank.csv", "\n  \n\n"))
    assert "empty" in str(error)
    error, _ = chunked_error(write(tmp_path, "cols.csv", "review,label\ngood,positive\n"))
    assert error.field == "text" and "['review', 'label']" in str(error)


def test_jsonl_broken_line_deep_in_the_file(tmp_path, pieces):
    lines = [json.dumps({"text": f"t{i}", "label": "positive"}) for i in range(100)]
    lines[70] = '{"text": "t70", "label": "positive"'  # missing brace
    path = write(tmp_path, "broken.jsonl", "\n".join(lines) + "\n")
    error, _ = chunked_error(path)
    assert error.row == 71 and "not valid JSON" in str(error)
    assert str(error) == str(pytest.raises(IngestError, whole, path, PARAMS).value)


def test_parquet_null_in_a_later_batch_names_the_first(tmp_path, monkeypatch):
    monkeypatch.setattr(parquet_reader, "BATCH_ROWS", 4)
    path = tmp_path / "nulls.parquet"
    texts = [f"t{i}" for i in range(12)]
    texts[6] = texts[9] = None
    labels = ["positive"] * 12
    labels[2] = None  # an earlier null in the label column: the text column is named first, as before
    pd.DataFrame({"text": texts, "label": labels}).to_parquet(path)
    error, _ = chunked_error(path)
    assert (error.row, error.field) == (7, "text") and "2 null value(s)" in str(error)


# --- file_digest ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, (1 << 20) - 1, (1 << 20) + 17])
def test_file_digest_is_the_sha256_of_the_bytes(tmp_path, size):
    path = write(tmp_path, "data.bin", bytes(i % 251 for i in range(size)))
    assert file_digest(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_file_digest_of_what_is_not_a_readable_file(tmp_path):
    loop = tmp_path / "loop.csv"
    loop.symlink_to(loop)
    for path, problem in ((tmp_path / "missing.csv", "no such file"), (loop, "loops back"), (tmp_path, "directory")):
        with pytest.raises(IngestError, match=problem):
            file_digest(path)
