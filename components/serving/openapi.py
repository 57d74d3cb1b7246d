"""What the service's OpenAPI document (/openapi.json, browsable at /docs) says of /predict and
/invocations: each request form with an example, and the answers, by the served model's task.

The endpoints read their bodies themselves (to name the text and the limit a bad request breaks, and to
refuse an oversized body before buffering it), so FastAPI cannot infer these schemas: they are written
here, with the service's limits in them, and tests fuzz the running service against them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from components.config import ServiceSettings


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer: the shape MLflow's scoring server uses."""

    error_code: str = Field(examples=["BAD_REQUEST"])
    message: str = Field(examples=["texts[1] is int; every text must be a string"])


class ClassPrediction(BaseModel):
    label: str = Field(examples=["positive"])
    score: float = Field(ge=0, le=1, description="the probability of the label")
    scores: dict[str, float] = Field(description="every class's probability", examples=[{"negative": 0.02,
                                                                                      "positive": 0.98}])


class Entity(BaseModel):
    text: str = Field(examples=["EU"])
    type: str = Field(examples=["ORG"])
    start: int = Field(ge=0, description="character offset of the entity in the text")
    end: int = Field(ge=0, description="offset one past its last character")
    score: float = Field(ge=0, le=1)


class EntitiesPrediction(BaseModel):
    entities: list[Entity]


class ClassPredictions(BaseModel):
    model_version: str | None = Field(description="the registered version that answered (also the "
                                                  "X-Model-Version header)")
    predictions: list[ClassPrediction] = Field(description="one per text, in order")


class EntityPredictions(BaseModel):
    model_version: str | None = Field(description="the registered version that answered (also the "
                                                  "X-Model-Version header)")
    predictions: list[EntitiesPrediction] = Field(description="one per text, in order")


def _texts(settings: ServiceSettings) -> dict[str, Any]:
    return {"type": "array", "minItems": 1, "maxItems": settings.max_texts_per_request,
            "items": _text(settings)}


def _text(settings: ServiceSettings) -> dict[str, Any]:
    return {"type": "string", "maxLength": settings.max_chars_per_text}


def _object(properties: dict[str, Any], description: str) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties), "description": description}


def predict_body(settings: ServiceSettings) -> dict[str, Any]:
    schema = {"anyOf": [
        _object({"texts": _texts(settings)}, "several texts"),
        _object({"text": _text(settings)}, "one text"),
    ]}
    examples = {"texts": {"value": {"texts": ["a moving, beautifully acted film", "ninety minutes of tedium"]}},
                "text": {"value": {"text": "a moving, beautifully acted film"}}}
    return {"requestBody": {"required": True, "description": "texts to label (raw text: the model's tokenizer "
                                                             "runs in the service)",
                            "content": {"application/json": {"schema": schema, "examples": examples}}}}


def invocations_body(settings: ServiceSettings) -> dict[str, Any]:
    """MLflow's scoring protocol, each form with the text in a `text` column, and CSV."""
    text, texts = _text(settings), _texts(settings)
    record = _object({"text": text}, "a record")
    rows = {"type": "array", "minItems": 1, "maxItems": settings.max_texts_per_request,
            "items": {"type": "array", "items": text, "minItems": 1, "maxItems": 1}}
    split = _object({"columns": {"type": "array", "items": {"type": "string", "enum": ["text"]},
                                 "minItems": 1, "maxItems": 1}, "data": rows}, "pandas split orient")
    records = {"type": "array", "minItems": 1, "maxItems": settings.max_texts_per_request, "items": record}
    schema = {"anyOf": [
        _object({"dataframe_split": split}, "dataframe_split"),
        _object({"dataframe_records": records}, "dataframe_records"),
        _object({"instances": {"anyOf": [texts, records]}}, "instances"),
        _object({"inputs": {"anyOf": [texts, records, _object({"text": texts}, "columns")]}}, "inputs"),
    ]}
    examples = {
        "dataframe_split": {"value": {"dataframe_split": {"columns": ["text"], "data": [["a moving film"]]}}},
        "dataframe_records": {"value": {"dataframe_records": [{"text": "a moving film"}]}},
        "instances": {"value": {"instances": ["a moving film", "ninety minutes of tedium"]}},
        "inputs": {"value": {"inputs": ["a moving film"]}},
    }
    csv = {"schema": {"type": "string", "description": "a header row with a `text` column, then a row per text"},
           "example": "text\na moving film\nninety minutes of tedium\n"}
    return {"requestBody": {"required": True, "description": "MLflow's scoring protocol",
                            "content": {"application/json": {"schema": schema, "examples": examples},
                                        "text/csv": csv}}}


def answers(task: str, api_key: bool) -> dict[int | str, dict[str, Any]]:
    """The documented answers of /predict and /invocations."""
    model = EntityPredictions if task == "token-classification" else ClassPredictions
    answers: dict[int | str, dict[str, Any]] = {
        200: {"model": model, "description": "a prediction per text; header X-Model-Version"},
        400: {"model": ErrorBody, "description": "a malformed request: the message says what to change"},
        408: {"model": ErrorBody, "description": "the body stopped arriving for serve.request_timeout_s"},
        413: {"model": ErrorBody, "description": "over a limit: texts per request, characters per text, body size"},
        503: {"model": ErrorBody, "description": "overloaded or shutting down; retry (header Retry-After)"},
    }
    if api_key:
        answers[401] = {"model": ErrorBody, "description": "no API key, or one that is not accepted"}
    return answers
