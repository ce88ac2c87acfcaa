"""Classic augmentation (flip, rotation, zoom, brightness, contrast), on the fly and seeded.

The classic and classic_synthetic arms train on images transformed here, every epoch anew. Each
image draws its own parameters from the caller's `torch.Generator` (a torchvision v2 transform
called on a batch tensor gives every image of the batch the same parameters), so the images a
model sees are a pure function of the training seed.

The operations are torchvision v2's (`horizontal_flip`, `rotate` + `resized_crop`,
`adjust_brightness`, `adjust_contrast`) with per-image parameters, computed for the whole batch at
once: one `affine_grid`/`grid_sample` per batch does the rotation and the zoom (torchvision's
`rotate` itself is a `grid_sample`), and the image is rounded to uint8 once, at the end. Calling
the v2 functions image by image gives the same images (tests/test_classify_train.py compares them)
but is 3-10 times slower on a CPU (BENCHMARKS.md, "Classic augmentation throughput").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ganaug.config import ClassicAugmentConfig

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # RGB -> luma, as torchvision's rgb_to_grayscale (adjust_contrast's mean)


class ClassicAugment:
    """`ClassicAugment(cfg)(images, generator)`: uint8 (N, C, H, W) -> uint8 (N, C, H, W), new
    parameters for every image; grayscale stays 1 channel."""

    def __init__(self, cfg: ClassicAugmentConfig):
        self.cfg = cfg

    def __repr__(self) -> str:
        return f"ClassicAugment({self.cfg})"

    def sample_params(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Per-image parameters, (n,) each. Every field is drawn whatever the config, so switching one
        operation off does not shift the random stream of the others."""
        u = torch.rand(n, 7, generator=generator, dtype=torch.float64)  # (n, 7) uniform in [0, 1)
        cfg = self.cfg
        return {
            "flip": (u[:, 0] < 0.5) & cfg.hflip,
            "angle": (2 * u[:, 1] - 1) * cfg.rotation,  # degrees in [-rotation, rotation], counter-clockwise
            "crop": 1 - u[:, 2] * cfg.zoom,  # kept side / image side, in (1 - zoom, 1]; a square image keeps a square
            "top": u[:, 3],  # where the kept window sits: share of the free room above it
            "left": u[:, 4],
            "brightness": 1 + (2 * u[:, 5] - 1) * cfg.brightness,  # factor in [1 - b, 1 + b]
            "contrast": 1 + (2 * u[:, 6] - 1) * cfg.contrast,  # factor in [1 - c, 1 + c]
        }

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        assert images.ndim == 4 and images.dtype == torch.uint8, f"expected uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
        return apply_params(images, self.sample_params(len(images), generator), self.cfg)


def geometry(params: dict[str, torch.Tensor], height: int, width: int) -> torch.Tensor:
    """(N, 2, 3) `affine_grid` matrices (normalised coordinates, align_corners=False) that turn each image
    by its angle about the centre, then crop the window (crop * H, crop * W) at (top, left) and resize it
    to (H, W): output point q in [-1, 1]^2 reads the input at A^-1 R^-1 A (centre + crop * q), where A
    scales normalised units to pixels (so a turn stays a turn on non-square images)."""
    s = params["crop"]  # (N,)
    centre_x = (1 - s) * (2 * params["left"] - 1)  # window centre, normalised: (left + w / 2) / W * 2 - 1
    centre_y = (1 - s) * (2 * params["top"] - 1)
    a = torch.deg2rad(params["angle"])
    cos, sin = torch.cos(a), torch.sin(a)
    # R^-1 of a counter-clockwise turn on screen (y down), in pixel units, then conjugated by A = diag(W/2, H/2)
    r = torch.stack([torch.stack([cos, -sin * height / width], -1), torch.stack([sin * width / height, cos], -1)], -2)  # (N, 2, 2)
    centre = torch.stack([centre_x, centre_y], -1).unsqueeze(-1)  # (N, 2, 1)
    return torch.cat([r * s[:, None, None], r @ centre], dim=2)


def apply_params(images: torch.Tensor, params: dict[str, torch.Tensor], cfg: ClassicAugmentConfig) -> torch.Tensor:
    """uint8 (N, C, H, W) and per-image parameters -> uint8 (N, C, H, W): flip, turn + zoom, brightness, contrast."""
    n, channels, height, width = images.shape
    x = images.float()  # (N, C, H, W) in [0, 255]
    flip = params["flip"]
    if flip.any():
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if cfg.rotation > 0 or cfg.zoom > 0:
        theta = geometry(params, height, width).float()
        grid = F.affine_grid(theta, [n, channels, height, width], align_corners=False)  # (N, H, W, 2) input points
        # inside the image's outer edge, the nearest edge pixel (as resized_crop's interpolation); outside it
        # (the corners a turn brings in), black
        inside = (grid.abs() <= 1).all(dim=-1)[:, None]  # (N, 1, H, W)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False) * inside
    if cfg.brightness > 0:  # adjust_brightness: blend with black
        x = (x * params["brightness"].float()[:, None, None, None]).clamp(0, 255)
    if cfg.contrast > 0:  # adjust_contrast: blend with the image's mean grey level
        gray = x if channels == 1 else (x[:, :3] * torch.tensor(GRAY_WEIGHTS)[None, :, None, None]).sum(1, keepdim=True)
        mean = gray.mean(dim=(1, 2, 3), keepdim=True)  # (N, 1, 1, 1)
        f = params["contrast"].float()[:, None, None, None]
        x = (f * x + (1 - f) * mean).clamp(0, 255)
    return x.round().to(torch.uint8)

