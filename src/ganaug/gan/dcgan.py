"""DCGAN (Radford et al. 2016) and its class-conditional variant (one-hot labels on G's
input and as constant feature maps on D's input, as in the cDCGAN chest X-ray papers).

Resolutions are base * 2**k with base in 4..8, so 28 (7*4), 32, 64, 128, 224 (7*32) and
256 all work: G projects the noise to base x base, then doubles k times; D mirrors it.
"""

from __future__ import annotations

import torch
from torch import nn


def resolution_plan(resolution: int) -> tuple[int, int]:
    """(base, n_doublings) with resolution == base * 2**n_doublings, base in 4..8, n >= 2."""
    k = 0
    while resolution % 2 ** (k + 1) == 0 and resolution // 2 ** (k + 1) >= 4:
        k += 1
    base = resolution // 2**k
    if k < 2 or base > 8:
        raise ValueError(
            f"DCGAN resolution {resolution}: expected base * 2**k with base in 4..8 and k >= 2 "
            "(e.g. 28, 32, 48, 64, 96, 128, 224, 256)"
        )
    return base, k


def _channels(base_channels: int, level: int) -> int:
    return min(base_channels * 2**level, 512)


def init_dcgan_weights(module: nn.Module) -> None:
    """DCGAN paper init: conv weights N(0, 0.02), BatchNorm scale N(1, 0.02), bias 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    """z (N, latent_dim) [+ labels (N,)] -> images (N, channels, R, R) in [-1, 1]."""

    def __init__(self, resolution: int, latent_dim: int = 100, base_channels: int = 64, n_classes: int = 0, channels: int = 1):
        super().__init__()
        self.resolution, self.latent_dim, self.n_classes, self.channels = resolution, latent_dim, n_classes, channels
        base, k = resolution_plan(resolution)
        ch = _channels(base_channels, k - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim + n_classes, ch, base, 1, 0, bias=False),  # (N, ch, base, base)
            nn.BatchNorm2d(ch),
            nn.ReLU(True),
        ]
        for level in range(k - 2, -1, -1):
            out = _channels(base_channels, level)
            layers += [nn.ConvTranspose2d(ch, out, 4, 2, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(True)]
            ch = out
        layers += [nn.ConvTranspose2d(ch, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(init_dcgan_weights)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        assert z.ndim == 2 and z.shape[1] == self.latent_dim, f"z must be (N, {self.latent_dim}), got {tuple(z.shape)}"
        if self.n_classes:
            assert labels is not None, "a conditional generator needs class labels"
            z = torch.cat([z, nn.functional.one_hot(labels, self.n_classes).to(z.dtype)], dim=1)
        return self.net(z[:, :, None, None])


class Discriminator(nn.Module):
    """images (N, channels, R, R) [+ labels (N,)] -> real/fake logits (N,)."""

    def __init__(self, resolution: int, base_channels: int = 64, n_classes: int = 0, channels: int = 1):
        super().__init__()
        self.resolution, self.n_classes = resolution, n_classes
        base, k = resolution_plan(resolution)
        ch = _channels(base_channels, 0)
        layers: list[nn.Module] = [nn.Conv2d(channels + n_classes, ch, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for level in range(1, k):
            out = _channels(base_channels, level)
            layers += [nn.Conv2d(ch, out, 4, 2, 1, bias=False), nn.BatchNorm2d(out), nn.LeakyReLU(0.2, True)]
            ch = out
        layers += [nn.Conv2d(ch, 1, base, 1, 0, bias=False)]  # (N, 1, 1, 1)
        self.net = nn.Sequential(*layers)
        self.apply(init_dcgan_weights)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        assert images.shape[-1] == self.resolution, f"expected {self.resolution} px images, got {tuple(images.shape)}"
        if self.n_classes:
            assert labels is not None, "a conditional discriminator needs class labels"
            onehot = nn.functional.one_hot(labels, self.n_classes).to(images.dtype)
            maps = onehot[:, :, None, None].expand(-1, -1, images.shape[2], images.shape[3])
            images = torch.cat([images, maps], dim=1)
        return self.net(images).flatten()
