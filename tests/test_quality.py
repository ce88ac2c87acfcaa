"""Quality metrics: Fréchet distance vs pytorch-fid, Inception plumbing, SSIM vs scikit-image."""

from pathlib import Path

import numpy as np
import pytest
import pytorch_fid.inception as pfi
import torch
from pytorch_fid.fid_score import calculate_frechet_distance
from skimage.metrics import structural_similarity

from ganaug.quality.frechet import FeatureStats, feature_stats, frechet_distance
from ganaug.quality.inception import (
    FID_FEATURE_DIM,
    FID_WEIGHTS_FILE,
    fid_inception_architecture,
    find_inception_weights,
    inception_features,
    load_fid_inception,
    to_three_channels,
)
from ganaug.quality.ssim import SSIM_WINDOW, mean_ssim, ssim_pairs

from conftest import smooth_images


def gaussian_features(n: int, dim: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """(n, dim) correlated Gaussian features."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    return rng.normal(size=(n, dim)) @ mixing + shift


# --- Fréchet distance -------------------------------------------------------------------


@pytest.mark.parametrize("dim", [2, 16, 64])
def test_frechet_distance_matches_pytorch_fid(dim):
    a = feature_stats(gaussian_features(300, dim, seed=1), "test")
    b = feature_stats(gaussian_features(300, dim, seed=2, shift=0.3), "test")
    ours = frechet_distance(a, b)
    reference = calculate_frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
    assert ours == pytest.approx(reference, rel=1e-6, abs=1e-9)
    # (mu, sigma) tuples are accepted too
    assert frechet_distance((a.mu, a.sigma), (b.mu, b.sigma)) == ours


def test_frechet_distance_in_one_dimension_is_closed_form():
    # (pytorch-fid 0.3 cannot take D = 1 with recent scipy, so check the formula instead)
    a = feature_stats(gaussian_features(100, 1, seed=1), "test")
    b = feature_stats(gaussian_features(100, 1, seed=2, shift=0.7), "test")
    std_a, std_b = np.sqrt(a.sigma[0, 0]), np.sqrt(b.sigma[0, 0])
    expected = (a.mu[0] - b.mu[0]) ** 2 + (std_a - std_b) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_a_set_with_itself_is_zero():
    stats = feature_stats(gaussian_features(200, 32, seed=3), "test")
    assert frechet_distance(stats, stats) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_symmetric_and_mean_shift_adds_squared_norm():
    features = gaussian_features(200, 8, seed=4)
    a = feature_stats(features, "test")
    b = feature_stats(gaussian_features(200, 8, seed=5), "test")
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-8)

    # Same covariance, mean shifted by delta: the distance is exactly ||delta||²
    previous = 0.0
    for scale in [0.5, 1.0, 2.0]:
        delta = scale * np.linspace(-1, 1, 8)
        shifted = feature_stats(features + delta, "test")
        distance = frechet_distance(a, shifted)
        assert distance == pytest.approx(delta @ delta, rel=1e-6)
        assert distance > previous
        previous = distance


@pytest.mark.parametrize(
    "sigma_a",
    [np.diag([1.0, -1.0]), np.array([[1.0, 2.0], [2.0, 1.0]])],  # not PSD: eigenvalue -1
    ids=["negative-diagonal", "indefinite"],
)
def test_large_imaginary_part_raises_like_pytorch_fid(sigma_a):
    mu = np.zeros(2)
    with pytest.raises(ValueError, match="Imaginary component") as reference:
        calculate_frechet_distance(mu, sigma_a, mu, np.eye(2))
    reference_magnitude = float(str(reference.value).split()[-1])
    with pytest.raises(ValueError, match="imaginary component of magnitude") as ours:
        frechet_distance((mu, sigma_a), (mu, np.eye(2)))
    assert f"magnitude {reference_magnitude:.3g} " in str(ours.value)


def test_singular_product_adds_eps_loudly(monkeypatch):
    import ganaug.quality.frechet as frechet

    real_sqrtm = frechet.linalg.sqrtm
    calls = []

    def sqrtm_failing_once(matrix):  # first call: a non-finite root, as for a singular product
        calls.append(matrix)
        return np.full_like(matrix, np.nan) if len(calls) == 1 else real_sqrtm(matrix)

    monkeypatch.setattr(frechet.linalg, "sqrtm", sqrtm_failing_once)
    sigma = np.diag([1.0, 0.0])  # singular covariance
    with pytest.warns(RuntimeWarning, match="adding 0.01"):
        distance = frechet_distance((np.zeros(2), sigma), (np.ones(2), sigma), eps=0.01)
    np.testing.assert_allclose(calls[1], (sigma + 0.01 * np.eye(2)) @ (sigma + 0.01 * np.eye(2)))
    # ||Δμ||² + Tr(2Σ) - 2 Tr(Σ + eps I) = 2 - 2 * 2 * eps
    assert distance == pytest.approx(2.0 - 0.04)


def test_frechet_distance_refuses_mismatched_inputs():
    a = feature_stats(gaussian_features(10, 4, seed=6), "inception")
    b = feature_stats(gaussian_features(10, 4, seed=7), "other-net")
    with pytest.raises(ValueError, match="different extractors"):
        frechet_distance(a, b)
    c = feature_stats(gaussian_features(10, 5, seed=8), "inception")
    with pytest.raises(ValueError, match="dimensions differ"):
        frechet_distance(a, c)


def test_feature_stats_save_load_round_trip(tmp_path):
    stats = feature_stats(gaussian_features(50, 6, seed=9), "pytorch-fid-inception-v3-pool3")
    path = tmp_path / "stats" / "real_feature_stats.npz"
    stats.save(path)
    loaded = FeatureStats.load(path)
    np.testing.assert_array_equal(loaded.mu, stats.mu)
    np.testing.assert_array_equal(loaded.sigma, stats.sigma)
    assert (loaded.n, loaded.extractor) == (50, "pytorch-fid-inception-v3-pool3")
    assert loaded.mu.dtype == np.float64
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_feature_stats_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2"):
        feature_stats(np.zeros((1, 4)), "test")
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        feature_stats(np.zeros(4), "test")


# --- Inception --------------------------------------------------------------------------


def test_to_three_channels_copies_gray_into_rgb():
    gray = torch.arange(2 * 1 * 3 * 4, dtype=torch.float32).reshape(2, 1, 3, 4)
    rgb = to_three_channels(gray)
    assert rgb.shape == (2, 3, 3, 4)
    for channel in range(3):
        assert torch.equal(rgb[:, channel], gray[:, 0])
    with pytest.raises(ValueError, match="grayscale"):
        to_three_channels(rgb)


def test_find_inception_weights_configured_path_must_exist(tmp_path):
    missing = tmp_path / "weights" / "inception.pth"
    with pytest.raises(FileNotFoundError) as error:
        find_inception_weights(str(missing))
    assert str(missing) in str(error.value)
    assert "pt_inception-2015-12-05-6726825d.pth" in str(error.value)

    missing.parent.mkdir()
    missing.write_bytes(b"")
    assert find_inception_weights(missing) == missing


def test_find_inception_weights_looks_in_hub_cache_only(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert FID_WEIGHTS_FILE == "pt_inception-2015-12-05-6726825d.pth"
    assert find_inception_weights(None) is None

    cached = tmp_path / "checkpoints" / FID_WEIGHTS_FILE
    cached.parent.mkdir()
    cached.write_bytes(b"")
    assert find_inception_weights(None) == cached


@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory) -> Path:
    """State dict file of the FID Inception architecture with random (untrained) weights."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("inception") / "random_fid_inception.pth"
    torch.save(fid_inception_architecture().state_dict(), path)
    return path


def test_architecture_is_the_one_pytorch_fid_loads(random_inception_weights, monkeypatch):
    # pytorch-fid's own builder accepts our state dict strictly: same keys and shapes
    state_dict = torch.load(random_inception_weights, weights_only=True)
    monkeypatch.setattr(pfi, "load_state_dict_from_url", lambda url, **kwargs: state_dict)
    reference = pfi.fid_inception_v3()
    ours = fid_inception_architecture()
    assert [(n, type(m)) for n, m in ours.named_modules()] == [
        (n, type(m)) for n, m in reference.named_modules()
    ]


def test_load_fid_inception_matches_pytorch_fid_and_gives_2048_features(
    random_inception_weights, monkeypatch
):
    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(pfi, "load_state_dict_from_url", no_network)
    model = load_fid_inception(random_inception_weights, device="cpu")
    assert isinstance(model, pfi.InceptionV3)
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())

    for size in [28, 64]:
        images = smooth_images(2, size, seed=size)
        features = inception_features(model, images, batch_size=1, device="cpu")
        assert features.shape == (2, FID_FEATURE_DIM)
        assert np.isfinite(features).all()
        assert not np.allclose(features[0], features[1])

    # Same output as pytorch-fid's InceptionV3 built its own way with the same weights
    state_dict = torch.load(random_inception_weights, weights_only=True)
    monkeypatch.setattr(pfi, "load_state_dict_from_url", lambda url, **kwargs: state_dict)
    reference = pfi.InceptionV3([3]).eval()
    batch = torch.from_numpy(smooth_images(1, 28, seed=0)).float() / 255
    with torch.inference_mode():
        expected = reference(batch.repeat(1, 3, 1, 1))[0][:, :, 0, 0].numpy()
    ours = inception_features(model, smooth_images(1, 28, seed=0), batch_size=1, device="cpu")
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)


def test_load_fid_inception_rejects_other_weights(tmp_path):
    path = tmp_path / "not_inception.pth"
    torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    with pytest.raises(ValueError, match="FID Inception weights"):
        load_fid_inception(path, device="cpu")


def test_inception_features_refuses_non_uint8():
    with pytest.raises(ValueError, match="uint8 grayscale"):
        inception_features(torch.nn.Identity(), np.zeros((2, 1, 28, 28), np.float32), 2, "cpu")


# --- SSIM -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [28, 64])
def test_ssim_pairs_matches_skimage(size):
    a = smooth_images(6, size, seed=10)
    b = smooth_images(6, size, seed=11)
    b[:3] = np.clip(a[:3].astype(int) + 20, 0, 255)  # some similar pairs, some unrelated
    expected = [
        structural_similarity(
            x[0] / 255.0,
            y[0] / 255.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
        )
        for x, y in zip(a, b)
    ]
    np.testing.assert_allclose(ssim_pairs(a, b), expected, atol=1e-3)


def test_ssim_of_a_set_with_itself_is_one():
    images = smooth_images(5, 28, seed=12)
    np.testing.assert_allclose(ssim_pairs(images, images), 1.0, atol=1e-9)


def test_ssim_refuses_images_smaller_than_the_window():
    tiny = smooth_images(2, 28, seed=13)[:, :, : SSIM_WINDOW - 1, : SSIM_WINDOW - 1]
    with pytest.raises(ValueError, match="at least 11 px"):
        ssim_pairs(tiny, tiny)
    exact = smooth_images(2, SSIM_WINDOW, seed=14)
    assert ssim_pairs(exact, exact) == pytest.approx(1.0)


def test_mean_ssim_deterministic_for_a_seed():
    fake = smooth_images(20, 28, seed=15)
    real = smooth_images(30, 28, seed=16)
    first = mean_ssim(fake, real, n_pairs=50, seed=0)
    assert mean_ssim(fake, real, n_pairs=50, seed=0) == first
    assert mean_ssim(fake, real, n_pairs=50, seed=1) != first
    assert -1.0 <= first <= 1.0
    with pytest.raises(ValueError, match="n_pairs"):
        mean_ssim(fake, real, n_pairs=0, seed=0)
