"""Building blocks every architecture shares: the resolution plan, channel widths, label
vectors, the up- and down-sampling trunks, class-conditional BatchNorm and spectral norm.

Resolutions are base * 2**k with base in 4..8, so 28 (7*4), 32, 64, 128, 224 (7*32) and
256 all work: G projects its input to base x base, then doubles k times; D mirrors it.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ganaug.resolution import resolution_plan  # noqa: F401  (re-exported: the GANs import it from here)

DiscriminatorNorm = Literal["batch", "layer", "none"]


def feature_channels(base_channels: int, level: int) -> int:
    """Feature maps at `level` doublings from the image (DCGAN: base_channels * 2**level, capped)."""
    return min(base_channels * 2**level, 512)


def init_dcgan_weights(module: nn.Module) -> None:
    """DCGAN paper init: conv weights N(0, 0.02), BatchNorm scale N(1, 0.02), bias 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d) and module.affine:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def label_vectors(labels: torch.Tensor, n_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """Class indices (N,) -> one-hot (N, K); multi-hot (N, K) passes through. Both as `dtype`."""
    if labels.ndim == 1:
        assert not labels.is_floating_point(), f"class-index labels must be integers, got {labels.dtype}"
        return F.one_hot(labels, n_classes).to(dtype)
    assert labels.ndim == 2 and labels.shape[1] == n_classes, (
        f"multi-hot labels must be (N, {n_classes}), got {tuple(labels.shape)}"
    )
    return labels.to(dtype)


def require_labels(labels: torch.Tensor | None, n_classes: int, network: str) -> torch.Tensor:
    assert labels is not None, f"the conditional {network} needs class labels ({n_classes} classes)"
    return labels


def apply_spectral_norm(network: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) of every conv and linear weight, in place."""
    for module in list(network.modules()):
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.utils.parametrizations.spectral_norm(module)
    return network


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm whose scale and shift come from the class: gamma = 1 + W_g y, beta = W_b y
    (y one-hot or multi-hot), as in the projection-discriminator cGAN's generator."""

    def __init__(self, channels: int, n_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Linear(n_classes, channels, bias=False)
        self.shift = nn.Linear(n_classes, channels, bias=False)
        nn.init.zeros_(self.gain.weight)  # starts as plain BatchNorm: scale 1, shift 0 for every class
        nn.init.zeros_(self.shift.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gamma = 1.0 + self.gain(y)[:, :, None, None]  # (N, C, 1, 1)
        beta = self.shift(y)[:, :, None, None]
        return self.norm(x) * gamma + beta


class UpBlock(nn.Module):
    """ConvTranspose -> (conditional) BatchNorm -> ReLU."""

    def __init__(self, conv: nn.ConvTranspose2d, channels: int, n_classes_cbn: int):
        super().__init__()
        self.conv = conv
        self.norm = ConditionalBatchNorm2d(channels, n_classes_cbn) if n_classes_cbn else nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        x = self.conv(x)
        x = self.norm(x, y) if isinstance(self.norm, ConditionalBatchNorm2d) else self.norm(x)
        return F.relu(x)


class UpsamplingTrunk(nn.Module):
    """(N, in_features) -> images (N, channels, R, R) in [-1, 1] (the DCGAN generator body).

    With `n_classes_cbn` > 0 every BatchNorm is class-conditional and `forward` takes the
    label vectors (N, K)."""

    def __init__(self, resolution: int, in_features: int, base_channels: int, channels: int, n_classes_cbn: int = 0):
        super().__init__()
        base, k = resolution_plan(resolution)
        ch = feature_channels(base_channels, k - 1)
        self.blocks = nn.ModuleList([UpBlock(nn.ConvTranspose2d(in_features, ch, base, 1, 0, bias=False), ch, n_classes_cbn)])
        for level in range(k - 2, -1, -1):  # (N, ch, base, base) doubled k - 1 times
            out = feature_channels(base_channels, level)
            self.blocks.append(UpBlock(nn.ConvTranspose2d(ch, out, 4, 2, 1, bias=False), out, n_classes_cbn))
            ch = out
        self.to_image = nn.ConvTranspose2d(ch, channels, 4, 2, 1, bias=False)  # the last doubling

    def forward(self, h: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        x = h[:, :, None, None]
        for block in self.blocks:
            x = block(x, y)
        return torch.tanh(self.to_image(x))


def _norm(kind: DiscriminatorNorm, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)  # layer norm over (C, H, W): per-sample, as WGAN-GP needs
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"discriminator norm {kind!r}: expected batch, layer or none")


class DownsamplingTrunk(nn.Module):
    """images (N, in_channels, R, R) -> features (N, out_channels, base, base) (the DCGAN
    discriminator body: strided convs, LeakyReLU 0.2, no norm on the first layer)."""

    def __init__(self, resolution: int, base_channels: int, in_channels: int, norm: DiscriminatorNorm = "batch"):
        super().__init__()
        self.base, k = resolution_plan(resolution)
        ch = feature_channels(base_channels, 0)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ch, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for level in range(1, k):
            out = feature_channels(base_channels, level)
            layers += [nn.Conv2d(ch, out, 4, 2, 1, bias=False), _norm(norm, out), nn.LeakyReLU(0.2, True)]
            ch = out
        self.layers = nn.Sequential(*layers)
        self.out_channels = ch

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


def require_classes(n_classes: int, arch: str) -> None:
    """Class-conditional architectures need classes; the message names the params."""
    if n_classes < 1:
        raise ValueError(f"gan.arch={arch} is class-conditional: it needs n_classes >= 1 (gan.mode=conditional)")
