"""Deploy: fetch a registered version (by alias or number) and make it a servable model."""

from __future__ import annotations

import json
from pathlib import Path

from components.registry import CHAMPION, ModelRegistry, VersionInfo

METADATA_TAGS = ("git_commit", "data_hash", "data_batch", "base_model", "test_accuracy", "test_macro_f1",
                 "test_rows", "gate", "approval", "approval_by", "approval_how", "promoted_at", "promoted_by")


def pick_version(registry: ModelRegistry, version: str | None, alias: str = CHAMPION) -> VersionInfo:
    if version is not None:
        return registry.version(version)
    found = registry.by_alias(alias)
    if found is None:
        raise LookupError(f"model {registry.model_name!r} has no version with alias {alias!r} in "
                          f"{registry.tracking_uri}; run `tunegate run` first")
    return found


def version_metadata(registry: ModelRegistry, info: VersionInfo) -> dict:
    aliases = [alias for alias, v in registry.aliases().items() if v == info.version]
    metadata = {"model_name": info.name, "model_version": info.version, "aliases": sorted(aliases),
                "run_id": info.run_id, "tracking_uri": registry.tracking_uri}
    metadata.update({key: info.tags[key] for key in METADATA_TAGS if key in info.tags})
    if "params" in info.tags:
        metadata["params"] = json.loads(info.tags["params"])
    return metadata


def load_served_model(registry: ModelRegistry, cache_dir: Path, providers: list[str],
                      version: str | None = None, alias: str = CHAMPION):
    """Download (once per version) and load the int8 ONNX model behind `alias` or `version`."""
    from components.predictor import OnnxTextClassifier
    from components.serve import ServedModel

    info = pick_version(registry, version, alias)
    local = cache_dir / registry.model_name / info.version
    if not (local / "model.onnx").is_file():
        local.parent.mkdir(parents=True, exist_ok=True)
        downloaded = registry.download(info.version, local.parent / f".{info.version}.partial")
        downloaded.replace(local)  # atomic: a half-downloaded model is never served
    return ServedModel(OnnxTextClassifier(local, providers=providers), version_metadata(registry, info))
