"""GAN architectures, registered by name: adding one touches its module, GANS and the
`gan.arch` choices in `ganaug.config` (a test checks that the two lists agree).

Every architecture shares `gan.train.training_loop`; they differ in networks and loss:

- generator(resolution, latent_dim, base_channels, n_classes, channels): z (N, latent_dim)
  [+ labels (N,) class indices or (N, K) multi-hot] -> images (N, channels, R, R) in [-1, 1]
- discriminator(resolution, base_channels, n_classes, channels, norm, spectral_norm):
  images [+ labels] -> whatever the loss reads (logits (N,), or (logits, class logits))
- loss(gan config) -> a `GANLoss` turning D's outputs into named loss terms

`cyclegan` is a translator, not a noise-driven generator: G maps images (N, C, R, R) to images
of another class, D is a PatchGAN, and it trains in its own loop (`cyclegan.translation_loop`,
which `gan.train.training_loop` hands it to); its spec builds the networks with gan.cyclegan's
defaults (`gan.train.build_generator` passes the whole config).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ganaug.gan import acgan, cgan, cyclegan, dcgan
from ganaug.gan.losses import ACGANLoss, GANLoss


@dataclass(frozen=True)
class GANSpec:
    generator: Callable[..., nn.Module]  # (resolution, latent_dim, base_channels, n_classes, channels)
    discriminator: Callable[..., nn.Module]  # (resolution, base_channels, n_classes, channels, norm, spectral_norm)
    loss: Callable[[Any], GANLoss]  # GANConfig -> loss (adversarial loss, penalties, auxiliary terms)


GANS: dict[str, GANSpec] = {
    "dcgan": GANSpec(dcgan.Generator, dcgan.Discriminator, GANLoss.from_config),
    "cgan": GANSpec(cgan.Generator, cgan.Discriminator, GANLoss.from_config),
    "acgan": GANSpec(acgan.Generator, acgan.Discriminator, ACGANLoss.from_config),
    "cyclegan": GANSpec(
        lambda resolution, latent_dim, base_channels, n_classes, channels: cyclegan.ResnetGenerator(resolution, base_channels, channels),
        lambda resolution, base_channels, n_classes, channels, norm, spectral_norm: cyclegan.PatchDiscriminator(
            resolution, base_channels, channels),
        lambda cfg: cyclegan.LeastSquaresLoss(),
    ),
}
