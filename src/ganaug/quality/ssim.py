"""Structural similarity (SSIM) between grayscale image sets.

Settings follow scikit-image's `structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1.0)`, i.e. Wang et al. (2004): an 11x11 Gaussian
window (sigma 1.5), mean over the pixels whose window lies inside the image.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from ganaug.progress import QUIET_BELOW, progress

SSIM_SIGMA = 1.5
# Window side that sigma implies (truncated at 3.5 sigma, as skimage and torchmetrics do)
SSIM_WINDOW = 2 * int(3.5 * SSIM_SIGMA + 0.5) + 1  # 11
_PAIRS_PER_BATCH = 256  # bounds memory: 5 x (B, 1, H, W) float64 intermediates


def check_grayscale_uint8(name: str, images: np.ndarray, min_side: int = SSIM_WINDOW,
                          requirement: str = f"SSIM uses a {SSIM_WINDOW}x{SSIM_WINDOW} Gaussian window (sigma {SSIM_SIGMA})") -> np.ndarray:
    """`images` as uint8 (N, 1, H, W) of at least `min_side` px, or a ValueError naming `name`."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(
            f"{name} must be uint8 grayscale images (N, 1, H, W); got {images.dtype} {images.shape}"
        )
    height, width = images.shape[2:]
    if min(height, width) < min_side:
        # No pixel would have its whole window inside the image; shrinking the window
        # would silently change the metric, so refuse instead.
        raise ValueError(f"{requirement}; {name} images are {height}x{width}, need at least {min_side} px per side")
    return images


def ssim_pairs(a_uint8: np.ndarray, b_uint8: np.ndarray) -> np.ndarray:
    """SSIM of each pair (a[i], b[i]); inputs (N, 1, H, W) uint8, output (N,) float64."""
    a_uint8 = check_grayscale_uint8("a_uint8", a_uint8)
    b_uint8 = check_grayscale_uint8("b_uint8", b_uint8)
    if a_uint8.shape != b_uint8.shape:
        raise ValueError(f"ssim_pairs needs equal shapes; got {a_uint8.shape} and {b_uint8.shape}")

    pad = SSIM_WINDOW // 2
    height, width = a_uint8.shape[2:]
    scores = np.empty(a_uint8.shape[0], dtype=np.float64)
    for start in range(0, a_uint8.shape[0], _PAIRS_PER_BATCH):
        stop = start + _PAIRS_PER_BATCH
        a = torch.from_numpy(a_uint8[start:stop]).double() / 255.0  # (B, 1, H, W) in [0, 1]
        b = torch.from_numpy(b_uint8[start:stop]).double() / 255.0
        _, ssim_map = structural_similarity_index_measure(
            a,
            b,
            gaussian_kernel=True,
            sigma=SSIM_SIGMA,
            kernel_size=SSIM_WINDOW,
            data_range=1.0,
            reduction="none",
            return_full_image=True,
        )  # ssim_map (B, 1, H, W)
        # torchmetrics averages over the reflect-padded border too; crop it as skimage does
        assert ssim_map.shape[-2:] == (height, width), f"unexpected SSIM map {tuple(ssim_map.shape)}"
        valid = ssim_map[..., pad : height - pad, pad : width - pad]
        scores[start:stop] = valid.mean(dim=(1, 2, 3)).numpy()
    return scores


def random_pair_scores(
    pair_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],  # (a, b) uint8 pairs -> (N,) scores
    fake_uint8: np.ndarray,
    real_uint8: np.ndarray,
    n_pairs: int,
    seed: int,
) -> np.ndarray:
    """`pair_fn` on `n_pairs` random (fake, real) pairs drawn with replacement: (n_pairs,) scores.

    The fake indices are drawn first, then the real ones, from `np.random.default_rng(seed)`;
    `pair_fn` checks the images themselves (dtype, channels, minimum size).
    """
    fake_uint8, real_uint8 = np.asarray(fake_uint8), np.asarray(real_uint8)
    if fake_uint8.shape[2:] != real_uint8.shape[2:]:
        raise ValueError(
            f"fake and real image sizes differ: {fake_uint8.shape[2:]} vs {real_uint8.shape[2:]}"
        )
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1; got {n_pairs}")
    if len(fake_uint8) == 0 or len(real_uint8) == 0:
        raise ValueError(f"random pairs need images: {len(fake_uint8)} fake, {len(real_uint8)} real")

    rng = np.random.default_rng(seed)
    fake_index = rng.integers(0, len(fake_uint8), size=n_pairs)
    real_index = rng.integers(0, len(real_uint8), size=n_pairs)
    return pair_fn(fake_uint8[fake_index], real_uint8[real_index])


def mean_ssim(fake_uint8: np.ndarray, real_uint8: np.ndarray, n_pairs: int, seed: int) -> float:
    """Mean SSIM over `n_pairs` random (fake, real) pairs, drawn with replacement.

    An unpaired structural-similarity score: fake and real images are matched at random,
    so it says how much a typical synthetic image resembles a typical real one in local
    luminance, contrast and structure. It is not a per-image match (that would be a
    nearest-neighbour search, which rewards memorised copies).
    """
    return float(random_pair_scores(ssim_pairs, fake_uint8, real_uint8, n_pairs, seed).mean())


def _valid_gaussian_matrix(size: int) -> torch.Tensor:
    """(size, size - 10) float64 matrix M with x @ M = the 'valid' 1-D Gaussian filtering of x
    (SSIM's 11-tap window, sigma 1.5, as torchmetrics builds it): rows of M are shifted windows."""
    taps = torch.arange(SSIM_WINDOW, dtype=torch.float64) - SSIM_WINDOW // 2
    window = torch.exp(-(taps**2) / (2 * SSIM_SIGMA**2))
    window /= window.sum()
    out = size - SSIM_WINDOW + 1
    matrix = torch.zeros(size, out, dtype=torch.float64)
    for j in range(out):
        matrix[j : j + SSIM_WINDOW, j] = window
    return matrix


def max_ssim_to_set(fake_uint8: np.ndarray, real_uint8: np.ndarray, pairs_per_block: int = 1024, dtype: torch.dtype = torch.float32) -> tuple[np.ndarray, np.ndarray]:
    """For each fake image, the highest SSIM to any real image and that image's index:
    ((N_fake,) float64, (N_fake,) int64). Exact: every (fake, real) pair is scored with the
    same SSIM as `ssim_pairs` (the HealthGAN paper's SSIM "likeness" when `real` is the
    training set). Per-image means and variances are filtered once; only the cross term is
    filtered per pair, as two matrix products with banded Gaussian matrices. In float32 (the
    default) it agrees with `ssim_pairs` within 1e-4 (tests/test_filters.py).
    """
    fake_uint8 = check_grayscale_uint8("fake_uint8", fake_uint8)
    real_uint8 = check_grayscale_uint8("real_uint8", real_uint8)
    if fake_uint8.shape[2:] != real_uint8.shape[2:]:
        raise ValueError(f"fake and real image sizes differ: {fake_uint8.shape[2:]} vs {real_uint8.shape[2:]}")
    if len(real_uint8) == 0:
        raise ValueError("max_ssim_to_set needs at least one real image")
    height, width = fake_uint8.shape[2:]
    rows, cols = _valid_gaussian_matrix(height).to(dtype), _valid_gaussian_matrix(width).to(dtype)

    def filtered(x: torch.Tensor) -> torch.Tensor:  # (..., H, W) -> (..., H - 10, W - 10)
        return rows.T @ (x @ cols)

    c1, c2 = 0.01**2, 0.03**2  # data range 1
    fake = torch.from_numpy(fake_uint8[:, 0]).to(dtype) / 255.0  # (Nf, H, W)
    real = torch.from_numpy(real_uint8[:, 0]).to(dtype) / 255.0  # (Nr, H, W)
    mu_f, mu_r = filtered(fake), filtered(real)
    var_f, var_r = filtered(fake * fake) - mu_f**2, filtered(real * real) - mu_r**2
    best = np.full(len(fake), -np.inf)
    best_index = np.zeros(len(fake), dtype=np.int64)
    real_block = max(1, min(len(real), pairs_per_block))
    fake_block = max(1, pairs_per_block // real_block)
    bar = progress(range(0, len(fake), fake_block), desc=f"max SSIM of {len(fake)} images to {len(real)}", unit="block",
                   disable=len(fake) * len(real) * height * width < QUIET_BELOW)
    for fs in bar:
        f = slice(fs, fs + fake_block)
        for rs in range(0, len(real), real_block):
            r = slice(rs, rs + real_block)
            mu_fr = mu_f[f, None] * mu_r[None, r]  # (b, c, h, w)
            cov = filtered(fake[f, None] * real[None, r]) - mu_fr
            ssim_map = ((2 * mu_fr + c1) * (2 * cov + c2)) / (
                (mu_f[f, None] ** 2 + mu_r[None, r] ** 2 + c1) * (var_f[f, None] + var_r[None, r] + c2)
            )
            scores = ssim_map.mean(dim=(2, 3), dtype=torch.float64).numpy()  # (b, c)
            block_best = scores.argmax(axis=1)
            block_value = scores[np.arange(len(scores)), block_best]
            better = block_value > best[f]
            best[f] = np.where(better, block_value, best[f])
            best_index[f] = np.where(better, block_best + rs, best_index[f])
    bar.close()
    return best, best_index
