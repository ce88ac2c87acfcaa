"""Preprocessing shared by every source: grayscale, denoise-and-crop, square resize, equalisation.

Order, per image: grayscale (explicit) -> denoise_crop (optional, at native resolution) ->
square resize by policy -> equalisation (at the final size). The same options apply to every
source and are recorded in meta.json (`preprocessing_record`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageOps

from ganaug.config import PreprocessConfig

GRAYSCALE_RULE = (
    "RGB / RGBA / palette -> L with ITU-R 601-2 luma (alpha dropped); "
    "16-bit and float images min-max scaled to 8 bits"
)
CROP_MASK_SIDE = 256  # the body mask is computed on a copy at most this large (cost independent of native size)


def to_grayscale(image: Image.Image) -> np.ndarray:
    """Any single-frame PIL image -> (H, W) uint8, one channel (X-rays stored as RGB/RGBA included)."""
    mode = image.mode
    if mode == "L":
        return np.asarray(image, dtype=np.uint8).copy()
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return minmax_to_uint8(np.asarray(image, dtype=np.float64))
    if mode == "LA":
        return np.asarray(image.getchannel("L"), dtype=np.uint8).copy()
    if mode != "RGB":  # RGBA (alpha dropped), P, CMYK, YCbCr, 1
        image = image.convert("RGB")
    return np.asarray(image.convert("L"), dtype=np.uint8).copy()


def rgb_to_grayscale(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) uint8 with the same luma rule as `to_grayscale`."""
    return np.asarray(Image.fromarray(pixels, mode="RGB").convert("L"), dtype=np.uint8).copy()


def minmax_to_uint8(values: np.ndarray) -> np.ndarray:
    """Linear map of the image's own range to 0..255 (a constant image becomes 0)."""
    low, high = float(np.min(values)), float(np.max(values))
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    return np.round(255 * (values - low) / (high - low)).astype(np.uint8)


def body_bbox(gray: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) of the largest bright region after Otsu thresholding and a
    morphological opening then closing (which remove specks and text markers); None if no region."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu
    from skimage.morphology import disk

    h, w = gray.shape
    scale = min(1.0, CROP_MASK_SIDE / max(h, w))
    small = gray if scale == 1.0 else np.asarray(
        Image.fromarray(gray).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
    )
    if small.min() == small.max():
        return None
    mask = small > threshold_otsu(small)
    footprint = disk(max(1, round(0.01 * max(small.shape))))  # ~1% of the side
    mask = ndimage.binary_closing(ndimage.binary_opening(mask, footprint), footprint)
    regions, n = ndimage.label(mask)
    if n == 0:
        return None
    largest = 1 + int(np.argmax(ndimage.sum_labels(mask, regions, index=np.arange(1, n + 1))))
    rows, cols = np.nonzero(regions == largest)
    top, bottom = int(rows.min() / scale), int(np.ceil((rows.max() + 1) / scale))
    left, right = int(cols.min() / scale), int(np.ceil((cols.max() + 1) / scale))
    return top, min(bottom, h), left, min(right, w)


def denoise_crop(gray: np.ndarray) -> np.ndarray:
    """The AC-GAN paper's denoise-and-crop: crop to the largest body region (unchanged if none)."""
    box = body_bbox(gray)
    if box is None:
        return gray
    top, bottom, left, right = box
    return gray[top:bottom, left:right]


def square(gray: np.ndarray, size: int, policy: str) -> np.ndarray:
    """(H, W) uint8 -> (size, size): squash (aspect not kept), center_crop (central square) or
    pad (black borders to a square); then bilinear resampling (antialiased when shrinking)."""
    h, w = gray.shape
    if policy == "center_crop" and h != w:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        gray = gray[top : top + side, left : left + side]
    elif policy == "pad" and h != w:
        side = max(h, w)
        padded = np.zeros((side, side), np.uint8)
        top, left = (side - h) // 2, (side - w) // 2
        padded[top : top + h, left : left + w] = gray
        gray = padded
    elif policy not in ("squash", "center_crop", "pad"):
        raise ValueError(f"data.preprocess.resize={policy!r}: expected squash, center_crop or pad")
    if gray.shape == (size, size):
        return gray
    return np.asarray(Image.fromarray(gray).resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def equalize(gray: np.ndarray, method: str, clahe_clip: float) -> np.ndarray:
    """Histogram equalisation (PIL) or CLAHE (scikit-image, 8x8 tiles) of (H, W) uint8."""
    if method == "none":
        return gray
    if method == "histogram":
        return np.asarray(ImageOps.equalize(Image.fromarray(gray)), dtype=np.uint8)
    if method == "clahe":
        from skimage.exposure import equalize_adapthist

        return np.round(255 * equalize_adapthist(gray, clip_limit=clahe_clip)).astype(np.uint8)
    raise ValueError(f"data.preprocess.equalize={method!r}: expected none, histogram or clahe")


def preprocess(gray: np.ndarray, size: int, cfg: PreprocessConfig) -> np.ndarray:
    """(H, W) uint8 grayscale at native size -> (size, size) uint8, per `data.preprocess`."""
    assert gray.ndim == 2 and gray.dtype == np.uint8, f"expected (H, W) uint8, got {gray.shape} {gray.dtype}"
    if cfg.denoise_crop:
        gray = denoise_crop(gray)
    return equalize(square(gray, size, cfg.resize), cfg.equalize, cfg.clahe_clip)


def is_identity(cfg: PreprocessConfig, native_shape: tuple[int, int], size: int) -> bool:
    return native_shape == (size, size) and cfg.equalize == "none" and not cfg.denoise_crop


def preprocess_stack(images: np.ndarray, size: int, cfg: PreprocessConfig) -> np.ndarray:
    """(N, H, W) uint8 in memory (MedMNIST, phantom) -> (N, 1, size, size) uint8."""
    if is_identity(cfg, images.shape[1:], size):
        return images[:, None].copy()
    return np.stack([preprocess(image, size, cfg) for image in images])[:, None]


def preprocessing_record(cfg: PreprocessConfig, size: int, native_sizes: list[tuple[int, int]]) -> dict[str, Any]:
    """What was done to the pixels, for meta.json."""
    heights = [h for h, _ in native_sizes] or [0]
    widths = [w for _, w in native_sizes] or [0]
    return {
        "image_size": size,
        "grayscale": GRAYSCALE_RULE,
        "denoise_crop": (
            "Otsu threshold, opening + closing with a disk of 1% of the side, crop to the largest region"
            if cfg.denoise_crop else False
        ),
        "resize": cfg.resize,
        "interpolation": "bilinear (PIL, antialiased when shrinking)",
        "equalize": cfg.equalize,
        **({"clahe_clip": cfg.clahe_clip} if cfg.equalize == "clahe" else {}),
        "native_size": {"min_hw": [min(heights), min(widths)], "max_hw": [max(heights), max(widths)]},
    }
