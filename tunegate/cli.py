"""`tunegate`: the one command a user types. Each verb parses its arguments and calls a flow or a
component; nothing here holds pipeline logic."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from components.config import ConfigError, Params, load_params
from components.config.params_file import set_param
from components.layout import ProjectLayout
from tunegate.quiet import QUIET_DEFAULTS


def _prepare_environment(root: Path) -> None:
    for key, value in QUIET_DEFAULTS.items():
        os.environ.setdefault(key, value)
    # Approvals are answered from another terminal: both must reach the same Prefect database.
    os.environ.setdefault("PREFECT_HOME", str(root / ".prefect"))


def _layout(args) -> ProjectLayout:
    return ProjectLayout(Path(args.project).resolve())


def _params(layout: ProjectLayout) -> Params:
    return load_params(layout.params_file)


def _open_registry(layout: ProjectLayout):
    from components.lifecycle.tracking import open_registry

    return open_registry(_params(layout), layout)


def cmd_run(args) -> int:
    layout = _layout(args)
    for assignment in args.set or []:
        key, _, raw = assignment.partition("=")
        old = set_param(layout.params_file, key, yaml.safe_load(raw))
        print(f"params.yaml: {key}: {old!r} -> {yaml.safe_load(raw)!r}")
    params = _params(layout)  # refuse bad settings before any work starts
    from components.model.modeling import resolve_model_source

    resolve_model_source(params.model.base_model)  # a missing model directory, before Prefect starts (~10 s)
    from flows.retrain import retrain
    from tunegate.console import hide_user_error_tracebacks

    hide_user_error_tracebacks(_user_errors())
    result = retrain(project_dir=str(layout.root), approval_profile=args.profile)
    print(f"\nretraining {result['status']}: {result['message']}")
    if result["run_id"] is None:  # skipped: another run holds the project
        return 0
    print(f"  MLflow run {result['run_id']}")
    from components.redact import redact_uri

    print(f"  runs and models: mlflow ui --backend-store-uri {redact_uri(result['tracking_uri'])}")
    print(f"  flow runs:       PREFECT_HOME={os.environ['PREFECT_HOME']} prefect server start")
    if args.no_serve:
        return 0
    return _serve(layout, params, version=None, host=params.serve.host, port=params.serve.port)


def _serve(layout: ProjectLayout, params: Params, version: str | None, host: str, port: int) -> int:
    from components.serving.deployment import build_service_app
    from components.serving.prediction_log import scanner_factory
    from components.serving.server import serve_forever

    serve = params.serve
    # ServeParams are the service's settings plus where to listen; the log path is project-relative.
    if serve.prediction_log:  # a folder or file of the project, or a URL (s3://...) as it is
        from components.serving.prediction_log import log_location

        serve = serve.model_copy(update={"prediction_log": log_location(layout.root, serve.prediction_log)})
    settings = serve.model_copy(update={"shadow_log": layout.root / serve.shadow_log})  # shadow-report reads it
    pii_scanner = scanner_factory(params.privacy, layout.root)  # serve.log_pii's: built at startup, off requests
    if serve.engine == "ray":  # the same service as N replicas of a Ray Serve application
        from components.serving.ray_engine import serve_on_ray

        return serve_on_ray(_open_registry(layout), layout.artifacts / "serving", settings, version=version,
                            host=host, port=port, pii_scanner=pii_scanner)
    app = build_service_app(_open_registry(layout), layout.artifacts / "serving", serve.providers, settings,
                            version=version, pii_scanner=pii_scanner)
    app.state.metrics.watch_monitoring(layout.root / ".tunegate" / "monitor")  # tunegate_monitor_* gauges
    served = app.state.model_holder.current()
    follows = f"pinned to v{version}" if version else f"follows 'champion' (checked every {serve.poll_interval_s:g} s)"
    print(f"serving {served.metadata['model_name']} v{served.metadata['model_version']}, {follows}, "
          f"at http://{host}:{port}  (POST /predict, POST /invocations{', POST /explain' if serve.explain else ''}, "
          "GET /health, /metadata, /metrics; Ctrl-C stops)")
    serve_forever(app, host, port)
    return 0


def cmd_serve(args) -> int:
    layout = _layout(args)
    params = _params(layout)
    return _serve(layout, params, args.version, args.host or params.serve.host,
                  params.serve.port if args.port is None else args.port)


def cmd_predict(args) -> int:
    from components.serving.batch_scoring import score_file
    from components.serving.deployment import load_served_model

    layout = _layout(args)
    params = _params(layout)
    served = load_served_model(_open_registry(layout), layout.artifacts / "serving", params.serve.providers,
                               version=args.version)
    print(f"scoring {args.input} with {served.metadata['model_name']} v{served.version} into {args.output}")
    options = {"text_column": args.text_column or params.data.text_column, "id_column": args.id_column,
               "chunk_rows": args.chunk_rows}
    if args.dask:
        from components.dask_cluster import dask_client
        from components.serving.dask_scoring import DaskChunkScorer

        with dask_client(args.dask, local_workers=args.dask_workers) as client:
            scorer = DaskChunkScorer(client, served.predictor.model_dir, params.serve.providers)
            print(f"on Dask: {client.scheduler.address}, {scorer.window} chunks in flight at most")
            summary = score_file(served.predictor, served.version or "", Path(args.input), Path(args.output),
                                 scorer=scorer, **options)
    else:
        summary = score_file(served.predictor, served.version or "", Path(args.input), Path(args.output), **options)
    resumed = f" (resumed after record {summary.resumed_at:,})" if summary.resumed_at else ""
    print(f"{summary.records:,} records: {summary.scored:,} scored into {summary.output}{resumed}, "
          f"{summary.rejected:,} rejected" + (f" (see {summary.rejected_file})" if summary.rejected else ""))
    return 0


EXPLANATION_PAGE = Path("artifacts") / "explain" / "explanation.html"  # `explain --html` without a path


def cmd_explain(args) -> int:
    import json
    import time

    from components.config import ExplainParams
    from components.explain.attributions import explain

    layout = _layout(args)
    # --model-dir works outside a project: then the defaults stand in for params.yaml.
    params = _params(layout) if args.model_dir is None or layout.params_file.is_file() else None
    explain_params = params.explain if params else ExplainParams()
    max_evals = explain_params.max_evals if args.max_evals is None else args.max_evals
    if max_evals < 10:
        raise ConfigError(f"--max-evals {max_evals}: an explanation needs at least 10 model calls")
    if args.model_dir is not None:
        from components.export.predictor import load_predictor

        try:
            predictor = load_predictor(Path(args.model_dir), providers=params.serve.providers if params else
                                       ("CPUExecutionProvider",))
        except ValueError as error:  # not an export directory: say so, without a traceback
            raise ConfigError(f"--model-dir: {error}") from None
        what = str(args.model_dir)
    else:  # the model `tunegate serve` and `tunegate predict` would use
        from components.serving.deployment import load_served_model

        served = load_served_model(_open_registry(layout), layout.artifacts / "serving", params.serve.providers,
                                   version=args.version)
        predictor, what = served.predictor, f"{served.metadata['model_name']} v{served.version}"
    started = time.perf_counter()
    explanations = explain(predictor, args.text, max_evals)
    seconds = time.perf_counter() - started
    if args.json:
        print(json.dumps({"model": what, "max_evals": max_evals, "seconds": round(seconds, 3),
                          "explanations": [e.to_dict() for e in explanations]}, indent=2))
    else:
        print(f"{what}: {len(explanations)} explanation(s) in {seconds:.2f} s, at most {max_evals} model calls each")
        if not explanations:
            print("no entity found in the text: nothing to explain")
        for explanation in explanations:
            entity = f' entity "{args.text[slice(*explanation.span)]}"' if explanation.span else ""
            print(f"\n{explanation.label}{entity}: p = {explanation.probability:.3f} (every word masked: "
                  f"{explanation.base_value:.3f}; {explanation.model_calls} model calls)")
            print(f"  {'word':<20} {'value':>8}  chars")
            for word in sorted(explanation.words, key=lambda w: abs(w.value), reverse=True)[:args.top]:
                print(f"  {word.word[:20]:<20} {word.value:>+8.4f}  {word.start}-{word.end}")
    if args.html is not None:
        from components.explain.page import render_explanations

        path = Path(args.html) if args.html else layout.root / EXPLANATION_PAGE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_explanations(explanations, f"Why {what} answered as it did",
                                            intro=f"Shapley values of the served model's probability over the "
                                                  f"words, at most {max_evals} model calls per explanation."),
                        encoding="utf-8")
        print(f"page: {path}", file=sys.stderr if args.json else sys.stdout)  # stdout stays JSON with --json
    return 0


def _champion_training_data(layout: ProjectLayout, store):
    """The rows the champion was trained on: the drift reference for a new batch (as monitoring's)."""
    from components.monitoring.traffic import champion_reference

    return champion_reference(_open_registry(layout), store)[0]


def cmd_ingest(args) -> int:
    from components.data.ingest import (
        DataStore,
        describe,
        ingest_batch,
        read_configured_source,
        read_file_source,
        reads_labelled_traffic,
    )
    from components.lifecycle.versioning import version_data
    from components.model.modeling import load_tokenizer, resolve_model_source
    from components.privacy.configured import scanner_for

    layout = _layout(args)
    params = _params(layout)
    store = DataStore(layout.data_dir)
    scanner = scanner_for(params, layout.root)
    if args.path is None:
        result = ingest_batch(read_configured_source(params.data, layout.root, task=params.task), params.data, store,
                              base=True, task=params.task, pii_scanner=scanner)
    else:
        result = ingest_batch(
            read_file_source(Path(args.path).absolute(), params.data, task=params.task), params.data, store, base=False,
            drift=params.drift, reference=_champion_training_data(layout, store),
            tokenizer_factory=lambda: load_tokenizer(resolve_model_source(params.model.base_model)), task=params.task,
            # The labelling queue's export is drifted traffic by design: reported, not refused.
            drift_gate=not reads_labelled_traffic(Path(args.path)), pii_scanner=scanner,
        )
    print(describe(result))
    print(f"data.dvc: {version_data(layout.root, layout.data_dir)} (commit data.dvc to record this version)")
    if args.path is None or result.already_present or args.no_retrain:
        return 0
    print("new data arrived: retraining (skip with --no-retrain)")
    return cmd_run(argparse.Namespace(project=args.project, set=None, profile=None, no_serve=True))


def cmd_monitor(args) -> int:
    # The scheduled monitoring flow (flows/monitor.py), run once; retraining stays here so that its
    # output is cmd_run's. --last defaults to every logged line, as before monitor.last existed.
    import json

    from flows.monitor import monitor
    from tunegate.console import hide_user_error_tracebacks

    layout = _layout(args)
    params = _params(layout)
    if not params.serve.prediction_log:
        raise ConfigError("serve.prediction_log is not set: the service keeps no sample of live traffic to check")
    hide_user_error_tracebacks(_user_errors())
    result = monitor(project_dir=str(layout.root), last=args.last or 0, retrain_on_fail=False, print_summary=False)
    report = json.loads(Path(result["report"]).read_text(encoding="utf-8"))
    print(f"live traffic ({report['traffic_rows']:,} logged predictions) vs the champion's training data: "
          f"{result['summary']}")
    print(f"report: {result['report']} (also {result['latest']}, gauges in {result['textfile']}); "
          f"MLflow run {result['mlflow_run_id']}")
    if report["drift"]["status"] != "fail" or args.no_retrain:  # as before: drift failing retrains
        return 0
    print("drift crossed its fail threshold: retraining (skip with --no-retrain)")
    return cmd_run(argparse.Namespace(project=args.project, set=None, profile=None, no_serve=True))


def cmd_fetch(args) -> int:
    from components.assets import (
        BUILTIN_SPLIT_DATASETS,
        builtin_model_dir,
        read_builtin_dataset,
        read_builtin_split_dataset,
        split_builtin,
    )

    if args.model:  # named models only: no project (params.yaml) needed
        for model in args.model:
            print(f"model builtin:{split_builtin(model) or model}: {builtin_model_dir(split_builtin(model) or model)}")
        return 0
    params = _params(_layout(args))
    if (name := split_builtin(params.data.source)) is not None:
        read = read_builtin_split_dataset if name in BUILTIN_SPLIT_DATASETS else read_builtin_dataset
        print(f"data {params.data.source}: {read(name).description}")
    if (name := split_builtin(params.model.base_model)) is not None:
        print(f"model {params.model.base_model}: {builtin_model_dir(name)}")
    return 0


def cmd_history(args) -> int:
    registry = _open_registry(_layout(args))
    events = registry.history()
    if not events:
        print(f"{registry.model_name}: no champion yet")
        return 0
    aliases = registry.aliases()
    print(f"{registry.model_name}: champion v{aliases.get('champion', '-')}, "
          f"previous_champion v{aliases.get('previous_champion', '-')}")
    for event in events:
        if event["action"] == "forget":  # a data removal (tunegate forget): no version moved
            trained = ", ".join(f"v{v}" for v in event.get("versions") or [])
            print(f"{event['at']}  forget   forgot {event['rows']} rows ({event['reason']}) by {event['by']} — "
                  + (f"versions {trained} trained on them; schedule a retraining" if trained
                     else "no version was trained on them"))
            continue
        previous = f"v{event['previous']}" if event["previous"] else "none"
        print(f"{event['at']}  {event['action']:<8} v{event['version']:<4} (was {previous:<5}) by {event['by']}: "
              f"{event['reason']}")
    return 0


def cmd_forget(args) -> int:
    from components.lifecycle.versioning import version_data
    from components.monitoring.traffic import LABELLING_DIR
    from components.privacy.forget import ForgetRequest, Matcher, forget, summary
    from components.serving.prediction_log import log_location

    layout = _layout(args)
    params = _params(layout)
    texts = list(args.text or [])
    if args.texts_file:  # one text a line: texts kept out of shell history
        texts += [line for line in Path(args.texts_file).read_text(encoding="utf-8").splitlines() if line.strip()]
    if args.texts_file and (args.id or args.regex is not None):
        raise ConfigError("--texts-file goes with --text only: one kind of match (text, id or regex) per removal")
    try:
        if args.regex is not None:
            matcher, asked = Matcher.for_regex(args.regex), 1
        elif args.id:
            matcher, asked = Matcher.for_ids(args.id), len(args.id)
        elif texts:
            matcher, asked = Matcher.for_texts(texts), len(texts)
        else:
            raise ConfigError("name what to forget: --text, --texts-file, --id or --regex")
    except ValueError as error:
        raise ConfigError(str(error)) from None
    registry = _open_registry(layout)
    serve = params.serve
    result = forget(ForgetRequest(
        matcher=matcher, asked=asked, reason=args.reason, by=registry.actor(args.by), project_root=layout.root,
        data_dir=layout.data_dir, labelling_dir=layout.root / LABELLING_DIR,
        labelling_text_column=params.data.text_column, shadow_log=layout.root / serve.shadow_log,
        prediction_log=log_location(layout.root, serve.prediction_log) if serve.prediction_log else None,
        registry=registry, version_data=version_data))
    print(summary(result))
    return 0


def cmd_rollback(args) -> int:
    registry = _open_registry(_layout(args))
    by = registry.actor(args.by)  # the MLflow login when the server checks logins
    from_version, to_version = registry.rollback(by=by, reason=args.reason)
    print(f"champion: v{from_version} -> v{to_version} (rollback by {by}: {args.reason})")
    return 0


def _shadow_unmet(params: Params, tags: dict[str, str]) -> str | None:
    """Why gate.min_shadow_agreement does not hold yet for a version with these tags; None if it holds or is unset."""
    from components.lifecycle.gate import shadow_check

    check = shadow_check(tags, params.gate)
    return None if check is None or check.passed else check.detail


def cmd_promote(args) -> int:
    from components.lifecycle.registry_auth import EDIT

    layout = _layout(args)
    registry = _open_registry(layout)
    by = registry.actor(args.by)
    registry.require(EDIT, f"promote v{args.version}")  # before the forced_promotion tag: a refusal changes nothing
    version = registry.version(args.version)
    verified = registry.verify(args.version)  # before any tag: a tampered version changes nothing
    gate = version.tags.get("gate", "unknown")
    shadow = _shadow_unmet(_params(layout), version.tags)
    if gate != "passed" or shadow:
        if not (args.force and args.reason):
            why = (f"did not pass its gates (gate={gate})" if gate != "passed"
                   else f"has not met gate.min_shadow_agreement: {shadow}")
            raise ConfigError(f"v{args.version} {why}; use --force --reason '...' to promote it anyway")
        registry.tag_version(args.version, {"forced_promotion": args.reason})
    previous = registry.promote(args.version, by=by, reason=args.reason or "manual promotion", verified=verified)
    print(f"champion: {'v' + previous.version if previous else 'none'} -> v{args.version}")
    return 0


def cmd_schedule(args) -> int:
    from flows.schedule import serve_schedule

    layout = _layout(args)
    params = _params(layout)
    schedule = params.schedule
    if args.cron:
        schedule = schedule.model_copy(update={"cron": args.cron})
    if not os.environ.get("PREFECT_API_URL"):
        raise ConfigError("schedules need a Prefect server: run `prefect server start` in another terminal and "
                          "set PREFECT_API_URL=http://127.0.0.1:4200/api (or the URL of your server)")
    if args.only != "monitor":
        print(f"serving deployment '{schedule.deployment_name}': cron '{schedule.cron}' ({schedule.timezone}), "
              f"one run at a time ({schedule.when_running} when busy); Ctrl-C stops")
    if args.only != "retrain":
        watch = params.monitor
        print(f"serving deployment '{watch.deployment_name}': monitoring cron '{watch.cron}' ({watch.timezone}), "
              f"reports in .tunegate/monitor/ ({'retrains' if watch.retrain_on_fail else 'no retraining'} on fail)")
    serve_schedule(layout.root, schedule, params.monitor, only=args.only)
    return 0


def cmd_reproduce(args) -> int:
    from components.lifecycle.reproduce import reproduce

    layout = _layout(args)
    registry = _open_registry(layout)
    version = args.version or registry.aliases().get("champion")
    if version is None:
        raise LookupError(f"{registry.model_name} has no champion; name a version with --version")
    print(f"reproducing {registry.model_name} v{version}: its params.yaml, dvc.lock and data.dvc, then dvc pull "
          "and dvc repro")
    result = reproduce(registry, version, layout)
    print(f"code {result.git_commit}, data {result.data_hash}")
    for key in result.registered:
        print(f"  {key:<16} registered {result.registered[key]:.4f}  reproduced {result.reproduced[key]:.4f}")
    if result.largest_difference() > args.tolerance:
        print(f"differs by {result.largest_difference():.4f} (> --tolerance {args.tolerance}): other hardware or "
              "library versions change float results; the reproduced model is in artifacts/")
        return 1
    print("reproduced")
    return 0


def cmd_stage(args) -> int:
    from components.stages import STAGES

    layout = _layout(args)
    STAGES[args.name](layout, _params(layout))
    return 0


def cmd_answer(args) -> int:
    from flows.approval import PENDING, answer_approval

    layout = _layout(args)
    registry = _open_registry(layout)
    waiting = ([v for v in registry.find_versions(approval=PENDING) if args.version in (None, v.version)]
               if args.command == "approve" else [])
    if len(waiting) == 1 and (shadow := _shadow_unmet(_params(layout), waiting[0].tags)):
        # An approval promotes at once: refused while the shadow figures fall short, and the version keeps waiting.
        raise ConfigError(f"v{waiting[0].version} has not met gate.min_shadow_agreement: {shadow}. It keeps waiting; "
                          f"approve again once `tunegate shadow-report --version {waiting[0].version}` says met, or "
                          f"`tunegate promote {waiting[0].version} --force --reason '...'`")
    print(answer_approval(layout, registry, args.command, by=args.by, comment=args.comment, version=args.version))
    return 0


def cmd_shadow_report(args) -> int:
    from components.serving.shadow_report import shadow_report

    layout = _layout(args)
    params = _params(layout)
    text, check = shadow_report(_open_registry(layout), params.gate, layout.root / params.serve.shadow_log,
                                args.version, args.last)
    print(text)
    return 0 if check is None or check.passed else 1  # scripts may wait on it


BY_HELP = ("who acts, recorded on the version (default: your login name). When the MLflow server checks logins "
           "(basic-auth) the MLflow user of MLFLOW_TRACKING_USERNAME is recorded and another --by is refused")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunegate",
        description="Fine-tune, gate, quantize, approve and serve text classifiers. Start with `tunegate run`; "
                    "settings live in params.yaml.")
    parser.add_argument("--project", default=".", help="project root holding params.yaml and dvc.yaml")
    verbs = parser.add_subparsers(dest="command", required=True)

    run = verbs.add_parser("run", help="retrain: ingest, validate, train, gate, register, approve, deploy; then serve")
    run.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="write a param into params.yaml first, as `dvc exp run -S` does (e.g. train.epochs=1)")
    run.add_argument("--profile", choices=["local", "production"], help="approval profile (default: params.yaml)")
    run.add_argument("--no-serve", action="store_true", help="stop after deploying instead of serving")
    run.set_defaults(handler=cmd_run)

    ingest = verbs.add_parser("ingest", help="bring data.source into data/, or add a new batch from PATH, and version it "
                                             "with DVC (a new batch triggers retraining)")
    ingest.add_argument("path", nargs="?", help="a CSV, TSV, JSONL or Parquet file of new labelled rows, or a Label "
                        "Studio JSON export of the labelling queue")
    ingest.add_argument("--no-retrain", action="store_true", help="add the batch without retraining")
    ingest.set_defaults(handler=cmd_ingest)

    fetch = verbs.add_parser("fetch", help="download and hash-check the built-in data and model params.yaml names")
    fetch.add_argument("--model", action="append", metavar="builtin:NAME",
                       help="fetch this built-in model instead (repeatable), e.g. builtin:all-mpnet-base-v2")
    fetch.set_defaults(handler=cmd_fetch)

    serve = verbs.add_parser("serve", help="serve the champion (or --version) over HTTP with onnxruntime")
    serve.add_argument("--version", help="a registered version instead of the champion")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(handler=cmd_serve)

    predict = verbs.add_parser("predict", help="score a CSV/TSV/JSONL/Parquet file with the champion (or --version), "
                                               "in chunks; resumes an interrupted run")
    predict.add_argument("input", help="a file with a text column")
    predict.add_argument("output", help="where the predictions go (.csv or .jsonl)")
    predict.add_argument("--version", help="a registered version instead of the champion")
    predict.add_argument("--text-column", help="default: data.text_column of params.yaml")
    predict.add_argument("--id-column", help="written beside each prediction (default: the record number)")
    predict.add_argument("--chunk-rows", type=int, default=10_000, help="rows read and written at a time")
    predict.add_argument("--dask", metavar="ADDRESS",
                         help="score the chunks on a Dask cluster: a scheduler address (tcp://host:8786) or "
                              "'local' for a LocalCluster on this machine")
    predict.add_argument("--dask-workers", type=int, help="with --dask local: worker processes (default: one per core)")
    predict.set_defaults(handler=cmd_predict)

    explain = verbs.add_parser("explain", help="which words made the champion (or --version, --model-dir) answer "
                                               "as it did: Shapley values per word, as a table, JSON or HTML page")
    explain.add_argument("text", help="the text to explain (quote it)")
    which = explain.add_mutually_exclusive_group()
    which.add_argument("--version", help="a registered version instead of the champion")
    which.add_argument("--model-dir", help="an ONNX export directory instead of the registry (no project needed)")
    explain.add_argument("--max-evals", type=int, help="model calls per explanation (default: explain.max_evals)")
    explain.add_argument("--top", type=int, default=10, help="words shown in the table (largest |value| first)")
    explain.add_argument("--json", action="store_true", help="print the explanations as JSON instead of a table")
    explain.add_argument("--html", nargs="?", const="", metavar="PATH",
                         help=f"write a self-contained HTML page (default path: {EXPLANATION_PAGE} in the project)")
    explain.set_defaults(handler=cmd_explain)

    for verb in ("approve", "reject"):
        answer = verbs.add_parser(verb, help=f"{verb} the model version a retraining run is waiting on")
        answer.add_argument("--version", help="the version to answer (default: the only one waiting)")
        answer.add_argument("--by", help=BY_HELP)
        answer.add_argument("--comment", default="", help="why (recorded on the version)")
        answer.set_defaults(handler=cmd_answer)

    schedule = verbs.add_parser("schedule", help="run retraining (schedule.cron) and monitoring (monitor.cron) on their "
                                                 "schedules in params.yaml (needs a Prefect server)")
    schedule.add_argument("--cron", help="override schedule.cron, e.g. '0 3 * * *'")
    schedule.add_argument("--only", choices=("retrain", "monitor"),
                          help="serve only this deployment (default: retraining on schedule.cron and monitoring on "
                               "monitor.cron)")
    schedule.set_defaults(handler=cmd_schedule)

    monitor = verbs.add_parser("monitor", help="drift of live traffic (serve.prediction_log) vs the champion's "
                                               "training data; retrains when it fails")
    monitor.add_argument("--last", type=int, help="only the last N logged predictions (default: all of them)")
    monitor.add_argument("--no-retrain", action="store_true")
    monitor.set_defaults(handler=cmd_monitor)

    history = verbs.add_parser("history", help="every champion: when, by whom and why it was promoted or rolled back")
    history.set_defaults(handler=cmd_history)

    forget = verbs.add_parser("forget", help="remove a person's rows from every batch of data/ (a new DVC data "
                                             "version), tag the versions trained on them, scrub the logged texts")
    what = forget.add_mutually_exclusive_group()
    what.add_argument("--text", action="append", metavar="TEXT",
                      help="a text to forget, matched after ingest's normalization (repeatable)")
    forget.add_argument("--texts-file", metavar="PATH",
                        help="texts to forget, one a line (keeps them out of shell history); with or without --text")
    what.add_argument("--id", action="append", metavar="ID", help="a row id of the dataset to forget (repeatable)")
    what.add_argument("--regex", metavar="PATTERN",
                      help="forget every text this regular expression finds (recorded as its sha256 only)")
    forget.add_argument("--reason", required=True,
                        help="why (recorded in data/removals.jsonl and the history: name a request, not the person)")
    forget.add_argument("--by", help=BY_HELP)
    forget.set_defaults(handler=cmd_forget)

    rollback = verbs.add_parser("rollback", help="move champion back to the previous champion")
    rollback.add_argument("--by", help=BY_HELP)
    rollback.add_argument("--reason", required=True, help="why (recorded in the history)")
    rollback.set_defaults(handler=cmd_rollback)

    promote = verbs.add_parser("promote", help="make a registered version the champion")
    promote.add_argument("version")
    promote.add_argument("--by", help=BY_HELP)
    promote.add_argument("--reason", help="why (recorded; required with --force)")
    promote.add_argument("--force", action="store_true", help="promote a version that failed its gates")
    promote.set_defaults(handler=cmd_promote)

    shadow = verbs.add_parser("shadow-report", help="how the shadowed challenger (serve.shadow) agrees with the "
                                                    "champion on live traffic; exit 1 while gate.min_shadow_agreement fails")
    shadow.add_argument("--version", help="a registered version (default: the challenger)")
    shadow.add_argument("--last", type=int, default=5, help="latest disagreements shown (from serve.shadow_log)")
    shadow.set_defaults(handler=cmd_shadow_report)

    reproduce = verbs.add_parser("reproduce", help="rebuild the champion (or --version) from its lineage: restore its "
                                                   "params.yaml, dvc.lock and data.dvc, dvc pull, dvc repro")
    reproduce.add_argument("--version", help="a registered version instead of the champion")
    reproduce.add_argument("--tolerance", type=float, default=0.01,
                           help="largest difference of test accuracy and macro-F1 still called reproduced")
    reproduce.set_defaults(handler=cmd_reproduce)

    from components.stages import STAGE_NAMES

    stage = verbs.add_parser("stage", help="run one ML stage (dvc.yaml calls these)")
    stage.add_argument("name", choices=STAGE_NAMES)
    stage.set_defaults(handler=cmd_stage)

    from tunegate.compare_command import add_compare_parser
    from tunegate.config_command import add_config_parser
    from tunegate.curve_command import add_curve_parser
    from tunegate.signing_commands import add_signing_parsers

    add_signing_parsers(verbs, _layout, _open_registry)
    add_compare_parser(verbs, _layout, _params, _open_registry)

    add_curve_parser(verbs, _user_errors)
    add_config_parser(verbs)

    from tunegate.stack.commands import add_stack_parser

    add_stack_parser(verbs)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean 'fix your data or settings': a message, not a traceback."""
    from components.assets import AssetError
    from components.data.ingest import DriftFailure
    from components.data.readers import IngestError
    from components.data.validation.report import DataValidationError
    from components.export.integrity import ModelIntegrityError
    from components.lifecycle.locking import RunInProgress
    from components.lifecycle.registry_auth import RegistryAccessError
    from components.lifecycle.versioning import VersioningError
    from components.serving.batch_scoring import BatchScoringError
    from tunegate.stack.services import StackError

    return (ConfigError, LookupError, FileNotFoundError, AssetError, IngestError, DataValidationError, DriftFailure,
            VersioningError, RunInProgress, BatchScoringError, RegistryAccessError, StackError, ModelIntegrityError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _prepare_environment(Path(args.project).resolve())
    try:
        return args.handler(args)
    except _user_errors() as error:
        print(f"tunegate: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
