"""What serve.log_pii costs: screening the prediction log for personal data (components/serving/prediction_log.py,
LogScreen). Not a test.

    .venv/bin/python bench/log_pii_cost.py [EXPORT_DIR] [--seconds 15] [--clients 16] [--threads 1]

1. Microseconds per logged request (one text, the writer thread's whole job: scan, redact, JSON, append to a
   .jsonl file) under keep, redact and drop, on review texts without personal data (the test split) and the
   same texts with an e-mail, phone number, card number or IBAN written into them.
2. The service's requests/s and latency with a prediction log at sample rate 1.0 (every request logged), log_pii
   keep vs redact, one text per request, one in ten holding personal data: each in a server process of its own
   on 127.0.0.1 (EXPORT_DIR, default artifacts/onnx), loaded by the same client (wrk when installed) one after
   the other, in the order keep, redact, redact, keep (the spread of each pair shows the run-to-run noise).

The load average before and after is printed: on a shared machine, other processes' work shows up as noise.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from model_speed import load_texts, quiet_environment  # noqa: E402
from service_speed import (  # noqa: E402
    free_port,
    percentiles_line,
    start_process,
    stop_process,
    thread_env,
    wait_until_ready,
)
from wrk_load import run_client_load, wrk_available  # noqa: E402

DEFAULT_EXPORT = Path("/work/main/artifacts/onnx")
# Personal data written into a review the way a customer might; the card passes Luhn and the IBAN mod 97.
SEEDS = ("you can mail me at maria.garcia@example.co.uk", "call me on +44 7911 123456",
         "I paid with 4111 1111 1111 1111", "refund me to DE89 3704 0044 0532 0130 00")
PII_SHARE = 10  # one request in this many holds personal data in the service load
PREDICTION = {"label": "positive", "score": 0.91, "scores": {"negative": 0.09, "positive": 0.91}}


def with_pii(texts: list[str]) -> list[str]:
    """The texts with a seed of personal data appended, the seeds in turn."""
    return [f"{text.rstrip('. ')}, {SEEDS[i % len(SEEDS)]}." for i, text in enumerate(texts)]


def service_texts(texts: list[str]) -> list[str]:
    return [with_pii([text])[0] if i % PII_SHARE == 0 else text for i, text in enumerate(texts)]


# --- 1. the writer thread's cost per logged request ----------------------------------------------------------

def us_per_logged_request(policy: str, texts: list[str], scratch: Path, repeat: int) -> float:
    """Microseconds per PredictionLog.write of one text (the scanner built beforehand, as the service does)."""
    from components.serving.prediction_log import LogScreen, PredictionLog

    screen = LogScreen(policy)
    screen.prepare()
    log = PredictionLog(scratch / f"{policy}-{time.monotonic_ns()}.jsonl", 1.0, screen=screen)
    for text in texts[:50]:  # warm: regexes' first matches, the file's creation
        log.write("1", [text], [PREDICTION])
    started = time.perf_counter()
    for _ in range(repeat):
        for text in texts:
            log.write("1", [text], [PREDICTION])
    return (time.perf_counter() - started) / (repeat * len(texts)) * 1e6


def writer_costs(texts: list[str], scratch: Path) -> None:
    started = time.perf_counter()
    from components.serving.prediction_log import scanner_factory

    scanner_factory()()  # Presidio's import and the first build: what the service's startup pays once
    print(f"scanner built in {time.perf_counter() - started:.1f} s (Presidio's import: once per process, at "
          "the service's startup)\n")
    print(f"{'µs per logged request':24}{'keep':>10}{'redact':>10}{'drop':>10}")
    for name, sample in (("reviews, no PII", texts), ("reviews with PII", with_pii(texts))):
        costs = [us_per_logged_request(policy, sample, scratch, repeat=3) for policy in ("keep", "redact", "drop")]
        print(f"{name:24}" + "".join(f"{cost:10.0f}" for cost in costs))


# --- 2. the service's requests/s -----------------------------------------------------------------------------

def serve(export_dir: Path, port: int, threads: int, log_path: Path, policy: str) -> None:
    """The server process: tunegate's app on the export, every request logged under `policy`."""
    from components.config import ServiceSettings
    from components.export.predictor import OnnxTextClassifier
    from components.serving.app import create_app
    from components.serving.holder import ServedModel
    from components.serving.server import serve_forever

    predictor = OnnxTextClassifier(export_dir, ["CPUExecutionProvider"], intra_op_threads=threads)
    settings = ServiceSettings(prediction_log=log_path, prediction_log_sample_rate=1.0, log_pii=policy)
    serve_forever(create_app(ServedModel(predictor, {"model_name": "bench", "model_version": "bench"}), settings),
                  "127.0.0.1", port)


def measure_service(policy: str, args: argparse.Namespace, texts: list[str], scratch: Path, run: int):
    port = free_port()
    server_log, prediction_log = scratch / f"server-{policy}-{run}.log", scratch / f"predictions-{policy}-{run}.jsonl"
    command = [sys.executable, str(Path(__file__).resolve()), str(args.export_dir), "--serve", policy,
               "--port", str(port), "--threads", str(args.threads), "--log-path", str(prediction_log)]
    process = start_process(command, server_log, thread_env(args.threads))
    url = f"http://127.0.0.1:{port}"
    try:
        ready_s = wait_until_ready(url, process, server_log, {"inputs": texts[:1]})
        name = f"log_pii {policy}"
        run_client_load(args.client, name, url, texts, clients=args.clients, seconds=2, max_requests=500)  # warm
        result = run_client_load(args.client, name, url, texts, clients=args.clients, seconds=args.seconds,
                                 max_requests=1_000_000)
    finally:
        stop_process(process)
    lines = prediction_log.read_text(encoding="utf-8").count("\n") if prediction_log.exists() else 0
    placeholders = prediction_log.read_text(encoding="utf-8").count('"pii":') if prediction_log.exists() else 0
    return result, ready_s, lines, placeholders


def service_rates(args: argparse.Namespace, texts: list[str], scratch: Path) -> None:
    texts = service_texts(texts)
    print(f"\nservice, prediction log at sample rate 1.0, {args.clients} clients ({args.client}), one text per request, "
          f"1 in {PII_SHARE} with PII, {args.threads} onnxruntime thread(s), {args.seconds:g} s each")
    print(f"{'':22}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'requests':>10}{'failures':>10}"
          f"{'ready s':>9}{'logged':>9}{'redacted':>9}")
    results: dict[str, list[float]] = {}
    # keep, redact, redact, keep: a load that drifts during the runs (another process starting or ending) weighs
    # on both means alike.
    for run, policy in enumerate(("keep", "redact", "redact", "keep")):
        result, ready_s, lines, redacted = measure_service(policy, args, texts, scratch, run)
        results.setdefault(policy, []).append(result.rps)
        print(f"{percentiles_line(result)}{ready_s:9.1f}{lines:9d}{redacted:9d}", flush=True)
    keep, redact = (sum(results[policy]) / len(results[policy]) for policy in ("keep", "redact"))
    print(f"mean requests/s: keep {keep:.1f}, redact {redact:.1f}: redact / keep {redact / keep:.2f}x")


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("export_dir", nargs="?", type=Path, default=DEFAULT_EXPORT, help="an ONNX export directory")
    parser.add_argument("--texts-csv", type=Path, help="texts (column `text`); default: the test split")
    parser.add_argument("--seconds", type=float, default=15.0, help="load per server")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads of each server")
    parser.add_argument("--client", choices=("wrk", "httpx"), default="wrk" if wrk_available() else "httpx")
    parser.add_argument("--skip-service", action="store_true", help="only the writer's µs per request")
    parser.add_argument("--serve", choices=("keep", "redact", "drop"), help=argparse.SUPPRESS)  # server mode
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--log-path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quiet_environment()
    if args.serve:
        serve(args.export_dir, args.port, args.threads, args.log_path, args.serve)
        return 0
    texts = load_texts(args.texts_csv, 512)
    print(f"load average before: {load_average()} ({os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory(prefix="tunegate-log-pii-") as scratch:
        writer_costs(texts, Path(scratch))
        if not args.skip_service:
            service_rates(args, texts, Path(scratch))
    print(f"load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
