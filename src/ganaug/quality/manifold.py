"""k-nearest-neighbour manifold metrics in a feature space: precision, recall, density, coverage.

Each set's manifold is estimated as the union of balls centred on its samples, each with
radius the distance to that sample's k-th nearest *other* sample of the same set:

    precision  fraction of fake samples inside the real manifold       (Kynkäänniemi et al. 2019)
    recall     fraction of real samples inside the fake manifold       (Kynkäänniemi et al. 2019)
    density    (1/k) x mean over fakes of the number of real balls containing it  (Naeem et al. 2020)
    coverage   fraction of real samples whose ball contains at least one fake     (Naeem et al. 2020)

Precision says "fakes look real", recall "the real variety is reproduced". Density (~1 when
fake and real follow one distribution, unbounded above) is robust to real outliers that inflate
precision; coverage (in [0, 1]) uses only real balls, so it is robust to fake outliers that
inflate recall. Under mode collapse precision and density stay high while recall and coverage
fall.

Distances are exact Euclidean (scipy `cdist`, float64), computed in row chunks so memory is
bounded while time is O(N_real x N_fake x D); fine up to ~5000 samples per set on a CPU.
"Inside a ball" is `distance <= radius` (closed balls, as in both papers; the reference code
`prdc` uses `<`, which differs only on exact ties).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import cdist

# Rows per cdist block: a block is (rows, N) float64, so at most ~32 MiB whatever N is
_CHUNK_ELEMENTS = 2**22


def _check_features(name: str, features: np.ndarray, min_count: int) -> np.ndarray:
    features = np.asarray(features)
    if features.ndim != 2 or not np.issubdtype(features.dtype, np.floating):
        raise ValueError(f"{name} must be float features (N, D); got {features.dtype} {features.shape}")
    if features.shape[0] < min_count:
        raise ValueError(f"{name} needs at least {min_count} samples; got {features.shape[0]}")
    if not np.isfinite(features).all():
        raise ValueError(f"{name} contain NaN or inf")
    return features.astype(np.float64, copy=False)


def _check_k(k: int) -> int:
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer; got {k}")
    return int(k)


def _row_chunk(n_columns: int) -> int:
    return max(1, _CHUNK_ELEMENTS // max(1, n_columns))


def nearest_neighbour_distances(x: np.ndarray, k: int) -> np.ndarray:
    """Distance (N,) float64 from each row of `x` (N, D) to its k-th nearest other row.

    Leave-one-out: row i is never its own neighbour, but a duplicate of row i is another row
    and counts, at distance 0. Exact Euclidean distances; needs N >= k + 1. This radius
    defines the k-NN balls of the manifold metrics and is the leave-one-out reference
    distance of a memorisation audit (k = 1).
    """
    k = _check_k(k)
    x = _check_features("x", x, min_count=k + 1)
    n = len(x)
    radii = np.empty(n, dtype=np.float64)
    chunk = _row_chunk(n)
    for start in range(0, n, chunk):
        block = cdist(x[start : start + chunk], x)  # (B, N)
        rows = np.arange(len(block))
        block[rows, start + rows] = np.inf  # leave self out
        # k-th smallest of each row (index k - 1 after partial sorting)
        radii[start : start + len(block)] = np.partition(block, k - 1, axis=1)[:, k - 1]
    return radii


def _ball_statistics(real: np.ndarray, fake: np.ndarray, k: int, fake_radii_needed: bool):
    """One pass over real-fake distances: per-fake counts of real balls, per-real hits.

    Returns (real_balls_per_fake (N_fake,) int, real_ball_has_fake (N_real,) bool,
    real_in_fake_manifold (N_real,) bool or None).
    """
    real_radii = nearest_neighbour_distances(real, k)  # (N_real,)
    fake_radii = nearest_neighbour_distances(fake, k) if fake_radii_needed else None  # (N_fake,)
    real_balls_per_fake = np.zeros(len(fake), dtype=np.int64)
    real_ball_has_fake = np.empty(len(real), dtype=bool)
    real_in_fake_manifold = np.empty(len(real), dtype=bool) if fake_radii_needed else None
    chunk = _row_chunk(len(fake))
    for start in range(0, len(real), chunk):
        stop = start + chunk
        distances = cdist(real[start:stop], fake)  # (B, N_fake)
        in_real_ball = distances <= real_radii[start:stop, None]  # fake j in ball of real i
        real_balls_per_fake += in_real_ball.sum(axis=0)
        real_ball_has_fake[start:stop] = in_real_ball.any(axis=1)
        if fake_radii_needed:
            real_in_fake_manifold[start:stop] = (distances <= fake_radii[None, :]).any(axis=1)
    return real_balls_per_fake, real_ball_has_fake, real_in_fake_manifold


def _check_pair(real: np.ndarray, fake: np.ndarray, k: int, fake_min: int):
    k = _check_k(k)
    real = _check_features("real", real, min_count=k + 1)  # k-NN radii need k other samples
    fake = _check_features("fake", fake, min_count=fake_min)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake dimensions differ: {real.shape[1]} vs {fake.shape[1]}")
    return real, fake, k


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of `fake` (M, D) against `real` (N, D).

    precision: fraction of fakes within the k-NN radius of at least one real sample;
    recall: fraction of reals within the k-NN radius of at least one fake sample (radii
    from `nearest_neighbour_distances` within each set). Both sets need more than k samples.
    """
    real, fake, k = _check_pair(real, fake, k, fake_min=k + 1)
    real_balls_per_fake, _, real_in_fake_manifold = _ball_statistics(real, fake, k, True)
    return float(np.mean(real_balls_per_fake > 0)), float(np.mean(real_in_fake_manifold))


def density_coverage(real: np.ndarray, fake: np.ndarray, k: int = 5) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020) of `fake` (M, D) against `real` (N, D).

    density: mean over fakes of (number of real k-NN balls containing it) / k, ~1 for
    identical distributions; coverage: fraction of real k-NN balls containing at least one
    fake. Only real radii are used; `real` needs more than k samples.
    """
    real, fake, k = _check_pair(real, fake, k, fake_min=1)
    real_balls_per_fake, real_ball_has_fake, _ = _ball_statistics(real, fake, k, False)
    return float(real_balls_per_fake.mean() / k), float(np.mean(real_ball_has_fake))


@dataclass(frozen=True)
class ManifoldHits:
    """Per-sample values whose means are the four metrics (at one k)."""

    real_balls_per_fake: np.ndarray  # (N_fake,) int: real balls containing each fake; precision = mean(> 0), density = mean / k
    real_ball_has_fake: np.ndarray  # (N_real,) bool: coverage = mean
    real_in_fake_manifold: np.ndarray | None  # (N_real,) bool: recall = mean (None without fake radii)
    k: int


def manifold_hits(real: np.ndarray, fake: np.ndarray, k: int, with_recall: bool = True) -> ManifoldHits:
    """The per-sample values behind precision, recall (`with_recall`; needs more than k fakes),
    density and coverage. Each metric is a mean over one set with the other set held fixed,
    so its interval is a bootstrap over that set's values (fakes for precision and density,
    reals for recall and coverage), free of the bias that duplicated samples cause when the
    set defining the balls is resampled."""
    real, fake, k = _check_pair(real, fake, k, fake_min=k + 1 if with_recall else 1)
    return ManifoldHits(*_ball_statistics(real, fake, k, with_recall), k=k)


def real_balls_per_fake(real: np.ndarray, fake: np.ndarray, k: int) -> np.ndarray:
    """(N_fake,) how many real k-NN balls contain each fake: precision is the mean of `> 0`
    (at k=3), density the mean of `/ k` (at k=5)."""
    return manifold_hits(real, fake, k, with_recall=False).real_balls_per_fake
