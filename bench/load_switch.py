"""A champion switch under load: tunegate's service takes `--clients` concurrent clients for
`--seconds` while `champion` moves to a new version halfway. Not a test.

    .venv/bin/python bench/load_switch.py                      # the registry's champion
    .venv/bin/python bench/load_switch.py --model-dir EXPORT [--quick]

The project's registry is only read: the champion's artifact (or --model-dir) is registered twice
in a scratch MLflow registry (versions 1 and 2, the same files), the service follows that registry's
`champion` as `tunegate serve` does (ChampionWatcher, its own process on 127.0.0.1), and this script
moves `champion` from 1 to 2 mid-run. Reports failed requests (must be 0), the versions seen, that
every response named its version (body and X-Model-Version header), and the switch delay.

    .venv/bin/python bench/load_switch.py --model-dir EXPORT --shadow-compare [--shadow-rate 1.0]

--shadow-compare measures instead what serve.shadow costs the champion's answers: two services on the
same scratch registry (version 2 as `challenger`), one without shadow and one shadowing it on
--shadow-rate of requests, take the same load in alternating rounds (so background load hits both
alike); it reports p50 and p99 of /predict for each and their ratio, fails above --max-p99-ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from model_speed import (  # noqa: E402
    DEFAULT_MODEL_NAME,
    champion_onnx_dir,
    default_tracking_uri,
    load_texts,
    quiet_environment,
)
from service_speed import free_port, start_process, stop_process, thread_env  # noqa: E402

SCRATCH_MODEL_NAME = "load-switch"
STARTUP_TIMEOUT_S = 120


@dataclass(frozen=True)
class Answer:
    sent_at: float  # time.monotonic()
    received_at: float
    status: int | None  # None: no HTTP answer at all
    body_version: str | None
    header_version: str | None
    problem: str | None


@dataclass
class Run:
    answers: list[Answer] = field(default_factory=list)
    switched_at: float | None = None  # when champion was moved


def register_twice(model_dir: Path, scratch: Path) -> str:
    """A scratch registry holding model_dir as versions 1 and 2, champion on 1; its tracking URI."""
    from components.lifecycle.registry import CHAMPION, ModelRegistry

    tracking_uri = f"sqlite:///{scratch / 'mlflow.db'}"
    registry = ModelRegistry(tracking_uri, SCRATCH_MODEL_NAME, artifact_root=scratch / "artifacts")
    for name in ("first", "second"):
        run_id = registry.start_run("load-switch", name, tags={})
        registry.register(run_id, model_dir, tags={"bench": "load_switch"})
        registry.end_run(run_id)
    registry.set_alias(CHAMPION, "1")
    registry.set_alias("challenger", "2")  # what --shadow-compare's shadowing service compares with
    return tracking_uri


def serve_registry(tracking_uri: str, cache_dir: Path, port: int, poll_interval_s: float,
                   shadow_rate: float | None = None) -> None:
    """The server process: what `tunegate serve` runs, following the scratch registry's champion."""
    from components.config import ServiceSettings
    from components.lifecycle.registry import ModelRegistry
    from components.serving.deployment import build_service_app
    from components.serving.server import serve_forever

    registry = ModelRegistry(tracking_uri, SCRATCH_MODEL_NAME)
    settings = ServiceSettings(poll_interval_s=poll_interval_s, shadow="challenger" if shadow_rate else None,
                               shadow_sample_rate=shadow_rate or 0.0, shadow_log=cache_dir / "shadow.jsonl")
    app = build_service_app(registry, cache_dir, ["CPUExecutionProvider"], settings)
    serve_forever(app, "127.0.0.1", port)


async def client(http, texts: list[str], offset: int, stop_at: float, budget: list[int], run: Run) -> None:
    n = offset
    while time.monotonic() < stop_at and budget[0] > 0:
        budget[0] -= 1
        sent_at = time.monotonic()
        try:
            response = await http.post("/predict", json={"texts": [texts[n % len(texts)]]})
            body = response.json()
            ok = response.status_code == 200 and len(body.get("predictions", [])) == 1
            answer = Answer(sent_at, time.monotonic(), response.status_code, body.get("model_version"),
                            response.headers.get("x-model-version"), None if ok else response.text[:200])
        except Exception as error:  # noqa: BLE001 - a dropped request is what this bench counts
            answer = Answer(sent_at, time.monotonic(), None, None, None, f"{type(error).__name__}: {error}")
        run.answers.append(answer)
        n += 1


async def move_champion_at(when: float, tracking_uri: str, run: Run) -> None:
    from components.lifecycle.registry import CHAMPION, ModelRegistry

    await asyncio.sleep(max(0.0, when - time.monotonic()))
    registry = ModelRegistry(tracking_uri, SCRATCH_MODEL_NAME)
    await asyncio.to_thread(registry.set_alias, CHAMPION, "2")
    run.switched_at = time.monotonic()


async def load_with_switch(url: str, tracking_uri: str, texts: list[str], clients: int, seconds: float,
                           max_requests: int) -> Run:
    import httpx

    run = Run()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        started = time.monotonic()
        budget = [max_requests]
        await asyncio.gather(move_champion_at(started + seconds / 2, tracking_uri, run),
                             *(client(http, texts, i * 131, started + seconds, budget, run) for i in range(clients)))
    return run


def wait_until_serving(url: str, process, log_path: Path) -> None:
    import httpx

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}; log:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} not ready after {STARTUP_TIMEOUT_S} s; log:\n{log_path.read_text()[-3000:]}")


@dataclass(frozen=True)
class Report:
    requests: int
    failed: int
    first_problem: str | None
    versions: dict[str, int]
    unversioned: int  # 200s without a version, or with body and header disagreeing
    switch_delay_s: float | None  # alias moved -> first answer from version 2
    old_after_new: int  # version-1 answers to requests sent after the first version-2 answer

    @property
    def passed(self) -> bool:
        return self.failed == 0 and self.unversioned == 0 and set(self.versions) == {"1", "2"} \
            and self.old_after_new == 0


def summarize(run: Run) -> Report:
    answers = run.answers
    failed = [a for a in answers if a.problem is not None]
    good = [a for a in answers if a.problem is None]
    unversioned = sum(a.body_version is None or a.header_version != a.body_version for a in good)
    new = [a.received_at for a in good if a.body_version == "2"]
    first_new = min(new) if new else None
    delay = None if first_new is None or run.switched_at is None else first_new - run.switched_at
    old_after_new = 0 if first_new is None else sum(a.body_version == "1" and a.sent_at > first_new for a in good)
    return Report(len(answers), len(failed), failed[0].problem if failed else None,
                  dict(sorted(Counter(a.body_version for a in good).items(), key=lambda kv: str(kv[0]))),
                  unversioned, delay, old_after_new)


async def load_plain(url: str, texts: list[str], clients: int, seconds: float, max_requests: int) -> Run:
    import httpx

    run = Run()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        stop_at, budget = time.monotonic() + seconds, [max_requests]
        await asyncio.gather(*(client(http, texts, i * 131, stop_at, budget, run) for i in range(clients)))
    return run


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def shadow_counts(url: str) -> dict[str, float]:
    import httpx

    counts = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("tunegate_shadow_requests_total{"):
            counts[line.split('"')[1]] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("tunegate_shadow_agreement "):
            counts["agreement"] = float(line.rsplit(" ", 1)[1])
    return counts


def wait_until_shadowing(url: str) -> None:
    import httpx

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while httpx.get(f"{url}/metadata", timeout=10).json()["shadow"].get("version") is None:
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} did not load its shadow challenger within {STARTUP_TIMEOUT_S} s")
        time.sleep(0.2)


def shadow_compare(args, model_dir: Path, source: str, texts: list[str]) -> int:
    """Same load on a service without shadow and one with it, alternating rounds; p50/p99 side by side."""
    with tempfile.TemporaryDirectory(prefix="tunegate-shadow-bench-") as scratch_name:
        scratch = Path(scratch_name)
        tracking_uri = register_twice(model_dir, scratch)
        env = thread_env(1)
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.pop(name)
        servers = {}
        for mode, rate in (("off", None), ("on", args.shadow_rate)):
            port, log = free_port(), scratch / f"server-{mode}.log"
            command = [sys.executable, str(Path(__file__).resolve()), "--serve-registry", tracking_uri,
                       "--cache-dir", str(scratch / f"serving-{mode}"), "--port", str(port),
                       "--poll-interval", str(args.poll_interval)] + (["--serve-shadow-rate", str(rate)] if rate else [])
            servers[mode] = (start_process(command, log, env), f"http://127.0.0.1:{port}", log)
        latencies: dict[str, list[float]] = {"off": [], "on": []}
        failed = dict.fromkeys(latencies, 0)
        try:
            for process, url, log in servers.values():
                wait_until_serving(url, process, log)
            wait_until_shadowing(servers["on"][1])
            per_round = args.seconds / (2 * args.rounds)
            for round_number in range(args.rounds):
                # Alternating which goes first: neither service always follows the other's load.
                for mode in (("off", "on") if round_number % 2 == 0 else ("on", "off")):
                    run = asyncio.run(load_plain(servers[mode][1], texts, args.clients, per_round, args.max_requests))
                    latencies[mode] += [a.received_at - a.sent_at for a in run.answers if a.problem is None]
                    failed[mode] += sum(a.problem is not None for a in run.answers)
            counts = shadow_counts(servers["on"][1])
        finally:
            for process, _, _ in servers.values():
                stop_process(process)

    p = {mode: (percentile(values, 0.5) * 1000, percentile(values, 0.99) * 1000) for mode, values in latencies.items()}
    ratio50, ratio99 = p["on"][0] / p["off"][0], p["on"][1] / p["off"][1]
    print(f"model: {source}; {args.clients} concurrent clients, {args.rounds} alternating rounds of "
          f"{args.seconds / (2 * args.rounds):.1f} s per service; shadow on {args.shadow_rate:.0%} of requests; "
          f"registry polled every {args.poll_interval:g} s")
    print(f"{'':14}{'requests':>10}{'failed':>8}{'p50 ms':>10}{'p99 ms':>10}")
    for mode, label in (("off", "no shadow"), ("on", "shadow")):
        print(f"{label:<14}{len(latencies[mode]):>10}{failed[mode]:>8}{p[mode][0]:>10.2f}{p[mode][1]:>10.2f}")
    print(f"ratio shadow / no shadow: p50 x{ratio50:.2f}, p99 x{ratio99:.2f} (bound: p99 x{args.max_p99_ratio:.2f})")
    print("shadow outcomes (texts): " + ", ".join(f"{k} {v:g}" for k, v in sorted(counts.items())))
    passed = ratio99 <= args.max_p99_ratio and not any(failed.values())
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", help="an ONNX export directory (default: the project registry's champion)")
    parser.add_argument("--tracking-uri", default=default_tracking_uri())
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    parser.add_argument("--texts-csv", type=Path)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--poll-interval", type=float, default=1.0, help="the service's registry poll, seconds")
    parser.add_argument("--quick", action="store_true", help="10 s instead of 60")
    parser.add_argument("--shadow-compare", action="store_true",
                        help="p50/p99 of /predict without and with serve.shadow, instead of a champion switch")
    parser.add_argument("--shadow-rate", type=float, default=1.0, help="serve.shadow_sample_rate of --shadow-compare")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per service (--shadow-compare)")
    parser.add_argument("--max-p99-ratio", type=float, default=1.5,
                        help="--shadow-compare fails when the shadow's p99 exceeds this multiple of the plain p99")
    parser.add_argument("--serve-registry", help=argparse.SUPPRESS)
    parser.add_argument("--serve-shadow-rate", type=float, help=argparse.SUPPRESS)  # the server process's own mode
    parser.add_argument("--cache-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quiet_environment()
    if args.serve_registry:
        serve_registry(args.serve_registry, args.cache_dir, args.port, args.poll_interval, args.serve_shadow_rate)
        return 0
    if args.quick:
        args.seconds = 10.0

    if args.model_dir:
        model_dir, source = Path(args.model_dir), f"--model-dir {args.model_dir}"
    else:
        model_dir, version = champion_onnx_dir(args.tracking_uri, args.model_name)
        source = f"{args.model_name} v{version} (champion) from {args.tracking_uri}"
    texts = load_texts(args.texts_csv, 512)
    if args.shadow_compare:
        return shadow_compare(args, model_dir, source, texts)

    with tempfile.TemporaryDirectory(prefix="tunegate-load-switch-") as scratch_name:
        scratch = Path(scratch_name)
        tracking_uri = register_twice(model_dir, scratch)
        port = free_port()
        log = scratch / "server.log"
        command = [sys.executable, str(Path(__file__).resolve()), "--serve-registry", tracking_uri,
                   "--cache-dir", str(scratch / "serving"), "--port", str(port),
                   "--poll-interval", str(args.poll_interval)]
        # The service's default threads (all cores), as `tunegate serve` runs.
        env = thread_env(1)
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.pop(name)
        process = start_process(command, log, env)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_serving(url, process, log)
            run = asyncio.run(load_with_switch(url, tracking_uri, texts, args.clients, args.seconds, args.max_requests))
        finally:
            stop_process(process)
        server_errors = [line for line in log.read_text(errors="replace").splitlines() if "Traceback" in line]

    report = summarize(run)
    print(f"model: {source} (registered twice in a scratch registry)")
    print(f"{args.clients} concurrent clients, {args.seconds:.0f} s, champion 1 -> 2 at {args.seconds / 2:.0f} s, "
          f"service polls every {args.poll_interval} s")
    print(f"requests: {report.requests} ({report.requests / args.seconds:.0f}/s)   failed: {report.failed}"
          + (f"   first: {report.first_problem}" if report.first_problem else ""))
    print(f"versions seen: {report.versions}")
    print(f"every response named its version (body and header agree): {report.unversioned == 0} "
          f"({report.unversioned} without)")
    delay = "never" if report.switch_delay_s is None else f"{report.switch_delay_s:.2f} s"
    print(f"alias moved -> first answer from version 2: {delay}; version-1 answers to requests sent after that: "
          f"{report.old_after_new}")
    print(f"server tracebacks: {len(server_errors)}")
    print("PASS" if report.passed else "FAIL")
    return 0 if report.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
