"""The `serve:` section: the HTTP service's limits, batching, logging, shadowing and engine."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from components.config.base import Section
from components.config.privacy import LogPiiPolicy


class ServiceSettings(Section):
    """The service's knobs; `tunegate serve` fills them from params' `serve` section."""

    max_texts_per_request: int = Field(default=256, ge=1, description="Most texts one request may carry; more get "
                                                                      "a 413 naming the limit.")
    max_chars_per_text: int = Field(default=10_000, ge=1, description="Longest text accepted, in characters; "
                                                                      "longer gets a 413 naming the limit.")
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1, description="Largest request body, in bytes; "
                                                                            "larger gets a 413.")
    request_timeout_s: float = Field(default=10.0, gt=0,
                                     description="Seconds a client gets to send its request headers after "
                                                 "connecting (or after its previous answer), and between body "
                                                 "chunks; slower connections are closed, a slow body gets a 408.")
    max_batch_size: int = Field(default=64, ge=1,
                                description="Micro-batching: most texts from queued requests scored in one "
                                            "onnxruntime call (a larger request runs as a batch of its own).")
    max_wait_ms: float = Field(default=0.0, ge=0, le=1000,
                               description="Micro-batching: milliseconds a batch waits after its first text for "
                                           "others to join. 0: a batch takes what is queued when the model is "
                                           "free, and requests arriving meanwhile make up the next one.")
    max_queued_texts: int = Field(default=4096, ge=1,
                                  description="Texts waiting for the model beyond this get a 503 at once, rather "
                                              "than turning overload into timeouts for everyone.")
    poll_interval_s: float = Field(default=10.0, gt=0, description="Seconds between the service's checks of where "
                                                                   "the registry's champion alias points.")
    access_log: bool = Field(default=False,
                             description="Log a line per request (uvicorn's access log). Off by default: at "
                                         "hundreds of requests a second it floods the console and costs the "
                                         "event loop a few percent; /metrics counts every request by path and "
                                         "status instead.")
    prediction_log: Path | str | None = Field(
        default=None,
        description="Where sampled predictions are logged as JSON lines for monitoring: a .jsonl file, or a folder "
                    "or fsspec URL (s3://bucket/prefix) partitioned by date, hour and replica; left out, nothing "
                    "is logged.")
    prediction_log_sample_rate: float = Field(default=0.1, ge=0, le=1,
                                              description="Share of predictions written to the prediction log.")
    log_pii: LogPiiPolicy = Field(
        default="redact",
        description="Personal data in a logged text (found as privacy: says): 'redact' logs it with typed "
                    "placeholders (<EMAIL>), 'drop' leaves such requests out of the log, 'keep' logs them as "
                    "sent. The labelling queue and the shadow's disagreements read the log's text. The answer "
                    "to the client is never changed: the model sees the text as sent.")
    api_key_env: str | None = Field(
        default=None,
        description="The name of the environment variable holding the API key that /predict and /invocations "
                    "require (several keys, comma-separated, are all accepted); left out, no key is required.")
    api_key_also_for: list[Literal["/metrics", "/metadata"]] = Field(
        default_factory=list, description="Further paths that require the API key.")
    explain: bool = Field(default=False, description="Offer POST /explain (Shapley attributions, one at a time, "
                                                     "each up to explain_max_evals model calls).")
    explain_max_chars: int = Field(default=1000, ge=1, description="Longest text /explain accepts, in characters.")
    explain_max_evals: int = Field(default=300, ge=10, le=20_000,
                                   description="Model calls allowed per /explain explanation.")
    shadow: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_-]+$",
        description="A registry alias (e.g. challenger, never champion) also run on a sampled share of requests "
                    "after the answer has gone out, counting how often it agrees; left out, no shadow.")
    shadow_sample_rate: float = Field(default=0.1, ge=0, le=1, description="Share of requests also sent to the "
                                                                           "shadow.")
    shadow_queue_size: int = Field(default=64, ge=1,
                                   description="Sampled requests waiting for the shadow beyond this are dropped "
                                               "(and counted): the shadow never holds an answer back.")
    shadow_log: Path = Field(default=Path("artifacts/serving/shadow_disagreements.jsonl"),
                             description="JSON lines file (relative to the project) of the requests on which the "
                                         "shadow disagreed.")

    @field_validator("prediction_log", mode="before")
    @classmethod
    def _url_stays_a_url(cls, value):
        # A Path would fold s3://bucket into s3:/bucket; a URL stays text, everything else is a path.
        if value is None or (isinstance(value, str) and "://" in value):
            return value
        return Path(value)

    @model_validator(mode="after")
    def _shadow_is_not_the_champion(self) -> "ServiceSettings":
        if self.shadow == "champion":
            raise ValueError("serve.shadow names the alias compared with the champion (e.g. challenger), not champion")
        return self


class RayAutoscaling(Section):
    min_replicas: int = Field(default=1, ge=0, description="Fewest replicas kept running.")
    max_replicas: int = Field(default=4, ge=1, description="Most replicas started.")
    target_ongoing_requests: float = Field(default=16.0, gt=0,
                                           description="Requests in progress per replica above which another "
                                                       "replica starts.")


class ServeParams(ServiceSettings):
    host: str = Field(default="127.0.0.1", description="Address the service listens on.")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port the service listens on.")
    providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"],
                                 description="onnxruntime execution providers, in order of preference, e.g. "
                                             "[CUDAExecutionProvider, CPUExecutionProvider].")
    engine: Literal["local", "ray"] = Field(default="local",
                                            description="local: one process (uvicorn); ray: a Ray Serve "
                                                        "application of serve.replicas processes.")
    replicas: int = Field(default=1, ge=1, description="engine ray: how many replicas serve, unless "
                                                       "serve.autoscaling is set.")
    ray_address: str = Field(default="", description="engine ray: a running Ray cluster's address; empty starts "
                                                     "Ray on this machine.")
    ray_ingress: Literal["haproxy", "proxy"] = Field(
        default="haproxy",
        description="engine ray: what takes the HTTP requests. haproxy: HAProxy (shipped with ray[serve]) forwards "
                    "each request straight to a replica's own port; proxy: Ray's Python HTTP proxy, which costs "
                    "about 3 ms of CPU per request more. Applied when tunegate starts Ray; a cluster of yours takes "
                    "it from its `ray start` environment.")
    autoscaling: RayAutoscaling | None = Field(default=None,
                                               description="engine ray: a range of replicas scaled with the load; "
                                                           "left out, a fixed serve.replicas.")
