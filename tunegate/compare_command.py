"""`tunegate compare A B`: two models on the same labelled rows, their difference with its paired bootstrap
interval (and McNemar's test for accuracy), as the gate judges a challenger. A figure such as "+1.0 point from
distillation" is then reported with the uncertainty the test split leaves."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from components.config import Params


def resolve_model(which: str, registry_factory, scratch: Path) -> tuple[str, Path]:
    """(a name for it, its ONNX export folder): a folder (an export or an MLflow Model), else a registered version
    number or alias of params' model, downloaded and checked against its manifest like every loader does."""
    from components.export.mlflow_model import onnx_dir_in

    path = Path(which).expanduser()
    if path.is_dir():
        return str(path), onnx_dir_in(path)
    from components.serving.deployment import pick_version

    registry = registry_factory()
    info = pick_version(registry, which) if which.isdigit() else pick_version(registry, None, alias=which)
    local = registry.download(info.version, scratch / info.version)
    registry.verify_download(info, local)
    return f"v{info.version}" + ("" if which.isdigit() else f" ({which})"), onnx_dir_in(local)


def compare(params: Params, first: Path, second: Path, rows_csv: Path, metric: str | None):
    """The paired comparison of `second` against `first` (first − second, as champion − challenger) on rows_csv."""
    from components.export.scoring import score_onnx_dir
    from components.lifecycle.paired import OUTCOMES, paired_bootstrap

    gate = params.gate
    scores = [score_onnx_dir(folder, rows_csv, params.data.labels) for folder in (first, second)]
    return paired_bootstrap(scores[0][OUTCOMES], scores[1][OUTCOMES], metric or gate.compare_metric,
                            confidence=gate.confidence, resamples=gate.bootstrap_resamples, seed=gate.bootstrap_seed,
                            margin=gate.max_regression)


def cmd_compare(args, layout_of, params_of, registry_factory_of) -> int:
    layout = layout_of(args)
    params = params_of(layout)
    rows_csv = Path(args.rows) if args.rows else layout.split_file("test")
    if not rows_csv.is_file():
        raise FileNotFoundError(f"{rows_csv}: no labelled rows to compare on (run `dvc repro preprocess`, or --rows)")
    with tempfile.TemporaryDirectory(prefix="tunegate-compare-") as scratch:
        (name_a, first), (name_b, second) = (resolve_model(which, lambda: registry_factory_of(layout), Path(scratch))
                                             for which in (args.first, args.second))
        result = compare(params, first, second, rows_csv, args.metric)
    if args.json:
        print(json.dumps({"first": name_a, "second": name_b, "rows": str(rows_csv), **result.model_dump()}, indent=2))
        return 0
    print(f"{result.metric} on the same {result.n} rows of {rows_csv}: {name_a} {result.champion:.4f}, "
          f"{name_b} {result.challenger:.4f}\n"
          f"{name_a} − {name_b}: {result.difference:+.4f}, {result.confidence * 100:g}% interval "
          f"[{result.low:+.4f}, {result.high:+.4f}] ({result.resamples} paired resamples, seed {result.seed})")
    if result.mcnemar_p is not None:
        print(f"McNemar: {result.champion_only_right} rows right only for {name_a}, {result.challenger_only_right} "
              f"only for {name_b}; exact p {result.mcnemar_p:.3g}")
    return 0


def add_compare_parser(verbs: argparse._SubParsersAction, layout_of, params_of, registry_factory_of) -> None:
    parser = verbs.add_parser("compare", help="two models on the same test rows: the difference with its 95%% "
                                              "interval (paired bootstrap) and McNemar's test, as the gate judges")
    parser.add_argument("first", help="a registered version number or alias (champion, challenger), or a folder")
    parser.add_argument("second", help="the same, compared against the first (first − second)")
    parser.add_argument("--rows", help="a labelled CSV (default: the project's test split)")
    parser.add_argument("--metric", choices=("accuracy", "macro_f1", "entity_f1"),
                        help="default: gate.compare_metric")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    parser.set_defaults(handler=lambda args: cmd_compare(args, layout_of, params_of, registry_factory_of))
