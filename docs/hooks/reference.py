"""MkDocs hook: the reference pages (configuration, command line, HTTP API), generated from the code at each
build by tunegate.docs_reference; nothing generated is written into docs/."""

from __future__ import annotations

import sys
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the project's packages, also when tunegate is not installed in this environment
    sys.path.insert(0, str(ROOT))


def on_files(files, config):
    from tunegate import docs_reference

    for path, render in docs_reference.PAGES.items():
        existing = files.get_file_from_path(path)
        if existing is not None:
            files.remove(existing)
        files.append(File.generated(config, path, content=render()))
    return files
