"""Source `phantom`: the embedded procedural chest radiographs (offline, deterministic)."""

from __future__ import annotations

import numpy as np

from ganaug.config import DataConfig
from ganaug.data import phantom as generator
from ganaug.data.preprocess import preprocess_stack, preprocessing_record
from ganaug.data.source_images import SourceImages, require_classes

MULTILABEL_FINDINGS = ("consolidation", "interstitial", "cardiomegaly", "effusion")


def read_phantom(cfg: DataConfig) -> SourceImages:
    """Phantoms rendered at data.image_size, labelled per data.phantom.label_mode; split by `prepare`."""
    pcfg = cfg.phantom
    generated = generator.generate_phantoms(
        n=pcfg.n_images,
        size=cfg.image_size,
        seed=cfg.seed,
        class_fractions=pcfg.class_fractions,
        cardiomegaly_rate=pcfg.cardiomegaly_rate,
        effusion_rate=pcfg.effusion_rate,
        severity_range=tuple(pcfg.severity_range),
        progress=True,
    )
    if pcfg.label_mode == "binary":
        class_names = ["normal", "pneumonia"]
        labels = (generated.finding > 0).astype(np.int64)
    elif pcfg.label_mode == "three_class":
        class_names = list(generator.FINDINGS)
        labels = generated.finding.astype(np.int64)
    else:  # multilabel: consolidation (bacterial), interstitial (viral), cardiomegaly, effusion
        class_names = list(MULTILABEL_FINDINGS)
        onehot = np.eye(len(generator.FINDINGS), dtype=np.uint8)[generated.finding][:, 1:]
        labels = np.concatenate([onehot, generated.extras.astype(np.uint8)], axis=1)
    require_classes(labels, class_names, f"data.phantom (label_mode={pcfg.label_mode}, class_fractions={pcfg.class_fractions})")
    images = preprocess_stack(generated.images[:, 0], cfg.image_size, cfg.preprocess)
    source = {
        "name": "phantom",
        "generator": "ganaug.data.phantom",
        "seed": cfg.seed,
        "n_images": pcfg.n_images,
        "class_fractions": pcfg.class_fractions,
        "cardiomegaly_rate": pcfg.cardiomegaly_rate,
        "effusion_rate": pcfg.effusion_rate,
        "severity_range": pcfg.severity_range,
        "label_mode": pcfg.label_mode,
    }
    preprocessing = {
        **preprocessing_record(cfg.preprocess, cfg.image_size, [generated.images.shape[2:]]),
        "rendered_at": cfg.image_size,
    }
    item_ids = [f"phantom[{i}]" for i in range(len(images))]
    return SourceImages(images, labels, class_names, item_ids, source, preprocessing)
