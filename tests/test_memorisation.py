"""Memorisation audit: noisy copies of training images are caught, fresh draws are not, and copies inside
the train split do not move the threshold."""

import numpy as np
import pytest

from ganaug.data.phantom import generate_phantoms
from ganaug.quality.memorisation import (
    DEFAULT_QUANTILE,
    MemorisationReport,
    audit_features,
    audit_pixels,
    closest_pairs_grid,
    nearest_training_distances,
    pixel_vectors,
)

BALANCED = {"normal": 1, "bacterial": 1, "viral": 1}


def phantom_images(n: int, seed: int) -> np.ndarray:
    """(n, 1, 28, 28) uint8 procedural chest radiographs."""
    return generate_phantoms(n, 28, seed, BALANCED, 0.1, 0.1).images


def noisy_copies(images: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """A memorising 'generator': the training images plus Gaussian noise (grey levels), clipped."""
    rng = np.random.default_rng(seed)
    noisy = images + rng.normal(0.0, sigma, size=images.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def training_images() -> np.ndarray:
    return phantom_images(400, seed=0)


@pytest.fixture(scope="module")
def fresh_images() -> np.ndarray:
    return phantom_images(200, seed=1)  # same distribution, other patients


# --- nearest neighbours -----------------------------------------------------------------


@pytest.mark.parametrize("exclude_self", [False, True])
def test_nearest_training_distances_match_brute_force(exclude_self):
    rng = np.random.default_rng(0)
    training = rng.normal(size=(37, 5))
    queries = training if exclude_self else rng.normal(size=(23, 5))
    distances, indices = nearest_training_distances(
        queries, training, chunk=7, exclude_self=exclude_self
    )

    for i, query in enumerate(queries):
        best_distance, best_index = np.inf, -1
        for j, candidate in enumerate(training):
            if exclude_self and i == j:
                continue
            distance = np.sqrt(np.sum((query - candidate) ** 2))
            if distance < best_distance:
                best_distance, best_index = distance, j
        assert indices[i] == best_index
        assert distances[i] == pytest.approx(best_distance, rel=1e-12)
    assert distances.dtype == np.float64 and indices.dtype == np.int64


def test_leave_one_out_excludes_self_but_finds_a_duplicate():
    rng = np.random.default_rng(1)
    training = rng.normal(size=(20, 8))
    training[13] = training[4]  # one image appears twice in the train split
    distances, indices = nearest_training_distances(training, training, exclude_self=True)
    assert np.flatnonzero(distances == 0.0).tolist() == [4, 13]
    assert (indices[4], indices[13]) == (13, 4)
    assert (indices != np.arange(20)).all()

    # without leave-one-out every training image is its own neighbour
    distances, indices = nearest_training_distances(training, training)
    assert (distances == 0.0).all()


def test_pixel_distance_is_rms_difference():
    for size in [28, 64]:
        dark = np.zeros((1, 1, size, size), np.uint8)
        grey = np.full((1, 1, size, size), 51, np.uint8)  # 51 / 255 = 0.2 everywhere
        distance, _ = nearest_training_distances(pixel_vectors(grey), pixel_vectors(dark))
        assert distance[0] == pytest.approx(0.2)  # the same at every resolution
        assert pixel_vectors(grey).shape == (1, size * size)


# --- audits -----------------------------------------------------------------------------


def test_pixel_audit_catches_noisy_copies(training_images):
    synthetic = noisy_copies(training_images[:150], sigma=2.0, seed=2)
    report = audit_pixels(synthetic, training_images)
    assert report.copy_rate > 0.9
    assert (report.synthetic_nn_index == np.arange(150)).all()  # each copy finds its original
    assert report.summary()["nn_ratio_median"] < 0.2
    synthetic_index, training_index, distance = report.closest_pairs[0]
    assert synthetic_index == training_index and distance == report.synthetic_nn.min()


def test_pixel_audit_passes_fresh_draws(training_images, fresh_images):
    report = audit_pixels(fresh_images, training_images)
    assert report.copy_rate < 0.1
    assert 0.8 < report.summary()["nn_ratio_median"] < 1.25


def test_feature_audit_noisy_copies_vs_fresh_draws():
    rng = np.random.default_rng(3)
    training = rng.normal(size=(300, 16)).astype(np.float32)
    copies = training[:100] + rng.normal(scale=0.05, size=(100, 16))
    fresh = rng.normal(size=(100, 16))

    copied = audit_features(copies, training, extractor="test-net")
    assert copied.copy_rate > 0.9 and copied.space == "test-net"
    independent = audit_features(fresh, training, extractor="test-net")
    assert independent.copy_rate < 0.1
    assert 0.8 < independent.summary()["nn_ratio_median"] < 1.25
    np.testing.assert_array_equal(independent.training_nn, copied.training_nn)


def test_report_fields_and_summary(training_images, fresh_images):
    report = audit_pixels(fresh_images[:50], training_images[:100], quantile=0.05, top_k=4)
    assert isinstance(report, MemorisationReport)
    assert (report.space, report.n_synthetic, report.n_training) == ("pixel", 50, 100)
    assert report.synthetic_nn.shape == report.synthetic_nn_index.shape == (50,)
    assert report.training_nn.shape == (100,)
    assert report.threshold == pytest.approx(np.quantile(report.training_nn, 0.05))
    assert report.copy_rate == np.mean(report.synthetic_nn <= report.threshold)

    assert len(report.closest_pairs) == 4
    assert [pair[2] for pair in report.closest_pairs] == sorted(report.synthetic_nn)[:4]
    summary = report.summary()
    for key in ["copy_rate", "threshold", "median_synthetic_nn", "median_training_nn", "nn_ratio_median"]:
        assert key in summary
    assert all(isinstance(value, float) for value in summary.values())
    assert summary["nn_ratio_median"] == pytest.approx(
        np.median(report.synthetic_nn) / np.median(report.training_nn)
    )
    # fewer synthetic images than top_k: all of them
    assert len(audit_pixels(fresh_images[:3], training_images[:100]).closest_pairs) == 3


def test_closest_pairs_grid(training_images):
    synthetic = noisy_copies(training_images[:10], sigma=2.0, seed=4)
    report = audit_pixels(synthetic, training_images[:30], top_k=5)
    grid = closest_pairs_grid(report, synthetic, training_images[:30])
    assert grid.dtype == np.uint8
    assert grid.shape == (5 * (28 + 2) + 2, 2 * 28 + 3 * 2)
    synthetic_index, training_index, _ = report.closest_pairs[0]
    np.testing.assert_array_equal(grid[2:30, 2:30], synthetic[synthetic_index, 0])
    np.testing.assert_array_equal(grid[2:30, 32:60], training_images[training_index, 0])
    with pytest.raises(ValueError, match="audited 10 synthetic"):
        closest_pairs_grid(report, synthetic[:9], training_images[:30])


# --- validation -------------------------------------------------------------------------


@pytest.mark.parametrize("quantile", [0.0, 1.0, -0.1, 1.5])
def test_bad_quantile_raises(training_images, quantile):
    with pytest.raises(ValueError, match="quantile"):
        audit_pixels(training_images[:5], training_images[:5], quantile=quantile)
    with pytest.raises(ValueError, match="quantile"):
        audit_features(np.zeros((3, 2)), np.eye(2), "test-net", quantile=quantile)


def test_empty_or_malformed_inputs_raise(training_images):
    empty = training_images[:0]
    with pytest.raises(ValueError, match="synthetic_images is empty"):
        audit_pixels(empty, training_images[:5])
    with pytest.raises(ValueError, match="training_images is empty"):
        audit_pixels(training_images[:5], empty)
    with pytest.raises(ValueError, match="training_images needs at least 2"):
        audit_pixels(training_images[:5], training_images[:1])
    with pytest.raises(ValueError, match="synthetic_features is empty"):
        audit_features(np.zeros((0, 4)), np.eye(4), "test-net")
    with pytest.raises(ValueError, match="training_features is empty"):
        audit_features(np.eye(4), np.zeros((0, 4)), "test-net")
    with pytest.raises(ValueError, match="uint8 grayscale"):
        audit_pixels(training_images[:5].astype(np.float32), training_images[:5])
    with pytest.raises(ValueError, match="sizes differ"):
        audit_pixels(training_images[:5, :, :20, :20], training_images[:5])
    with pytest.raises(ValueError, match="dimensions differ"):
        audit_features(np.zeros((3, 4)), np.zeros((3, 5)), "test-net")
    with pytest.raises(ValueError, match="NaN"):
        audit_features(np.full((3, 4), np.nan), np.zeros((3, 4)), "test-net")
    with pytest.raises(ValueError, match="exclude_self"):
        nearest_training_distances(np.zeros((2, 3)), np.zeros((4, 3)), exclude_self=True)


def test_duplicated_train_split_keeps_its_threshold():
    training = np.repeat(np.eye(4), 2, axis=0)  # every row twice: plain leave-one-out distances all 0
    with pytest.warns(RuntimeWarning, match="100% of the 8 training images have an exact or near copy"):
        report = audit_features(np.eye(4), training, "test-net")
    # each row's nearest training row outside its pair is another unit vector, sqrt(2) away
    assert report.threshold == pytest.approx(np.sqrt(2)) and report.n_training_groups == 4
    assert report.copy_rate == 1.0  # the synthetic rows are exact copies
    assert report.training_duplicate_share == 1.0 and report.summary()["training_duplicate_share"] == 1.0


@pytest.mark.parametrize("sigma", [0.0, 2.0], ids=["exact copies", "near copies"])
def test_threshold_with_a_quarter_of_train_duplicated_stays_at_the_clean_threshold(training_images, fresh_images, sigma):
    distinct = training_images[:350]
    with_copies = np.concatenate([distinct, noisy_copies(distinct[:50], sigma, seed=5)])  # 100 of 400 have a copy
    clean = audit_pixels(fresh_images, distinct)
    with pytest.warns(RuntimeWarning, match="25% of the 400 training images"):
        report = audit_pixels(fresh_images, with_copies)
    assert report.training_duplicate_share == 0.25 and report.n_training_groups == 350
    assert report.threshold == pytest.approx(clean.threshold, rel=0.1)
    assert report.copy_rate == pytest.approx(clean.copy_rate, abs=0.02)
    # the plain leave-one-out quantile (what the audit used to take) collapses onto the copies
    plain, _ = nearest_training_distances(pixel_vectors(with_copies), pixel_vectors(with_copies), exclude_self=True)
    assert np.quantile(plain, DEFAULT_QUANTILE) < 0.3 * clean.threshold


def test_feature_audit_takes_the_image_duplicate_groups():
    rng = np.random.default_rng(4)
    distinct = rng.normal(size=(300, 16))
    training = np.concatenate([distinct, distinct[:100] + rng.normal(scale=1e-3, size=(100, 16))])
    groups = np.concatenate([np.arange(300), np.arange(100)])  # as duplicate_groups gives for the images
    fresh = rng.normal(size=(100, 16))
    clean = audit_features(fresh, distinct, "test-net")
    with pytest.warns(RuntimeWarning, match="50% of the 400"):
        grouped = audit_features(fresh, training, "test-net", training_groups=groups)
    assert grouped.threshold == pytest.approx(clean.threshold, rel=0.1)
    ungrouped = audit_features(fresh, training, "test-net")  # identical rows only: the near copies stay apart
    assert ungrouped.threshold < 0.01 * clean.threshold


def test_group_exclusion_matches_brute_force():
    rng = np.random.default_rng(6)
    training = rng.normal(size=(30, 4))
    groups = rng.integers(0, 8, 30)
    distances, indices = nearest_training_distances(training, training, chunk=7, exclude_self=True, groups=groups)
    for i in range(30):
        others = np.flatnonzero(groups != groups[i])
        best = others[np.argmin(np.linalg.norm(training[others] - training[i], axis=1))]
        assert indices[i] == best and distances[i] == pytest.approx(np.linalg.norm(training[best] - training[i]))


@pytest.mark.parametrize("groups, message", [
    (np.zeros(6, np.int64), "fewer than 2 distinct images"),
    (np.arange(5), r"training_groups must be \(M,\) integers for 6"),
    (np.linspace(0, 1, 6), "training_groups must be"),
])
def test_bad_training_groups_raise(groups, message):
    with pytest.raises(ValueError, match=message):
        audit_features(np.zeros((2, 3)), np.random.default_rng(0).normal(size=(6, 3)), "test-net", training_groups=groups)
