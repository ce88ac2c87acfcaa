"""The report's figures as PNG bytes, drawn from the files the pipeline wrote: metric vs synthetic
ratio with its interval band (plots/ratio_curve.csv), the GAN's losses and quality per epoch
(plots/gan_losses.csv, plots/gan_quality.csv), image grids (real train split | synthetic per class),
and, when synthesize left no figure, the closest generated/training pairs recomputed in pixels."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ganaug.report.html import figure_png, png_bytes
from ganaug.stats.report import metric_label

GAP = 2  # px between images in a grid
GAN_QUALITY_SHOWN = ("fd_domain", "coverage_domain", "diversity", "label_fidelity_relative")  # panels when present


def ratio_curve_png(curve: pd.DataFrame, metrics: list[str] | None = None) -> bytes:
    """Per metric (3 panels a row), each family's mean over seeds against the synthetic ratio with
    its interval as a band; `balanced` and other single points are drawn as a point with an error bar."""
    metrics = metrics or list(dict.fromkeys(curve["metric"]))
    cols = min(3, len(metrics))
    rows = -(-len(metrics) // cols)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, name in zip(axes, metrics):
        for family, points in curve[curve["metric"] == name].groupby("family", sort=False):
            points = points.sort_values("ratio")
            low, high = points["low"].astype(float), points["high"].astype(float)
            if len(points) > 1:
                line = ax.plot(points["ratio"], points["mean"], marker="o", label=family)[0]
                ax.fill_between(points["ratio"], low, high, alpha=0.2, color=line.get_color())
            else:  # one arm at ratio 0 (the balanced control): its interval as an error bar
                mean = points["mean"].astype(float)
                ax.errorbar(points["ratio"], mean, yerr=[mean - low, high - mean], fmt="s", capsize=4, label=family)
        ax.set_title(metric_label(name))
        ax.set_xlabel("synthetic ratio (x largest real class)")
        ax.grid(alpha=0.3)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    return figure_png(fig)


def gan_curves_png(losses: pd.DataFrame, quality: pd.DataFrame) -> bytes:
    """Left: D and G losses per step (smoothed over ~1/50 of the run); then one panel per quality
    metric of GAN_QUALITY_SHOWN that the evaluations recorded, per epoch."""
    shown = [k for k in GAN_QUALITY_SHOWN if k in quality and quality[k].notna().any()]
    fig = Figure(figsize=(4.2 * (1 + len(shown)), 3.2))
    axes = fig.subplots(1, 1 + len(shown), squeeze=False)[0]
    window = max(1, len(losses) // 50)
    for key in ("loss_d", "loss_g"):
        if key in losses:
            axes[0].plot(losses["step"], losses[key].rolling(window, min_periods=1).mean(), label=key)
    axes[0].set(xlabel="step", ylabel="loss", title="GAN losses (smoothed)")
    axes[0].legend(fontsize="small")
    for ax, key in zip(axes[1:], shown):
        ax.plot(quality["epoch"], quality[key], marker="o")
        ax.set(xlabel="epoch", title=key.replace("_", " "))
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return figure_png(fig)


def image_grid(images: np.ndarray, columns: int) -> np.ndarray:
    """(N, C, H, W) uint8 (C = 1, or 3 shown as RGB) -> one (rows x H, columns x W[, 3]) uint8
    image with white gaps; an empty set gives a single white cell."""
    assert images.ndim == 4 and images.dtype == np.uint8, f"expected (N, C, H, W) uint8, got {images.shape} {images.dtype}"
    n, c, h, w = images.shape
    rows = max(1, -(-n // columns))
    shape = (rows * (h + GAP) - GAP, columns * (w + GAP) - GAP) + ((3,) if c == 3 else ())
    grid = np.full(shape, 255, np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        cell = image[0] if c == 1 else image.transpose(1, 2, 0)
        grid[r * (h + GAP): r * (h + GAP) + h, col * (w + GAP): col * (w + GAP) + w] = cell
    return grid


def sample_rows(images: np.ndarray, labels: np.ndarray, class_index: int, n: int) -> np.ndarray:
    """The first `n` images of one class ((N,) class indices or (N, K) multi-hot labels):
    the first, not a random draw, so the page is the same for the same inputs."""
    mask = labels[:, class_index] == 1 if labels.ndim == 2 else labels == class_index
    return images[mask][:n]


def class_grid_png(images: np.ndarray, columns: int) -> bytes:
    return png_bytes(image_grid(images, columns))


def closest_pairs_png(synthetic: np.ndarray, train: np.ndarray, n_pairs: int = 8, max_synthetic: int = 512) -> bytes:
    """Fallback when synthesize recorded no figure: the `n_pairs` generated images (of the first
    `max_synthetic`) nearest in pixels (L2) to a training image, one row each: generated | training."""
    fake = synthetic[:max_synthetic].reshape(min(len(synthetic), max_synthetic), -1).astype(np.float32)
    real = train.reshape(len(train), -1).astype(np.float32)
    # squared distances (n_fake, n_train) without the (n_fake, n_train, D) difference tensor
    d2 = (fake ** 2).sum(1)[:, None] - 2 * fake @ real.T + (real ** 2).sum(1)[None, :]
    nearest = d2.argmin(1)
    order = np.argsort(d2[np.arange(len(fake)), nearest], kind="stable")[:n_pairs]
    pairs = np.stack([np.concatenate([synthetic[i], train[nearest[i]]], axis=2) for i in order])  # (P, C, H, 2W)
    return png_bytes(image_grid(pairs, 1))
