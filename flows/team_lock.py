"""One retraining per registered model at a time, across machines: a lock the Prefect server holds.

The project's file lock (components/lifecycle/locking.py) only sees one folder on one machine. Two
clones, or two machines, retraining the same registered model would both register versions and
race for the `champion` alias. When the flow talks to a Prefect server (PREFECT_API_URL set), it
therefore also takes the one slot of a Prefect global concurrency limit named after the model,
`tunegate-retrain-<model_name>` (created with limit 1 on first use), for the whole run, a paused
approval wait included.

The slot is a lease: a thread in the holding process renews it every 0.75 x LEASE_SECONDS, so a
holder that dies without releasing it (SIGKILL, power loss) blocks the model for at most
LEASE_SECONDS plus the server's lease sweep (the repossessor, every 15 s by default).

Who holds the slot is recorded in a Prefect variable beside it (host, project folder, flow run),
written once the slot is taken and removed before it is given back, so a refused run can say whom
it waits for. The variable is informational only: the slot alone decides.

With no PREFECT_API_URL (the ephemeral server every `tunegate run` starts by default) there is no
shared server to hold anything, and only the file lock applies.
"""

from __future__ import annotations

import getpass
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from uuid import UUID

from components.lifecycle.locking import RunInProgress

# 2 minutes: a killed run frees the model about 135 s after its death (lease + the server's 15 s
# sweep; measured 135 s), while the holder renews every 90 s and so has 30 s of slack for its
# renewal retries. The server accepts 60 s to a day: 60 s would leave 15 s of slack against a slow
# or restarting server, longer makes everyone wait longer after a crash. The lease does not bound the
# run: it is renewed for as long as the holding process lives, however long training or an approval takes.
LEASE_SECONDS = 120
LIMIT_PREFIX = "tunegate-retrain-"


class ModelBusy(RunInProgress):
    """Another run, possibly on another machine, is retraining the same registered model."""


def server_api_url() -> str | None:
    """The Prefect server this process talks to; None for the ephemeral one (PREFECT_API_URL unset)."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None


def limit_name(model_name: str) -> str:
    """The global concurrency limit of a registered model.

    Prefect refuses '/', '%', '&', '<', '>' in names and the name travels in URL paths, so anything
    but letters, digits, '.', '_' and '-' becomes '-'. Two model names differing only there share
    a lock: they wait for each other, which is safe.
    """
    return LIMIT_PREFIX + re.sub(r"[^A-Za-z0-9._-]+", "-", model_name)


def holder_variable(limit: str) -> str:
    """The Prefect variable naming the slot's holder (variable names: lowercase, digits, '-', '_')."""
    return (re.sub(r"[^a-z0-9_-]+", "-", limit.lower()) + "-holder")[-255:]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"


def _ensure_limit(name: str) -> None:
    """Create the model's limit (1 slot) on first use; an existing one is left as its owner set it."""
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return
        except ObjectNotFound:
            pass
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        except ObjectAlreadyExists:  # another run created it between the read and the create
            pass


def _current_flow_run() -> tuple[UUID | None, str | None]:
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return None, None
    return context.flow_run.id, context.flow_run.name


def _describe_holder(limit: str) -> str:
    from prefect.variables import Variable

    try:
        info = Variable.get(holder_variable(limit), default=None)
    except Exception:  # noqa: BLE001 - the record is a courtesy; it never decides anything
        info = None
    if not isinstance(info, dict):
        # Every holder writes its record right after taking the slot and clears it just before giving
        # it back, so a taken slot without one is most likely left over: a server restarted with its
        # default in-memory lease storage forgets the lease but not the slot.
        return (f"no run records holding it; if none is running, the slot was left behind (e.g. by a Prefect "
                f"server restart): free it with `prefect gcl update {limit} --active-slots 0`")
    run = (f"flow run {info.get('flow_run_name')} ({info['flow_run_id']})" if info.get("flow_run_id")
           else f"pid {info.get('pid', '?')}")
    return (f"{run} on host {info.get('host', '?')}, project {info.get('project', '?')}, "
            f"user {info.get('user', '?')}, since {info.get('since', '?')}")


def _record_holder(limit: str, project: Path, flow_run_id: UUID | None, flow_run_name: str | None) -> None:
    from prefect.variables import Variable

    info = {"host": socket.gethostname(), "project": str(project), "pid": os.getpid(), "user": getpass.getuser(),
            "flow_run_id": str(flow_run_id) if flow_run_id else None, "flow_run_name": flow_run_name,
            "since": _now()}
    try:
        Variable.set(holder_variable(limit), info, overwrite=True)
    except Exception as error:  # noqa: BLE001 - a missing record costs a vaguer message, not the run
        print(f"note: could not record this run as the holder of {limit}: {error}")


def _forget_holder(limit: str) -> None:
    from prefect.variables import Variable

    try:
        Variable.unset(holder_variable(limit))
    except Exception as error:  # noqa: BLE001 - a stale record is overwritten by the next holder
        print(f"note: could not clear the holder record of {limit}: {error}")


def _try_acquire(client, name: str, holder) -> UUID | None:
    """One attempt at the slot: its lease id, or None when another run holds it (HTTP 423).

    The client is asked directly rather than through `prefect.concurrency.sync.concurrency`, whose
    service logs every refusal as an ERROR with a traceback: a skipped run is not an error.
    """
    import httpx

    try:
        response = client.increment_concurrency_slots_with_lease(
            names=[name], slots=1, mode="concurrency", lease_duration=LEASE_SECONDS, holder=holder)
    except httpx.HTTPStatusError as error:
        if error.response.status_code == 423:
            return None
        raise
    granted = response.json()
    if not granted.get("limits"):  # deleted between _ensure_limit and now: never run unguarded by mistake
        raise RuntimeError(f"the Prefect global concurrency limit {name} disappeared while taking it; run again "
                           "(it is created on first use)")
    return UUID(granted["lease_id"])


@contextmanager
def model_lock(model_name: str, project: Path, wait: bool, on_wait: Callable[[str], None] = print,
               poll_s: float = 5.0) -> Iterator[str | None]:
    """Hold the registered model's slot on the Prefect server for the duration of the block.

    `wait=False` raises ModelBusy (a RunInProgress) when another run holds it; `wait=True` asks again
    every `poll_s` seconds until it is free. Yields the limit's name, or None when there is no server
    to hold a lock (ephemeral Prefect).
    """
    api = server_api_url()
    if api is None:
        yield None
        return

    from prefect import get_client
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.concurrency._leases import maintain_concurrency_lease

    name = limit_name(model_name)
    _ensure_limit(name)
    flow_run_id, flow_run_name = _current_flow_run()
    holder = ConcurrencyLeaseHolder(type="flow_run", id=flow_run_id) if flow_run_id else None
    with get_client(sync_client=True) as client:
        lease_id = _try_acquire(client, name, holder)
        if lease_id is None:
            who = _describe_holder(name)
            where = f"Prefect global concurrency limit {name} on {api}"
            if not wait:
                raise ModelBusy(f"model {model_name!r} is being retrained by another run ({who}; {where}). "
                                f"It frees when that run ends, or about {LEASE_SECONDS + 15} s after its "
                                "process died (its lease expires)")
            on_wait(f"waiting for the retraining of model {model_name!r} in progress ({who}; {where}) to finish")
            while lease_id is None:
                time.sleep(poll_s)
                lease_id = _try_acquire(client, name, holder)
        try:
            print(f"team lock: took {name} at {_now()} (lease {LEASE_SECONDS} s, renewed while this run lives)")
            _record_holder(name, project, flow_run_id, flow_run_name)
            # raise_on_lease_renewal_failure=False: if the server cannot be reached to renew (it restarted,
            # the network dropped), the run goes on under its file lock with a warning in its log rather
            # than throwing away hours of training; the model is then unguarded until this run ends.
            with maintain_concurrency_lease(lease_id, LEASE_SECONDS, raise_on_lease_renewal_failure=False):
                yield name
        finally:
            _forget_holder(name)  # before the release: the next holder writes its own record after it
            print(f"team lock: releasing {name} at {_now()}")
            try:
                client.release_concurrency_slots_with_lease(lease_id)
            except Exception as error:  # noqa: BLE001 - must not hide why the run itself ended
                print(f"note: could not give {name} back ({error}); the server frees it when its "
                      f"{LEASE_SECONDS} s lease expires")


def holding_flow_run(model_name: str) -> str | None:
    """The flow run that holds the model's slot now, by its holder record; None without a server, when the
    slot is free, or when no run records holding it. A paused run awaiting approval on another machine
    holds it, so an approver anywhere can tell a waiting run from a dead one."""
    if server_api_url() is None:
        return None
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.variables import Variable

    name = limit_name(model_name)
    with get_client(sync_client=True) as client:
        try:
            if client.read_global_concurrency_limit_by_name(name).active_slots < 1:
                return None
        except ObjectNotFound:
            return None
    info = Variable.get(holder_variable(name), default=None)
    return info.get("flow_run_id") if isinstance(info, dict) else None
