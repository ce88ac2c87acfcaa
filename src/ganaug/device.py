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


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on CUDA (no loss scaling needed); a no-op on CPU, which stays float32, and when not `enabled`."""
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def configure_backends(device: torch.device, benchmark: bool) -> None:
    """CUDA: let cudnn time its convolution algorithms for each new shape and keep the fastest
    (fixed shapes in a training loop: a few slow first steps, then faster ones; the choice can
    differ between runs, hence a param), and allow TF32 in float32 matmuls and convolutions."""
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = benchmark
    torch.backends.cuda.matmul.allow_tf32 = benchmark
    torch.backends.cudnn.allow_tf32 = benchmark


def adam_options(device: torch.device, fused: bool) -> dict[str, bool]:
    """Keyword arguments of torch.optim.Adam: one fused CUDA kernel for all parameters when
    `fused` on CUDA (rounding differs from the default per-tensor foreach kernels); {} elsewhere."""
    return {"fused": True} if fused and device.type == "cuda" else {}


def compiled(module: torch.nn.Module, device: torch.device, enabled: bool) -> torch.nn.Module:
    """`module`'s forward through torch.compile on CUDA when `enabled`, else `module` itself.
    The compiled wrapper shares the parameters; keep the original for state_dict (no `_orig_mod.`
    prefix) and for anything differentiated twice (gradient penalties stay eager)."""
    if enabled and device.type == "cuda":
        return torch.compile(module)
    return module


def on_device_uint8(array, device: torch.device) -> torch.Tensor:
    """A uint8 (or label) numpy array as a tensor on `device`: on CUDA the whole training set lives
    on the GPU (1 byte per pixel) and batches are indexed there, with no host copy per step."""
    tensor = torch.from_numpy(array)
    return tensor.to(device) if device.type == "cuda" else tensor


def describe(device: torch.device, mixed: bool = True) -> dict[str, str]:
    """What ran the job, for MLflow params (`mixed`: bf16 autocast asked for, as gan.precision=bf16)."""
    info = {"device": str(device), "mixed_precision": "bf16" if device.type == "cuda" and mixed else "off"}
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    else:
        info["cpu_threads"] = str(torch.get_num_threads())
    return info


def to_device_images(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move an (N, C, H, W) batch in channels_last layout (faster convolutions on CPU and CUDA)."""
    return images.to(device).contiguous(memory_format=torch.channels_last)
