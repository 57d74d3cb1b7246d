"""Reading request bodies: tunegate's {"texts": [...]} and MLflow's scoring protocol (dataframe_split,
dataframe_records, instances, inputs), with the limits on body size, texts and characters.

Every malformed request raises BadRequest, which the app answers with a 4xx and a JSON body
{"error_code": ..., "message": ...} (the shape MLflow's scoring server uses)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

MLFLOW_INPUT_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
TEXT_COLUMN = "text"


class BadRequest(Exception):
    def __init__(self, message: str, status_code: int = 400, error_code: str = "BAD_REQUEST") -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.error_code = error_code


def error_json(status_code: int, error_code: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status_code, content={"error_code": error_code, "message": message})


async def _read_body(request: Request, max_body_bytes: int) -> bytes:
    """The body, refused as soon as it is known to be too big (never buffered beyond the limit) or when
    the client stops sending it for longer than the request timeout."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
        raise BadRequest(f"request body is {declared} bytes; the limit is {max_body_bytes}", 413, "PAYLOAD_TOO_LARGE")
    timeout_s = getattr(getattr(request.app.state, "settings", None), "request_timeout_s", None)
    chunks, size = [], 0
    async for chunk in _chunks_within(request, timeout_s):
        size += len(chunk)
        if size > max_body_bytes:
            raise BadRequest(f"request body is over {max_body_bytes} bytes, the limit", 413, "PAYLOAD_TOO_LARGE")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, max_body_bytes: int) -> Any:
    body = await _read_body(request, max_body_bytes)
    if not body.strip():
        raise BadRequest("empty request body; send JSON such as {\"texts\": [\"some text\"]}")
    try:
        return json.loads(body)
    except ValueError as error:  # not JSON, not UTF-8, or an integer longer than Python converts (4,300 digits)
        raise BadRequest(f"request body is not valid JSON: {error}") from None
    except RecursionError:  # the decoder recurses per level: a hostile body must not reach its limit as a 500
        raise BadRequest("request body is nested too deeply; send a flat object such as "
                         "{\"texts\": [\"some text\"]}") from None


async def _chunks_within(request: Request, timeout_s: float | None):
    stream = request.stream().__aiter__()
    while True:
        try:
            yield await asyncio.wait_for(stream.__anext__(), timeout_s)
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            raise BadRequest(f"the request body stopped arriving for {timeout_s:g} s "
                             "(serve.request_timeout_s); send it whole", 408, "REQUEST_TIMEOUT") from None


def _text_column(columns: list, what: str) -> int:
    """The position of the text: the `text` column, or the only column there is."""
    if TEXT_COLUMN in columns:
        return columns.index(TEXT_COLUMN)
    if len(columns) == 1:
        return 0
    raise BadRequest(f"{what}; name the text column {TEXT_COLUMN!r}")


def is_csv(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip().lower() == "text/csv"


async def read_csv_texts(request: Request, max_body_bytes: int, max_texts: int) -> list[str]:
    """The texts of a CSV body (MLflow's scoring server takes text/csv too): a header row, then one
    row per text; the column is `text`, or the only column there is."""
    body = await _read_body(request, max_body_bytes)
    try:
        rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"), newline=""), strict=True))
    except UnicodeDecodeError as error:
        raise BadRequest(f"CSV body is not UTF-8: {error}") from None
    except csv.Error as error:
        raise BadRequest(f"CSV body cannot be parsed: {error}") from None
    if not rows:
        raise BadRequest("empty CSV body; send a header row 'text' and one row per text")
    header = rows[0]
    column = _text_column(header, f"CSV header {header}")
    texts = []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise BadRequest(f"CSV line {number} has {len(row)} field(s) but the header has {len(header)}")
        texts.append(row[column])
    return _checked_texts(texts, "CSV rows", max_texts)


def check_text_lengths(texts: list[str], max_chars: int) -> list[str]:
    """The texts, or a 413 naming the first one over max_chars characters."""
    for index, text in enumerate(texts):
        if len(text) > max_chars:
            raise BadRequest(f"text {index} has {len(text)} characters; at most {max_chars} per text",
                             413, "PAYLOAD_TOO_LARGE")
    return texts


def _checked_texts(texts: Any, where: str, max_texts: int) -> list[str]:
    if not isinstance(texts, list):
        raise BadRequest(f"{where} must be a list of strings, got {type(texts).__name__}")
    if not texts:
        raise BadRequest(f"{where} is empty; send at least one text")
    if len(texts) > max_texts:
        raise BadRequest(f"{where} has {len(texts)} texts; at most {max_texts} per request", 413, "PAYLOAD_TOO_LARGE")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise BadRequest(f"{where}[{index}] is {type(text).__name__}; every text must be a string")
        _check_unicode(text, f"{where}[{index}]")
    return texts


def _check_unicode(text: str, where: str) -> None:
    """JSON can escape a lone UTF-16 surrogate (\\ud800) that is no character: name it, not a 500."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise BadRequest(f"{where} has an unpaired surrogate U+{ord(text[error.start]):04X} at character "
                         f"{error.start + 1}; every text must be valid Unicode (send the character itself, "
                         "or a complete surrogate pair)") from None


def texts_from_predict_body(body: Any, max_texts: int) -> list[str]:
    """{"texts": [...]} or {"text": "..."}."""
    if not isinstance(body, dict):
        raise BadRequest(f"expected a JSON object with 'texts' (a list of strings), got {type(body).__name__}")
    if "texts" in body:
        return _checked_texts(body["texts"], "texts", max_texts)
    if "text" in body:
        if not isinstance(body["text"], str):
            raise BadRequest(f"text must be a string, got {type(body['text']).__name__}")
        _check_unicode(body["text"], "text")
        return [body["text"]]
    raise BadRequest("expected 'texts' (a list of strings) or 'text' (a string) in the request body")


def _text_of_record(record: Any, where: str) -> Any:
    """The text of {"text": ...} or of a one-field record; anything else is the caller's error."""
    if not isinstance(record, dict):
        return record  # a plain value; _checked_texts says if it is not a string
    if TEXT_COLUMN in record:
        return record[TEXT_COLUMN]
    if len(record) == 1:
        return next(iter(record.values()))
    raise BadRequest(f"{where} has fields {sorted(record)}; name the text field {TEXT_COLUMN!r}")


def _texts_from_split(split: Any) -> list[Any]:
    if not isinstance(split, dict) or not isinstance(split.get("data"), list):
        raise BadRequest("dataframe_split must be an object with 'columns' and 'data' (a list of rows)")
    columns = split.get("columns")
    rows = split["data"]
    if columns is None:
        column = 0
    elif not isinstance(columns, list) or not columns:
        raise BadRequest("dataframe_split.columns must be a non-empty list of column names")
    else:
        column = _text_column(columns, f"dataframe_split has columns {columns}")
    texts = []
    for index, row in enumerate(rows):
        if not isinstance(row, list) or len(row) <= column or (columns is not None and len(row) != len(columns)):
            raise BadRequest(f"dataframe_split.data[{index}] does not match columns {columns}")
        texts.append(row[column])
    return texts


def texts_from_mlflow_body(body: Any, max_texts: int) -> list[str]:
    """The text column of an MLflow scoring request (dataframe_split, dataframe_records, instances, inputs)."""
    if not isinstance(body, dict):
        raise BadRequest(f"expected a JSON object with one of {list(MLFLOW_INPUT_KEYS)}, got {type(body).__name__}")
    given = [key for key in MLFLOW_INPUT_KEYS if key in body]
    if len(given) != 1:
        raise BadRequest(f"expected exactly one of {list(MLFLOW_INPUT_KEYS)} in the request body, got {given or 'none'}")
    key = given[0]
    payload = body[key]
    if key == "dataframe_split":
        texts = _texts_from_split(payload)
    elif key == "dataframe_records":
        if not isinstance(payload, list):
            raise BadRequest("dataframe_records must be a list of records such as {\"text\": \"...\"}")
        texts = [_text_of_record(record, f"dataframe_records[{i}]") for i, record in enumerate(payload)]
    elif isinstance(payload, dict):  # {"inputs": {"text": [...]}}: columns as lists
        texts = _text_of_record(payload, key)
    elif isinstance(payload, str):
        texts = [payload]
    elif isinstance(payload, list):
        texts = [_text_of_record(item, f"{key}[{i}]") for i, item in enumerate(payload)]
    else:
        raise BadRequest(f"{key} must be a list of strings or of {{\"text\": ...}} records")
    return _checked_texts(texts, key, max_texts)
