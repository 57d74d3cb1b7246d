"""Reading params.yaml into Params, with runtime settings overridden from the environment.

ML settings (data, split, model, train, gate, export, ...) come from params.yaml only: DVC tracks that
file, so a value that arrived from the environment would make DVC's cache lie about what a stage was built
with. Runtime settings (registry, approval, serve, schedule, monitor) may also come from environment
variables named ``TUNEGATE_<SECTION>__<FIELD>``, e.g. ``TUNEGATE_SERVE__PORT=8080``; the value is read as
YAML."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import yaml
from pydantic import ValidationError

from components.config.params import Params
from components.errors import ConfigError

ENV_PREFIX = "TUNEGATE_"
ENV_SECTIONS = ("registry", "approval", "serve", "schedule", "monitor")


def env_variables(env: Mapping[str, str]) -> dict[tuple[str, str], str]:
    """(section, field) -> the name of the TUNEGATE_<SECTION>__<FIELD> variable in `env` that sets it."""
    found: dict[tuple[str, str], str] = {}
    for key in env:
        if not key.startswith(ENV_PREFIX) or "__" not in key:
            continue
        section, _, field = key[len(ENV_PREFIX):].lower().partition("__")
        if section not in ENV_SECTIONS:
            raise ConfigError(
                f"{key}: only {', '.join(s.upper() for s in ENV_SECTIONS)} settings may come from the "
                "environment; ML settings belong in params.yaml so DVC can track them"
            )
        found[section, field] = key
    return found


def env_overrides(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """section -> {field: value} of the TUNEGATE_<SECTION>__<FIELD> variables in `env`, each read as YAML."""
    overrides: dict[str, dict[str, Any]] = {}
    for (section, field), key in env_variables(env).items():
        overrides.setdefault(section, {})[field] = yaml.safe_load(env[key])
    return overrides


def _format_errors(source: str, error: ValidationError) -> str:
    lines = [f"{source}: invalid configuration"]
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        lines.append(f"  - {where}: {item['msg']}")
    return "\n".join(lines)


def parse_params(raw: Mapping[str, Any], source: str = "params", env: Mapping[str, str] | None = None) -> Params:
    merged: dict[str, Any] = {k: dict(v) if isinstance(v, Mapping) else v for k, v in raw.items()}
    for section, values in env_overrides(os.environ if env is None else env).items():
        merged.setdefault(section, {}).update(values)
    try:
        return Params.model_validate(merged)
    except ValidationError as error:
        raise ConfigError(_format_errors(source, error)) from None


def read_params_file(path: Path) -> dict[str, Any]:
    """params.yaml's mapping as written, not yet validated."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such params file (run from the project root or pass --params)")
    with path.open(encoding="utf-8") as handle:
        raw = yaml.safe_load(handle) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


def load_params(path: Path, env: Mapping[str, str] | None = None) -> Params:
    return parse_params(read_params_file(path), source=str(path), env=env)
