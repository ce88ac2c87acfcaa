"""Cross-stage checks of what the data allows, run before any training."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ganaug.config import GANConfig

if TYPE_CHECKING:  # the generator module imports torch: not at the CLI's import time
    from ganaug.gan.generator import TrainedGenerator


class StageInputError(ValueError):
    """A stage's inputs do not fit its params; the message names both."""


def require_single_label(meta: dict[str, Any], stage: str) -> None:
    if meta["label_kind"] != "class_index":
        raise StageInputError(
            f"{stage} needs single-label data (class indices), but the prepared data set "
            f"(source {meta['source'].get('name')!r}) is multi-label {meta['class_names']}; "
            "use data.phantom.label_mode=binary or three_class"
        )


def require_gan_labels(meta: dict[str, Any], gan: GANConfig) -> None:
    """train_gan on multi-label data (multi-hot finding vectors) needs gan.mode=conditional: the
    GAN then conditions on the vectors. gan.mode=minority trains on "the smallest class", which
    multi-label data does not have (findings overlap; an image can carry several or none)."""
    if meta["label_kind"] != "class_index" and gan.mode != "conditional":
        raise StageInputError(
            f"gan.mode={gan.mode} needs single-label data (it trains on the smallest class), but the prepared data set "
            f"(source {meta['source'].get('name')!r}) is multi-label {meta['class_names']}: findings overlap and an image "
            "can carry several, so there is no smallest class; use gan.mode=conditional (the GAN conditions on the "
            "multi-hot finding vectors), or single-label data (e.g. data.phantom.label_mode=binary)"
        )


def require_classes_to_condition_on(meta: dict[str, Any], gan: GANConfig) -> None:
    """A class-conditional GAN (gan.mode=conditional: cgan, acgan, or dcgan with labels) learns
    p(image | class): with one class there is nothing to condition on, and an AC-GAN's class
    loss is 0 from the first step. Checked from meta.json, before the images are loaded."""
    names = meta["class_names"]
    if gan.mode == "conditional" and len(names) < 2:
        raise StageInputError(
            f"gan.arch={gan.arch} with gan.mode=conditional needs at least 2 classes, but the prepared data set "
            f"(source {meta['source'].get('name')!r}) has {len(names)}: {names}; "
            "use gan.arch=dcgan with gan.mode=minority, or prepare a data set with more classes"
        )


def require_translation_classes(meta: dict[str, Any], gan: GANConfig) -> tuple[int, int]:
    """gan.arch=cyclegan: (source, target) class indices of the prepared data set, from meta.json,
    before the images are loaded; a missing or repeated class names its gan.cyclegan key."""
    from ganaug.gan.cyclegan import translation_classes

    names = meta["class_names"]
    try:
        return translation_classes(names, [meta["counts"]["train"]["per_class"][n] for n in names], gan)
    except ValueError as exc:
        raise StageInputError(f"{exc} (source {meta['source'].get('name')!r})") from None


def require_compatible_generator(generator: TrainedGenerator, meta: dict[str, Any], source: str) -> None:
    """A generator (`source` names it: a file or a registry version) must have been trained on
    this prepared data: same data set hash, image shape (channels, resolution) and class names.
    Every mismatch is named in one message, before anything is sampled or written."""
    channels, height, _ = meta["image_shape"]
    problems = []
    if generator.info.get("dataset_hash") != meta["dataset_hash"]:
        problems.append(f"data set hash {str(generator.info.get('dataset_hash'))[:12]} vs {meta['dataset_hash'][:12]}")
    if (generator.channels, generator.resolution) != (channels, height):
        problems.append(f"images {generator.channels} x {generator.resolution} px vs {channels} x {height} px")
    if list(generator.class_names) != list(meta["class_names"]):
        problems.append(f"classes {generator.class_names} vs {meta['class_names']}")
    if problems:
        raise StageInputError(
            f"{source} does not fit the prepared data (data/prepared, source {meta['source'].get('name')!r}): "
            f"{'; '.join(problems)} (generator vs data). Expected a generator trained on this data: rerun train_gan, "
            "or point synthesize.generator at such a version (null = the pipeline's own)")
