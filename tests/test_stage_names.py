"""The ML stages are named once, in components/stages.py: dvc.yaml, the CLI and the retraining flow agree with it."""

from pathlib import Path

import pytest

from components.lifecycle.stage_code import read_dvc_stages, stage_commands
from components.stages import STAGE_NAMES, STAGES

ROOT = Path(__file__).resolve().parents[1]


def test_stage_names_follow_stages():
    assert STAGE_NAMES == tuple(STAGES)


def test_dvc_yaml_lists_the_stages_in_order_each_running_its_namesake():
    dvc_stages = read_dvc_stages(ROOT / "dvc.yaml")
    # In order: the flow runs them in this order with `dvc repro --single-item`, and dvc.yaml reads top to bottom.
    assert tuple(dvc_stages) == STAGE_NAMES
    assert stage_commands(dvc_stages) == {name: name for name in STAGE_NAMES}


def test_cli_accepts_exactly_the_stages(capsys):
    from tunegate.cli import build_parser

    parser = build_parser()
    for name in STAGE_NAMES:
        assert parser.parse_args(["stage", name]).name == name
    with pytest.raises(SystemExit):
        parser.parse_args(["stage", "no-such-stage"])
    assert "invalid choice" in capsys.readouterr().err


def test_flow_runs_every_stage_once_in_order():
    from flows.retrain import ML_STAGES, RUN_ALONE

    assert tuple(name for group in ML_STAGES for name in group) == STAGE_NAMES
    assert RUN_ALONE <= set(STAGE_NAMES)
    assert all(len(group) == 1 for group in ML_STAGES if set(group) & RUN_ALONE)


def test_stage_groups_cut_around_the_stages_that_run_alone():
    from flows.retrain import stage_groups

    assert stage_groups(("a", "b", "c", "d", "e", "f"), frozenset({"a", "d"})) == (("a",), ("b", "c"), ("d",),
                                                                                  ("e", "f"))
    assert stage_groups(("a", "b"), frozenset()) == (("a", "b"),)
