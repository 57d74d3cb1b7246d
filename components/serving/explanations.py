"""POST /explain: Shapley word attributions of the model that is serving, rationed.

One explanation costs up to `explain_max_evals` model calls (hundreds of predictions), so the endpoint
is off unless serve.explain is true, takes one text of at most explain_max_chars characters, and runs
one explanation at a time: a second request while one runs gets a 429 at once instead of queueing
behind it (and in front of /predict's traffic on the same cores).
"""

from __future__ import annotations

import threading
from typing import Any

from components.config import ServiceSettings
from components.serving.request_bodies import BadRequest, check_text_lengths

EXPLAIN_PATH = "/explain"


def disabled_error() -> BadRequest:
    return BadRequest("explanations are off on this service; start it with serve.explain: true "
                      "(each costs up to serve.explain_max_evals model calls)", 404, "ENDPOINT_DISABLED")


def explain_request(body: Any, settings: ServiceSettings) -> tuple[str, int]:
    """The text and the model-call budget of an /explain body, or a 4xx that says what is wrong."""
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        raise BadRequest('send {"text": "one text"} (optionally "max_evals": N); /explain takes one text')
    unknown = sorted(set(body) - {"text", "max_evals"})
    if unknown:
        raise BadRequest(f"unknown field(s) {unknown}; /explain takes 'text' and optionally 'max_evals'")
    text = body["text"]
    if not text.strip():
        raise BadRequest("text is empty: there is nothing to explain")
    check_text_lengths([text], settings.explain_max_chars)
    budget = body.get("max_evals", settings.explain_max_evals)
    if isinstance(budget, bool) or not isinstance(budget, int) or not 10 <= budget <= settings.explain_max_evals:
        raise BadRequest(f"max_evals must be an integer from 10 to {settings.explain_max_evals} "
                         "(serve.explain_max_evals)")
    return text, budget


class OneAtATime:
    """A non-blocking slot: taken or refused at once, never waited for."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> "OneAtATime":
        if not self._lock.acquire(blocking=False):
            raise BadRequest("another explanation is running; explanations run one at a time, retry shortly",
                             429, "TOO_MANY_REQUESTS")
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def explain_body_schema(settings: ServiceSettings) -> dict[str, Any]:
    schema = {"type": "object", "required": ["text"], "additionalProperties": False, "properties": {
        "text": {"type": "string", "minLength": 1, "maxLength": settings.explain_max_chars},
        "max_evals": {"type": "integer", "minimum": 10, "maximum": settings.explain_max_evals}}}
    example = {"text": "a moving, beautifully acted film"}
    return {"requestBody": {"required": True, "description": "one text to explain",
                            "content": {"application/json": {"schema": schema, "example": example}}}}
