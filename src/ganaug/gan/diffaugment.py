"""Differentiable augmentation of D's inputs for limited-data GAN training.

DiffAugment (Zhao et al. 2020): the same family of differentiable transforms is applied to
real and generated images before every discriminator call, in the D step and in the G step,
so D never sees an un-augmented image and G gets gradients through the transform. The ops
follow the reference implementation, for one-channel images in [-1, 1]:

- `translation`: shift by up to 1/8 of the side, zero (mid-grey) fill;
- `cutout`: a zeroed square of half the side, at a random centre (clipped at the border);
- `color`: brightness + U(-0.5, 0.5), then contrast x U(0.5, 1.5) about the image mean
  (the reference's saturation is a no-op on grayscale and is left out).

Each image draws its own parameters. With probability p < 1 (the ADA-style mode) each op is
applied to each image with probability p, otherwise it is the identity for that image.
All randomness comes from an explicit CPU `torch.Generator` (saved in the training
checkpoint), so runs resume exactly and do not depend on the device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

TRANSLATION_RATIO = 0.125  # largest shift, as a fraction of the side
CUTOUT_RATIO = 0.5  # cutout square side, as a fraction of the side
ADA_INTERVAL = 4  # steps between adjustments of the ADA probability (StyleGAN2-ADA's default)


def translate(images: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Output pixel (y, x) of image i = input (y + shifts[i, 0], x + shifts[i, 1]); outside reads 0.

    images (N, C, H, W), shifts (N, 2) integer tensor on the images' device."""
    n, _, h, w = images.shape
    b, gy, gx = torch.meshgrid(
        torch.arange(n, device=images.device), torch.arange(h, device=images.device),
        torch.arange(w, device=images.device), indexing="ij",
    )
    gy = (gy + shifts[:, 0, None, None] + 1).clamp(0, h + 1)  # +1: index into the 1-pixel zero pad
    gx = (gx + shifts[:, 1, None, None] + 1).clamp(0, w + 1)
    padded = F.pad(images, [1, 1, 1, 1])  # (N, C, H + 2, W + 2)
    return padded.permute(0, 2, 3, 1)[b, gy, gx].permute(0, 3, 1, 2)


def cut_out(images: torch.Tensor, centres: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """Zero a square of side size[i] centred at centres[i] = (y, x) in image i (size 0: untouched)."""
    _, _, h, w = images.shape
    top = centres[:, 0] - size // 2  # (N,)
    left = centres[:, 1] - size // 2
    ys = torch.arange(h, device=images.device)[None, :]  # (1, H)
    xs = torch.arange(w, device=images.device)[None, :]
    inside_y = (ys >= top[:, None]) & (ys < (top + size)[:, None])  # (N, H)
    inside_x = (xs >= left[:, None]) & (xs < (left + size)[:, None])  # (N, W)
    keep = ~(inside_y[:, :, None] & inside_x[:, None, :])  # (N, H, W)
    return images * keep[:, None].to(images.dtype)


def brightness_contrast(images: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
    """x + b, then (x - mean) * c + mean, per image (b, c: (N,) tensors)."""
    x = images + brightness[:, None, None, None]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * contrast[:, None, None, None] + mean


def _applied(n: int, p: float, rng: torch.Generator) -> torch.Tensor:
    """(N,) bool: which images get the op (all of them when p >= 1, drawing nothing)."""
    if p >= 1.0:
        return torch.ones(n, dtype=torch.bool)
    return torch.rand(n, generator=rng) < p


def _translation(images: torch.Tensor, p: float, rng: torch.Generator) -> torch.Tensor:
    n, _, h, w = images.shape
    applied = _applied(n, p, rng)
    sy, sx = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
    shifts = torch.stack([torch.randint(-sy, sy + 1, (n,), generator=rng), torch.randint(-sx, sx + 1, (n,), generator=rng)], 1)
    return translate(images, (shifts * applied[:, None]).to(images.device))


def _cutout(images: torch.Tensor, p: float, rng: torch.Generator) -> torch.Tensor:
    n, _, h, w = images.shape
    applied = _applied(n, p, rng)
    side = int(h * CUTOUT_RATIO + 0.5)
    centres = torch.stack([torch.randint(0, h + (1 - side % 2), (n,), generator=rng),
                           torch.randint(0, w + (1 - side % 2), (n,), generator=rng)], 1)
    size = torch.where(applied, side, 0)
    return cut_out(images, centres.to(images.device), size.to(images.device))


def _color(images: torch.Tensor, p: float, rng: torch.Generator) -> torch.Tensor:
    n = len(images)
    applied = _applied(n, p, rng)
    brightness = (torch.rand(n, generator=rng) - 0.5).to(images.device, images.dtype)
    contrast = (torch.rand(n, generator=rng) + 0.5).to(images.device, images.dtype)
    changed = brightness_contrast(images, brightness, contrast)
    return changed if p >= 1.0 else torch.where(applied.to(images.device)[:, None, None, None], changed, images)


OPS: dict[str, Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]] = {
    "translation": _translation,
    "cutout": _cutout,
    "color": _color,
}


@dataclass(frozen=True)
class DiffAugment:
    """The policy's ops in a fixed order (color, translation, cutout, as the reference)."""

    policy: tuple[str, ...]  # names from OPS

    def __post_init__(self) -> None:
        unknown = [name for name in self.policy if name not in OPS]
        if unknown or not self.policy:
            raise ValueError(f"gan.augment_policy={list(self.policy)}: expected a non-empty list of {sorted(OPS)}")

    def __call__(self, images: torch.Tensor, rng: torch.Generator, p: float = 1.0) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, H, W), differentiable in `images`; p = per-op, per-image probability."""
        if p <= 0.0:
            return images
        for name in ("color", "translation", "cutout"):
            if name in self.policy:
                images = OPS[name](images, p, rng)
        return images


@dataclass
class AdaptiveAugmentProbability:
    """ADA-style augmentation probability (Karras et al. 2020): every ADA_INTERVAL steps,
    r_t = E[sign(D(x_real))] over those steps is compared with `target`, and p moves by
    sign(r_t - target) * (real images in those steps) / (kimg * 1000), clipped to [0, 1]:
    a discriminator that is too sure of the real images (overfitting) gets more augmentation."""

    target: float  # r_t target (0.6 in ADA)
    kimg: float  # thousands of real images over which p can move from 0 to 1
    p: float = 0.0  # current probability
    rt: float = math.nan  # last measured r_t
    sign_sum: float = 0.0  # sum of sign(D(x_real)) since the last adjustment
    sign_count: int = 0
    images_since: int = 0  # real images since the last adjustment
    steps_since: int = 0

    def observe(self, mean_sign: float, n_images: int) -> None:
        """Record one D step: mean_sign = E[sign(D(x_real))] over its `n_images` real images."""
        self.sign_sum += mean_sign * n_images
        self.sign_count += n_images
        self.images_since += n_images

    def end_step(self) -> None:
        """Count one training step; adjust p every ADA_INTERVAL steps."""
        self.steps_since += 1
        if self.steps_since < ADA_INTERVAL or self.sign_count == 0:
            return
        self.rt = self.sign_sum / self.sign_count
        direction = math.copysign(1.0, self.rt - self.target) if self.rt != self.target else 0.0
        self.p = min(1.0, max(0.0, self.p + direction * self.images_since / (self.kimg * 1000)))
        self.sign_sum, self.sign_count, self.images_since, self.steps_since = 0.0, 0, 0, 0
