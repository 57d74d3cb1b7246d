"""The data steps at scale: ingest, validate, preprocess and 100 training steps on synthetic corpora of several
sizes, each step its own process; wall time and peak resident memory per step, and how they grow with the
rows, side by side in one run. Not a test.

    .venv/bin/python bench/data_scale.py                                  # 1,000,000 and 5,000,000 rows
    .venv/bin/python bench/data_scale.py --rows 20000 100000              # quick
    .venv/bin/python bench/data_scale.py --rows 20000 100000 --skip-train --pii off --json out.json

For each size, in a fresh temporary project (removed afterwards unless --keep):

- corpus: bench/synthetic_corpus.py writes the rows (review-like texts, 1.5% exact repeats, a few conflicting
  ones, 0.5% bad rows of the kinds ingest quarantines; its docstring says what else) as
  incoming/corpus.csv, with the text and label columns, raw labels and data.min_chars / data.max_chars of
  the params file (--params, default: this checkout's params.yaml, the default project).
- params.yaml: that params file with data.source incoming/corpus.csv, train.max_steps --train-steps (100),
  train.checkpoint_every_steps null (and train.num_threads with --threads, data.pii with --pii). data.pii
  stays as the file says otherwise (report in the default project: the pattern recognizers scan ~50,000
  texts/s on a 2-core EPYC after ~5 s of set-up, about 2 minutes at 5M rows); model.base_model too (the
  default: builtin:all-minilm-l6-v2, from ~/.cache/tunegate, offline).
  The corpus holds a few quoted newlines (--paragraphs, 0.2% of rows): one is enough for the CSV reader to
  walk every record in Python after pyarrow (reading 1M rows: 2.7 s and 1.7 GiB peak, against 0.8 s and
  650 MiB with --paragraphs 0).
- `dvc init --no-scm` (not timed): ingest versions data/ with DVC, which needs a repository; no git.
- the steps, one process each, in order: `tunegate ingest`, `tunegate stage validate`, `tunegate stage
  preprocess`, `tunegate stage train` (its validation pass after the last step scores the validation split,
  held to about --validation-rows rows at every size by split.validation_fraction). The adapt and start stages are not run: train starts from the base model
  without their outputs. A step that fails (exit code, or killed: out of memory, --timeout) is reported
  with its exit code; the size's later steps are skipped and the next size goes on.

Per step: wall seconds, seconds per million input rows, CPU seconds (user + system, the step's whole process
tree: far less than wall x cores means waiting, e.g. on the disk or a colleague's job), and two memory
figures. `max proc` is the kernel's high-water mark of the largest single process of the step's tree (the
wait4() rusage of the step: its own peak, or a waited-for child's, whichever is larger; exact). `tree` is the
largest sum of the tree's resident sets seen by sampling /proc every 0.2 s (catches a parent and a child
resident at once, e.g. ingest and its `dvc add`; can miss a short spike). `peak RSS` is the larger of the
two, and the ratio of the last size's to the first size's peak RSS is judged against the bar, 1.3x (memory
that stays flat as the rows grow fivefold). This process stays small (standard library and PyYAML) so that
its own memory, inherited by each child until it execs, is not what is measured; its peak is printed.

Disk: a project holds the corpus, data/ (the accepted rows), DVC's cache and local remote copy of data/,
the splits and the tokenized splits: about 5-6x the corpus (the corpus is ~190 bytes a row). The
5,000,000-row size needs ~6 GB free under --workdir.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CORPUS_SCRIPT = Path(__file__).resolve().parent / "synthetic_corpus.py"
PIPELINE_STEPS = ("ingest", "validate", "preprocess", "train")
STEPS = ("corpus", *PIPELINE_STEPS)
RSS_BAR = 1.3  # peak RSS of the last size / the first size
SAMPLE_SECONDS = 0.2
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


# --- measuring a process tree -----------------------------------------------------------------------------
def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:  # gone since the listing
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def tree_rss_kib(root: int) -> int:
    """The summed resident set of `root` and its descendants now (KiB); shared pages count once per process."""
    children = _children_by_parent()
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, ()))
        try:
            with open(f"/proc/{pid}/statm", "rb") as statm:
                total += int(statm.read().split()[1]) * PAGE_KIB
        except (OSError, IndexError, ValueError):
            continue
    return total


def own_peak_mib() -> float:
    """This process's peak resident memory (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_step(name: str, command: list[str], cwd: Path, env: dict[str, str], log: Path,
             timeout: float | None) -> dict:
    """Run one step to its end; its wall and CPU seconds, exit code and memory figures."""
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with log.open("wb") as out:
        # Its own session: a timeout kills the whole tree (a step's DVC or torchrun children too).
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    tree_peak, timed_out = 0, False
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        try:
            tree_peak = max(tree_peak, tree_rss_kib(process.pid))
        except OSError:
            pass
        if timeout is not None and not timed_out and time.perf_counter() - started > timeout:
            timed_out = True
            os.killpg(process.pid, signal.SIGKILL)
        time.sleep(SAMPLE_SECONDS)
    seconds = time.perf_counter() - started
    process.returncode = code = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    max_proc = usage.ru_maxrss / 1024  # KiB on Linux
    return {
        "step": name,
        "exit": code,
        "timed_out": timed_out,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
        "max_proc_rss_mib": round(max_proc, 1),
        "tree_rss_mib": round(tree_peak / 1024, 1),
        "peak_rss_mib": round(max(max_proc, tree_peak / 1024), 1),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "log": str(log),
    }


def exit_note(record: dict) -> str:
    code = record["exit"]
    if code is None:
        return "skipped"
    if record.get("timed_out"):
        return f"{code} timeout"
    if code < 0:  # killed by a signal; SIGKILL unasked is most likely the kernel's out-of-memory killer
        return f"{code} {signal.Signals(-code).name}" + (" OOM?" if -code == signal.SIGKILL else "")
    return str(code)


# --- a project per size -------------------------------------------------------------------------------------
def raw_labels(data: dict) -> tuple[str, str]:
    """The two raw labels the source should spell, positive-like first: through data.label_map when it has one."""
    labels = list(data.get("labels") or [])
    mapping = {raw: mapped for raw, mapped in (data.get("label_map") or {}).items()
               if raw not in (data.get("exclude_labels") or [])}
    if len(labels) != 2:
        raise SystemExit(f"data.labels {labels}: the synthetic corpus is binary (two labels)")
    order = sorted(labels, key=lambda label: label.casefold() not in ("positive", "pos", "fresh", "good", "1"))
    if mapping:
        raw = {mapped: source for source, mapped in mapping.items()}
        missing = [label for label in order if label not in raw]
        if missing:
            raise SystemExit(f"data.label_map maps no raw label to {missing}")
        return raw[order[0]], raw[order[1]]
    return order[0], order[1]


def project_params(base: dict, args: argparse.Namespace, rows: int | None = None) -> dict:
    params = json.loads(json.dumps(base))  # a deep copy
    if args.validation_rows and rows:
        # The same validation split at every size: the scoring pass after the last step is the same work, and
        # the train step's time and memory compare across sizes.
        params.setdefault("split", {})["validation_fraction"] = min(args.validation_rows / rows, 0.1)
    data = params.setdefault("data", {})
    data["source"] = "incoming/corpus.csv"
    if args.pii:
        data["pii"] = args.pii
    train = params.setdefault("train", {})
    train["max_steps"] = args.train_steps
    train["checkpoint_every_steps"] = None
    if args.threads:
        train["num_threads"] = args.threads
    return params


def step_command(step: str, root: Path, corpus_args: list[str], tunegate: str) -> list[str]:
    if step == "corpus":
        return [sys.executable, str(CORPUS_SCRIPT), str(root / "incoming" / "corpus.csv"), *corpus_args,
                "--json", str(root / "corpus.json")]
    if step == "ingest":
        return [tunegate, "--project", str(root), "ingest"]
    return [tunegate, "--project", str(root), "stage", step]


def directory_bytes(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


def ingest_counts(root: Path) -> dict | None:
    manifest = root / "data" / "manifest.json"
    if not manifest.is_file():
        return None
    batches = json.loads(manifest.read_text())
    batches = batches.get("batches", batches) if isinstance(batches, dict) else batches
    keys = ("rows_read", "accepted", "quarantined", "duplicates")
    return {key: sum(int(b.get(key) or 0) for b in batches) for key in keys}


def run_size(rows: int, args: argparse.Namespace, base_params: dict, tunegate: str, env: dict[str, str]) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"tunegate-scale-{rows}-", dir=args.workdir))
    logs = root / "logs"
    logs.mkdir()
    (root / "incoming").mkdir()
    params = project_params(base_params, args, rows)
    data = params["data"]
    positive, negative = raw_labels(data)
    corpus_args = ["--rows", str(rows), "--seed", str(args.seed), "--text-column", data.get("text_column", "text"),
                   "--label-column", data.get("label_column", "label"), "--labels", positive, negative,
                   "--min-chars", str(data.get("min_chars", 3)), "--max-chars", str(data.get("max_chars", 2000)),
                   "--paragraphs", str(args.paragraphs)]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, env=env, check=True)

    last = "preprocess" if args.skip_train else args.last_step
    steps = list(STEPS[:STEPS.index(last) + 1])
    records, failed = [], None
    print(f"\n{rows:,} rows in {root}", flush=True)
    for step in steps:
        if failed is not None:
            records.append({"step": step, "exit": None, "skipped_after": failed})
            print(f"  {step:<10} skipped ({failed} failed)", flush=True)
            continue
        record = run_step(step, step_command(step, root, corpus_args, tunegate), root, env,
                          logs / f"{step}.log", args.timeout)
        records.append(record)
        print(f"  {step:<10} exit {exit_note(record):<11} {record['seconds']:>9,.1f} s  "
              f"cpu {record['cpu_seconds']:>9,.1f} s"
              f"  peak RSS {record['peak_rss_mib']:>8,.0f} MiB (max proc {record['max_proc_rss_mib']:,.0f}, "
              f"tree {record['tree_rss_mib']:,.0f})  load {record['load_before']:.1f}->{record['load_after']:.1f}",
              flush=True)
        if record["exit"] != 0:
            failed = step
            tail = log_tail(Path(record["log"]), 25)
            if tail.strip():
                print("    " + "\n    ".join(tail.splitlines()), flush=True)
    result = {"rows": rows, "project": str(root), "steps": records}
    corpus_json = root / "corpus.json"
    if corpus_json.is_file():
        result["corpus"] = json.loads(corpus_json.read_text())
    result["ingest"] = ingest_counts(root)
    if result.get("corpus") and result["ingest"]:
        expected, got = result["corpus"]["expected"], result["ingest"]
        print(f"  ingest: {got['accepted']:,} accepted, {got['quarantined']:,} quarantined, {got['duplicates']:,} "
              f"duplicates; the corpus expected {expected['accepted']:,}, {expected['quarantined']:,}, "
              f"{expected['duplicates']:,}", flush=True)
    result["project_bytes"] = {name: directory_bytes(root / name)
                               for name in ("incoming", "data", ".dvc", ".tunegate", "artifacts")}
    sizes = result["project_bytes"].items()
    print("  on disk: " + ", ".join(f"{name} {size / 2**20:,.0f} MiB" for name, size in sizes), flush=True)
    if args.keep:
        print(f"  kept {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return result


def log_tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- the report ---------------------------------------------------------------------------------------------
def per_million(record: dict, rows: int) -> float | None:
    return record["seconds"] / (rows / 1e6) if record.get("exit") == 0 else None


def table(results: list[dict]) -> str:
    header = ("step", "rows", "exit", "peak RSS MiB", "max proc MiB", "tree MiB", "seconds", "s / M rows", "cpu s")
    lines = []
    for result in results:
        for record in result["steps"]:
            ran = record["exit"] is not None
            spm = per_million(record, result["rows"])
            lines.append((record["step"], f"{result['rows']:,}", exit_note(record),
                          f"{record['peak_rss_mib']:,.0f}" if ran else "-",
                          f"{record['max_proc_rss_mib']:,.0f}" if ran else "-",
                          f"{record['tree_rss_mib']:,.0f}" if ran else "-",
                          f"{record['seconds']:,.1f}" if ran else "-",
                          f"{spm:,.1f}" if spm is not None else "-",
                          f"{record['cpu_seconds']:,.1f}" if ran else "-"))
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    render = lambda row: "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)  # noqa: E731
                                   for i, (cell, w) in enumerate(zip(row, widths)))
    return "\n".join([render(header), render(tuple("-" * w for w in widths)), *map(render, lines)])


def ratios(results: list[dict]) -> list[dict]:
    """Last size vs first size, per step that succeeded in both."""
    if len(results) < 2:
        return []
    first, last = results[0], results[-1]
    growth = last["rows"] / first["rows"]
    out = []
    for before in first["steps"]:
        after = next((r for r in last["steps"] if r["step"] == before["step"]), None)
        if after is None or before.get("exit") != 0 or after.get("exit") != 0:
            out.append({"step": before["step"], "rows_ratio": growth, "note": "did not run or failed at a size"})
            continue
        rss = after["peak_rss_mib"] / before["peak_rss_mib"]
        out.append({
            "step": before["step"],
            "rows_ratio": growth,
            "peak_rss_ratio": round(rss, 3),
            "max_proc_rss_ratio": round(after["max_proc_rss_mib"] / before["max_proc_rss_mib"], 3),
            "seconds_ratio": round(after["seconds"] / before["seconds"], 3),
            "seconds_per_million_ratio": round(per_million(after, last["rows"])
                                               / per_million(before, first["rows"]), 3),
            "meets_rss_bar": rss <= RSS_BAR if before["step"] in PIPELINE_STEPS else None,
        })
    return out


def ratio_table(rows: list[dict], first: int, last: int) -> str:
    lines = [f"last size / first size ({last:,} / {first:,} rows = {last / first:.3g}x the rows); "
             f"bar: peak RSS <= {RSS_BAR}x"]
    for r in rows:
        if "peak_rss_ratio" not in r:
            lines.append(f"  {r['step']:<10} {r['note']}")
            continue
        verdict = {None: "", True: "  meets the bar", False: "  MISSES the bar"}[r["meets_rss_bar"]]
        lines.append(f"  {r['step']:<10} peak RSS {r['peak_rss_ratio']:.2f}x "
                     f"(max proc {r['max_proc_rss_ratio']:.2f}x), "
                     f"seconds {r['seconds_ratio']:.2f}x, seconds per million rows "
                     f"{r['seconds_per_million_ratio']:.2f}x{verdict}")
    return "\n".join(lines)


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    memory = None
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
        memory = next(int(line.split()[1]) // 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal:"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_mib": memory, "python": platform.python_version()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000],
                        help="corpus sizes, smallest first (default: 1000000 5000000)")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml",
                        help="the params file each project starts from (default: this checkout's)")
    parser.add_argument("--pii", choices=("off", "report", "redact", "quarantine", "refuse"),
                        help="data.pii in the projects (default: as the params file says)")
    parser.add_argument("--train-steps", type=int, default=100, help="train.max_steps (default 100)")
    parser.add_argument("--skip-train", action="store_true", help="stop after preprocess (--last-step preprocess)")
    parser.add_argument("--last-step", choices=PIPELINE_STEPS, default="train", help="the last step run (default train)")
    parser.add_argument("--validation-rows", type=int, default=20_000,
                        help="about this many validation rows at every size (split.validation_fraction, at most "
                             "the default 0.1); 0 keeps the params file's fraction")
    parser.add_argument("--threads", type=int, help="train.num_threads (default: PyTorch's choice)")
    parser.add_argument("--seed", type=int, default=0, help="the corpus seed")
    parser.add_argument("--paragraphs", type=float, default=0.002,
                        help="share of corpus rows holding a blank line, i.e. quoted newlines (default 0.002)")
    parser.add_argument("--timeout", type=float, help="seconds a step may take before it is killed")
    parser.add_argument("--workdir", type=Path, help="where the projects go (default: the system's temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep each project (and its step logs)")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args(argv)
    sizes = sorted(args.rows)

    tunegate = shutil.which("tunegate", path=str(Path(sys.executable).parent)) or shutil.which("tunegate")
    if tunegate is None:
        raise SystemExit("no `tunegate` next to this Python or on PATH: run it with the project's .venv/bin/python")
    base_params = yaml.safe_load(args.params.read_text()) or {}
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("DVC_NO_ANALYTICS", "1")

    about = machine()
    pii = args.pii or (base_params.get("data") or {}).get("pii", "report")
    print(f"cpu: {about['cpu']} ({about['cores']} cores), memory {about['memory_mib']:,} MiB; params: {args.params}; "
          f"data.pii {pii}; train.max_steps {args.train_steps}" + (" (train skipped)" if args.skip_train else ""))
    results = [run_size(rows, args, base_params, tunegate, env) for rows in sizes]

    print("\n" + table(results))
    compared = ratios(results)
    if compared:
        print("\n" + ratio_table(compared, sizes[0], sizes[-1]))
    print(f"\nthis process's peak RSS: {own_peak_mib():,.0f} MiB (each step's figures include what it inherited "
          "from it before exec)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": about, "args": {k: str(v) if isinstance(v, Path) else v
                                                                   for k, v in vars(args).items()},
                                         "sizes": results, "ratios": compared, "rss_bar": RSS_BAR}, indent=2) + "\n")
        print(f"wrote {args.json}")
    failed = any(r.get("exit") not in (0, None) for result in results for r in result["steps"])
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
