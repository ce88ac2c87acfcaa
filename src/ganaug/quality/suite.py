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

from ganaug.data.leakage import duplicate_groups
from ganaug.quality.bootstrap import bootstrap_ci, half_sample_ci
from ganaug.quality.frechet import FeatureStats, feature_stats, frechet_distance, frechet_distance_of_features
from ganaug.quality.kid import kernel_distance
from ganaug.quality.manifold import manifold_hits
from ganaug.quality.memorisation import MemorisationReport, audit_features, audit_pixels
from ganaug.quality.msssim import ms_ssim_pairs
from ganaug.quality.ssim import max_ssim_to_set, random_pair_scores, ssim_pairs
from ganaug.tracking.mlflow_utils import metric_key

PAIRS = 200  # random (generated, real) pairs for SSIM and MS-SSIM
KD_SUBSETS = 50  # kernel-distance subsets (random subsets of up to 1000 per set)
PR_K, DC_K = 3, 5  # neighbourhood sizes of precision/recall and density/coverage
HALF_SAMPLES = 50  # half-sample replicates for the FD and kernel-distance intervals


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


def frechet_of_stats(a: FeatureStats, b: FeatureStats) -> float:
    """`frechet_distance`, on the GPU when CUDA is present (two float64 `eigh` of D x D there
    instead of scipy's `sqrtm` on the CPU, which takes seconds for Inception's D = 2048; the same
    value up to rounding, `ganaug.quality.device_metrics`)."""
    import torch  # here: the suite's other metrics need no torch

    from ganaug.quality.device_metrics import frechet_distance_torch

    if not torch.cuda.is_available():
        return frechet_distance(a, b)
    if a.extractor != b.extractor:
        raise ValueError(f"feature stats from different extractors: {a.extractor!r} vs {b.extractor!r}")
    cuda = torch.device("cuda")
    return frechet_distance_torch(*(torch.from_numpy(np.asarray(x, dtype=np.float64)).to(cuda)
                                    for x in (a.mu, a.sigma, b.mu, b.sigma)))


def kernel_distance_of(real: np.ndarray, fake: np.ndarray, n_subsets: int, seed: int) -> float:
    """`kernel_distance`'s mean over `n_subsets` subsets of up to 1000 per set, on the GPU when CUDA
    is present (each subset's three (m x m) kernel matrices there; the same subsets and value up to
    rounding, `ganaug.quality.device_metrics`), numpy on the CPU."""
    import torch  # here: the suite's other metrics need no torch

    subset_size = min(1000, len(real), len(fake))
    if not torch.cuda.is_available():
        return kernel_distance(real, fake, n_subsets=n_subsets, subset_size=subset_size, seed=seed)[0]
    from ganaug.quality.device_metrics import kernel_distance_torch

    cuda = torch.device("cuda")
    on_device = (torch.from_numpy(np.asarray(x, dtype=np.float64)).to(cuda) for x in (real, fake))
    return kernel_distance_torch(*on_device, n_subsets=n_subsets, subset_size=subset_size, seed=seed)[0]


def feature_metrics(fs: FeatureSet, with_ci: bool = False, n_bootstrap: int = 200, ci: float = 0.95, seed: int = 0) -> dict[str, float]:
    """FD, kernel distance, precision/recall and density/coverage in one feature space.

    With `with_ci`, every metric also gets `<name>_ci_low` / `<name>_ci_high`
    (`ganaug.quality.bootstrap` says why each scheme fits its statistic):
    precision and density by a bootstrap over the generated samples, recall and coverage by a
    bootstrap over the real samples (each a mean over that set with the other held fixed), FD
    and kernel distance by half-sampling both sets without replacement (HALF_SAMPLES replicates).
    """
    names = _names(fs.space)
    k_pr, k_dc = min(PR_K, len(fs.real) - 1), min(DC_K, len(fs.real) - 1)
    pr = manifold_hits(fs.real, fs.fake, k_pr, with_recall=True)
    dc = manifold_hits(fs.real, fs.fake, k_dc, with_recall=False)
    per_sample = {  # name -> the values the metric is the mean of
        names["precision"]: (pr.real_balls_per_fake > 0).astype(float),
        names["recall"]: pr.real_in_fake_manifold.astype(float),
        names["density"]: dc.real_balls_per_fake / k_dc,
        names["coverage"]: dc.real_ball_has_fake.astype(float),
    }

    def fd(real: np.ndarray, fake: np.ndarray) -> float:  # half-sample replicates: fast when N < D
        return frechet_distance_of_features(real, fake)

    def kd(real: np.ndarray, fake: np.ndarray, n_subsets: int = 1) -> float:
        return kernel_distance_of(real, fake, n_subsets, seed)

    observed_fd = (frechet_of_stats(feature_stats(fs.fake, fs.extractor), fs.real_stats) if fs.real_stats is not None
                   else frechet_distance_of_features(fs.real, fs.fake))  # exact, and no (D x D) sqrtm when N < D
    out = {names["fd"]: observed_fd, names["kd"]: kd(fs.real, fs.fake, KD_SUBSETS)}
    out |= {name: float(values.mean()) for name, values in per_sample.items()}
    if with_ci:
        for name, values in per_sample.items():
            out |= mean_with_ci(values, name, n_bootstrap, ci, seed)
        for name, statistic in ((names["fd"], fd), (names["kd"], kd)):
            out |= half_sample_ci(statistic, fs.real, fs.fake, HALF_SAMPLES, ci, seed, value=out[name]).as_dict(name)
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
        out[f"label_fidelity_{metric_key(class_names[c])}"] = float((predicted[intended == c] == c).mean())
    return out


def memorisation(fake_images: np.ndarray, train_images: np.ndarray, fake_features: np.ndarray, train_features: np.ndarray,
                 extractor: str) -> tuple[dict[str, float], MemorisationReport]:
    """Copy rates against the train split in pixel and domain-feature space; returns the pixel report too."""
    copies = duplicate_groups(train_images)  # train images joined with their copies: the threshold counts them once
    pixel = audit_pixels(fake_images, train_images, training_groups=copies)
    feature = audit_features(fake_features, train_features, extractor, training_groups=copies)
    out = {f"memorisation_pixel_{k}": v for k, v in pixel.summary().items() if k in ("copy_rate", "threshold", "nn_ratio_median")}
    out |= {f"memorisation_domain_{k}": v for k, v in feature.summary().items() if k in ("copy_rate", "threshold", "nn_ratio_median")}
    return out, pixel


def ssim_likeness_values(fake_images: np.ndarray, fake_labels: np.ndarray, train_images: np.ndarray,
                         train_labels: np.ndarray) -> np.ndarray:
    """The HealthGAN paper's SSIM "likeness" per generated image (N,): its highest SSIM to any
    training image of its class. High values mean near-copies of training images (read them
    with the memorisation audit)."""
    values = np.empty(len(fake_images))
    for c in np.unique(fake_labels):
        mine = fake_labels == c
        values[mine] = max_ssim_to_set(fake_images[mine], train_images[train_labels == c])[0]
    return values


def likeness_summary(values: np.ndarray) -> dict[str, float]:
    """Mean, median, 90th percentile and max of per-image SSIM likeness values."""
    return {"ssim_likeness_mean": float(values.mean()), "ssim_likeness_median": float(np.median(values)),
            "ssim_likeness_p90": float(np.quantile(values, 0.9)), "ssim_likeness_max": float(values.max())}


def ssim_likeness(fake_images: np.ndarray, fake_labels: np.ndarray, train_images: np.ndarray, train_labels: np.ndarray) -> dict[str, float]:
    """`likeness_summary` of `ssim_likeness_values`."""
    return likeness_summary(ssim_likeness_values(fake_images, fake_labels, train_images, train_labels))
