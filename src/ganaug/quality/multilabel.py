"""Quality of a conditional GAN trained on multi-hot finding vectors, per finding, without a
reference classifier.

The single-label evaluation (train_gan's `QualityEvaluator`) reads the reference classifier:
its penultimate features (fd_domain, kd/precision/recall/coverage_domain, diversity_domain,
memorisation_domain) and its argmax as the label-fidelity oracle. The reference is a softmax
classifier over class indices, and train_reference refuses multi-label data, so on such data
these metrics are SKIPPED, and the reason is recorded (`SKIPPED_REASON`, in the run and the
generator file). What needs no classifier is measured, per finding k (generated images whose
vector has k against real train images with k):

- ssim_real_fake_<k>, ms_ssim_real_fake_<k>: unpaired SSIM / MS-SSIM, as `quality.suite.pixel_metrics`;
- diversity_pixel_<k>: spread of the samples over the spread of the real images with k
  (`quality.diversity`); `diversity` / `diversity_pixel` without suffix is the LOWEST finding
  (one collapsed finding is a collapse), so gan.min_diversity stops a collapsed run as usual;
- ssim_real_fake, ms_ssim_real_fake: the mean over the findings;
- at the final evaluation, the pixel memorisation audit against the whole train split
  (memorisation_pixel_copy_rate, …; `final_report` keeps the closest pairs).

The evaluation samples carry label vectors drawn from the train split's combinations
(`ganaug.gan.conditioning.draw_combinations`, a fixed seed), topped up so every finding has at
least `MIN_PER_FINDING` samples; the noise is fixed too, so epochs stay comparable.
"""

from __future__ import annotations

import numpy as np
import torch

from ganaug.data.leakage import duplicate_groups
from ganaug.gan.conditioning import check_multi_hot, draw_combinations, fill_findings
from ganaug.gan.train import to_uint8
from ganaug.quality.diversity import DIVERSITY_KEY, diversity_ratio, image_rows
from ganaug.quality.memorisation import MemorisationReport, audit_pixels
from ganaug.quality.suite import pixel_metrics
from ganaug.tracking.mlflow_utils import metric_key

SKIPPED_REASON = ("reference-classifier metrics (fd_domain, kd/precision/recall/coverage_domain, diversity_domain, "
                  "label_fidelity, memorisation_domain, Inception metrics) skipped: the data set is multi-label and the "
                  "reference classifier (train_reference) takes class indices only; pixel metrics are measured per finding")
MIN_PER_FINDING = 8  # evaluation samples of each finding at least (diversity needs 2; SSIM pairs want more)


def evaluation_vectors(train_labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """(M, K) uint8 label vectors for evaluation samples: n drawn from the train combinations,
    plus vectors of the train rows with a finding until each finding has MIN_PER_FINDING."""
    drawn = draw_combinations(train_labels, n, seed)
    top_up = fill_findings(train_labels, MIN_PER_FINDING, seed + 1, present=drawn)
    return np.concatenate([drawn, top_up])


class MultiLabelQualityEvaluator:
    """`(epoch, G) -> metrics` for `gan.train.training_loop`'s `evaluate` on multi-hot data."""

    def __init__(self, train_images: np.ndarray, train_labels: np.ndarray, finding_names: list[str], n_eval: int,
                 device: torch.device, final_epoch: int, seed: int):
        self.train_labels = check_multi_hot(train_labels)  # (N, K)
        assert len(train_images) == len(self.train_labels), f"{len(train_images)} images, {len(self.train_labels)} labels"
        self.train_images, self.finding_names, self.device = train_images, finding_names, device
        self.final_epoch, self.seed = final_epoch, seed
        self.vectors = evaluation_vectors(self.train_labels, n_eval, seed)  # (M, K), fixed for every epoch
        self.real_images = {k: train_images[self.train_labels[:, k] == 1] for k in range(len(finding_names))}
        self.final_report: MemorisationReport | None = None
        self.final_fake: np.ndarray | None = None

    def sample(self, generator: torch.nn.Module) -> np.ndarray:
        """Evaluation samples (M, C, H, W) uint8 for `self.vectors`, from fixed noise."""
        z = torch.randn(len(self.vectors), generator.latent_dim, generator=torch.Generator().manual_seed(self.seed))
        y = torch.from_numpy(self.vectors).float()
        images = [to_uint8(generator(z[i : i + 256].to(self.device), y[i : i + 256].to(self.device))).cpu().numpy()
                  for i in range(0, len(z), 256)]
        return np.concatenate(images)

    def __call__(self, epoch: int, generator: torch.nn.Module) -> dict[str, float]:
        final = epoch == self.final_epoch
        fake = self.sample(generator)
        out: dict[str, float] = {}
        pixels, diversity = [], []
        for k, name in enumerate(map(metric_key, self.finding_names)):
            mine, real = fake[self.vectors[:, k] == 1], self.real_images[k]
            if len(real) < 2:  # no spread to compare with: not a collapse signal
                continue
            pixels.append(pixel_metrics(real, mine, seed=epoch, with_ci=final))
            out |= {f"{key}_{name}": v for key, v in pixels[-1].items()}
            diversity.append(diversity_ratio(image_rows(mine), image_rows(real)))
            out[f"diversity_pixel_{name}"] = diversity[-1]
        if diversity:  # over the findings: SSIMs averaged, diversity the lowest (as over classes for single labels)
            out |= {key: float(np.mean([p[key] for p in pixels])) for key in ("ssim_real_fake", "ms_ssim_real_fake")}
            out["diversity_pixel"] = out[DIVERSITY_KEY] = min(diversity)
        if final:
            copies = duplicate_groups(self.train_images)
            self.final_report = audit_pixels(fake, self.train_images, training_groups=copies)
            self.final_fake = fake
            out |= {f"memorisation_pixel_{k}": v for k, v in self.final_report.summary().items()
                    if k in ("copy_rate", "threshold", "nn_ratio_median")}
        return out
