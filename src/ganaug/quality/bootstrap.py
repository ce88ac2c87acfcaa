"""Confidence intervals for set-level quality statistics.

Two resampling schemes, each for the statistics it is valid for:

- `bootstrap_ci`: percentile bootstrap, redrawing samples *with replacement*. Right for a
  mean of per-sample values (precision and density are means over generated samples; recall
  and coverage means over real samples; SSIM a mean over random pairs). Wrong for statistics
  built on spread or neighbours of the whole set (Fréchet distance, kernel distance): a
  duplicated sample changes them, so their replicates are biased and the interval can miss the
  observed value (that is reported with a warning, not corrected).
- `half_sample_ci`: subsampling *without replacement* at half size (m = n/2, both sets). For a
  statistic that behaves like a smooth function of means, the spread of half-sample values
  around their own mean equals the sampling spread of the full-sample statistic (the
  finite-population correction 1/m - 1/n = 1/n exactly offsets the smaller size), and
  centring on the half-sample mean removes the extra small-sample bias of FD at n/2. The
  interval is the observed value plus the centred half-sample quantiles. It describes the
  sampling variability at this sample size; FD's own positive finite-sample bias (it shrinks
  like 1/n) is not removed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ganaug.progress import progress


@dataclass(frozen=True)
class ConfidenceInterval:
    """Observed value of a statistic and its bootstrap percentile interval."""

    value: float  # statistic on the observed (unresampled) real and fake sets
    low: float  # (1 - ci) / 2 quantile of the bootstrap replicates
    high: float  # (1 + ci) / 2 quantile of the bootstrap replicates
    n_bootstrap: int  # replicates the interval comes from
    ci: float  # coverage level, e.g. 0.95

    def as_dict(self, prefix: str) -> dict[str, float]:
        """{prefix: value, prefix_ci_low: low, prefix_ci_high: high}, for MLflow `log_metrics`."""
        return {prefix: self.value, f"{prefix}_ci_low": self.low, f"{prefix}_ci_high": self.high}


def bootstrap_ci(
    statistic: Callable[[np.ndarray, np.ndarray], float],  # (real, fake) -> scalar
    real: np.ndarray,  # (N_real, ...) samples along axis 0 (features or images)
    fake: np.ndarray,  # (N_fake, ...) samples along axis 0
    n_bootstrap: int = 200,  # replicates
    ci: float = 0.95,  # coverage of the percentile interval
    seed: int = 0,  # seeds the resampling; same seed, same interval
    resample_real: bool = False,  # also redraw the real set (its sampling noise too)
) -> ConfidenceInterval:
    """Percentile bootstrap interval of `statistic(real, fake)` under resampling of the fake set.

    `value` is `statistic(real, fake)` on the sets as given. The fake (and, with
    `resample_real`, real) draws come from separate child generators of `seed`, so the fake
    draws are the same whether or not the real set is resampled. A replicate that is NaN or
    inf raises FloatingPointError.
    """
    real, fake = np.asarray(real), np.asarray(fake)
    if real.ndim < 1 or len(real) == 0:
        raise ValueError(f"real must hold samples along axis 0; got shape {real.shape}")
    if fake.ndim < 1 or len(fake) == 0:
        raise ValueError(f"fake must hold samples along axis 0; got shape {fake.shape}")
    if n_bootstrap < 2:
        raise ValueError(f"n_bootstrap must be >= 2 for an interval; got {n_bootstrap}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), e.g. 0.95; got {ci}")

    value = float(statistic(real, fake))
    if not np.isfinite(value):
        raise FloatingPointError(f"statistic is {value} on the observed sets")

    fake_seed, real_seed = np.random.SeedSequence(seed).spawn(2)
    fake_rng, real_rng = np.random.default_rng(fake_seed), np.random.default_rng(real_seed)
    replicates = np.empty(n_bootstrap, dtype=np.float64)
    for replicate in range(n_bootstrap):
        fake_draw = fake[fake_rng.integers(0, len(fake), size=len(fake))]
        real_draw = real[real_rng.integers(0, len(real), size=len(real))] if resample_real else real
        replicates[replicate] = statistic(real_draw, fake_draw)
        if not np.isfinite(replicates[replicate]):
            raise FloatingPointError(
                f"statistic is {replicates[replicate]} on bootstrap replicate {replicate} "
                f"(seed {seed}); the observed value was {value}"
            )

    alpha = (1.0 - ci) / 2.0
    low, high = np.quantile(replicates, [alpha, 1.0 - alpha])
    if not low <= value <= high:
        warnings.warn(
            f"bootstrap: the observed value {value:.6g} lies outside its {ci:.0%} interval "
            f"[{low:.6g}, {high:.6g}]; the statistic is biased under resampling with "
            "replacement (duplicated samples), so read the interval as a spread, not a CI",
            RuntimeWarning,
            stacklevel=2,
        )
    return ConfidenceInterval(
        value=value, low=float(low), high=float(high), n_bootstrap=n_bootstrap, ci=float(ci)
    )


def half_sample_ci(
    statistic: Callable[[np.ndarray, np.ndarray], float],  # (real, fake) -> scalar
    real: np.ndarray,  # (N_real, ...) samples along axis 0
    fake: np.ndarray,  # (N_fake, ...) samples along axis 0
    n_replicates: int = 100,  # half-sample replicates
    ci: float = 0.95,  # coverage of the interval
    seed: int = 0,  # seeds the subsampling; same seed, same interval
    value: float | None = None,  # statistic(real, fake) when already computed
) -> ConfidenceInterval:
    """Interval for a set-to-set statistic (FD, kernel distance) from half-size subsamples.

    Each replicate draws N_real // 2 real and N_fake // 2 fake samples without replacement
    and recomputes the statistic; the interval is `value + quantiles(replicates - mean)`.
    Both sets need at least 4 samples (2 per half).
    """
    real, fake = np.asarray(real), np.asarray(fake)
    for name, x in (("real", real), ("fake", fake)):
        if x.ndim < 1 or len(x) < 4:
            raise ValueError(f"half-sampling needs at least 4 {name} samples along axis 0; got shape {x.shape}")
    if n_replicates < 2:
        raise ValueError(f"n_replicates must be >= 2 for an interval; got {n_replicates}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), e.g. 0.95; got {ci}")
    value = float(statistic(real, fake)) if value is None else float(value)
    if not np.isfinite(value):
        raise FloatingPointError(f"statistic is {value} on the observed sets")
    rng = np.random.default_rng(seed)
    half_real, half_fake = len(real) // 2, len(fake) // 2
    replicates = np.empty(n_replicates, dtype=np.float64)
    for replicate in progress(range(n_replicates), desc="half-sample interval", unit="replicate"):
        real_half = real[rng.permutation(len(real))[:half_real]]
        fake_half = fake[rng.permutation(len(fake))[:half_fake]]
        replicates[replicate] = statistic(real_half, fake_half)
        if not np.isfinite(replicates[replicate]):
            raise FloatingPointError(f"statistic is {replicates[replicate]} on half-sample {replicate} (seed {seed})")
    alpha = (1.0 - ci) / 2.0
    low, high = value + np.quantile(replicates - replicates.mean(), [alpha, 1.0 - alpha])
    return ConfidenceInterval(value=value, low=float(low), high=float(high), n_bootstrap=n_replicates, ci=float(ci))
