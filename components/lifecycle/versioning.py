"""Lineage: the git commit of the code and the DVC version of the data, and running DVC itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml


class VersioningError(RuntimeError):
    pass


def tool_env() -> dict[str, str]:
    """Environment for DVC and the stage commands it runs: this interpreter's scripts come first."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


def run_dvc(root: Path, *args: str, capture: bool = False, check: bool = True) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "dvc", *args]
    done = subprocess.run(command, cwd=root, env=tool_env(), text=True,
                          capture_output=capture, stdin=subprocess.DEVNULL)
    if check and done.returncode != 0:
        detail = (done.stderr or done.stdout or "").strip() if capture else "see the output above"
        raise VersioningError(f"`dvc {' '.join(args)}` failed in {root} (exit {done.returncode}): {detail}")
    return done


def git_commit(root: Path) -> str:
    """HEAD's commit, with '-dirty' when tracked files differ from it; 'unknown' outside git."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)

    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
        return "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    return head.stdout.strip() + ("-dirty" if dirty else "")


LOCAL_REMOTE = "tunegate-local"


def ensure_remote(root: Path) -> str:
    """The project's default DVC remote; without one, a local directory remote under .tunegate/.

    It is written to .dvc/config.local (not committed): a path on this machine means nothing on
    another. Configure a shared remote with `dvc remote add -d NAME URL` and it is used instead.
    """
    # `dvc remote default` exits 1 when none is set: that is an answer, not a failure.
    configured = run_dvc(root, "remote", "default", capture=True, check=False)
    if configured.returncode == 0 and configured.stdout.strip():
        return configured.stdout.strip()
    directory = root / ".tunegate" / "dvc-remote"
    directory.mkdir(parents=True, exist_ok=True)
    run_dvc(root, "remote", "add", "--local", "--default", LOCAL_REMOTE, str(directory), capture=True)
    return LOCAL_REMOTE


def version_data(root: Path, data_dir: Path) -> str:
    """`dvc add` the data directory (a no-op when unchanged), push it, and return its DVC hash."""
    dvc_file = str(data_dir.relative_to(root)) + ".dvc"
    run_dvc(root, "add", "--quiet", str(data_dir.relative_to(root)), capture=True)
    run_dvc(root, "push", "--quiet", "--remote", ensure_remote(root), dvc_file, capture=True)
    return data_hash(root / dvc_file)


def data_hash(dvc_file: Path) -> str:
    if not dvc_file.is_file():
        raise VersioningError(f"{dvc_file}: missing; run `tunegate ingest` to create and track the data")
    outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or []
    if not outs or "md5" not in outs[0]:
        raise VersioningError(f"{dvc_file}: has no md5; run `dvc add` on the data")
    return outs[0]["md5"]


def stage_output_hash(root: Path, stage: str, path: str) -> str | None:
    """The md5 dvc.lock records for one output of a stage: the identity of what the stage built."""
    lock = root / "dvc.lock"
    if not lock.is_file():
        return None
    stage_lock = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).get(stage, {})
    for out in stage_lock.get("outs", []):
        if out.get("path") == path:
            return out.get("md5")
    return None
