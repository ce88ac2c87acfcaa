"""Preprocessing: explicit grayscale, square-resize policies, equalisation, denoise-and-crop."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from skimage.exposure import equalize_adapthist

from ganaug.config import PreprocessConfig, params_from_dict
from ganaug.data.build import build_dataset
from ganaug.data.packed import save_packed
from ganaug.data.preprocess import body_bbox, denoise_crop, equalize, preprocess, square, to_grayscale

from conftest import smooth_images
from test_sources import write_image


def test_rgb_and_rgba_become_one_luma_channel_alpha_ignored():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (6, 7, 1), dtype=np.uint8)
    gray_rgb = to_grayscale(Image.fromarray(rgb, "RGB"))
    gray_rgba = to_grayscale(Image.fromarray(np.concatenate([rgb, alpha], axis=2), "RGBA"))
    assert gray_rgb.shape == (6, 7) and gray_rgb.dtype == np.uint8
    np.testing.assert_array_equal(gray_rgb, gray_rgba)
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    assert np.abs(gray_rgb.astype(float) - luma).max() <= 1  # ITU-R 601-2, as PIL rounds it
    gray_values = np.repeat(rgb[..., :1], 3, axis=2)  # an X-ray stored as RGB: R = G = B
    np.testing.assert_array_equal(to_grayscale(Image.fromarray(gray_values, "RGB")), rgb[..., 0])


def test_sixteen_bit_image_is_min_max_scaled():
    values = np.array([[1000, 1500], [2000, 3000]], dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode.startswith("I")
    np.testing.assert_array_equal(to_grayscale(image), [[0, 64], [128, 255]])


def banded(h: int = 20, w: int = 40) -> np.ndarray:
    """Columns: 10 of 50, 20 of 150, 10 of 250."""
    image = np.full((h, w), 150, np.uint8)
    image[:, :10], image[:, -10:] = 50, 250
    return image


def test_resize_policies():
    squashed = square(banded(), 40, "squash")
    assert squashed.shape == (40, 40) and squashed[:, 0].max() == 50 and squashed[:, -1].min() == 250
    cropped = square(banded(), 40, "center_crop")
    assert (cropped == 150).all()  # only the central square (the 150 band) is left
    padded = square(banded(), 40, "pad")
    assert (padded[:10] == 0).all() and (padded[-10:] == 0).all()  # black bars above and below
    np.testing.assert_array_equal(padded[10:30], banded())
    with pytest.raises(ValueError, match="data.preprocess.resize='stretch'"):
        square(banded(), 40, "stretch")


def test_histogram_equalisation_and_clahe():
    low_contrast = np.tile(np.linspace(100, 120, 32).round().astype(np.uint8), (32, 1))
    spread = equalize(low_contrast, "histogram", 0.01)
    assert spread.min() < 20 and spread.max() == 255
    np.testing.assert_array_equal(np.argsort(spread[0], kind="stable"), np.argsort(low_contrast[0], kind="stable"))
    image = smooth_images(1, 64, seed=0)[0, 0] // 4 + 60  # low contrast, local structure
    clahe = equalize(image, "clahe", 0.02)
    np.testing.assert_array_equal(clahe, np.round(255 * equalize_adapthist(image, clip_limit=0.02)).astype(np.uint8))
    assert clahe.std() > image.std()
    assert not np.array_equal(clahe, equalize(image, "clahe", 0.5))
    assert equalize(image, "none", 0.01) is image


def body_with_marker() -> np.ndarray:
    """120 x 100 dark image: a bright body (rows 20-89, cols 15-84) and a small bright text marker."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 30, (120, 100)).astype(np.uint8)
    image[20:90, 15:85] = rng.integers(150, 230, (70, 70))
    image[3:5, 92:98] = 255  # 2-pixel-high marker: removed by the opening
    return image


def test_denoise_crop_keeps_the_largest_body_region_and_drops_markers():
    image = body_with_marker()
    top, bottom, left, right = body_bbox(image)
    assert abs(top - 20) <= 1 and abs(bottom - 90) <= 1 and abs(left - 15) <= 1 and abs(right - 85) <= 1
    cropped = denoise_crop(image)
    assert cropped.shape[0] == bottom - top and cropped.min() >= 0
    assert denoise_crop(np.full((30, 30), 7, np.uint8)).shape == (30, 30)  # nothing to crop to: unchanged
    big = np.asarray(Image.fromarray(image).resize((1000, 1200), Image.Resampling.NEAREST))
    top, bottom, left, right = body_bbox(big)  # the mask is computed on a <= 256 px copy
    assert abs(top - 200) <= 12 and abs(left - 150) <= 12 and abs(bottom - 900) <= 12 and abs(right - 850) <= 12


def test_preprocess_order_and_recorded_options(tmp_path):
    image = body_with_marker()
    cfg = PreprocessConfig(resize="pad", equalize="clahe", clahe_clip=0.02, denoise_crop=True)
    out = preprocess(image, 32, cfg)
    expected = equalize(square(denoise_crop(image), 32, "pad"), "clahe", 0.02)
    np.testing.assert_array_equal(out, expected)
    root = tmp_path / "tree"
    for i, pixels in enumerate(smooth_images(20, 40, seed=3)[:, 0]):
        write_image(root / ("a" if i % 2 else "b") / f"{i}.png", pixels)
    data = params_from_dict({"data": {
        "source": "folders", "image_size": 28, "workers": 1, "val_fraction": 0.2, "test_fraction": 0.2,
        "folders": {"root": str(root)},
        "preprocess": {"resize": "center_crop", "equalize": "histogram", "denoise_crop": True},
    }}).data
    save_packed(build_dataset(data), tmp_path / "prepared")
    recorded = json.loads((tmp_path / "prepared" / "meta.json").read_text())["preprocessing"]
    assert recorded["resize"] == "center_crop" and recorded["equalize"] == "histogram"
    assert recorded["denoise_crop"].startswith("Otsu threshold") and recorded["image_size"] == 28
    assert recorded["native_size"] == {"min_hw": [40, 40], "max_hw": [40, 40]}
