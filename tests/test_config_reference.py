"""The configuration's reference: every setting documented (the docs site's table is generated from the
models), and the shipped params.yaml saying nothing the code defaults do not, except where it says why."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from components.config import Params
from components.config.reference import SettingRow, settings_rows
from components.config.shipped import SHIPPED_OVERRIDES, differences, shipped_values

REPO_ROOT = Path(__file__).resolve().parents[1]


def shipped() -> dict:
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))


def test_every_setting_has_a_description():
    rows = settings_rows()
    missing = [row.key for row in rows if not row.description.strip()]
    assert not missing, f"settings without a Field description: {', '.join(missing)}"
    keys = {row.key for row in rows}
    # the whole tree: sections, nested sections, optional sections and the items of a list of sections
    assert {"train.lora.r", "drift.label_shift.warn", "serve.autoscaling.max_replicas",
            "evaluate.slices.regex", "distill.teacher_train.learning_rate"} <= keys
    assert len(keys) == len(rows), "each setting once"


def test_rows_carry_type_default_bounds_and_description():
    rows = {row.key: row for row in settings_rows()}
    assert set(SettingRow.__dataclass_fields__) == {"key", "type", "default", "bounds", "description"}
    split = rows["split.validation_fraction"]
    assert (split.type, split.default, split.bounds) == ("float", "0.1", "> 0, < 0.5")
    assert rows["data.source"].default == "required"
    assert rows["train.lr_schedule"].type == '"linear" | "cosine" | "constant"'
    assert rows["train.early_stopping_patience"].type == "int | None"
    assert rows["train.early_stopping_patience"].bounds == ">= 1"
    assert rows["drift.label_shift.warn"].default == "0.1"  # the section's default holds it
    assert rows["serve.shadow_log"].type == "path"
    assert rows["data.keep_columns"].bounds.startswith("pattern ")
    assert rows["model.max_length"].default == "64"


def test_shipped_values_equal_the_code_defaults_unless_listed():
    unlisted = [f"{key}: params.yaml has {value!r}, the code default is {default!r}"
                for key, value, default in differences(shipped()) if key not in SHIPPED_OVERRIDES]
    assert not unlisted, ("params.yaml differs from the code defaults without a reason in "
                          "components/config/shipped.py SHIPPED_OVERRIDES:\n  " + "\n  ".join(unlisted))


def test_every_listed_override_differs_and_is_marked_in_params_yaml():
    differing = {key for key, _, _ in differences(shipped())}
    stale = sorted(set(SHIPPED_OVERRIDES) - differing)
    assert not stale, f"SHIPPED_OVERRIDES lists keys whose shipped value is the code default (or absent): {stale}"
    assert all(reason.strip() for reason in SHIPPED_OVERRIDES.values())
    text = (REPO_ROOT / "params.yaml").read_text(encoding="utf-8")
    assert text.count("# shipped override") >= len({key.rsplit(".", 1)[0] if key.startswith("distill.teacher_train")
                                                     else key for key in SHIPPED_OVERRIDES})


def test_the_check_names_an_unlisted_difference():
    raw = shipped()
    raw["train"]["epochs"] = 5
    raw["drift"]["label_shift"] = {"warn": 0.2, "fail": 0.25}
    found = {key: (value, default) for key, value, default in differences(raw)}
    assert found["train.epochs"] == (5, 2)
    assert found["drift.label_shift.warn"] == (0.2, 0.1)
    assert "drift.label_shift.fail" not in found


def test_leaving_out_a_shipped_key_means_the_shipped_value():
    raw = shipped()
    full = Params.model_validate(raw)
    for key, _, _ in list(shipped_values(raw)):
        if key in SHIPPED_OVERRIDES or key.count(".") != 1 or key.split(".")[0] in ("data", "model"):
            continue
        section, name = key.split(".")
        trimmed = {**raw, section: {k: v for k, v in raw[section].items() if k != name}}
        assert getattr(Params.model_validate(trimmed), section) == getattr(full, section), key


@pytest.mark.parametrize("section", ["data", "model"])
def test_required_sections_have_their_defaults_too(section):
    raw = shipped()
    full = Params.model_validate(raw)
    required = {"data": ("source", "labels"), "model": ("base_model",)}[section]
    for name in list(raw[section]):
        if name in required or f"{section}.{name}" in SHIPPED_OVERRIDES:
            continue
        trimmed = {**raw, section: {k: v for k, v in raw[section].items() if k != name}}
        assert getattr(Params.model_validate(trimmed), section) == getattr(full, section), f"{section}.{name}"
