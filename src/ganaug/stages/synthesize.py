"""Stage `synthesize`: sample per-class counts from a generator (train_gan's, or the registry
version that resolve_generator pinned for `synthesize.generator`), optionally filter
them (`synthesize.filter`), and write the synthetic set (packed) with a manifest: generator,
seed, counts, filter statistics, memorisation audit and SSIM likeness of the written set (and
of the unfiltered candidates when a filter ran). A pure function of (generator file, seed,
counts, filter).

A translator (gan.arch=cyclegan) makes its pool from real *train* images of its source class
instead of noise (`translate_pool`): the manifest's `provenance` says which train image each
synthetic image was translated from, and `translation` how much the set changed from them.

Quality gate first: a generator whose final evaluation is below `synthesize.min_*`
(`ganaug.quality.gate`) stops the stage before anything is sampled or written, unless
`synthesize.override_gate` is true; the manifest records the decision either way."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ganaug.classify.train import extract_features  # noqa: E402
from ganaug.config import Params, SynthesizeConfig, flatten  # noqa: E402
from ganaug.data.packed import Split, load_packed, read_meta  # noqa: E402
from ganaug.data.synthetic import MANIFEST_FILE, SYNTHETIC_FILE  # noqa: E402
from ganaug.gan import cyclegan  # noqa: E402
from ganaug.gan.conditioning import draw_combinations  # noqa: E402
from ganaug.gan.generator import TrainedGenerator  # noqa: E402
from ganaug.io import atomic_dir, write_json  # noqa: E402
from ganaug.quality.memorisation import closest_pairs_grid  # noqa: E402
from ganaug.quality.gate import GateDecision, check_gate  # noqa: E402
from ganaug.quality.filters import FilteredDraw, Scorer, draw_filtered, reference_confidence_scorer, ssim_likeness_scorer  # noqa: E402
from ganaug.quality.suite import likeness_summary, memorisation, ssim_likeness_values  # noqa: E402
from ganaug.quality.translation import change_metrics  # noqa: E402
from ganaug.stages import paths  # noqa: E402
from ganaug.stages.checks import require_compatible_generator  # noqa: E402
from ganaug.stages.train_reference import REAL_FEATURES_FILE, load_reference  # noqa: E402
from ganaug.tracking import generator_source, mlflow_utils, runs  # noqa: E402
from ganaug.tracking.mlflow_utils import metric_key  # noqa: E402


def synthetic_counts(train_counts: list[int], trained_classes: list[int], pool_ratio: float) -> dict[int, int]:
    """The pool: `pool_ratio` x the largest real class for each class the generator can produce."""
    return {c: max(1, int(round(pool_ratio * max(train_counts)))) for c in trained_classes}


def requested_counts(generator: TrainedGenerator, train_counts: list[int], cfg: SynthesizeConfig) -> dict[int, int]:
    return synthetic_counts(train_counts, generator.trained_classes, cfg.pool_ratio)


def synthesize(generator: TrainedGenerator, train_counts: list[int], cfg: SynthesizeConfig) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    """The pool, class by class in class-index order, each class the first counts[c] images of its
    own seeded stream (`TrainedGenerator.sample_stream`): a larger pool_ratio appends to each class,
    it never changes the images a smaller one made, so every arm's prefix stays the same."""
    counts = requested_counts(generator, train_counts, cfg)
    images = [generator.sample_stream(c, 0, n, cfg.seed, cfg.batch_size) for c, n in sorted(counts.items())]
    labels = [np.full(n, c, np.int64) for c, n in sorted(counts.items())]
    return np.concatenate(images), np.concatenate(labels), counts


def translate_pool(generator: TrainedGenerator, train: Split, train_counts: list[int],
                   cfg: SynthesizeConfig) -> tuple[np.ndarray, np.ndarray, dict[int, int], np.ndarray]:
    """A translator's pool: as many images of its target class as `synthetic_counts` asks, each
    the translation of a source-class train image taken in a seeded order (`cyclegan.source_indices`,
    repeated when the pool is larger than the class). Returns (images, labels, counts, sources)
    with sources (N,) the train-split positions of the source images: a pure function of
    (generator file, train split, seed, counts), and a smaller pool is a prefix of a larger one."""
    source, (target,) = generator.info["source_class"], generator.trained_classes
    counts = synthetic_counts(train_counts, [target], cfg.pool_ratio)
    positions = np.flatnonzero(train.labels == source)  # the source class in train-split order
    sources = positions[cyclegan.source_indices(len(positions), counts[target], cfg.seed)]
    images = cyclegan.translate(generator.network, train.images[sources], cfg.batch_size)
    return images, np.full(len(images), target, np.int64), counts, sources


def synthesize_multilabel(generator: TrainedGenerator, train_labels: np.ndarray,
                          cfg: SynthesizeConfig) -> tuple[np.ndarray, np.ndarray]:
    """The multi-label pool: round(pool_ratio x real train images) label vectors drawn i.i.d. from
    the train split's label combinations (`draw_combinations`: the real co-occurrence of findings,
    a prefix-stable draw), one image each -> (images (M, C, H, W) uint8, vectors (M, K) uint8).
    The arms take the pool's first images (experiments.arms). Chosen over filling each finding up
    to a target (`fill_findings`, the NIH study's way): a draw from the train distribution has one
    ratio to state and keeps the class prior the test split has; filling rare findings changes it."""
    n = max(1, int(round(cfg.pool_ratio * len(train_labels))))
    vectors = draw_combinations(train_labels, n, cfg.seed)
    return generator.sample(vectors, cfg.seed, cfg.batch_size)


def require_multilabel_options(cfg: SynthesizeConfig, generator: TrainedGenerator, meta: dict) -> None:
    """A multi-hot generator on this multi-label data, and no filter (both filters score an image
    against its one intended class)."""
    if not generator.multilabel or meta["label_kind"] != "multi_hot":
        raise ValueError(f"the generator has label_kind={generator.label_kind!r} but {paths.PREPARED} holds "
                         f"{meta['label_kind']!r} labels: rerun train_gan on this data")
    if cfg.filter != "none":
        raise ValueError(f"synthesize.filter={cfg.filter} scores an image against its one intended class; this data set is "
                         "multi-label (finding vectors): expected synthesize.filter: none")


def filter_scorer(cfg: SynthesizeConfig, train: Split, reference: torch.nn.Module, device: torch.device) -> Scorer:
    if cfg.filter == "ssim_likeness":
        return ssim_likeness_scorer(train.images, train.labels)
    return reference_confidence_scorer(reference, device)


def synthesize_filtered(generator: TrainedGenerator, train_counts: list[int], cfg: SynthesizeConfig, scorer: Scorer) -> FilteredDraw:
    """`synthesize` with a filter: draws candidates from each class's seeded stream until the class
    has its count of images scoring >= synthesize.filter_threshold (the first passing ones, so the
    per-class prefixes stay stable as pool_ratio grows)."""
    counts = dict(sorted(requested_counts(generator, train_counts, cfg).items()))
    sample = lambda c, start, n: generator.sample_stream(c, start, n, cfg.seed, cfg.batch_size)
    return draw_filtered(sample, counts, scorer, cfg.filter_threshold, cfg.max_draws, cfg.filter)


def resolved_source(cfg: SynthesizeConfig) -> dict[str, str]:
    """The generator resolve_generator pinned for synthesize.generator ({"source": "pipeline"} for null)."""
    if cfg.generator is None:
        return generator_source.PIPELINE
    record = json.loads(paths.RESOLVED_GENERATOR.read_text()) if paths.RESOLVED_GENERATOR.is_file() else None
    if record is None or record.get("uri") != cfg.generator:
        found = "is missing" if record is None else f"pins {generator_source.describe(record)}"
        raise ValueError(f"synthesize.generator={cfg.generator!r}, but {paths.RESOLVED_GENERATOR} {found}: run "
                         "`bin/ganaug resolve-generator` first (dvc repro runs it before synthesize)")
    return record


def load_generator(source: dict[str, str], meta: dict, workdir: Path) -> tuple[TrainedGenerator, Path, str]:
    """(generator, its file, what to call it in messages): train_gan's models/gan/generator.pt, or the
    pinned registry version's weights downloaded into `workdir`; checked against the prepared data."""
    if source.get("source") == "registry":
        generator_file = generator_source.fetch(source, workdir)
        label = f"synthesize.generator={generator_source.describe(source)}"
    else:
        generator_file = paths.GAN / "generator.pt"
        label = str(generator_file)
    generator = TrainedGenerator.load(generator_file)  # weights_only=True: nothing in the file runs
    require_compatible_generator(generator, meta, label)
    return generator, generator_file, label


def main(params: Params) -> None:
    cfg = params.synthesize
    meta = read_meta(paths.PREPARED)
    source = resolved_source(cfg)
    with tempfile.TemporaryDirectory(prefix="registry-generator-") as workdir:
        generator, generator_file, label = load_generator(source, meta, Path(workdir))
        generator = generator.with_truncation(cfg.truncation_psi)
        generator_sha256 = generator_source.sha256_of(generator_file)
    look_at = (f"the samples and metrics of its train_gan run {source['run_id']} in MLflow" if source.get("source") == "registry"
               else "models/gan/samples.png and metrics/gan.json")
    gate = check_gate(generator, label, cfg, look_at)  # before any sampling or writing
    train_counts = [meta["counts"]["train"]["per_class"][name] for name in meta["class_names"]]
    dataset = load_packed(paths.PREPARED)  # the test split is never read below
    train = dataset.train
    cpu = torch.device("cpu")
    reference, extractor = load_reference(paths.REFERENCE, cpu)
    draw = None
    sources = None
    multilabel = meta.get("label_kind", "class_index") == "multi_hot"
    if multilabel:
        require_multilabel_options(cfg, generator, meta)
        images, labels = synthesize_multilabel(generator, train.labels, cfg)
        counts = dict(enumerate(labels.sum(axis=0, dtype=np.int64).tolist()))  # images carrying each finding
    elif generator.translator:  # config refuses a filter with gan.arch=cyclegan
        images, labels, counts, sources = translate_pool(generator, train, train_counts, cfg)
    elif cfg.filter == "none":
        images, labels, counts = synthesize(generator, train_counts, cfg)
    else:
        draw = synthesize_filtered(generator, train_counts, cfg, filter_scorer(cfg, train, reference, cpu))
        images, labels = draw.images, draw.labels
        counts = {int(c): int((labels == c).sum()) for c in np.unique(labels)}

    # memorisation audit and SSIM likeness of the written set against the train split (never the
    # test split); with a filter, of the unfiltered candidates too: the difference is what the
    # filter caused. Kept images are drawn candidates, so their features and likeness are subsets.
    # multi-label: against every train image (an image's findings are not a class to compare within)
    in_classes = np.ones(len(train.images), bool) if multilabel else np.isin(train.labels, list(counts))
    train_images, train_features = train.images[in_classes], np.load(paths.REFERENCE / REAL_FEATURES_FILE)[in_classes]
    candidates, candidate_labels = (images, labels) if draw is None else (draw.drawn_images, draw.drawn_labels)
    candidate_features = extract_features(reference, candidates, cpu)
    if multilabel:
        candidate_likeness = ssim_likeness_values(candidates, np.zeros(len(candidates)), train.images, np.zeros(len(train.images)))
    else:
        candidate_likeness = (draw.drawn_scores if cfg.filter == "ssim_likeness"  # the filter's own score
                              else ssim_likeness_values(candidates, candidate_labels, train.images, train.labels))
    kept = np.ones(len(candidates), bool) if draw is None else draw.drawn_kept
    audit, report = memorisation(images, train_images, candidate_features[kept], train_features, extractor)
    likeness = likeness_summary(candidate_likeness[kept])
    unfiltered = {}
    if draw is not None:
        drawn_audit, _ = memorisation(candidates, train_images, candidate_features, train_features, extractor)
        unfiltered = {f"unfiltered_{k}": v for k, v in drawn_audit.items()}
        unfiltered |= {f"unfiltered_{k}": v for k, v in likeness_summary(candidate_likeness).items()}
    registry = source.get("source") == "registry"
    manifest = {
        "generator_file": f"models:/{source['name']}/{source['version']}" if registry else str(generator_file),
        "generator_sha256": generator_sha256,
        "generator_mlflow_run_id": generator.info.get("mlflow_run_id"),
        # synthesize.generator as resolved: pipeline, or registry with the exact name, version, run id and file hash
        "generator_source": dict(source),
        "dataset_hash": meta["dataset_hash"],
        "seed": cfg.seed,
        "truncation_psi": cfg.truncation_psi,  # < 1: samples pulled towards their class's mean w (StyleGAN2)
        "pool_ratio": cfg.pool_ratio,
        "counts": {meta["class_names"][c]: n for c, n in counts.items()},
        # the pool the arms draw from: per class, in this order, the first images of the class's stream;
        # an arm at synthetic_ratio r takes the first round(r x largest_real_class) of each class
        "pool": ({"ratio": cfg.pool_ratio, "n_real_train": len(train.images), "n_images": len(images),
                  "per_finding": {meta["class_names"][c]: n for c, n in sorted(counts.items())},
                  "order": "label vectors drawn i.i.d. from the train split's combinations (draw_combinations, "
                           "synthesize.seed); an arm at synthetic_ratio r takes the first round(r x n_real_train)"}
                 if multilabel else
                 {"ratio": cfg.pool_ratio, "largest_real_class": max(train_counts),
                  "per_class": {meta["class_names"][c]: n for c, n in sorted(counts.items())},
                  "order": "class index, then position in the class's seeded stream (TrainedGenerator.sample_stream)"}),
        "real_train_counts": dict(zip(meta["class_names"], train_counts)),
        "image_shape": list(images.shape[1:]),
        "filter": None if draw is None else {
            "name": cfg.filter, "threshold": cfg.filter_threshold, "max_draws": cfg.max_draws,
            "per_class": draw.statistics(meta["class_names"]),
        },
        "memorisation": audit,
        "ssim_likeness": likeness,
        "unfiltered_candidates": unfiltered or None,
        "quality_gate": gate.record(overridden=not gate.passed),
    }
    translation = {}
    if sources is not None:  # which real train image each synthetic image was translated from, and how far it moved
        translation = change_metrics(train.images[sources], images)
        source_name = meta["class_names"][generator.info["source_class"]]
        manifest["pool"]["order"] = ("translations of source-class train images in a seeded order "
                                     "(ganaug.gan.cyclegan.source_indices), repeated when the pool is larger than the class")
        manifest["provenance"] = {"kind": "translation", "split": "train", "source_class": source_name,
                                  "target_class": meta["class_names"][generator.trained_classes[0]],
                                  "source_train_index": [int(i) for i in sources]}  # row i <- train split image sources[i]
        manifest["translation"] = translation
    mlflow_utils.setup()
    key = runs.input_key(synthesize=flatten(cfg, "synthesize"), data=meta["dataset_hash"], generator=manifest["generator_sha256"])
    name = mlflow_utils.unique_run_name("synthesize", {"synthesize": flatten(cfg), "generator": manifest["generator_sha256"]})
    registry_tags = {"synthetic.generator_uri": source["uri"], "synthetic.generator_version": source["version"]} if registry else {}
    with runs.start_run("synthesize", key, run_name=name, tags=mlflow_utils.lineage_tags("synthesize", meta, **{
            "synthetic.generator_run_id": str(generator.info.get("mlflow_run_id")), **registry_tags})):
        mlflow.log_params(flatten(cfg, "synthesize") | {f"synthetic.n_{metric_key(k)}": v for k, v in manifest["counts"].items()}
                          | {"synthetic.quality_gate": "passed" if gate.passed else "overridden"})
        mlflow.log_metrics(audit | likeness | unfiltered | translation)
        if draw is not None:
            mlflow.log_metrics({f"filter_acceptance_{metric_key(c)}": s["acceptance"] for c, s in manifest["filter"]["per_class"].items()})
        with atomic_dir(paths.SYNTHETIC) as tmp:
            np.savez(tmp / SYNTHETIC_FILE, images=images, labels=labels)
            write_json(tmp / MANIFEST_FILE, manifest)
            plt.imsave(tmp / "memorisation_closest_pairs.png", closest_pairs_grid(report, images, train_images),
                       cmap="gray", vmin=0, vmax=255)
        mlflow.log_artifact(str(paths.SYNTHETIC / MANIFEST_FILE))
        mlflow.log_artifact(str(paths.SYNTHETIC / "memorisation_closest_pairs.png"))
    print(f"wrote {len(images)} synthetic images {manifest['counts']} to {paths.SYNTHETIC}; "
          f"copy rate {audit['memorisation_pixel_copy_rate']:.3f} (pixels), {audit['memorisation_domain_copy_rate']:.3f} (features); "
          f"SSIM likeness median {likeness['ssim_likeness_median']:.3f}")
    if draw is not None:
        print(f"filter {cfg.filter} >= {cfg.filter_threshold}: kept {len(images)} of {len(draw.drawn_images)} candidates; "
              f"copy rate (pixels) {unfiltered['unfiltered_memorisation_pixel_copy_rate']:.3f} unfiltered -> "
              f"{audit['memorisation_pixel_copy_rate']:.3f} kept")
