"""The local service vs Ray Serve with 1 and 2 replicas, on the same int8 export, under the same client load.
Not a test.

    .venv/bin/python bench/ray_serve_speed.py                    # the registry's champion
    .venv/bin/python bench/ray_serve_speed.py --model-dir EXPORT [--quick] [--ingress haproxy|proxy|both]

Every server runs the same app (create_app over the export, one onnxruntime intra-op thread per process):
the local one in its own process (uvicorn), the Ray ones as replicas of one CPU each of a Ray instance started
for each ingress (serve.ray_ingress: HAProxy, the default, or Ray's Python proxy; components/serving/
ray_engine.py, the application `tunegate serve` runs with serve.engine: ray). The clients are wrk (Debian's
`wrk`) where installed, else asyncio httpx clients in this process: on a machine whose cores the clients share
with the servers, a light client leaves them to the servers.

Reports requests/s, p50/p99, the ratios 2 replicas / 1 replica and 1 replica / local, and where the CPU goes:
user+system seconds of each process role (client, proxy, replicas, the rest of Ray, the local server) over the
load, per answered request.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
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
    free_port,
    percentiles_line,
    start_tunegate,
    stop_process,
    wait_until_ready,
)
from wrk_load import run_client_load, wrk_available  # noqa: E402

from components.serving.ray_engine import SERVICE_DEPLOYMENT  # noqa: E402 - Ray itself is imported later

DEFAULT_MODEL_NAME = "tunegate-sentiment"
INGRESSES = ("proxy", "haproxy")
READY_TIMEOUT_S = 180.0


def bench_app(model_dir: Path, threads: int, replica_id: str, target: object):
    """A Ray replica's app: the local bench server's app (service_speed.serve_tunegate), built in the replica."""
    from components.config import ServiceSettings
    from components.export.predictor import OnnxTextClassifier
    from components.serving.app import create_app
    from components.serving.holder import ServedModel

    predictor = OnnxTextClassifier(model_dir, ["CPUExecutionProvider"], intra_op_threads=threads)
    return create_app(ServedModel(predictor, {"model_name": "bench", "model_version": "bench"}), ServiceSettings())


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


# --- where the CPU goes ----------------------------------------------------------------------------

def process_role(process) -> str | None:
    """What a process is in this bench, from its title (Ray names its workers `ray::<actor>`)."""
    if process.pid == os.getpid():
        return "client"
    try:
        title = " ".join(process.cmdline())[:200]
    except Exception:  # noqa: BLE001 - gone or not ours
        return None
    if title.startswith("wrk "):
        return "client"
    if "--serve-tunegate" in title:
        return "server"
    if "ServeReplica" in title and SERVICE_DEPLOYMENT in title:
        return "replicas"
    if "ProxyActor" in title or "haproxy" in title:
        return "proxy"
    if title.startswith("ray::") or "/ray/" in title or "raylet" in title or "gcs_server" in title:
        return "ray (other)"
    return None


def cpu_seconds_by_role() -> dict[str, float]:
    import psutil

    totals: dict[str, float] = {}
    for process in psutil.process_iter():
        role = process_role(process)
        if role is None:
            continue
        try:
            times = process.cpu_times()
        except Exception:  # noqa: BLE001 - ended meanwhile
            continue
        totals[role] = totals.get(role, 0.0) + times.user + times.system
    return totals


def load(name: str, url: str, texts: list[str], args: argparse.Namespace, seconds: float) -> LoadResult:
    """The clients: wrk where installed (`--client auto`), else this process's asyncio httpx clients."""
    return run_client_load(args.client, name, url, texts, clients=args.clients, seconds=seconds,
                           max_requests=args.max_requests, texts_per_request=args.texts_per_request)


def ended_children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(name: str, url: str, texts: list[str], args: argparse.Namespace) -> LoadResult:
    load(name, url, texts, args, min(2.0, args.seconds))  # warm-up
    before, children_before = cpu_seconds_by_role(), ended_children_cpu_seconds()
    result = load(name, url, texts, args, args.seconds)
    after = cpu_seconds_by_role()
    # wrk has ended by now: its CPU is in this process's ended-children account, not in a live process's.
    after["client"] = after.get("client", 0.0) + ended_children_cpu_seconds() - children_before
    answered = max(1, result.requests - result.failures)
    result.cpu_ms_per_request = {role: 1000 * (after[role] - before.get(role, 0.0)) / answered
                                 for role in sorted(after) if after[role] - before.get(role, 0.0) > 0.01}
    return result


def measure_local(model_dir: Path, texts: list[str], args: argparse.Namespace, scratch: Path) -> LoadResult:
    process, url, log = start_tunegate(model_dir, args.threads, scratch)
    try:
        wait_until_ready(url, process, log, {"inputs": texts[:1]})
        return measure("local (1 process)", url, texts, args)
    finally:
        stop_process(process)


def measure_ray(model_dir: Path, texts: list[str], args: argparse.Namespace, ingress: str) -> list[LoadResult]:
    """1, then 2 replicas behind `ingress` (Ray's proxy actor, or HAProxy: RAY_SERVE_ENABLE_HA_PROXY) of a Ray
    instance started here; one mode per process, since Ray reads its settings when it starts."""
    from components.serving.ray_engine import APP_NAME, build_ray_application, run_application, start_ray, stop_ray

    start_ray("", num_cpus=os.cpu_count(), ingress=ingress)  # before Ray's first import: it sets what Ray reads then
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
            print(f"ray ({ingress}), {replicas} replica(s): answering {ready_s:.1f} s after deploy", flush=True)
            name = f"ray {ingress} x{replicas}"
            results.append(measure(name, url, texts, args))
            serve.delete(APP_NAME)
    finally:
        stop_ray()
    return results


def measure_ray_in_process(model_dir: Path, args: argparse.Namespace, ingress: str, scratch: Path) -> list[LoadResult]:
    """measure_ray in a fresh process of this script (a Ray instance of its own); its results back as JSON."""
    out = scratch / f"ray-{ingress}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--model-dir", str(model_dir), "--ray-only", ingress,
               "--results", str(out), "--clients", str(args.clients), "--seconds", str(args.seconds),
               "--max-requests", str(args.max_requests), "--threads", str(args.threads),
               "--texts-per-request", str(args.texts_per_request), "--client", args.client]
    if args.texts_csv:
        command += ["--texts-csv", str(args.texts_csv)]
    subprocess.run(command, check=True)
    return [LoadResult(**row) for row in json.loads(out.read_text())]


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def cpu_line(result: LoadResult) -> str:
    spent = result.cpu_ms_per_request
    parts = ", ".join(f"{role} {ms:.2f}" for role, ms in spent.items())
    return f"{result.name:22}{sum(spent.values()):8.2f} ms of CPU per request: {parts}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, help="an ONNX export directory (default: the registry's champion)")
    parser.add_argument("--tracking-uri", default=default_tracking_uri())
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    parser.add_argument("--texts-csv", type=Path, help="CSV with a text column (default: artifacts/splits/test.csv)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent connections (default 16, as "
                        "bench/service_speed.py)")
    parser.add_argument("--seconds", type=float, default=20.0, help="load per server")
    parser.add_argument("--max-requests", type=int, default=100_000, help="cap per server")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads per process/replica")
    parser.add_argument("--texts-per-request", type=int, default=1, help="texts in each request (default 1)")
    parser.add_argument("--client", choices=["auto", "wrk", "httpx"], default="auto",
                        help="the load generator: wrk (C; Debian's wrk package), httpx (asyncio, in this process), "
                             "or auto: wrk where installed")
    parser.add_argument("--ingress", choices=[*INGRESSES, "both"], default="both",
                        help="Ray's ingress: its proxy actor, HAProxy, or both side by side (default)")
    parser.add_argument("--quick", action="store_true", help="5 s per server")
    parser.add_argument("--ray-only", choices=INGRESSES, help=argparse.SUPPRESS)  # one Ray mode, in its own process
    parser.add_argument("--results", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quiet_environment()
    if args.quick:
        args.seconds = 5.0
    if args.client == "auto":
        args.client = "wrk" if wrk_available() else "httpx"
    model_dir = Path(args.model_dir or champion_onnx_dir(args.tracking_uri, args.model_name)[0])
    texts = load_texts(args.texts_csv, 512)
    if args.ray_only:
        results = measure_ray(model_dir, texts, args, args.ray_only)
        args.results.write_text(json.dumps([dataclasses.asdict(result) for result in results]))
        return 0

    from components.model.compute import cpu_name

    ingresses = INGRESSES if args.ingress == "both" else (args.ingress,)
    with tempfile.TemporaryDirectory(prefix="tunegate-bench-") as scratch:
        local = measure_local(model_dir, texts, args, Path(scratch))
        ray_results = {ingress: measure_ray_in_process(model_dir, args, ingress, Path(scratch))
                       for ingress in ingresses}

    print(f"model: {model_dir}\n{args.clients} concurrent clients ({args.client}), {args.texts_per_request} text(s) per request, "
          f"{args.seconds:.0f} s per server, {args.threads} intra-op thread(s) per process/replica, "
          f"{os.cpu_count()} cores ({cpu_name()}), 127.0.0.1")
    print(f"{'':22}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'requests':>10}{'failed':>10}")
    everything = [local, *(result for results in ray_results.values() for result in results)]
    for result in everything:
        print(percentiles_line(result) + (f"   first failure: {result.first_failure}" if result.first_failure else ""))
    for ingress, (one, two) in ray_results.items():
        for label, ours, base in ((f"ray {ingress}: 2 replicas / 1 replica:", two, one),
                                  (f"ray {ingress}: 1 replica / local:     ", one, local)):
            print(f"ratio  {label} requests/s {ratio(ours.rps, base.rps)}, "
                  f"p50 {ratio(ours.percentile_ms(0.5), base.percentile_ms(0.5))}, "
                  f"p99 {ratio(ours.percentile_ms(0.99), base.percentile_ms(0.99))}")
    print("where the CPU goes (user+system of each process role over the load, per answered request):")
    for result in everything:
        print(cpu_line(result))
    return 0 if not any(result.failures for result in everything) else 1


if __name__ == "__main__":
    raise SystemExit(main())
