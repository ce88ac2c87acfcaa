"""The augmentation arms of issue 9: what each arm trains on, as a plain Python API.

An arm id is what `ganaug.config.arm_names` lists (and what names the DVC stage and the folder
models/arms/<id>): `real`, `balanced`, `classic`, `<family>-<ratio>` for the mixed families
`synthetic` and `classic_synthetic`, and `synthetic_only`.

synthetic_ratio r = synthetic images of a class / real train images of the LARGEST class. The
synthesize stage writes one seeded pool with round(synthesize.pool_ratio x largest) images per
class it generates, in a fixed order per class; the arm at ratio r takes, per class, the FIRST
round(r x largest) of them, so the synthetic images of a smaller ratio are a subset (a per-class
prefix) of those of a larger one. synthetic_only takes, per class, as many as the real train split
has of that class.

Multi-label sets (labels (N, K) multi-hot findings): there is no largest class, so there
synthetic_ratio r = synthetic images / real train images (the whole set). The synthesize stage
writes one pool of round(pool_ratio x real train images) images whose label vectors are drawn
i.i.d. from the train split's label combinations (gan.conditioning.draw_combinations: the
synthetic set keeps the real co-occurrence of findings); the arm at ratio r takes the FIRST
round(r x real train images) of the pool (a prefix: smaller ratios are subsets), synthetic_only
the first (real train images) of it. `balanced` is refused: findings overlap, there are no
classes to balance.

No torch here: the stage and an Optuna mixing study both call these functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ganaug.config import ArmsConfig, arm_names

PREDICTIONS_FILE = "test_predictions.npz"  # labels (N,) int64 and seed<k> (N, K) test probabilities per seed
ARM_METRICS_FILE = "metrics.json"  # per-seed test metrics, training counts and MLflow run ids of one arm

REAL_FAMILIES = ("real", "balanced", "classic")
MIXED_FAMILIES = ("synthetic", "classic_synthetic")
SYNTHETIC_ONLY = "synthetic_only"


@dataclass(frozen=True)
class Arm:
    id: str  # as in models/arms/<id> and the DVC stage: real, balanced, classic, synthetic-0.5, synthetic_only…
    family: str  # real | balanced | classic | synthetic | classic_synthetic | synthetic_only
    ratio: float | None  # synthetic_ratio of a mixed arm; None for the others
    uses_synthetic: bool  # trains on images of the synthetic pool (depends on data/synthetic)
    classic: bool  # classic augmentation (arms.classic) on every training image, on the fly
    balanced: bool  # classes balanced by arms.balance

    @property
    def dvc_stage(self) -> str:
        """The dvc.yaml stage that runs this arm (`arm_real@real`, `arm_mixed@synthetic-0.5`, …)."""
        group = "arm_real" if self.family in REAL_FAMILIES else "arm_mixed" if self.ratio is not None else "arm_synthetic"
        return f"{group}@{self.id}"


def parse_arm(arm_id: str, arms_cfg: ArmsConfig) -> Arm:
    """The arm `arm_id` names; a ValueError naming `--arm` and the valid ids when these params
    (arms.real, arms.mixed x arms.ratios, arms.synthetic) do not define it."""
    valid = arm_names(arms_cfg)
    if arm_id not in valid:
        raise ValueError(f"--arm {arm_id!r} is not an arm of these params; expected one of: {', '.join(valid)} "
                         "(arms.real, arms.mixed x arms.ratios, arms.synthetic)")
    if arm_id in REAL_FAMILIES:
        return Arm(arm_id, arm_id, None, False, classic=arm_id == "classic", balanced=arm_id == "balanced")
    if arm_id == SYNTHETIC_ONLY:
        return Arm(arm_id, SYNTHETIC_ONLY, None, True, classic=False, balanced=False)
    family, _, ratio = arm_id.rpartition("-")
    return Arm(arm_id, family, float(ratio), True, classic=family == "classic_synthetic", balanced=False)


def train_options(arm: Arm, arms_cfg: ArmsConfig) -> dict[str, Any]:
    """What the arm changes in the classifier's training call: `balance` ("none", or arms.balance
    for the balanced arm) and `augment_config` (arms.classic for the classic arms, else None)."""
    return {"balance": arms_cfg.balance if arm.balanced else "none",
            "augment_config": arms_cfg.classic if arm.classic else None}


def _counts(labels: np.ndarray, n_classes: int) -> list[int]:
    return np.bincount(labels, minlength=n_classes).tolist()


def mixing_counts(real_counts: Sequence[int], pool_counts: dict[int, int], ratio: float) -> dict[int, int]:
    """Synthetic images per pool class at synthetic_ratio `ratio`: round(ratio x the largest real
    class) each. Raises when the pool holds fewer (synthesize.pool_ratio below the ratio)."""
    largest = max(real_counts)
    wanted = int(round(ratio * largest))
    if wanted < 1:
        raise ValueError(f"arms.ratios: ratio {ratio} x {largest} real images of the largest class rounds to 0 "
                         "synthetic images; use a larger ratio")
    short = {c: n for c, n in pool_counts.items() if n < wanted}
    if short:
        raise ValueError(f"the synthetic pool holds {short} images of classes {sorted(short)}, fewer than the {wanted} "
                         f"(ratio {ratio} x {largest}) the arm needs: raise synthesize.pool_ratio to at least {ratio} "
                         "and rerun synthesize")
    return {int(c): wanted for c in sorted(pool_counts)}


def synthetic_only_counts(real_counts: Sequence[int], pool_counts: dict[int, int]) -> dict[int, int]:
    """Synthetic images per class for synthetic_only: as many as the real train split has of the
    class (same size and balance). Raises when the pool lacks a class or is too small."""
    missing = [c for c, n in enumerate(real_counts) if n > 0 and c not in pool_counts]
    if missing:
        raise ValueError(f"synthetic_only needs synthetic images of every class, but the pool has none of classes "
                         f"{missing} (gan.mode=conditional makes every class)")
    short = {c: pool_counts[c] for c, n in enumerate(real_counts) if n > 0 and pool_counts[c] < n}
    if short:
        raise ValueError(f"the synthetic pool holds {short} images of classes {sorted(short)}, fewer than the real train "
                         f"split ({list(real_counts)}): raise synthesize.pool_ratio to at least 1 and rerun synthesize")
    return {c: int(n) for c, n in enumerate(real_counts) if n > 0}


def pool_prefix(pool_labels: np.ndarray, counts: dict[int, int]) -> np.ndarray:
    """Indices into the pool of the first counts[c] images of each class c (pool order), class by class."""
    picked = [np.flatnonzero(pool_labels == c)[:n] for c, n in sorted(counts.items())]
    for (c, n), idx in zip(sorted(counts.items()), picked):
        assert len(idx) == n, f"pool has {len(idx)} images of class {c}, {n} requested"
    return np.concatenate(picked) if picked else np.zeros(0, np.int64)


def arm_synthetic_counts(arm: Arm, real_counts: Sequence[int], pool_counts: dict[int, int]) -> dict[int, int]:
    """Synthetic images per class the arm trains on ({} for the real-only arms)."""
    if not arm.uses_synthetic:
        return {}
    if arm.ratio is None:
        return synthetic_only_counts(real_counts, pool_counts)
    return mixing_counts(real_counts, pool_counts, arm.ratio)


def multilabel_synthetic_count(arm: Arm, n_real: int, n_pool: int) -> int:
    """Synthetic images a multi-label arm takes from the front of the pool: round(ratio x n_real)
    for a mixed arm, n_real for synthetic_only; raises when the pool is smaller."""
    wanted = n_real if arm.ratio is None else int(round(arm.ratio * n_real))
    if wanted < 1:
        raise ValueError(f"arms.ratios: ratio {arm.ratio} x {n_real} real train images rounds to 0 synthetic images")
    if n_pool < wanted:
        raise ValueError(f"the synthetic pool holds {n_pool} images, fewer than the {wanted} arm {arm.id} needs: raise "
                         f"synthesize.pool_ratio to at least {arm.ratio or 1.0} and rerun synthesize")
    return wanted


def _finding_counts(labels: np.ndarray) -> dict[int, int]:
    """{finding index: images carrying it} of multi-hot labels (N, K)."""
    return dict(enumerate(np.asarray(labels).sum(axis=0, dtype=np.int64).tolist()))


def multilabel_training_set(arm: Arm, real_images: np.ndarray, real_labels: np.ndarray, pool_images: np.ndarray | None,
                            pool_labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """arm_training_set for multi-hot labels (N, K) (module docstring: r is relative to the whole
    real train set; the pool's first images). train_counts count the images carrying each finding."""
    if arm.balanced:
        raise ValueError("arms.real: the balanced arm balances classes, but this data set is multi-label (findings "
                         "overlap, an image can carry several or none): remove 'balanced' from arms.real and "
                         "evaluate.references")
    if not arm.uses_synthetic:
        return real_images, real_labels, {"train_counts": {"real": _finding_counts(real_labels), "synthetic": {}},
                                          "synthetic_indices": np.zeros(0, np.int64),
                                          "n_images": {"real": len(real_images), "synthetic": 0}}
    if pool_images is None or pool_labels is None:
        raise ValueError(f"arm {arm.id} trains on synthetic images, but no synthetic pool was given (run synthesize)")
    if pool_labels.ndim != 2 or pool_labels.shape[1] != real_labels.shape[1] or pool_images.shape[1:] != real_images.shape[1:]:
        raise ValueError(f"synthetic pool images {pool_images.shape} / labels {pool_labels.shape} do not match the real "
                         f"multi-label train split {real_images.shape} / {real_labels.shape}: rerun synthesize on this data")
    indices = np.arange(multilabel_synthetic_count(arm, len(real_images), len(pool_images)))
    synthetic_labels = pool_labels[indices].astype(real_labels.dtype)
    if arm.ratio is None:  # synthetic_only
        images, labels, n_real = pool_images[indices], synthetic_labels, 0
        real_counts = {k: 0 for k in range(real_labels.shape[1])}
    else:
        images = np.concatenate([real_images, pool_images[indices]])
        labels = np.concatenate([real_labels, synthetic_labels])
        n_real, real_counts = len(real_images), _finding_counts(real_labels)
    return images, labels, {"train_counts": {"real": real_counts, "synthetic": _finding_counts(synthetic_labels)},
                            "synthetic_indices": indices, "n_images": {"real": n_real, "synthetic": len(indices)}}


def arm_training_set(arm: Arm, real_images: np.ndarray, real_labels: np.ndarray, pool_images: np.ndarray | None,
                     pool_labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The images the arm trains on (before classic augmentation, which happens on the fly):
    real (N, C, H, W) uint8 for real/balanced/classic; real then the pool's per-class prefixes
    for the mixed arms; the prefixes alone for synthetic_only. info: `train_counts` {"real":
    {class index: n}, "synthetic": {class index: n}} and `synthetic_indices` (into the pool).
    Multi-hot labels (N, K): multilabel_training_set."""
    if real_labels.ndim == 2:
        return multilabel_training_set(arm, real_images, real_labels, pool_images, pool_labels)
    n_classes = int(max(real_labels.max(initial=-1), -1 if pool_labels is None else pool_labels.max(initial=-1))) + 1
    real_counts = _counts(real_labels, n_classes)
    if not arm.uses_synthetic:
        info = {"train_counts": {"real": dict(enumerate(real_counts)), "synthetic": {}},
                "synthetic_indices": np.zeros(0, np.int64)}
        return real_images, real_labels, info
    if pool_images is None or pool_labels is None:
        raise ValueError(f"arm {arm.id} trains on synthetic images, but no synthetic pool was given (run synthesize)")
    if pool_images.shape[1:] != real_images.shape[1:]:
        raise ValueError(f"synthetic images {pool_images.shape[1:]} do not match real {real_images.shape[1:]}: "
                         "rerun synthesize on this data")
    pool_counts = {int(c): int(n) for c, n in enumerate(_counts(pool_labels, n_classes)) if n > 0}
    indices = pool_prefix(pool_labels, arm_synthetic_counts(arm, real_counts, pool_counts))
    synthetic_counts = dict(enumerate(_counts(pool_labels[indices], n_classes)))
    if arm.ratio is None:  # synthetic_only
        images, labels = pool_images[indices], pool_labels[indices]
        used_real = {c: 0 for c in range(n_classes)}
    else:
        images = np.concatenate([real_images, pool_images[indices]])
        labels = np.concatenate([real_labels, pool_labels[indices]])
        used_real = dict(enumerate(real_counts))
    return images, labels, {"train_counts": {"real": used_real, "synthetic": synthetic_counts},
                            "synthetic_indices": indices}

