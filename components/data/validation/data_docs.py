"""The dataset suite's result as Great Expectations' own static HTML site (Data Docs), for a person to
browse; the pipeline logs it as an MLflow artifact. The suite runs once more, in a throwaway file
context: only a file context renders Data Docs, and its stores (suite, validation definition,
checkpoint, result JSON) must not pile up anywhere."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from components.config import DataParams, Task
from components.data.validation.expectations import is_token_task, quiet_gx_logging
from components.data.validation.suite import dataset_suite

#
# The dataset suite's result as Great Expectations' own static HTML site, for a person to browse (the
# pipeline logs it as an MLflow artifact). The suite runs once more, in a throwaway file context: only
# a file context renders Data Docs, and its stores (suite, validation definition, checkpoint, result
# JSON) must not pile up anywhere.

DATA_DOCS_SUITE = "tunegate_dataset"
# SUMMARY gives each failing expectation its unexpected count and a table of the most frequent
# unexpected values; more of them than the JSON report's examples, since only a person reads these.
DATA_DOCS_RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 20}
_DATA_DOCS_SITE = "local_site"


def build_data_docs(frame: pd.DataFrame, data: DataParams, out_dir: Path, *, source: str,
                    task: Task = "sequence-classification", flags: Mapping[str, np.ndarray] | None = None,
                    total_rows: int | None = None) -> Path:
    """Render the dataset suite's result on `frame` as a GX Data Docs site in `out_dir`; return its index.html.

    The expectations are validate_dataset's (same helper columns, same checks); each carries a note
    with tunegate's check name and what it expects in plain words. The site's layout is GX's:
    out_dir/index.html lists the run, out_dir/validations/<suite>/<run name>/<run time>/<batch>.html
    shows each expectation with its observed value and, for failures, the unexpected values, and
    out_dir/expectations/<suite>.html lists the suite. The run name is `source` with characters
    other than letters, digits, '.', '_' and '-' replaced by '_'. Entries of out_dir that the site
    also has (index.html, validations/, expectations/, static/) are replaced; others are left alone.
    Raises nothing on bad data: a failing suite is what the pages show.

    A sample of a larger dataset (the chunked validate stage renders its first chunk): `flags` are the
    sample rows' duplicate and conflict flags over the whole dataset (dataset_suite), `total_rows` its size,
    and the suite's notes say that the pages show the first rows only and the JSON report covers them all.
    """
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig

    frame, checks = dataset_suite(gx, frame, data, is_token_task(task), flags=flags)
    for check in checks:
        # GX renders a description in place of its own sentence for the expectation; ours names
        # tunegate's check and the GX type too.
        check.expectation.description = f"{check.description} [{check.name}: {check.expectation.expectation_type}]"
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="tunegate-gx-docs-") as tmp:
        context = gx.get_context(mode="file", project_root_dir=tmp)
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        batch_definition = (
            context.data_sources.add_pandas("tunegate")
            .add_dataframe_asset("dataset")
            .add_batch_definition_whole_dataframe("whole dataset")
        )
        suite = context.suites.add(gx.ExpectationSuite(
            name=DATA_DOCS_SUITE,
            expectations=[check.expectation for check in checks],
            notes=suite_notes(source, len(frame), total_rows),
        ))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name="tunegate dataset", data=batch_definition, suite=suite))
        checkpoint = context.checkpoints.add(gx.Checkpoint(
            name="tunegate dataset docs",
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="update data docs", site_names=[_DATA_DOCS_SITE])],
            result_format=DATA_DOCS_RESULT_FORMAT,
        ))
        run_name = re.sub(r"[^A-Za-z0-9._-]+", "_", source).strip("_") or "dataset"
        with quiet_gx_logging():
            checkpoint.run(batch_parameters={"dataframe": frame}, run_id=RunIdentifier(run_name=run_name))
        site = Path(tmp) / "gx" / "uncommitted" / "data_docs" / _DATA_DOCS_SITE
        if not (site / "index.html").is_file():
            raise RuntimeError(f"Great Expectations rendered no Data Docs index under {site}")
        out_dir.mkdir(parents=True, exist_ok=True)
        for entry in site.iterdir():
            target = out_dir / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            if entry.is_dir():
                shutil.copytree(entry, target)
            else:
                shutil.copy2(entry, target)
    return out_dir / "index.html"


def suite_notes(source: str, rows: int, total_rows: int | None = None) -> str:
    """The suite's notes on the pages: what was checked, and whether the pages show a sample of it."""
    if total_rows is None or total_rows == rows:
        return f"tunegate's dataset checks on {source} ({rows:,} rows)"
    return (f"tunegate's dataset checks on {source} ({total_rows:,} rows; Data Docs rendered on the first "
            f"{rows:,} rows, the report covers all rows)")
