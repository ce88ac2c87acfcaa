"""Quality metrics beyond FID/SSIM: KID vs torchmetrics, k-NN manifold metrics, MS-SSIM, bootstrap."""

import numpy as np
import pytest
import torch
from scipy.signal import fftconvolve
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure
from torchmetrics.image.kid import KernelInceptionDistance, poly_mmd

import ganaug.quality.manifold as manifold
from ganaug.quality.bootstrap import ConfidenceInterval, bootstrap_ci
from ganaug.quality.kid import kernel_distance, polynomial_mmd
from ganaug.quality.manifold import density_coverage, nearest_neighbour_distances, precision_recall
from ganaug.quality.msssim import (
    MS_SSIM_BETAS,
    MS_SSIM_MIN_SIDE,
    mean_ms_ssim,
    ms_ssim_betas,
    ms_ssim_pairs,
)

from conftest import smooth_images


def gaussian_features(n: int, dim: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """(n, dim) isotropic Gaussian features, N(shift, scale²)."""
    return np.random.default_rng(seed).normal(loc=shift, scale=scale, size=(n, dim))


def noisy_copies(images: np.ndarray, amount: float, seed: int) -> np.ndarray:
    """images plus Gaussian noise of std `amount` grey levels, clipped to uint8."""
    noise = np.random.default_rng(seed).normal(scale=amount, size=images.shape)
    return np.clip(np.round(images + noise), 0, 255).astype(np.uint8)


# --- Kernel distance (KID) --------------------------------------------------------------


class PassThrough(torch.nn.Module):
    """A torchmetrics `feature` extractor that returns its input: the "images" are features."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save")
@pytest.mark.parametrize(
    "options",
    [
        {},  # defaults: degree 3, gamma 1/D, coef 1
        {"degree": 2, "gamma": 0.05, "coef": 0.5},
    ],
    ids=["default-kernel", "other-kernel"],
)
def test_kernel_distance_matches_torchmetrics_kid_on_the_same_subsets(options, monkeypatch):
    real = gaussian_features(60, 8, seed=1)
    fake = gaussian_features(45, 8, seed=2, shift=0.3)
    ours = kernel_distance(real, fake, n_subsets=7, subset_size=20, seed=3, **options)

    metric = KernelInceptionDistance(feature=PassThrough(), subsets=7, subset_size=20, **options)
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(fake), real=False)
    # torchmetrics draws each subset as torch.randperm(n)[:m], real then fake; feed it the
    # permutations our Generator(seed) draws in that same order, so the subsets are identical
    generator = np.random.default_rng(3)
    monkeypatch.setattr(torch, "randperm", lambda n, *a, **k: torch.from_numpy(generator.permutation(n)))
    reference_mean, reference_std = metric.compute()
    assert ours[0] == pytest.approx(reference_mean.item(), rel=1e-10)
    assert ours[1] == pytest.approx(reference_std.item(), rel=1e-10)
    assert ours[1] > 0


def test_polynomial_mmd_matches_torchmetrics_poly_mmd():
    real = gaussian_features(30, 5, seed=4)
    fake = gaussian_features(30, 5, seed=5, shift=0.2)
    reference = poly_mmd(torch.from_numpy(real), torch.from_numpy(fake)).item()
    assert polynomial_mmd(real, fake) == pytest.approx(reference, rel=1e-12)


def test_kernel_distance_caps_subset_size_at_the_smaller_set():
    real = gaussian_features(40, 6, seed=6)
    fake = gaussian_features(40, 6, seed=7, shift=0.5)
    capped = kernel_distance(real, fake, n_subsets=3, subset_size=1000)
    # every subset is then all of both sets: one value, std 0, equal to the single-subset MMD
    assert capped[1] == pytest.approx(0.0, abs=1e-12)
    assert capped[0] == pytest.approx(polynomial_mmd(real, fake), rel=1e-12)
    assert kernel_distance(real, fake, n_subsets=3, subset_size=40) == capped


def test_kernel_distance_of_a_set_with_itself_is_near_zero():
    real = gaussian_features(400, 16, seed=8)
    same_distribution = gaussian_features(400, 16, seed=9)
    shifted = gaussian_features(400, 16, seed=9, shift=0.5)
    options = {"n_subsets": 20, "subset_size": 200}
    reference = kernel_distance(real, shifted, **options)[0]
    assert reference > 0.1
    # an independent sample of the same distribution: ~0 (the estimator is unbiased)
    mean, std = kernel_distance(real, same_distribution, **options)
    assert abs(mean) < 0.02 * reference and std < 0.02 * reference
    # the set itself: slightly negative, since the samples that the real and fake subsets
    # share enter the cross term at k(x, x), the largest kernel values
    mean, std = kernel_distance(real, real, **options)
    assert -0.05 * reference < mean < 0 and std < 0.02 * reference
    # deterministic for a seed
    assert kernel_distance(real, shifted, seed=1, **options) == kernel_distance(
        real, shifted, seed=1, **options
    )


def test_kernel_distance_refuses_bad_input():
    features = gaussian_features(10, 4, seed=10)
    with pytest.raises(ValueError, match="fake_features needs at least 2"):
        kernel_distance(features, features[:1])
    with pytest.raises(ValueError, match="real_features needs at least 2"):
        kernel_distance(features[:1], features)
    with pytest.raises(ValueError, match="dimensions differ"):
        kernel_distance(features, gaussian_features(10, 5, seed=11))
    with pytest.raises(ValueError, match="real_features contain NaN"):
        kernel_distance(np.where(features > 1, np.nan, features), features)
    with pytest.raises(ValueError, match="subset_size"):
        kernel_distance(features, features, subset_size=1)


# --- k-NN manifold metrics --------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3])
def test_nearest_neighbour_distances_match_a_brute_force_loop(k, monkeypatch):
    x = gaussian_features(30, 3, seed=12)
    x[7] = x[3]  # a duplicate: each is the other's neighbour at distance 0
    expected = np.array(
        [
            sorted(np.linalg.norm(x[i] - x[j]) for j in range(len(x)) if j != i)[k - 1]
            for i in range(len(x))
        ]
    )
    np.testing.assert_allclose(nearest_neighbour_distances(x, k), expected, rtol=1e-12)
    if k == 1:
        assert nearest_neighbour_distances(x, k)[[3, 7]].tolist() == [0.0, 0.0]
    # several row chunks give the same answer
    monkeypatch.setattr(manifold, "_CHUNK_ELEMENTS", 4 * len(x))
    np.testing.assert_allclose(nearest_neighbour_distances(x, k), expected, rtol=1e-12)


def test_manifold_metrics_match_the_definitions(monkeypatch):
    real = gaussian_features(40, 3, seed=13)
    fake = gaussian_features(35, 3, seed=14, shift=0.4)
    k = 3
    distances = np.linalg.norm(real[:, None] - fake[None], axis=-1)  # (N_real, N_fake)
    real_radii = nearest_neighbour_distances(real, k)
    fake_radii = nearest_neighbour_distances(fake, k)
    in_real_ball = distances <= real_radii[:, None]
    expected_precision = in_real_ball.any(axis=0).mean()
    expected_recall = (distances <= fake_radii[None, :]).any(axis=1).mean()
    expected_density = in_real_ball.sum(axis=0).mean() / k
    expected_coverage = in_real_ball.any(axis=1).mean()

    for chunk_elements in [manifold._CHUNK_ELEMENTS, 5 * len(fake)]:  # one chunk, several
        monkeypatch.setattr(manifold, "_CHUNK_ELEMENTS", chunk_elements)
        assert precision_recall(real, fake, k) == pytest.approx((expected_precision, expected_recall))
        assert density_coverage(real, fake, k) == pytest.approx((expected_density, expected_coverage))
    assert 0 < expected_precision < 1 and 0 < expected_recall < 1  # a test with teeth


def test_manifold_metrics_for_one_distribution_are_high():
    real = gaussian_features(1000, 4, seed=15)
    fake = gaussian_features(1000, 4, seed=16)
    precision, recall = precision_recall(real, fake, k=3)
    assert precision > 0.8 and recall > 0.8
    density, coverage = density_coverage(real, fake, k=5)
    assert 0.85 < density < 1.15
    assert coverage > 0.9


def test_manifold_metrics_for_disjoint_distributions_are_zero():
    real = gaussian_features(300, 4, seed=17)
    fake = gaussian_features(300, 4, seed=18, shift=20.0)
    assert precision_recall(real, fake, k=3) == (0.0, 0.0)
    assert density_coverage(real, fake, k=5) == (0.0, 0.0)


def test_mode_collapse_keeps_precision_and_loses_recall_and_coverage():
    real = gaussian_features(1000, 4, seed=19)
    collapsed = gaussian_features(1000, 4, seed=20, scale=0.05)  # a tiny blob at the real mean
    precision, recall = precision_recall(real, collapsed, k=3)
    assert precision > 0.95
    assert recall < 0.1
    _, coverage = density_coverage(real, collapsed, k=5)
    assert coverage < 0.1


def test_manifold_metrics_refuse_bad_input():
    real = gaussian_features(5, 2, seed=21)
    with pytest.raises(ValueError, match="real needs at least 6"):
        density_coverage(real, real, k=5)
    with pytest.raises(ValueError, match="fake needs at least 4"):
        precision_recall(gaussian_features(10, 2, seed=22), real[:3], k=3)
    with pytest.raises(ValueError, match="dimensions differ"):
        precision_recall(real, gaussian_features(5, 3, seed=23), k=1)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        nearest_neighbour_distances(real, 0)
    with pytest.raises(ValueError, match="x must be float features"):
        nearest_neighbour_distances(np.zeros((5, 2), np.uint8), 1)


# --- MS-SSIM ----------------------------------------------------------------------------


def reference_ms_ssim(x: np.ndarray, y: np.ndarray, betas: tuple[float, ...]) -> float:
    """MS-SSIM of two (H, W) images in [0, 1], written out with numpy/scipy (no torchmetrics).

    11x11 Gaussian window (sigma 1.5), reflect padding, cs over the interior, SSIM over the
    whole padded map at the coarsest scale, 2x2 mean pooling, relu, product of powers.
    """
    c1, c2, pad = 0.01**2, 0.03**2, 5
    taps = np.exp(-0.5 * (np.arange(-pad, pad + 1) / 1.5) ** 2)
    window = np.outer(taps, taps) / taps.sum() ** 2  # (11, 11), sums to 1
    terms = []
    for scale in range(len(betas)):

        def local_mean(image):  # (h, w) -> (h, w) window means, border windows reflect-padded
            return fftconvolve(np.pad(image, pad, mode="reflect"), window, mode="valid")

        mu_x, mu_y = local_mean(x), local_mean(y)
        var_x = np.maximum(local_mean(x * x) - mu_x**2, 0)
        var_y = np.maximum(local_mean(y * y) - mu_y**2, 0)
        cov = local_mean(x * y) - mu_x * mu_y
        cs_map = (2 * cov + c2) / (var_x + var_y + c2)
        if scale < len(betas) - 1:
            terms.append(cs_map[pad:-pad, pad:-pad].mean())
            height, width = (x.shape[0] // 2) * 2, (x.shape[1] // 2) * 2
            x = x[:height, :width].reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))
            y = y[:height, :width].reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))
        else:
            luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
            terms.append((luminance * cs_map).mean())
    return float(np.prod(np.maximum(terms, 0) ** np.asarray(betas)))


def test_ms_ssim_betas_by_image_size():
    assert len(ms_ssim_betas(28)) == 2
    assert len(ms_ssim_betas(64)) == 3
    assert len(ms_ssim_betas(128)) == 4
    assert ms_ssim_betas(256) == MS_SSIM_BETAS  # the standard 5-scale MS-SSIM
    for side in [22, 28, 64, 128]:
        betas = ms_ssim_betas(side)
        assert sum(betas) == pytest.approx(1.0)
        # the first betas of Wang et al., renormalised: same ratios
        published = np.asarray(MS_SSIM_BETAS[: len(betas)])
        np.testing.assert_allclose(np.asarray(betas) / betas[0], published / published[0])


@pytest.mark.parametrize("size", [28, 64, 128])
def test_ms_ssim_pairs_matches_a_numpy_reference(size):
    a = smooth_images(4, size, seed=24)
    b = smooth_images(4, size, seed=25)
    b[:2] = noisy_copies(a[:2], amount=25, seed=26)  # similar pairs and unrelated pairs
    betas = ms_ssim_betas(size)
    expected = [reference_ms_ssim(x[0] / 255.0, y[0] / 255.0, betas) for x, y in zip(a, b)]
    ours = ms_ssim_pairs(a, b)
    # torchmetrics holds the betas as a float32 tensor: agreement to ~1e-8, not 1e-15
    np.testing.assert_allclose(ours, expected, rtol=1e-7, atol=1e-12)
    assert ours[:2].min() > 0.5  # the noisy copies are similar


def test_ms_ssim_at_256_px_is_torchmetrics_standard_ms_ssim():
    a = smooth_images(2, 256, seed=27)
    b = noisy_copies(a, amount=30, seed=28)
    # all torchmetrics defaults: 5 scales, Wang et al.'s betas, sigma 1.5, relu
    reference = multiscale_structural_similarity_index_measure(
        torch.from_numpy(a).double() / 255,
        torch.from_numpy(b).double() / 255,
        data_range=1.0,
        reduction="none",
    )
    np.testing.assert_allclose(ms_ssim_pairs(a, b), reference.numpy(), rtol=1e-12)


@pytest.mark.parametrize("size", [28, 64, 128])
def test_ms_ssim_of_identical_images_is_one_and_constant_images_give_luminance(size):
    images = smooth_images(3, size, seed=29)
    np.testing.assert_allclose(ms_ssim_pairs(images, images), 1.0, atol=1e-12)
    # Flat images: every contrast-structure term is 1, so MS-SSIM is the coarsest scale's
    # luminance term l = (2 mu_a mu_b + C1) / (mu_a² + mu_b² + C1) to the last beta
    flat_a = np.full((1, 1, size, size), 100, np.uint8)
    flat_b = np.full((1, 1, size, size), 160, np.uint8)
    mu_a, mu_b, c1 = 100 / 255, 160 / 255, 0.01**2
    luminance = (2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1)
    expected = luminance ** ms_ssim_betas(size)[-1]
    assert ms_ssim_pairs(flat_a, flat_b)[0] == pytest.approx(expected, rel=1e-7)  # float32 betas


def test_ms_ssim_refuses_images_below_two_scales():
    small = smooth_images(2, MS_SSIM_MIN_SIDE - 1, seed=30)
    with pytest.raises(ValueError, match="at least 22 px"):
        ms_ssim_pairs(small, small)
    with pytest.raises(ValueError, match="at least 22 px"):
        ms_ssim_betas(21)
    smallest = smooth_images(2, MS_SSIM_MIN_SIDE, seed=31)
    np.testing.assert_allclose(ms_ssim_pairs(smallest, smallest), 1.0)
    with pytest.raises(ValueError, match="uint8 grayscale"):
        ms_ssim_pairs(smallest.astype(np.float32), smallest)


def test_mean_ms_ssim_deterministic_for_a_seed():
    fake = smooth_images(10, 28, seed=32)
    real = smooth_images(12, 28, seed=33)
    first = mean_ms_ssim(fake, real, n_pairs=20, seed=0)
    assert mean_ms_ssim(fake, real, n_pairs=20, seed=0) == first
    assert mean_ms_ssim(fake, real, n_pairs=20, seed=1) != first
    assert 0.0 <= first <= 1.0
    with pytest.raises(ValueError, match="n_pairs"):
        mean_ms_ssim(fake, real, n_pairs=0, seed=0)
    with pytest.raises(ValueError, match="sizes differ"):
        mean_ms_ssim(fake, smooth_images(2, 32, seed=34), n_pairs=2, seed=0)


# --- Bootstrap --------------------------------------------------------------------------


def mean_difference(real: np.ndarray, fake: np.ndarray) -> float:
    return float(fake.mean() - real.mean())


def test_bootstrap_ci_brackets_the_value_and_is_deterministic():
    real = gaussian_features(200, 1, seed=35)
    fake = gaussian_features(200, 1, seed=36, shift=0.5)
    interval = bootstrap_ci(mean_difference, real, fake, n_bootstrap=200, seed=0)
    assert interval.value == mean_difference(real, fake)
    assert interval.low < interval.value < interval.high
    assert (interval.n_bootstrap, interval.ci) == (200, 0.95)
    assert bootstrap_ci(mean_difference, real, fake, n_bootstrap=200, seed=0) == interval
    assert bootstrap_ci(mean_difference, real, fake, n_bootstrap=200, seed=1) != interval
    # the std of a mean of 200 unit-variance samples is ~0.07: a 95% interval ~ ±0.14
    assert 0.2 < interval.high - interval.low < 0.36

    # also resampling the real set adds its noise: a wider interval
    both = bootstrap_ci(mean_difference, real, fake, n_bootstrap=200, seed=0, resample_real=True)
    assert both.value == interval.value
    assert both.high - both.low > interval.high - interval.low

    assert interval.as_dict("fid") == {
        "fid": interval.value,
        "fid_ci_low": interval.low,
        "fid_ci_high": interval.high,
    }


def test_bootstrap_ci_narrows_with_more_samples():
    widths = []
    for n in [50, 2000]:
        real = gaussian_features(n, 1, seed=37)
        fake = gaussian_features(n, 1, seed=38, shift=0.5)
        interval = bootstrap_ci(mean_difference, real, fake, n_bootstrap=200, seed=0)
        widths.append(interval.high - interval.low)
    assert widths[1] < 0.3 * widths[0]  # ~ sqrt(50 / 2000) = 0.16 in theory


def test_bootstrap_ci_works_with_a_quality_metric_and_warns_when_biased():
    real = gaussian_features(60, 4, seed=39)
    fake = gaussian_features(60, 4, seed=40, shift=0.3)

    def kid(real_features, fake_features):
        return kernel_distance(real_features, fake_features, n_subsets=1, subset_size=60)[0]

    interval = bootstrap_ci(kid, real, fake, n_bootstrap=20, seed=0)
    assert isinstance(interval, ConfidenceInterval) and interval.low <= interval.high

    def unique_fraction(real_features, fake_features):  # < 1 on every resample with replacement
        return len(np.unique(fake_features, axis=0)) / len(fake_features)

    with pytest.warns(RuntimeWarning, match="outside its 95% interval"):
        bootstrap_ci(unique_fraction, real, fake, n_bootstrap=20, seed=0)


def test_bootstrap_ci_refuses_bad_input_and_non_finite_statistics():
    real = gaussian_features(10, 2, seed=41)
    with pytest.raises(ValueError, match="ci must be in"):
        bootstrap_ci(mean_difference, real, real, ci=95)
    with pytest.raises(ValueError, match="n_bootstrap"):
        bootstrap_ci(mean_difference, real, real, n_bootstrap=1)
    with pytest.raises(ValueError, match="fake must hold samples"):
        bootstrap_ci(mean_difference, real, real[:0])

    calls = []

    def nan_on_second_replicate(real_features, fake_features):
        calls.append(1)
        return np.nan if len(calls) == 3 else 0.0

    with pytest.raises(FloatingPointError, match="bootstrap replicate 1"):
        bootstrap_ci(nan_on_second_replicate, real, real, n_bootstrap=5)
