"""The procedural chest-radiograph generator: determinism, labels, anatomy, findings."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ganaug.data.phantom import (
    EXTRA_FINDINGS,
    FINDINGS,
    SUBTLE_SEVERITY_RANGE,
    PhantomSet,
    class_counts,
    generate_phantoms,
    render_phantom,
)

EQUAL = {"normal": 1.0, "bacterial": 1.0, "viral": 1.0}


def image_rng(seed: int, i: int) -> np.random.Generator:
    """The rng generate_phantoms gives image i."""
    return np.random.default_rng(np.random.SeedSequence([seed, i]))


def lungs(masks: dict) -> np.ndarray:
    return masks["lung_left"] | masks["lung_right"]


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """(H, W) -> (H / factor, W / factor) by averaging factor x factor blocks."""
    h, w = image.shape
    return image.reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def severity_rng(seed: int, i: int) -> np.random.Generator:
    """The stream generate_phantoms draws image i's pneumonia severity from."""
    return np.random.default_rng(np.random.SeedSequence([seed, i, 1]))


# --- Determinism ---------------------------------------------------------------------------


def test_same_seed_gives_identical_sets():
    a = generate_phantoms(12, 32, seed=3, class_fractions=EQUAL, cardiomegaly_rate=0.3, effusion_rate=0.3)
    b = generate_phantoms(12, 32, seed=3, class_fractions=EQUAL, cardiomegaly_rate=0.3, effusion_rate=0.3)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.finding, b.finding)
    np.testing.assert_array_equal(a.extras, b.extras)


def test_different_seed_gives_different_images():
    a = generate_phantoms(12, 32, seed=3, class_fractions=EQUAL, cardiomegaly_rate=0.3, effusion_rate=0.3)
    b = generate_phantoms(12, 32, seed=4, class_fractions=EQUAL, cardiomegaly_rate=0.3, effusion_rate=0.3)
    assert not np.array_equal(a.images, b.images)


def test_image_depends_only_on_seed_index_and_labels():
    small = generate_phantoms(20, 32, seed=5, class_fractions=EQUAL, cardiomegaly_rate=0.2, effusion_rate=0.2)
    large = generate_phantoms(45, 32, seed=5, class_fractions=EQUAL, cardiomegaly_rate=0.2, effusion_rate=0.2)
    same_labels = (small.finding == large.finding[:20]) & np.all(small.extras == large.extras[:20], axis=1)
    assert same_labels.sum() >= 2, "too few shared labels to test anything"
    np.testing.assert_array_equal(small.images[same_labels], large.images[:20][same_labels])
    # And it is exactly render_phantom with the (seed, i) stream.
    i = int(np.flatnonzero(same_labels)[0])
    cardiomegaly, effusion = (bool(flag) for flag in small.extras[i])
    alone = render_phantom(32, FINDINGS[small.finding[i]], cardiomegaly, effusion, image_rng(5, i))
    np.testing.assert_array_equal(alone, small.images[i, 0])


def test_same_patient_at_every_resolution():
    """One rng state renders the same radiograph at 64 and 256 px, up to pixel noise."""
    for i, finding in enumerate(FINDINGS):
        small = render_phantom(64, finding, True, True, image_rng(9, i)).astype(float)
        large = render_phantom(256, finding, True, True, image_rng(9, i)).astype(float)
        other = render_phantom(256, finding, True, True, image_rng(9, i + 100)).astype(float)
        assert np.abs(small - block_mean(large, 4)).mean() < 10
        assert np.abs(small - block_mean(other, 4)).mean() > 15


# --- Shapes, labels, validation ------------------------------------------------------------


@pytest.mark.parametrize("size", [28, 64, 100, 256])
def test_shapes_and_dtypes(size):
    phantoms = generate_phantoms(3, size, seed=0, class_fractions=EQUAL, cardiomegaly_rate=0.5, effusion_rate=0.5)
    assert phantoms.images.shape == (3, 1, size, size) and phantoms.images.dtype == np.uint8
    assert phantoms.finding.shape == (3,) and phantoms.finding.dtype == np.int64
    assert phantoms.extras.shape == (3, len(EXTRA_FINDINGS)) and phantoms.extras.dtype == np.uint8
    assert sorted(phantoms.finding.tolist()) == [0, 1, 2]
    # Not a blank frame: dark air, bright bone and heart.
    assert phantoms.images.min() < 40 and phantoms.images.max() > 200


def test_labels_follow_counts_and_rates():
    phantoms = generate_phantoms(
        300, 28, seed=1, class_fractions={"normal": 0.5, "bacterial": 0.3, "viral": 0.2},
        cardiomegaly_rate=0.2, effusion_rate=0.0, progress=True,
    )
    assert np.bincount(phantoms.finding).tolist() == [150, 90, 60]
    assert 0.12 < phantoms.extras[:, 0].mean() < 0.28
    assert phantoms.extras[:, 1].sum() == 0
    assert not np.all(np.diff(phantoms.finding) >= 0), "classes must be shuffled, not in blocks"


@pytest.mark.parametrize(
    "kwargs, option",
    [
        ({"size": 27}, "size"),
        ({"size": 257}, "size"),
        ({"cardiomegaly_rate": 1.5}, "cardiomegaly_rate"),
        ({"effusion_rate": -0.1}, "effusion_rate"),
    ],
)
def test_generate_rejects_out_of_range_options(kwargs, option):
    args = dict(n=6, size=32, seed=0, class_fractions=EQUAL, cardiomegaly_rate=0.1, effusion_rate=0.1)
    with pytest.raises(ValueError, match=option):
        generate_phantoms(**{**args, **kwargs})


def test_class_counts_largest_remainder():
    assert class_counts(10, EQUAL) == {"normal": 4, "bacterial": 3, "viral": 3}
    # Quotas 3.5 / 1.75 / 1.75: the two largest remainders get the two leftover images.
    quarters = {"normal": 0.5, "bacterial": 0.25, "viral": 0.25}
    assert class_counts(7, quarters) == {"normal": 3, "bacterial": 2, "viral": 2}
    # Fractions are normalised by their sum.
    assert class_counts(7, {"normal": 2, "bacterial": 1, "viral": 1}) == class_counts(7, quarters)


def test_class_counts_exact_and_within_one_of_quota():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(10, 5000))
        fractions = dict(zip(FINDINGS, rng.uniform(0.05, 1.0, size=3)))
        counts = class_counts(n, fractions)
        assert sum(counts.values()) == n
        total = sum(fractions.values())
        for name in FINDINGS:
            assert abs(counts[name] - n * fractions[name] / total) < 1


def test_class_counts_rejects_bad_keys_and_empty_classes():
    with pytest.raises(ValueError, match="covid"):
        class_counts(10, {"normal": 1, "bacterial": 1, "viral": 1, "covid": 1})
    with pytest.raises(ValueError, match="viral"):
        class_counts(10, {"normal": 1, "bacterial": 1})
    with pytest.raises(ValueError, match="viral"):
        class_counts(10, {"normal": 1, "bacterial": 1, "viral": 0})
    with pytest.raises(ValueError, match="viral"):  # rounds to zero images
        class_counts(10, {"normal": 0.5, "bacterial": 0.47, "viral": 0.03})
    with pytest.raises(ValueError, match="bacterial"):
        class_counts(10, {"normal": 1, "bacterial": -1, "viral": 1})


# --- Anatomy and findings ------------------------------------------------------------------


def test_radiograph_contrast_conventions():
    """Air outside the body and in the lungs dark, heart bright."""
    for i in range(10):
        image, masks = render_phantom(64, "normal", False, False, image_rng(0, i), return_masks=True)
        outside = ~masks["body"]
        assert outside.any() and image[outside].mean() < 40
        assert image[lungs(masks)].mean() + 60 < image[masks["heart"]].mean()


def test_pneumonia_raises_lung_intensity():
    lung_means = {finding: [] for finding in FINDINGS}
    for finding in FINDINGS:
        for i in range(30):
            image, masks = render_phantom(64, finding, False, False, image_rng(1, i), return_masks=True)
            lung_means[finding].append(image[lungs(masks)].mean())
    normal = np.mean(lung_means["normal"])
    assert np.mean(lung_means["bacterial"]) > normal + 4
    assert np.mean(lung_means["viral"]) > normal + 15


def test_bacterial_is_unilateral_and_viral_bilateral():
    for i in range(20):
        _, masks = render_phantom(64, "bacterial", i % 2 == 0, False, image_rng(2, i), return_masks=True)
        in_left = (masks["lesion"] & masks["lung_left"]).sum()
        in_right = (masks["lesion"] & masks["lung_right"]).sum()
        assert (in_left > 0) != (in_right > 0), f"image {i}: lesion in left {in_left}, right {in_right}"
        assert not (masks["lesion"] & ~lungs(masks)).any()

        _, masks = render_phantom(64, "viral", i % 2 == 0, False, image_rng(2, i), return_masks=True)
        for lung in ("lung_left", "lung_right"):
            covered = (masks["lesion"] & masks[lung]).sum() / masks[lung].sum()
            assert covered > 0.3, f"image {i}: viral pattern covers {covered:.0%} of {lung}"

        _, masks = render_phantom(64, "normal", i % 2 == 0, False, image_rng(2, i), return_masks=True)
        assert not masks["lesion"].any()


def test_cardiothoracic_ratio():
    for i in range(20):
        for cardiomegaly in (False, True):
            _, masks = render_phantom(128, "normal", cardiomegaly, False, image_rng(3, i), return_masks=True)
            ratio = masks["heart_width"] / masks["thorax_width"]
            if cardiomegaly:
                assert ratio > 0.5, f"image {i}: cardiomegaly with ratio {ratio:.3f}"
            else:
                assert 0.35 < ratio < 0.5, f"image {i}: normal heart with ratio {ratio:.3f}"


def test_effusion_fills_the_lung_base():
    """Same patient with and without effusion: the lower lung zone gets brighter."""
    deltas = []
    for i in range(20):
        clear, masks = render_phantom(64, "normal", False, False, image_rng(4, i), return_masks=True)
        fluid, fluid_masks = render_phantom(64, "normal", False, True, image_rng(4, i), return_masks=True)
        lung = lungs(masks)
        rows = np.flatnonzero(lung.any(axis=1))
        lower_zone = lung.copy()
        lower_zone[: rows[0] + 2 * (rows[-1] - rows[0]) // 3] = False
        deltas.append(fluid[lower_zone].mean() - clear[lower_zone].mean())
        # The fluid lies low in the lung.
        fluid_rows = np.flatnonzero(fluid_masks["effusion"].any(axis=1))
        assert len(fluid_rows) and fluid_rows.mean() > rows.mean()
    assert min(deltas) > 0 and np.mean(deltas) > 10


def test_findings_are_learnable_from_small_images():
    """A linear model on 16 x 16 pixels separates normal / bacterial / viral well above chance."""
    phantoms = generate_phantoms(600, 32, seed=7, class_fractions=EQUAL, cardiomegaly_rate=0.2, effusion_rate=0.2)
    pixels = np.stack([block_mean(image, 2) for image in phantoms.images[:, 0]]).reshape(600, -1) / 255.0
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    classifier.fit(pixels[:400], phantoms.finding[:400])
    accuracy = classifier.score(pixels[400:], phantoms.finding[400:])
    assert accuracy > 0.6, f"held-out accuracy {accuracy:.2f} (chance 0.33)"


# --- Severity ------------------------------------------------------------------------------


def test_full_severity_is_the_default_image():
    for i, finding in enumerate(FINDINGS):
        default, default_masks = render_phantom(64, finding, True, True, image_rng(8, i), return_masks=True)
        for severity in (1.0, 1, np.float32(1.0)):
            image, masks = render_phantom(64, finding, True, True, image_rng(8, i), return_masks=True, severity=severity)
            np.testing.assert_array_equal(image, default)
            np.testing.assert_array_equal(masks["lesion"], default_masks["lesion"])
    args = dict(n=12, size=32, seed=3, class_fractions=EQUAL, cardiomegaly_rate=0.3, effusion_rate=0.3)
    default = generate_phantoms(**args)
    full = generate_phantoms(**args, severity_range=(1.0, 1.0))
    np.testing.assert_array_equal(full.images, default.images)
    np.testing.assert_array_equal(default.severity, (default.finding > 0).astype(np.float32))
    # A PhantomSet built without severities holds the full-severity ones.
    rebuilt = PhantomSet(images=default.images, finding=default.finding, extras=default.extras)
    np.testing.assert_array_equal(rebuilt.severity, default.severity)


@pytest.mark.parametrize("finding", ["bacterial", "viral"])
def test_lower_severity_changes_the_lungs_less(finding):
    """Same patient, normal vs pneumonia: the mean lung brightening grows with severity."""
    for i in range(8):
        normal, masks = render_phantom(64, "normal", i % 2 == 0, i % 3 == 0, image_rng(6, i), return_masks=True)
        lung = lungs(masks)
        changes, lesion_areas = [], []
        for severity in (0.25, 0.5, 1.0):
            image, masks = render_phantom(
                64, finding, i % 2 == 0, i % 3 == 0, image_rng(6, i), return_masks=True, severity=severity
            )
            changes.append((image.astype(float) - normal)[lung].mean())
            lesion_areas.append(masks["pneumonia"].sum())
        assert 0 < changes[0] < changes[1] < changes[2], f"image {i}: lung change {np.round(changes, 2)}"
        # A faint finding keeps a mask; a milder consolidation is no larger.
        assert lesion_areas[0] > 0 and lesion_areas[0] <= lesion_areas[2]


def test_normal_images_ignore_severity():
    for i in range(3):
        default, default_masks = render_phantom(64, "normal", True, True, image_rng(7, i), return_masks=True)
        mild, mild_masks = render_phantom(64, "normal", True, True, image_rng(7, i), return_masks=True, severity=0.3)
        np.testing.assert_array_equal(mild, default)
        assert not mild_masks["pneumonia"].any()


@pytest.mark.parametrize("severity", [0, 0.0, -0.5, 1.01, float("nan"), "0.5", None])
def test_render_rejects_bad_severity(severity):
    with pytest.raises(ValueError, match="severity"):
        render_phantom(32, "bacterial", False, False, image_rng(0, 0), severity=severity)


@pytest.mark.parametrize(
    "severity_range", [(0.0, 0.5), (0.5, 0.2), (0.5, 1.2), (-0.1, 0.5), (0.3,), (0.1, 0.2, 0.3), 0.3, (float("nan"), 0.5)]
)
def test_generate_rejects_bad_severity_range(severity_range):
    args = dict(n=6, size=32, seed=0, class_fractions=EQUAL, cardiomegaly_rate=0.1, effusion_rate=0.1)
    with pytest.raises(ValueError, match="severity_range"):
        generate_phantoms(**args, severity_range=severity_range)


def test_severity_range_determinism():
    args = dict(size=32, seed=5, class_fractions=EQUAL, cardiomegaly_rate=0.2, effusion_rate=0.2)
    mild = (0.2, 0.4)
    a = generate_phantoms(20, **args, severity_range=mild)
    b = generate_phantoms(20, **args, severity_range=mild)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.severity, b.severity)

    # Severities: float32, 0 for normal, spread over the range for pneumonia.
    pneumonia = a.finding > 0
    assert a.severity.dtype == np.float32 and a.severity.shape == (20,)
    assert np.all(a.severity[~pneumonia] == 0)
    assert np.all((a.severity[pneumonia] >= 0.2) & (a.severity[pneumonia] <= 0.4))
    assert len(np.unique(a.severity[pneumonia])) == pneumonia.sum()

    # Image i depends only on (seed, i, labels, severity_range), not on n.
    large = generate_phantoms(45, **args, severity_range=mild)
    same_labels = (a.finding == large.finding[:20]) & np.all(a.extras == large.extras[:20], axis=1)
    assert (same_labels & pneumonia).sum() >= 2, "too few shared pneumonia labels to test anything"
    np.testing.assert_array_equal(a.images[same_labels], large.images[:20][same_labels])
    np.testing.assert_array_equal(a.severity[same_labels], large.severity[:20][same_labels])

    # And it is render_phantom with the (seed, i) stream at the severity from the (seed, i, 1) stream.
    i = int(np.flatnonzero(pneumonia)[0])
    severity = severity_rng(5, i).uniform(*mild)
    cardiomegaly, effusion = (bool(flag) for flag in a.extras[i])
    alone = render_phantom(32, FINDINGS[a.finding[i]], cardiomegaly, effusion, image_rng(5, i), severity=severity)
    np.testing.assert_array_equal(alone, a.images[i, 0])

    # The range changes the pneumonia images only: same labels, same normal images.
    full = generate_phantoms(20, **args)
    np.testing.assert_array_equal(full.finding, a.finding)
    np.testing.assert_array_equal(full.extras, a.extras)
    np.testing.assert_array_equal(full.images[~pneumonia], a.images[~pneumonia])
    assert all(not np.array_equal(full.images[j], a.images[j]) for j in np.flatnonzero(pneumonia))


def test_subtle_severity_range_is_harder_but_learnable():
    """At 64 px, a linear model on 16 x 16 thumbnails lands between chance and its full-severity ~0.95."""
    phantoms = generate_phantoms(
        900, 64, seed=7, class_fractions=EQUAL, cardiomegaly_rate=0.1, effusion_rate=0.1,
        severity_range=SUBTLE_SEVERITY_RANGE,
    )
    pixels = np.stack([block_mean(image, 4) for image in phantoms.images[:, 0]]).reshape(900, -1) / 255.0
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    classifier.fit(pixels[:600], phantoms.finding[:600])
    accuracy = classifier.score(pixels[600:], phantoms.finding[600:])
    assert 0.5 < accuracy < 0.85, f"held-out accuracy {accuracy:.2f} (chance 0.33, full severity ~0.95)"
