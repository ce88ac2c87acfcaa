"""CPU cost of one quality evaluation of 2000 generated images against 2000 real ones.

Both sets are phantoms (different seeds) at 64 px; the feature network is the reference
architecture (simple CNN) with random weights: the cost does not depend on the weights.
Times each part of `ganaug.quality.suite` as train_gan runs it: features, the domain-feature
metrics (FD, kernel distance, precision/recall, density/coverage), SSIM + MS-SSIM on 200 pairs,
label-fidelity predictions, the final-epoch extras (intervals, memorisation audit), and
the SSIM likeness that synthesize and `ganaug quality` compute.

    .venv/bin/python benchmarks/quality_eval_cost.py [--n 2000] [--size 64]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from ganaug.classify.models import SimpleCNN
from ganaug.classify.train import extract_features, predict_proba
from ganaug.data.phantom import generate_phantoms
from ganaug.quality.suite import FeatureSet, feature_metrics, memorisation, pixel_metrics, ssim_likeness


def timed(label: str, fn, results: dict):
    start = time.perf_counter()
    value = fn()
    results[label] = time.perf_counter() - start
    return value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    fractions = {"normal": 0.26, "bacterial": 0.48, "viral": 0.26}
    real = generate_phantoms(args.n, args.size, 0, fractions, 0.1, 0.1).images
    fake = generate_phantoms(args.n, args.size, 1, fractions, 0.1, 0.1).images
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model = SimpleCNN(2).eval()
    extract_features(model, real[:64], cpu)  # warm-up
    t: dict[str, float] = {}
    real_f = timed("features (real, once per data version)", lambda: extract_features(model, real, cpu), t)
    fake_f = timed("features (generated)", lambda: extract_features(model, fake, cpu), t)
    fs = FeatureSet("domain", "bench", real_f, fake_f)
    timed("FD + kernel distance + precision/recall + density/coverage", lambda: feature_metrics(fs), t)
    timed("SSIM + MS-SSIM, 200 pairs", lambda: pixel_metrics(real, fake, seed=0), t)
    timed("label-fidelity predictions", lambda: predict_proba(model, fake, cpu), t)
    per_epoch = sum(v for k, v in t.items() if "once" not in k)
    timed("final epoch: intervals (200 resamples)", lambda: (feature_metrics(fs, with_ci=True), pixel_metrics(real, fake, 0, with_ci=True)), t)
    timed("final epoch: memorisation audit (pixels + features)", lambda: memorisation(fake, real, fake_f, real_f, "bench"), t)
    n_like = min(500, args.n)
    zeros = lambda n: np.zeros(n, np.int64)
    timed(f"SSIM likeness, {n_like} generated vs {args.n} real (synthesize, quality)",
          lambda: ssim_likeness(fake[:n_like], zeros(n_like), real, zeros(args.n)), t)
    print(f"{args.n} generated vs {args.n} real images at {args.size} px; {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads")
    for label, seconds in t.items():
        print(f"  {label:60s} {seconds:7.2f} s")
    print(f"  {'one evaluation epoch (generated features + metrics + fidelity)':60s} {per_epoch:7.2f} s")


if __name__ == "__main__":
    main()
