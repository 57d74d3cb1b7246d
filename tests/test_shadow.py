"""The shadow challenger (serve.shadow): compared with the champion after each sampled answer, off the
request path; its figures on Prometheus, /metadata and the challenger's registry tags; the gate's shadow
requirement in `tunegate promote`, `tunegate approve`, the retraining flow and the approval form."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest

from components.config import GateParams, ServiceSettings
from components.export.predictor import OnnxTextClassifier
from components.lifecycle.gate import shadow_check, shadow_figures
from components.lifecycle.registry import CHALLENGER, CHAMPION, ModelRegistry
from components.serving.app import create_app
from components.serving.deployment import build_service_app
from components.serving.holder import ModelHolder, ServedModel
from components.serving.server import BackgroundServer
from components.serving.shadow import ShadowRunner, ShadowStats, agrees, read_disagreements
from tests.fixtures_classifier import held_out, tiny_classifier, tiny_onnx_export  # noqa: F401 - fixtures

CPU = ["CPUExecutionProvider"]
TEXTS, _ = held_out(24, seed=5)


class Flipped:
    """The champion's predictor with the other label: a challenger that disagrees on every text."""

    def __init__(self, inner) -> None:
        self.inner, self.labels = inner, inner.labels

    def predict(self, texts: list[str], batch_size: int = 64) -> list[dict]:
        answers = self.inner.predict(texts, batch_size)
        return [{**a, "label": next(label for label in self.labels if label != a["label"])} for a in answers]


class Broken:
    labels = ("negative", "positive")

    def predict(self, texts: list[str], batch_size: int = 64) -> list[dict]:
        raise RuntimeError("the challenger is broken")


class Blocking:
    """A challenger stuck until released: the shadow queue fills behind it."""

    def __init__(self, inner) -> None:
        self.inner, self.labels, self.release = inner, inner.labels, threading.Event()

    def predict(self, texts: list[str], batch_size: int = 64) -> list[dict]:
        self.release.wait(30)
        return self.inner.predict(texts, batch_size)


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """An MLflow database with its tables made: each test copies it rather than migrate one of its own
    (seconds each on a busy machine)."""
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    ModelRegistry(f"sqlite:///{path}", "tiny-sentiment").aliases()
    return path


def open_registry(tmp_path: Path, empty_store: Path) -> ModelRegistry:
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    return ModelRegistry(f"sqlite:///{tmp_path}/mlflow.db", "tiny-sentiment", artifact_root=tmp_path / "mlartifacts")


def register(registry: ModelRegistry, model_dir: Path) -> str:
    run_id = registry.start_run("tunegate-tests", "shadow", tags={})
    version = registry.register(run_id, model_dir, tags={"gate": "passed"}).version
    registry.end_run(run_id)
    return version


def served(predictor, version: str) -> ServedModel:
    return ServedModel(predictor, {"model_name": "tiny-sentiment", "model_version": version})


def summary_of(tags: dict[str, str]) -> tuple[str | None, ...]:
    return tags.get("shadow_agreed"), tags.get("shadow_agreement"), tags.get("shadow_champion")


def post_each(url: str, texts: list[str]) -> list[httpx.Response]:
    with httpx.Client(base_url=url, timeout=30) as http:
        return [http.post("/predict", json={"texts": [text]}) for text in texts]


def test_agreement_is_the_label_or_the_entity_set():
    assert agrees({"label": "a", "score": 0.9}, {"label": "a", "score": 0.6})
    assert not agrees({"label": "a"}, {"label": "b"})
    one = {"type": "PER", "start": 0, "end": 4, "score": 0.9}
    other = {"type": "LOC", "start": 9, "end": 15, "score": 0.8}
    assert agrees({"entities": [one, other]}, {"entities": [{**other, "score": 0.1}, one]})  # order and score aside
    assert not agrees({"entities": [one]}, {"entities": [one, other]})
    assert not agrees({"entities": [one]}, {"entities": [{**one, "end": 5}]})  # offsets count
    assert not agrees({"entities": [one]}, {"entities": [{**one, "type": "ORG"}]})
    assert agrees({"entities": []}, {"entities": []})


def test_the_service_shadows_the_challenger_alias_and_writes_its_figures_on_the_version(tmp_path, tiny_onnx_export,
                                                                                       empty_store):
    registry = open_registry(tmp_path, empty_store)
    champion = register(registry, tiny_onnx_export.out_dir)
    challenger = register(registry, tiny_onnx_export.out_dir)  # the same files: agrees on every text
    registry.set_alias(CHAMPION, champion)
    registry.set_alias(CHALLENGER, challenger)
    settings = ServiceSettings(shadow="challenger", shadow_sample_rate=1.0, poll_interval_s=0.1,
                               shadow_log=tmp_path / "disagreements.jsonl")
    app = build_service_app(registry, tmp_path / "serving", CPU, settings)
    runner: ShadowRunner = app.state.shadow
    with BackgroundServer(app) as server:
        wait_for(lambda: httpx.get(f"{server.url}/metadata").json()["shadow"]["version"] == challenger, 30,
                 "the challenger to load")
        answers = post_each(server.url, TEXTS[:10])
        assert [a.status_code for a in answers] == [200] * 10
        assert {a.json()["model_version"] for a in answers} == {champion}  # the client only ever sees the champion
        wait_for(lambda: runner.stats().requests == 10, 20, "10 shadowed texts")
        wanted = ("10", "1.000000", champion)
        wait_for(lambda: summary_of(registry.version(challenger).tags) == wanted, 20, "the tags")
        assert shadow_figures(registry.version(challenger).tags)["requests"] == 10
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'tunegate_shadow_requests_total{outcome="agree"} 10.0' in metrics
        assert 'tunegate_shadow_requests_total{outcome="disagree"} 0.0' in metrics
        assert "tunegate_shadow_agreement 1.0" in metrics
        shown = httpx.get(f"{server.url}/metadata").json()["shadow"]
        assert (shown["requests"], shown["agreement"]) == (10, 1.0)

        # Promoted (challenger == champion): nothing to shadow, and nothing is.
        registry.set_alias(CHALLENGER, champion)
        wait_for(lambda: runner.current() is None, 20, "the shadow to stop")
        assert "champion's own version" in httpx.get(f"{server.url}/metadata").json()["shadow"]["note"]
        post_each(server.url, TEXTS[:3])
        registry.client.delete_registered_model_alias(registry.model_name, CHALLENGER)
        wait_for(lambda: "no version has alias" in httpx.get(f"{server.url}/metadata").json()["shadow"]["note"],
                 20, "the alias' removal")
        time.sleep(0.2)
        assert runner.totals()["agree"] == 10
    assert read_disagreements(tmp_path / "disagreements.jsonl") == []


def test_disagreements_and_errors_are_counted_logged_and_never_seen_by_the_client(tmp_path, tiny_onnx_export):
    predictor = OnnxTextClassifier(tiny_onnx_export.out_dir)
    log = tmp_path / "disagreements.jsonl"
    runner = ShadowRunner("challenger", 1.0, log_path=log)
    runner.set_model(served(Flipped(predictor), "2"))
    app = create_app(ModelHolder(served(predictor, "1")), ServiceSettings(), shadow=runner)
    with BackgroundServer(app) as server:
        answers = post_each(server.url, TEXTS[:6])
        wait_for(lambda: runner.stats().requests == 6, 20, "6 shadowed texts")
        assert runner.stats().disagreed == 6 and runner.stats().agreement == 0.0
        runner.set_model(served(Broken(), "3"))
        broken = post_each(server.url, TEXTS[6:10])
        wait_for(lambda: runner.stats().errors == 4, 20, "4 shadow errors")
        metrics = httpx.get(f"{server.url}/metrics").text
    assert [a.status_code for a in answers + broken] == [200] * 10
    assert all(a.json()["model_version"] == "1" for a in answers + broken)
    assert 'tunegate_shadow_requests_total{outcome="disagree"} 6.0' in metrics
    assert 'tunegate_shadow_requests_total{outcome="error"} 4.0' in metrics
    logged = read_disagreements(log, "2", last=100)
    assert [r["text"] for r in logged] == TEXTS[:6]
    for record, answer in zip(logged, answers):
        assert record["champion"]["label"] == answer.json()["predictions"][0]["label"] != record["challenger"]["label"]


def test_a_full_shadow_queue_drops_samples_without_slowing_the_answer(tmp_path, tiny_onnx_export):
    predictor = OnnxTextClassifier(tiny_onnx_export.out_dir)
    stuck = Blocking(predictor)
    runner = ShadowRunner("challenger", 1.0, queue_size=2)
    runner.set_model(served(stuck, "2"))
    app = create_app(ModelHolder(served(predictor, "1")), ServiceSettings(), shadow=runner)
    try:
        with BackgroundServer(app) as server:
            post_each(server.url, TEXTS[:1])  # warm the HTTP path; its sample is what blocks the worker
            wait_for(lambda: runner.queued == 0, 10, "the worker to take the first sample")
            started = time.monotonic()
            answers = post_each(server.url, TEXTS[1:13])
            elapsed = time.monotonic() - started
            assert [a.status_code for a in answers] == [200] * 12
            assert elapsed < 5, f"12 answers took {elapsed:.1f} s behind a stuck shadow"  # it waits up to 30 s
            assert runner.stats().dropped == 10  # 2 queued behind the stuck one, the other 10 dropped
            assert 'tunegate_shadow_requests_total{outcome="dropped"} 10.0' in httpx.get(f"{server.url}/metrics").text
            stuck.release.set()
            wait_for(lambda: runner.stats().requests == 3, 20, "the queued samples")
    finally:
        stuck.release.set()


def tags_for(requests: int, agreed: int) -> dict[str, str]:
    return ShadowStats("0", agreed, requests - agreed).as_tags("1")


def test_the_shadow_check_needs_enough_requests_and_agreement():
    gate = GateParams(min_shadow_agreement=0.9, min_shadow_requests=10)
    assert shadow_check({}, GateParams()) is None  # not required unless set
    few = shadow_check(tags_for(5, 5), gate)
    assert not few.passed and "only 5 of the 10" in few.detail
    low = shadow_check(tags_for(20, 15), gate)
    assert not low.passed and low.value == 0.75
    assert shadow_check(tags_for(20, 19), gate).passed


@pytest.fixture
def project(tmp_path, tiny_base_model, empty_store) -> Path:
    from tests.project import tiny_params, write_params

    root = tmp_path / "project"
    (root / "mlflow").mkdir(parents=True)
    shutil.copy(empty_store, root / "mlflow" / "mlflow.db")  # where the project's registry lives by default
    write_params(root, tiny_params(tiny_base_model, gate={"min_shadow_agreement": 0.9, "min_shadow_requests": 10},
                                   serve={"shadow": "challenger"}))
    return root


def project_registry(root: Path) -> ModelRegistry:
    from components.config import load_params
    from components.layout import ProjectLayout
    from components.lifecycle.tracking import open_registry as open_project_registry

    layout = ProjectLayout(root)
    return open_project_registry(load_params(layout.params_file), layout)


def test_promote_is_refused_until_the_shadow_requirement_holds(project, tmp_path, capsys):
    from tunegate.cli import main

    registry = project_registry(project)
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.txt").write_text("not loaded by promote")
    old, new = register(registry, model), register(registry, model)
    registry.set_alias(CHAMPION, old)
    registry.set_alias(CHALLENGER, new)
    run = ["--project", str(project)]

    registry.tag_version(new, tags_for(5, 5))
    assert main([*run, "promote", new]) == 2
    assert "only 5 of the 10" in capsys.readouterr().err
    registry.tag_version(new, tags_for(40, 30))
    assert main([*run, "promote", new]) == 2
    assert "0.7500" in capsys.readouterr().err
    assert main([*run, "shadow-report"]) == 1
    report = capsys.readouterr().out
    assert f"v{new} shadowed 40 live requests" in report and "agreement 0.7500" in report and "NOT met" in report
    assert registry.aliases()[CHAMPION] == old

    # approve is refused too: an approval promotes at once, and the version keeps waiting.
    registry.tag_version(new, {"approval": "pending"})
    assert main([*run, "approve"]) == 2
    assert "keeps waiting" in capsys.readouterr().err
    assert registry.version(new).tags["approval"] == "pending"

    registry.tag_version(new, tags_for(40, 38))
    assert main([*run, "shadow-report", "--version", new]) == 0
    assert "met:" in capsys.readouterr().out
    assert main([*run, "promote", new]) == 0
    assert registry.aliases()[CHAMPION] == new


def test_promote_force_with_a_reason_overrides_the_shadow_requirement(project, tmp_path):
    from tunegate.cli import main

    registry = project_registry(project)
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.txt").write_text("x")
    version = register(registry, model)
    registry.tag_version(version, tags_for(3, 1))
    assert main(["--project", str(project), "promote", version, "--force"]) == 2  # --force needs --reason
    assert main(["--project", str(project), "promote", version, "--force", "--reason", "hotfix"]) == 0
    assert registry.aliases()[CHAMPION] == version
    assert registry.version(version).tags["forced_promotion"] == "hotfix"


def test_the_flow_records_the_approval_but_does_not_promote_without_the_shadow_figures(project, tmp_path):
    from components.config import load_params
    from components.lifecycle.tracking import approval_description
    from components.serving.shadow_report import shadow_summary
    from flows.approval import Approval
    from flows.retrain import _awaiting_shadow

    registry = project_registry(project)
    params = load_params(project / "params.yaml")
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.txt").write_text("x")
    version = register(registry, model)
    registry.tag_version(version, tags_for(4, 4))
    approval = Approval(True, by="alice", comment="looks good", how="person")
    why = _awaiting_shadow(params, registry, version, approval)
    assert why is not None and f"tunegate promote {version}" in why
    tags = registry.version(version).tags
    assert (tags["approval"], tags["approval_by"], tags["shadow_gate"]) == ("approved", "alice", "waiting")
    assert CHAMPION not in registry.aliases()
    registry.tag_version(version, tags_for(50, 48))
    assert _awaiting_shadow(params, registry, version, approval) is None

    verdict = {"challenger_metrics": {"accuracy": 0.9, "macro_f1": 0.9, "n": 100}, "summary": "gate passed"}
    text = approval_description("tiny-sentiment", version, verdict,
                                shadow=shadow_summary(version, registry.version(version).tags, params.gate))
    assert "gate passed" in text and "shadowed 50 live requests (vs champion v1): agreement 0.9600" in text
    assert "requirement met" in text and f"tunegate shadow-report --version {version}" in text


# --- several replicas ------------------------------------------------------------------------------

def test_the_figures_are_every_replicas_summed_with_the_old_single_tag():
    one, other = ShadowStats("2", 8, 2, errors=1), ShadowStats("2", 5, 0, dropped=3)
    tags = {**one.as_tags("1", replica_id="host-a-11"), **other.as_tags("1", replica_id="host/b 12"),
            **ShadowStats("2", 4, 1).as_tags("1"),  # the single `shadow` tag a service wrote before replica ids
            "shadow.broken": "not json", "shadow_requests": "999"}  # neither figures: ignored
    assert set(tags) >= {"shadow.host-a-11", "shadow.host-b-12", "shadow"}
    assert shadow_figures(tags) == {"requests": 20, "agreed": 17, "errors": 1, "dropped": 3}
    assert ShadowStats.of_replica("2", tags, "host-a-11") == one
    assert ShadowStats.of_replica("2", tags, "host-c-13") == ShadowStats("2")
    assert ShadowRunner("challenger", 0.5).replica_id.endswith(f"-{os.getpid()}")  # hostname-pid by default
    with pytest.raises(ValueError):
        ShadowRunner("challenger", 0.5, replica_id="..")


def test_two_replicas_shadowing_one_challenger_add_up_rather_than_overwrite(tmp_path, tiny_onnx_export, empty_store):
    from components.serving.shadow_report import shadow_summary

    registry = open_registry(tmp_path, empty_store)
    champion = register(registry, tiny_onnx_export.out_dir)
    challenger = register(registry, tiny_onnx_export.out_dir)  # the same files: agrees on every text
    registry.set_alias(CHAMPION, champion)
    registry.set_alias(CHALLENGER, challenger)
    settings = ServiceSettings(shadow="challenger", shadow_sample_rate=1.0, poll_interval_s=0.1)
    replicas = [build_service_app(registry, tmp_path / f"serving-{name}", CPU, settings, replica_id=name)
                for name in ("replica-a", "replica-b")]
    sent = {"replica-a": 10, "replica-b": 7}
    with BackgroundServer(replicas[0]) as first, BackgroundServer(replicas[1]) as second:
        for server in (first, second):
            wait_for(lambda: httpx.get(f"{server.url}/metadata").json()["shadow"]["version"] == challenger, 30,
                     "the challenger to load")
        answers = post_each(first.url, TEXTS[:10]) + post_each(second.url, TEXTS[:7])
        assert [a.status_code for a in answers] == [200] * 17
        for app, (name, count) in zip(replicas, sent.items()):
            wait_for(lambda: app.state.shadow.stats().requests == count, 20, f"{count} texts shadowed by {name}")
        wait_for(lambda: registry.version(challenger).tags.get("shadow_requests") == "17", 20, "the summed summary")
    tags = registry.version(challenger).tags  # after both stopped: each wrote its last figures
    assert shadow_figures(tags) == {"requests": 17, "agreed": 17, "errors": 0, "dropped": 0}
    for name, count in sent.items():
        assert ShadowStats.of_replica(challenger, tags, name).requests == count
    assert "shadow" not in tags  # the single tag is only read now, never written
    gate = GateParams(min_shadow_agreement=0.9, min_shadow_requests=15)
    assert shadow_check(tags, gate).passed  # 17 requests: neither replica alone has the 15 required
    assert f"v{challenger} shadowed 17 live requests" in shadow_summary(challenger, tags, gate)
    assert (tags["shadow_requests"], tags["shadow_agreement"]) == ("17", "1.000000")  # the summary, for people
