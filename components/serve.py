"""HTTP inference for one loaded classifier: tunegate's own /predict and MLflow's /invocations protocol.

Every malformed request gets a 4xx with a JSON body {"error_code": ..., "message": ...} (the shape
MLflow's scoring server uses); a 500 only ever means a bug or a broken model.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

MLFLOW_INPUT_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
TEXT_COLUMN = "text"


class TextPredictor(Protocol):
    @property
    def labels(self) -> list[str]: ...

    def predict(self, texts: list[str]) -> list[dict[str, Any]]: ...


@dataclass
class ServedModel:
    """A predictor plus what callers may know about it (name, version, data hash, metrics...).

    The version reported to clients is metadata["model_version"], else metadata["version"].
    """

    predictor: TextPredictor
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str | None:
        version = self.metadata.get("model_version", self.metadata.get("version"))
        return None if version is None else str(version)


class BadRequest(Exception):
    def __init__(self, message: str, status_code: int = 400, error_code: str = "BAD_REQUEST") -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.error_code = error_code


def _error_response(status_code: int, error_code: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status_code, content={"error_code": error_code, "message": message})


async def _read_json(request: Request, max_body_bytes: int) -> Any:
    body = await request.body()
    if len(body) > max_body_bytes:
        raise BadRequest(f"request body is {len(body)} bytes; the limit is {max_body_bytes}", 413, "PAYLOAD_TOO_LARGE")
    if not body.strip():
        raise BadRequest("empty request body; send JSON such as {\"texts\": [\"some text\"]}")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BadRequest(f"request body is not valid JSON: {error}") from None


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
    return texts


def texts_from_predict_body(body: Any, max_texts: int) -> list[str]:
    """{"texts": [...]} or {"text": "..."}."""
    if not isinstance(body, dict):
        raise BadRequest(f"expected a JSON object with 'texts' (a list of strings), got {type(body).__name__}")
    if "texts" in body:
        return _checked_texts(body["texts"], "texts", max_texts)
    if "text" in body:
        if not isinstance(body["text"], str):
            raise BadRequest(f"text must be a string, got {type(body['text']).__name__}")
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
    elif TEXT_COLUMN in columns:
        column = columns.index(TEXT_COLUMN)
    elif len(columns) == 1:
        column = 0
    else:
        raise BadRequest(f"dataframe_split has columns {columns}; name the text column {TEXT_COLUMN!r}")
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


def create_app(model: ServedModel, *, max_texts: int = 256, max_body_bytes: int = 16 * 1024 * 1024) -> FastAPI:
    app = FastAPI(title="tunegate classifier", version=model.version or "unversioned")

    @app.exception_handler(BadRequest)
    async def _bad_request(_: Request, error: BadRequest) -> JSONResponse:
        return _error_response(error.status_code, error.error_code, error.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        return _error_response(422, "INVALID_PARAMETER_VALUE", str(error.errors()))

    @app.exception_handler(Exception)
    async def _internal(_: Request, error: Exception) -> JSONResponse:
        # Starlette still logs the traceback; the client gets JSON like every other error.
        return _error_response(500, "INTERNAL_ERROR", f"{type(error).__name__}: {error}")

    async def predict(texts: list[str]) -> list[dict[str, Any]]:
        try:
            # Inference is CPU-bound: off the event loop, so /health answers while a batch runs.
            return await run_in_threadpool(model.predictor.predict, texts)
        except ValueError as error:  # the predictor's word on an input it cannot take
            raise BadRequest(str(error)) from None

    @app.post("/predict")
    async def predict_endpoint(request: Request) -> dict[str, Any]:
        texts = texts_from_predict_body(await _read_json(request, max_body_bytes), max_texts)
        return {"model_version": model.version, "predictions": await predict(texts)}

    @app.post("/invocations")
    async def invocations(request: Request) -> dict[str, Any]:
        texts = texts_from_mlflow_body(await _read_json(request, max_body_bytes), max_texts)
        return {"predictions": await predict(texts)}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model_version": model.version}

    @app.get("/metadata")
    async def metadata() -> dict[str, Any]:
        return jsonable_encoder({
            **model.metadata,
            "model_version": model.version,
            "labels": list(model.predictor.labels),
            "providers": list(getattr(model.predictor, "providers", []) or []),
            "max_texts": max_texts,
        })

    return app


class BackgroundServer:
    """Serve an app from a daemon thread, for tests and for a CLI that does other work meanwhile.

    port=0 lets the OS pick a free port; `.url` gives the one actually bound.
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, *,
                 log_level: str = "warning", startup_timeout_s: float = 15.0) -> None:
        import uvicorn

        self.host = host
        self._requested_port = port
        self._startup_timeout_s = startup_timeout_s
        self._server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                                     lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, name="tunegate-http", daemon=True)
        self.port: int | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the server is not running")
        return f"http://{self.host}:{self.port}"

    def start(self) -> "BackgroundServer":
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout_s
        while not self._server.started:
            if not self._thread.is_alive():  # uvicorn exits the thread when it cannot bind
                raise RuntimeError(f"HTTP server on {self.host}:{self._requested_port} failed to start (port in use?); "
                                   "see the error logged above")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"HTTP server on {self.host}:{self._requested_port} did not start "
                                   f"within {self._startup_timeout_s} s")
            time.sleep(0.02)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self.port = None
        if self._thread.ident is None:  # never started
            return
        self._server.should_exit = True
        self._thread.join(timeout_s)
        if self._thread.is_alive():  # open keep-alive connections: stop waiting for them
            self._server.force_exit = True
            self._thread.join(timeout_s)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve_forever(app: FastAPI, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve in the foreground until interrupted (Ctrl+C, SIGTERM)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="info")
