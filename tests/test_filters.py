"""Synthetic-set filters: exact SSIM likeness, the draw-until-enough loop, and what an SSIM
likeness filter does to memorisation (it selects copies of training images)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import smooth_images
from ganaug.data.phantom import generate_phantoms
from ganaug.quality.filters import FilterError, draw_filtered, ssim_likeness_scorer
from ganaug.quality.ssim import max_ssim_to_set, ssim_pairs
from ganaug.quality.suite import memorisation, ssim_likeness

FRACTIONS = {"normal": 1.0, "bacterial": 1.0, "viral": 1.0}


@pytest.mark.parametrize("size", [28, 64])
def test_max_ssim_to_set_is_the_brute_force_maximum(size):
    fake, real = smooth_images(12, size, seed=1), smooth_images(17, size, seed=2)
    real[9] = fake[4]  # one exact copy
    best, index = max_ssim_to_set(fake, real, pairs_per_block=40)  # several blocks
    brute = np.array([[ssim_pairs(f[None], r[None])[0] for r in real] for f in fake])
    np.testing.assert_allclose(best, brute.max(axis=1), atol=1e-4)
    assert (index == brute.argmax(axis=1)).all()
    assert best[4] == pytest.approx(1.0, abs=1e-5) and index[4] == 9


def test_ssim_likeness_compares_with_training_images_of_the_same_class():
    train = smooth_images(20, 28, seed=3)
    labels = np.repeat([0, 1], 10)
    copies = train[[0, 15]]
    # image 0 is a class-0 training image; labelled class 1 it is compared with class 1 only
    same = ssim_likeness(copies, np.array([0, 1]), train, labels)
    swapped = ssim_likeness(copies, np.array([1, 0]), train, labels)
    assert same["ssim_likeness_max"] == pytest.approx(1.0, abs=1e-5) and same["ssim_likeness_median"] == pytest.approx(1.0, abs=1e-5)
    assert swapped["ssim_likeness_max"] < 0.9


def fake_sampler(pool: np.ndarray, seed: int = 7):
    """(class, start, n) -> images [start, start + n) of the class's seeded stream over `pool`: a stand-in generator."""
    return lambda c, start, n: pool[np.random.default_rng([seed, c]).integers(0, len(pool), start + n)[start:]]


def test_draw_filtered_keeps_passing_images_up_to_each_count_and_is_deterministic():
    pool = smooth_images(50, 16, seed=4)
    score = lambda images, c: images.mean(axis=(1, 2, 3)) / 255.0  # brightness as the score
    threshold = float(np.median(pool.mean(axis=(1, 2, 3)) / 255.0))
    draw = draw_filtered(fake_sampler(pool), {0: 30, 2: 10}, score, threshold, max_draws=10)
    assert (np.bincount(draw.labels) == [30, 0, 10]).all()
    assert (score(draw.images, 0) >= threshold).all()
    assert draw.drawn_kept.sum() == 40 and len(draw.drawn_images) >= 40
    again = draw_filtered(fake_sampler(pool), {0: 30, 2: 10}, score, threshold, max_draws=10)
    assert np.array_equal(again.images, draw.images)
    stats = draw.statistics(["a", "b", "c"])
    assert stats["a"]["kept"] == 30 and 0 < stats["a"]["acceptance"] <= 1
    assert stats["a"]["score_kept"]["p10"] >= threshold


def test_draw_filtered_keeps_the_first_passing_images_of_each_stream_whatever_the_count():
    """The pool of a smaller synthesize.pool_ratio is a per-class prefix of a larger one, filtered too."""
    pool = smooth_images(50, 16, seed=4)
    score = lambda images, c: images.mean(axis=(1, 2, 3)) / 255.0
    threshold = float(np.median(pool.mean(axis=(1, 2, 3)) / 255.0))
    small = draw_filtered(fake_sampler(pool), {0: 12, 1: 5}, score, threshold, max_draws=10)
    large = draw_filtered(fake_sampler(pool), {0: 40, 1: 30}, score, threshold, max_draws=10)
    for c, n in ((0, 12), (1, 5)):
        np.testing.assert_array_equal(small.images[small.labels == c], large.images[large.labels == c][:n])


def test_draw_filtered_gives_up_naming_the_params():
    pool = smooth_images(20, 16, seed=5)
    with pytest.raises(FilterError, match=r"synthesize.filter_threshold=2.0.*synthesize.max_draws=3"):
        draw_filtered(fake_sampler(pool), {0: 10}, lambda x, c: np.zeros(len(x)), 2.0, max_draws=3, filter_name="ssim_likeness")


def test_ssim_likeness_filter_selects_copies_and_the_audit_shows_it():
    """A 'generator' that returns noisy training images a quarter of the time and new images
    otherwise: the unfiltered set has few copies; the SSIM >= 0.9 filter keeps mostly copies."""
    train = generate_phantoms(80, 32, 0, FRACTIONS, 0.1, 0.1).images
    fresh = generate_phantoms(300, 32, 1, FRACTIONS, 0.1, 0.1).images
    labels = np.zeros(len(train), np.int64)

    def sample(c, start, n):
        rng = np.random.default_rng([c, start])  # a stand-in stream: enough for this test (no prefix property)
        copy = rng.random(n) < 0.25
        noisy = np.clip(train[rng.integers(0, len(train), n)].astype(int) + rng.normal(0, 2, (n, 1, 32, 32)).round(), 0, 255)
        return np.where(copy[:, None, None, None], noisy, fresh[rng.integers(0, len(fresh), n)]).astype(np.uint8)

    draw = draw_filtered(sample, {0: 40}, ssim_likeness_scorer(train, labels), 0.9, max_draws=20)
    features = lambda x: x.reshape(len(x), -1)[:, ::5].astype(float)
    kept, _ = memorisation(draw.images, train, features(draw.images), features(train), "pixels")
    drawn, _ = memorisation(draw.drawn_images, train, features(draw.drawn_images), features(train), "pixels")
    assert drawn["memorisation_pixel_copy_rate"] < 0.4
    assert kept["memorisation_pixel_copy_rate"] > 0.8
