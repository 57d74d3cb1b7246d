"""`tunegate curve`: its arguments and what it prints; the work is flows/curve.py's."""

from __future__ import annotations

import argparse
from pathlib import Path

from components.config import ConfigError


def _listed(text: str, kind: type, what: str) -> list:
    values = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        if kind is int or item != "all":
            try:
                values.append(int(item))
            except ValueError:
                raise ConfigError(f"--{what} {text!r}: {item!r} is not a whole number"
                                  + (" (or 'all')" if what == "sizes" else "")) from None
        else:
            values.append(item)
    return values


def cmd_curve(args) -> int:
    from flows.curve import run_curve
    from tunegate.console import hide_user_error_tracebacks

    hide_user_error_tracebacks(args.user_errors())  # after Prefect set up its logging (flows imported)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    sizes = _listed(args.sizes, str, "sizes") if args.sizes else None
    seeds = _listed(args.seeds, int, "seeds") if args.seeds else None
    root = Path(args.project).resolve()
    result = run_curve(root, methods, sizes, seeds, prepare=not args.no_prepare,
                       command=" ".join(["tunegate curve", *given_options(args)]))
    print(f"\n{result['table']}")
    stored = result["points"] - result["trained"] - len(result["failed"])
    print(f"{result['points']} points: {result['trained']} trained, {stored} from earlier runs, "
          f"{len(result['failed'])} failed; MLflow run {result['run_id']}")
    print(f"  table:  {result['readme']}\n  points: {result['csv']}")
    if result["plot"]:
        print(f"  plot:   {result['plot']}  (also `dvc plots show`)")
    for failure in result["failed"]:
        print(f"  failed: {failure['name']}: {(failure['error'].strip().splitlines() or [''])[-1]}")
    return 1 if result["failed"] else 0


def add_curve_parser(verbs, user_errors) -> None:
    """user_errors: tunegate.cli's _user_errors (errors shown as a message, not a traceback)."""
    curve = verbs.add_parser("curve", help="learning curves: each method of curve.methods trained on nested stratified "
                                           "subsets of the training split, per seed; a table, a plot and MLflow runs")
    curve.add_argument("--methods", help="comma-separated names from curve.methods (default: all of them), e.g. full,lora")
    curve.add_argument("--sizes", help="comma-separated training-set sizes, 'all' for the whole split (default: "
                                       "curve.sizes), e.g. 64,256,all")
    curve.add_argument("--seeds", help="comma-separated seeds (default: curve.seeds), e.g. 42,1")
    curve.add_argument("--no-prepare", action="store_true",
                       help="use the tokenized splits as they are (default: ingest and `dvc repro` up to them first, "
                            "as `tunegate run` does)")
    curve.set_defaults(handler=cmd_curve, user_errors=user_errors)


def given_options(args: argparse.Namespace) -> list[str]:
    given = [f"--{name} {getattr(args, name)}" for name in ("methods", "sizes", "seeds") if getattr(args, name)]
    return given + (["--no-prepare"] if args.no_prepare else [])
