"""train.batch_size: auto: the largest power of two whose trial step stays within a memory budget.

The caller builds a trial (one representative step on the longest rows, at a given size) and this module
runs it at sizes 1, 2, 4, ... under a peak-memory reading, stopping at the first size over the budget or
out of memory. What is measured depends on the device:

- cuda: the bytes torch's caching allocator handed out (max_memory_allocated), weights and all. That is
  what torch's own out-of-memory errors are about; it leaves out the CUDA context (some hundreds of MB)
  and the allocator's cached-but-free blocks, so the default budget keeps 10% of the GPU for those.
- cpu: the process's resident set (RSS), the number the kernel's OOM killer and a container's limit look
  at. PyTorch returns big freed blocks to the OS, so each trial's peak is its own.

A trial must leave everything as it found it (weights, gradients, random state, train/eval mode) and keep
no tensor alive once it returns: the next trial's reading starts from what the last one left behind, and
training then starts from the state the trials found. That is the caller's job; this module only measures.

Nothing here runs at import time; /proc, psutil and the cgroup files are read when called.
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from components.errors import ConfigError

CUDA_SHARE = 0.9  # of the GPU's memory, by default: the rest for the CUDA context and allocator slack
CPU_SHARE = 0.8  # of the memory available at the start, by default: the OS and other processes keep the rest
# On the CPU running out of memory raises nothing: the OOM killer ends the process (or it swaps for hours).
# So the next size is not tried when its expected growth (twice the last one's) would take more than this
# share of the memory available now, whatever the budget says.
CPU_SAFE_SHARE = 0.9
SAMPLE_EVERY_S = 0.002  # the RSS sampler's period where the kernel's high-water mark cannot be reset

PROC_SELF = Path("/proc/self")
MEMINFO = Path("/proc/meminfo")
PROC_CGROUP = Path("/proc/self/cgroup")
CGROUP_MOUNT = Path("/sys/fs/cgroup")
# cgroup v1 writes "no limit" as a huge number (PAGE_COUNTER_MAX pages in bytes), not as a word.
_NO_LIMIT = 2**60


class NoBatchSizeFits(ConfigError):
    """Even a batch of one example does not fit the memory budget (a ValueError, like every ConfigError)."""

    def __init__(self, message: str, tried: list[dict]) -> None:
        super().__init__(message)
        self.tried = tried


@dataclass(frozen=True)
class BatchSizeChoice:
    size: int  # the picked batch size, a power of two
    budget_bytes: int
    peak_bytes: int  # the trial's measured peak at the picked size, plus extra_bytes
    memory: str  # "cuda": GPU memory allocated by torch; "rss": the process's resident set
    tried: list[dict]  # per trial, in order: size, peak_bytes (None after an error), fits, error
    extra_bytes: int = 0  # added to every trial's peak: memory the real run holds that a trial does not
    stopped: str = ""  # why no bigger size was taken: largest, over budget, out of memory, memory available

    def record(self) -> dict:
        """A JSON-ready summary for the training history."""
        return {"picked": self.size, "budget_bytes": self.budget_bytes, "peak_bytes": self.peak_bytes,
                "extra_bytes": self.extra_bytes, "memory": self.memory, "stopped": self.stopped,
                "tried": [dict(entry) for entry in self.tried]}


@dataclass
class PeakReading:
    """What peak_memory measured: `bytes` (the peak, absolute: everything the process or the GPU held)
    is set when the block ends; `start_bytes` is the reading when it began."""

    method: str  # cuda | vmhwm (the kernel's exact high-water mark) | sampled (a thread polling the RSS)
    start_bytes: int
    bytes: int | None = None
    _sampled_max: int = field(default=0, repr=False)


def memory_kind(device: torch.device | str) -> str:
    """"cuda" or "rss": what a budget on `device` is a budget of. Other devices (mps, xpu) have neither a
    peak counter here nor a meaningful RSS, so they are refused rather than measured wrongly."""
    kind = torch.device(device).type
    if kind == "cuda":
        return "cuda"
    if kind == "cpu":
        return "rss"
    raise ValueError(f"batch_size auto measures memory on cpu and cuda devices only, not {kind!r}: "
                     "give train.batch_size as a number")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` says the device ran out of memory (so a smaller batch may fit), as opposed to a bug."""
    types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                              getattr(torch.cuda, "OutOfMemoryError", None)) if isinstance(t, type))
    if isinstance(error, (MemoryError, *types)):
        return True
    if isinstance(error, RuntimeError):
        message = str(error)
        # Older torch and MPS raise plain RuntimeErrors; the CPU allocator says "can't allocate memory";
        # cuBLAS failing to get its workspace is the same shortage seen from a library.
        return any(words in message for words in ("out of memory", "can't allocate memory",
                                                  "CUBLAS_STATUS_ALLOC_FAILED"))
    return False


# --- reading the process's memory -----------------------------------------------------------------------------

def _psutil():
    try:
        import psutil
    except ImportError as error:
        raise RuntimeError("measuring memory on the CPU needs /proc (Linux) or the psutil package; "
                           "give train.batch_size as a number instead") from error
    return psutil


def current_rss() -> int:
    """The process's resident set now, in bytes."""
    try:
        # statm, not status: one short line, cheap enough for the 2 ms sampler.
        return int((PROC_SELF / "statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return _psutil().Process().memory_info().rss


def _status_bytes(name: str) -> int:
    """A Vm* line of /proc/self/status, in bytes (the kernel writes them in kB)."""
    for line in (PROC_SELF / "status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {name}")


def _reset_high_water_mark() -> bool:
    """Set the kernel's peak-RSS mark (VmHWM) to the current RSS; False where that is not allowed
    (no /proc, kernels before 4.0, sandboxes such as gVisor)."""
    try:
        with open(PROC_SELF / "clear_refs", "w") as handle:
            handle.write("5")
        _status_bytes("VmHWM")
        return True
    except OSError:
        return False


def _sample_rss(reading: PeakReading, stop: threading.Event) -> None:
    while not stop.wait(SAMPLE_EVERY_S):
        reading._sampled_max = max(reading._sampled_max, current_rss())


@contextmanager
def peak_memory(device: torch.device | str, *, method: str = "auto") -> Iterator[PeakReading]:
    """The peak memory while the block runs, in `reading.bytes` once it ends (also when it raises).

    cuda: torch's peak allocated bytes on the device, after resetting its peak counter. cpu: the process's
    peak RSS, exactly, from the kernel's high-water mark reset on entry (method "vmhwm"); where it cannot be
    reset, or with method="sampled", a thread polls the RSS every ~2 ms, which can miss a spike shorter than
    that. Not reentrant: a block inside another resets the outer one's mark. The VmHWM reset also resets
    what getrusage's ru_maxrss reports for this process."""
    device = torch.device(device)
    if memory_kind(device) == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        reading = PeakReading("cuda", torch.cuda.memory_allocated(device))
        try:
            yield reading
        finally:
            reading.bytes = torch.cuda.max_memory_allocated(device)
        return
    if method not in ("auto", "vmhwm", "sampled"):
        raise ValueError(f"peak_memory method {method!r}: auto, vmhwm or sampled")
    exact = method != "sampled" and _reset_high_water_mark()
    if method == "vmhwm" and not exact:
        raise OSError("cannot reset the peak RSS: /proc/self/clear_refs is not writable here")
    reading = PeakReading("vmhwm" if exact else "sampled", current_rss())
    if exact:
        try:
            yield reading
        finally:
            reading.bytes = max(_status_bytes("VmHWM"), reading.start_bytes)
        return
    stop = threading.Event()
    sampler = threading.Thread(target=_sample_rss, args=(reading, stop), name="peak-rss-sampler", daemon=True)
    sampler.start()
    try:
        yield reading
    finally:
        stop.set()
        sampler.join()
        reading.bytes = max(reading._sampled_max, reading.start_bytes, current_rss())


# --- how much memory there is -----------------------------------------------------------------------------------

def _meminfo_available() -> int:
    try:
        fields = dict(line.split(":", 1) for line in MEMINFO.read_text().splitlines() if ":" in line)
        # MemAvailable counts reclaimable caches; kernels before 3.14 lack it, MemFree undercounts but is safe.
        return int((fields.get("MemAvailable") or fields["MemFree"]).split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return int(_psutil().virtual_memory().available)


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return None if text == "max" or not text.lstrip("-").isdigit() else int(text)


def _stat_value(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def cgroup_headroom(proc_cgroup: Path = PROC_CGROUP, mount: Path = CGROUP_MOUNT) -> int | None:
    """Bytes this process's memory cgroups (v1 or v2, and their ancestors) may still grow by before their
    limit, or None without a limit. A container's limit does not show in /proc/meminfo, which describes the
    whole host: a pod limited to 4 GiB on a 256 GiB host would otherwise be offered 200 GiB.
    Inactive file pages count as free: the kernel reclaims them before it kills anything."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    layouts = []  # (hierarchy root, the process's path in it, limit file, usage file, memory.stat key)
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            for root in (mount, mount / "unified"):  # unified alone, or beside v1 in the hybrid layout
                layouts.append((root, path, "memory.max", "memory.current", "inactive_file"))
        elif "memory" in controllers.split(","):
            layouts.append((mount / "memory", path, "memory.limit_in_bytes", "memory.usage_in_bytes",
                            "total_inactive_file"))
    headrooms = []
    for root, path, limit_file, usage_file, inactive_key in layouts:
        directory = root / path.strip("/")
        # The process's own cgroup and every ancestor up to the mount: a limit anywhere above applies too.
        # Inside a container the path may name a host cgroup that is not mounted; the walk then ends at the
        # container's own root, which is the limited one.
        while True:
            limit, usage = _read_int(directory / limit_file), _read_int(directory / usage_file)
            if limit is not None and usage is not None and limit < _NO_LIMIT:
                inactive = _stat_value(directory / "memory.stat", inactive_key)
                headrooms.append(max(0, limit - usage + inactive))
            if directory == root or root not in directory.parents:
                break
            directory = directory.parent
    return min(headrooms, default=None)


def available_bytes() -> int:
    """Memory this process may still take without swapping or being killed: the host's MemAvailable, or less
    where a cgroup limit is nearer."""
    available = _meminfo_available()
    headroom = cgroup_headroom()
    return available if headroom is None else min(available, headroom)


def default_budget(device: torch.device | str) -> int:
    """The budget when train.memory_budget is left out. cuda: 90% of the GPU's total memory (it assumes the
    GPU is this process's alone). cpu: the RSS now plus 80% of the memory available now."""
    device = torch.device(device)
    if memory_kind(device) == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory * CUDA_SHARE)
    return current_rss() + int(available_bytes() * CPU_SHARE)


# --- the search --------------------------------------------------------------------------------------------------

def _gib(count: int) -> str:
    return f"{count / 2**30:.2f} GiB"


def _summary(error: BaseException) -> str:
    """The error's type and first line: CUDA's out-of-memory messages run to a paragraph of allocator advice."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:300]}" if lines else type(error).__name__


def free_memory(device: torch.device) -> None:
    """Drop what the failed trial's frames still hold, and on CUDA hand the cached blocks back, so the next
    allocation (training's, with the smaller size) does not fail on fragments of the big one."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _run_trial(trial: Callable[[int], None], size: int, device: torch.device, extra_bytes: int,
               budget_bytes: int) -> tuple[dict, int]:
    """One trial: its entry for `tried`, and how much the process grew during it (for the CPU's guard)."""
    error = None
    with peak_memory(device) as reading:
        try:
            trial(size)
        except Exception as raised:  # noqa: BLE001 - only out-of-memory is kept; anything else is re-raised
            if not is_out_of_memory(raised):
                raise
            # The message only: the exception's traceback would keep the failed trial's tensors alive.
            error = _summary(raised)
    if error is not None:
        free_memory(device)
        return {"size": size, "peak_bytes": None, "fits": False, "error": error}, 0
    peak = reading.bytes + extra_bytes
    entry = {"size": size, "peak_bytes": peak, "fits": peak <= budget_bytes, "error": None}
    return entry, max(0, reading.bytes - reading.start_bytes)


def _would_exhaust(growth_bytes: int, available: int) -> bool:
    """Whether a trial at twice the size (twice the growth, the batch's share scaling with its size) would
    take more than CPU_SAFE_SHARE of the memory available."""
    return 2 * growth_bytes > CPU_SAFE_SHARE * available


def pick_batch_size(trial: Callable[[int], None], *, device: torch.device | str, budget_bytes: int, largest: int,
                    extra_bytes: int = 0, progress: Callable[[str], None] | None = None) -> BatchSizeChoice:
    """The largest power of two whose trial fits: `trial(size)` runs one representative step at that size
    (the caller builds it on the longest rows, and makes it leave no state or tensor behind).

    A size fits when the trial raised no out-of-memory error and its peak memory plus extra_bytes (what the
    real run holds that one trial does not, such as AdamW's moments) is within budget_bytes. Sizes 1, 2,
    4, ... are tried until one does not fit, or until the next would exceed `largest` (the split's length):
    the pick is then `largest` rounded down to a power of two, so that every trial's batch is one the data
    can fill and the picked size is never bigger than the data. On the CPU the next size is also not tried
    when it would probably exhaust the machine's memory (there an out-of-memory ends the process).

    Raises NoBatchSizeFits (a ConfigError, so a ValueError) when even size 1 does not fit, and re-raises any
    error of the trial that is not an out-of-memory one."""
    device = torch.device(device)
    memory = memory_kind(device)
    if largest < 1:
        raise ValueError(f"largest is {largest}: picking a batch size needs at least one example")
    if budget_bytes <= 0:
        raise ValueError(f"memory budget {budget_bytes} bytes: it must be above zero")
    tried: list[dict] = []
    best: dict | None = None
    size, stopped = 1, ""
    while True:
        entry, growth = _run_trial(trial, size, device, extra_bytes, budget_bytes)
        tried.append(entry)
        if progress:
            measured = entry["error"] or f"peak {_gib(entry['peak_bytes'])}"
            verdict = "fits" if entry["fits"] else "does not fit"
            progress(f"batch size {size}: {measured} of a {_gib(budget_bytes)} {memory} budget, {verdict}")
        if not entry["fits"]:
            stopped = "out of memory" if entry["error"] else "over budget"
            break
        best = entry
        if size * 2 > largest:
            stopped = "largest"
            break
        if memory == "rss" and _would_exhaust(growth, available := available_bytes()):
            stopped = "memory available"
            if progress:
                progress(f"batch size {size * 2} not tried: it would grow the process by about "
                         f"{_gib(2 * growth)}, near the {_gib(available)} available")
            break
        size *= 2
    if best is None:
        raise NoBatchSizeFits(_none_fits(tried[0], budget_bytes, extra_bytes, memory), tried)
    return BatchSizeChoice(size=best["size"], budget_bytes=budget_bytes, peak_bytes=best["peak_bytes"],
                           memory=memory, tried=tried, extra_bytes=extra_bytes, stopped=stopped)


def _none_fits(first: dict, budget_bytes: int, extra_bytes: int, memory: str) -> str:
    what = "GPU memory allocated by torch" if memory == "cuda" else "resident memory (RSS)"
    if first["error"]:
        return (f"batch_size auto: even a batch of 1 example ran out of memory ({first['error']}) under a "
                f"{_gib(budget_bytes)} budget of {what}; shorten model.max_length, use a smaller model or a "
                "machine with more memory")
    return (f"batch_size auto: even a batch of 1 example needs {_gib(first['peak_bytes'])} of {what} "
            f"({_gib(first['peak_bytes'] - extra_bytes)} measured in its trial step + {_gib(extra_bytes)} set "
            f"aside), over the memory budget of {_gib(budget_bytes)}; raise train.memory_budget, shorten "
            "model.max_length or use a smaller model")
