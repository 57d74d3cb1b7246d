"""The settings table: every setting of the Params model tree as a row (dotted key, type, default, bounds,
description), from which the documentation's configuration reference is generated."""

from __future__ import annotations

import inspect
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python

REQUIRED = "required"
_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "min length"),
           ("max_length", "max length"), ("multiple_of", "multiple of"), ("pattern", "pattern"))


@dataclass(frozen=True)
class SettingRow:
    key: str  # dotted, e.g. train.lora.r; the items of a list of sections as evaluate.slices.name
    type: str
    default: str  # JSON, or "required"
    bounds: str  # e.g. ">= 0, <= 1"; empty when there are none
    description: str


def _without_none(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def section_model(annotation: Any) -> type[BaseModel] | None:
    """The section a field holds (also when it may be null), else None."""
    inner = _without_none(annotation)
    if typing.get_origin(inner) is typing.Annotated:
        inner = typing.get_args(inner)[0]
    return inner if inspect.isclass(inner) and issubclass(inner, BaseModel) else None


def item_model(annotation: Any) -> type[BaseModel] | None:
    """The section of a list's items (evaluate.slices), else None."""
    inner = _without_none(annotation)
    if typing.get_origin(inner) is list and typing.get_args(inner):
        return section_model(typing.get_args(inner)[0])
    return None


def type_text(annotation: Any) -> str:
    """int, list[str], "local" | "ray", RayAutoscaling | None, ..."""
    if annotation is type(None):
        return "None"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_text(args[0])
    if origin is typing.Literal:
        return " | ".join(json.dumps(arg) for arg in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(arg) for arg in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_text(arg) for arg in args)}]"
    if inspect.isclass(annotation):
        return "path" if issubclass(annotation, Path) else annotation.__name__
    return str(annotation).replace("typing.", "")


def default_value(field: FieldInfo) -> Any:
    """The field's default (a factory called), or PydanticUndefined when the setting is required."""
    if field.default is not PydanticUndefined:
        return field.default
    if field.default_factory is not None:
        return field.default_factory()
    return PydanticUndefined


def value_text(value: Any) -> str:
    return REQUIRED if value is PydanticUndefined else json.dumps(to_jsonable_python(value))


def bounds_text(field: FieldInfo) -> str:
    constraints = list(field.metadata)
    for arg in typing.get_args(_without_none(field.annotation)):  # list[Annotated[str, Field(pattern=...)]]
        if typing.get_origin(arg) is typing.Annotated:
            for meta in typing.get_args(arg)[1:]:
                constraints.extend(getattr(meta, "metadata", [meta]))
    parts = [f"{sign} {getattr(item, attr)}" for item in constraints for attr, sign in _BOUNDS
             if getattr(item, attr, None) is not None]
    return ", ".join(dict.fromkeys(parts))


def _rows(model: type[BaseModel], prefix: str, defaults: BaseModel | None) -> Iterator[SettingRow]:
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        default = getattr(defaults, name) if defaults is not None else default_value(field)
        description = " ".join((field.description or "").split())
        yield SettingRow(key, type_text(field.annotation), value_text(default), bounds_text(field), description)
        if (nested := section_model(field.annotation)) is not None:
            yield from _rows(nested, f"{key}.", default if isinstance(default, BaseModel) else None)
        elif (items := item_model(field.annotation)) is not None:
            yield from _rows(items, f"{key}.", None)


def settings_rows(model: type[BaseModel] | None = None) -> list[SettingRow]:
    """Every setting of the Params tree (or of `model`), depth first in declaration order: a section's own row
    before its settings. A nested setting's default is the one its section's default holds
    (drift.label_shift.warn is 0.1)."""
    if model is None:
        from components.config.params import Params

        model = Params
    return list(_rows(model, "", None))
