"""What a learning curve writes: one CSV row per point, a JSON summary, a plot (metric vs number of
labels, one line per method = the mean over seeds, the seeds' spread as a band) and a markdown table
(method x size, mean ± half-range over seeds) in artifacts/curve/README.md. Plain Python."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

from components.config.curve import ALL

CSV_COLUMNS = ("method", "size", "labels", "seed", "epochs", "best_epoch", "test_score",
               "val_accuracy", "val_macro_f1", "val_entity_f1", "test_accuracy", "test_macro_f1", "test_entity_f1",
               "trainable_share", "seconds_per_epoch", "train_seconds", "cached", "run_id")


@dataclass(frozen=True)
class CurveFiles:
    csv: Path
    json: Path
    plot: Path | None  # None: matplotlib is not installed
    readme: Path


def curve_metric(token_task: bool) -> str:
    """The test metric the curve is drawn with: entity F1 for NER, accuracy for classes."""
    return "entity_f1" if token_task else "accuracy"


def summarize(rows: list[dict], metric: str) -> list[dict]:
    """Per (method, size): the mean and half-range over seeds of the test metric, and of the cost."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["method"], str(row["size"])), []).append(row)
    summary = []
    for (method, size), members in groups.items():
        scores = [m[f"test_{metric}"] for m in members]
        summary.append({"method": method, "size": size, "labels": members[0]["labels"], "seeds": len(members),
                        "mean": mean(scores), "half_range": (max(scores) - min(scores)) / 2,
                        "min": min(scores), "max": max(scores),
                        "trainable_share": mean(m["trainable_share"] for m in members),
                        "seconds_per_epoch": mean(m["seconds_per_epoch"] for m in members)})
    return sorted(summary, key=lambda s: (s["method"], s["labels"]))


def _size_header(size: str, labels: int) -> str:
    return f"all ({labels:,})" if size == ALL else f"{labels:,}"


def markdown_table(summary: list[dict], metric: str, methods: list[str]) -> str:
    """Methods as rows, sizes as columns: `mean ± half-range` of the test metric over seeds."""
    sizes = sorted({(s["labels"], s["size"]) for s in summary})
    header = ["method", "trainable", *(_size_header(size, labels) for labels, size in sizes)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    cells = {(s["method"], s["size"]): s for s in summary}
    for method in methods:
        mine = [s for s in summary if s["method"] == method]
        if not mine:
            continue
        row = [method, f"{mean(s['trainable_share'] for s in mine):.2%}"]
        for _, size in sizes:
            cell = cells.get((method, size))
            row.append("" if cell is None else f"{cell['mean']:.3f} ± {cell['half_range']:.3f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + f"\n\nTest {metric.replace('_', ' ')}: mean ± half the range over seeds.\n"


def write_csv(rows: list[dict], path: Path, metric: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in sorted(rows, key=lambda r: (r["method"], r["labels"], r["seed"])):
            writer.writerow({**row, "test_score": row[f"test_{metric}"]})


def plot_curve(summary: list[dict], metric: str, methods: list[str], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for method in methods:
        mine = sorted((s for s in summary if s["method"] == method), key=lambda s: s["labels"])
        if not mine:
            continue
        xs = [s["labels"] for s in mine]
        line, = axes.plot(xs, [s["mean"] for s in mine], marker="o", label=method)
        axes.fill_between(xs, [s["min"] for s in mine], [s["max"] for s in mine], color=line.get_color(), alpha=0.2)
    axes.set_xscale("log")
    sizes = sorted({s["labels"] for s in summary})
    axes.set_xticks(sizes, labels=[f"{n:,}" for n in sizes])  # the sizes themselves, not powers of ten
    axes.minorticks_off()
    axes.set_xlabel("training labels (rows; log scale)")
    axes.set_ylabel(f"test {metric.replace('_', ' ')}")
    axes.set_title("learning curve: mean over seeds, band = seed range")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def readme_text(table: str, metric: str, command: str, files: CurveFiles, failed: list[dict]) -> str:
    lines = ["# Learning curve", "", f"Made by `{command}`.", "", table]
    if files.plot is not None:
        lines += ["", f"![learning curve]({files.plot.name})"]
    lines += ["", (f"One row per point (method, size, seed) with validation and test {metric.replace('_', ' ')}, "
                   f"trainable share and seconds per epoch: [{files.csv.name}]({files.csv.name}).")]
    if failed:
        lines += ["", "Points that failed (not in the table):", ""]
        lines += [f"- {f['name']}: {f['error'].strip().splitlines()[-1] if f['error'].strip() else ''}" for f in failed]
    return "\n".join(lines) + "\n"


def write_outputs(directory: Path, rows: list[dict], failed: list[dict], token_task: bool, methods: list[str],
                  command: str, extra: dict | None = None) -> tuple[CurveFiles, str]:
    """curve.csv, curve.json, curve.png and README.md under `directory`; returns them and the table."""
    metric = curve_metric(token_task)
    summary = summarize(rows, metric)
    table = markdown_table(summary, metric, methods)
    (directory / "curve.png").unlink(missing_ok=True)  # an earlier curve's plot must not pass for this one's
    plot = plot_curve(summary, metric, methods, directory / "curve.png") if rows else None
    files = CurveFiles(directory / "curve.csv", directory / "curve.json", plot, directory / "README.md")
    write_csv(rows, files.csv, metric)
    files.json.write_text(json.dumps({"metric": metric, "methods": methods, "summary": summary, "points": rows,
                                      "failed": failed, **(extra or {})}, indent=2, default=str) + "\n")
    files.readme.write_text(readme_text(table, metric, command, files, failed))
    return files, table
