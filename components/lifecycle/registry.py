"""Register: the MLflow tracking store and model registry, and the aliases that say what is live.

`challenger` marks the newest version that passed its gates; `champion` the version being served;
`previous_champion` the one `champion` replaced, kept for rollback. Every promotion, approval and
gate result is a tag on the version, so the registry alone can say why a model is serving.

When the MLflow server checks logins (basic-auth), promote and rollback first check that this
client's own user may make the change (registry_auth), so a refused caller changes nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from components.export.integrity import Registered, TrustPolicy, Verification, verify_model_dir
from components.lifecycle.aliases import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION  # noqa: F401 (re-exported)
from components.lifecycle.registry_auth import (
    EDIT,
    MANAGE,
    Identity,
    artifact_reads_explained,
    authenticated_user,
    refusals_explained,
    require_permission,
    resolve_actor,
)
from components.redact import redact_uri

MODEL_ARTIFACT_PATH = "model"
HISTORY_TAG_PREFIX = "champion_history."


def resolve_tracking_uri(configured: str | None, mlflow_dir: Path) -> str:
    """params' registry.tracking_uri, else MLFLOW_TRACKING_URI, else a SQLite file in the project."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{mlflow_dir.resolve()}/mlflow.db"


def tag_value(value) -> str:
    # MLflow tag values are strings of at most 8000 characters.
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text[:7990]


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: str
    tags: dict[str, str]
    run_id: str | None
    source: str


class ModelRegistry:
    def __init__(self, tracking_uri: str, model_name: str, artifact_root: Path | None = None,
                 trust: TrustPolicy | None = None):
        """trust: how a version's files and signature are judged before it is loaded or promoted (from params'
        registry section, components/lifecycle/signing.py); None checks each file against the manifest
        and loads an unsigned version with a warning."""
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.artifact_root = artifact_root
        self.trust = trust or TrustPolicy()
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._identity: Identity | None = None
        self._identity_known = False  # the server is asked once, on first need

    @property
    def display_uri(self) -> str:
        """The tracking URI without a login in it: the form to show a client or write to a log."""
        return redact_uri(self.tracking_uri) or ""

    # --- who acts -----------------------------------------------------------------------------
    def identity(self) -> Identity | None:
        """The MLflow user this client's credentials log in as; None when the store checks no logins."""
        if not self._identity_known:
            self._identity, self._identity_known = authenticated_user(self.tracking_uri), True
        return self._identity

    def actor(self, claimed: str | None = None) -> str:
        """The name to record for a change made through this client (see registry_auth.resolve_actor)."""
        return resolve_actor(claimed, self.identity())

    def require(self, needed: str, action: str) -> None:
        """Refuse, before any write, a change this client's MLflow user may not make (no-op without auth)."""
        identity = self.identity()
        if identity is not None:
            require_permission(self.tracking_uri, identity, self.model_name, needed, action)

    def refusals_explained(self, action: str):
        return refusals_explained(self.tracking_uri, self.identity(), self.model_name, action)

    # --- runs ---------------------------------------------------------------------------------
    def experiment_id(self, name: str) -> str:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        location = self.artifact_root.resolve().as_uri() if self.artifact_root else None
        return self.client.create_experiment(name, artifact_location=location)

    def start_run(self, experiment: str, run_name: str, tags: dict[str, str]) -> str:
        run = self.client.create_run(self.experiment_id(experiment), run_name=run_name,
                                     tags={k: tag_value(v) for k, v in tags.items()})
        return run.info.run_id

    def end_run(self, run_id: str, failed: bool = False) -> None:
        self.client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        timestamp = int(time.time() * 1000)
        from mlflow.entities import Metric

        batch = [Metric(key, float(value), timestamp, step) for key, value in metrics.items()]
        self.client.log_batch(run_id, metrics=batch)

    def log_params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        self.client.log_batch(run_id, params=[Param(k, tag_value(v)[:6000]) for k, v in params.items()])

    def set_run_tags(self, run_id: str, tags: dict) -> None:
        for key, value in tags.items():
            self.client.set_tag(run_id, key, tag_value(value))

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        if path.is_dir():
            self.client.log_artifacts(run_id, str(path), artifact_path)
        elif path.is_file():
            self.client.log_artifact(run_id, str(path), artifact_path)

    def log_json(self, run_id: str, payload: dict, file_name: str) -> None:
        self.client.log_dict(run_id, payload, file_name)

    # --- versions -----------------------------------------------------------------------------
    def register(self, run_id: str, model_dir: Path, tags: dict) -> VersionInfo:
        """Upload the servable model directory to the run and register it as a new version."""
        from mlflow.exceptions import MlflowException

        self.client.log_artifacts(run_id, str(model_dir), MODEL_ARTIFACT_PATH)
        try:
            self.client.get_registered_model(self.model_name)
        except MlflowException:
            self.client.create_registered_model(self.model_name, description="Managed by tunegate")
        source = f"{self.client.get_run(run_id).info.artifact_uri}/{MODEL_ARTIFACT_PATH}"
        created = self.client.create_model_version(
            self.model_name, source=source, run_id=run_id, tags={k: tag_value(v) for k, v in tags.items()}
        )
        return self.version(created.version)

    def download_run_artifact(self, run_id: str, artifact_path: str, destination: Path) -> Path:
        import mlflow

        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path,
                                                   dst_path=str(destination), tracking_uri=self.tracking_uri)
        return Path(path)

    def version(self, version: str) -> VersionInfo:
        found = self.client.get_model_version(self.model_name, str(version))
        return VersionInfo(self.model_name, str(found.version), dict(found.tags), found.run_id, found.source)

    def find_versions(self, **tags: str) -> list[VersionInfo]:
        """Versions whose tags have these values, newest first."""
        clauses = [f"name = '{self.model_name}'"] + [f"tag.{key} = '{value}'" for key, value in tags.items()]
        found = self.client.search_model_versions(" AND ".join(clauses))
        return [self.version(v.version) for v in sorted(found, key=lambda v: int(v.version), reverse=True)]

    def tag_version(self, version: str, tags: dict) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(self.model_name, str(version), key, tag_value(value))

    def aliases(self) -> dict[str, str]:
        from mlflow.exceptions import MlflowException

        try:
            # search_model_versions() returns empty aliases; the registered model has them.
            return {alias: str(v) for alias, v in self.client.get_registered_model(self.model_name).aliases.items()}
        except MlflowException:
            return {}

    def by_alias(self, alias: str) -> VersionInfo | None:
        version = self.aliases().get(alias)
        return self.version(version) if version else None

    def set_alias(self, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(self.model_name, alias, str(version))

    def promote(self, version: str, by: str, reason: str, action: str = "promote",
                verified: Verification | None = None) -> VersionInfo | None:
        """Move `champion` to `version`, keeping the one it replaces as `previous_champion`. `verified`: the
        caller's own check of the version (it checked before writing tags of its own), else it is checked here."""
        self.require(EDIT, f"make v{version} champion")
        if verified is None:
            self.verify(str(version))  # a version whose files are not the ones registered never becomes champion
        previous = self.by_alias(CHAMPION)
        with self.refusals_explained(f"make v{version} champion"):
            if previous is not None and previous.version != str(version):
                self.set_alias(PREVIOUS_CHAMPION, previous.version)
            self.set_alias(CHAMPION, version)
            self._record_event(action, str(version), previous.version if previous else None, by, reason)
        return previous

    def rollback(self, by: str, reason: str) -> tuple[str, str]:
        """Put `previous_champion` back as champion; returns (from_version, to_version)."""
        current, target = self.by_alias(CHAMPION), self.by_alias(PREVIOUS_CHAMPION)
        if current is None or target is None:
            raise LookupError(f"model {self.model_name!r} has no previous champion to roll back to")
        # The new previous_champion is whatever the target itself replaced, so a second rollback
        # walks further back instead of flip-flopping between two versions.
        replaced = next((e["previous"] for e in reversed(self.history()) if e["version"] == target.version), None)
        keeps_previous = bool(replaced and replaced != target.version)
        # Deleting an alias is a delete on the model: MLflow asks MANAGE for it, EDIT for moving one.
        action = f"roll back from v{current.version} to v{target.version}"
        self.require(EDIT if keeps_previous else MANAGE, action)
        self.verify(target.version)
        with self.refusals_explained(action):
            self.set_alias(CHAMPION, target.version)
            if keeps_previous:
                self.set_alias(PREVIOUS_CHAMPION, replaced)
            else:
                self.client.delete_registered_model_alias(self.model_name, PREVIOUS_CHAMPION)
            self._record_event("rollback", target.version, current.version, by, reason)
        return current.version, target.version

    def _record_event(self, action: str, version: str, previous: str | None, by: str, reason: str) -> None:
        at = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
        event = {"action": action, "version": version, "previous": previous, "by": by, "reason": reason, "at": stamp}
        self._record_history(event, at)
        self.tag_version(version, {"promoted_at": stamp, "promoted_by": by, "promotion_reason": reason,
                                   "promotion_action": action})

    def _record_history(self, event: dict, at: float) -> None:
        # One tag per event on the registered model: the history survives any process and needs
        # no store besides the registry. Millisecond keys keep events ordered.
        self.client.set_registered_model_tag(self.model_name, f"{HISTORY_TAG_PREFIX}{int(at * 1000):015d}",
                                             tag_value(event))

    def record_removal(self, event: dict, at: float) -> bool:
        """Add a data removal (`tunegate forget`, action 'forget', version None) to the history; False when the
        model has no registered version yet (then no version was trained on the removed rows)."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(self.model_name)
        except MlflowException:
            return False
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
        self._record_history({**event, "at": stamp}, at)
        return True

    def history(self) -> list[dict]:
        """Every promotion and rollback, and every data removal (action 'forget', version None: it names the
        versions trained on the removed rows under 'versions'), oldest first."""
        from mlflow.exceptions import MlflowException

        try:
            tags = self.client.get_registered_model(self.model_name).tags
        except MlflowException:
            return []
        return [json.loads(tags[key]) for key in sorted(k for k in tags if k.startswith(HISTORY_TAG_PREFIX))]

    def verify_download(self, info: VersionInfo, model_dir: Path) -> Verification:
        """Check a downloaded version's files (and signature) against what was registered; raises
        ModelIntegrityError naming the file and both hashes."""
        return verify_model_dir(model_dir, self.trust, Registered.from_tags(info.tags),
                                name=f"{self.model_name} v{info.version}")

    def verify(self, version: str, action: str = "become champion") -> Verification:
        """Download a version into a scratch folder and check it (promotion and rollback do, before moving an alias)."""
        info = self.version(version)
        with tempfile.TemporaryDirectory(prefix=f"tunegate-verify-v{version}-") as scratch:
            with artifact_reads_explained(self.identity(), self.model_name, info.version, info.run_id, action):
                local = self.download(info.version, Path(scratch))
            return self.verify_download(info, local)

    def download(self, version: str, destination: Path | None = None) -> Path:
        import mlflow

        target = destination or Path(tempfile.mkdtemp(prefix=f"{self.model_name}-v{version}-"))
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=self.version(version).source, dst_path=str(target), tracking_uri=self.tracking_uri
        )
        return Path(path)
