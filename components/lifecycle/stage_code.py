"""Which project modules each dvc.yaml stage's command can run, and which of them its deps miss.

dvc.yaml lists every stage's code deps by hand. A module a stage imports but does not list lets a code
change through unnoticed: `dvc status` says the stage is up to date and the registry records a new git
commit beside outputs the old code made. This module reads the code (with `ast`, importing nothing) and
computes, per stage, the closure of project modules its command can import; tests/test_stage_code.py
checks dvc.yaml's deps against it.

The closure is conservative on purpose: a false dependency costs a re-run, a missed one a stale model.
Every import statement of a reached module counts, at module level or inside a function, whether or not
that branch runs for the stage; so does a string constant that names a project module (`python -m
components.x` launched as a subprocess).

What `tunegate stage NAME` runs besides components/stages.py: tunegate/cli.py's cmd_stage builds a
ProjectLayout (components.layout), loads params.yaml with components.config.load_params and calls
STAGES[NAME]. Those two modules are roots of every closure (CLI_STAGE_PATH_MODULES; stages.py imports them
too). tunegate/cli.py itself is left out: the rest of its stage path is environment defaults that silence
telemetry and progress bars, the argument parser and the error-to-message mapping every verb shares, none
of which shapes a stage's outputs; as a dep, a change to any other verb (serve, promote, ...) would re-train
the model.
"""

from __future__ import annotations

import ast
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

PROJECT_PACKAGES = ("components", "flows", "tunegate")
STAGES_MODULE = "components.stages"
STAGES_MAPPING = "STAGES"
# What tunegate/cli.py's cmd_stage uses before it calls the stage (see the module docstring).
CLI_STAGE_PATH_MODULES = ("components.layout", "components.config")
# A dotted name that could be a project module, e.g. the target of `python -m components.model.sweep`.
_MODULE_NAME = re.compile(rf"^(?:{'|'.join(PROJECT_PACKAGES)})(?:\.[A-Za-z_][A-Za-z0-9_]*)+$")


@dataclass(frozen=True)
class StageClosure:
    """The project modules one stage's command can import, as files relative to the project root."""

    stage: str
    files: tuple[str, ...]

    def __contains__(self, file: str) -> bool:
        return file in self.files


@dataclass(frozen=True)
class CoverageReport:
    """dvc.yaml against the code: per stage the closure files its deps miss, and stages only one side has."""

    uncovered: dict[str, tuple[str, ...]]
    not_in_dvc_yaml: tuple[str, ...]  # in STAGES, but no dvc.yaml stage runs `tunegate stage NAME`
    not_in_stages: tuple[str, ...]  # dvc.yaml stages whose cmd is not `tunegate stage NAME` of a STAGES entry

    @property
    def ok(self) -> bool:
        return not (self.uncovered or self.not_in_dvc_yaml or self.not_in_stages)


# --- modules and files -------------------------------------------------------------------------------------


def module_file(root: Path, module: str) -> Path | None:
    """The file that defines a project module (a.b -> a/b.py or a/b/__init__.py), or None if there is none."""
    if module.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def relative_file(root: Path, file: Path) -> str:
    return file.relative_to(root).as_posix()


def parse_file(file: Path) -> ast.Module:
    return ast.parse(file.read_text(encoding="utf-8"), filename=str(file))


def enclosing_packages(module: str) -> list[str]:
    """a.b.c -> [a, a.b]: importing a module runs every package __init__ above it."""
    parts = module.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts))]


# --- import statements -------------------------------------------------------------------------------------


def _relative_base(module: str, is_package: bool, level: int) -> str | None:
    """The package a relative import of `level` dots starts from, or None if it climbs above the top."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    if level - 1 > len(package) - 1:
        return None
    return ".".join(package[: len(package) - (level - 1)])


def imported_names(node: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every dotted name the import statements and module-name strings under `node` may load.

    `from a.b import c` yields a.b and a.b.c: c may be a submodule (a/b/c.py) or just a name in a.b;
    module_file keeps what exists."""
    names: set[str] = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Import):
            names.update(alias.name for alias in child.names)
        elif isinstance(child, ast.ImportFrom):
            base = child.module or ""
            if child.level:
                package = _relative_base(module, is_package, child.level)
                if package is None:
                    continue
                base = f"{package}.{base}" if base else package
            if base:
                names.add(base)
                names.update(f"{base}.{alias.name}" for alias in child.names if alias.name != "*")
        elif isinstance(child, ast.Constant) and isinstance(child.value, str) and _MODULE_NAME.match(child.value):
            names.add(child.value)
    return names


def project_modules(root: Path, names: Iterable[str]) -> set[str]:
    """The names that are project modules with a file, each with the packages above it."""
    found: set[str] = set()
    for name in names:
        if module_file(root, name) is not None:
            found.add(name)
            found.update(package for package in enclosing_packages(name) if module_file(root, package))
    return found


# --- the stage functions in components/stages.py -------------------------------------------------------------


def stage_functions(stages_tree: ast.Module) -> dict[str, str]:
    """STAGES of components/stages.py read from its source: stage name -> the function's name."""
    for statement in stages_tree.body:
        target = statement.target if isinstance(statement, ast.AnnAssign) else (
            statement.targets[0] if isinstance(statement, ast.Assign) and len(statement.targets) == 1 else None)
        if isinstance(target, ast.Name) and target.id == STAGES_MAPPING and isinstance(statement.value, ast.Dict):
            return {key.value: value.id for key, value in zip(statement.value.keys, statement.value.values)
                    if isinstance(key, ast.Constant) and isinstance(value, ast.Name)}
    raise ValueError(f"{STAGES_MODULE} has no literal {STAGES_MAPPING} dict of name -> function")


def _top_level_definitions(tree: ast.Module) -> dict[str, ast.AST]:
    return {node.name: node for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


_NEW_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef,
               ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _own_scope(node: ast.AST) -> Iterable[ast.AST]:
    """The nodes of a function's own scope: nested functions, classes and comprehensions left out."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield child  # its name is bound here; its body is a scope of its own
        elif not isinstance(child, _NEW_SCOPES):
            yield child
            yield from _own_scope(child)


def local_names(function: ast.AST) -> set[str]:
    """The names a function binds itself (arguments, assignments, imports, nested defs). A local variable
    named like a module-level function (export's `train = pd.read_csv(...)`) does not refer to it."""
    if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return set()  # a class body: every name counts, the conservative side
    arguments = function.args
    names = {arg.arg for arg in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs,
                                 arguments.vararg, arguments.kwarg) if arg is not None}
    declared_global: set[str] = set()
    for node in _own_scope(function):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            declared_global.update(node.names)
    return names - declared_global


def referenced_names(definition: ast.AST) -> set[str]:
    """The free names a top-level function or class reads (nested scopes included)."""
    loaded = {node.id for node in ast.walk(definition) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}
    return loaded - local_names(definition)


def reached_definitions(tree: ast.Module, function: str) -> list[ast.AST]:
    """The stage function and every top-level function or class of the module it refers to, transitively
    (a stage -> a helper function of stages.py it calls -> the helpers that one calls)."""
    definitions = _top_level_definitions(tree)
    reached: dict[str, ast.AST] = {}
    pending = [function]
    while pending:
        name = pending.pop()
        if name in reached or name not in definitions:
            continue
        reached[name] = definitions[name]
        pending.extend(referenced_names(definitions[name]))
    return list(reached.values())


def _module_level_imports(tree: ast.Module) -> ast.Module:
    """The module with its functions and classes dropped: what runs when it is imported."""
    kept = [node for node in tree.body if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    return ast.Module(body=kept, type_ignores=[])


def stage_roots(root: Path, stages_tree: ast.Module, function: str) -> set[str]:
    """The modules a stage's command imports first: stages.py itself, what it imports at module level,
    what the stage function and the definitions it refers to import, and the CLI's stage path."""
    names = set(imported_names(_module_level_imports(stages_tree), STAGES_MODULE, is_package=False))
    for definition in reached_definitions(stages_tree, function):
        names |= imported_names(definition, STAGES_MODULE, is_package=False)
    return project_modules(root, names | {STAGES_MODULE, *CLI_STAGE_PATH_MODULES})


# --- closures ------------------------------------------------------------------------------------------------


def import_closure(root: Path, roots: Iterable[str], resolved: Iterable[str] = ()) -> set[str]:
    """Every project module reachable from `roots` through any import statement of a reached module's file.

    `resolved` are roots whose imports the caller has already followed (stages.py: only the stage's own
    function counts); should another reached module import one of them, its whole file is read after all."""
    resolved = set(resolved)
    reached: set[str] = set()
    read: set[str] = set()
    pending = [(module, module not in resolved) for module in roots]
    while pending:
        module, follow = pending.pop()
        file = module_file(root, module)
        if file is None:
            continue
        reached.add(module)
        if not follow or module in read:
            continue
        read.add(module)
        names = imported_names(parse_file(file), module, is_package=file.name == "__init__.py")
        pending.extend((name, True) for name in project_modules(root, names) - read)
    return reached


def stage_closures(root: Path) -> dict[str, StageClosure]:
    """For every stage in STAGES, the files of the project modules its command can import."""
    stages_tree = parse_file(root.joinpath(*STAGES_MODULE.split(".")).with_suffix(".py"))
    closures = {}
    for stage, function in stage_functions(stages_tree).items():
        modules = import_closure(root, stage_roots(root, stages_tree, function), resolved=[STAGES_MODULE])
        files = sorted(relative_file(root, module_file(root, module)) for module in modules)
        closures[stage] = StageClosure(stage, tuple(files))
    return closures


# --- dvc.yaml ------------------------------------------------------------------------------------------------


def read_dvc_stages(dvc_yaml: Path) -> dict[str, dict]:
    """dvc.yaml's `stages` mapping."""
    import yaml  # a project dependency; imported here so the analysis above needs the standard library only

    return (yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}).get("stages") or {}


def stage_deps(dvc_stages: Mapping[str, dict]) -> dict[str, tuple[str, ...]]:
    """dvc.yaml's stages: name -> dep paths."""
    return {name: tuple(_dep_path(dep) for dep in (stage.get("deps") or [])) for name, stage in dvc_stages.items()}


def stage_commands(dvc_stages: Mapping[str, dict]) -> dict[str, str]:
    """dvc.yaml's stages: name -> the STAGES name its cmd runs (`tunegate [--project P] stage NAME`), or ''."""
    return {name: _tunegate_stage(str(stage.get("cmd", ""))) for name, stage in dvc_stages.items()}


def _dep_path(dep: str | Mapping) -> str:
    return dep if isinstance(dep, str) else next(iter(dep))  # `- path: {...}` form


def _tunegate_stage(cmd: str) -> str:
    words = shlex.split(cmd)
    if words[:1] != ["tunegate"] or "stage" not in words:
        return ""
    position = words.index("stage")
    return words[position + 1] if position + 1 < len(words) else ""


def covers(dep: str, file: str) -> bool:
    """A dep covers a file when it is the file or a directory above it."""
    dep_path, file_path = PurePosixPath(dep.rstrip("/")), PurePosixPath(file)
    return dep_path == file_path or dep_path in file_path.parents


def uncovered_files(closure: StageClosure, deps: Iterable[str]) -> tuple[str, ...]:
    deps = list(deps)
    return tuple(file for file in closure.files if not any(covers(dep, file) for dep in deps))


def coverage_report(root: Path, dvc_yaml: Path) -> CoverageReport:
    """dvc.yaml's deps against the code of `root`: what each stage's deps miss of its closure."""
    closures, dvc_stages = stage_closures(root), read_dvc_stages(dvc_yaml)
    deps, commands = stage_deps(dvc_stages), stage_commands(dvc_stages)
    uncovered = {}
    for stage, runs in commands.items():
        if runs in closures and (missing := uncovered_files(closures[runs], deps[stage])):
            uncovered[stage] = missing
    return CoverageReport(
        uncovered=uncovered,
        not_in_dvc_yaml=tuple(sorted(set(closures) - set(commands.values()))),
        not_in_stages=tuple(sorted(stage for stage, runs in commands.items() if runs not in closures)),
    )
