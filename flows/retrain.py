"""The retraining flow: the production path from new data to a served champion.

ingest -> validate -> preprocess -> train -> evaluate -> export (DVC stages, cached by DVC)
-> gate -> register -> approve -> deploy (registry state, recorded in MLflow).

A failure anywhere before `deploy` leaves the registry's champion exactly as it was.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger, runtime, task
from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE

from components.config import EvaluateParams, Params, RegistryParams, load_params
from components.export.scoring import score_onnx_dir
from components.layout import ProjectLayout
from components.lifecycle import tracking
from components.lifecycle.locking import RunInProgress, exclusive_run
from components.lifecycle.registry import CHALLENGER, CHAMPION
from components.lifecycle.tracking import RunOutcome
from components.stages import STAGE_NAMES
from flows.approval import (
    PENDING,
    RETRAIN_FLOW_NAME,
    Approval,
    apply_decision,
    auto_approval,
    wait_for_approval,
)
from flows.team_lock import model_lock

# The DVC stages in order, in groups: one `dvc repro` per group, since each call costs about a second of
# DVC start-up. validate (its report), train (the sweep before it) and distill (forced when its unlabelled
# file changed) stand alone because the flow acts around them, and so does preprocess. The stage names and
# their order come from components/stages.py.
RUN_ALONE = frozenset({"validate", "preprocess", "distill", "train"})


def stage_groups(names: tuple[str, ...], alone: frozenset[str]) -> tuple[tuple[str, ...], ...]:
    """`names` in order, cut into groups: each stage of `alone` a group of its own, the stages between them together."""
    groups: list[tuple[str, ...]] = []
    pending: list[str] = []
    for name in names:
        if name in alone:
            groups += [tuple(pending)] if pending else []
            groups.append((name,))
            pending = []
        else:
            pending.append(name)
    return tuple(groups + ([tuple(pending)] if pending else []))


ML_STAGES = stage_groups(STAGE_NAMES, RUN_ALONE)
ONNX_OUT = "artifacts/onnx"


def transient_only(task, task_run, state) -> bool:
    """Retry what may pass on a second try (a locked store, a network hiccup), never bad data."""
    from components.config import ConfigError
    from components.data.ingest import DriftFailure
    from components.data.readers import IngestError
    from components.data.validation.report import DataValidationError
    from components.export.integrity import ModelIntegrityError

    try:
        state.result()
    except (ConfigError, IngestError, DataValidationError, DriftFailure, FileNotFoundError, ModelIntegrityError):
        return False
    except Exception:
        return True
    return False


RETRY = {"retries": 2, "retry_delay_seconds": [2, 10], "retry_condition_fn": transient_only}


@task(name="check-config", cache_policy=NO_CACHE)
def check_config(params: Params, layout: ProjectLayout) -> str:
    """Fail in seconds, not after an hour of training, on settings that cannot work."""
    from components.lifecycle.signing import require_signing_key, trust_policy
    from components.model.modeling import resolve_model_source

    if not (layout.root / ".dvc").is_dir():
        raise RuntimeError(f"{layout.root} is not a DVC project: run `git init && dvc init` there first")
    trust_policy(params.registry, layout.root)  # a missing public key file
    require_signing_key(params.registry)  # registry.require_signature without the private key to sign with
    if params.sweep.enabled:
        from components.model.sweep import check_trials

        check_trials(params)  # every trial's values valid before the first one trains
    return resolve_model_source(params.model.base_model)


@task(name="ingest", cache_policy=NO_CACHE, **RETRY)
def ingest_data(params: Params, layout: ProjectLayout) -> dict:
    """Bring data/ in line with data.source (a no-op when unchanged) and version it with DVC."""
    from components.data.ingest import (
        DataStore,
        describe,
        ingest_batch,
        read_configured_source,
    )
    from components.lifecycle.versioning import git_commit, version_data
    from components.privacy.configured import scanner_for
    from components.data.pii_screening import pii_totals

    store = DataStore(layout.data_dir)
    result = ingest_batch(read_configured_source(params.data, layout.root, task=params.task), params.data, store,
                          base=True, task=params.task, pii_scanner=scanner_for(params, layout.root))
    data_hash = version_data(layout.root, layout.data_dir)
    commit = git_commit(layout.root)  # once: the code this run started from, whatever is committed meanwhile
    get_run_logger().info("%s; data version %s", describe(result), data_hash)
    return {"data_hash": data_hash, "git_commit": commit, "rows": result.dataset_rows, "label_counts": result.label_counts,
            "batches": [b.batch_id for b in store.batches()], "quarantined": store.quarantined_rows(),
            "source": params.data.source, "pii": pii_totals(store.batches(), params.data.pii)}


# Where a person reads why a stage stopped, beyond what the stage printed.
STAGE_REPORTS = {"validate": "artifacts/validation/report.json; Data Docs: artifacts/validation/docs/index.html"}


@task(name="dvc-pipeline", cache_policy=NO_CACHE)
def run_dvc_pipeline(layout: ProjectLayout, stages: tuple[str, ...], force: bool = False) -> None:
    """`dvc repro` of these ML stages, with DVC's cache (not `tunegate reproduce`, which rebuilds a registered
    version from its lineage)."""
    from components.lifecycle.versioning import VersioningError, run_dvc

    try:
        # --single-item: the flow runs the stages in order itself; without it every call would also
        # re-check (and re-run the always-changed `start` stage of) everything upstream.
        # A no-op when deps and params are unchanged; `force`: inputs DVC cannot see changed.
        run_dvc(layout.root, "repro", "--single-item", *(["--force"] if force else []), *stages)
    except VersioningError:
        reports = "".join(f"; report: {STAGE_REPORTS[stage]}" for stage in stages if stage in STAGE_REPORTS)
        which = f"stage {stages[0]!r}" if len(stages) == 1 else f"one of the stages {', '.join(stages)}"
        raise VersioningError(f"{which} stopped: its reason is printed above{reports}. Nothing was "
                              "registered and the champion still serves.") from None


@task(name="score-int8", cache_policy=TASK_SOURCE + INPUTS, persist_result=True, result_serializer="json")
def score_registered_version(tracking_uri: str, model_name: str, version: str, rows_md5: str,
                             rows_csv: Path, labels: list[str], slices: EvaluateParams | None = None) -> dict:
    """Re-score a registered model on labelled rows; cached per (version, content of the rows, slices).
    slices: params.evaluate, for the champion's figures on the same slice rows as the challenger's. The scores
    hold per-row outcomes, for the gate's paired comparison with the challenger on the same rows (a result
    cached before they were recorded has none: the gate then judges by the point rule and says so)."""
    import tempfile

    from components.export.mlflow_model import onnx_dir_in
    from components.lifecycle.registry import ModelRegistry

    registry = ModelRegistry(tracking_uri, model_name)
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = registry.download(version, Path(scratch))
        # Its files against its manifest before onnxruntime reads them (the signature rule is serving's and
        # promotion's: an unsigned champion is still scored here, never a tampered one).
        registry.verify_download(registry.version(version), model_dir)
        return score_onnx_dir(onnx_dir_in(model_dir), rows_csv, labels, slices)


def earlier_test_rows(layout: ProjectLayout, champion_batches: list[str]) -> tuple[Path, str] | None:
    """The test rows of the batches the champion was trained on, written beside the test split, and
    their md5; None when they are all of today's test rows (vs_champion already covers them)."""
    import hashlib

    test = layout.read_split("test")
    earlier = test[test["batch_id"].isin(champion_batches)] if "batch_id" in test else test
    if earlier.empty or len(earlier) == len(test):
        return None
    path = layout.eval_dir / "earlier_test_rows.csv"
    earlier.to_csv(path, index=False, lineterminator="\n")
    return path, hashlib.md5(path.read_bytes()).hexdigest()


@task(name="gate", cache_policy=NO_CACHE)
def gate(params: Params, layout: ProjectLayout, champion: dict | None, champion_version: str | None,
         earlier_rows: tuple[Path, dict] | None = None) -> dict:
    """`earlier_rows`: the champion's own test rows and the champion's metrics on them."""

    from components.lifecycle.gate import decide
    from components.lifecycle.paired import without_outcomes
    from components.reports import read_json_if_present

    challenger = score_onnx_dir(layout.onnx_dir, layout.split_file("test"), params.data.labels, params.evaluate)
    parity = json.loads(layout.parity_file.read_text())
    forgetting = None
    if earlier_rows is not None:
        rows_csv, champion_on_earlier = earlier_rows
        forgetting = (score_onnx_dir(layout.onnx_dir, rows_csv, params.data.labels), champion_on_earlier)
    # The robustness stage's figures (None before that stage ever ran: a min_invariance check then fails).
    decision = decide(challenger, parity, champion, champion_version, params.gate, params.export, forgetting,
                      robustness=read_json_if_present(layout.robustness_metrics), teacher=_teacher_metrics(params, layout))
    get_run_logger().info(decision.summary())
    # Without the per-row outcomes: what follows logs, tags and shows these metrics.
    return {"decision": decision.model_dump(), "summary": decision.summary(), "passed": decision.passed,
            "challenger_metrics": without_outcomes(challenger)}


def run_stage_group(params: Params, layout: ProjectLayout, stages: tuple[str, ...]) -> None:
    """One group of ML_STAGES through DVC, as one task run named after its stages."""
    from components.model.distill import unlabelled_changed

    # distill.unlabelled (e.g. the prediction log) grows under one name: DVC tracks it by the param.
    stale = "distill" in stages and unlabelled_changed(layout.artifacts, params, layout.root)
    run_dvc_pipeline.with_options(name="+".join(stages))(layout, stages, force=stale)


def _teacher_metrics(params: Params, layout: ProjectLayout) -> dict | None:
    """The distillation teacher's test metrics (artifacts/teacher/metrics.json); None without distill."""
    from components.model.distill import teacher_metrics

    return teacher_metrics(layout.artifacts) if params.distill.enabled else None


@task(name="register", cache_policy=NO_CACHE, **RETRY)
def register(registry, run_id: str, layout: ProjectLayout, tags: dict, passed: bool, gate_summary: str,
             signing: RegistryParams) -> str:
    """signing: params' registry section; the version's manifest is signed with its private key when that is set."""
    import tempfile

    from components.export.mlflow_model import save_mlflow_model
    from components.lifecycle.model_card import render_model_card
    from components.lifecycle.registry import CHALLENGER
    from components.lifecycle.signing import pytorch_files_tag, seal_model_dir
    from components.model.continual import PYTORCH_ARTIFACT

    # A retry after a failure past create_model_version must not register the model twice.
    earlier = [v for v in registry.find_versions(model_md5=tags["model_md5"]) if v.run_id == run_id]
    if earlier:
        version = earlier[0]
    else:
        # The PyTorch weights travel with the version's run: continual learning starts from them.
        registry.log_artifact(run_id, layout.model_dir, PYTORCH_ARTIFACT)
        card = render_model_card(registry.model_name, tags, json.loads(layout.parity_file.read_text()), gate_summary)
        with tempfile.TemporaryDirectory(prefix="tunegate-model-") as scratch:
            # The version is an MLflow Model: pyfunc over the ONNX export (int8, fp16 or fp32), with its card.
            model = save_mlflow_model(layout.onnx_dir, Path(scratch) / "model", card=card)
            # Every file's sha256 in a manifest, signed: loaders and promotion refuse other bytes.
            version = registry.register(run_id, model, {**tags, **pytorch_files_tag(layout.model_dir),
                                                        **seal_model_dir(model, signing)})
    if passed:
        registry.set_alias(CHALLENGER, version.version)
    return version.version


def _shadow_summary(params: Params, registry, version: str) -> str | None:
    """The shadow figures for the approval form, when the shadow is used (serve.shadow or its gate)."""
    if params.serve.shadow is None and params.gate.min_shadow_agreement is None:
        return None
    from components.serving.shadow_report import shadow_summary

    return shadow_summary(version, registry.version(version).tags, params.gate)


def _awaiting_shadow(params: Params, registry, version: str, approval: Approval) -> str | None:
    """gate.min_shadow_agreement before promotion: when its figures do not hold yet, the approval is recorded,
    `challenger` keeps pointing at the version (the service goes on shadowing it) and the run ends without
    promoting, rather than hold the project for days; `tunegate promote` finishes once the figures hold.
    Returns why, or None to promote. An answer `tunegate approve` already applied was checked there."""
    from components.lifecycle.gate import shadow_check

    check = shadow_check(registry.version(version).tags, params.gate)
    if check is None or check.passed or approval.applied:
        return None
    if approval.how == "person" and registry.identity() is not None:
        return None  # not this run's to record (flows/approval.py): deploy refuses it with the reason
    registry.tag_version(version, {**approval.as_tags(), "shadow_gate": "waiting"})
    return (f"v{version} approved by {approval.by} but not promoted: {check.detail}. It stays challenger; "
            f"once `tunegate shadow-report --version {version}` says the requirement is met, run "
            f"`tunegate promote {version}` (or --force --reason '...' to promote without it)")


@task(name="deploy", cache_policy=NO_CACHE, **RETRY)
def deploy(registry, version: str, approval: Approval) -> str | None:
    return apply_decision(registry, version, approval)


def sweep_then_reload(params: Params, layout: ProjectLayout, registry, run_id: str) -> Params:
    """Run the sweep; the winner's values are then in params.yaml and its model is the train stage's output."""
    from flows.sweep import run_sweep

    summary = run_sweep(params, layout, registry, run_id)
    print(f"sweep: trial {summary['best_trial']} won with {summary['metric']} {summary['best_score']:.4f} "
          f"({summary['best_overrides']}); params.yaml now holds its values")
    params = load_params(layout.params_file)
    registry.log_params(run_id, tracking.swept_params(params))  # held back at start: MLflow params are write-once
    return params


@flow(name=RETRAIN_FLOW_NAME, log_prints=True)
def retrain(
    project_dir: str = ".",
    approval_profile: Literal["local", "production"] | None = None,
    when_running: Literal["wait", "skip"] | None = None,
) -> dict:
    """Retrain on the project's configured data and model; returns what happened and why."""
    layout = ProjectLayout(Path(project_dir).resolve())
    params = load_params(layout.params_file)
    wait = (when_running or params.schedule.when_running) == "wait"
    try:
        # The project's file lock first, then the model's lock on the Prefect server (none with the
        # ephemeral server). One order everywhere means no deadlock: a run waiting for the server's slot
        # holds only its own project, and the slot's holder waits for nothing. It also keeps a second
        # run in the same folder from ever reaching (and queueing on) the server.
        with exclusive_run(layout.run_lock, wait=wait), model_lock(params.registry.model_name, layout.root, wait):
            return _retrain(layout, params, approval_profile or params.approval.profile)
    except RunInProgress as busy:
        print(f"skipped: {busy}")
        return {"status": RunOutcome.SKIPPED, "version": None, "message": str(busy), "run_id": None}


def _retrain(layout: ProjectLayout, params: Params, profile: str) -> dict:
    check_config(params, layout)
    data = ingest_data(params, layout)

    registry = tracking.open_registry(params, layout)
    run_id = tracking.start_run(registry, params, layout, data)
    try:
        for stages in ML_STAGES:
            if "train" in stages and params.sweep.enabled:
                params = sweep_then_reload(params, layout, registry, run_id)
            run_stage_group(params, layout, stages)
        tracking.log_stage_outputs(registry, run_id, layout, params.is_token_task)

        model_md5 = tracking.output_md5(layout, "export", ONNX_OUT)
        champion = registry.by_alias(CHAMPION)
        if champion is not None and champion.tags.get("model_md5") == model_md5:
            return tracking.finish(registry, run_id, status=RunOutcome.UNCHANGED, version=champion.version,
                                    message=f"champion v{champion.version} was built from the same data, code and "
                                            "params; nothing new to ship")

        champion_metrics = earlier = None
        if champion is not None:
            champion_metrics = score_registered_version(
                registry.tracking_uri, registry.model_name, champion.version,
                tracking.output_md5(layout, "preprocess", "artifacts/splits"), layout.split_file("test"),
                params.data.labels, params.evaluate)
            rows = earlier_test_rows(layout, json.loads(champion.tags.get("data_batches", "[]")))
            if rows is not None:  # new batches since the champion: did the challenger forget the old ones?
                earlier = (rows[0], score_registered_version.with_options(name="score-int8-earlier-rows")(
                    registry.tracking_uri, registry.model_name, champion.version, rows[1], rows[0], params.data.labels))
        verdict = gate(params, layout, champion_metrics, champion.version if champion else None, earlier)
        tracking.log_gate(registry, run_id, verdict)

        # A version an earlier, interrupted run registered and left waiting is asked about again, not
        # registered twice: the same model bytes keep one version and one approval.
        waiting = registry.find_versions(model_md5=model_md5, approval=PENDING)
        if waiting:
            version = waiting[0].version
            print(f"v{version} holds this exact model and still waits for approval; asking again for it")
        else:
            tags = tracking.version_tags(params, layout, data, verdict, model_md5)
            report = tracking.explain_report_link(registry, run_id)
            if report:  # the model card links it
                tags["explain_report"] = report
            version = register(registry, run_id, layout, tags, verdict["passed"], verdict["summary"], params.registry)
        if not verdict["passed"]:
            return tracking.finish(registry, run_id, status=RunOutcome.REJECTED_BY_GATE, version=version,
                                    message=verdict["summary"])

        if profile == "local":
            approval = auto_approval(version)
            print(f"approval: {approval.comment}; the 'production' profile waits for a person instead")
        else:
            # The flow run first: whoever sees `pending` (an approver in another clone) also finds the run to resume.
            registry.tag_version(version, {"approval_flow_run": str(runtime.flow_run.id), "approval": PENDING})
            # The version waiting is the one a service with serve.shadow: challenger shadows meanwhile (a re-asked
            # version's alias may have moved on since it was registered).
            registry.set_alias(CHALLENGER, version)
            print(f"v{version} waits for approval: `tunegate approve` or `tunegate reject`, or the Prefect UI")
            description = tracking.approval_description(registry.model_name, version, verdict,
                                                        tracking.explain_report_link(registry, run_id),
                                                        shadow=_shadow_summary(params, registry, version))
            approval = wait_for_approval(description,
                                         params.approval.timeout_s, params.approval.poll_interval_s)
        if not approval.approved:
            apply_decision(registry, version, approval)  # records the rejection; champion stays
            return tracking.finish(registry, run_id, status=RunOutcome.REJECTED_BY_APPROVER, version=version,
                                    message=f"rejected by {approval.by}: {approval.comment}")

        waiting = _awaiting_shadow(params, registry, version, approval)
        if waiting is not None:
            return tracking.finish(registry, run_id, status=RunOutcome.AWAITING_SHADOW, version=version,
                                   message=waiting)
        previous = deploy(registry, version, approval)
        return tracking.finish(registry, run_id, status=RunOutcome.PROMOTED, version=version,
                                message=f"v{version} is champion (previous: {'v' + previous if previous else 'none'})")
    except BaseException:
        registry.end_run(run_id, failed=True)
        raise
