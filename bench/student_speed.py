"""The served model against PyTorch fp32 eager of the plain fine-tuned model, with quality beside speed:
the plain int8 export, a smaller int8 student (model.keep_layers, distilled) and any other exports, each
with its test accuracy, then each service's requests/s as a share of its bare model's texts/s. Not a test.

    .venv/bin/python bench/student_speed.py --plain-torch artifacts/model --plain-onnx artifacts/onnx \\
        --student-onnx STUDENT_PROJECT/artifacts/onnx [--export NAME=DIR ...] [--quick]

Every model takes raw text (its own tokenizer, its card's max_length), on one thread by default, timed
in alternating rounds so a colleague's job on the shared cores slows all alike: texts/s at batch 32 and
at batch 1 (one text per call), and accuracy on the labelled test split (default artifacts/splits/test.csv).
The service section starts each export's `tunegate serve` app in its own process (one onnxruntime
thread) and loads it with `--clients` connections of one text each (wrk where installed), alternating
with the bare predictor's texts/s at batch 32 on the same thread.
Targets: the student >= 5x PyTorch fp32 at batch 32, its test accuracy >= the plain int8 export's;
each service >= 85% of its bare model's texts/s.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from model_speed import (  # noqa: E402
    batched_probabilities,
    measure,
    onnx_predict_fns,
    quiet_environment,
    time_batches,
    torch_predict_fn,
)

REPO = BENCH.parent


@dataclass(frozen=True)
class Candidate:
    name: str
    predict: Callable
    labels: list[str]  # the label of each output column
    layers: str


def read_labelled(path: Path) -> tuple[list[str], list[str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("text")]
    if not rows or "label" not in rows[0]:
        raise SystemExit(f"{path} has no text and label columns: pass --test-csv (a split of a run)")
    return [row["text"] for row in rows], [row["label"] for row in rows]


def torch_candidate(torch_dir: Path, max_length: int, threads: int) -> Candidate:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(torch_dir))
    labels = [config.id2label[i] for i in range(config.num_labels)]
    return Candidate("pytorch fp32 (plain)", torch_predict_fn(torch_dir, max_length, threads), labels,
                     str(config.num_hidden_layers))


def onnx_candidate(name: str, onnx_dir: Path, threads: int) -> Candidate:
    from components.export.predictor import read_model_card

    card = read_model_card(onnx_dir)
    grouped, _, _ = onnx_predict_fns(onnx_dir, threads)
    layers = str(card.layers) if card.layers else "-"  # an export made before cards named the layers
    if card.base_layers:
        layers += f" (base layers {card.base_layers})"
    return Candidate(f"onnxruntime {card.precision} ({name})", grouped, list(card.labels), layers)


def accuracy(candidate: Candidate, texts: list[str], labels: list[str]) -> tuple[float, list[str]]:
    probabilities = batched_probabilities(candidate.predict, texts, 32)
    predicted = [candidate.labels[i] for i in probabilities.argmax(1)]
    return sum(p == y for p, y in zip(predicted, labels)) / len(labels), predicted


# --- the service against its bare model ---------------------------------------------------------------

def service_share(onnx_dir: Path, texts: list[str], args: argparse.Namespace) -> tuple[float, float]:
    """(median service requests/s, median bare texts/s at batch 32), alternating, on one thread each."""
    from service_speed import start_tunegate, stop_process, wait_until_ready
    from wrk_load import run_client_load, wrk_available

    client = "wrk" if wrk_available() else "httpx"
    bare, _, _ = onnx_predict_fns(onnx_dir, 1)
    service_rates, bare_rates = [], []
    with tempfile.TemporaryDirectory(prefix="tunegate-bench-") as scratch:
        process, url, log = start_tunegate(onnx_dir, 1, Path(scratch))
        try:
            wait_until_ready(url, process, log, {"inputs": texts[:1]})
            run_client_load(client, "warm-up", url, texts, clients=args.clients, seconds=2, max_requests=10**6)
            for _ in range(args.rounds):
                result = run_client_load(client, "service", url, texts, clients=args.clients,
                                         seconds=args.service_seconds, max_requests=10**6)
                if result.failures:
                    raise SystemExit(f"the service failed requests: {result.first_failure}")
                service_rates.append(result.rps)
                bare_rates.append(time_batches(bare, texts, 32))
        finally:
            stop_process(process)
    return statistics.median(service_rates), statistics.median(bare_rates)


def parse_exports(values: list[str]) -> list[tuple[str, Path]]:
    exports = []
    for value in values:
        name, _, path = value.partition("=")
        if not path:
            raise SystemExit(f"--export {value!r}: give NAME=DIR")
        exports.append((name, Path(path)))
    return exports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plain-torch", type=Path, default=REPO / "artifacts" / "model",
                        help="the plain recipe's fine-tuned PyTorch model (the baseline)")
    parser.add_argument("--plain-onnx", type=Path, default=REPO / "artifacts" / "onnx",
                        help="the plain recipe's export")
    parser.add_argument("--student-onnx", type=Path, help="the student's export (a project run with model.keep_layers)")
    parser.add_argument("--export", action="append", default=[], metavar="NAME=DIR", help="more exports to compare")
    parser.add_argument("--test-csv", type=Path, default=REPO / "artifacts" / "splits" / "test.csv")
    parser.add_argument("--texts", type=int, default=512, help="texts per throughput round")
    parser.add_argument("--latency-texts", type=int, default=100, help="batch-1 calls per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clients", type=int, default=16, help="service section: concurrent connections")
    parser.add_argument("--service-seconds", type=float, default=15.0)
    parser.add_argument("--no-service", action="store_true", help="skip the service section")
    parser.add_argument("--quick", action="store_true", help="64 texts, 20 latency calls, 1 round, 5 s loads")
    args = parser.parse_args(argv)
    if args.quick:
        args.texts, args.latency_texts, args.rounds, args.service_seconds = 64, 20, 1, 5.0
    quiet_environment()

    from components.export.predictor import read_model_card
    from components.model.compute import cpu_name

    exports = [("plain", args.plain_onnx)] + ([("student", args.student_onnx)] if args.student_onnx else [])
    exports += parse_exports(args.export)
    test_texts, test_labels = read_labelled(args.test_csv)
    max_length = read_model_card(args.plain_onnx).max_length
    baseline = torch_candidate(args.plain_torch, max_length, args.threads)
    candidates = [baseline] + [onnx_candidate(name, path, args.threads) for name, path in exports]
    texts = [test_texts[i % len(test_texts)] for i in range(args.texts)]
    for candidate in candidates:  # first calls allocate; keep them out of the figures
        candidate.predict(texts[:32])
        candidate.predict(texts[:1])

    scores = {c.name: accuracy(c, test_texts, test_labels) for c in candidates}
    timings = measure({c.name: c.predict for c in candidates}, texts, texts[:args.latency_texts], args.rounds)
    base = timings[baseline.name]
    base_predicted = scores[baseline.name][1]

    print(f"cpu: {cpu_name()}; {args.threads} thread(s) each; {args.rounds} alternating rounds of {len(texts)} texts; "
          f"test accuracy on {len(test_texts)} rows of {args.test_csv}")
    print(f"{'':40}{'layers':>8}{'texts/s @32':>13}{'vs fp32':>9}{'texts/s @1':>12}{'vs fp32':>9}"
          f"{'test acc':>10}{'same label as plain fp32':>26}")
    for candidate in candidates:
        timing = timings[candidate.name]
        at1 = 1000 / timing.median_latency_b1_ms
        correct, predicted = scores[candidate.name]
        agreed = sum(a == b for a, b in zip(predicted, base_predicted)) / len(predicted)
        print(f"{candidate.name:40}{candidate.layers.split(' ')[0]:>8}{timing.throughput_b32:13.1f}"
              f"{timing.throughput_b32 / base.throughput_b32:8.2f}x{at1:12.1f}"
              f"{base.median_latency_b1_ms / timing.median_latency_b1_ms:8.2f}x{correct:10.4f}{agreed:26.2%}")
    for candidate in candidates[1:]:
        if "(base layers" in candidate.layers:
            print(f"  {candidate.name}: {candidate.layers}")
    if args.student_onnx:
        student = next(c for c in candidates if c.name.endswith("(student)"))
        plain = next(c for c in candidates if c.name.endswith("(plain)") and c is not baseline)
        speed = timings[student.name].throughput_b32 / base.throughput_b32
        quality = scores[student.name][0] >= scores[plain.name][0]
        print(f"student at batch 32: {speed:.2f}x PyTorch fp32 (target >= 5x) {'PASS' if speed >= 5 else 'MISS'}; "
              f"test accuracy {scores[student.name][0]:.4f} vs plain int8 {scores[plain.name][0]:.4f} "
              f"{'PASS' if quality else 'MISS'}")

    if args.no_service:
        return 0
    print(f"\nservice: {args.clients} connections of one text each, {args.service_seconds:.0f} s per round, "
          "one onnxruntime thread; bare: the same export's predictor at batch 32 on one thread")
    print(f"{'':40}{'service req/s':>15}{'bare texts/s':>14}{'share':>8}")
    for name, path in exports:
        service, bare = service_share(path, texts, args)
        share = service / bare
        print(f"{name:40}{service:15.1f}{bare:14.1f}{share:8.1%}  (target >= 85%) {'PASS' if share >= 0.85 else 'MISS'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
