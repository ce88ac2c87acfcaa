"""GAN losses as small callables over discriminator logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class NonSaturatingLoss:
    """Binary cross-entropy GAN loss (Goodfellow et al.), with the non-saturating G loss
    used by DCGAN: D maximises log D(x) + log(1 - D(G(z))), G maximises log D(G(z))."""

    def discriminator(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
        fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        return real + fake

    def generator(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
