"""Reports that people read as text and machines read as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Self

from pydantic import BaseModel


class JsonReport(BaseModel):
    def write(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, path: Path) -> Self:
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))


def read_json_if_present(path: Path) -> dict | None:
    """A stage's JSON output, or None when the stage has not run (a project from before it)."""
    path = Path(path)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
