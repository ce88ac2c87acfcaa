"""Class-conditional GAN with a projection discriminator (Miyato & Koyama 2018).

G: the DCGAN generator body with class-conditional BatchNorm at every level (the class sets
each feature map's scale and shift). D: the DCGAN discriminator body, sum-pooled to features
phi (N, C); logit = w . phi + <embed(y), phi>, the inner product of a class embedding with
the features. Labels are class indices (N,) or multi-hot (N, K) (the embeddings then add up).
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
        require_classes(n_classes, "cgan")
        self.resolution, self.latent_dim, self.n_classes, self.channels = resolution, latent_dim, n_classes, channels
        self.trunk = UpsamplingTrunk(resolution, latent_dim, base_channels, channels, n_classes_cbn=n_classes)
        self.apply(init_dcgan_weights)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        assert z.ndim == 2 and z.shape[1] == self.latent_dim, f"z must be (N, {self.latent_dim}), got {tuple(z.shape)}"
        labels = require_labels(labels, self.n_classes, "cGAN generator")
        return self.trunk(z, label_vectors(labels, self.n_classes, z.dtype))


class Discriminator(nn.Module):
    """images (N, channels, R, R) + labels -> real/fake logits (N,) (projection discriminator)."""

    def __init__(self, resolution: int, base_channels: int = 64, n_classes: int = 0, channels: int = 1,
                 norm: DiscriminatorNorm = "batch", spectral_norm: bool = False):
        super().__init__()
        require_classes(n_classes, "cgan")
        self.resolution, self.n_classes = resolution, n_classes
        self.trunk = DownsamplingTrunk(resolution, base_channels, channels, norm)
        features = self.trunk.out_channels
        self.linear = nn.Linear(features, 1)
        self.embed = nn.Linear(n_classes, features, bias=False)  # y @ W: one class embedding per class
        self.apply(init_dcgan_weights)
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        assert images.shape[-1] == self.resolution, f"expected {self.resolution} px images, got {tuple(images.shape)}"
        labels = require_labels(labels, self.n_classes, "cGAN discriminator")
        phi = self.trunk(images).sum(dim=(2, 3))  # (N, C): sum pooling over base x base
        y = label_vectors(labels, self.n_classes, phi.dtype)
        return self.linear(phi).flatten() + (self.embed(y) * phi).sum(dim=1)
