"""Dask clusters for the sweep and batch scoring: a LocalCluster on this machine, or a scheduler somewhere
else (`dask scheduler` + `dask worker tcp://HOST:8786`), checked before any work is sent to it.

Plain Python (distributed only); flows/sweep.py and components/serving/dask_scoring.py use it.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from components.config import ConfigError

LOCAL = "local"  # `--dask local`: a LocalCluster on this machine
CONNECT_TIMEOUT_S = 10


class DaskUnavailable(ConfigError):
    """The Dask scheduler cannot be reached or has no workers; the message says what to start."""


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def check_address(address: str) -> str:
    """A scheduler address as distributed takes it (tcp://host:port); anything else is refused with an example."""
    parts = urlsplit(address)
    if not parts.scheme or not parts.hostname or parts.port is None:
        raise ConfigError(f"Dask scheduler address {address!r}: expected scheme://host:port, "
                          "e.g. tcp://10.0.0.5:8786 (what `dask scheduler` prints)")
    return address


def is_loopback(address: str) -> bool:
    """Whether an address (a URL or scheme://host:port) names this machine only."""
    host = urlsplit(address).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def local_cluster_kwargs(workers: int, env: dict[str, str] | None = None) -> dict[str, Any]:
    """LocalCluster settings: worker processes (not threads: torch and onnxruntime each get their own
    process), one task at a time per worker, no dashboard (a transient cluster; port 8787 may be taken)."""
    kwargs: dict[str, Any] = {"n_workers": workers, "threads_per_worker": 1, "processes": True,
                              "dashboard_address": None}
    if env:
        kwargs["env"] = dict(env)  # set in each worker process by its nanny
    return kwargs


@dataclass(frozen=True)
class ClusterShape:
    workers: int
    threads: int  # tasks the cluster runs at once
    threads_per_task: int  # CPU threads one task may use without oversubscribing its machine


def cluster_shape(client) -> ClusterShape:
    """Workers, their task slots, and how many CPU threads a task gets: on each machine, its cores over the
    task slots of the workers on it; the smallest share across machines (any task may land anywhere)."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    if not workers:
        raise DaskUnavailable(f"the Dask scheduler at {client.scheduler.address} has no workers; start some with "
                              f"`dask worker {client.scheduler.address} --nthreads 1`")
    cores = client.run(usable_cores)
    slots: dict[str, int] = {}
    host_cores: dict[str, int] = {}
    for address, worker in workers.items():
        host = worker.get("host") or urlsplit(address).hostname or address
        slots[host] = slots.get(host, 0) + int(worker["nthreads"])
        host_cores[host] = max(host_cores.get(host, 0), int(cores.get(address, 1)))
    share = min(max(1, host_cores[host] // max(1, slots[host])) for host in slots)
    return ClusterShape(len(workers), sum(slots.values()), share)


def connect(address: str, timeout_s: float = CONNECT_TIMEOUT_S):
    """A distributed.Client on a running scheduler; DaskUnavailable naming the address when there is none."""
    from distributed import Client

    check_address(address)
    try:
        return Client(address, timeout=timeout_s, set_as_default=False)
    except (OSError, TimeoutError) as error:
        raise DaskUnavailable(f"cannot reach a Dask scheduler at {address} within {timeout_s:g} s ({error}); "
                              "start one with `dask scheduler` and workers with `dask worker ADDRESS`") from None


@contextmanager
def dask_client(address: str, local_workers: int | None = None) -> Iterator[Any]:
    """A client on `address`, or on a LocalCluster of `local_workers` worker processes (default: one per
    core) when address is `local`; the local cluster is closed on the way out."""
    if address != LOCAL:
        if local_workers:
            raise ConfigError(f"a worker count applies to a local cluster only; the workers of {address} are "
                              "the ones started with `dask worker`")
        client = connect(address)
        try:
            yield client
        finally:
            client.close()
        return
    from distributed import Client, LocalCluster

    with LocalCluster(**local_cluster_kwargs(local_workers or usable_cores())) as cluster, \
            Client(cluster, set_as_default=False) as client:
        yield client
