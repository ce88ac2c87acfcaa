"""All quality metrics of a generated set against real *training* images, under one name each.

Used by train_gan (every evaluation epoch, with bootstrap intervals at the end), synthesize
(memorisation audit of the written set) and `ganaug quality --real A --fake B`.

Names say the feature space: `fd_domain` is a Fréchet distance in the reference classifier's
features, `fid_inception` the FID in pytorch-fid's Inception pool3 features; likewise
`kd_domain` / `kid_inception` (kernel distance; KID only with Inception features), and
`precision_`, `recall_`, `density_`, `coverage_` + space. Pixel metrics: `ssim_real_fake`,
`ms_ssim_real_fake` (mean over random unpaired (generated, real) pairs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ganaug.quality.bootstrap import bootstrap_ci
from ganaug.quality.frechet import FeatureStats, feature_stats, frechet_distance
from ganaug.quality.kid import kernel_distance
from ganaug.quality.manifold import density_coverage, precision_recall, real_balls_per_fake
from ganaug.quality.memorisation import MemorisationReport, audit_features, audit_pixels
from ganaug.quality.msssim import ms_ssim_pairs
from ganaug.quality.ssim import random_pair_scores, ssim_pairs

PAIRS = 200  # random (generated, real) pairs for SSIM and MS-SSIM
KD_SUBSETS = 50  # kernel-distance subsets (random subsets of up to 1000 per set)
PR_K, DC_K = 3, 5  # neighbourhood sizes of precision/recall and density/coverage


@dataclass(frozen=True)
class FeatureSet:
    """Real and generated features of one extractor."""

    space: str  # "domain" or "inception": the suffix of the metric names
    extractor: str  # full extractor id (network + data version): what makes values comparable
    real: np.ndarray  # (N_real, D) features of real training images
    fake: np.ndarray  # (N_fake, D) features of generated images
    real_stats: FeatureStats | None = None  # precomputed Gaussian fit of `real` (saves time)


def _names(space: str) -> dict[str, str]:
    inception = space == "inception"
    return {
        "fd": "fid_inception" if inception else f"fd_{space}",
        "kd": "kid_inception" if inception else f"kd_{space}",
        "precision": f"precision_{space}", "recall": f"recall_{space}",
        "density": f"density_{space}", "coverage": f"coverage_{space}",
    }


def mean_with_ci(values: np.ndarray, name: str, n_bootstrap: int, ci: float, seed: int) -> dict[str, float]:
    """Mean of per-sample values with a percentile bootstrap interval over the samples."""
    return bootstrap_ci(lambda _, v: float(v.mean()), values, values, n_bootstrap=n_bootstrap, ci=ci, seed=seed).as_dict(name)


def feature_metrics(fs: FeatureSet, with_ci: bool = False, n_bootstrap: int = 200, ci: float = 0.95, seed: int = 0) -> dict[str, float]:
    """FD, kernel distance, precision/recall and density/coverage in one feature space.

    With `with_ci`, precision and density (means over generated samples) also get
    `<name>_ci_low` / `<name>_ci_high` from a bootstrap over the generated set. FD, kernel
    distance, recall and coverage get none: resampling with replacement duplicates samples,
    which biases them (recall and coverage drop, the distances rise), so a percentile interval
    would not cover the value.
    """
    names = _names(fs.space)
    real_stats = fs.real_stats or feature_stats(fs.real, fs.extractor)
    k_pr, k_dc = min(PR_K, len(fs.real) - 1), min(DC_K, len(fs.real) - 1)
    precision, recall = precision_recall(fs.real, fs.fake, k_pr)
    density, coverage = density_coverage(fs.real, fs.fake, k_dc)
    out = {
        names["fd"]: frechet_distance(feature_stats(fs.fake, fs.extractor), real_stats),
        names["kd"]: kernel_distance(fs.real, fs.fake, n_subsets=KD_SUBSETS, subset_size=min(1000, len(fs.real), len(fs.fake)), seed=seed)[0],
        names["precision"]: precision, names["recall"]: recall, names["density"]: density, names["coverage"]: coverage,
    }
    if with_ci:
        out |= mean_with_ci((real_balls_per_fake(fs.real, fs.fake, k_pr) > 0).astype(float), names["precision"], n_bootstrap, ci, seed)
        out |= mean_with_ci(real_balls_per_fake(fs.real, fs.fake, k_dc) / k_dc, names["density"], n_bootstrap, ci, seed)
    return out


def pixel_metrics(real_images: np.ndarray, fake_images: np.ndarray, seed: int, with_ci: bool = False,
                  n_bootstrap: int = 200, ci: float = 0.95) -> dict[str, float]:
    """Mean SSIM and MS-SSIM over PAIRS random (generated, real) pairs (an unpaired score);
    with `with_ci`, a bootstrap interval over the pairs."""
    out: dict[str, float] = {}
    for name, pair_fn in (("ssim_real_fake", ssim_pairs), ("ms_ssim_real_fake", ms_ssim_pairs)):
        # the same seed draws the same pairs for both scores
        values = random_pair_scores(pair_fn, fake_images, real_images, PAIRS, seed)  # (PAIRS,)
        out |= mean_with_ci(values, name, n_bootstrap, ci, seed) if with_ci else {name: float(values.mean())}
    return out


def label_fidelity(predicted: np.ndarray, intended: np.ndarray, class_names: list[str]) -> dict[str, float]:
    """Fraction of class-c samples the reference classifier assigns to class c (per class and overall)."""
    out = {"label_fidelity": float((predicted == intended).mean())}
    for c in np.unique(intended):
        out[f"label_fidelity_{class_names[c]}"] = float((predicted[intended == c] == c).mean())
    return out


def memorisation(fake_images: np.ndarray, train_images: np.ndarray, fake_features: np.ndarray, train_features: np.ndarray,
                 extractor: str) -> tuple[dict[str, float], MemorisationReport]:
    """Copy rates against the train split in pixel and domain-feature space; returns the pixel report too."""
    pixel = audit_pixels(fake_images, train_images)
    feature = audit_features(fake_features, train_features, extractor)
    out = {f"memorisation_pixel_{k}": v for k, v in pixel.summary().items() if k in ("copy_rate", "threshold", "nn_ratio_median")}
    out |= {f"memorisation_domain_{k}": v for k, v in feature.summary().items() if k in ("copy_rate", "threshold", "nn_ratio_median")}
    return out, pixel
