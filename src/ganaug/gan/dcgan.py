"""DCGAN (Radford et al. 2016) and its class-conditional variant (one-hot or multi-hot labels
on G's input and as constant feature maps on D's input, as in the cDCGAN chest X-ray papers).

All resolutions of `resolution_plan` work (28..256).
"""

from __future__ import annotations

import torch
from torch import nn

from ganaug.gan.blocks import (
    DiscriminatorNorm, DownsamplingTrunk, UpsamplingTrunk, apply_spectral_norm, init_dcgan_weights, label_vectors,
    require_labels, resolution_plan,
)

__all__ = ["Discriminator", "Generator", "resolution_plan"]


class Generator(nn.Module):
    """z (N, latent_dim) [+ labels (N,) or (N, K)] -> images (N, channels, R, R) in [-1, 1]."""

    def __init__(self, resolution: int, latent_dim: int = 100, base_channels: int = 64, n_classes: int = 0, channels: int = 1):
        super().__init__()
        self.resolution, self.latent_dim, self.n_classes, self.channels = resolution, latent_dim, n_classes, channels
        self.trunk = UpsamplingTrunk(resolution, latent_dim + n_classes, base_channels, channels)
        self.apply(init_dcgan_weights)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        assert z.ndim == 2 and z.shape[1] == self.latent_dim, f"z must be (N, {self.latent_dim}), got {tuple(z.shape)}"
        if self.n_classes:
            labels = require_labels(labels, self.n_classes, "DCGAN generator")
            z = torch.cat([z, label_vectors(labels, self.n_classes, z.dtype)], dim=1)
        return self.trunk(z)


class Discriminator(nn.Module):
    """images (N, channels, R, R) [+ labels (N,) or (N, K)] -> real/fake logits (N,)."""

    def __init__(self, resolution: int, base_channels: int = 64, n_classes: int = 0, channels: int = 1,
                 norm: DiscriminatorNorm = "batch", spectral_norm: bool = False):
        super().__init__()
        self.resolution, self.n_classes = resolution, n_classes
        self.trunk = DownsamplingTrunk(resolution, base_channels, channels + n_classes, norm)
        self.head = nn.Conv2d(self.trunk.out_channels, 1, self.trunk.base, 1, 0, bias=False)  # (N, 1, 1, 1)
        self.apply(init_dcgan_weights)
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        assert images.shape[-1] == self.resolution, f"expected {self.resolution} px images, got {tuple(images.shape)}"
        if self.n_classes:
            labels = require_labels(labels, self.n_classes, "DCGAN discriminator")
            onehot = label_vectors(labels, self.n_classes, images.dtype)
            maps = onehot[:, :, None, None].expand(-1, -1, images.shape[2], images.shape[3])
            images = torch.cat([images, maps], dim=1)
        return self.head(self.trunk(images)).flatten()
