"""The report page (`reports/index.html`): one self-contained HTML file for the person who asked
"did the synthetic images help?", built only from files the pipeline wrote.

Sections: the question and the answer (verdicts on the primary metric in words, the arms table), metric
vs synthetic ratio with its band, the differences with their intervals and verdicts (the tables of
reports/comparison.md), real (train split) and synthetic images per class side by side, the closest generated /
training pairs of the memorisation audit, the GAN's losses and quality, the quality gate, the data
(source, counts, patients, leakage) and the lineage (commit, data hash, generator version, runs).
The test split's images never enter the page: only the train split's arrays are read."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from ganaug.report import figures
from ganaug.report.html import Safe, figure, img, key_values, page, png_bytes, section, table, tag
from ganaug.stats.report import arms_table, differences_table, metric_label, per_finding_table, unconfirmed_gains

QUESTION = ("Does adding GAN-generated images to the real training images give a better classifier "
            "on the untouched real test split?")
SAMPLES_PER_CLASS = 16  # images per class and side in the sample grids (2 rows of 8)
GRID_COLUMNS = 8
GAN_FINAL_SHOWN = ("fd_domain", "kd_domain", "precision_domain", "recall_domain", "coverage_domain", "diversity",
                   "label_fidelity", "label_fidelity_relative", "ssim_real_fake", "fid_inception",
                   "memorisation_pixel_copy_rate", "memorisation_domain_copy_rate", "epochs", "steps")


@dataclass(frozen=True)
class ReportInputs:
    """Everything the page shows, as read from the pipeline's outputs (read_inputs)."""
    evaluation: dict[str, Any]  # reports/evaluation.json (stats.compare.compare_arms + evaluate's additions)
    meta: dict[str, Any]  # data/prepared/meta.json
    train_images: np.ndarray  # (N, C, H, W) uint8: the real *train* split only
    train_labels: np.ndarray  # (N,) class indices or (N, K) multi-hot
    synthetic_images: np.ndarray | None = None  # (M, C, H, W) uint8, data/synthetic/synthetic.npz
    synthetic_labels: np.ndarray | None = None  # (M,)
    manifest: dict[str, Any] | None = None  # data/synthetic/manifest.json
    ratio_curve: pd.DataFrame | None = None  # plots/ratio_curve.csv
    gan_losses: pd.DataFrame | None = None  # plots/gan_losses.csv
    gan_quality: pd.DataFrame | None = None  # plots/gan_quality.csv
    gan_final: dict[str, Any] | None = None  # models/gan/quality.json (the final evaluation)
    closest_pairs: bytes | None = None  # data/synthetic/memorisation_closest_pairs.png (synthesize's audit)
    gan_closest_pairs: bytes | None = None  # models/gan/memorisation_closest_pairs.png (train_gan's final evaluation)
    lineage: dict[str, str] = field(default_factory=dict)  # resolved by the stage: commit, runs, generator version


def _json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _csv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() and path.stat().st_size else None


def _bytes(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def read_inputs(prepared: Path, synthetic: Path, gan: Path, reports: Path, plots: Path,
                lineage: dict[str, str] | None = None) -> ReportInputs:
    """Read the pipeline's outputs; evaluation.json and the prepared data are required (the error
    names the file and the stage that writes it), the rest is shown when present."""
    for path, stage in ((reports / "evaluation.json", "evaluate"), (prepared / "meta.json", "prepare"),
                        (prepared / "dataset.npz", "prepare")):
        if not path.is_file():
            raise FileNotFoundError(f"{str(path)!r} not found: run the {stage} stage first (dvc repro)")
    with np.load(prepared / "dataset.npz") as npz:  # an npz reads only the arrays asked for: never test_*
        train_images, train_labels = npz["train_images"], npz["train_labels"]
    synthetic_images = synthetic_labels = None
    if (synthetic / "synthetic.npz").is_file():
        with np.load(synthetic / "synthetic.npz") as npz:
            synthetic_images, synthetic_labels = npz["images"], npz["labels"]
    return ReportInputs(
        evaluation=json.loads((reports / "evaluation.json").read_text()), meta=json.loads((prepared / "meta.json").read_text()),
        train_images=train_images, train_labels=train_labels, synthetic_images=synthetic_images,
        synthetic_labels=synthetic_labels, manifest=_json(synthetic / "manifest.json"),
        ratio_curve=_csv(plots / "ratio_curve.csv"), gan_losses=_csv(plots / "gan_losses.csv"),
        gan_quality=_csv(plots / "gan_quality.csv"), gan_final=_json(gan / "quality.json"),
        closest_pairs=_bytes(synthetic / "memorisation_closest_pairs.png"),
        gan_closest_pairs=_bytes(gan / "memorisation_closest_pairs.png"), lineage=dict(lineage or {}))


def _num(x: Any, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "n/a"
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return str(x)
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def uses_synthetic(evaluation: dict[str, Any], arm: str) -> bool:
    """Whether an arm trained on synthetic images (families synthetic, classic_synthetic, synthetic_only)."""
    family = (evaluation.get("families") or {}).get(arm, {}).get("family", arm)
    return "synthetic" in family


def primary_comparisons(evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    """The comparisons that answer the question: each arm with synthetic images against each
    reference, on the primary metric (the first compared, balanced accuracy)."""
    primary = evaluation["metrics"][0]
    return [c for c in evaluation["comparisons"] if c["metric"] == primary and uses_synthetic(evaluation, c["arm"])]


def answer(evaluation: dict[str, Any]) -> tuple[str, list[str]]:
    """(headline, one line per comparison) in plain words; a verdict is `helped` / `hurt` only
    when the multiplicity-corrected interval excludes 0 (stats.compare.verdict)."""
    primary = metric_label(evaluation["metrics"][0])
    comparisons = primary_comparisons(evaluation)
    level = f"{evaluation['ci_level']:.0%}"
    lines = [f"{c['arm']} vs {c['reference']}: {primary} {_num(c['difference'], True)} "
             f"({level} interval [{_num(c['low'], True)}, {_num(c['high'], True)}], corrected "
             f"{c['corrected_level']:.2%} interval [{_num(c['corrected_low'], True)}, {_num(c['corrected_high'], True)}]): "
             f"{c['verdict']}" for c in comparisons]
    exposed = {arm: missed for (arm, metric), missed in unconfirmed_gains(evaluation).items()
               if metric == evaluation["metrics"][0]}  # helped against one reference, not against another
    helped = sorted({f"{c['arm']} (vs {c['reference']})" for c in comparisons
                     if c["verdict"] == "helped" and c["arm"] not in exposed})
    hurt = sorted({f"{c['arm']} (vs {c['reference']})" for c in comparisons if c["verdict"] == "hurt"})
    not_shown = "; ".join(f"{arm} did not beat {', '.join(missed)}" for arm, missed in sorted(exposed.items())
                          if uses_synthetic(evaluation, arm))
    if not comparisons:
        return "Not answered: no arm trained with synthetic images was evaluated (arms.mixed / arms.synthetic are empty).", lines
    if all(c["verdict"] == "not computed" for c in comparisons):
        return f"Not answered: the differences in {primary} could not be computed.", lines
    if helped:
        head = f"Yes, for {', '.join(helped)}: the corrected interval of the {primary} difference lies above 0."
        return head + (f" But it hurt for {', '.join(hurt)}." if hurt else "") + (f" Not shown: {not_shown}." if not_shown else ""), lines
    if not_shown:
        return (f"Not shown: arms with synthetic images beat a reference, but {not_shown}: their gain is not shown to "
                f"exceed what those references give without synthetic images (corrected intervals in {primary})."
                + (f" It hurt for {', '.join(hurt)}." if hurt else "")), lines
    if hurt:
        return f"No: synthetic images hurt {primary} for {', '.join(hurt)} (corrected interval below 0).", lines
    return (f"No clear difference: no arm with synthetic images differs from {', '.join(evaluation['references'])} "
            f"in {primary} beyond its corrected interval (each interval includes 0).", lines)


def _verdict_cell(verdict: str) -> Safe:
    return tag("span", verdict, class_=verdict if verdict in ("helped", "hurt") else None)


def _frame_table(frame: pd.DataFrame, verdict_column: str | None = None) -> Safe:
    rows = [[_verdict_cell(v) if col == verdict_column else v for col, v in row.items()] for _, row in frame.iterrows()]
    return table(list(frame.columns), rows)


def question_section(inputs: ReportInputs) -> Safe:
    """The question, the answer in words, one line per comparison, the gate override and caveats,
    and the arms table (each arm's mean and interval)."""
    evaluation = inputs.evaluation
    headline, lines = answer(evaluation)
    gate = evaluation.get("quality_gate") or {}
    warnings = []
    if gate.get("overridden"):
        warnings.append(tag("p", "Read with care: " + str(gate.get("summary", "quality gate overridden")), class_="warning"))
    warnings += [tag("p", "Caveat: " + note, class_="warning") for note in evaluation.get("caveats", [])]
    return section("answer-section", "The question and the answer",
                   tag("p", tag("strong", "Question: "), QUESTION),
                   tag("div", tag("strong", "Answer: "), headline, class_="answer", id="answer"),
                   tag("ul", [tag("li", line) for line in lines]), *warnings,
                   tag("h3", f"Arms on the real test split ({evaluation['n_test']} images)"),
                   tag("p", f"Mean over seeds with its {evaluation['ci_level']:.0%} interval ({evaluation['interval']})."),
                   _frame_table(arms_table(evaluation)))


def differences_section(inputs: ReportInputs) -> Safe:
    """Every comparison per reference (the tables of reports/comparison.md), verdicts marked."""
    evaluation = inputs.evaluation
    parts: list[Any] = []
    for reference in evaluation["references"]:
        frame = differences_table(evaluation, reference)
        if not frame.empty:
            parts += [tag("h3", f"Against {reference} (arm - {reference})"), _frame_table(frame, "verdict")]
    if evaluation.get("per_finding"):  # multi-label data: AUROC / AP of each finding per arm
        parts += [tag("h3", "Per finding (test split, mean over seeds): AUROC / average precision"),
                  _frame_table(per_finding_table(evaluation["per_finding"]))]
    parts.append(tag("p", "Verdict: helped / hurt only when the corrected interval excludes 0. " + evaluation["correction"]
                     + ". Paired tests: " + evaluation["paired_test"] + ". Collapse: " + evaluation["collapse_rule"] + "."))
    return section("differences", "Differences with intervals and verdicts", *parts)


def ratio_section(inputs: ReportInputs) -> Safe:
    curve = inputs.ratio_curve
    if curve is None or curve.empty:
        body: Any = tag("p", "No mixed arms (arms.mixed is empty): there is no ratio axis to draw.")
    else:
        metrics = [m for m in inputs.evaluation["metrics"] if m in set(curve["metric"])]
        body = figure(figures.ratio_curve_png(curve, metrics),
                      "Test metrics against the synthetic ratio (synthetic images per class as a multiple of the largest "
                      "real class); points: mean over seeds, band / error bar: the per-arm "
                      f"{inputs.evaluation['ci_level']:.0%} interval. Ratio 0 is the arm the family adds synthetic "
                      "images to (real or classic); balanced is the class-balanced control.", "ratio-curve")
    return section("ratio", "Metric vs mixing ratio", body)


def _grid_cell(images: np.ndarray, figure_id: str, alt: str) -> Safe:
    grid = figures.image_grid(images, GRID_COLUMNS)
    scale = max(1, 64 // images.shape[2])  # small images shown at >= 64 px, sharp
    return img(png_bytes(grid), alt, figure_id, pixelated=True, width=grid.shape[1] * scale)


def samples_section(inputs: ReportInputs) -> Safe:
    names = inputs.meta["class_names"]
    rows = []
    for c, name in enumerate(names):
        real = figures.sample_rows(inputs.train_images, inputs.train_labels, c, SAMPLES_PER_CLASS)
        cells = [name, _grid_cell(real, f"real-{name}", f"real train images of {name}") if len(real)
                 else "no train images of this class"]
        synthetic = (figures.sample_rows(inputs.synthetic_images, inputs.synthetic_labels, c, SAMPLES_PER_CLASS)
                     if inputs.synthetic_images is not None else np.empty((0,)))
        cells.append(_grid_cell(synthetic, f"synthetic-{name}", f"synthetic images of {name}") if len(synthetic)
                     else "none (the generator does not make this class)" if inputs.synthetic_images is not None
                     else "no synthetic set (data/synthetic)")
        rows.append(cells)
    note = (f"The first {SAMPLES_PER_CLASS} images of each class: real ones from the train split (the test split never "
            "enters this page), synthetic ones from data/synthetic in the order the arms take them.")
    return section("samples", "Real and synthetic images per class", tag("p", note),
                   table(["class", "real (train split)", "synthetic"], rows, class_="samples"))


def _pairs_figure(png: bytes, caption: str, figure_id: str, image_height: int) -> Safe:
    """A closest-pairs grid (one row per pair), shown at least 64 px per image, sharp."""
    width = Image.open(io.BytesIO(png)).size[0]
    return figure(png, caption, figure_id, pixelated=True, width=width * max(1, 64 // image_height))


def memorisation_section(inputs: ReportInputs) -> Safe:
    parts: list[Any] = []
    audit = (inputs.manifest or {}).get("memorisation") or {}
    if audit:
        parts.append(key_values({k.removeprefix("memorisation_").replace("_", " "): _num(v) for k, v in audit.items()}))
    caption = ("The generated images nearest to a training image, one row per pair: generated | training, closest "
               "first ({}). A row whose two halves look the same is a copy.")
    height = inputs.train_images.shape[2]
    pairs: list[Any] = []
    if inputs.closest_pairs is not None:
        pairs.append(_pairs_figure(inputs.closest_pairs, caption.format("synthesize's audit of the synthetic set the arms used"),
                                   "closest-pairs", height))
    elif inputs.synthetic_images is not None and len(inputs.synthetic_images):
        png = figures.closest_pairs_png(inputs.synthetic_images, inputs.train_images)
        pairs.append(_pairs_figure(png, caption.format("recomputed here in pixels (L2): synthesize recorded no figure"),
                                   "closest-pairs", height))
    if inputs.gan_closest_pairs is not None:
        pairs.append(_pairs_figure(inputs.gan_closest_pairs, caption.format("train_gan's final evaluation samples"),
                                   "gan-closest-pairs", height))
    if pairs:
        parts.append(tag("div", *pairs, class_="row"))
    if not parts:
        parts.append(tag("p", "No memorisation audit was recorded (no data/synthetic and no models/gan)."))
    return section("memorisation", "Memorisation audit: closest generated / training pairs", *parts)


def gan_section(inputs: ReportInputs) -> Safe:
    parts: list[Any] = []
    if inputs.gan_losses is not None and inputs.gan_quality is not None:
        parts.append(figure(figures.gan_curves_png(inputs.gan_losses, inputs.gan_quality),
                            "GAN training: discriminator and generator losses per step, and the quality of a fixed set of "
                            "samples at each evaluation (Fréchet distance and coverage in the reference classifier's "
                            "features, diversity, relative label fidelity).", "gan-curves"))
    else:
        parts.append(tag("p", "No GAN curves (plots/gan_losses.csv, plots/gan_quality.csv) were found."))
    if inputs.gan_final:
        shown = {k: _num(inputs.gan_final[k]) for k in GAN_FINAL_SHOWN if k in inputs.gan_final}
        for key in list(shown):
            low, high = inputs.gan_final.get(f"{key}_ci_low"), inputs.gan_final.get(f"{key}_ci_high")
            if low is not None and high is not None:
                shown[key] += f" [{_num(low)}, {_num(high)}]"
        parts += [tag("h3", "Final evaluation (models/gan/quality.json)"), key_values(shown)]
    return section("gan", "The GAN's training: losses and quality", *parts)


def gate_section(inputs: ReportInputs) -> Safe:
    gate = inputs.evaluation.get("quality_gate") or {}
    if not gate.get("values"):
        return section("gate", "Quality gate", tag("p", gate.get("summary", "quality gate: not recorded")))
    decision = ("overridden (synthesize.override_gate=true)" if gate.get("overridden")
                else "passed" if gate.get("passed") else "failed")
    rows = [[metric, _num(value), _num(gate["levels"].get(metric)) if gate["levels"].get(metric) else "not checked"]
            for metric, value in gate["values"].items()]
    return section("gate", "Quality gate", tag("p", tag("strong", "Decision: "), decision),
                   table(["metric (final evaluation)", "value", "minimum level"], rows),
                   tag("p", gate.get("summary", "")))


def data_section(inputs: ReportInputs) -> Safe:
    meta = inputs.meta
    names = meta["class_names"]
    source = {k: (v if isinstance(v, (str, int, float, bool)) else json.dumps(v)) for k, v in meta["source"].items()}
    with_patients = any("patients" in counts for counts in meta["counts"].values())
    rows = [[split, counts["total"], *[counts["per_class"].get(n, 0) for n in names],
             *([counts.get("patients", "n/a")] if with_patients else [])] for split, counts in meta["counts"].items()]
    parts: list[Any] = [tag("h3", "Source"), key_values(source), tag("h3", "Images per split and class"),
                        table(["split", "images", *names, *(["patients"] if with_patients else [])], rows)]
    leakage = meta.get("leakage")
    if leakage:
        counts = leakage["counts"]
        leak_rows = [[pair, counts["exact_duplicates"].get(pair, 0), counts["near_duplicates"].get(pair, 0)]
                     for pair in counts["exact_duplicates"]]
        dropped = ", ".join(f"{s} {n}" for s, n in (leakage.get("dropped") or {}).items())
        parts += [tag("h3", "Leakage between splits"),
                  tag("p", f"patients in two splits: {counts['patients_in_two_splits']}; action: "
                           f"data.on_leakage={leakage['action']}; images dropped per split: {dropped or 'none'}"),
                  table(["splits", "exact duplicates", "near duplicates"], leak_rows)]
    duplicates = meta.get("duplicates_within_split")
    if duplicates:
        dup_rows = [[split, c["exact_pairs"], c["near_pairs"], c["images_with_a_copy"], c["label_conflicts"],
                     (duplicates.get("removed") or {}).get(split, 0)] for split, c in duplicates["counts"].items()]
        parts += [tag("h3", "Duplicates inside a split"), tag("p", f"action: data.dedup_within_split={duplicates['action']}"),
                  table(["split", "exact pairs", "near pairs", "images with a copy", "label conflicts", "removed"], dup_rows)]
    parts.append(tag("p", "Every pair and patient is listed in reports/leakage/ (pairs.csv, patients.csv, summary.json)."))
    if meta.get("warnings"):
        parts.append(tag("ul", [tag("li", w, class_="warning") for w in meta["warnings"]]))
    return section("data", "The data", *parts)


def lineage_section(inputs: ReportInputs) -> Safe:
    meta, manifest = inputs.meta, inputs.manifest or {}
    rows = {**inputs.lineage, "dataset hash (data/prepared)": meta["dataset_hash"],
            **{f"{split} split hash": h for split, h in meta.get("content_hash", {}).items()}}
    if manifest:
        rows |= {"generator file": manifest.get("generator_file"), "generator sha256": manifest.get("generator_sha256"),
                 "generator MLflow run": manifest.get("generator_mlflow_run_id"),
                 "synthetic seed / pool ratio": f"{manifest.get('seed')} / {manifest.get('pool_ratio')}"}
    arms = {f"arm {arm} MLflow run": runs.get("parent") for arm, runs in (inputs.evaluation.get("mlflow_runs") or {}).items()}
    return section("lineage", "Lineage", key_values({k: v if v is not None else "n/a" for k, v in (rows | arms).items()}))


def build_page(inputs: ReportInputs) -> str:
    """The whole report page as one HTML string (images embedded)."""
    headline, _ = answer(inputs.evaluation)
    nav = Safe(" · ".join(tag("a", t, href=f"#{i}") for i, t in (
        ("answer-section", "answer"), ("ratio", "ratio"), ("differences", "differences"), ("samples", "samples"),
        ("memorisation", "memorisation"),
        ("gan", "GAN"), ("gate", "quality gate"), ("data", "data"), ("lineage", "lineage"))))
    return page("ganaug report: " + headline,
                tag("h1", "Did the synthetic images help?"), tag("nav", nav),
                question_section(inputs), ratio_section(inputs), differences_section(inputs), samples_section(inputs),
                memorisation_section(inputs),
                gan_section(inputs), gate_section(inputs), data_section(inputs), lineage_section(inputs))
