"""The shipped params.yaml against the code defaults: leaving a key out means what the shipped file says,
except for the values listed here, which params.yaml sets apart on purpose (each with a comment there)."""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from pydantic import BaseModel
from pydantic_core import PydanticUndefined, to_jsonable_python

from components.config.reference import default_value, section_model

_BUILTIN_DATA = "describes the built-in Rotten Tomatoes data; other data has its own columns and labels"
_GATE_FLOOR = ("a floor for the built-in sentiment data (its recipe scores about 0.845); what a model must reach "
               "depends on the task and the data, so the code judges no floor")
_TEACHER = ("suits the built-in base-size teacher (all-mpnet-base-v2), which trains longer, with a smaller rate and "
            "batch, than the student; teacher keys left out take the train section's defaults")

# dotted key -> why the shipped params.yaml sets it apart from the code default.
SHIPPED_OVERRIDES: dict[str, str] = {
    "data.label_column": _BUILTIN_DATA,
    "data.label_map": _BUILTIN_DATA,
    "data.exclude_labels": _BUILTIN_DATA,
    "sweep.space": "an example search space, ready for sweep.enabled: true; a search space depends on the model",
    "gate.min_accuracy": _GATE_FLOOR,
    "gate.min_macro_f1": _GATE_FLOOR,
    "registry.model_name": "names the sentiment model the default run registers; the code's name fits any classifier",
    "distill.teacher_train.epochs": _TEACHER,
    "distill.teacher_train.learning_rate": _TEACHER,
    "distill.teacher_train.batch_size": _TEACHER,
    "evaluate.slices": ("slices of English reviews (negation, short and long texts); which slices matter depends on "
                        "the data, so the code measures none"),
}


def shipped_values(raw: Mapping[str, Any], model: type[BaseModel] | None = None, prefix: str = "",
                   defaults: BaseModel | None = None) -> Iterator[tuple[str, Any, Any]]:
    """(dotted key, value in `raw`, code default) for every setting `raw` gives, sections walked into; the code
    default is PydanticUndefined for a required setting."""
    if model is None:
        from components.config.params import Params

        model = Params
    for name, value in raw.items():
        field = model.model_fields.get(name)
        if field is None:
            continue  # validation names unknown keys
        default = getattr(defaults, name) if defaults is not None else default_value(field)
        nested = section_model(field.annotation)
        if nested is not None and isinstance(value, Mapping):
            yield from shipped_values(value, nested, f"{prefix}{name}.",
                                      default if isinstance(default, BaseModel) else None)
        else:
            yield f"{prefix}{name}", value, default


def differences(raw: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, shipped value, code default) of every setting whose value in `raw` is not its code default."""
    return [(key, value, default) for key, value, default in shipped_values(raw)
            if default is not PydanticUndefined and to_jsonable_python(default) != to_jsonable_python(value)]
