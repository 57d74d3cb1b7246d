"""Editing params.yaml in place (`tunegate run --set`, sweeps, `tunegate stack connect`): one key at a
time, comments and order kept, and the result validated before it is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from components.config.loading import parse_params


def set_param(path: Path, dotted_key: str, value: Any) -> Any:
    """Write one override into params.yaml, as `dvc exp run --set-param` does, and return the old value.

    Overrides go through the file so that DVC's stage cache and the MLflow record both see them. The
    file is edited round-trip (ruamel.yaml, as DVC itself does): its comments and order survive.
    """
    from ruamel.yaml import YAML

    editor = YAML()  # round-trip mode
    editor.preserve_quotes = True
    editor.width = 4096  # never re-wrap a user's long lines
    editor.representer.add_representer(  # `null` stays `null`, not an empty value
        type(None), lambda representer, _: representer.represent_scalar("tag:yaml.org,2002:null", "null"))
    editor.representer.add_representer(float, _represent_float)
    raw = editor.load(Path(path).read_text(encoding="utf-8")) or {}
    node = raw
    *parents, leaf = dotted_key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    old = node.get(leaf)
    node[leaf] = value
    plain = yaml.safe_load(_dump(editor, raw))
    parse_params(plain, source=f"{path} with {dotted_key}={value!r}")  # refuse a bad override before writing
    Path(path).write_text(_dump(editor, raw), encoding="utf-8")
    return old


def _represent_float(representer, value: float):
    """A float as YAML 1.1 readers (PyYAML, hence DVC and this module) read back as a float: ruamel
    writes 5e-05, which they take for a string; 5.0e-05 is a float to all of them."""
    import math

    if not math.isfinite(value):
        return representer.represent_float(value)
    text = repr(value)
    mantissa, marker, exponent = text.partition("e")
    if marker and "." not in mantissa:
        text = f"{mantissa}.0e{exponent}"
    return representer.represent_scalar("tag:yaml.org,2002:float", text)


def _dump(editor, data) -> str:
    import io

    buffer = io.StringIO()
    editor.dump(data, buffer)
    return buffer.getvalue()
