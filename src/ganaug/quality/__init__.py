"""Quality of synthetic images: FID (pytorch-fid's Inception features) and SSIM."""

from ganaug.quality.frechet import FeatureStats, feature_stats, frechet_distance
from ganaug.quality.inception import (
    FID_EXTRACTOR,
    FID_FEATURE_DIM,
    FID_WEIGHTS_FILE,
    find_inception_weights,
    inception_features,
    load_fid_inception,
    to_three_channels,
)
from ganaug.quality.ssim import mean_ssim, ssim_pairs

__all__ = [
    "FID_EXTRACTOR",
    "FID_FEATURE_DIM",
    "FID_WEIGHTS_FILE",
    "FeatureStats",
    "feature_stats",
    "find_inception_weights",
    "frechet_distance",
    "inception_features",
    "load_fid_inception",
    "mean_ssim",
    "ssim_pairs",
    "to_three_channels",
]
