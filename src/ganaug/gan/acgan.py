"""Auxiliary-classifier GAN (Odena et al. 2017), as in the AC-GAN chest X-ray study.

G takes noise and a class embedding (a linear map of the one-hot or multi-hot label vector,
concatenated to z) through the DCGAN generator body. D is unconditional and has two heads on
the DCGAN discriminator body: real/fake logits (N,) and class logits (N, K): softmax classes
for class indices, independent sigmoid findings for multi-hot labels (NIH-style sets).
"""

from __future__ import annotations

import torch
from torch import nn

from ganaug.gan.blocks import (
    DiscriminatorNorm, DownsamplingTrunk, UpsamplingTrunk, apply_spectral_norm, init_dcgan_weights, label_vectors,
    require_classes, require_labels,
)


class Generator(nn.Module):
    """z (N, latent_dim) + labels (N,) or (N, K) -> images (N, channels, R, R) in [-1, 1]."""

    def __init__(self, resolution: int, latent_dim: int = 100, base_channels: int = 64, n_classes: int = 0, channels: int = 1):
        super().__init__()
        require_classes(n_classes, "acgan")
        self.resolution, self.latent_dim, self.n_classes, self.channels = resolution, latent_dim, n_classes, channels
        self.embed = nn.Linear(n_classes, latent_dim, bias=False)  # class embedding, same size as z
        self.trunk = UpsamplingTrunk(resolution, 2 * latent_dim, base_channels, channels)
        self.apply(init_dcgan_weights)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        assert z.ndim == 2 and z.shape[1] == self.latent_dim, f"z must be (N, {self.latent_dim}), got {tuple(z.shape)}"
        labels = require_labels(labels, self.n_classes, "AC-GAN generator")
        return self.trunk(torch.cat([z, self.embed(label_vectors(labels, self.n_classes, z.dtype))], dim=1))


class Discriminator(nn.Module):
    """images (N, channels, R, R) -> (real/fake logits (N,), class logits (N, K)).

    `labels` is accepted for the shared D interface and not used: this D predicts them."""

    def __init__(self, resolution: int, base_channels: int = 64, n_classes: int = 0, channels: int = 1,
                 norm: DiscriminatorNorm = "batch", spectral_norm: bool = False):
        super().__init__()
        require_classes(n_classes, "acgan")
        self.resolution, self.n_classes = resolution, n_classes
        self.trunk = DownsamplingTrunk(resolution, base_channels, channels, norm)
        self.head = nn.Conv2d(self.trunk.out_channels, 1, self.trunk.base, 1, 0, bias=False)  # (N, 1, 1, 1)
        self.class_head = nn.Conv2d(self.trunk.out_channels, n_classes, self.trunk.base, 1, 0)  # (N, K, 1, 1)
        self.apply(init_dcgan_weights)
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        assert images.shape[-1] == self.resolution, f"expected {self.resolution} px images, got {tuple(images.shape)}"
        features = self.trunk(images)
        return self.head(features).flatten(), self.class_head(features).flatten(1)
