"""The Open Inference Protocol v2 over REST (KServe v2, Triton's HTTP API) on the same service, so any
KServe or Triton client can call it and the service fits KServe's custom-predictor contract.

One input, `text` (BYTES, shape [N]: a string per text). Outputs: for a classifier `label` (BYTES),
`score` (FP64) and `scores` (BYTES, JSON class -> probability per text); for a token classifier (NER)
`entities` (BYTES, JSON list per text). `outputs` in a request picks which come back; `id` is echoed.

An inference goes the way a /predict request goes (the function create_app gives: limits, micro-batcher,
prediction log sampling, metrics, shadow), so the answers are /predict's. Errors are the protocol's
shape, {"error": "..."}. Texts sent with Triton's binary tensor extension (tritonclient's default) are read;
answers are always JSON, which tritonclient reads as well (so no extension is announced).
"""

from __future__ import annotations

import json
import struct
from importlib import metadata as package_metadata
from typing import Any, Awaitable, Callable, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from components.config import ServiceSettings
from components.serving.api_key import accepted, presented_key
from components.serving.batcher import BatchAnswer, ServiceUnavailable
from components.serving.holder import ModelHolder, ServedModel
from components.serving.metrics import ServiceMetrics
from components.serving.request_bodies import BadRequest, _read_body, read_json

INPUT_NAME = "text"
CLASSIFIER_OUTPUTS = ("label", "score", "scores")
NER_OUTPUTS = ("entities",)
OUTPUT_DATATYPES = {"label": "BYTES", "score": "FP64", "scores": "BYTES", "entities": "BYTES"}
UNNAMED_MODEL = "model"  # the model's name when its metadata has no model_name (a model served from a folder)
INFER_METRICS_LABEL = "/v2/models/infer"  # one label for every model name a client may put in the path
BINARY_HEADER = "inference-header-content-length"  # Triton's binary tensor extension
# The error codes /predict's errors are counted under (tunegate_request_errors), by status.
ERROR_CODES = {400: "BAD_REQUEST", 401: "UNAUTHENTICATED", 404: "NOT_FOUND", 408: "REQUEST_TIMEOUT",
               413: "PAYLOAD_TOO_LARGE", 503: "TEMPORARILY_UNAVAILABLE"}

# create_app's way of answering texts: the batcher, with the limits, log sampling and shadow around it.
AnswerTexts = Callable[[list[str]], Awaitable[BatchAnswer]]


# --- the protocol's bodies -------------------------------------------------------------------------

class RequestInput(BaseModel):
    name: str = Field(examples=[INPUT_NAME])
    shape: list[int] = Field(examples=[[2]])
    datatype: str = Field(examples=["BYTES"])
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = Field(default=None, examples=[["a moving film", "ninety minutes of tedium"]])


class RequestOutput(BaseModel):
    name: str = Field(examples=["label"])
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    data: list[Any]


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[ResponseOutput]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ErrorResponse(BaseModel):
    error: str = Field(examples=["input 'texts' is unknown; send one input named 'text'"])


class OipError(Exception):
    """A request the protocol refuses: answered {"error": message} with this status."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code, self.message = status_code, message


# --- reading a request -----------------------------------------------------------------------------

def _strings_of_binary_tensor(raw: bytes) -> list[str]:
    """Triton's BYTES serialisation: each element a 4-byte little-endian length, then its bytes."""
    texts, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise OipError(400, "binary BYTES tensor is cut short in an element's length")
        (length,) = struct.unpack_from("<I", raw, offset)
        start, offset = offset + 4, offset + 4 + length
        if offset > len(raw):
            raise OipError(400, "binary BYTES tensor is cut short in an element's data")
        try:
            texts.append(raw[start:offset].decode("utf-8"))
        except UnicodeDecodeError as error:
            raise OipError(400, f"binary BYTES element {len(texts)} is not UTF-8: {error}") from None
    return texts


async def _read_request(request: Request, max_body_bytes: int) -> tuple[dict[str, Any], bytes]:
    """The JSON header of the request and the binary data after it (empty without the binary extension)."""
    header_length = request.headers.get(BINARY_HEADER)
    if header_length is None:
        return await read_json(request, max_body_bytes), b""
    body = await _read_body(request, max_body_bytes)
    if not header_length.isdigit() or int(header_length) > len(body):
        raise OipError(400, f"{BINARY_HEADER} is {header_length!r} for a body of {len(body)} bytes")
    try:
        return json.loads(body[:int(header_length)]), body[int(header_length):]
    except (ValueError, RecursionError) as error:
        raise OipError(400, f"the request's JSON header is not valid JSON: {error}") from None


def _flat(data: list[Any]) -> list[Any]:
    """The protocol allows row-major nested data ([[t1], [t2]] for shape [2, 1])."""
    return [item for element in data for item in (_flat(element) if isinstance(element, list) else [element])]


def _texts_of(tensor: RequestInput, binary: bytes) -> list[str]:
    if tensor.name != INPUT_NAME:
        raise OipError(400, f"input {tensor.name!r} is unknown; send one input named {INPUT_NAME!r}")
    if tensor.datatype != "BYTES":
        raise OipError(400, f"input {INPUT_NAME!r} has datatype {tensor.datatype}; it must be BYTES (strings)")
    if not tensor.shape or len(tensor.shape) > 2 or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
        raise OipError(400, f"input {INPUT_NAME!r} has shape {tensor.shape}; it must be [N] (or [N, 1])")
    binary_size = (tensor.parameters or {}).get("binary_data_size")
    if binary_size is not None:
        if not isinstance(binary_size, int) or binary_size != len(binary):
            raise OipError(400, f"binary_data_size is {binary_size} but {len(binary)} bytes follow the JSON")
        texts: list[Any] = _strings_of_binary_tensor(binary)
    elif tensor.data is None:
        raise OipError(400, f"input {INPUT_NAME!r} has no data; send a list of strings")
    else:
        texts = _flat(tensor.data)
    if len(texts) != tensor.shape[0]:
        raise OipError(400, f"input {INPUT_NAME!r} has shape {tensor.shape} but {len(texts)} elements")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise OipError(400, f"{INPUT_NAME}[{index}] is {type(text).__name__}; every text must be a string")
        try:  # JSON can escape a lone UTF-16 surrogate that is no character: the client's error, not a 500
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise OipError(400, f"{INPUT_NAME}[{index}] has an unpaired surrogate at character {error.start + 1}; "
                                "every text must be valid Unicode") from None
    return texts


def parse_request(body: Any, binary: bytes, max_texts: int) -> tuple[InferenceRequest, list[str]]:
    """The request and its texts, or an OipError saying what to change."""
    try:
        parsed = InferenceRequest.model_validate(body)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in error.errors())
        raise OipError(400, f"not an inference request: {problems}") from None
    if len(parsed.inputs) != 1:
        raise OipError(400, f"{len(parsed.inputs)} inputs; send one input named {INPUT_NAME!r}")
    texts = _texts_of(parsed.inputs[0], binary)
    if not texts:
        raise OipError(400, f"input {INPUT_NAME!r} is empty; send at least one text")
    if len(texts) > max_texts:
        raise OipError(413, f"input {INPUT_NAME!r} has {len(texts)} texts; at most {max_texts} per request")
    return parsed, texts


# --- answering -------------------------------------------------------------------------------------

def model_name(model: ServedModel) -> str:
    return str(model.metadata.get("model_name") or UNNAMED_MODEL)


def output_names(model: ServedModel) -> tuple[str, ...]:
    is_tagger = getattr(model.predictor, "task", "sequence-classification") == "token-classification"
    return NER_OUTPUTS if is_tagger else CLASSIFIER_OUTPUTS


def _requested(parsed: InferenceRequest, available: tuple[str, ...]) -> tuple[str, ...]:
    if not parsed.outputs:
        return available
    names = tuple(output.name for output in parsed.outputs)
    unknown = [name for name in names if name not in available]
    if unknown:
        raise OipError(400, f"output(s) {unknown} unknown; this model gives {list(available)}")
    return names


def _output_data(name: str, predictions: list[dict[str, Any]]) -> list[Any]:
    if name == "label":
        return [str(p["label"]) for p in predictions]
    if name == "score":
        return [float(p["score"]) for p in predictions]
    # BYTES of JSON: the protocol's tensors hold no objects; a client json.loads each element.
    return [json.dumps(p[name], ensure_ascii=False) for p in predictions]


def inference_response(name: str, parsed: InferenceRequest, outputs: tuple[str, ...],
                       answer: BatchAnswer) -> InferenceResponse:
    count = len(answer.predictions)
    return InferenceResponse(model_name=name, model_version=answer.version, id=parsed.id, outputs=[
        ResponseOutput(name=output, datatype=OUTPUT_DATATYPES[output], shape=[count],
                       data=_output_data(output, answer.predictions)) for output in outputs])


def model_metadata(model: ServedModel) -> ModelMetadata:
    return ModelMetadata(name=model_name(model), versions=[model.version] if model.version else [],
                         platform="onnxruntime_onnx",
                         inputs=[TensorMetadata(name=INPUT_NAME, datatype="BYTES", shape=[-1])],
                         outputs=[TensorMetadata(name=name, datatype=OUTPUT_DATATYPES[name], shape=[-1])
                                  for name in output_names(model)])


def _server_version() -> str:
    try:
        return package_metadata.version("tunegate")
    except package_metadata.PackageNotFoundError:
        return "unknown"


def metrics_endpoint(path: str) -> str | None:
    """The metrics label of a protocol path (bounded: the model's name in the path is the client's), or None."""
    if not path.startswith("/v2"):
        return None
    return INFER_METRICS_LABEL if path.endswith("/infer") else "/v2"


# --- the routes ------------------------------------------------------------------------------------

ERRORS = {code: {"model": ErrorResponse, "description": what} for code, what in (
    (400, "a malformed inference request: the message says what to change"),
    (401, "no API key, or one that is not accepted (when serve.api_key_env is set)"),
    (404, "no model of that name (or version) is served here"),
    (408, "the body stopped arriving for serve.request_timeout_s"),
    (413, "over a limit: texts per request, characters per text, body size"),
    (503, "overloaded or shutting down; retry (header Retry-After)"))}


def _request_body_schema(settings: ServiceSettings) -> dict[str, Any]:
    """InferenceRequest's schema, inlined (the route reads its body itself, to keep the body-size limit)."""
    schema = InferenceRequest.model_json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return {key: inline(value) for key, value in node.items()}
        return [inline(item) for item in node] if isinstance(node, list) else node

    example = {"id": "42", "inputs": [{"name": INPUT_NAME, "shape": [2], "datatype": "BYTES",
                                       "data": ["a moving film", "ninety minutes of tedium"]}],
               "outputs": [{"name": "label"}, {"name": "score"}]}
    description = (f"one BYTES input {INPUT_NAME!r} of shape [N], N <= {settings.max_texts_per_request}, each text "
                   f"<= {settings.max_chars_per_text} characters")
    return {"requestBody": {"required": True, "description": description, "content": {
        "application/json": {"schema": inline(schema), "example": example}}}}


def open_inference_router(holder: ModelHolder, settings: ServiceSettings, answer_texts: AnswerTexts,
                          metrics: ServiceMetrics, api_keys: tuple[bytes, ...] | None = None) -> APIRouter:
    """The protocol's routes over the app's model and answering path. `api_keys`: the keys /predict asks for
    (None: no key), asked for on infer, and on model metadata where serve.api_key_also_for lists /metadata."""
    router = APIRouter(prefix="/v2", tags=["Open Inference Protocol (KServe v2)"])
    metadata_needs_key = "/metadata" in settings.api_key_also_for

    def error(request: Request, status_code: int, message: str) -> JSONResponse:
        code = ERROR_CODES.get(status_code, "BAD_REQUEST")
        metrics.errors.labels(metrics_endpoint(request.url.path) or "other", code).inc()
        headers = {"Retry-After": "1"} if status_code == 503 else {}
        if status_code == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="tunegate"'
        return JSONResponse({"error": message}, status_code=status_code, headers=headers)

    def check_key(request: Request) -> None:
        key = presented_key(request.scope.get("headers", []))
        if api_keys is not None and not accepted(key, api_keys):
            raise OipError(401, "this endpoint needs an API key: send 'Authorization: Bearer <key>' or "
                                "'X-API-Key: <key>'" if key is None else "the API key is not accepted")

    def served(name: str, version: str | None) -> ServedModel:
        model = holder.current()  # once per request: a swap meanwhile is seen by the next one
        if name != model_name(model):
            raise OipError(404, f"no model {name!r} here; this service serves {model_name(model)!r}")
        if version is not None and version != model.version:
            raise OipError(404, f"model {name!r} version {version} is not served; version {model.version} is")
        return model

    async def infer(request: Request, name: str, version: str | None) -> JSONResponse:
        try:
            check_key(request)
            model = served(name, version)
            body, binary = await _read_request(request, settings.max_body_bytes)
            parsed, texts = parse_request(body, binary, settings.max_texts_per_request)
            outputs = _requested(parsed, output_names(model))
            answer = await answer_texts(texts)
        except OipError as refused:
            return error(request, refused.status_code, refused.message)
        except BadRequest as refused:  # the checks /predict makes: sizes, timeouts, Unicode, the predictor's word
            return error(request, refused.status_code, refused.message)
        except ServiceUnavailable as busy:
            return error(request, 503, str(busy))
        headers = {"X-Model-Version": answer.version} if answer.version is not None else None
        return JSONResponse(inference_response(name, parsed, outputs, answer).model_dump(), headers=headers)

    async def metadata_of(request: Request, name: str, version: str | None) -> JSONResponse:
        try:
            if metadata_needs_key:
                check_key(request)
            return JSONResponse(model_metadata(served(name, version)).model_dump())
        except OipError as refused:
            return error(request, refused.status_code, refused.message)

    async def ready_of(request: Request, name: str, version: str | None) -> JSONResponse:
        try:
            served(name, version)
            return JSONResponse({"name": name, "ready": True})
        except OipError as refused:
            return error(request, refused.status_code, refused.message)

    infer_doc: dict[str, Any] = dict(response_model=InferenceResponse, responses=ERRORS,
                                     openapi_extra=_request_body_schema(settings))

    @router.post("/models/{name}/infer", summary="Infer (Open Inference Protocol)", **infer_doc)
    async def infer_latest(request: Request, name: str) -> JSONResponse:
        return await infer(request, name, None)

    @router.post("/models/{name}/versions/{version}/infer", summary="Infer on a version", **infer_doc)
    async def infer_version(request: Request, name: str, version: str) -> JSONResponse:
        return await infer(request, name, version)

    @router.get("/models/{name}", response_model=ModelMetadata, responses=ERRORS, summary="Model metadata")
    async def model_metadata_latest(request: Request, name: str) -> JSONResponse:
        return await metadata_of(request, name, None)

    @router.get("/models/{name}/versions/{version}", response_model=ModelMetadata, responses=ERRORS,
                summary="Model metadata of a version")
    async def model_metadata_version(request: Request, name: str, version: str) -> JSONResponse:
        return await metadata_of(request, name, version)

    @router.get("/models/{name}/ready", responses=ERRORS, summary="Model ready")
    async def model_ready(request: Request, name: str) -> JSONResponse:
        return await ready_of(request, name, None)

    @router.get("/models/{name}/versions/{version}/ready", responses=ERRORS, summary="Model version ready")
    async def model_version_ready(request: Request, name: str, version: str) -> JSONResponse:
        return await ready_of(request, name, version)

    @router.get("/health/live", summary="Server live")
    async def live() -> dict[str, Literal[True]]:
        return {"live": True}

    @router.get("/health/ready", summary="Server ready (a model is loaded and warmed up)")
    async def ready() -> dict[str, Literal[True]]:
        return {"ready": True}  # the app only starts with a loaded model, and swaps keep one serving

    @router.get("", response_model=ServerMetadata, summary="Server metadata")
    async def server_metadata() -> ServerMetadata:
        return ServerMetadata(name="tunegate", version=_server_version(), extensions=[])

    return router
