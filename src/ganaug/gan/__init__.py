"""GAN architectures, registered by name: adding one touches its module, GANS and the
`gan.arch` choices in `ganaug.config` (a test checks that the two lists agree).

Every architecture shares `gan.train.training_loop`; they differ in networks and loss:

- generator(resolution, latent_dim, base_channels, n_classes, channels): z (N, latent_dim)
  [+ labels (N,) class indices or (N, K) multi-hot] -> images (N, channels, R, R) in [-1, 1]
- discriminator(resolution, base_channels, n_classes, channels, norm, spectral_norm):
  images [+ labels] -> whatever the loss reads (logits (N,), or (logits, class logits))
- loss(gan config) -> a `GANLoss` turning D's outputs into named loss terms
- generator_options(gan config) -> the arch's own generator keyword arguments (its params section)

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

from ganaug.gan import acgan, cgan, cyclegan, dcgan, stylegan2
from ganaug.gan.losses import ACGANLoss, GANLoss


@dataclass(frozen=True)
class GANSpec:
    generator: Callable[..., nn.Module]  # (resolution, latent_dim, base_channels, n_classes, channels)
    discriminator: Callable[..., nn.Module]  # (resolution, base_channels, n_classes, channels, norm, spectral_norm)
    loss: Callable[[Any], GANLoss]  # GANConfig -> loss (adversarial loss, penalties, auxiliary terms)
    generator_options: Callable[[Any], dict[str, Any]] = lambda cfg: {}  # GANConfig -> extra generator kwargs


def _stylegan2_options(cfg: Any) -> dict[str, Any]:
    """gan.stylegan2's network keys (the rest are the loss's)."""
    s = cfg.stylegan2
    return {"mapping_layers": s.mapping_layers, "w_dim": s.w_dim, "style_mixing": s.style_mixing}


GANS: dict[str, GANSpec] = {
    "dcgan": GANSpec(dcgan.Generator, dcgan.Discriminator, GANLoss.from_config),
    "cgan": GANSpec(cgan.Generator, cgan.Discriminator, GANLoss.from_config),
    "acgan": GANSpec(acgan.Generator, acgan.Discriminator, ACGANLoss.from_config),
    "stylegan2": GANSpec(stylegan2.Generator, stylegan2.Discriminator, stylegan2.StyleGAN2Loss.from_config,
                         _stylegan2_options),
    "cyclegan": GANSpec(
        lambda resolution, latent_dim, base_channels, n_classes, channels: cyclegan.ResnetGenerator(resolution, base_channels, channels),
        lambda resolution, base_channels, n_classes, channels, norm, spectral_norm: cyclegan.PatchDiscriminator(
            resolution, base_channels, channels),
        lambda cfg: cyclegan.LeastSquaresLoss(),
    ),
}
