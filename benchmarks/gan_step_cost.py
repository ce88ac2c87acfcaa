"""CPU cost of each architecture's networks at their default widths: forward and backward time
per batch, one thread, measured with `time.process_time` (CPU seconds of this process, so other
jobs on the machine do not enter). Not a training benchmark: one G step and one D step of the
training loop cost roughly `G fwd+bwd + 2 x D fwd+bwd` (plus penalties, augmentation, EMA).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gan_step_cost.py [--resolution 64] [--batch 32]
"""

from __future__ import annotations

import argparse
import time

import torch

from ganaug.config import GANConfig
from ganaug.gan.train import build_networks

ARCHS = {  # gan params each arch needs to build with its defaults otherwise
    "dcgan": {},
    "cgan": {"mode": "conditional"},
    "acgan": {"mode": "conditional"},
    "stylegan2": {"loss": "nonsaturating", "spectral_norm": False, "r1_gamma": 0.0},
    "cyclegan": {},
}


def first(out):
    """D's adversarial output (AC-GAN's D also returns class logits)."""
    return out[0] if isinstance(out, tuple) else out


def cpu_ms(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, one-time kernel choices)
    start = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - start) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--archs", nargs="+", choices=sorted(ARCHS), default=list(ARCHS))
    parser.add_argument("--base-channels", type=int, default=None, help="gan.base_channels (default: params.yaml's)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(f"| arch | G params | D params | G fwd ms | G fwd+bwd ms | D fwd+bwd ms | images / CPU-s (G fwd+bwd + 2 D fwd+bwd) |")
    print("|---|---|---|---|---|---|---|")
    widths = {} if args.base_channels is None else {"base_channels": args.base_channels}
    for arch in args.archs:
        cfg = GANConfig(arch=arch, **ARCHS[arch], **widths)
        generator, discriminator = build_networks(cfg, args.resolution, 2, 1)
        labels = torch.zeros(args.batch, dtype=torch.long)
        images = torch.randn(args.batch, 1, args.resolution, args.resolution)
        if arch == "cyclegan":  # a translator: images in
            g_forward = lambda: generator(images)  # noqa: E731
            d_forward = lambda: discriminator(images)  # noqa: E731
        else:
            z = torch.randn(args.batch, cfg.latent_dim)
            g_forward = lambda: generator(z, labels)  # noqa: E731
            d_forward = lambda: discriminator(images, labels)  # noqa: E731
        g_fwd = cpu_ms(lambda: g_forward(), args.repeats)
        g_step = cpu_ms(lambda: g_forward().mean().backward(), args.repeats)
        d_step = cpu_ms(lambda: first(d_forward()).mean().backward(), args.repeats)
        n_g = sum(p.numel() for p in generator.parameters())
        n_d = sum(p.numel() for p in discriminator.parameters())
        rate = args.batch / ((g_step + 2 * d_step) / 1000)
        print(f"| {arch} | {n_g:,} | {n_d:,} | {g_fwd:.0f} | {g_step:.0f} | {d_step:.0f} | {rate:.1f} |")


if __name__ == "__main__":
    main()
