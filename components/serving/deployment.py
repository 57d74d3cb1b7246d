"""Deploy: fetch a registered version (by alias or number) and make it a servable model; follow an alias
while serving (ChampionWatcher) so a promotion reaches the running service without a restart."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from components.lifecycle.registry import CHAMPION, ModelRegistry, VersionInfo
from components.redact import redact_secrets, redact_uri
from components.serving.background import StoppableThread

METADATA_TAGS = ("git_commit", "data_hash", "data_batches", "base_model", "test_accuracy", "test_macro_f1", "test_entity_f1",
                 "test_rows", "gate", "approval", "approval_by", "approval_how", "promoted_at", "promoted_by")


def pick_version(registry: ModelRegistry, version: str | None, alias: str = CHAMPION) -> VersionInfo:
    if version is not None:
        return registry.version(version)
    found = registry.by_alias(alias)
    if found is None:
        raise LookupError(f"model {registry.model_name!r} has no version with alias {alias!r} in "
                          f"{redact_uri(registry.tracking_uri)}; run `tunegate run` first")
    return found


def version_metadata(registry: ModelRegistry, info: VersionInfo) -> dict:
    aliases = [alias for alias, v in registry.aliases().items() if v == info.version]
    metadata = {"model_name": info.name, "model_version": info.version, "aliases": sorted(aliases),
                # A tracking URI may carry a login (user:password@): served without it.
                "run_id": info.run_id, "tracking_uri": redact_uri(registry.tracking_uri)}
    metadata.update({key: info.tags[key] for key in METADATA_TAGS if key in info.tags})
    for key in ("params", "data_batches"):  # stored as JSON: served as structure, not as a string
        if key in info.tags:
            metadata[key] = json.loads(info.tags[key])
    return metadata


def load_served_model(registry: ModelRegistry, cache_dir: Path, providers: list[str],
                      version: str | None = None, alias: str = CHAMPION):
    """Download (once per version) and load the ONNX model behind `alias` or `version` (int8, fp16 or
    fp32, on `providers`): a text classifier or a token tagger (NER), as its model card says."""
    from components.export.integrity import ModelIntegrityError
    from components.export.mlflow_model import onnx_dir_in
    from components.export.predictor import load_predictor
    from components.serving.holder import ServedModel

    info = pick_version(registry, version, alias)
    local = cache_dir / registry.model_name / info.version
    if not local.is_dir():
        local.parent.mkdir(parents=True, exist_ok=True)
        # Per process: replicas (Ray Serve, or several `tunegate serve`) sharing this cache may download at once.
        partial = local.parent / f".{info.version}.{os.getpid()}.partial"
        shutil.rmtree(partial, ignore_errors=True)  # left by a download that died
        try:
            registry.download(info.version, partial).replace(local)  # atomic: a half-downloaded model is never served
        except OSError:
            if not local.is_dir():
                raise
            # another process finished the same download first: its copy is the one loaded (and verified below)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    try:
        # Checked on every load, the cached copy too: the bytes that serve are the ones registered (and signed).
        verified = registry.verify_download(info, local)
    except ModelIntegrityError:
        shutil.rmtree(local, ignore_errors=True)  # a later try downloads afresh: the store may have been repaired
        raise
    # An MLflow Model (the ONNX export is its artifact) or, registered before those, the export itself.
    metadata = {**version_metadata(registry, info), "integrity": verified.as_metadata()}
    return ServedModel(load_predictor(onnx_dir_in(local), providers=providers), metadata)


# --- following the champion while serving -------------------------------------------------------

logger = logging.getLogger("tunegate.deployment")

WARMUP_TEXT = "a warm-up text, so the first real request does not pay for the model's first run"


def warm_up(served, batch_size: int = 8) -> None:
    """Run a dummy batch through a freshly loaded model: onnxruntime allocates its buffers on the first
    runs, and a model that cannot predict must fail here rather than on a client's request."""
    for size in sorted({1, batch_size}):
        predictions = served.predictor.predict([WARMUP_TEXT] * size, batch_size=size)
        if len(predictions) != size:
            raise RuntimeError(f"warm-up: {size} texts in, {len(predictions)} predictions out")


@dataclass(frozen=True)
class PollResult:
    """What one look at the registry did: unchanged, switched, failed, waiting (a version that failed
    recently is not retried yet), no-alias, registry-error."""

    outcome: str
    version: str | None
    error: str | None = None


class ChampionWatcher(StoppableThread):
    """Polls the registry every poll_interval_s and, when `alias` points at another version, loads it,
    warms it up and swaps it into `holder`. A version that fails to load leaves the old one serving; it
    is logged, counted on the holder, and retried after retry_failed_after_s (not on every poll: a
    broken artifact would otherwise be downloaded again every few seconds)."""

    def __init__(self, registry: ModelRegistry, holder, cache_dir: Path, providers: list[str], *,
                 alias: str = CHAMPION, poll_interval_s: float = 10.0, retry_failed_after_s: float = 300.0,
                 warmup_batch_size: int = 8) -> None:
        super().__init__("tunegate-champion-watcher")
        self.registry = registry
        self.holder = holder
        self.cache_dir = Path(cache_dir)
        self.providers = list(providers)
        self.alias = alias
        self.poll_interval_s = poll_interval_s
        self.retry_failed_after_s = retry_failed_after_s
        self.warmup_batch_size = warmup_batch_size
        self._failed_at: dict[str, float] = {}  # version -> time.monotonic() of its last failed load

    def load(self, version: str):
        served = load_served_model(self.registry, self.cache_dir, self.providers, version=version)
        warm_up(served, self.warmup_batch_size)
        return served

    def target_version(self) -> str | None:
        """The version `alias` points at now. Ray Serve's replicas (components/serving/ray_engine.py) ask their
        application's single watcher instead of the registry."""
        return self.registry.aliases().get(self.alias)

    def poll_once(self) -> PollResult:
        try:
            target = self.target_version()
        except Exception as error:  # noqa: BLE001 - a registry outage must not stop the serving model
            self.holder.record_registry_error(error)
            logger.warning("could not read aliases of %s: %s", self.registry.model_name, redact_secrets(str(error)))
            return PollResult("registry-error", None, redact_secrets(str(error)))
        current = self.holder.current().version
        if target is None:  # alias removed: keep serving what we have rather than nothing
            return PollResult("no-alias", current)
        if target == current:
            return PollResult("unchanged", current)
        failed_at = self._failed_at.get(target)
        if failed_at is not None and time.monotonic() - failed_at < self.retry_failed_after_s:
            return PollResult("waiting", target)
        try:
            served = self.load(target)
        except Exception as error:  # noqa: BLE001 - whatever broke, the old model keeps serving
            self._failed_at[target] = time.monotonic()
            self.holder.record_failed_load(target, error)
            reason = redact_secrets(f"{type(error).__name__}: {error}")
            logger.error("could not load %s version %s (%s); still serving version %s",
                         self.registry.model_name, target, reason, current)
            return PollResult("failed", target, reason)
        self._failed_at.pop(target, None)
        self.holder.swap(served)
        return PollResult("switched", target)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - a bug in one poll must not end hot reload for good
                logger.exception("champion watcher: poll failed")


def build_service_app(registry: ModelRegistry, cache_dir: Path, providers: list[str], settings=None, *,
                      version: str | None = None, alias: str = CHAMPION, make_watcher=ChampionWatcher,
                      replica_id: str | None = None, pii_scanner=None):
    """The app `tunegate serve` runs: `version` pinned, or else the version behind `alias`, followed
    live (a ChampionWatcher started and stopped with the app). app.state.model_holder.current() is the
    model serving now. `make_watcher`: a ChampionWatcher subclass (same arguments) that follows another source.
    `replica_id`: names this replica's shadow figures tag (default hostname-pid); several apps in one process
    need one each. `pii_scanner`: builds the scanner serve.log_pii screens logged texts with
    (prediction_log.scanner_factory); left out, privacy:'s defaults."""
    from components.config import ServiceSettings
    from components.serving.app import create_app
    from components.serving.holder import ModelHolder

    settings = settings or ServiceSettings()
    served = load_served_model(registry, cache_dir, providers, version=version, alias=alias)
    warm_up(served, min(8, settings.max_batch_size))
    holder = ModelHolder(served)
    watchers = [] if version is not None else [
        make_watcher(registry, holder, cache_dir, providers, alias=alias, poll_interval_s=settings.poll_interval_s,
                     warmup_batch_size=min(8, settings.max_batch_size))]
    shadow = None
    if settings.shadow:  # a second alias, compared with the champion off the request path
        from components.serving.shadow import ShadowRunner, ShadowWatcher

        shadow = ShadowRunner(settings.shadow, settings.shadow_sample_rate, queue_size=settings.shadow_queue_size,
                              log_path=settings.shadow_log, replica_id=replica_id)
        def load_shadowed(shadowed_version: str):
            model = load_served_model(registry, cache_dir, providers, version=shadowed_version)
            warm_up(model, min(8, settings.max_batch_size))
            return model

        watchers.append(ShadowWatcher(registry, shadow, holder, load_shadowed,
                                      poll_interval_s=settings.poll_interval_s))
    return create_app(holder, settings, background=watchers, shadow=shadow, pii_scanner=pii_scanner)
