"""serve.engine: ray on a two-node Ray cluster on this machine (127.0.0.1 only): the same answers as the local
service, a prediction log that holds every replica's rows, a champion switch that reaches every replica without
a failed request, and a replica killed under load that Ray brings back. Real MLflow SQLite registry, real
onnxruntime, real HTTP. Slow (about a minute)."""

from __future__ import annotations

import os
import secrets
import signal
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from components.config import MonitorParams, ServiceSettings
from components.data.drift import DriftReport
from components.lifecycle.registry import CHAMPION
from components.monitoring.traffic import ServedModelInfo, monitor_report
from components.serving.deployment import build_service_app
from components.serving.prediction_log import read_prediction_log
from components.serving.ray_engine import haproxy_files_environment, ingress_environment
from components.serving.server import BackgroundServer
from tests.fixtures_classifier import tiny_classifier, tiny_onnx_export  # noqa: F401 - fixtures
from tests.servers import ClientThreads, free_port
from tests.test_service_lifecycle import PROBES, flipped_export, open_registry, register, wait_for  # noqa: F401

pytestmark = pytest.mark.slow

CPU = ["CPUExecutionProvider"]
KEY_ENV = "TUNEGATE_TEST_RAY_KEYS"
KEY = "ray-test-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}
SETTINGS = ServiceSettings(poll_interval_s=0.5, max_texts_per_request=8, api_key_env=KEY_ENV)
RAY_TOKEN = secrets.token_hex(16)  # one per test process: Ray reads its token once, at the first cluster's start
SWITCH_BOUND_S = 30.0  # promotion -> every replica answers with the new version
RECOVERY_BOUND_S = 90.0  # a killed replica -> Ray has started a new one


class Load(ClientThreads):
    """`clients` threads posting /predict with the API key, back to back, until stopped or max_requests each."""

    join_timeout_s = 60.0

    def __init__(self, url: str, clients: int = 2, max_requests: int = 3000) -> None:
        super().__init__(clients)
        self.url, self.max_requests = url, max_requests
        self.ok: list[tuple[float, str | None]] = []  # (time.monotonic() when answered, X-Model-Version)
        self.failed: list[tuple[float, str]] = []

    def _client(self, client: int) -> None:
        with httpx.Client(base_url=self.url, headers=HEADERS, timeout=30) as http:
            for n in range(self.max_requests):
                if self._stop.is_set():
                    return
                texts = [PROBES[(client * 7 + n + k) % len(PROBES)] for k in range(1 + n % 3)]
                try:
                    response = http.post("/predict", json={"texts": texts})
                    outcome = (response.status_code == 200, response.headers.get("x-model-version") or
                               f"status {response.status_code}: {response.text[:200]}")
                except httpx.HTTPError as error:
                    outcome = (False, f"{type(error).__name__}: {error}")
                with self._lock:
                    (self.ok if outcome[0] else self.failed).append((time.monotonic(), outcome[1]))

    def answered_since(self, since: float) -> int:
        with self._lock:
            return sum(at >= since for at, _ in self.ok)


@pytest.fixture(scope="module", params=["haproxy", "proxy"])
def two_node_ray(request):
    """A head and a worker node on 127.0.0.1, with their own temp dir, HOME and auth token, and Ray Serve's
    ingress (serve.ray_ingress): HAProxy, the default, or Ray's Python proxy; all gone after.

    The temp dir is a short one of its own, not pytest's: Ray's unix sockets live under it, and a socket path
    may not exceed 107 bytes (pytest-xdist's /tmp/pytest-of-root/pytest-N/popen-gw0/... plus Ray's session
    folders did)."""
    with tempfile.TemporaryDirectory(prefix="tg-ray-", ignore_cleanup_errors=True) as short, pytest.MonkeyPatch.context() as env:
        scratch = Path(short)
        env.setenv("HOME", str(scratch))  # Ray's ~/.ray (its token file) stays in the test's folder
        env.setenv("RAY_AUTH_MODE", "token")
        env.setenv("RAY_AUTH_TOKEN", RAY_TOKEN)
        env.setenv("RAY_USAGE_STATS_ENABLED", "0")
        env.setenv("RAY_TMPDIR", str(scratch))  # sessions, sockets, logs and ray_current_cluster: not /tmp/ray
        env.setenv(KEY_ENV, KEY)  # the replicas' service reads its API key from their environment
        env.setenv("OMP_NUM_THREADS", "1")
        env.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # else 127.0.0.1 is "resolved" to eth0's address
        # Ray's proxy prefers the replicas of its own node while they have room (sensible with a proxy per
        # node); here the one proxy must spread the requests over both nodes' replicas, as across machines.
        env.setenv("RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING", "0")
        for name, value in ingress_environment(request.param).items():
            env.setenv(name, value)
        if request.param == "haproxy":  # its config, socket and state files: in this test's folder, not /tmp's
            for name, value in haproxy_files_environment(scratch / "hap").items():
                env.setenv(name, value)
        # After the environment: Ray reads RAY_AUTH_MODE once, when first imported.
        import ray
        from ray import serve
        from ray.cluster_utils import Cluster

        node = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False}
        cluster = Cluster(initialize_head=True, head_node_args=node)
        try:
            cluster.add_node(**node)
            cluster.connect()
            yield cluster
        finally:
            try:
                if ray.is_initialized():  # else serve.shutdown() would start a Ray of its own to connect to
                    serve.shutdown()
            finally:
                ray.shutdown()
                cluster.shutdown()


@pytest.fixture(scope="module")
def registry_with_two_versions(tmp_path_factory, tiny_onnx_export, flipped_export):  # noqa: F811
    registry = open_registry(tmp_path_factory.mktemp("registry"))
    first = register(registry, tiny_onnx_export.out_dir, "trained")
    second = register(registry, flipped_export, "flipped")
    registry.client.set_registered_model_alias(registry.model_name, CHAMPION, first)
    return registry, first, second


@pytest.fixture(scope="module")
def ray_prediction_log(tmp_path_factory) -> Path:
    """The Ray replicas' shared prediction log: one partitioned folder, every request logged."""
    return tmp_path_factory.mktemp("ray-traffic") / "predictions"


@pytest.fixture(scope="module")
def ray_service(two_node_ray, registry_with_two_versions, ray_prediction_log, tmp_path_factory) -> str:
    """The champion on Ray Serve, 2 replicas of half a CPU, logging every request; its URL."""
    from components.serving.ray_engine import champion_application, run_application

    registry, _, _ = registry_with_two_versions
    settings = SETTINGS.model_copy(update={"prediction_log": ray_prediction_log, "prediction_log_sample_rate": 1.0})
    application = champion_application(registry, tmp_path_factory.mktemp("ray-cache"), CPU, settings,
                                       replicas=2, num_cpus=0.5)
    port = free_port()
    started = time.monotonic()
    run_application(application, "127.0.0.1", port, proxy_location="HeadOnly")
    print(f"Ray Serve application up in {time.monotonic() - started:.1f} s")
    return f"http://127.0.0.1:{port}"


def service_replicas() -> list[dict]:
    """The live replicas of the service deployment: pid, node, actor id (from the GCS: no dashboard here)."""
    import ray

    from components.serving.ray_engine import SERVICE_DEPLOYMENT

    actors = ray.state.actors().values()
    return [{"pid": a["Pid"], "node": a["Address"]["NodeID"], "actor": a["ActorID"]} for a in actors
            if a["State"] == "ALIVE" and a["ActorClassName"].endswith(f":{SERVICE_DEPLOYMENT}")]


def versions_seen(url: str, requests: int = 24) -> set[str]:
    with httpx.Client(base_url=url, headers=HEADERS, timeout=30) as http:
        return {http.post("/predict", json={"texts": [PROBES[0]]}).headers["x-model-version"] for _ in range(requests)}


def test_ray_replicas_answer_as_the_local_service(ray_service, registry_with_two_versions, tmp_path):
    registry, _, _ = registry_with_two_versions
    local_app = build_service_app(registry, tmp_path / "cache", CPU, SETTINGS)
    replicas = service_replicas()
    assert len(replicas) == 2 and len({r["node"] for r in replicas}) == 2, f"one replica per node: {replicas}"
    with BackgroundServer(local_app) as local, httpx.Client(headers=HEADERS, timeout=30) as http:
        for url in (local.url, ray_service):  # both answer; what they answer is compared below
            assert http.get(f"{url}/health").status_code == 200

        def both(method: str, path: str, **kwargs) -> tuple[httpx.Response, httpx.Response]:
            return (http.request(method, f"{local.url}{path}", **kwargs),
                    http.request(method, f"{ray_service}{path}", **kwargs))

        for start in range(0, len(PROBES), 8):
            mine, ray_answer = both("POST", "/predict", json={"texts": PROBES[start:start + 8]})
            assert ray_answer.status_code == 200 and ray_answer.json() == mine.json()
            assert ray_answer.headers["x-model-version"] == mine.headers["x-model-version"]
        mine, ray_answer = both("POST", "/invocations", json={"inputs": PROBES[:5]})
        assert ray_answer.json() == mine.json()
        mine, ray_answer = both("POST", "/predict", json={"texts": PROBES[:9]})  # over max_texts_per_request
        assert mine.status_code == 413
        assert (ray_answer.status_code, ray_answer.json()) == (mine.status_code, mine.json())
        no_key = httpx.post(f"{ray_service}/predict", json={"texts": ["a"]})
        assert no_key.status_code == 401
        mine, ray_answer = both("GET", "/openapi.json")
        assert ray_answer.json() == mine.json()


def test_the_prediction_log_holds_every_replicas_rows_and_monitoring_reads_them_all(ray_service, ray_prediction_log):
    marker = f"logged through ray {secrets.token_hex(4)}"
    sent = [f"{marker} {n}" for n in range(40)]
    with httpx.Client(base_url=ray_service, headers=HEADERS, timeout=30) as http:
        for text in sent:  # one text a request: Ray's proxy spreads the requests over both replicas
            assert http.post("/predict", json={"texts": [text]}).status_code == 200

    def ours():
        # What the monitoring flow's read-traffic step reads: the log's last hour, every partition in it.
        traffic = read_prediction_log(ray_prediction_log, window=timedelta(hours=1))
        return traffic[traffic["text"].str.startswith(marker)]

    wait_for(lambda: len(ours()) >= len(sent), 30, "every request's row in the log")
    logged = ours()
    assert sorted(logged["text"]) == sorted(sent)  # each exactly once
    assert logged["replica"].nunique() == 2, logged["replica"].value_counts().to_dict()
    report = monitor_report(logged, logged, DriftReport(status="ok", checks=[], reference_rows=len(sent), batch_rows=len(sent)), MonitorParams(min_scored=1),
                            task="sequence-classification", served=ServedModelInfo(model_name="tunegate-test"))
    assert report.traffic_rows == len(sent) and sum(report.traffic_replicas.values()) == len(sent)
    assert len(report.traffic_replicas) == 2 and "from " in report.summary()
    # Each replica writes files of its own (date=/hour=/<replica>.jsonl): none shares another's.
    assert set(logged["replica"]) <= {path.stem for path in ray_prediction_log.rglob("*.jsonl")}


def test_a_promotion_reaches_every_replica_without_a_failed_request(ray_service, registry_with_two_versions):
    registry, first, second = registry_with_two_versions
    old = registry.aliases()[CHAMPION]
    new = second if old == first else first
    assert versions_seen(ray_service) == {old}
    with Load(ray_service, clients=2) as load:
        wait_for(lambda: load.answered_since(0) >= 20, 30, "traffic before the switch")
        promoted_at = time.monotonic()
        registry.promote(new, by="tests", reason="ray serve switch")
        wait_for(lambda: any(v == new for _, v in load.ok), SWITCH_BOUND_S, f"a v{new} answer")
        # Every replica switched: the last answers (both replicas take a share) all name the new version.
        wait_for(lambda: all(v == new for _, v in load.ok[-20:]), SWITCH_BOUND_S, f"only v{new} answers")
        switched_in = time.monotonic() - promoted_at
        wait_for(lambda: load.answered_since(promoted_at + switched_in) >= 20, 30, "traffic after the switch")
    print(f"switch: every replica on v{new} {switched_in:.1f} s after the promotion; {len(load.ok)} answers, "
          f"{len(load.failed)} failed")
    assert load.failed == [], load.failed[:3]
    assert switched_in < SWITCH_BOUND_S
    assert versions_seen(ray_service) == {new}


def test_a_killed_replica_costs_at_most_its_requests_in_flight_and_comes_back(ray_service):
    replicas = service_replicas()
    assert len(replicas) == 2
    victim = replicas[0]
    with Load(ray_service, clients=2) as load:
        wait_for(lambda: load.answered_since(0) >= 20, 30, "traffic before the kill")
        killed_at = time.monotonic()
        os.kill(victim["pid"], signal.SIGKILL)
        # The service answers throughout, on the other replica, while Ray replaces the killed one.
        wait_for(lambda: load.answered_since(killed_at + 1.0) >= 20, 30, "answers after the kill")

        def replaced() -> bool:
            alive = service_replicas()
            return len(alive) == 2 and victim["actor"] not in {r["actor"] for r in alive}

        wait_for(replaced, RECOVERY_BOUND_S, "Ray to start a new replica")
        recovered_in = time.monotonic() - killed_at
        wait_for(lambda: load.answered_since(killed_at + recovered_in) >= 20, 30, "answers after the recovery")
    print(f"kill: replica back {recovered_in:.1f} s after SIGKILL; {len(load.ok)} answers, {len(load.failed)} failed "
          f"({load.failed[:2]})")
    assert len(load.failed) <= 2, load.failed  # 2 clients: at most 2 requests were in flight on the victim
    assert victim["pid"] not in {r["pid"] for r in service_replicas()}
