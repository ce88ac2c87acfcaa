"""Kernel distance: the unbiased squared MMD with a polynomial kernel, averaged over subsets.

With pytorch-fid's Inception pool3 features this is the Kernel Inception Distance (KID) of
Bińkowski et al. (2018), computed as torchmetrics' `KernelInceptionDistance` does:

    k(x, y) = (gamma · xᵀy + coef)^degree          gamma = 1 / D by default
    MMD²_u  = Σ_{i≠j} k(xᵢ, xⱼ) / (m(m-1)) + Σ_{i≠j} k(yᵢ, yⱼ) / (m(m-1))
              - 2 Σ_{i,j} k(xᵢ, yⱼ) / m²

for m real (x) and m fake (y) feature vectors drawn without replacement, repeated over
`n_subsets` random subsets. In any other feature space (a classifier's penultimate layer,
raw pixels) the same number is a kernel distance in that space, not a "KID": name it after
the extractor when reporting.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def _check_features(name: str, features: np.ndarray) -> np.ndarray:
    features = np.asarray(features)
    if features.ndim != 2 or not np.issubdtype(features.dtype, np.floating):
        raise ValueError(f"{name} must be float features (N, D); got {features.dtype} {features.shape}")
    if features.shape[0] < 2:
        # the unbiased estimator leaves out i = j, so a set of one has no pairs
        raise ValueError(f"{name} needs at least 2 feature vectors; got {features.shape[0]}")
    if not np.isfinite(features).all():
        raise ValueError(f"{name} contain NaN or inf")
    return features.astype(np.float64, copy=False)


def polynomial_mmd(
    real_features: np.ndarray,
    fake_features: np.ndarray,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
) -> float:
    """Unbiased MMD² between (m, D) and (m, D) features with the polynomial kernel (one subset).

    The same estimator as torchmetrics' `poly_mmd`; it can be negative when the two sets come
    from the same distribution (it is unbiased, not clipped).
    """
    x = np.asarray(real_features, dtype=np.float64)  # (m, D)
    y = np.asarray(fake_features, dtype=np.float64)  # (m, D)
    if x.ndim != 2 or x.shape != y.shape or x.shape[0] < 2:
        raise ValueError(
            f"polynomial_mmd needs real and fake features of one shape (m, D), m >= 2; "
            f"got {x.shape} and {y.shape}"
        )
    m, dim = x.shape
    gamma = 1.0 / dim if gamma is None else gamma
    k_xx = (gamma * (x @ x.T) + coef) ** degree  # (m, m)
    k_yy = (gamma * (y @ y.T) + coef) ** degree  # (m, m)
    k_xy = (gamma * (x @ y.T) + coef) ** degree  # (m, m)
    # i = j terms are k(x, x), biased upwards: leave them out of the within-set means
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.sum() / m**2)


def check_options(n_subsets: int, subset_size: int, degree: int, gamma: float | None) -> None:
    """`kernel_distance`'s options (also `device_metrics.kernel_distance_torch`'s)."""
    if n_subsets < 1:
        raise ValueError(f"n_subsets must be >= 1; got {n_subsets}")
    if subset_size < 2:
        raise ValueError(f"subset_size must be >= 2 (the estimator needs pairs); got {subset_size}")
    if int(degree) != degree or degree < 1:
        raise ValueError(f"degree must be a positive integer; got {degree}")
    if gamma is not None and not gamma > 0:
        raise ValueError(f"gamma must be > 0 or None (1 / D); got {gamma}")


def subset_indices(n_real: int, n_fake: int, n_subsets: int, m: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The (real (m,), fake (m,)) index pairs that `kernel_distance` averages over: per subset the
    first m of a permutation of each set, real first (as torchmetrics), from one seeded generator."""
    rng = np.random.default_rng(seed)
    for _ in range(n_subsets):
        yield rng.permutation(n_real)[:m], rng.permutation(n_fake)[:m]


def kernel_distance(
    real_features: np.ndarray,
    fake_features: np.ndarray,
    n_subsets: int = 100,  # random subsets to average over (torchmetrics `subsets`)
    subset_size: int = 1000,  # m: vectors per set and subset, capped at min(N_real, N_fake)
    degree: int = 3,  # polynomial kernel degree
    gamma: float | None = None,  # kernel scale; None: 1 / D
    coef: float = 1.0,  # kernel offset
    seed: int = 0,  # seeds the np.random.Generator that draws the subsets
) -> tuple[float, float]:
    """(mean, std) over subsets of the unbiased polynomial-kernel MMD² between two feature sets.

    `real_features` (N_real, D) and `fake_features` (N_fake, D), each N >= 2. With pytorch-fid
    Inception pool3 features this is KID (Bińkowski et al. 2018), equal to torchmetrics'
    `KernelInceptionDistance(subsets=n_subsets, subset_size=subset_size, ...)` on the same
    subsets; with features of another network it is a kernel distance in that feature space.

    Each subset draws `subset_size` real and `subset_size` fake vectors without replacement
    (real first, then fake, each as the first m of a permutation, as torchmetrics does).
    Unlike torchmetrics, which raises, a `subset_size` above min(N_real, N_fake) is capped at
    that minimum: with equal-sized sets no larger than `subset_size`, every subset is then the
    whole of both sets and the std is 0. The std is the population std over subsets
    (ddof = 0, as torchmetrics). The mean is unbiased, so it can be slightly negative when the
    sets come from one distribution; a set against itself (or overlapping sets) gives a small
    negative value, because samples drawn into both subsets of a pair enter the cross term
    at k(x, x).
    """
    real_features = _check_features("real_features", real_features)
    fake_features = _check_features("fake_features", fake_features)
    if real_features.shape[1] != fake_features.shape[1]:
        raise ValueError(
            f"real_features and fake_features dimensions differ: "
            f"{real_features.shape[1]} vs {fake_features.shape[1]}"
        )
    check_options(n_subsets, subset_size, degree, gamma)

    n_real, n_fake = len(real_features), len(fake_features)
    m = min(subset_size, n_real, n_fake)
    mmds = np.empty(n_subsets, dtype=np.float64)
    for subset, (i, j) in enumerate(subset_indices(n_real, n_fake, n_subsets, m, seed)):
        real_subset, fake_subset = real_features[i], fake_features[j]  # (m, D) each
        mmds[subset] = polynomial_mmd(real_subset, fake_subset, int(degree), gamma, coef)
    return summarise_subsets(mmds, degree, gamma)


def summarise_subsets(mmds: np.ndarray, degree: int, gamma: float | None) -> tuple[float, float]:
    """(mean, population std) of the per-subset MMD² values (n_subsets,); a non-finite one raises."""
    if not np.isfinite(mmds).all():
        # overflow of (gamma xᵀy + coef)^degree: features far larger than the kernel scale
        raise FloatingPointError(
            f"kernel distance is not finite in {np.sum(~np.isfinite(mmds))} of {len(mmds)} "
            f"subsets (degree {degree}, gamma {gamma}); are the features on a sane scale?"
        )
    return float(mmds.mean()), float(mmds.std())
