"""Diversity of generated images relative to real ones: a mode-collapse detector.

A collapsed generator draws the same few images whatever the noise, while its discriminator
can look healthy (issue 10: a DCGAN whose sample grid was one image repeated never tripped
the saturated-D guard). The statistic here sees it directly:

    diversity = mean pairwise distance within the generated set
                / mean pairwise distance within the real set (same class)

in some feature space (the reference classifier's penultimate features: `diversity_domain`;
raw pixels: `diversity_pixel`). Identical generated images give 0; a sample as varied as the
real set gives about 1 (the mean over pairs is an unbiased U-statistic, so the set sizes do
not bias it); values well above 1 mean noise rather than images.

`diversity` is the lower of the two: each space misses a case. Images far outside the real
domain can spread widely in the reference features while being near copies of each other in
pixels (the old default DCGAN at epoch 10: diversity_domain 0.49, diversity_pixel 0.11), and
pixel spread alone misses a generator varying only in brightness or position.
"""

from __future__ import annotations

import numpy as np

DIVERSITY_KEY = "diversity"  # the figure gan.min_diversity and synthesize.min_diversity read
MAX_ROWS = 1000  # pairwise distances on at most this many rows of a set (a random subset): O(N^2) memory


def mean_pairwise_distance(x: np.ndarray, max_rows: int = MAX_ROWS, seed: int = 0) -> float:
    """Mean Euclidean distance over all pairs i != j of the rows of x (N, D), N >= 2; sets
    larger than `max_rows` are subsampled without replacement (unbiased)."""
    if len(x) < 2:
        raise ValueError(f"mean pairwise distance needs at least 2 rows, got {len(x)}")
    if len(x) > max_rows:
        x = x[np.random.default_rng(seed).choice(len(x), max_rows, replace=False)]
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    x = x - x.mean(0)  # distances unchanged; less cancellation below (identical rows give exactly 0)
    squared = (x * x).sum(1)
    gram = x @ x.T  # (N, N)
    d2 = np.maximum(squared[:, None] + squared[None, :] - 2 * gram, 0.0)  # rounding can go slightly negative
    n = len(x)
    return float(np.sqrt(d2).sum() / (n * (n - 1)))  # the diagonal is 0


def diversity_ratio(fake: np.ndarray, real: np.ndarray, max_rows: int = MAX_ROWS, seed: int = 0) -> float:
    """Mean pairwise distance of `fake` over that of `real`, rows of the same space (features
    (N, D) or images (N, C, H, W), flattened): 0 for identical fakes, ~1 for a real-like spread."""
    real_spread = mean_pairwise_distance(real, max_rows, seed)
    if real_spread == 0:
        raise ValueError("the real set has no spread (every row identical): diversity is undefined")
    return mean_pairwise_distance(fake, max_rows, seed) / real_spread


def image_rows(images: np.ndarray) -> np.ndarray:
    """uint8 images (N, C, H, W) -> (N, C*H*W) float32 in [0, 1] (pixel space for `diversity_ratio`)."""
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def diversity_metrics(real_features: dict[int, np.ndarray], fake_features: np.ndarray, real_images: dict[int, np.ndarray],
                      fake_images: np.ndarray, fake_labels: np.ndarray, class_names: list[str]) -> dict[str, float]:
    """`diversity_domain`, `diversity_pixel` and their minimum `diversity` of the generated set,
    class by class against the real images of that class ({class: (N_c, D)} features,
    {class: (N_c, C, H, W)} images). With several classes, each class gets its own `_<name>` keys
    and the unsuffixed keys are the LOWEST class: one collapsed class is a collapse."""
    per_class: dict[int, dict[str, float]] = {}
    for c in real_features:
        mine = fake_labels == c
        domain = diversity_ratio(fake_features[mine], real_features[c])
        pixel = diversity_ratio(image_rows(fake_images[mine]), image_rows(real_images[c]))
        per_class[c] = {DIVERSITY_KEY: min(domain, pixel), "diversity_domain": domain, "diversity_pixel": pixel}
    out = {k: min(v[k] for v in per_class.values()) for k in (DIVERSITY_KEY, "diversity_domain", "diversity_pixel")}
    if len(per_class) > 1:
        for c, values in per_class.items():
            out |= {f"{k}_{class_names[c]}": v for k, v in values.items()}
    return out


def low_streak(quality: list[dict[str, float]], key: str, level: float) -> int:
    """How many of the last evaluations in a row had `key` below `level` (records without the key end it)."""
    streak = 0
    for record in reversed(quality):
        if key not in record or not record[key] < level:
            break
        streak += 1
    return streak
