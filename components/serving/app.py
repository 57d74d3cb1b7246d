"""HTTP inference for a classifier that may change while it serves: tunegate's own /predict, MLflow's
/invocations protocol, /health, /metadata and Prometheus /metrics, and the Open Inference Protocol v2 under
/v2 (KServe, Triton; components/serving/open_inference.py).

A text classifier answers each text with {"label", "score", "scores"}; a token classifier (NER) with
{"entities": [{"text", "type", "start", "end", "score"}, ...]} (character offsets into the text).

Every malformed request gets a 4xx with a JSON body {"error_code": ..., "message": ...} (the shape
MLflow's scoring server uses); a 500 only ever means a bug or a broken model.

The app reads its model from a ModelHolder on every batch, so a watcher (components.serving.deployment) can
swap in a new version while requests flow; every answer names the version that computed it, in the
body (`model_version`) and in the `X-Model-Version` header. Concurrent requests are merged by a
MicroBatcher into one onnxruntime call, which is where a CPU server gets its throughput.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Protocol, Sequence

from fastapi import APIRouter, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from components.config import ServiceSettings
from components.serving.api_key import (
    ALWAYS_PROTECTED,
    ApiKeyMiddleware,
    keys_from_environment,
)
from components.serving.batcher import BatchAnswer, MicroBatcher, ServiceUnavailable
from components.serving.explanations import (
    EXPLAIN_PATH,
    OneAtATime,
    disabled_error,
    explain_body_schema,
    explain_request,
)
from components.serving.holder import ModelHolder, ReloadStats, ServedModel
from components.serving.metrics import PROMETHEUS_CONTENT_TYPE, ServiceMetrics
from components.serving.open_inference import metrics_endpoint, open_inference_router
from components.serving.openapi import answers, invocations_body, predict_body
from components.serving.prediction_log import LogScreen, PredictionLog
from components.serving.request_bodies import (
    BadRequest,
    check_text_lengths,
    error_json,
    is_csv,
    read_csv_texts,
    read_json,
    texts_from_mlflow_body,
    texts_from_predict_body,
)
from components.serving.shadow import ShadowRunner

if TYPE_CHECKING:
    from components.privacy.pii import PiiScanner

VERSION_HEADER = "X-Model-Version"
ENDPOINTS = ("/predict", "/invocations", "/explain", "/health", "/metadata", "/metrics")

logger = logging.getLogger("tunegate.serve")


class BackgroundService(Protocol):
    """Something that runs beside the app for its lifetime, such as a ChampionWatcher."""

    def start(self) -> Any: ...

    def stop(self) -> Any: ...


class _RequestMetricsMiddleware:
    """Counts every HTTP request by endpoint and status and times it, 4xx and 5xx included.

    Plain ASGI rather than an @app.middleware function: that wrapper costs a task per request.
    """

    def __init__(self, app: Any, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Unknown paths share one label: a scanner must not create a time series per URL it tries.
        endpoint = _endpoint_label(scope["path"])
        status = 500  # what the client gets when the app raises before answering
        started = time.perf_counter()

        async def send_and_note_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)


def _endpoint_label(path: str) -> str:
    return path if path in ENDPOINTS else metrics_endpoint(path) or "other"


def _endpoint_of(request: Request) -> str:
    return _endpoint_label(request.url.path)


def _answer_response(answer: BatchAnswer) -> JSONResponse:
    headers = {VERSION_HEADER: answer.version} if answer.version is not None else None
    return JSONResponse({"model_version": answer.version, "predictions": answer.predictions}, headers=headers)


def _version_headers(model: ServedModel) -> dict[str, str] | None:
    return {VERSION_HEADER: model.version} if model.version is not None else None


def _reload_summary(stats: ReloadStats) -> dict[str, Any]:
    last = None if stats.last_reload_unix is None else time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                      time.gmtime(stats.last_reload_unix))
    return {"reloads": stats.reloads, "failed_loads": stats.failed_loads, "integrity_refusals": stats.integrity_refusals,
            "registry_errors": stats.registry_errors,
            "last_reload_at": last, "last_error": stats.last_error}


# Keyword arguments create_app took before ServiceSettings held every limit: the setting that replaced each.
REMOVED_ARGUMENTS = {"max_texts": "max_texts_per_request", "max_body_bytes": "max_body_bytes"}


@dataclass
class _Service:
    """What the endpoints share: the model, its batcher and limits, the metrics, the prediction log and the shadow."""

    holder: ModelHolder
    settings: ServiceSettings
    metrics: ServiceMetrics
    batcher: MicroBatcher
    prediction_log: PredictionLog | None
    shadow: ShadowRunner | None
    log_screen: LogScreen | None = None  # serve.log_pii for the prediction log and the shadow's disagreements
    explaining: OneAtATime = field(default_factory=OneAtATime)

    async def answer_texts(self, texts: list[str]) -> BatchAnswer:
        """Every protocol's way to the model (/predict, /invocations, /v2 infer): limits, log sampling, shadow."""
        check_text_lengths(texts, self.settings.max_chars_per_text)
        sampled = self.prediction_log is not None and self.prediction_log.wants_request()
        try:
            # The batcher's worker thread runs the model: the event loop stays free for /health.
            answer = await self.batcher.predict(texts, log=sampled)
        except ValueError as error:  # the predictor's word on an input it cannot take
            raise BadRequest(str(error)) from None
        if self.shadow is not None:  # after the answer exists; a draw and a put_nowait, never a wait
            self.shadow.offer(answer.version, texts, answer.predictions)
        return answer

    async def predict(self, texts: list[str]) -> JSONResponse:
        return _answer_response(await self.answer_texts(texts))


def _log_screen(settings: ServiceSettings, shadow: ShadowRunner | None,
                make_scanner: Callable[[], PiiScanner] | None) -> LogScreen | None:
    """serve.log_pii for what this process writes down: the prediction log and the shadow's disagreements share
    one screen, so one scanner. None when neither is written (nothing to screen, no scanner built)."""
    if settings.prediction_log is None and (shadow is None or shadow.log_path is None):
        return None
    screen = LogScreen(settings.log_pii, make_scanner)
    if shadow is not None and shadow.screen is None:  # a caller's own screen for the shadow is left as it is
        shadow.screen = screen
    return screen


def _service(holder: ModelHolder, settings: ServiceSettings, shadow: ShadowRunner | None,
             make_scanner: Callable[[], PiiScanner] | None = None) -> _Service:
    metrics = ServiceMetrics()
    screen = _log_screen(settings, shadow, make_scanner)
    prediction_log = (PredictionLog(settings.prediction_log, settings.prediction_log_sample_rate, screen=screen)
                      if settings.prediction_log is not None else None)
    batcher = MicroBatcher(holder, max_batch_size=settings.max_batch_size, max_wait_ms=settings.max_wait_ms,
                           max_queued_texts=settings.max_queued_texts, metrics=metrics, prediction_log=prediction_log)
    metrics.watch(lambda: (holder.current(), holder.stats(), batcher.queued_texts))
    if shadow is not None:
        metrics.watch_shadow(lambda: (shadow.totals(), shadow.stats().agreement))
    return _Service(holder, settings, metrics, batcher, prediction_log, shadow, screen)


def _prepare_log_screen(screen: LogScreen) -> None:
    screen.prepare()
    if gc.get_freeze_count():
        # The process froze its long-lived objects at startup (server.serve_forever): Presidio's import brings
        # hundreds of thousands more (spaCy, torch), which every full collection would otherwise walk.
        gc.collect()
        gc.freeze()


def _lifespan(service: _Service, background: Sequence[BackgroundService]):
    """The batcher's worker, the shadow and the background services, started and stopped with the app; the log's
    PII scanner built meanwhile."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        screen = service.log_screen
        # Built on the prediction-log writer thread, where it will screen, and awaited before the app takes
        # requests: Presidio's import (spaCy, torch) holds the GIL for seconds, which would stall the first
        # requests' answers (p99 latency 50 -> 200 ms in a 15 s load that began with it).
        scanner_built = (asyncio.wrap_future(service.batcher.on_log_writer(partial(_prepare_log_screen, screen)))
                         if screen is not None and screen.scans else None)
        service.batcher.start()
        if service.shadow is not None:
            service.shadow.start()
        for background_service in background:
            await run_in_threadpool(background_service.start)
        if scanner_built is not None:
            await scanner_built
        try:
            yield
        finally:
            for background_service in reversed(background):
                await run_in_threadpool(background_service.stop)
            await run_in_threadpool(service.batcher.stop)
            if service.shadow is not None:
                await run_in_threadpool(service.shadow.stop)

    return lifespan


def _add_error_handlers(app: FastAPI, metrics: ServiceMetrics) -> None:
    """Every error as {"error_code", "message"} with its status, counted by endpoint and code."""

    def error_response(request: Request, status_code: int, error_code: str, message: str,
                       headers: dict[str, str] | None = None) -> JSONResponse:
        metrics.errors.labels(_endpoint_of(request), error_code).inc()
        response = error_json(status_code, error_code, message)
        response.headers.update(headers or {})
        return response

    @app.exception_handler(BadRequest)
    async def _bad_request(request: Request, error: BadRequest) -> JSONResponse:
        return error_response(request, error.status_code, error.error_code, error.message)

    @app.exception_handler(ServiceUnavailable)
    async def _unavailable(request: Request, error: ServiceUnavailable) -> JSONResponse:
        return error_response(request, 503, "TEMPORARILY_UNAVAILABLE", str(error), {"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(request, 422, "INVALID_PARAMETER_VALUE", str(error.errors()))

    @app.exception_handler(Exception)
    async def _internal(request: Request, error: Exception) -> JSONResponse:
        # A bug: its traceback goes to the server's log; the client learns nothing of the internals.
        logger.error("%s %s failed", request.method, request.url.path, exc_info=error)
        return error_response(request, 500, "INTERNAL_ERROR", "the service failed on this request (a bug, logged "
                              "on the server); the request may be retried")


def _prediction_routes(service: _Service) -> APIRouter:
    """/predict (tunegate's own body) and /invocations (MLflow's scoring protocol, JSON or CSV)."""
    settings = service.settings
    router = APIRouter()
    task = getattr(service.holder.current().predictor, "task", "sequence-classification")
    documented = answers(task, bool(settings.api_key_env))

    @router.post("/predict", openapi_extra=predict_body(settings), responses=documented, response_model=None,
                 summary="Label texts", response_description="a prediction per text")
    async def predict_endpoint(request: Request) -> JSONResponse:
        body = await read_json(request, settings.max_body_bytes)
        return await service.predict(texts_from_predict_body(body, settings.max_texts_per_request))

    @router.post("/invocations", openapi_extra=invocations_body(settings), responses=documented, response_model=None,
                 summary="Label texts (MLflow's scoring protocol)", response_description="a prediction per text")
    async def invocations(request: Request) -> JSONResponse:
        if is_csv(request):
            return await service.predict(await read_csv_texts(request, settings.max_body_bytes,
                                                              settings.max_texts_per_request))
        body = await read_json(request, settings.max_body_bytes)
        return await service.predict(texts_from_mlflow_body(body, settings.max_texts_per_request))

    return router


def _explain_routes(service: _Service) -> APIRouter:
    """/explain: Shapley values of one text, one explanation at a time (serve.explain)."""
    settings = service.settings
    router = APIRouter()

    @router.post(EXPLAIN_PATH, include_in_schema=settings.explain, response_model=None,
                 openapi_extra=explain_body_schema(settings) if settings.explain else None,
                 summary="Which words drove the served model's answer (Shapley values)")
    async def explain_endpoint(request: Request) -> JSONResponse:
        if not settings.explain:
            raise disabled_error()
        text, budget = explain_request(await read_json(request, settings.max_body_bytes), settings)
        served = service.holder.current()  # one version for the whole explanation, even if a swap comes meanwhile

        def run() -> list[dict]:
            from components.explain.attributions import explain

            with service.explaining:
                return [e.to_dict() for e in explain(served.predictor, text, budget)]

        try:
            explanations = await run_in_threadpool(run)
        except ValueError as error:  # the predictor's word on an input it cannot take
            raise BadRequest(str(error)) from None
        return JSONResponse({"model_version": served.version, "explanations": explanations},
                            headers=_version_headers(served))

    return router


def _metadata(service: _Service, served: ServedModel) -> dict[str, Any]:
    """/metadata's body: the served version's metadata, its model, the limits, reloads and the shadow."""
    settings, shadow = service.settings, service.shadow
    return {
        **served.metadata,
        "model_version": served.version,
        "task": getattr(served.predictor, "task", "sequence-classification"),
        "labels": list(served.predictor.labels),
        **({"entity_types": list(served.predictor.entity_types)}
           if hasattr(served.predictor, "entity_types") else {}),
        "providers": list(getattr(served.predictor, "providers", []) or []),
        # template: data.template, which the service puts each client text into (None: texts as sent)
        **({"precision": served.predictor.card.precision, "quantization": served.predictor.card.quantization,
            "template": served.predictor.card.template,
            # the encoder's layers and which base model layers they are (model.keep_layers; None: all)
            "layers": served.predictor.card.layers, "base_layers": served.predictor.card.base_layers}
           if hasattr(served.predictor, "card") else {}),
        "max_texts": settings.max_texts_per_request,
        "limits": {"max_texts_per_request": settings.max_texts_per_request,
                   "max_chars_per_text": settings.max_chars_per_text,
                   "max_body_bytes": settings.max_body_bytes},
        "batching": {"max_batch_size": settings.max_batch_size, "max_wait_ms": settings.max_wait_ms},
        "explain": {"enabled": settings.explain, "max_chars": settings.explain_max_chars,
                    "max_evals": settings.explain_max_evals},
        "reloads": _reload_summary(service.holder.stats()),
        "shadow": shadow.describe() if shadow is not None else {"alias": None, "note": "serve.shadow is not set"},
    }


def _status_routes(service: _Service) -> APIRouter:
    """/health, /metadata and Prometheus /metrics."""
    router = APIRouter()

    @router.get("/health")
    async def health() -> JSONResponse:
        served = service.holder.current()
        return JSONResponse({"status": "ok", "model_version": served.version}, headers=_version_headers(served))

    @router.get("/metadata")
    async def metadata() -> JSONResponse:
        served = service.holder.current()
        return JSONResponse(jsonable_encoder(_metadata(service, served)), headers=_version_headers(served))

    @router.get("/metrics", response_class=PlainTextResponse,
                responses={200: {"content": {PROMETHEUS_CONTENT_TYPE.split(";")[0]: {}},
                                 "description": "Prometheus text exposition format"}})
    async def prometheus_metrics() -> Response:
        return Response(content=service.metrics.render(), media_type=PROMETHEUS_CONTENT_TYPE)

    return router


def create_app(model: ServedModel | ModelHolder, settings: ServiceSettings | None = None, *,
               background: Sequence[BackgroundService] = (), shadow: ShadowRunner | None = None,
               pii_scanner: Callable[[], PiiScanner] | None = None, **removed: Any) -> FastAPI:
    """The inference app for a fixed model (a ServedModel) or a swappable one (a ModelHolder).

    `background` services (e.g. a ChampionWatcher) are started and stopped with the app's lifespan,
    as is the batcher's worker thread. `shadow`: a second version compared with the champion on sampled
    requests after each answer (serve.shadow); its watcher comes in `background`. `pii_scanner`: builds the
    scanner that serve.log_pii screens logged texts with (prediction_log.scanner_factory(params.privacy, root));
    left out, privacy:'s defaults (the pattern recognizers, no NER model). It is called once, at startup, and
    only when a prediction log or shadow log is written and serve.log_pii is not keep.
    """
    if removed:
        raise TypeError(_removed_arguments_message(removed))
    settings = settings or ServiceSettings()
    holder = model if isinstance(model, ModelHolder) else ModelHolder(model)
    service = _service(holder, settings, shadow, pii_scanner)
    app = FastAPI(title="tunegate classifier", version=holder.current().version or "unversioned",
                  lifespan=_lifespan(service, background))
    app.state.model_holder, app.state.batcher = holder, service.batcher
    app.state.metrics, app.state.settings = service.metrics, settings
    app.state.shadow = shadow
    api_keys = keys_from_environment(settings.api_key_env) if settings.api_key_env else None
    if api_keys is not None:  # inside the metrics middleware: refused requests are counted too
        app.add_middleware(ApiKeyMiddleware, keys=api_keys,
                           protected=ALWAYS_PROTECTED + tuple(settings.api_key_also_for))
    app.add_middleware(_RequestMetricsMiddleware, metrics=service.metrics)
    _add_error_handlers(app, service.metrics)
    app.include_router(_prediction_routes(service))
    app.include_router(_explain_routes(service))
    app.include_router(_status_routes(service))
    # The Open Inference Protocol (KServe v2): the same model, batcher, limits, keys and metrics.
    app.include_router(open_inference_router(holder, settings, service.answer_texts, service.metrics, api_keys))
    return app


def _removed_arguments_message(removed: dict[str, Any]) -> str:
    """create_app's error for keyword arguments it no longer takes, naming the setting that replaced each."""
    parts = [f"{name!r} (use ServiceSettings({REMOVED_ARGUMENTS[name]}=...))" if name in REMOVED_ARGUMENTS
             else repr(name) for name in removed]
    return f"create_app() got unexpected keyword argument(s): {', '.join(parts)}"
