"""Time ganaug.stats.compare.compare_arms at the default arms' scale: 7 arms x 3 seeds, a test split
of 624 images (PneumoniaMNIST's size, 234 normal / 390 pneumonia), 5 metrics, evaluate.n_bootstrap
resamples (default 2000). Random probabilities: the cost does not depend on the models' quality.

    .venv/bin/python benchmarks/compare_arms_time.py [n_bootstrap]
"""

from __future__ import annotations

import sys
import time

import numpy as np

from ganaug.stats.compare import compare_arms
from ganaug.stats.metrics import compared_metrics

ARMS = ["real", "balanced", "classic", "synthetic-0.5", "synthetic-1.0", "classic_synthetic-0.5", "classic_synthetic-1.0"]

if __name__ == "__main__":
    n_bootstrap = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], [234, 390])
    arms = {arm: {f"seed{s}": rng.dirichlet([1, 1], size=len(labels)) for s in range(3)} for arm in ARMS}
    start = time.perf_counter()
    result = compare_arms(labels, arms, ["real", "balanced"], compared_metrics(0, ["normal", "pneumonia"]), n_bootstrap=n_bootstrap)
    print(f"compare_arms: {len(ARMS)} arms x 3 seeds, {len(labels)} test images, {n_bootstrap} resamples, "
          f"{len(result['comparisons'])} comparisons: {time.perf_counter() - start:.1f} s")
