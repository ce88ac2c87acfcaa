"""Classifiers: the seed papers' simple CNN, and any timm backbone (timm is the registry)."""

from __future__ import annotations

import torch
from torch import nn


class SimpleCNN(nn.Module):
    """Conv blocks (conv, BatchNorm, ReLU, max-pool) x3, then dropout and dense layers,
    as in the DCGAN-augmentation chest X-ray papers; adaptive pooling makes it size-agnostic."""

    def __init__(self, n_classes: int, in_chans: int = 1, width: int = 16, embed_dim: int = 128, dropout: float = 0.5):
        super().__init__()
        blocks: list[nn.Module] = []
        ch = in_chans
        for level in range(3):
            out = width * 2**level
            blocks += [nn.Conv2d(ch, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(True), nn.MaxPool2d(2)]
            ch = out
        self.body = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.embed = nn.Sequential(nn.Dropout(dropout), nn.Linear(ch * 16, embed_dim), nn.ReLU(True))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(embed_dim, n_classes))
        self.embed_dim = embed_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in [-1, 1] -> (N, embed_dim) penultimate features."""
        return self.embed(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class TimmClassifier(nn.Module):
    """A timm backbone with `in_chans=1`, randomly initialised (weights cannot be fetched offline)."""

    def __init__(self, name: str, n_classes: int, in_chans: int = 1):
        super().__init__()
        import timm  # seconds of import that simple_cnn runs (every arm's process) never need

        self.model = timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=n_classes)
        self.embed_dim = self.model.num_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def create_classifier(arch: str, n_classes: int, in_chans: int = 1, key: str = "classifier.arch") -> nn.Module:
    """`simple_cnn`, or any name `timm.list_models()` knows; a wrong name names the key."""
    if arch == "simple_cnn":
        return SimpleCNN(n_classes, in_chans)
    import timm

    if arch not in timm.list_models():
        raise ValueError(f"{key}={arch!r}: expected 'simple_cnn' or a timm model name (e.g. 'resnet18')")
    return TimmClassifier(arch, n_classes, in_chans)


def check_arch(arch: str, key: str) -> None:
    """Validate a classifier name without building it."""
    if arch == "simple_cnn":
        return
    import timm

    if arch not in timm.list_models():
        raise ValueError(f"{key}={arch!r}: expected 'simple_cnn' or a timm model name (e.g. 'resnet18')")
