"""Batch scoring: `tunegate predict` (int8 ONNX, chunked, length-grouped calls) vs a naive loop over
the transformers pipeline on the same fine-tuned model, on the same texts, in one run. Not a test.

    .venv/bin/python bench/batch_predict.py                     # the champion, 100,000 texts
    .venv/bin/python bench/batch_predict.py --texts 10000 --threads 1

Each side runs in its own process (so its peak memory is its own) with the same thread count: the
tunegate side calls components.serving.batch_scoring.score_file on a CSV of the texts; the naive side
reads the whole CSV with pandas and calls the pipeline once per text, as a first script would.
Reports texts/s and peak resident memory of each, their ratio, and label agreement.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from model_speed import add_model_arguments, load_texts, quiet_environment, resolve_model_dirs  # noqa: E402


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not getrusage's ru_maxrss: that one survives exec,
    so a child would report its parent's peak if it was higher."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return float("nan")


def tunegate_side(onnx_dir: Path, texts_csv: Path, out: Path, threads: int) -> dict:
    from components.export.predictor import OnnxTextClassifier
    from components.serving.batch_scoring import score_file

    predictor = OnnxTextClassifier(onnx_dir, ["CPUExecutionProvider"], intra_op_threads=threads)
    started = time.perf_counter()
    summary = score_file(predictor, "bench", texts_csv, out, text_column="text")
    seconds = time.perf_counter() - started
    import pandas as pd

    labels = pd.read_csv(out, usecols=["label"])["label"].tolist()
    return {"texts": summary.scored, "seconds": seconds, "labels_head": labels[:2000]}


def naive_side(torch_dir: Path, texts_csv: Path, threads: int, max_length: int) -> dict:
    import pandas as pd
    import torch
    import transformers

    torch.set_num_threads(threads)
    transformers.logging.set_verbosity_error()
    pipe = transformers.pipeline("text-classification", model=str(torch_dir), device="cpu")
    texts = pd.read_csv(texts_csv)["text"].tolist()  # the whole file in memory, as a first script does
    started = time.perf_counter()
    labels = [pipe(text, truncation=True, max_length=max_length)[0]["label"] for text in texts]
    return {"texts": len(texts), "seconds": time.perf_counter() - started, "labels_head": labels[:2000]}


def run_side(args: argparse.Namespace, side: str, texts_csv: Path, scratch: Path, onnx_dir: Path,
             torch_dir: Path, max_length: int) -> dict:
    figures = scratch / f"{side}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--side", side, "--side-out", str(figures),
               "--texts-file", str(texts_csv), "--model-dir", str(onnx_dir), "--torch-dir", str(torch_dir),
               "--threads", str(args.threads), "--max-length", str(max_length)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the {side} side failed:\n{done.stderr[-3000:]}")
    return json.loads(figures.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--texts", type=int, default=100_000, help="texts to score (test split, cycled)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of each side")
    parser.add_argument("--side", choices=["tunegate", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--side-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--texts-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--max-length", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quiet_environment()
    if args.side:  # one side, in its own process
        if args.side == "tunegate":
            result = tunegate_side(Path(args.model_dir), args.texts_file, args.side_out.with_suffix(".csv"),
                                   args.threads)
        else:
            result = naive_side(Path(args.torch_dir), args.texts_file, args.threads, args.max_length)
        args.side_out.write_text(json.dumps({**result, "peak_rss_mb": peak_rss_mb()}))
        return 0

    import pandas as pd

    from components.export.predictor import read_model_card
    from components.model.compute import cpu_name

    onnx_dir, torch_dir, source = resolve_model_dirs(args)
    max_length = read_model_card(onnx_dir).max_length
    with tempfile.TemporaryDirectory(prefix="tunegate-batch-bench-") as scratch_name:
        scratch = Path(scratch_name)
        texts_csv = scratch / "texts.csv"
        pd.DataFrame({"text": load_texts(args.texts_csv, args.texts)}).to_csv(texts_csv, index=False)
        tunegate = run_side(args, "tunegate", texts_csv, scratch, onnx_dir, torch_dir, max_length)
        naive = run_side(args, "naive", texts_csv, scratch, onnx_dir, torch_dir, max_length)

    rate = {name: side["texts"] / side["seconds"] for name, side in (("tunegate", tunegate), ("naive", naive))}
    head = min(len(tunegate["labels_head"]), len(naive["labels_head"]))
    same = sum(a == b for a, b in zip(tunegate["labels_head"], naive["labels_head"])) / head if head else float("nan")
    print(f"model: {source}\n  onnx: {onnx_dir}\n  torch: {torch_dir}\ncpu: {cpu_name()}")
    print(f"{args.texts:,} texts (test split, cycled), {args.threads} thread(s) per side, each side in its own process")
    print(f"{'':34}{'texts/s':>10}{'seconds':>10}{'peak RSS MB':>13}")
    for name, label in (("tunegate", "tunegate predict (int8, chunked)"), ("naive", "pipeline loop (torch fp32)")):
        side = tunegate if name == "tunegate" else naive
        print(f"{label:34}{rate[name]:10.1f}{side['seconds']:10.1f}{side['peak_rss_mb']:13.0f}")
    print(f"throughput: {rate['tunegate'] / rate['naive']:.2f}x; peak memory: "
          f"{naive['peak_rss_mb'] / tunegate['peak_rss_mb']:.2f}x lower with tunegate; "
          f"labels agree on {same:.2%} of the first {head:,} texts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
