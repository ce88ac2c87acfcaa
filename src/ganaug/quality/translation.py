"""Audits that fit a translator (CycleGAN): how much each image changed from its source.

A translator maps a real source-class image to a target-class image, so besides the audits of
any generator (label fidelity as the target class, distances to the target class's real images,
the memorisation audit against them) it is judged on the change it makes:
- translation_change: mean absolute difference to the source, in [0, 1] intensity units
  (0 = the input returned unchanged);
- translation_ssim_to_source: mean SSIM to the source (1 = unchanged);
- translation_unchanged_rate: share of images that differ from their source by less than
  UNCHANGED_BELOW on average (below the uint8 rounding of a no-op translator).
A translator that returns its input unchanged scores change 0, SSIM 1 and rate 1: the quality
gate (synthesize.min_translation_change) refuses it with `unchanged_message`.
"""

from __future__ import annotations

import numpy as np

from ganaug.quality.ssim import ssim_pairs

UNCHANGED_BELOW = 1.0 / 255  # mean absolute difference of one grey level: nothing but rounding


def change_metrics(source: np.ndarray, translated: np.ndarray) -> dict[str, float]:
    """(N, C, H, W) uint8 sources and their translations, row by row -> change metrics."""
    assert source.shape == translated.shape and source.dtype == translated.dtype == np.uint8, \
        f"source and translated must be equal-shape uint8 arrays, got {source.shape} {source.dtype} and {translated.shape} {translated.dtype}"
    per_image = np.abs(source.astype(np.float64) - translated.astype(np.float64)).reshape(len(source), -1).mean(1) / 255.0  # (N,)
    return {
        "translation_change": float(per_image.mean()),
        "translation_ssim_to_source": float(ssim_pairs(source, translated).mean()),
        "translation_unchanged_rate": float((per_image < UNCHANGED_BELOW).mean()),
    }


def unchanged_message(metrics: dict[str, float], min_change: float) -> str | None:
    """A warning when the translator barely changes its input (None when it changes it enough)."""
    change = metrics.get("translation_change")
    if change is None or change >= min_change:
        return None
    return (f"the translator returns its input (nearly) unchanged: translation_change {change:.4f} < {min_change} "
            f"(mean absolute difference to the source image, 0-1 units), SSIM to the source "
            f"{metrics.get('translation_ssim_to_source', float('nan')):.3f}, "
            f"{metrics.get('translation_unchanged_rate', float('nan')):.0%} of the images unchanged: its 'synthetic' "
            "images are the source class's real images")
