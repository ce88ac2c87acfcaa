"""The device-side Fréchet and kernel distances (ganaug.quality.device_metrics) equal the scipy /
numpy ones: on CPU tensors here, on CUDA tensors where a GPU exists."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ganaug.quality.device_metrics import (
    frechet_distance_of_features_torch,
    frechet_distance_torch,
    kernel_distance_torch,
    polynomial_mmd_torch,
)
from ganaug.quality.frechet import feature_stats, frechet_distance, frechet_distance_of_features
from ganaug.quality.kid import kernel_distance, polynomial_mmd

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="no CUDA device: the GPU run is benchmarks/gpu_check.sh"))]


def features(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)  # correlated dimensions
    return rng.normal(size=(n, d)) @ mixing + shift


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("n_a", "n_b", "d"), [(200, 150, 16), (40, 30, 64)])  # covariance route; N < D route
def test_frechet_matches_scipy(device, n_a, n_b, d):
    a, b = features(n_a, d, 0), features(n_b, d, 1, shift=0.3)
    expected = frechet_distance_of_features(a, b)
    got = frechet_distance_of_features_torch(torch.from_numpy(a).float().to(device), torch.from_numpy(b).float().to(device))
    assert got == pytest.approx(expected, rel=1e-4)
    assert frechet_distance_of_features_torch(torch.from_numpy(a).to(device), torch.from_numpy(a).to(device)) == \
        pytest.approx(0.0, abs=1e-6)  # a set against itself


@pytest.mark.parametrize("device", DEVICES)
def test_frechet_of_stats_matches_scipy(device):
    sa, sb = feature_stats(features(300, 24, 2), "f"), feature_stats(features(300, 24, 3, shift=1.0), "f")
    on = [torch.from_numpy(x).to(device) for x in (sa.mu, sa.sigma, sb.mu, sb.sigma)]
    assert frechet_distance_torch(*on) == pytest.approx(frechet_distance(sa, sb), rel=1e-8)


def test_frechet_refuses_a_covariance_that_is_not_psd():
    sigma = torch.eye(4, dtype=torch.float64)
    bad = torch.diag(torch.tensor([1.0, 1.0, 1.0, -4.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="not positive semi-definite"):
        frechet_distance_torch(torch.zeros(4), sigma, torch.zeros(4), bad)


@pytest.mark.parametrize("device", DEVICES)
def test_kernel_distance_matches_numpy(device):
    x, y = features(50, 32, 4), features(50, 32, 5, shift=0.2)
    got = polynomial_mmd_torch(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device))
    assert got == pytest.approx(polynomial_mmd(x, y), rel=1e-9)
    # the same subsets as numpy's (kid.subset_indices), so the same mean and std; 60 > 50: the subset size is capped
    for n_subsets, subset_size in ((3, 20), (2, 60)):
        expected = kernel_distance(x, y, n_subsets=n_subsets, subset_size=subset_size, seed=7)
        got = kernel_distance_torch(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device), n_subsets=n_subsets,
                                    subset_size=subset_size, seed=7)
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert kernel_distance(x, y, n_subsets=3, subset_size=20, seed=7)[1] > 0  # the subsets differ


def test_bad_features_are_refused():
    with pytest.raises(ValueError, match="real features must be float features"):
        frechet_distance_of_features_torch(torch.zeros(1, 3), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="contain NaN"):
        polynomial_mmd_torch(torch.full((3, 2), float("nan")), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="subset_size must be >= 2"):
        kernel_distance_torch(torch.zeros(5, 3), torch.zeros(5, 3), subset_size=1)


def test_suite_kernel_distance_is_numpys_on_a_cpu(monkeypatch):
    """Without CUDA the suite's kernel distance is numpy's, bit for bit: the torch route is not taken."""
    import ganaug.quality.device_metrics as device_metrics
    from ganaug.quality.suite import FeatureSet, feature_metrics, kernel_distance_of

    def device_route(*args, **kwargs):
        raise AssertionError("the CPU path took the device route")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_metrics, "kernel_distance_torch", device_route)
    x, y = features(60, 8, 8), features(50, 8, 9, shift=0.4)
    assert kernel_distance_of(x, y, 4, seed=3) == kernel_distance(x, y, n_subsets=4, subset_size=50, seed=3)[0]
    assert feature_metrics(FeatureSet("domain", "f", x, y), seed=3)["kd_domain"] == \
        kernel_distance(x, y, n_subsets=50, subset_size=50, seed=3)[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the GPU run is benchmarks/gpu_check.sh")
def test_suite_fd_of_stats_on_cuda_matches_scipy():
    from ganaug.quality.suite import frechet_of_stats

    sa, sb = feature_stats(features(400, 64, 6), "f"), feature_stats(features(400, 64, 7, shift=0.5), "f")
    assert frechet_of_stats(sa, sb) == pytest.approx(frechet_distance(sa, sb), rel=1e-7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the GPU run is benchmarks/gpu_check.sh")
def test_suite_kernel_distance_on_cuda_matches_numpy(monkeypatch):
    """With CUDA the suite computes the kernel distance on the GPU: the numpy value up to rounding."""
    import ganaug.quality.kid as kid
    from ganaug.quality.suite import kernel_distance_of

    x, y = features(1200, 64, 10), features(1100, 64, 11, shift=0.3)  # subsets of 1000, as the suite draws them
    expected = kernel_distance(x, y, n_subsets=5, subset_size=1000, seed=1)[0]
    monkeypatch.setattr(kid, "polynomial_mmd", lambda *a, **k: (_ for _ in ()).throw(AssertionError("numpy route")))
    assert kernel_distance_of(x, y, 5, seed=1) == pytest.approx(expected, rel=1e-9)
