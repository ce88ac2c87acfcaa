"""Device choice (CUDA when present, else CPU) and mixed precision, in one place."""

from __future__ import annotations

import contextlib

import torch


def pick_device(requested: str = "auto", key: str = "device") -> torch.device:
    """`auto` -> cuda if available else cpu; an explicit `cuda` without a GPU is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"{key}=cuda but no CUDA device is available (use auto or cpu)")
    return torch.device(requested)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on CUDA (no loss scaling needed); a no-op on CPU, which stays float32."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def describe(device: torch.device) -> dict[str, str]:
    """What ran the job, for MLflow params."""
    info = {"device": str(device), "mixed_precision": "bf16" if device.type == "cuda" else "off"}
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    else:
        info["cpu_threads"] = str(torch.get_num_threads())
    return info


def to_device_images(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move an (N, C, H, W) batch in channels_last layout (faster convolutions on CPU and CUDA)."""
    return images.to(device).contiguous(memory_format=torch.channels_last)
