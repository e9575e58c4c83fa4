"""The device an estimate is for: a small table of GPUs' peak throughput, and what this machine has."""

from __future__ import annotations

import os
from dataclasses import dataclass

from xllm_cli.sizes import GB, parse_size

__all__ = ["GB", "PEAK_TFLOPS", "Target", "detect_target", "parse_size", "peak_tflops"]

# Peak dense bf16 tensor throughput (TFLOPs, no sparsity) from the vendors' data sheets; fp16 for GPUs without bf16
# (V100, T4). Matched against torch.cuda.get_device_name() in this order, so a longer name wins over its prefix.
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("H200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("RTX 6000 Ada", 364.0),
    ("RTX A6000", 155.0),
    ("RTX 4090", 165.0),
    ("RTX 3090", 71.0),
    ("V100", 125.0),
    ("T4", 65.0),
    ("MI300X", 1307.0),
)


def peak_tflops(device_name: str | None) -> float | None:
    if not device_name:
        return None
    for key, tflops in PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops
    return None


@dataclass(frozen=True)
class Target:
    """The devices a run is estimated for. ``cuda=False`` is a CPU run (float32, no CUDA overhead)."""

    num_devices: int = 1
    device_memory: int | None = None  # bytes of one device; None: no verdict
    device_name: str | None = None
    device_tflops: float | None = None
    cuda: bool = True
    bf16: bool = True
    assumed: bool = False  # no GPU is visible: a bf16 CUDA GPU is assumed

    @property
    def tflops(self) -> float | None:
        return self.device_tflops or peak_tflops(self.device_name)


def detect_target(
    device_memory: str | None, num_devices: int | None, device_tflops: float | None, assume_gpu: bool
) -> Target:
    """The target from the settings and this machine: the visible GPU's memory and name unless given; the number of
    devices from the settings, else the launcher's ``WORLD_SIZE``, else the visible GPUs, else 1.

    Without a visible GPU, ``assume_gpu`` plans for a CUDA GPU with bf16 (``xllm train --estimate`` on a laptop);
    otherwise the target is this CPU, as a real run here would use it.
    """
    import torch

    memory = parse_size(device_memory) if device_memory else None
    cuda = torch.cuda.is_available()
    name = None
    if cuda:
        properties = torch.cuda.get_device_properties(0)
        name = properties.name
        memory = memory or properties.total_memory
    devices = num_devices or int(os.environ.get("WORLD_SIZE", "0") or 0) or (torch.cuda.device_count() if cuda else 1)
    return Target(
        num_devices=max(devices, 1),
        device_memory=memory,
        device_name=name,
        device_tflops=device_tflops,
        cuda=cuda or assume_gpu,
        bf16=torch.cuda.is_bf16_supported() if cuda else True,
        assumed=not cuda and assume_gpu,
    )
