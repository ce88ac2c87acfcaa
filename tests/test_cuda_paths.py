"""The CUDA code paths of GAN training (train set on the GPU as uint8, fused Adam, bf16 autocast
with float32 penalties, torch.compile of the forward passes, cudnn.benchmark): the CPU-side
choices here, the runs where CUDA exists (benchmarks/gpu_check.sh runs this file on a GPU)."""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from ganaug.config import GANConfig
from ganaug.device import adam_options, autocast, compiled, configure_backends, on_device_uint8
from ganaug.gan.train import build_optimizer, load_checkpoint, training_loop

CUDA = torch.device("cuda")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: run benchmarks/gpu_check.sh on a GPU")


def tiny_cfg(**overrides) -> GANConfig:
    base = dict(latent_dim=8, base_channels=8, epochs=2, batch_size=8, eval_every=1, n_eval=8, seed=0, device="cuda",
                min_diversity=0.0)
    return dataclasses.replace(GANConfig(), **{**base, **overrides})


def tiny_images(n=32, size=32):
    return np.random.default_rng(0).integers(0, 256, (n, 1, size, size), dtype=np.uint8)


def test_cpu_keeps_the_plain_paths():
    cpu = torch.device("cpu")
    assert adam_options(cpu, True) == {}
    assert isinstance(autocast(cpu), contextlib.nullcontext)
    net = nn.Linear(2, 2)
    assert compiled(net, cpu, True) is net  # compile is CUDA-only
    configure_backends(cpu, True)  # a no-op
    assert on_device_uint8(np.zeros((2, 1, 4, 4), np.uint8), cpu).device == cpu
    opt = build_optimizer(net.parameters(), 1e-3, tiny_cfg(device="cpu"), cpu)
    assert not opt.defaults.get("fused")


@needs_cuda
def test_cuda_options():
    assert adam_options(CUDA, True) == {"fused": True} and adam_options(CUDA, False) == {}
    assert isinstance(autocast(CUDA, True), torch.autocast) and isinstance(autocast(CUDA, False), contextlib.nullcontext)
    assert on_device_uint8(np.zeros((2, 1, 4, 4), np.uint8), CUDA).is_cuda
    opt = build_optimizer(nn.Linear(2, 2).to(CUDA).parameters(), 1e-3, tiny_cfg(), CUDA)
    assert opt.defaults["fused"]


@needs_cuda
@pytest.mark.parametrize("overrides", [
    {},  # the default recipe: hinge, spectral norm, DiffAugment, EMA, bf16, fused Adam, cudnn.benchmark
    {"precision": "fp32", "fast_kernels": False},
    {"loss": "wgan_gp", "n_critic": 2},  # gradient penalty (double backward) in float32 beside bf16 forwards
    {"r1_gamma": 1.0, "augment": "ada"},
    {"arch": "cgan", "mode": "conditional"},
    {"arch": "acgan", "mode": "conditional"},
])
def test_training_runs_on_cuda(tmp_path, overrides):
    cfg = tiny_cfg(**overrides)
    labels = np.random.default_rng(1).integers(0, 2, 32) if cfg.mode == "conditional" else None
    result = training_loop(tiny_images(), labels, 2 if labels is not None else 0, cfg, tmp_path / "c.pt", CUDA)
    assert len(result.losses) == 2 * 32 // (8 * cfg.n_critic)
    assert all(np.isfinite(r["loss_d"]) and np.isfinite(r["loss_g"]) for r in result.losses)
    assert next(result.generator.parameters()).is_cuda
    assert all(v.dtype == torch.float32 for v in result.trained_generator.state_dict().values() if v.is_floating_point())


@needs_cuda
def test_compiled_forward_passes_train_and_checkpoint_plain_keys(tmp_path):
    cfg = tiny_cfg(compile=True, epochs=1, r1_gamma=1.0)  # R1's double backward runs through the eager D
    result = training_loop(tiny_images(), None, 0, cfg, tmp_path / "c.pt", CUDA)
    assert all(np.isfinite(r["loss_d"]) for r in result.losses)
    state = load_checkpoint(tmp_path / "c.pt")
    assert not any(k.startswith("_orig_mod.") for k in [*state["generator"], *state["discriminator"]])


@needs_cuda
def test_resume_on_cuda_continues_the_trajectory(tmp_path):
    """Deterministic kernels (gan.fast_kernels=false): a stopped and resumed run equals a straight one."""
    cfg = tiny_cfg(fast_kernels=False)
    torch.backends.cudnn.deterministic = True
    try:
        straight = training_loop(tiny_images(), None, 0, cfg, tmp_path / "a.pt", CUDA)
        training_loop(tiny_images(), None, 0, cfg, tmp_path / "b.pt", CUDA, stop_after_epoch=1)
        resumed = training_loop(tiny_images(), None, 0, cfg, tmp_path / "b.pt", CUDA)
    finally:
        torch.backends.cudnn.deterministic = False
    assert resumed.resumed_from_epoch == 1
    assert [r["loss_g"] for r in resumed.losses] == pytest.approx([r["loss_g"] for r in straight.losses], rel=1e-4)
    for (key, a), b in zip(straight.generator.state_dict().items(), resumed.generator.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=f"EMA {key} differs after resume")


@needs_cuda
@pytest.mark.parametrize("augmented", [False, True])  # the set on the GPU; augmented batches from the CPU
def test_classifier_trains_on_cuda(augmented):
    from ganaug.classify.augment import ClassicAugment
    from ganaug.classify.train import train_classifier
    from ganaug.config import ClassicAugmentConfig

    rng = np.random.default_rng(0)
    images, labels = tiny_images(64, 28), rng.integers(0, 2, 64)
    augment = ClassicAugment(ClassicAugmentConfig()) if augmented else None
    result = train_classifier(images, labels, images[:16], labels[:16], 2, "simple_cnn", 2, 16, 1e-3, 1e-4, 2, 0, CUDA,
                              augment=augment)
    assert all(np.isfinite(h["train_loss"]) for h in result.history)
