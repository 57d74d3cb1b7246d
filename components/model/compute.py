"""Where and in what precision training runs: train.device and train.precision, resolved once.

device auto: CUDA when torch sees a GPU, else the CPU. precision auto: bf16 where it is the faster
path (a CUDA GPU with bf16 support; a CPU with AMX bf16 units, where torch's oneDNN kernels use them),
else fp32: on a CPU without AMX, bf16 autocast made a MiniLM step slower (1.55 s vs 0.80 s), so auto
never picks it there. fp16 is for GPUs (with a gradient scaler); on a CPU it is refused.

Autocast computes the forward pass in the lower precision; the weights, the optimizer state and the
saved model stay fp32, so export and its parity gate see the same kind of model whatever trained it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

from components.config import ConfigError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class Compute:
    device: torch.device
    precision: str  # fp32 | bf16 | fp16
    device_name: str  # what MLflow records: the GPU's or the CPU's model name

    @property
    def dtype(self) -> torch.dtype | None:
        return DTYPES.get(self.precision)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Scales fp16 losses so small gradients do not underflow; a pass-through otherwise."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def batch(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: tensor.to(self.device, non_blocking=True) for name, tensor in tensors.items()}

    def describe(self) -> dict[str, str]:
        return {"device": self.device.type, "device_name": self.device_name, "precision": self.precision}


def cpu_has_amx_bf16(cpuinfo: Path = CPUINFO) -> bool:
    try:
        return " amx_bf16" in cpuinfo.read_text(errors="ignore")
    except OSError:  # not Linux: no cheap way to know, so no claim
        return False


def cpu_name(cpuinfo: Path = CPUINFO) -> str:
    import platform

    try:
        for line in cpuinfo.read_text(errors="ignore").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def resolve_compute(device: str = "auto", precision: str = "auto", local_rank: int = 0) -> Compute:
    """The device and precision for train.device / train.precision, or a ConfigError saying why not.
    Under torchrun each process of a machine takes the GPU of its local rank."""
    cuda = torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise ConfigError("train.device is 'cuda' but torch sees no CUDA GPU here "
                          f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); "
                          "use 'auto' or 'cpu'")
    chosen = torch.device("cuda", local_rank) if device == "cuda" or (device == "auto" and cuda) else torch.device("cpu")
    on_gpu = chosen.type == "cuda"
    if precision == "auto":
        bf16 = torch.cuda.is_bf16_supported() if on_gpu else cpu_has_amx_bf16()
        precision = "bf16" if bf16 else "fp32"
    if precision == "fp16" and not on_gpu:
        raise ConfigError("train.precision 'fp16' needs a CUDA GPU (CPUs have no fast fp16 path); "
                          "use 'bf16' or 'fp32' on the CPU")
    name = torch.cuda.get_device_name(chosen) if on_gpu else cpu_name()
    return Compute(chosen, precision, name)
