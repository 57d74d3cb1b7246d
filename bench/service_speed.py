"""tunegate's service (int8 ONNX, micro-batching) vs `mlflow models serve` of the same registered
version (tunegate's pyfunc MLflow Model over the same int8 ONNX graph) and of the same fine-tuned
PyTorch model (MLflow's transformers flavor), under the same concurrent client load. Not a test.

    .venv/bin/python bench/service_speed.py                     # the registry's champion + artifacts/model
    .venv/bin/python bench/service_speed.py --model-dir EXPORT --torch-dir MODEL [--quick]

Each server runs in its own process on 127.0.0.1 with the same thread count; the same client (this
process: `--clients` concurrent connections, one text per request, MLflow's `{"inputs": [...]}`
body on /invocations) loads one, then the other, for `--seconds` each (and at most `--max-requests`).
Reports requests/s and p50/p99 latency of each and tunegate's ratio to each. Target: >= 3x requests/s
over the transformers flavor.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from model_speed import (  # noqa: E402
    add_model_arguments,
    load_texts,
    quiet_environment,
    resolve_model_dirs,
)

STARTUP_TIMEOUT_S = 180


# --- client load ----------------------------------------------------------------------------------

@dataclass
class LoadResult:
    name: str
    requests: int
    failures: int
    seconds: float
    latencies_ms: list[float]
    first_failure: str | None = None
    texts_per_request: int = 1
    cpu_ms_per_request: dict[str, float] = field(default_factory=dict)  # by process role, where a bench measures it
    reported_percentiles_ms: dict[str, float] = field(default_factory=dict)  # {"0.5": ms}: a client that keeps no list

    @property
    def rps(self) -> float:
        return (self.requests - self.failures) / self.seconds

    def percentile_ms(self, q: float) -> float:
        if not self.latencies_ms and str(q) in self.reported_percentiles_ms:
            return self.reported_percentiles_ms[str(q)]
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def _client_loop(http, path: str, texts: list[str], offset: int, stop_at: float, budget: list[int],
                       result: LoadResult) -> None:
    n = offset
    while time.monotonic() < stop_at and budget[0] > 0:
        budget[0] -= 1
        batch = [texts[(n + k) % len(texts)] for k in range(result.texts_per_request)]
        n += result.texts_per_request
        started = time.perf_counter()
        try:
            response = await http.post(path, json={"inputs": batch})
            ok = response.status_code == 200 and "predictions" in response.json()
            problem = None if ok else f"HTTP {response.status_code}: {response.text[:200]}"
        except Exception as error:  # noqa: BLE001 - counted, and the load goes on
            problem = f"{type(error).__name__}: {error}"
        result.requests += 1
        if problem:
            result.failures += 1
            result.first_failure = result.first_failure or problem
        else:
            result.latencies_ms.append((time.perf_counter() - started) * 1000)


async def _run_load(name: str, url: str, texts: list[str], clients: int, seconds: float, max_requests: int,
                    path: str, texts_per_request: int) -> LoadResult:
    import httpx

    result = LoadResult(name, 0, 0, 0.0, [], texts_per_request=texts_per_request)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        started = time.monotonic()
        budget = [max_requests]
        await asyncio.gather(*(_client_loop(http, path, texts, i * 997, started + seconds, budget, result)
                               for i in range(clients)))
        result.seconds = time.monotonic() - started
    return result


def run_load(name: str, url: str, texts: list[str], *, clients: int, seconds: float, max_requests: int,
             path: str = "/invocations", texts_per_request: int = 1) -> LoadResult:
    """`clients` concurrent connections posting `texts_per_request` texts each, back to back, for `seconds`."""
    return asyncio.run(_run_load(name, url, texts, clients, seconds, max_requests, path, texts_per_request))


def percentiles_line(result: LoadResult) -> str:
    return (f"{result.name:22}{result.rps:10.1f}{result.percentile_ms(0.5):10.1f}{result.percentile_ms(0.99):10.1f}"
            f"{result.requests:10d}{result.failures:10d}")


# --- servers in their own processes ---------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_process(command: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen:
    # Own session: stopping it stops the server and any worker it spawned, nothing else.
    with log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def wait_until_ready(url: str, process: subprocess.Popen, log_path: Path, probe: dict) -> float:
    """Seconds until `url` answers a probe request."""
    import httpx

    started = time.monotonic()
    while time.monotonic() - started < STARTUP_TIMEOUT_S:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}; its log:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.post(f"{url}/invocations", json=probe, timeout=10).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} not ready after {STARTUP_TIMEOUT_S} s; log:\n{log_path.read_text()[-3000:]}")


def thread_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", MLFLOW_DISABLE_TELEMETRY="true", PYTHONPATH=str(BENCH.parent),
               # `mlflow models serve` execs `uvicorn` by name: the venv's bin must be on PATH.
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))
    return env


def serve_tunegate(model_dir: Path, port: int, threads: int) -> None:
    """The server process for tunegate's side: `tunegate serve`'s app on a given export."""
    from components.config import ServiceSettings
    from components.export.predictor import OnnxTextClassifier
    from components.serving.app import create_app
    from components.serving.holder import ServedModel
    from components.serving.server import serve_forever

    predictor = OnnxTextClassifier(model_dir, ["CPUExecutionProvider"], intra_op_threads=threads)
    served = ServedModel(predictor, {"model_name": "bench", "model_version": "bench"})
    serve_forever(create_app(served, ServiceSettings()), "127.0.0.1", port)


def start_tunegate(model_dir: Path, threads: int, scratch: Path) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    log = scratch / "tunegate.log"
    command = [sys.executable, str(Path(__file__).resolve()), "--serve-tunegate", str(model_dir),
               "--port", str(port), "--threads", str(threads)]
    return start_process(command, log, thread_env(threads)), f"http://127.0.0.1:{port}", log


def log_transformers_model(torch_dir: Path, scratch: Path, max_length: int) -> tuple[str, str]:
    """Log the fine-tuned model as an MLflow transformers text-classification pipeline; (model URI, tracking URI)."""
    import torch
    import transformers

    import mlflow

    tracking_uri = f"sqlite:///{scratch / 'mlflow.db'}"
    mlflow.set_tracking_uri(tracking_uri)
    # Artifacts in the scratch dir too: MLflow's default would be ./mlruns in the working directory.
    mlflow.set_experiment(experiment_id=mlflow.create_experiment(
        "bench-service-speed", artifact_location=(scratch / "artifacts").as_uri()))
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(torch_dir), model_max_length=max_length)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(torch_dir))
    pipeline = transformers.pipeline("text-classification", model=model, tokenizer=tokenizer)
    with mlflow.start_run():
        info = mlflow.transformers.log_model(
            transformers_model=pipeline, name="model", task="text-classification",
            # Without an explicit list MLflow infers one and fails on a missing torchvision (STACK-NOTES).
            pip_requirements=[f"transformers=={transformers.__version__}", f"torch=={torch.__version__}"],
            # Truncate as tunegate does, so both servers do the same work per text.
            model_config={"truncation": True, "max_length": max_length},
        )
    return info.model_uri, tracking_uri


def pyfunc_model(onnx_dir: Path, scratch: Path) -> str:
    """The export as the MLflow Model tunegate registers (the same function writes both); its URI."""
    from components.export.mlflow_model import save_mlflow_model

    return str(save_mlflow_model(onnx_dir, scratch / "pyfunc-model", card="# bench\n"))


def start_mlflow(model_uri: str, tracking_uri: str, threads: int, scratch: Path) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    log = scratch / "mlflow-serve.log"
    env = thread_env(threads) | {"MLFLOW_TRACKING_URI": tracking_uri}
    command = [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m", model_uri,
               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    return start_process(command, log, env), f"http://127.0.0.1:{port}", log


def labels_from(url: str, texts: list[str]) -> list[str]:
    import httpx

    response = httpx.post(f"{url}/invocations", json={"inputs": texts}, timeout=120)
    if response.status_code != 200:
        raise SystemExit(f"{url}: HTTP {response.status_code} for {len(texts)} texts: {response.text[:1000]}")
    return [p["label"] for p in response.json()["predictions"]]


def measure_server(name: str, start, texts: list[str], args: argparse.Namespace) -> tuple[LoadResult, list[str], float]:
    process, url, log = start()
    try:
        ready_s = wait_until_ready(url, process, log, {"inputs": texts[:1]})
        run_load(name, url, texts, clients=args.clients, seconds=min(2.0, args.seconds), max_requests=200)  # warm-up
        result = run_load(name, url, texts, clients=args.clients, seconds=args.seconds, max_requests=args.max_requests)
        return result, labels_from(url, texts[:64]), ready_s
    finally:
        stop_process(process)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0, help="load per server")
    parser.add_argument("--max-requests", type=int, default=100_000, help="cap per server")
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads of each server (default 1: see bench/model_speed.py)")
    parser.add_argument("--quick", action="store_true", help="5 s per server")
    parser.add_argument("--serve-tunegate", type=Path, help=argparse.SUPPRESS)  # the server process's own mode
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quiet_environment()
    if args.serve_tunegate:
        serve_tunegate(args.serve_tunegate, args.port, args.threads)
        return 0
    if args.quick:
        args.seconds = 5.0

    from components.export.predictor import read_model_card

    onnx_dir, torch_dir, source = resolve_model_dirs(args)
    max_length = read_model_card(onnx_dir).max_length
    texts = load_texts(args.texts_csv, 512)
    with tempfile.TemporaryDirectory(prefix="tunegate-bench-") as scratch_name:
        scratch = Path(scratch_name)
        model_uri, tracking_uri = log_transformers_model(torch_dir, scratch, max_length)
        pyfunc_uri = pyfunc_model(onnx_dir, scratch)
        tunegate, tunegate_labels, tunegate_ready = measure_server(
            "tunegate (onnx int8)", lambda: start_tunegate(onnx_dir, args.threads, scratch), texts, args)
        pyfunc, pyfunc_labels, pyfunc_ready = measure_server(
            "mlflow pyfunc (int8)", lambda: start_mlflow(pyfunc_uri, tracking_uri, args.threads, scratch), texts, args)
        mlflow_result, mlflow_labels, mlflow_ready = measure_server(
            "mlflow transformers", lambda: start_mlflow(model_uri, tracking_uri, args.threads, scratch), texts, args)

    print(f"model: {source}\n  onnx: {onnx_dir}\n  torch: {torch_dir} (mlflow: {model_uri})")
    print(f"{args.clients} concurrent clients, one text per request, {args.seconds:.0f} s per server, "
          f"{args.threads} intra-op thread(s) per server, 127.0.0.1")
    print(f"{'':22}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'requests':>10}{'failed':>10}")
    for result in (tunegate, pyfunc, mlflow_result):
        print(percentiles_line(result) + (f"   first failure: {result.first_failure}" if result.first_failure else ""))
    print(f"startup to first answer: tunegate {tunegate_ready:.1f} s, mlflow pyfunc {pyfunc_ready:.1f} s, "
          f"mlflow transformers {mlflow_ready:.1f} s")
    for other, labels in ((pyfunc, pyfunc_labels), (mlflow_result, mlflow_labels)):
        ratio = tunegate.rps / other.rps if other.rps else float("inf")
        same = sum(a == b for a, b in zip(tunegate_labels, labels)) / len(tunegate_labels)
        print(f"vs {other.name}: requests/s {ratio:.2f}x, p50 {other.percentile_ms(0.5) / tunegate.percentile_ms(0.5):.2f}x "
              f"lower, p99 {other.percentile_ms(0.99) / tunegate.percentile_ms(0.99):.2f}x lower with tunegate; "
              f"labels agree on {same:.0%} of {len(tunegate_labels)} texts")
    ratio = tunegate.rps / mlflow_result.rps if mlflow_result.rps else float("inf")
    print(f"requests/s ratio to the transformers flavor: {ratio:.2f}x   (target >= 3x)  {'PASS' if ratio >= 3 else 'MISS'}")
    return 0 if tunegate.failures == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
