"""Fréchet and kernel distances of feature sets as torch tensors, on the features' device.

The same numbers as `ganaug.quality.frechet` and `ganaug.quality.kid` (scipy / numpy on the
CPU), computed in float64 where the features already are (the GPU after Inception): no copy
to the host and no (D x D) `scipy.linalg.sqrtm`, which takes seconds for Inception's D = 2048.

tr (Σa Σb)^½ without a general matrix square root:
- N < D for either set (the usual case for a few hundred images): with centred features A, B,
  the non-zero eigenvalues of Σa Σb are the squared singular values of A Bᵀ / √((Na-1)(Nb-1)),
  so the trace is that (Na x Nb) matrix's nuclear norm (as `frechet_distance_of_features`);
- otherwise: Σa Σb is similar to the symmetric PSD matrix Σa^½ Σb Σa^½, so the trace is the sum
  of the square roots of that matrix's eigenvalues (two `eigh` of D x D, on the device).
A clearly negative eigenvalue (a covariance that is not PSD, as pytorch-fid's imaginary-part
check) raises instead of being dropped.
"""

from __future__ import annotations

import numpy as np
import torch

from ganaug.quality.frechet import IMAGINARY_ATOL
from ganaug.quality.kid import check_options, subset_indices, summarise_subsets


def _check(name: str, features: torch.Tensor) -> torch.Tensor:
    if features.ndim != 2 or not features.is_floating_point() or features.shape[0] < 2:
        raise ValueError(f"{name} must be float features (N, D) with N >= 2; got {features.dtype} {tuple(features.shape)}")
    if not torch.isfinite(features).all():
        raise ValueError(f"{name} contain NaN or inf")
    return features.double()


def _sqrt_eigenvalues_sum(matrix: torch.Tensor, what: str) -> torch.Tensor:
    """Σ √λ over the eigenvalues of a symmetric PSD (D, D) matrix; rounding negatives count as 0."""
    eigenvalues = torch.linalg.eigvalsh((matrix + matrix.T) / 2)  # (D,)
    worst = eigenvalues.min().clamp_max(0.0).neg().sqrt()  # the imaginary part its square root would have
    if worst > IMAGINARY_ATOL * max(1.0, float(eigenvalues.max().clamp_min(0.0).sqrt())):
        raise ValueError(f"Fréchet distance: {what} has an eigenvalue {float(eigenvalues.min()):.3g} < 0 (its square root "
                         f"would have an imaginary part {float(worst):.3g} > {IMAGINARY_ATOL}); a covariance is probably "
                         "not positive semi-definite")
    return eigenvalues.clamp_min(0.0).sqrt().sum()


def frechet_distance_torch(mu_a: torch.Tensor, sigma_a: torch.Tensor, mu_b: torch.Tensor, sigma_b: torch.Tensor) -> float:
    """Fréchet distance between N(μa, Σa) and N(μb, Σb): (D,), (D, D) tensors on one device."""
    mu_a, sigma_a, mu_b, sigma_b = (t.double() for t in (mu_a, sigma_a, mu_b, sigma_b))
    if mu_a.shape != mu_b.shape or sigma_a.shape != sigma_b.shape or sigma_a.shape != (len(mu_a), len(mu_a)):
        raise ValueError(f"need mu (D,) and sigma (D, D) of one D; got {tuple(mu_a.shape)}, {tuple(sigma_a.shape)}, "
                         f"{tuple(mu_b.shape)}, {tuple(sigma_b.shape)}")
    eigenvalues, eigenvectors = torch.linalg.eigh((sigma_a + sigma_a.T) / 2)  # Σa = V Λ Vᵀ
    root_a = eigenvectors * eigenvalues.clamp_min(0.0).sqrt() @ eigenvectors.T  # Σa^½ (D, D)
    trace_covmean = _sqrt_eigenvalues_sum(root_a @ sigma_b @ root_a, "Σa^½ Σb Σa^½")
    diff = mu_a - mu_b
    return float(diff @ diff + sigma_a.trace() + sigma_b.trace() - 2 * trace_covmean)


def frechet_distance_of_features_torch(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance of the Gaussian fits of feature sets a (Na, D) and b (Nb, D), on their device."""
    a, b = _check("real features", a), _check("fake features", b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must share D; got {tuple(a.shape)} and {tuple(b.shape)}")
    centred_a, centred_b = a - a.mean(0), b - b.mean(0)
    scale_a, scale_b = len(a) - 1, len(b) - 1
    if a.shape[1] <= min(len(a), len(b)):  # covariance route: Σ = Aᵀ A / (N - 1), unbiased as pytorch-fid
        return frechet_distance_torch(a.mean(0), centred_a.T @ centred_a / scale_a, b.mean(0), centred_b.T @ centred_b / scale_b)
    trace_covmean = torch.linalg.svdvals(centred_a @ centred_b.T / (scale_a * scale_b) ** 0.5).sum()  # (Na x Nb) nuclear norm
    diff = a.mean(0) - b.mean(0)
    trace_a, trace_b = centred_a.square().sum() / scale_a, centred_b.square().sum() / scale_b
    return float(diff @ diff + trace_a + trace_b - 2 * trace_covmean)


def polynomial_mmd_torch(real: torch.Tensor, fake: torch.Tensor, degree: int = 3, gamma: float | None = None,
                         coef: float = 1.0) -> float:
    """Unbiased MMD² with the polynomial kernel between (m, D) and (m, D) features (one subset),
    as `ganaug.quality.kid.polynomial_mmd`."""
    x, y = _check("real features", real), _check("fake features", fake)
    if x.shape != y.shape:
        raise ValueError(f"polynomial_mmd_torch needs features of one shape (m, D); got {tuple(x.shape)} and {tuple(y.shape)}")
    m, dim = x.shape
    gamma = 1.0 / dim if gamma is None else gamma
    k_xx = (gamma * (x @ x.T) + coef) ** degree  # (m, m)
    k_yy = (gamma * (y @ y.T) + coef) ** degree  # (m, m)
    k_xy = (gamma * (x @ y.T) + coef) ** degree  # (m, m)
    within = (k_xx.sum() - k_xx.trace() + k_yy.sum() - k_yy.trace()) / (m * (m - 1))  # i = j left out: unbiased
    return float(within - 2.0 * k_xy.sum() / m**2)


def kernel_distance_torch(real: torch.Tensor, fake: torch.Tensor, n_subsets: int = 100, subset_size: int = 1000,
                          degree: int = 3, gamma: float | None = None, coef: float = 1.0, seed: int = 0) -> tuple[float, float]:
    """`ganaug.quality.kid.kernel_distance` of (N_real, D) and (N_fake, D) features on their device:
    the same options, the same subsets (`kid.subset_indices`, drawn on the CPU), the same (mean,
    std) up to rounding."""
    real, fake = _check("real features", real), _check("fake features", fake)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sets must share D; got {tuple(real.shape)} and {tuple(fake.shape)}")
    check_options(n_subsets, subset_size, degree, gamma)
    m = min(subset_size, len(real), len(fake))
    values = [polynomial_mmd_torch(real[torch.from_numpy(i).to(real.device)], fake[torch.from_numpy(j).to(fake.device)],
                                   int(degree), gamma, coef)
              for i, j in subset_indices(len(real), len(fake), n_subsets, m, seed)]
    return summarise_subsets(np.array(values), degree, gamma)
