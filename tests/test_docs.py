"""The documentation: the site builds with --strict, the pages name only settings and commands that exist,
the generated configuration reference lists every setting, and the built page renders in a browser."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest

from tunegate import docs_reference

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MKDOCS = Path(sys.executable).with_name("mkdocs")
KNOWN_SETTING = "serve.engine"

# Keys the pages name on purpose although the model no longer has them: older spellings that are still read.
LEGACY_KEYS = {"export.quantize"}
# Dotted names that start like a section but are files or code, not settings.
NOT_SETTINGS = re.compile(r"\.(dvc|py|yaml|yml|json|jsonl|csv|tsv|md|txt|lock|db|parquet|png|html|xml)$")


def doc_pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md")) + [ROOT / "README.md"]


def inline_code(text: str) -> list[str]:
    """The contents of inline code spans, outside fenced code blocks."""
    text = re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.S | re.M)
    return re.findall(r"(?<!`)`([^`\n]+)`(?!`)", text)


def named_settings(sections: set[str]) -> set[tuple[str, str]]:
    """(page, dotted key) for every `section.key...` a page writes in backticks."""
    pattern = re.compile(r"(?<![\w./-])((?:%s)(?:\.[A-Za-z_][A-Za-z0-9_]*)+)(?![\w/(-])" % "|".join(sorted(sections)))
    found = set()
    for page in doc_pages():
        for span in inline_code(page.read_text(encoding="utf-8")):
            for match in pattern.finditer(span):
                key = match.group(1)
                if not NOT_SETTINGS.search(key):
                    found.add((str(page.relative_to(ROOT)), key))
    return found


def resolves(key: str) -> bool:
    """Whether a dotted key names a setting of the model tree; the keys of a free-form mapping
    (sweep.space, curve.methods, data.label_map...) are not checked past the mapping."""
    model = docs_reference.params_model()
    parts = key.split(".")
    for index, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields:
            return False
        annotation = fields[part].annotation
        if index == len(parts) - 1:
            return True
        nested = docs_reference._model_of(annotation) or docs_reference._item_model_of(annotation)
        if nested is None:
            return _is_mapping(annotation)
        model = nested
    return True


def _is_mapping(annotation) -> bool:
    """A free-form mapping (or Any): its keys are data, not settings."""
    options = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) \
        else (annotation,)
    return any(typing.get_origin(option) in (dict, typing.Mapping) or option in (dict, typing.Any)
               for option in options)


COMMAND = re.compile(r"(?:^|[\s(/])tunegate ((?:stack )?[a-z][a-z-]*)")


def named_commands() -> set[tuple[str, str]]:
    """(page, command) for every `tunegate <command>` a page writes as code: in inline code spans, and on
    the lines of fenced code blocks (comments dropped), never in prose."""
    found = set()
    for page in doc_pages():
        text = page.read_text(encoding="utf-8")
        code = inline_code(text)
        for block in re.findall(r"^(?:```|~~~)[^\n]*\n(.*?)^(?:```|~~~)", text, flags=re.S | re.M):
            code += [re.sub(r"(^|\s)#.*$", "", line) for line in block.splitlines()]
        for snippet in code:
            if snippet.lstrip().startswith("#"):
                continue
            for match in COMMAND.finditer(snippet):
                found.add((str(page.relative_to(ROOT)), match.group(1)))
    return found


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built once with --strict for the whole module."""
    if not MKDOCS.exists() and shutil.which("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    mkdocs = str(MKDOCS) if MKDOCS.exists() else shutil.which("mkdocs")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(out)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    assert not warnings, "\n".join(warnings)
    return out


def test_site_builds_strict(site):
    for page in ("index.html", "reference/configuration/index.html", "reference/cli/index.html",
                 "reference/http-api/index.html", "results/index.html", "changelog/index.html",
                 "how-to/scale-out/index.html"):
        assert (site / page).is_file(), page


def test_pages_name_only_settings_that_exist():
    sections = docs_reference.section_names()
    named = named_settings(sections)
    assert any(key == KNOWN_SETTING for _, key in named), "the key finder found nothing: check the pattern"
    unknown = sorted(f"{page}: `{key}`" for page, key in named if key not in LEGACY_KEYS and not resolves(key))
    assert not unknown, "pages name settings the configuration does not have:\n" + "\n".join(unknown)


def test_the_setting_checker_catches_a_misspelt_key():
    assert resolves("serve.engine") and resolves("drift.label_shift.warn") and resolves("sweep.space")
    assert not resolves("serve.engines") and not resolves("train.batchsize")


def test_pages_name_only_commands_that_exist():
    commands = docs_reference.command_names()
    named = named_commands()
    assert any(command == "run" for _, command in named)
    unknown = sorted(f"{page}: tunegate {command}" for page, command in named if command not in commands
                     and command.split(" ")[0] not in commands)
    assert not unknown, "pages name commands the CLI does not have:\n" + "\n".join(unknown)


def test_the_command_finder_reads_code_not_prose():
    assert [m.group(1) for m in COMMAND.finditer(".venv/bin/tunegate stack up --detach")] == ["stack up"]
    assert [m.group(1) for m in COMMAND.finditer('eval "$(.venv/bin/tunegate stack env)"')] == ["stack env"]
    assert "bogus" not in docs_reference.command_names()


def test_configuration_reference_lists_every_setting(site):
    page = (site / "reference/configuration/index.html").read_text(encoding="utf-8")
    keys = docs_reference.setting_keys()
    assert len(keys) > 100
    missing = sorted(key for key in keys if f"<code>{key}</code>" not in page)
    assert not missing, f"{len(missing)} settings missing from the configuration reference: {missing[:20]}"


def test_cli_and_api_references_are_complete(site):
    cli = (site / "reference/cli/index.html").read_text(encoding="utf-8")
    for command in docs_reference.command_names():
        assert f"tunegate {command}" in cli, command
    api = (site / "reference/http-api/index.html").read_text(encoding="utf-8")
    for path in docs_reference.openapi_document()["paths"]:
        assert path in api, path


def test_configuration_page_renders_in_chromium(site, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium)")
    page = site / "reference/configuration/index.html"
    result = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                             f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert "Configuration reference" in dom
    assert f"<code>{KNOWN_SETTING}</code>" in dom
    assert "<table" in dom
