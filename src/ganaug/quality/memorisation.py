"""Memorisation audit: are synthetic images copies of training images?

For each synthetic image, the distance to its nearest *training* image is compared with the
training images' own nearest-neighbour distances, taken leave-one-out (each training image's
distance to its nearest *other* training image). A synthetic image closer to the training set
than almost any training image is to the rest of it is a probable copy:

    threshold = q-quantile of the training leave-one-out NN distances  (q = 0.01 by default)
    copy_rate = fraction of synthetic images with NN distance to training <= threshold

A generator that samples the training distribution without memorising scores about q; one that
returns (lightly perturbed) training images scores close to 1.

Duplicates inside the train split would make that reference meaningless: an image with a copy
in train has a leave-one-out distance of ~0, and once a share q of train has one the threshold
is ~0 and no copy counts. So training images are first joined into duplicate groups (exact
copies, and near copies by the data layer's rule: centred 32 px thumbnail correlation >= 0.97,
`ganaug.data.leakage.duplicate_groups`), each image's leave-one-out distance is taken to the
nearest training image *outside its group*, and the quantile is taken over one image per group
(its first image: a group minimum would shrink as the group grows), so a set of copies counts
once. Without duplicates this is the plain leave-one-out audit. The share of training images
with a copy is reported (`training_duplicate_share`) and warned about above
DUPLICATE_SHARE_WARNING (5 %). Synthetic images are still compared with every training image.

Filtering synthetic images by similarity to a training image (e.g. keeping only SSIM >= 0.8)
drives the copy rate up: audit the set that is actually used for augmentation, after any such
filter.

Two spaces, same procedure:
    pixel    images (N, 1, H, W) uint8 flattened to [0, 1]; the distance is the L2 norm
             divided by sqrt(H * W), i.e. the RMS pixel difference (0.01 ~ 2.5 grey levels),
             so thresholds read the same at 28 px and at 256 px.
    feature  feature vectors (N, D) from one extractor (e.g. a classifier's penultimate
             layer, computed by the caller); the distance is plain Euclidean. A copy can hide
             from pixel distance behind a shift or a contrast change, not from a good feature
             space; a feature-space near-copy can also be a different image the extractor
             cannot tell apart, so read both.

`training` is always the TRAIN split only. The test split must never be an input: it would
make held-out patients part of the reference, and a generator trained without them would look
"memorised" wherever a test image resembles a training one.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ganaug.data.leakage import DUPLICATE_SHARE_WARNING, duplicate_groups
from ganaug.progress import QUIET_BELOW, progress

PIXEL_SPACE = "pixel"  # report.space of pixel audits; feature audits use the extractor name
DEFAULT_QUANTILE = 0.01
DEFAULT_TOP_K = 16
_GRID_GAP = 2  # px of white between the images of `closest_pairs_grid`


def nearest_training_distances(
    queries: np.ndarray,
    training: np.ndarray,
    chunk: int = 512,
    exclude_self: bool = False,
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean nearest neighbour in `training` (M, D) of each row of `queries` (N, D).

    Returns (distances (N,) float64, indices (N,) int64 into `training`). With
    `exclude_self=True`, `queries` must be `training` itself and row i never matches row i
    (leave-one-out); a duplicated row still finds its twin at distance 0, unless `groups`
    (M,) puts them in one group: then row i never matches a row of its own group.

    The search uses ||q||² + ||t||² - 2 q·t in chunks of `chunk` queries (memory: chunk x M
    float64); the distance to the neighbour found is then recomputed from the difference
    vector, so it carries no cancellation error and an exact copy is at distance 0.0.
    """
    queries = np.asarray(queries, dtype=np.float64)
    training = np.asarray(training, dtype=np.float64)
    if queries.ndim != 2 or training.ndim != 2 or queries.shape[1] != training.shape[1]:
        raise ValueError(
            f"queries and training must be (N, D) and (M, D); got {queries.shape} and {training.shape}"
        )
    if len(queries) == 0:
        raise ValueError("queries is empty")
    if len(training) < (2 if exclude_self else 1):
        raise ValueError(
            f"training needs at least {2 if exclude_self else 1} rows"
            f"{' for leave-one-out' if exclude_self else ''}; got {len(training)}"
        )
    if exclude_self and queries.shape != training.shape:
        raise ValueError(
            "exclude_self=True needs queries to be training itself; "
            f"got {queries.shape} vs {training.shape}"
        )
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1; got {chunk}")
    if groups is not None:
        groups = np.asarray(groups)
        if not exclude_self or groups.shape != (len(training),):
            raise ValueError(f"groups needs exclude_self=True and shape ({len(training)},); got {groups.shape}")
        if len(np.unique(groups)) < 2:
            raise ValueError("every training row is in one duplicate group: no row has a neighbour outside it")

    training_sq = np.einsum("md,md->m", training, training)  # (M,)
    distances = np.empty(len(queries), dtype=np.float64)
    indices = np.empty(len(queries), dtype=np.int64)
    bar = progress(range(0, len(queries), chunk), desc=f"nearest of {len(training)} training images", unit="chunk",
                   disable=len(queries) * training.size < QUIET_BELOW)
    for start in bar:
        block = queries[start : start + chunk]  # (B, D)
        # squared distances up to the per-row constant ||q||², which does not move the argmin
        partial_sq = training_sq[None, :] - 2.0 * (block @ training.T)  # (B, M)
        if exclude_self:
            rows = np.arange(len(block))
            partial_sq[rows, start + rows] = np.inf
        if groups is not None:
            partial_sq[groups[start : start + len(block), None] == groups[None, :]] = np.inf  # own group
        nearest = np.argmin(partial_sq, axis=1)  # (B,)
        indices[start : start + len(block)] = nearest
        distances[start : start + len(block)] = np.linalg.norm(block - training[nearest], axis=1)
    bar.close()
    return distances, indices


def pixel_vectors(images: np.ndarray) -> np.ndarray:
    """(N, 1, H, W) uint8 -> (N, H*W) float64 whose Euclidean distances are RMS pixel differences."""
    images = _check_images("images", images)
    n_pixels = images.shape[2] * images.shape[3]
    return images.reshape(len(images), n_pixels).astype(np.float64) / (255.0 * np.sqrt(n_pixels))


@dataclass(frozen=True, eq=False)  # eq=False: array fields make == and hash ambiguous
class MemorisationReport:
    """Nearest-training-neighbour audit of one synthetic set in one space."""

    space: str  # "pixel", or the feature extractor's name
    n_synthetic: int
    n_training: int
    quantile: float  # q: threshold = q-quantile of training_nn
    threshold: float  # a synthetic image at or below this NN distance counts as a copy
    copy_rate: float  # fraction of synthetic images at or below threshold; ~quantile if no copying
    synthetic_nn: np.ndarray  # (n_synthetic,) float64 distance to the nearest training image
    synthetic_nn_index: np.ndarray  # (n_synthetic,) int64 index of that training image
    training_nn: np.ndarray  # (n_training,) float64 NN distance within training, outside the image's duplicate group
    n_training_groups: int  # training images after joining copies: the threshold's quantile is over these
    training_duplicate_share: float  # share of training images with an exact or near copy in training
    # the top_k (synthetic index, training index, distance) pairs, closest first
    closest_pairs: tuple[tuple[int, int, float], ...]

    def summary(self) -> dict[str, float]:
        """Scalars for MLflow `log_metrics` (prefix the keys with the space when logging both)."""
        median_synthetic = float(np.median(self.synthetic_nn))
        median_training = float(np.median(self.training_nn))
        return {
            "copy_rate": self.copy_rate,
            "threshold": self.threshold,
            "quantile": self.quantile,
            "median_synthetic_nn": median_synthetic,
            "median_training_nn": median_training,
            # < 1: synthetic images sit closer to the training set than training images to
            # each other (copying or mode collapse onto training images); ~1: no sign of it
            "nn_ratio_median": float(np.float64(median_synthetic) / median_training),
            "min_synthetic_nn": float(self.synthetic_nn.min()),
            "n_synthetic": float(self.n_synthetic),
            "n_training": float(self.n_training),
            "training_duplicate_share": self.training_duplicate_share,
        }


def audit_pixels(
    synthetic_images: np.ndarray,
    training_images: np.ndarray,
    quantile: float = DEFAULT_QUANTILE,
    top_k: int = DEFAULT_TOP_K,
    training_groups: np.ndarray | None = None,
) -> MemorisationReport:
    """Pixel-space audit of synthetic images (N, 1, H, W) uint8 against the TRAIN split images.

    Distances are RMS pixel differences in [0, 1] (see the module docstring).
    `training_groups` (M,): duplicate group per training image; None computes them from the
    images (`duplicate_groups`: exact and near copies).
    """
    synthetic_images = _check_images("synthetic_images", synthetic_images)
    training_images = _check_images("training_images", training_images, min_count=2)
    if synthetic_images.shape[2:] != training_images.shape[2:]:
        raise ValueError(
            f"synthetic_images and training_images sizes differ: "
            f"{synthetic_images.shape[2:]} vs {training_images.shape[2:]}"
        )
    _check_options(quantile, top_k)
    if training_groups is None:
        training_groups = duplicate_groups(training_images)
    return _audit(
        pixel_vectors(synthetic_images), pixel_vectors(training_images), PIXEL_SPACE, quantile, top_k,
        _check_groups(training_groups, training_images),
    )


def audit_features(
    synthetic_features: np.ndarray,
    training_features: np.ndarray,
    extractor: str,
    quantile: float = DEFAULT_QUANTILE,
    top_k: int = DEFAULT_TOP_K,
    training_groups: np.ndarray | None = None,
) -> MemorisationReport:
    """Feature-space audit: synthetic (N, D) against TRAIN split (M, D) features of one `extractor`.

    `extractor` names the network and layer (e.g. "resnet18-penultimate"); it becomes the
    report's `space`. Distances are Euclidean in feature units. `training_groups` (M,): duplicate
    group per training image, best computed from the images (`duplicate_groups`, as
    `ganaug.quality.suite.memorisation` does); None joins identical feature rows only.
    """
    synthetic_features = _check_features("synthetic_features", synthetic_features)
    training_features = _check_features("training_features", training_features, min_count=2)
    if synthetic_features.shape[1] != training_features.shape[1]:
        raise ValueError(
            f"synthetic_features and training_features dimensions differ: "
            f"{synthetic_features.shape[1]} vs {training_features.shape[1]} ({extractor})"
        )
    if not extractor or extractor == PIXEL_SPACE:
        raise ValueError(f"extractor must name the feature network; got {extractor!r}")
    _check_options(quantile, top_k)
    if training_groups is None:
        training_groups = np.unique(training_features, axis=0, return_inverse=True)[1].reshape(-1)
    return _audit(synthetic_features, training_features, extractor, quantile, top_k,
                  _check_groups(training_groups, training_features))


def closest_pairs_grid(
    report: MemorisationReport,
    synthetic_images: np.ndarray,
    training_images: np.ndarray,
) -> np.ndarray:
    """(H, W) uint8 image for MLflow `log_image`: one row per closest pair, synthetic | training.

    Rows follow `report.closest_pairs` (closest first), separated by white gaps. Pass the
    same images the report was computed from (for a feature audit, the images the features
    were extracted from).
    """
    synthetic_images = _check_images("synthetic_images", synthetic_images)
    training_images = _check_images("training_images", training_images)
    if (len(synthetic_images), len(training_images)) != (report.n_synthetic, report.n_training):
        raise ValueError(
            f"the report audited {report.n_synthetic} synthetic and {report.n_training} training "
            f"images; got {len(synthetic_images)} and {len(training_images)}"
        )
    if synthetic_images.shape[2:] != training_images.shape[2:]:
        raise ValueError(
            f"synthetic_images and training_images sizes differ: "
            f"{synthetic_images.shape[2:]} vs {training_images.shape[2:]}"
        )
    height, width = synthetic_images.shape[2:]
    gap = _GRID_GAP
    n_rows = len(report.closest_pairs)
    grid = np.full((n_rows * (height + gap) + gap, 2 * width + 3 * gap), 255, dtype=np.uint8)
    for row, (synthetic_index, training_index, _) in enumerate(report.closest_pairs):
        top = gap + row * (height + gap)
        grid[top : top + height, gap : gap + width] = synthetic_images[synthetic_index, 0]
        left = 2 * gap + width
        grid[top : top + height, left : left + width] = training_images[training_index, 0]
    return grid


def _audit(
    synthetic: np.ndarray, training: np.ndarray, space: str, quantile: float, top_k: int, groups: np.ndarray
) -> MemorisationReport:
    """The audit on (N, D) and (M, D) vectors whose Euclidean distance is the one to use;
    `groups` (M,) joins training copies (see the module docstring)."""
    synthetic_nn, synthetic_nn_index = nearest_training_distances(synthetic, training)
    training_nn, _ = nearest_training_distances(training, training, exclude_self=True, groups=groups)
    group_ids, first, group_size = np.unique(groups, return_index=True, return_counts=True)
    duplicate_share = float(group_size[group_size > 1].sum() / len(training))
    threshold = float(np.quantile(training_nn[first], quantile))  # one image per group of copies
    if threshold == 0.0:  # only when the caller's groups leave exact copies apart
        warnings.warn(f"memorisation audit ({space}): the copy threshold is 0 (exact copies in the training set "
                      "outside the given training_groups), so only exact copies count", RuntimeWarning, stacklevel=3)
    if duplicate_share > DUPLICATE_SHARE_WARNING:
        warnings.warn(
            f"memorisation audit ({space}): {duplicate_share:.0%} of the {len(training)} training images have an "
            f"exact or near copy in the training set ({len(group_ids)} distinct); the copy threshold leaves those "
            "copies out, but they weigh twice in training (data.dedup_within_split=near removes them)",
            RuntimeWarning,
            stacklevel=3,
        )
    # "<=", not "<": an exact copy is at distance 0 whatever the threshold
    copy_rate = float(np.mean(synthetic_nn <= threshold))
    order = np.argsort(synthetic_nn, kind="stable")[:top_k]
    closest_pairs = tuple(
        (int(i), int(synthetic_nn_index[i]), float(synthetic_nn[i])) for i in order
    )
    return MemorisationReport(
        space=space,
        n_synthetic=len(synthetic),
        n_training=len(training),
        quantile=float(quantile),
        threshold=threshold,
        copy_rate=copy_rate,
        synthetic_nn=synthetic_nn,
        synthetic_nn_index=synthetic_nn_index,
        training_nn=training_nn,
        n_training_groups=len(group_ids),
        training_duplicate_share=duplicate_share,
        closest_pairs=closest_pairs,
    )


def _check_groups(groups: np.ndarray, training: np.ndarray) -> np.ndarray:
    groups = np.asarray(groups)
    if groups.shape != (len(training),) or not np.issubdtype(groups.dtype, np.integer):
        raise ValueError(f"training_groups must be (M,) integers for {len(training)} training rows; "
                         f"got {groups.dtype} {groups.shape}")
    if len(np.unique(groups)) < 2:
        raise ValueError("the training set has fewer than 2 distinct images (every image is a copy of the others)")
    return groups


def _check_images(name: str, images: np.ndarray, min_count: int = 1) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(
            f"{name} must be uint8 grayscale images (N, 1, H, W); got {images.dtype} {images.shape}"
        )
    _check_count(name, len(images), min_count)
    return images


def _check_features(name: str, features: np.ndarray, min_count: int = 1) -> np.ndarray:
    features = np.asarray(features)
    if features.ndim != 2 or not np.issubdtype(features.dtype, np.floating):
        raise ValueError(f"{name} must be float features (N, D); got {features.dtype} {features.shape}")
    _check_count(name, len(features), min_count)
    if not np.isfinite(features).all():
        raise ValueError(f"{name} contain NaN or inf")
    return features.astype(np.float64, copy=False)


def _check_count(name: str, count: int, min_count: int) -> None:
    if count == 0:
        raise ValueError(f"{name} is empty")
    if count < min_count:
        # only the training set asks for 2: its leave-one-out distances need an "other" image
        raise ValueError(f"{name} needs at least {min_count} for leave-one-out distances; got {count}")


def _check_options(quantile: float, top_k: int) -> None:
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), e.g. 0.01; got {quantile}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1; got {top_k}")
