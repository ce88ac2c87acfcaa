"""GAN architectures, registered by name: adding one touches its module and GANS."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ganaug.gan import dcgan
from ganaug.gan.losses import NonSaturatingLoss


@dataclass(frozen=True)
class GANSpec:
    generator: Callable[..., nn.Module]  # (resolution, latent_dim, base_channels, n_classes, channels)
    discriminator: Callable[..., nn.Module]  # (resolution, base_channels, n_classes, channels)
    loss: Callable[[], object]  # an object with .discriminator(real, fake) and .generator(fake)


GANS: dict[str, GANSpec] = {
    "dcgan": GANSpec(dcgan.Generator, dcgan.Discriminator, NonSaturatingLoss),
}
