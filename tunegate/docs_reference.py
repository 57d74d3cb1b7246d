"""The documentation's reference pages, generated from the code at build time (docs/hooks/reference.py).

- configuration: every setting of params.yaml, from the pydantic models (`components.config.Params`), with its
  type, default, bounds and description;
- the command line: every `tunegate` subcommand with its help and options, from the argparse parser;
- the HTTP API: the service's OpenAPI document, built from the FastAPI app without loading a model.

`setting_keys()` and `command_names()` are what tests/test_docs.py checks the pages' prose against.
"""

from __future__ import annotations

import argparse
import enum
import html
import inspect
import json
import textwrap
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

# Sections whose values may also come from the environment (TUNEGATE_<SECTION>__<FIELD>).
try:  # the configuration may be a module or a package
    from components.config import ENV_SECTIONS
except ImportError:  # pragma: no cover
    ENV_SECTIONS = ("registry", "approval", "serve", "schedule", "monitor")


@dataclass(frozen=True)
class SettingRow:
    key: str
    type: str
    default: str
    bounds: str
    description: str


# ---------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------

def params_model() -> type[BaseModel]:
    from components.config import Params

    return Params


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (directly or optionally), else None."""
    inner, _ = _unwrap_optional(annotation)
    if typing.get_origin(inner) is typing.Annotated:
        inner = typing.get_args(inner)[0]
    return inner if inspect.isclass(inner) and issubclass(inner, BaseModel) else None


def _item_model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model of a list's items (e.g. evaluate.slices), else None."""
    inner, _ = _unwrap_optional(annotation)
    if typing.get_origin(inner) in (list, tuple) and typing.get_args(inner):
        return _model_of(typing.get_args(inner)[0])
    return None


def type_name(annotation: Any) -> str:
    """A short, readable type: int, list[str], "local" | "ray", RayAutoscaling | None."""
    if annotation is type(None):
        return "None"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(json.dumps(arg) if isinstance(arg, str) else repr(arg) for arg in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(type_name(arg) for arg in args)}]" if args else name
    if inspect.isclass(annotation):
        if issubclass(annotation, Path):
            return "path"
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _value(value: Any) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif isinstance(value, Path):
        value = str(value)
    elif isinstance(value, enum.Enum):
        value = value.value
    try:
        return json.dumps(value, default=str)
    except TypeError:  # pragma: no cover
        return repr(value)


def default_of(field: Any) -> str:
    if field.default is not PydanticUndefined:
        return _value(field.default)
    if field.default_factory is not None:
        try:
            return _value(field.default_factory())
        except TypeError:  # a factory that takes the validated data
            return "(computed)"
    return "required"


_BOUND_SIGNS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"),
                ("min_length", "min length"), ("max_length", "max length"), ("multiple_of", "multiple of"),
                ("pattern", "pattern"))


def bounds_of(field: Any) -> str:
    parts: list[str] = []
    constraints: list[Any] = list(field.metadata)
    annotation = field.annotation
    # constraints written inside the type, e.g. list[Annotated[str, Field(pattern=...)]]
    for arg in typing.get_args(_unwrap_optional(annotation)[0]):
        if typing.get_origin(arg) is typing.Annotated:
            for meta in typing.get_args(arg)[1:]:
                constraints.extend(getattr(meta, "metadata", [meta]))
    for item in constraints:
        for attr, sign in _BOUND_SIGNS:
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(f"{sign} {value}")
    return ", ".join(dict.fromkeys(parts))


def _clean(text: str | None) -> str:
    return " ".join((text or "").split())


def walk_settings(model: type[BaseModel] | None = None, prefix: str = "",
                  parent_default: Any = None) -> Iterator[SettingRow]:
    """Every setting of the model tree, depth first in declaration order: a section's own row (for a
    nested model) comes before its settings. A nested setting's default is the one its section's default
    holds (drift.label_shift.warn), where the section has one."""
    model = model or params_model()
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        description = _clean(field.description)
        default = default_of(field)
        if isinstance(parent_default, BaseModel) and hasattr(parent_default, name):
            default = _value(getattr(parent_default, name))
        yield SettingRow(key, type_name(field.annotation), default, bounds_of(field), description)
        nested = _model_of(field.annotation)
        if nested is not None:
            own_default = field.default if isinstance(field.default, BaseModel) else None
            yield from walk_settings(nested, f"{key}.", own_default)
        elif (items := _item_model_of(field.annotation)) is not None:
            yield from walk_settings(items, f"{key}.")


def settings_rows() -> list[Any]:
    """The rows of the configuration page: components.config.reference.settings_rows() where the
    configuration provides it, else this module's own walker."""
    try:
        from components.config.reference import settings_rows as provided
    except ImportError:
        return list(walk_settings())
    return list(provided())


def setting_keys() -> set[str]:
    """Every dotted setting key this module's walker finds (independent of the page's rows)."""
    return {row.key for row in walk_settings()}


def section_names() -> set[str]:
    return set(params_model().model_fields)


def _cell(text: Any) -> str:
    """Text for a Markdown table cell: | escaped, one line, and < > & outside code spans shown as written
    (a description's 'builtin:<name>' is text, not an HTML tag)."""
    parts = str(text).replace("\n", " ").split("`")
    parts = [part if index % 2 else html.escape(part, quote=False) for index, part in enumerate(parts)]
    return "`".join(parts).replace("|", "\\|")


def _html_code(text: str) -> str:
    """Code in a table cell: an HTML code element, so that a | in it neither splits the cell nor shows a
    backslash."""
    if not text:
        return ""
    return "<code>" + html.escape(str(text)).replace("|", "&#124;").replace("\n", " ") + "</code>"


def configuration_page() -> str:
    rows = settings_rows()
    sections: dict[str, list[Any]] = {}
    for row in rows:
        sections.setdefault(row.key.split(".", 1)[0], []).append(row)
    out = [
        "# Configuration reference",
        "",
        "Every setting of `params.yaml`, generated from the pydantic models in `components/config` when this site "
        "is built. A misspelt key is an error, and values are checked against the bounds below when the file is "
        "read. Override one value per run with `tunegate run --set KEY=VALUE`.",
        "",
        f"Runtime sections ({', '.join(f'`{name}`' for name in ENV_SECTIONS)}) may also be set from the "
        "environment as `TUNEGATE_<SECTION>__<FIELD>`, e.g. `TUNEGATE_SERVE__PORT=8080`; the ML sections come "
        "from `params.yaml` only, because DVC tracks that file.",
        "",
        f"{len(rows)} settings in {len(sections)} sections.",
        "",
    ]
    for section, section_rows in sections.items():
        head, *rest = section_rows
        out += [f"## `{section}`", ""]
        if head.key == section and not rest:  # a top-level scalar (task)
            rest = [head]
        elif head.description:
            out += [_cell(head.description), ""]
        out += ["| setting | type | default | bounds | description |", "|---|---|---|---|---|"]
        for row in rest:
            out.append(f"| `{row.key}` | {_html_code(row.type)} | {_html_code(row.default)} | "
                       f"{_cell(row.bounds)} | {_cell(row.description)} |")
        out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------------------

def cli_parser() -> argparse.ArgumentParser:
    from tunegate.cli import build_parser

    return build_parser()


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: _help(choice.help) for choice in action._choices_actions}
            for name, sub in action.choices.items():
                found.append((name, helps.get(name, ""), sub))
    return found


def command_names(parser: argparse.ArgumentParser | None = None, prefix: str = "") -> set[str]:
    """Every command path: 'run', 'stack', 'stack up', ..."""
    names: set[str] = set()
    for name, _, sub in _subcommands(parser or cli_parser()):
        names.add(f"{prefix}{name}")
        names |= command_names(sub, f"{prefix}{name} ")
    return names


def _help(text: str | None, values: dict[str, Any] | None = None) -> str:
    """A help string as argparse prints it (%(default)s filled in, %% as %)."""
    if not text:
        return ""
    try:
        return text % (values or {})
    except (KeyError, TypeError, ValueError):
        return text


def _option_rows(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.option_strings:
            name = ", ".join(action.option_strings)
            if action.nargs != 0:
                name += f" {action.metavar or action.dest.upper()}"
        else:
            name = action.metavar or action.dest
        facts = []
        if action.choices and not isinstance(action.choices, dict):
            facts.append("one of " + ", ".join(f"`{choice}`" for choice in action.choices))
        if action.required and action.option_strings:
            facts.append("required")
        if action.default not in (None, False, argparse.SUPPRESS, "") and action.nargs != 0:
            facts.append(f"default `{action.default}`")
        help_text = _help(action.help, {**vars(action), "prog": parser.prog})
        rows.append(f"| `{_cell(name)}` | {_cell(help_text)} | {_cell('; '.join(facts))} |")
    return rows


def _command_section(name: str, help_text: str, parser: argparse.ArgumentParser, level: int) -> list[str]:
    usage = " ".join(parser.format_usage().replace("usage: ", "").split())
    out = [f"{'#' * level} `tunegate {name}`", "", _cell(help_text or parser.description or ""), "",
           "```text", textwrap.fill(usage, 100, subsequent_indent="    "), "```", ""]
    rows = _option_rows(parser)
    if rows:
        out += ["| argument | what | |", "|---|---|---|", *rows, ""]
    for sub_name, sub_help, sub in _subcommands(parser):
        out += _command_section(f"{name} {sub_name}", sub_help, sub, min(level + 1, 4))
    return out


def cli_page() -> str:
    parser = cli_parser()
    out = ["# Command-line reference", "",
           "Every `tunegate` command and its options, generated from the argparse parser in `tunegate/cli.py` when "
           "this site is built. `tunegate COMMAND --help` prints the same.", "",
           "```text", textwrap.fill(" ".join(parser.format_usage().replace("usage: ", "").split()), 100,
                                    subsequent_indent="    ", break_on_hyphens=False), "```", "",
           _cell(parser.description or ""), "", "| global option | what | |", "|---|---|---|",
           *_option_rows(parser), "", "| command | what |", "|---|---|"]
    commands = _subcommands(parser)
    for name, help_text, _ in commands:
        out.append(f"| [`{name}`](#tunegate-{name.replace(' ', '-')}) | {_cell(help_text)} |")
    out.append("")
    for name, help_text, sub in commands:
        out += _command_section(name, help_text, sub, 2)
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------------------
# The HTTP API
# ---------------------------------------------------------------------------------------------------------

class _DescribedPredictor:
    """Stands in for a model while the app describes itself: the OpenAPI document needs the task only."""

    def __init__(self, task: str) -> None:
        self.task = task
        self.labels = ["negative", "positive"] if task == "sequence-classification" else ["O", "B-PER", "I-PER"]
        self.entity_types = ["PER"]

    def predict(self, texts: list[str], batch_size: int = 64) -> list[dict[str, Any]]:  # pragma: no cover
        raise RuntimeError("documentation stand-in: it does not predict")


def openapi_document(task: str = "sequence-classification") -> dict[str, Any]:
    """The service's OpenAPI document with the default limits and /explain on, without loading a model."""
    from components.config import ServiceSettings
    from components.serving.app import create_app
    from components.serving.holder import ServedModel

    app = create_app(ServedModel(_DescribedPredictor(task), {"model_version": "1", "model_name": "tunegate-sentiment"}),
                     ServiceSettings(explain=True))
    return app.openapi()


def _schema_summary(schema: dict[str, Any], components: dict[str, Any]) -> str:
    if not schema:
        return ""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[`{name}`](#{name.lower()})"
    if "anyOf" in schema or "oneOf" in schema:
        options = schema.get("anyOf") or schema.get("oneOf")
        return " or ".join(_schema_summary(option, components) for option in options)
    kind = schema.get("type", "")
    if kind == "object" and "properties" in schema:
        fields = ", ".join(f"`{name}`" for name in schema["properties"])
        return f"object {{{fields}}}" + (f" ({schema['description']})" if schema.get("description") else "")
    if kind == "array":
        return f"array of {_schema_summary(schema.get('items', {}), components)}"
    return f"`{kind}`" if kind else "any"


def _body_summary(content: dict[str, Any], components: dict[str, Any]) -> str:
    parts = []
    for media, spec in content.items():
        parts.append(f"`{media}`: {_schema_summary(spec.get('schema', {}), components)}")
    return "; ".join(parts)


def _anchor(method: str, path: str) -> str:
    text = f"{method}-{path}".lower().replace("/", "-").replace("{", "").replace("}", "")
    return "-".join(part for part in text.split("-") if part)


def api_page() -> str:
    document = openapi_document()
    components = document.get("components", {}).get("schemas", {})
    out = ["# HTTP API reference", "",
           "Generated from the service's OpenAPI document (what a running service serves at `/openapi.json` and "
           "`/docs`) when this site is built, for a sequence classifier with the default limits and "
           "`serve.explain: true`. Every answer names the version that produced it (`model_version`, and the "
           "`X-Model-Version` header). See [the service's API](../how-to/service-api.md) for examples.", "",
           "| method | path | summary |", "|---|---|---|"]
    operations = [(path, method, op) for path, ops in document["paths"].items() for method, op in ops.items()]
    for path, method, op in operations:
        anchor = _anchor(method, path)
        out.append(f"| {method.upper()} | [`{path}`](#{anchor}) | {_cell(op.get('summary', ''))} |")
    out.append("")
    for path, method, op in operations:
        out += [f"## {method.upper()} {path} {{#{_anchor(method, path)}}}", ""]
        if op.get("description"):
            out += [_cell(op["description"]), ""]
        body = op.get("requestBody")
        if body:
            out += [f"**Request body**{' (required)' if body.get('required') else ''}: "
                    f"{_body_summary(body.get('content', {}), components)}", ""]
            if body.get("description"):
                out += [_cell(body["description"]), ""]
        parameters = op.get("parameters", [])
        if parameters:
            out += ["| parameter | in | type | |", "|---|---|---|---|"]
            for parameter in parameters:
                out.append(f"| `{parameter['name']}` | {parameter.get('in', '')} | "
                           f"{_schema_summary(parameter.get('schema', {}), components)} | "
                           f"{_cell(parameter.get('description', ''))} |")
            out.append("")
        out += ["| status | meaning | body |", "|---|---|---|"]
        for status, answer in op.get("responses", {}).items():
            out.append(f"| {status} | {_cell(answer.get('description', ''))} | "
                       f"{_body_summary(answer.get('content', {}), components)} |")
        out.append("")
    out += ["## Schemas", ""]
    for name, schema in components.items():
        out += [f"### {name}", ""]
        if schema.get("description"):
            out += [_cell(schema["description"]), ""]
        properties = schema.get("properties", {})
        if properties:
            required = set(schema.get("required", []))
            out += ["| field | type | required | description |", "|---|---|---|---|"]
            for field, spec in properties.items():
                out.append(f"| `{field}` | {_cell(_schema_summary(spec, components))} | "
                           f"{'yes' if field in required else ''} | {_cell(spec.get('description', ''))} |")
            out.append("")
    token = openapi_document("token-classification")
    ner_answer = token["paths"]["/predict"]["post"]["responses"]["200"]
    out += ["## A token classifier's answers", "",
            "A named-entity model answers `/predict` and `/invocations` with entities instead of labels:", "",
            "```json", json.dumps(ner_answer.get("content", {}), indent=2)[:4000], "```", "",
            "## The whole document", "",
            "??? note \"openapi.json (sequence classifier)\"", "",
            textwrap.indent("```json\n" + json.dumps(document, indent=2) + "\n```", "    "), ""]
    return "\n".join(out)


PAGES = {
    "reference/configuration.md": configuration_page,
    "reference/cli.md": cli_page,
    "reference/http-api.md": api_page,
}
