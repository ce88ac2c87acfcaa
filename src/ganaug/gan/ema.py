"""Exponential moving average of the generator's weights (as StyleGAN2-ADA's G_ema).

The average, not the last iterate, is what gets sampled, evaluated and saved when
`gan.ema_kimg` > 0: it smooths the oscillation of adversarial training at no training cost.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class GeneratorEMA:
    """A copy of G whose parameters follow G's with a half-life of `half_life_kimg` thousand
    real images; buffers (BatchNorm running statistics) are copied from G as they are."""

    def __init__(self, generator: nn.Module, half_life_kimg: float):
        assert half_life_kimg > 0, f"EMA half-life must be > 0 kimg, got {half_life_kimg}"
        self.half_life_kimg = half_life_kimg
        self.network = copy.deepcopy(generator).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, generator: nn.Module, n_images: int) -> None:
        """After a G step that consumed `n_images` real images: ema = beta * ema + (1 - beta) * G."""
        beta = 0.5 ** (n_images / (self.half_life_kimg * 1000))
        for averaged, current in zip(self.network.parameters(), generator.parameters(), strict=True):
            averaged.lerp_(current.detach(), 1.0 - beta)
        for averaged, current in zip(self.network.buffers(), generator.buffers(), strict=True):
            averaged.copy_(current)
