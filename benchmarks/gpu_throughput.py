"""Throughput table for benchmarks/gpu_check.sh: ganaug's GAN training loop (DCGAN at 64 and
128 px, every other registered architecture at 64 px, the peer's work at 64 px 3 channels),
Inception FID features, a classifier's training steps, each in images per second.

    .venv/bin/python benchmarks/gpu_throughput.py              # on CUDA (fails without it)
    .venv/bin/python benchmarks/gpu_throughput.py --smoke      # tiny sizes on the CPU: checks the script runs

GAN rows: `training_loop` on random uint8 images with its own timing (optimisation only,
`EpochReport.train_seconds`), the last of `--epochs` epochs (the first pays cudnn's algorithm
search and any compilation). Images/s counts real images through D. No quality evaluation.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import tempfile
import time
import traceback
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from ganaug.config import GANConfig
from ganaug.device import autocast
from ganaug.gan import GANS
from ganaug.gan.train import training_loop


def gan_images_per_second(cfg: GANConfig, resolution: int, channels: int, n_images: int, device: torch.device) -> float:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n_images, channels, resolution, resolution), dtype=np.uint8)
    conditional = cfg.mode == "conditional"
    labels = rng.integers(0, 2, n_images) if conditional else None
    last: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        training_loop(images, labels, 2 if conditional else 0, cfg, Path(folder) / "checkpoint.pt", device,
                      on_epoch_end=lambda report: last.append(report.images_seen / report.train_seconds))
    return last[-1]


def inception_features_per_second(device: torch.device, n_images: int, batch_size: int, mixed: bool) -> tuple[float, str]:
    """pytorch-fid's Inception (299 px resize inside) on 64 px grayscale batches; random weights
    when the FID weights file is not found (the speed is the same)."""
    import pytorch_fid.inception as pfi

    from ganaug.quality.inception import fid_inception_architecture, find_inception_weights, load_fid_inception, to_three_channels

    weights = find_inception_weights(None)
    if weights is not None:
        model, label = load_fid_inception(weights, device), "FID weights"
    else:
        backbone = fid_inception_architecture()
        with mock.patch.object(pfi, "fid_inception_v3", lambda: backbone):
            model = pfi.InceptionV3(output_blocks=[3], resize_input=True, normalize_input=True, requires_grad=False)
        model, label = model.to(device).eval(), "random weights: speed only"
    images = torch.randint(0, 256, (n_images, 1, 64, 64), dtype=torch.uint8, device=device)

    def run() -> None:
        with torch.inference_mode(), autocast(device, mixed):
            for start in range(0, n_images, batch_size):
                model(to_three_channels(images[start : start + batch_size].float() / 255.0))[0].float().cpu()

    run()  # warm-up
    synchronize(device)
    start = time.perf_counter()
    run()
    synchronize(device)
    return n_images / (time.perf_counter() - start), label


def classifier_images_per_second(arch: str, device: torch.device, n_steps: int, batch_size: int, resolution: int) -> float:
    """AdamW steps of `arch` (1 channel, 2 classes) with bf16 autocast on CUDA, data already on the device."""
    from ganaug.classify.models import create_classifier

    model = create_classifier(arch, 2, 1).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, **({"fused": True} if device.type == "cuda" else {}))
    x = torch.randn(batch_size, 1, resolution, resolution, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch_size,), device=device)

    def steps(n: int) -> None:
        for _ in range(n):
            with autocast(device):
                loss = torch.nn.functional.cross_entropy(model(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    steps(3)
    synchronize(device)
    start = time.perf_counter()
    steps(n_steps)
    synchronize(device)
    return n_steps * batch_size / (time.perf_counter() - start)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (checks that every row runs)")
    parser.add_argument("--epochs", type=int, default=3, help="GAN epochs per row; the last one is timed")
    parser.add_argument("--compile", action="store_true", help="also a DCGAN 64 px row with gan.compile=true")
    args = parser.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("gpu_throughput.py: no CUDA device (use --smoke for the CPU check)")
    device = torch.device("cpu" if args.smoke else "cuda")
    n_gan = 64 if args.smoke else 4096  # images per epoch (64 steps of 64)
    base = dataclasses.replace(GANConfig(), base_channels=8 if args.smoke else 64, batch_size=16 if args.smoke else 64,
                               epochs=2 if args.smoke else args.epochs, device=device.type, min_diversity=0.0,
                               collapse_epochs=0)
    peer_work = dataclasses.replace(base, loss="nonsaturating", spectral_norm=False, augment="none", ema_kimg=0.0)
    rows: list[tuple[str, str]] = []

    def row(name: str, measure) -> None:
        try:
            value = measure()
            rows.append((name, value if isinstance(value, str) else f"{value:,.0f}" if value >= 100 else f"{value:.3g}"))
        except Exception as exc:  # one broken row must not hide the others
            traceback.print_exc()
            rows.append((name, f"failed: {type(exc).__name__}: {str(exc)[:80]}"))
        print(f"{rows[-1][0]}: {rows[-1][1]}", flush=True)

    sizes = (32, 64) if args.smoke else (64, 128)
    for resolution in sizes:
        row(f"GAN dcgan {resolution} px (default recipe) img/s", lambda r=resolution: gan_images_per_second(base, r, 1, n_gan, device))
    row(f"GAN dcgan {sizes[0]} px fp32 (gan.precision=fp32) img/s",
        lambda: gan_images_per_second(dataclasses.replace(base, precision="fp32"), sizes[0], 1, n_gan, device))
    row(f"GAN dcgan {sizes[0]} px 3 ch, the peer's recipe (BCE, BatchNorm, no augment/EMA) img/s",
        lambda: gan_images_per_second(peer_work, sizes[0], 3, n_gan, device))
    if args.compile:
        row(f"GAN dcgan {sizes[0]} px gan.compile=true img/s",
            lambda: gan_images_per_second(dataclasses.replace(base, compile=True), sizes[0], 1, n_gan, device))
    for arch in GANS:
        if arch == "dcgan":
            continue
        cfg = dataclasses.replace(base, arch=arch, mode="conditional")
        row(f"GAN {arch} {sizes[0]} px (conditional) img/s", lambda c=cfg: gan_images_per_second(c, sizes[0], 1, n_gan, device))
    n_inception, inception_batch = (8, 4) if args.smoke else (2048, 256)
    for mixed in (False, True):
        def features(m=mixed) -> str:
            rate, label = inception_features_per_second(device, n_inception, inception_batch, m)
            return f"{rate:,.0f} ({label})" if rate >= 100 else f"{rate:.3g} ({label})"
        row(f"Inception pool3 features/s, 299 px, {'bf16 autocast' if mixed else 'fp32'}", features)
    for arch in ("simple_cnn", "resnet18"):
        row(f"classifier {arch} 64 px training img/s",
            lambda a=arch: classifier_images_per_second(a, device, 2 if args.smoke else 50, 8 if args.smoke else 256, 64))

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"\n| ganaug throughput on {name}, torch {torch.__version__} | images/s |")
    print("|---|---|")
    for what, value in rows:
        print(f"| {what} | {value} |")
    if any(value.startswith("failed") for _, value in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
