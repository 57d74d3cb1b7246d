"""Client load from wrk (Debian's `wrk` package: C, one event loop), for benches where the clients share the
cores with the servers they measure: a client that costs little leaves the cores to the servers.

Same load as service_speed.run_load: `clients` connections posting `texts_per_request` texts each, back to
back, MLflow's {"inputs": [...]} body, the texts taken in turn.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from service_speed import LoadResult, run_load

# wrk runs this Lua script; TUNEGATE_WRK_BODIES names a Lua file returning the request bodies.
WRK_SCRIPT = r"""
local bodies = dofile(os.getenv("TUNEGATE_WRK_BODIES"))
local path = os.getenv("TUNEGATE_WRK_PATH")
local n = 0
local headers = {["Content-Type"] = "application/json"}
function request()
  n = n + 1
  return wrk.format("POST", path, headers, bodies[(n % #bodies) + 1])
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("TUNEGATE %d %d %d %.1f %.1f\n", summary.requests,
    e.connect + e.read + e.write + e.status + e.timeout, summary.duration,
    latency:percentile(50.0), latency:percentile(99.0)))
end
"""
RESULT = re.compile(r"^TUNEGATE (\d+) (\d+) (\d+) ([\d.]+) ([\d.]+)$", re.MULTILINE)


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def lua_bodies(texts: list[str], texts_per_request: int) -> str:
    """A Lua chunk returning the request bodies, as long strings (no escaping to get wrong)."""
    bodies = []
    for start in range(0, len(texts), texts_per_request):
        body = json.dumps({"inputs": texts[start:start + texts_per_request]})
        if "]==]" in body:
            continue
        bodies.append(f"[==[{body}]==]")
    return "return {" + ",\n".join(bodies) + "}\n"


def run_wrk_load(name: str, url: str, texts: list[str], *, clients: int, seconds: float,
                 texts_per_request: int = 1, path: str = "/invocations") -> LoadResult:
    with tempfile.TemporaryDirectory(prefix="tunegate-wrk-") as scratch:
        script, bodies = Path(scratch) / "load.lua", Path(scratch) / "bodies.lua"
        script.write_text(WRK_SCRIPT)
        bodies.write_text(lua_bodies(texts, texts_per_request))
        env = dict(os.environ, TUNEGATE_WRK_BODIES=str(bodies), TUNEGATE_WRK_PATH=path)
        command = ["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--timeout", "60s",
                   "-s", str(script), url]
        finished = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    found = RESULT.search(finished.stdout)
    if found is None:
        raise SystemExit(f"wrk printed no result:\n{finished.stdout}\n{finished.stderr}")
    requests, failures, duration_us, p50_us, p99_us = found.groups()
    return LoadResult(name, int(requests), int(failures), int(duration_us) / 1e6, [],
                      first_failure=f"{failures} non-2xx or socket errors (wrk)" if int(failures) else None,
                      texts_per_request=texts_per_request,
                      reported_percentiles_ms={"0.5": float(p50_us) / 1000, "0.99": float(p99_us) / 1000})


def run_client_load(client: str, name: str, url: str, texts: list[str], *, clients: int, seconds: float,
                    max_requests: int, texts_per_request: int = 1) -> LoadResult:
    """The same load from wrk (`client` "wrk"; max_requests does not bound it) or from this process's
    asyncio httpx clients ("httpx")."""
    if client == "wrk":
        return run_wrk_load(name, url, texts, clients=clients, seconds=seconds, texts_per_request=texts_per_request)
    return run_load(name, url, texts, clients=clients, seconds=seconds, max_requests=max_requests,
                    texts_per_request=texts_per_request)
