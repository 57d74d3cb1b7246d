"""`tunegate config`: the resolved configuration as YAML, each value commented with where it came from. The
precedence is the loader's (components/config/loading.py): code defaults, then params.yaml, then the
TUNEGATE_<SECTION>__<FIELD> environment variables of the runtime sections."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml
from pydantic import BaseModel

from components.config import ConfigError, Params
from components.config.loading import env_variables, parse_params, read_params_file
from components.config.reference import section_model

DEFAULT = "default"
PARAMS_FILE = "params.yaml"


def _inline(value: Any) -> str:
    """A value as one line of YAML (flow style for lists and mappings)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=2**31, allow_unicode=True, sort_keys=False)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _in_file(raw: Any, path: tuple[str, ...]) -> bool:
    for part in path:
        if not isinstance(raw, Mapping) or part not in raw:
            return False
        raw = raw[part]
    return True


def source_of(path: tuple[str, ...], raw: Mapping[str, Any], env: Mapping[str, str]) -> str:
    """Where the setting at `path` got its value: an environment variable, the params file, or the default. A
    variable sets a whole field (TUNEGATE_REGISTRY__SIGNING='{public_key: k.pub}'): what it leaves out of a
    section is the default, as when the field is written in params.yaml."""
    name = env_variables(env).get(tuple(path[:2])) if len(path) >= 2 else None
    if name is not None:
        return f"env {name}" if _in_file(yaml.safe_load(env[name]), path[2:]) else DEFAULT
    return PARAMS_FILE if _in_file(raw, path) else DEFAULT


def render_lines(model: type[BaseModel], values: Mapping[str, Any], raw: Mapping[str, Any],
                 env: Mapping[str, str], prefix: tuple[str, ...] = (),
                 only: tuple[str, ...] = ()) -> Iterator[str]:
    """The YAML lines of `values` (a dump of `model`): a section as a mapping, every setting on one line with
    its source as a comment. `only` narrows the output to the settings under one dotted key."""
    indent = "  " * len(prefix)
    for name, value in values.items():
        path = (*prefix, name)
        if only and path[:len(only)] != only[:len(path)]:
            continue
        field = model.model_fields[name]
        nested = section_model(field.annotation)
        if nested is not None and isinstance(value, Mapping):
            yield f"{indent}{name}:"
            yield from render_lines(nested, value, raw, env, path, only)
        else:
            yield f"{indent}{name}: {_inline(value)}  # {source_of(path, raw, env)}"


def resolved_config(params_path: Path, env: Mapping[str, str], only: str = "") -> str:
    """The configuration `tunegate config` prints."""
    raw = read_params_file(params_path)
    params = parse_params(raw, source=str(params_path), env=env)
    wanted = tuple(filter(None, only.split(".")))
    if wanted:
        _check_key(wanted)
    lines = list(render_lines(Params, params.model_dump(mode="json"), raw, env, only=wanted))
    header = (f"# {params_path}, resolved: code defaults, then {PARAMS_FILE}, then the environment "
              "(TUNEGATE_<SECTION>__<FIELD>)")
    return "\n".join([header, *lines]) + "\n"


def _check_key(wanted: tuple[str, ...]) -> None:
    model: type[BaseModel] | None = Params
    for depth, part in enumerate(wanted):
        if model is None or part not in model.model_fields:
            known = ", ".join(model.model_fields) if model is not None else "none: it is a single setting"
            where = ".".join(wanted[:depth]) or "the configuration"
            raise ConfigError(f"config: {'.'.join(wanted)!r} is not a setting; the keys of {where}: {known}")
        model = section_model(model.model_fields[part].annotation)


def cmd_config(args) -> int:
    path = Path(args.params) if args.params else Path(args.project).resolve() / PARAMS_FILE
    print(resolved_config(path, os.environ, args.key or ""), end="")
    return 0


def add_config_parser(verbs: argparse._SubParsersAction) -> None:
    config = verbs.add_parser(
        "config", help="print the resolved configuration as YAML, each value commented with its source "
                       "(default, params.yaml, or env TUNEGATE_<SECTION>__<FIELD>)")
    config.add_argument("key", nargs="?", help="only this section or setting, e.g. train, train.lora or serve.port")
    config.add_argument("--params", metavar="PATH", help="the params file (default: params.yaml in --project)")
    config.set_defaults(handler=cmd_config)
