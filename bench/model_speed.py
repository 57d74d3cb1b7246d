"""onnxruntime int8 (what tunegate serves) vs PyTorch fp32 eager on the same model and the same texts.
Not a test.

    .venv/bin/python bench/model_speed.py                      # the registry's champion + artifacts/model
    .venv/bin/python bench/model_speed.py --model-dir EXPORT --torch-dir MODEL [--quick]

Both sides take raw text (tokenization included, same tokenizer, same max_length, same thread count)
and are timed in alternating rounds, so a colleague's job on the shared cores slows both alike.
Reports throughput at batch 32, median latency at batch 1, and prediction agreement.
Targets: >= 3x throughput at batch 32, >= 2x lower median latency at batch 1, agreement >= 99%.

Then a GPU section, only where torch sees a CUDA device and onnxruntime has its CUDA provider:
onnxruntime fp16 on CUDA (the export.precision: fp16 export of the same model; the champion's own export
when it is fp16) vs PyTorch fp16 eager on CUDA, same texts, batch 1 and 32. Elsewhere it prints
`GPU: not measured (...)` and no figure. `--gpu-only` skips the CPU section.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_MODEL_NAME = "tunegate-sentiment"
CPU = ["CPUExecutionProvider"]
FALLBACK_TEXTS = [
    "a moving, beautifully acted film", "ninety minutes of tedium", "the plot never quite comes together",
    "a delightful surprise from start to finish", "clumsy, bland and far too long", "sharp writing and a great cast",
]


def quiet_environment() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def default_tracking_uri() -> str:
    return f"sqlite:///{REPO / 'mlflow' / 'mlflow.db'}"


def champion_onnx_dir(tracking_uri: str, model_name: str) -> tuple[Path, str]:
    """The champion's export directory (downloaded once into artifacts/serving) and its version."""
    from components.lifecycle.registry import ModelRegistry
    from components.serving.deployment import load_served_model

    registry = ModelRegistry(tracking_uri, model_name)
    try:
        served = load_served_model(registry, REPO / "artifacts" / "serving", CPU)
    except LookupError as error:
        raise SystemExit(f"{error}\nor pass --model-dir (an ONNX export) and --torch-dir (the PyTorch model)")
    return served.predictor.model_dir, str(served.version)


def resolve_model_dirs(args: argparse.Namespace) -> tuple[Path, Path, str]:
    """(ONNX export dir, PyTorch model dir, a description of where they came from)."""
    if args.model_dir:
        onnx_dir, source = Path(args.model_dir), f"--model-dir {args.model_dir}"
    else:
        onnx_dir, version = champion_onnx_dir(args.tracking_uri, args.model_name)
        source = f"{args.model_name} v{version} (champion) from {args.tracking_uri}"
    torch_dir = Path(args.torch_dir) if args.torch_dir else REPO / "artifacts" / "model"
    for path, what in ((onnx_dir / "model.onnx", "ONNX model"), (torch_dir / "config.json", "PyTorch model")):
        if not path.is_file():
            raise SystemExit(f"no {what} at {path}; pass --model-dir / --torch-dir")
    return onnx_dir, torch_dir, source


def load_texts(path: Path | None, n: int) -> list[str]:
    """n texts from a CSV with a `text` column (default: the project's test split), cycled if short."""
    path = path or REPO / "artifacts" / "splits" / "test.csv"
    texts = FALLBACK_TEXTS
    if path.is_file():
        with path.open(encoding="utf-8", newline="") as handle:
            texts = [row["text"] for row in csv.DictReader(handle) if row.get("text")] or FALLBACK_TEXTS
    return [texts[i % len(texts)] for i in range(n)]


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", help="an ONNX export directory (default: the registry's champion)")
    parser.add_argument("--torch-dir", help="the fine-tuned PyTorch model directory (default: artifacts/model)")
    parser.add_argument("--tracking-uri", default=default_tracking_uri())
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    parser.add_argument("--texts-csv", type=Path, help="CSV with a text column (default: artifacts/splits/test.csv)")


# --- the two predictors ---------------------------------------------------------------------------

def onnx_predict_fns(onnx_dir: Path, threads: int) -> tuple[Callable, Callable, int]:
    """What tunegate serves (each batch split into calls of similar length) and, to show what int8
    alone gives, the same session with one call per batch padded to its longest text, as PyTorch gets
    it. One session for both: two sessions' spinning thread pools would slow each other down."""
    from components.export.predictor import OnnxTextClassifier

    predictor = OnnxTextClassifier(onnx_dir, CPU, intra_op_threads=threads)

    def run(grouping: bool) -> Callable[[list[str]], "np.ndarray"]:
        def predict(texts: list[str]):
            predictor.length_grouping = grouping
            return predictor.predict_proba(texts, batch_size=len(texts))
        return predict

    return run(True), run(False), predictor.max_length


def torch_predict_fn(torch_dir: Path, max_length: int, threads: int) -> Callable[[list[str]], "np.ndarray"]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(threads)
    # transformers' default attention (SDPA), the fastest eager PyTorch has: the baseline at its best.
    model = AutoModelForSequenceClassification.from_pretrained(str(torch_dir)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(torch_dir))

    def predict(texts: list[str]):
        batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.inference_mode():
            return torch.softmax(model(**batch).logits.float(), dim=-1).numpy()

    return predict


# --- measurements ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Timing:
    throughput_b32: float  # texts per second at batch 32
    median_latency_b1_ms: float


def time_batches(predict: Callable, texts: list[str], batch_size: int) -> float:
    """Texts per second over `texts` in batches of batch_size."""
    started = time.perf_counter()
    for start in range(0, len(texts), batch_size):
        predict(texts[start:start + batch_size])
    return len(texts) / (time.perf_counter() - started)


def single_latencies_ms(predict: Callable, texts: list[str]) -> list[float]:
    latencies = []
    for text in texts:
        started = time.perf_counter()
        predict([text])
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def measure(predictors: dict[str, Callable], texts: list[str], latency_texts: list[str],
            rounds: int) -> dict[str, Timing]:
    """Alternate the predictors round by round; the median round for throughput, all calls for latency."""
    throughputs: dict[str, list[float]] = {name: [] for name in predictors}
    latencies: dict[str, list[float]] = {name: [] for name in predictors}
    for _ in range(rounds):
        for name, predict in predictors.items():
            throughputs[name].append(time_batches(predict, texts, 32))
            latencies[name] += single_latencies_ms(predict, latency_texts)
    return {name: Timing(statistics.median(throughputs[name]), statistics.median(latencies[name]))
            for name in predictors}


def batched_probabilities(predict: Callable, texts: list[str], batch_size: int) -> "np.ndarray":
    import numpy as np

    return np.concatenate([predict(texts[s:s + batch_size]) for s in range(0, len(texts), batch_size)])


@dataclass(frozen=True)
class Agreement:
    labels: float  # share of texts where onnxruntime int8 and PyTorch pick the same label
    max_prob_diff: float
    # int8 dynamic quantization scales activations per batch tensor, so a text's scores move a little
    # with its batch-mates; the service batches requests together, so this is worth knowing.
    batch_effect_labels: float  # same label at batch 1 and at batch 32, onnxruntime
    batch_effect_max_prob_diff: float


def agreement(onnx_predict: Callable, torch_predict: Callable, texts: list[str], batch1_texts: list[str]) -> Agreement:
    import numpy as np

    onnx, torch_ = (batched_probabilities(predict, texts, 32) for predict in (onnx_predict, torch_predict))
    alone = batched_probabilities(onnx_predict, batch1_texts, 1)
    together = onnx[:len(batch1_texts)]
    return Agreement(float(np.mean(onnx.argmax(1) == torch_.argmax(1))), float(np.abs(onnx - torch_).max()),
                     float(np.mean(alone.argmax(1) == together.argmax(1))), float(np.abs(alone - together).max()))


# --- GPU: onnxruntime fp16 on CUDA vs PyTorch fp16 eager on CUDA ---------------------------------------

CUDA_PROVIDERS = ["CUDAExecutionProvider", "CPUExecutionProvider"]


def gpu_unavailable() -> str | None:
    """Why the GPU section cannot run here, or None."""
    import onnxruntime
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device"
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return f"onnxruntime {onnxruntime.__version__} here has no CUDAExecutionProvider; install onnxruntime-gpu"
    return None


def fp16_export_dir(onnx_dir: Path, torch_dir: Path, max_length: int, scratch: Path) -> tuple[Path, str]:
    """The champion's export if it is fp16, else an fp16 export of the same PyTorch model (made here)."""
    from components.export.predictor import read_model_card
    from components.export.to_onnx import export_onnx

    if read_model_card(onnx_dir).precision == "fp16":
        return onnx_dir, "the champion's own fp16 export"
    result = export_onnx(torch_dir, scratch / "fp16", precision="fp16", max_length=max_length)
    return result.out_dir, f"an fp16 export of {torch_dir} made for this run (the champion's export is not fp16)"


def torch_cuda_fp16_fn(torch_dir: Path, max_length: int) -> Callable[[list[str]], np.ndarray]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(torch_dir)).eval().half().cuda()
    tokenizer = AutoTokenizer.from_pretrained(str(torch_dir))

    def predict(texts: list[str]):
        batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.inference_mode():
            logits = model(**{k: v.cuda(non_blocking=True) for k, v in batch.items()}).logits
            return torch.softmax(logits.float(), dim=-1).cpu().numpy()  # .cpu() waits for the GPU

    return predict


def gpu_section(onnx_dir: Path, torch_dir: Path, texts: list[str], latency_texts: list[str], rounds: int) -> None:
    reason = gpu_unavailable()
    if reason:
        print(f"GPU: not measured ({reason})")
        return
    import tempfile

    import numpy as np
    import torch

    from components.export.predictor import OnnxTextClassifier, read_model_card

    max_length = read_model_card(onnx_dir).max_length
    with tempfile.TemporaryDirectory(prefix="tunegate-bench-fp16-") as scratch:
        fp16_dir, origin = fp16_export_dir(onnx_dir, torch_dir, max_length, Path(scratch))
        predictor = OnnxTextClassifier(fp16_dir, CUDA_PROVIDERS)
        if predictor.providers[0] != "CUDAExecutionProvider":
            print(f"GPU: not measured (onnxruntime could not start its CUDA provider; it runs on {predictor.providers})")
            return

        def ort_fn(grouping: bool) -> Callable[[list[str]], np.ndarray]:
            def predict(batch: list[str]):
                predictor.length_grouping = grouping
                return predictor.predict_proba(batch, batch_size=len(batch))
            return predict

        predictors = {"onnxruntime fp16 cuda": ort_fn(True), "  same, one padded call": ort_fn(False),
                      "pytorch fp16 cuda": torch_cuda_fp16_fn(torch_dir, max_length)}
        for predict in predictors.values():  # CUDA kernels load and tune on first calls
            for _ in range(3):
                predict(texts[:32])
                predict(texts[:1])
        ort_probs, torch_probs = (batched_probabilities(predictors[name], texts, 32)
                                  for name in ("onnxruntime fp16 cuda", "pytorch fp16 cuda"))
        timings = measure(predictors, texts, latency_texts, rounds)

    ort_t, torch_t = timings["onnxruntime fp16 cuda"], timings["pytorch fp16 cuda"]
    print(f"GPU: {torch.cuda.get_device_name()} (CUDA {torch.version.cuda}); onnx: {origin}")
    print(f"{len(texts)} texts, max_length {max_length}, {rounds} alternating rounds")
    print(f"{'':24}{'texts/s @32':>14}{'median ms @1':>15}")
    for name, timing in timings.items():
        print(f"{name:24}{timing.throughput_b32:14.1f}{timing.median_latency_b1_ms:15.2f}")
    print(f"throughput at batch 32: {ort_t.throughput_b32 / torch_t.throughput_b32:.2f}x, median latency at batch 1: "
          f"{torch_t.median_latency_b1_ms / ort_t.median_latency_b1_ms:.2f}x lower (onnxruntime fp16 vs PyTorch fp16)")
    print(f"agreement: {float(np.mean(ort_probs.argmax(1) == torch_probs.argmax(1))):.2%} of labels, "
          f"max probability difference {float(np.abs(ort_probs - torch_probs).max()):.4f}")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--texts", type=int, default=512, help="texts for throughput and agreement")
    parser.add_argument("--latency-texts", type=int, default=100, help="batch-1 calls per round")
    parser.add_argument("--rounds", type=int, default=3)
    # One thread by default: on shared cores, a runtime whose spinning threads meet another process's
    # work slows down many-fold (seen here: PyTorch at 2 threads 50x slower than at 1 while a colleague's
    # job ran). Pass --threads 2 (or more) on an idle machine.
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for both runtimes (default 1)")
    parser.add_argument("--quick", action="store_true", help="a few seconds: 64 texts, 20 latency calls, 1 round")
    parser.add_argument("--gpu-only", action="store_true", help="only the GPU section (fp16 on CUDA)")
    args = parser.parse_args(argv)
    if args.quick:
        args.texts, args.latency_texts, args.rounds = 64, 20, 1
    quiet_environment()

    onnx_dir, torch_dir, source = resolve_model_dirs(args)
    texts = load_texts(args.texts_csv, args.texts)
    if args.gpu_only:
        print(f"model: {source}\n  onnx: {onnx_dir}\n  torch: {torch_dir}")
        gpu_section(onnx_dir, torch_dir, texts, texts[:args.latency_texts], args.rounds)
        return 0
    onnx_predict, padded_predict, max_length = onnx_predict_fns(onnx_dir, args.threads)
    from components.export.predictor import read_model_card

    # The champion's own precision (int8 unless export.precision says otherwise), named as it is.
    ort_name = f"onnxruntime {read_model_card(onnx_dir).precision}"
    predictors = {ort_name: onnx_predict,
                  "  same, one padded call": padded_predict,
                  "pytorch fp32": torch_predict_fn(torch_dir, max_length, args.threads)}
    for predict in predictors.values():  # first calls allocate; keep them out of the figures
        predict(texts[:32])
        predict(texts[:1])

    agreed = agreement(predictors[ort_name], predictors["pytorch fp32"], texts, texts[:args.latency_texts])
    timings = measure(predictors, texts, texts[:args.latency_texts], args.rounds)
    onnx, torch_ = timings[ort_name], timings["pytorch fp32"]
    padded = timings["  same, one padded call"]
    throughput_ratio = onnx.throughput_b32 / torch_.throughput_b32
    latency_ratio = torch_.median_latency_b1_ms / onnx.median_latency_b1_ms

    import onnxruntime

    from components.model.compute import cpu_name

    print(f"model: {source}\n  onnx: {onnx_dir}\n  torch: {torch_dir}")
    print(f"cpu: {cpu_name()} (onnxruntime {onnxruntime.__version__})")
    print(f"{len(texts)} texts, max_length {max_length}, {args.threads} threads each, {args.rounds} alternating rounds")
    print(f"{'':24}{'texts/s @32':>14}{'median ms @1':>15}")
    for name, timing in timings.items():
        print(f"{name:24}{timing.throughput_b32:14.1f}{timing.median_latency_b1_ms:15.2f}")
    print(f"throughput at batch 32: {throughput_ratio:.2f}x   (target >= 3x)  {verdict(throughput_ratio >= 3)}")
    print(f"  of which: {ort_name} on the same padded batches as PyTorch {padded.throughput_b32 / torch_.throughput_b32:.2f}x, "
          f"then splitting each batch into calls of similar length {onnx.throughput_b32 / padded.throughput_b32:.2f}x")
    print(f"median latency at batch 1: {latency_ratio:.2f}x lower   (target >= 2x)  {verdict(latency_ratio >= 2)}")
    print(f"agreement: {agreed.labels:.2%} of labels, max probability difference {agreed.max_prob_diff:.4f}   "
          f"(target >= 99%)  {verdict(agreed.labels >= 0.99)}")
    print(f"batch effect (onnxruntime batch 1 vs batch 32, {args.latency_texts} texts): "
          f"{agreed.batch_effect_labels:.2%} same label, "
          f"max probability difference {agreed.batch_effect_max_prob_diff:.4f}")
    gpu_section(onnx_dir, torch_dir, texts, texts[:args.latency_texts], args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
