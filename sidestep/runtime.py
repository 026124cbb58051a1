"""Device, precision and the Lightning Fabric that runs on them."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sidestep.errors import SidestepError

FABRIC_PRECISION = {"bf16": "bf16-mixed", "fp16": "16-mixed", "fp32": "32-true"}
TORCH_DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def resolve_device(name: str = "auto") -> torch.device:
    """auto: CUDA > MPS > XPU > CPU. An explicit device that is not there is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        if hasattr(torch, "xpu") and torch.xpu.is_available():
            return torch.device("xpu")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SidestepError(f"--device '{name}': use auto, cuda, cuda:N, mps, xpu or cpu") from None
    available = {"cpu": lambda: True, "cuda": torch.cuda.is_available,
                 "mps": lambda: torch.backends.mps.is_available(),
                 "xpu": lambda: hasattr(torch, "xpu") and torch.xpu.is_available()}
    if device.type not in available or not available[device.type]():
        raise SidestepError(f"--device '{name}': not available on this machine; use --device auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise SidestepError(f"--device '{name}': only {torch.cuda.device_count()} CUDA device(s) here")
    return device


def resolve_precision(name: str, device: torch.device) -> str:
    """auto: bf16 on CUDA/XPU, fp16 on MPS, fp32 on CPU."""
    if name == "auto":
        return {"cuda": "bf16", "xpu": "bf16", "mps": "fp16"}.get(device.type, "fp32")
    if device.type == "cpu" and name == "fp16":
        raise SidestepError("--precision fp16 is not supported on the CPU; use fp32 or bf16")
    return name


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str  # bf16 / fp16 / fp32

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the frozen base weights are kept in (mixed precision: half; else fp32)."""
        return TORCH_DTYPE[self.precision]


def resolve_runtime(device: str, precision: str) -> Runtime:
    dev = resolve_device(device)
    return Runtime(device=dev, precision=resolve_precision(precision, dev))


def fabric_kwargs(runtime: Runtime, devices: int = 1, num_nodes: int = 1, strategy: str = "auto") -> dict:
    """Fabric's arguments. A named `cuda:N` pins that one device (selected with set_device, seed fix)."""
    accelerator = {"cuda": "cuda", "mps": "mps", "xpu": "xpu"}.get(runtime.device.type, "cpu")
    chosen: int | list[int] = devices
    if runtime.device.type == "cuda" and runtime.device.index is not None:
        if devices > 1:
            raise SidestepError(f"--device {runtime.device} names one GPU but --devices is {devices}; use "
                                "--device cuda with --devices N")
        chosen = [runtime.device.index]
    if strategy == "auto" and (devices > 1 or num_nodes > 1) and accelerator == "cpu":
        strategy = "ddp"  # gloo on CPU; Fabric's auto would pick a single-device strategy
    return dict(accelerator=accelerator, devices=chosen, num_nodes=num_nodes, strategy=strategy,
                precision=FABRIC_PRECISION[runtime.precision])


def make_fabric(runtime: Runtime, devices: int = 1, num_nodes: int = 1, strategy: str = "auto"):
    """A launched Fabric: one process per device (Fabric re-runs this command for ranks > 0)."""
    from lightning.fabric import Fabric

    kwargs = fabric_kwargs(runtime, devices, num_nodes, strategy)
    if isinstance(kwargs["devices"], list):
        torch.cuda.set_device(kwargs["devices"][0])
    fabric = Fabric(**kwargs)
    fabric.launch()
    return fabric
