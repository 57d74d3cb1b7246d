"""Rebuild a registered version from its lineage, on any clone that reaches the registry and the DVC remote.

A version's run keeps the files that define it (params.yaml, dvc.lock, data.dvc under `config/`) and its
tags name the code's git commit. Restoring those files, pulling the data by its hash and running
`dvc repro` trains the same model again; its test metrics are set beside the registered ones.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from components.layout import ProjectLayout
from components.lifecycle.registry import ModelRegistry
from components.lifecycle.versioning import VersioningError, data_hash, git_commit, run_dvc

LINEAGE_FILES = ("params.yaml", "dvc.lock", "data.dvc")
LINEAGE_ARTIFACT_DIR = "config"
COMPARED_METRICS = ("test_accuracy", "test_macro_f1")


@dataclass(frozen=True)
class Reproduction:
    version: str
    git_commit: str
    data_hash: str
    registered: dict[str, float]
    reproduced: dict[str, float]

    def largest_difference(self) -> float:
        return max(abs(self.registered[k] - self.reproduced[k]) for k in self.registered)


def restore_lineage(registry: ModelRegistry, version: str, layout: ProjectLayout) -> dict[str, str]:
    """Write the version's params.yaml, dvc.lock and data.dvc into the project; return its tags."""
    info = registry.version(version)
    with tempfile.TemporaryDirectory() as scratch:
        folder = registry.download_run_artifact(info.run_id, LINEAGE_ARTIFACT_DIR, Path(scratch))
        missing = [name for name in LINEAGE_FILES if not (folder / name).is_file()]
        if missing:
            raise VersioningError(f"{registry.model_name} v{version}: its run has no {', '.join(missing)} under "
                                  f"'{LINEAGE_ARTIFACT_DIR}/' (registered before lineage files were logged)")
        for name in LINEAGE_FILES:
            shutil.copyfile(folder / name, layout.root / name)
    return info.tags


def check_code(layout: ProjectLayout, trained_from: str) -> None:
    """The code must be the commit the version was trained from: other code is another model."""
    here = git_commit(layout.root).removesuffix("-dirty")
    wanted = trained_from.removesuffix("-dirty")
    if here != wanted:
        raise VersioningError(f"this clone is at commit {here}; the version was trained from {wanted}. "
                              f"Run `git checkout {wanted}` first")


def reproduce(registry: ModelRegistry, version: str, layout: ProjectLayout) -> Reproduction:
    tags = restore_lineage(registry, version, layout)
    check_code(layout, tags.get("git_commit", "unknown"))
    run_dvc(layout.root, "pull", "data.dvc")
    if data_hash(layout.root / "data.dvc") != tags.get("data_hash"):
        raise VersioningError(f"data.dvc of v{version}'s run does not match its data_hash tag {tags.get('data_hash')}")
    run_dvc(layout.root, "repro")
    metrics = json.loads(layout.metrics_file.read_text())
    run = registry.client.get_run(registry.version(version).run_id)
    registered = {key: float(run.data.metrics[key]) for key in COMPARED_METRICS}
    reproduced = {key: float(metrics[key.removeprefix("test_")]) for key in COMPARED_METRICS}
    return Reproduction(version, tags["git_commit"], tags["data_hash"], registered, reproduced)
