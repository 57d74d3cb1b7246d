"""The local service vs Ray Serve with 1 and 2 replicas, on the same int8 export, under the same client load
(bench/service_speed.py's clients). Not a test.

    .venv/bin/python bench/ray_serve_speed.py                    # the registry's champion
    .venv/bin/python bench/ray_serve_speed.py --model-dir EXPORT [--quick]

Every server runs the same app (create_app over the export, one onnxruntime intra-op thread per process):
the local one in its own process (uvicorn), the Ray ones as replicas of one CPU each of a Ray instance this
script starts on 127.0.0.1 (components/serving/ray_engine.py: the application `tunegate serve` runs with
serve.engine: ray). Reports requests/s, p50/p99 and the ratios 2 replicas / 1 replica, Ray 1 replica / local.
A 2-core machine has no core to spare for Ray's proxy: there the ratios measure Ray's overhead, not its scaling.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from model_speed import champion_onnx_dir, default_tracking_uri, load_texts, quiet_environment  # noqa: E402
from service_speed import (  # noqa: E402
    LoadResult,
    percentiles_line,
    run_load,
    start_tunegate,
    stop_process,
    wait_until_ready,
)

DEFAULT_MODEL_NAME = "tunegate-sentiment"
READY_TIMEOUT_S = 180.0


def bench_app(model_dir: Path, threads: int, replica_id: str, target: object):
    """A Ray replica's app: the local bench server's app (service_speed.serve_tunegate), built in the replica."""
    from components.config import ServiceSettings
    from components.export.predictor import OnnxTextClassifier
    from components.serving.app import create_app
    from components.serving.holder import ServedModel

    predictor = OnnxTextClassifier(model_dir, ["CPUExecutionProvider"], intra_op_threads=threads)
    return create_app(ServedModel(predictor, {"model_name": "bench", "model_version": "bench"}), ServiceSettings())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_answers(url: str, probe: dict) -> float:
    import httpx

    started = time.monotonic()
    while time.monotonic() - started < READY_TIMEOUT_S:
        try:
            if httpx.post(f"{url}/invocations", json=probe, timeout=10).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} not answering after {READY_TIMEOUT_S} s")


def measure(name: str, url: str, texts: list[str], args: argparse.Namespace) -> LoadResult:
    run_load(name, url, texts, clients=args.clients, seconds=min(2.0, args.seconds), max_requests=200)  # warm-up
    return run_load(name, url, texts, clients=args.clients, seconds=args.seconds, max_requests=args.max_requests)


def measure_local(model_dir: Path, texts: list[str], args: argparse.Namespace, scratch: Path) -> LoadResult:
    process, url, log = start_tunegate(model_dir, args.threads, scratch)
    try:
        wait_until_ready(url, process, log, {"inputs": texts[:1]})
        return measure("local (1 process)", url, texts, args)
    finally:
        stop_process(process)


def measure_ray(model_dir: Path, texts: list[str], args: argparse.Namespace) -> list[LoadResult]:
    from components.serving.ray_engine import APP_NAME, build_ray_application, run_application, start_ray, stop_ray

    start_ray("", num_cpus=os.cpu_count())  # before Ray's first import: it sets what Ray reads then
    from ray import serve

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    results = []
    try:
        for replicas in (1, 2):
            application = build_ray_application(partial(bench_app, model_dir, args.threads), replicas=replicas,
                                                num_cpus=1.0)
            run_application(application, "127.0.0.1", port, proxy_location="HeadOnly")
            ready_s = wait_for_answers(url, {"inputs": texts[:1]})
            print(f"ray, {replicas} replica(s): answering {ready_s:.1f} s after deploy", flush=True)
            results.append(measure(f"ray ({replicas} replica{'s' if replicas > 1 else ''})", url, texts, args))
            serve.delete(APP_NAME)
    finally:
        stop_ray()
    return results


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, help="an ONNX export directory (default: the registry's champion)")
    parser.add_argument("--tracking-uri", default=default_tracking_uri())
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    parser.add_argument("--texts-csv", type=Path, help="CSV with a text column (default: artifacts/splits/test.csv)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0, help="load per server")
    parser.add_argument("--max-requests", type=int, default=100_000, help="cap per server")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads per process/replica")
    parser.add_argument("--quick", action="store_true", help="5 s per server")
    args = parser.parse_args(argv)
    quiet_environment()
    if args.quick:
        args.seconds = 5.0
    model_dir = args.model_dir or champion_onnx_dir(args.tracking_uri, args.model_name)[0]
    texts = load_texts(args.texts_csv, 512)
    with tempfile.TemporaryDirectory(prefix="tunegate-bench-") as scratch:
        local = measure_local(Path(model_dir), texts, args, Path(scratch))
    one, two = measure_ray(Path(model_dir), texts, args)

    print(f"model: {model_dir}\n{args.clients} concurrent clients, one text per request, {args.seconds:.0f} s per "
          f"server, {args.threads} intra-op thread(s) per process/replica, {os.cpu_count()} cores, 127.0.0.1")
    print(f"{'':22}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'requests':>10}{'failed':>10}")
    for result in (local, one, two):
        print(percentiles_line(result) + (f"   first failure: {result.first_failure}" if result.first_failure else ""))
    for label, ours, base in (("ray 2 replicas / 1 replica:", two, one), ("ray 1 replica / local:     ", one, local)):
        print(f"ratio  {label} requests/s {ratio(ours.rps, base.rps)}, "
              f"p50 {ratio(ours.percentile_ms(0.5), base.percentile_ms(0.5))}, "
              f"p99 {ratio(ours.percentile_ms(0.99), base.percentile_ms(0.99))}")
    return 0 if not (local.failures or one.failures or two.failures) else 1


if __name__ == "__main__":
    raise SystemExit(main())
