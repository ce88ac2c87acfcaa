"""Multi-scale structural similarity (MS-SSIM) between grayscale image sets, at small sizes too.

Computed with torchmetrics' `multiscale_structural_similarity_index_measure` on images scaled
to [0, 1] (data_range 1.0, float64), with:

    window    11x11 Gaussian, sigma 1.5 (the SSIM window of `ssim.py`), K1 = 0.01, K2 = 0.03
    scales    s = 2 to 5; scale 1 is the image, each next one a 2x2 average pooling (floor)
    per pair  MS-SSIM = Π_{j<s} relu(cs_j)^β_j · relu(ssim_s)^β_s
              cs_j: mean contrast-structure term over the pixels whose window lies inside
              the scale-j image; ssim_s: mean SSIM over the whole scale-s image, the border
              windows reflect-padded (torchmetrics' convention). relu clamps a negative term
              to 0 (torchmetrics' default `normalize="relu"`, as TensorFlow's
              `ssim_multiscale`); without it a fractional power of a negative number is NaN.

Wang et al. (2003) use 5 scales with β = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), finest
first; the coarsest of 5 scales is 1/16 of the image, so with an 11 px window it needs
>= 176 px (torchmetrics' own check). Smaller images use the s finest scales, s the largest
number for which the coarsest scale still holds a whole window (side // 2^(s-1) >= 11) and
torchmetrics' size check passes, with the first s betas renormalised to sum to 1:

    side (px)   s   betas                                     (e.g.)
    22 - 43     2   (0.1356, 0.8644)                          28
    44 - 98     3   (0.0711, 0.4530, 0.4760)                  64
    99 - 175    4   (0.0517, 0.3295, 0.3462, 0.2726)          128
    >= 176      5   Wang et al.'s betas as published          256

(88 - 98 px would hold a window at 4 scales, but torchmetrics refuses 4 scales there.)
So MS-SSIM at 28 or 64 px is not the standard 5-scale MS-SSIM, and scores are comparable
only between image sets of one size. Below 22 px there are not two scales: ValueError.
`ms_ssim_betas(side)` returns the betas used for a side length. (torchmetrics raises to the
betas as a float32 tensor, so scores match a float64 computation to ~1e-8 relative.)
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

from ganaug.quality.ssim import SSIM_SIGMA, SSIM_WINDOW, check_grayscale_uint8, random_pair_scores

# Wang, Simoncelli & Bovik (2003), scale 1 (finest) to scale 5 (coarsest)
MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_MIN_SCALES = 2  # one scale would be plain SSIM
MS_SSIM_MIN_SIDE = SSIM_WINDOW * 2 ** (MS_SSIM_MIN_SCALES - 1)  # 22 px
_PAIRS_PER_BATCH = 256  # bounds memory: 5 x (B, 1, H, W) float64 intermediates per scale


def _scales_fit(side: int, n_scales: int) -> bool:
    coarsest = side // 2 ** (n_scales - 1)  # side after n_scales - 1 poolings
    # torchmetrics' own (stricter in places) check, kept so that its call cannot refuse
    torchmetrics_ok = side >= 2**n_scales and side // max(1, n_scales - 1) ** 2 > SSIM_WINDOW - 1
    return coarsest >= SSIM_WINDOW and torchmetrics_ok


def ms_ssim_betas(side: int) -> tuple[float, ...]:
    """Betas (finest scale first) that MS-SSIM uses on images whose shorter side is `side` px."""
    fitting = [s for s in range(MS_SSIM_MIN_SCALES, len(MS_SSIM_BETAS) + 1) if _scales_fit(side, s)]
    if not fitting:
        raise ValueError(
            f"MS-SSIM needs images of at least {MS_SSIM_MIN_SIDE} px per side (2 scales with a "
            f"{SSIM_WINDOW}x{SSIM_WINDOW} window, sigma {SSIM_SIGMA}); got {side} px"
        )
    n_scales = max(fitting)
    if n_scales == len(MS_SSIM_BETAS):
        return MS_SSIM_BETAS  # the published betas, not renormalised (they sum to 1.0001)
    truncated = np.asarray(MS_SSIM_BETAS[:n_scales])
    return tuple(float(beta) for beta in truncated / truncated.sum())


def _check_grayscale_uint8(name: str, images: np.ndarray) -> np.ndarray:
    return check_grayscale_uint8(name, images, MS_SSIM_MIN_SIDE,
                                 f"MS-SSIM needs 2 scales with a {SSIM_WINDOW}x{SSIM_WINDOW} window")


def ms_ssim_pairs(a_uint8: np.ndarray, b_uint8: np.ndarray) -> np.ndarray:
    """MS-SSIM of each pair (a[i], b[i]); inputs (N, 1, H, W) uint8, output (N,) float64.

    Scales and betas depend on min(H, W) as in the module docstring (`ms_ssim_betas`).
    """
    a_uint8 = _check_grayscale_uint8("a_uint8", a_uint8)
    b_uint8 = _check_grayscale_uint8("b_uint8", b_uint8)
    if a_uint8.shape != b_uint8.shape:
        raise ValueError(f"ms_ssim_pairs needs equal shapes; got {a_uint8.shape} and {b_uint8.shape}")

    betas = ms_ssim_betas(min(a_uint8.shape[2:]))
    scores = np.empty(a_uint8.shape[0], dtype=np.float64)
    for start in range(0, a_uint8.shape[0], _PAIRS_PER_BATCH):
        stop = start + _PAIRS_PER_BATCH
        a = torch.from_numpy(a_uint8[start:stop]).double() / 255.0  # (B, 1, H, W) in [0, 1]
        b = torch.from_numpy(b_uint8[start:stop]).double() / 255.0
        batch_scores = multiscale_structural_similarity_index_measure(
            a,
            b,
            gaussian_kernel=True,
            sigma=SSIM_SIGMA,
            kernel_size=SSIM_WINDOW,  # only checked by torchmetrics: sigma sets the window
            data_range=1.0,
            betas=betas,
            normalize="relu",
            reduction="none",
        )  # (B,)
        scores[start:stop] = batch_scores.numpy()
    if not np.isfinite(scores).all():
        raise FloatingPointError(f"MS-SSIM is NaN or inf for {np.sum(~np.isfinite(scores))} pairs")
    return scores


def mean_ms_ssim(fake_uint8: np.ndarray, real_uint8: np.ndarray, n_pairs: int, seed: int) -> float:
    """Mean MS-SSIM over `n_pairs` random (fake, real) pairs, drawn with replacement.

    Unpaired, like `mean_ssim`: how much a typical synthetic image resembles a typical real
    one across scales, not a per-image match. Passing one set twice gives the within-set
    MS-SSIM used as a diversity score (Odena et al. 2017); an image can then be paired with
    itself (probability 1/N per pair), which scores 1.
    """
    return float(random_pair_scores(ms_ssim_pairs, fake_uint8, real_uint8, n_pairs, seed).mean())
