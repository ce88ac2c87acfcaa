"""Fréchet distance between Gaussian fits of feature sets (the maths behind FID).

The distance is the one pytorch-fid computes (`calculate_frechet_distance`), written
out here so that the test against pytorch-fid compares two implementations:

    d² = ||μ₁ - μ₂||² + Tr(Σ₁ + Σ₂ - 2 (Σ₁ Σ₂)^½)
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import linalg

# pytorch-fid's tolerance: an imaginary part of (Σ₁Σ₂)^½ whose diagonal exceeds this is
# not rounding noise but a sign that a covariance is not positive semi-definite.
IMAGINARY_ATOL = 1e-3


@dataclass(frozen=True, eq=False)  # eq=False: array fields make == and hash ambiguous
class FeatureStats:
    """Mean and covariance of a feature set, with the extractor that produced it."""

    mu: np.ndarray  # (D,) float64
    sigma: np.ndarray  # (D, D) float64
    n: int  # number of feature vectors the fit used
    extractor: str  # e.g. "pytorch-fid-inception-v3-pool3"; FDs across extractors are meaningless

    def __post_init__(self) -> None:
        mu, sigma = np.asarray(self.mu), np.asarray(self.sigma)
        if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
            raise ValueError(
                f"FeatureStats needs mu (D,) and sigma (D, D); got mu {mu.shape}, sigma {sigma.shape}"
            )

    def save(self, path: str | os.PathLike) -> None:
        """Write to `path` as .npz; temp file + rename, so a reader never sees half a file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                # a file object, not a name: np.savez would append ".npz" to the temp name
                np.savez(
                    f,
                    mu=self.mu,
                    sigma=self.sigma,
                    n=np.int64(self.n),
                    extractor=np.str_(self.extractor),
                )
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureStats:
        """Read a file written by `save`."""
        with np.load(path, allow_pickle=False) as data:
            missing = {"mu", "sigma", "n", "extractor"} - set(data.files)
            if missing:
                raise ValueError(f"{path} is not a FeatureStats file: missing {sorted(missing)}")
            return cls(
                mu=data["mu"].astype(np.float64),
                sigma=data["sigma"].astype(np.float64),
                n=int(data["n"]),
                extractor=str(data["extractor"]),
            )


def feature_stats(features: np.ndarray, extractor: str) -> FeatureStats:
    """Gaussian fit (mean, covariance) of `features` (N, D); needs N >= 2."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D); got shape {features.shape}")
    if features.shape[0] < 2:
        raise ValueError(
            f"a covariance needs at least 2 feature vectors; got {features.shape[0]} ({extractor})"
        )
    if not np.isfinite(features).all():
        raise ValueError(f"features from {extractor} contain NaN or inf")
    mu = features.mean(axis=0)  # (D,)
    sigma = np.cov(features, rowvar=False)  # (D, D), unbiased (N - 1), as pytorch-fid
    return FeatureStats(mu=mu, sigma=np.atleast_2d(sigma), n=features.shape[0], extractor=extractor)


def _mu_sigma(stats: FeatureStats | tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(stats, FeatureStats):
        mu, sigma = stats.mu, stats.sigma
    else:
        mu, sigma = stats
    return np.atleast_1d(np.asarray(mu, dtype=np.float64)), np.atleast_2d(
        np.asarray(sigma, dtype=np.float64)
    )


def frechet_distance(
    a: FeatureStats | tuple[np.ndarray, np.ndarray],
    b: FeatureStats | tuple[np.ndarray, np.ndarray],
    eps: float = 1e-6,
) -> float:
    """Fréchet distance between N(μa, Σa) and N(μb, Σb); FeatureStats or (mu, sigma) pairs.

    If (Σa Σb)^½ is not finite (singular product), `eps` is added to both diagonals and a
    warning is issued. A large imaginary part raises ValueError, as in pytorch-fid.
    """
    if isinstance(a, FeatureStats) and isinstance(b, FeatureStats) and a.extractor != b.extractor:
        raise ValueError(
            f"feature stats from different extractors: {a.extractor!r} vs {b.extractor!r}"
        )
    mu1, sigma1 = _mu_sigma(a)
    mu2, sigma2 = _mu_sigma(b)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(
            f"feature dimensions differ: mu {mu1.shape} vs {mu2.shape}, "
            f"sigma {sigma1.shape} vs {sigma2.shape}"
        )
    if sigma1.shape != (mu1.shape[0], mu1.shape[0]):
        raise ValueError(f"sigma must be (D, D) with D = {mu1.shape[0]}; got {sigma1.shape}")

    diff = mu1 - mu2  # (D,)

    with warnings.catch_warnings():
        # scipy warns on a singular product; the finiteness check below handles that case
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)  # (D, D), possibly complex
    if not np.isfinite(covmean).all():
        warnings.warn(
            f"Fréchet distance: singular covariance product; adding {eps} to the diagonals",
            RuntimeWarning,
            stacklevel=2,
        )
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))

    # Rounding can leave a tiny imaginary part; a large one means a covariance is not PSD
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=IMAGINARY_ATOL):
            magnitude = np.max(np.abs(covmean.imag))
            raise ValueError(
                f"Fréchet distance: sqrt(sigma_a @ sigma_b) has an imaginary component of "
                f"magnitude {magnitude:.3g} (> {IMAGINARY_ATOL} on the diagonal); "
                "a covariance is probably not positive semi-definite"
            )
        covmean = covmean.real

    distance = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)
    return float(distance)


def frechet_distance_of_features(a: np.ndarray, b: np.ndarray) -> float:
    """The Fréchet distance of the Gaussian fits of feature sets `a` (Na, D) and `b` (Nb, D),
    exact and fast when a set has fewer vectors than dimensions (Inception's 2048).

    With centred data A, B and Σa = AᵀA/(Na-1), Σb = BᵀB/(Nb-1), the non-zero eigenvalues of
    Σa Σb are the squared singular values of A Bᵀ / √((Na-1)(Nb-1)), so tr (Σa Σb)^½ is that
    matrix's nuclear norm: an (Na x Nb) SVD replaces the (D x D) matrix square root. When
    D <= min(Na, Nb) the covariance route of `frechet_distance` is used instead (same value).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be (N, D) with one D; got {a.shape} and {b.shape}")
    if min(len(a), len(b)) < 2:
        raise ValueError(f"a covariance needs at least 2 feature vectors per set; got {len(a)} and {len(b)}")
    if a.shape[1] <= min(len(a), len(b)):
        return frechet_distance(feature_stats(a, "features"), feature_stats(b, "features"))
    centred_a, centred_b = a - a.mean(axis=0), b - b.mean(axis=0)
    scale_a, scale_b = len(a) - 1, len(b) - 1
    trace_covmean = linalg.svdvals(centred_a @ centred_b.T / np.sqrt(scale_a * scale_b)).sum()
    diff = a.mean(axis=0) - b.mean(axis=0)
    trace_a, trace_b = (centred_a**2).sum() / scale_a, (centred_b**2).sum() / scale_b
    return float(diff @ diff + trace_a + trace_b - 2 * trace_covmean)
