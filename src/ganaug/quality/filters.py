"""Filters that keep or drop synthetic images by a per-image score, and the sampling loop that
draws until each class has its count.

    ssim_likeness          the highest SSIM of the image to any training image of its class
                           (the HealthGAN paper's "likeness"); kept when >= threshold. Keeping
                           images that closely resemble a training image selects near-copies:
                           synthesize audits the kept set against the unfiltered draws, so the
                           memorisation this filter causes is always reported.
    reference_confidence   the reference classifier's probability of the intended class; kept
                           when >= threshold (drops samples that do not look like their class).

Scores compare with the TRAIN split only; the test split never reaches a filter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ganaug.classify.train import predict_proba
from ganaug.progress import progress
from ganaug.quality.suite import ssim_likeness_values

# (images (N, 1, H, W) uint8, intended class) -> (N,) scores; higher = more likely kept
Scorer = Callable[[np.ndarray, int], np.ndarray]


class FilterError(ValueError):
    """A filter kept too few images; the message names the params keys to change."""


def ssim_likeness_scorer(train_images: np.ndarray, train_labels: np.ndarray) -> Scorer:
    """Max SSIM of each image to the training images of its intended class."""

    def score(images: np.ndarray, class_index: int) -> np.ndarray:
        return ssim_likeness_values(images, np.full(len(images), class_index), train_images, train_labels)

    return score


def reference_confidence_scorer(reference: torch.nn.Module, device: torch.device) -> Scorer:
    """The reference classifier's probability of the intended class."""

    def score(images: np.ndarray, class_index: int) -> np.ndarray:
        return predict_proba(reference, images, device)[:, class_index]

    return score


@dataclass
class FilteredDraw:
    """Every candidate drawn and which were kept, for the manifest and the before/after audit."""

    drawn_images: np.ndarray  # (N_drawn, C, H, W) uint8: every candidate, class by class in request order
    drawn_labels: np.ndarray  # (N_drawn,)
    drawn_scores: np.ndarray  # (N_drawn,) float64
    drawn_kept: np.ndarray  # (N_drawn,) bool: which candidates were kept

    @property
    def images(self) -> np.ndarray:
        """(N_kept, C, H, W) uint8: the kept candidates, in draw order."""
        return self.drawn_images[self.drawn_kept]

    @property
    def labels(self) -> np.ndarray:
        """(N_kept,) int64."""
        return self.drawn_labels[self.drawn_kept]

    def statistics(self, class_names: list[str]) -> dict[str, dict[str, float]]:
        """Per class: drawn, kept, acceptance rate, score quantiles of drawn and kept candidates."""
        out = {}
        for c in np.unique(self.drawn_labels):
            mine = self.drawn_labels == c
            scores, kept = self.drawn_scores[mine], self.drawn_kept[mine]
            quantiles = lambda x: {q: float(np.quantile(x, p)) for q, p in (("p10", 0.1), ("median", 0.5), ("p90", 0.9))} if len(x) else {}
            out[class_names[c]] = {
                "drawn": int(mine.sum()), "kept": int(kept.sum()), "acceptance": float(kept.mean()),
                "score_drawn": quantiles(scores), "score_kept": quantiles(scores[kept]),
            }
        return out


def draw_filtered(
    # (class, start, n) -> (n, C, H, W) uint8: candidates [start, start + n) of the class's seeded stream
    sample: Callable[[int, int, int], np.ndarray],
    counts: dict[int, int],  # images to keep per class
    score: Scorer,  # per-image score; kept when >= threshold
    threshold: float,  # keep threshold
    max_draws: float,  # give up after drawing this many candidates per image requested
    filter_name: str = "filter",  # for messages
) -> FilteredDraw:
    """Draw candidates in rounds, each continuing the class's stream, until each class has
    `counts[c]` kept images; the kept images are the first passing candidates of the stream, so
    those kept for a smaller count are a prefix of those kept for a larger one. Raises FilterError
    when `max_draws` x the count is drawn without enough passing."""
    drawn, drawn_labels, drawn_scores, drawn_kept = [], [], [], []
    bar = progress(total=sum(counts.values()), desc=f"filter {filter_name}: kept", unit="img")
    for c, wanted in counts.items():
        if wanted == 0:
            continue
        budget = int(np.ceil(max_draws * wanted))
        n_kept, n_drawn = 0, 0
        while n_kept < wanted:
            if n_drawn >= budget:
                raise FilterError(
                    f"synthesize.filter={filter_name!r}: only {n_kept} of {wanted} images of class {c} reached "
                    f"synthesize.filter_threshold={threshold} after {n_drawn} draws (acceptance "
                    f"{n_kept / max(n_drawn, 1):.3f}); lower the threshold or raise synthesize.max_draws={max_draws}"
                )
            acceptance = max(n_kept / n_drawn if n_drawn else 1.0, 1.0 / max_draws)
            n = int(min(budget - n_drawn, max(64, np.ceil((wanted - n_kept) / acceptance))))
            candidates = sample(c, n_drawn, n)
            scores = np.asarray(score(candidates, c), dtype=np.float64)
            passing = scores >= threshold
            take = passing & (np.cumsum(passing) <= wanted - n_kept)  # the first that pass, up to the count
            drawn.append(candidates), drawn_labels.append(np.full(n, c, np.int64))
            drawn_scores.append(scores), drawn_kept.append(take)
            n_kept += int(take.sum())
            n_drawn += n
            bar.update(int(take.sum()))
            bar.set_postfix(cls=c, drawn=n_drawn, acceptance=f"{n_kept / n_drawn:.3f}", refresh=False)
    bar.close()
    return FilteredDraw(np.concatenate(drawn), np.concatenate(drawn_labels), np.concatenate(drawn_scores),
                        np.concatenate(drawn_kept))
