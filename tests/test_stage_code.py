"""dvc.yaml's code deps against the code (components/lifecycle/stage_code.py): every project module a stage's
command can import is a dep of that stage, so that editing it makes `dvc status` call the stage changed and
the registry never records a new git commit beside weights the old code made."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from components.lifecycle.stage_code import (
    PROJECT_PACKAGES,
    CoverageReport,
    coverage_report,
    covers,
    stage_closures,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
ALWAYS_CHANGED = "start"  # always_changed: true, so `dvc status` reports it whatever was touched
PROJECT_FILES = ("dvc.yaml", "params.yaml", ".dvcignore")
GIT_IDENTITY = (("user.name", "tunegate-test"), ("user.email", "test@tunegate.invalid"))
TOUCH = "\n# touched by tests/test_stage_code.py\n"


def describe(report: CoverageReport) -> str:
    """The failure message: what is missing where, and how to fix it."""
    lines = [f"  {stage} -> {', '.join(files)}" for stage, files in report.uncovered.items()]
    if lines:
        lines.insert(0, "dvc.yaml stages miss code their command imports (stage -> modules not in its deps):")
        lines.append("Add each module to that stage's deps in dvc.yaml (or the package directory, where the stage "
                     "imports nearly all of it): until then editing it leaves the stage 'up to date' in dvc status.")
    if report.not_in_dvc_yaml:
        lines.append(f"In STAGES of components/stages.py but run by no dvc.yaml stage: {report.not_in_dvc_yaml}")
    if report.not_in_stages:
        lines.append(f"dvc.yaml stages whose cmd runs no `tunegate stage NAME` of STAGES: {report.not_in_stages}")
    return "\n".join(lines)


def test_every_stage_lists_the_modules_its_command_imports():
    report = coverage_report(REPO_ROOT, REPO_ROOT / "dvc.yaml")
    assert report.ok, describe(report)


def test_every_code_dep_is_imported_by_its_stage():
    """The other way round: a listed module its stage never imports re-runs the stage for nothing (an edit to
    the registry's code must not retrain the model)."""
    closures = stage_closures(REPO_ROOT)
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    paths = {stage: [dep if isinstance(dep, str) else next(iter(dep)) for dep in spec["deps"]]  # `- path: {...}`
             for stage, spec in stages.items()}
    needless = {stage: [dep for dep in deps if dep.split("/")[0] in PROJECT_PACKAGES
                        and not any(covers(dep, file) for file in closures[stage].files)]
                for stage, deps in paths.items()}
    assert not any(needless.values()), f"dvc.yaml deps their stage never imports: {needless}"
    assert "components/lifecycle/registry.py" not in closures["train"]


def test_closures_hold_known_imports():
    closures = stage_closures(REPO_ROOT)
    for module in ("components/model/prompts.py", "components/model/distributed.py",
                   "components/data/preprocess.py", "components/stages.py", "components/config/__init__.py"):
        assert module in closures["train"], f"train's closure lacks {module}"
    assert "components/model/train.py" not in closures["validate"], "validate's closure is not everything"
    assert "tunegate/cli.py" not in closures["train"], "another CLI verb's change must not re-train"
    # export's local `train = pd.read_csv(...)` is not the train stage function: no training code in export
    assert "components/model/train.py" not in closures["export"]


SMALL_PROJECT = {
    "components/__init__.py": "",
    "components/layout.py": "",
    "components/config.py": "",
    "components/stages.py": (
        "from components.layout import X\n\n"
        "def helper():\n    from components.a.b import c\n\n"
        "def first(layout, params):\n    helper()\n\n"
        "def second(layout, params):\n    helper = 1\n    return helper\n\n"
        "STAGES: dict = {'first': first, 'second': second}\n"),
    "components/a/__init__.py": "",
    "components/a/b/__init__.py": "from . import sibling\n",
    "components/a/b/c.py": "def later():\n    from ..d import e\n",
    "components/a/b/sibling.py": "",
    "components/a/d.py": "",
    "components/a/unused.py": "",
}


def test_closure_follows_calls_relative_imports_and_packages(tmp_path):
    for path, text in SMALL_PROJECT.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)

    closures = stage_closures(tmp_path)

    common = {"components/__init__.py", "components/config.py", "components/layout.py", "components/stages.py"}
    assert set(closures["first"].files) == common | {
        "components/a/__init__.py", "components/a/b/__init__.py", "components/a/b/c.py",
        "components/a/b/sibling.py", "components/a/d.py"}
    assert set(closures["second"].files) == common  # its local `helper` is not the function


# --- the check can fail ----------------------------------------------------------------------------------------


def directory_members(root: Path, directory: str) -> list[str]:
    return sorted(path.relative_to(root).as_posix() for path in (root / directory).rglob("*")
                  if path.is_file() and "__pycache__" not in path.parts)


def deps_without(root: Path, deps: list, file: str) -> list:
    """`deps` with no entry covering `file`: the file dropped, a directory above it replaced by its other files."""
    kept = []
    for dep in deps:
        if not isinstance(dep, str) or not covers(dep, file):
            kept.append(dep)
        elif dep != file:
            kept.extend(member for member in directory_members(root, dep) if member != file)
    return kept


def test_the_check_names_a_module_whose_dep_was_removed(tmp_path):
    pipeline = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
    train = pipeline["stages"]["train"]
    train["deps"] = deps_without(REPO_ROOT, train["deps"], "components/model/prompts.py")
    edited = tmp_path / "dvc.yaml"
    edited.write_text(yaml.safe_dump(pipeline, sort_keys=False))

    report = coverage_report(REPO_ROOT, edited)

    assert not report.ok
    assert report.uncovered == {"train": ("components/model/prompts.py",)}, describe(report)
    assert "train -> components/model/prompts.py" in describe(report)


def test_the_check_names_stages_only_one_side_has(tmp_path):
    pipeline = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
    del pipeline["stages"]["explain"]
    pipeline["stages"]["renamed"] = {"cmd": "tunegate stage no-such-stage", "deps": []}
    edited = tmp_path / "dvc.yaml"
    edited.write_text(yaml.safe_dump(pipeline, sort_keys=False))

    report = coverage_report(REPO_ROOT, edited)

    assert (report.not_in_dvc_yaml, report.not_in_stages) == (("explain",), ("renamed",)), describe(report)


# --- real DVC: a touched module makes every stage that imports it stale ----------------------------------------


def copy_project(destination: Path) -> None:
    """The project's code (Python files only) and pipeline files, as a checkout holds them."""
    def not_code(directory: str, names: list[str]) -> list[str]:
        return [name for name in names if name == "__pycache__"
                or (Path(directory, name).is_file() and not name.endswith(".py"))]

    for package in PROJECT_PACKAGES:
        shutil.copytree(REPO_ROOT / package, destination / package, ignore=not_code)
    for name in PROJECT_FILES:
        shutil.copy(REPO_ROOT / name, destination / name)


def entry_path(entry: str | dict) -> str:
    return entry if isinstance(entry, str) else next(iter(entry))  # `- path: {cache: false}` form


def data_paths(pipeline: dict) -> set[str]:
    """Every dep that is not code and every out, metric and plot of the stages: what a run would have made."""
    paths = set()
    for stage in pipeline["stages"].values():
        for key in ("deps", "outs", "metrics", "plots"):
            paths.update(entry_path(entry) for entry in stage.get(key) or [])
    return {path for path in paths if path.split("/")[0] not in PROJECT_PACKAGES}


def make_placeholder(root: Path, path: str) -> None:
    """A small file (a name with a suffix) or a directory holding one, so the path exists for DVC."""
    target = root / path
    file = target if target.suffix else target / "placeholder.txt"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(f"placeholder for {path}\n")


def init_repositories(root: Path) -> None:
    from dvc.repo import Repo

    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    for key, value in GIT_IDENTITY:
        subprocess.run(["git", "config", key, value], cwd=root, check=True)
    Repo.init(str(root)).close()


def changed_stages(root: Path) -> set[str]:
    """The stages `dvc status` reports, the always-changed one left out."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        status = repo.status()
    return {name.rsplit(":", 1)[-1] for name in status} - {ALWAYS_CHANGED}


def stale_after_touching(root: Path, module: str) -> set[str]:
    """The stages DVC calls changed once `module` gained a comment line; the file is restored after."""
    file = root / module
    original = file.read_bytes()
    try:
        file.write_bytes(original + TOUCH.encode())
        return changed_stages(root)
    finally:
        file.write_bytes(original)


def test_touching_any_imported_module_makes_its_stages_stale(tmp_path, monkeypatch):
    from dvc.repo import Repo

    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "dvc-site-cache"))  # not the machine's /var/tmp/dvc
    root = tmp_path / "project"
    root.mkdir()
    copy_project(root)
    init_repositories(root)
    monkeypatch.chdir(root)  # DVC's in-process API resolves some paths (the run cache's) against the cwd
    for path in sorted(data_paths(yaml.safe_load((root / "dvc.yaml").read_text()))):
        make_placeholder(root, path)
    with Repo(str(root)) as repo:
        repo.commit(force=True)  # records dvc.lock as if every stage had run, without running one
    assert changed_stages(root) == set(), "a fresh commit leaves nothing but the always-changed stage stale"

    closures = stage_closures(root)
    importers: dict[str, set[str]] = {}
    for stage, closure in closures.items():
        for module in closure.files:
            importers.setdefault(module, set()).add(stage)
    stale = {module: stale_after_touching(root, module) for module in sorted(importers)}

    missed = {module: sorted(importers[module] - {ALWAYS_CHANGED} - stale[module]) for module in importers}
    missed = {module: stages for module, stages in missed.items() if stages}
    assert not missed, ("touching these modules left stages that import them up to date in dvc status "
                        f"(module -> stages): {missed}; add the module to the stages' deps in dvc.yaml")
    assert "train" in stale["components/model/prompts.py"]
    assert changed_stages(root) == set(), "every touched module was restored"
