"""Source `folders`: a class-per-folder tree of PNG / JPEG / BMP / TIFF images.

Label rules (`data.folders.label_rule`):
- `folder`: the class is the folder name (classes sorted by name); patients from
  `data.folders.patient_pattern` (regex, group 1) when set;
- `kaggle_binary`: folders NORMAL / PNEUMONIA -> normal / pneumonia;
- `kaggle_three_class`: NORMAL -> normal; in PNEUMONIA, "bacteria" in the file name -> bacterial,
  "virus" -> viral (Kermany et al. name every pneumonia image so).
The Kaggle rules read the patient from the name: `person1000_bacteria_2931.jpeg` is patient
person1000; normal images are `IM-0115-0001.jpeg` (patient IM-0115: images of one study share
the number, e.g. IM-0429-0001-0001 / -0002) or `NORMAL2-IM-1427-0001.jpeg` (patient
NORMAL2-IM-1427, a separately numbered batch). A name the rule cannot read is a bad file.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ganaug.config import DataConfig
from ganaug.data.preprocess import preprocessing_record
from ganaug.data.readers import accepted_by_content, read_files, settle_reads
from ganaug.data.source_images import (
    BadFile, DataSourceError, SourceImages, anonymous_ids, redacts, require_classes,
)
from ganaug.data.sources.tree import ClassTree, count_values, images_per_split_folder, tree_record, walk_class_tree

KAGGLE_PNEUMONIA_PATIENT = re.compile(r"^(person\d+)_")
KAGGLE_NORMAL_PATIENT = re.compile(r"^((?:NORMAL2-)?IM-\d+)-")
KAGGLE_CLASS_FOLDERS = ("normal", "pneumonia")


def kaggle_label(rule: str, class_dir: str, file_name: str) -> tuple[int | None, str | None, str | None]:
    """(class index, patient, why not) for a Kaggle pediatric pneumonia image."""
    folder = class_dir.lower()
    name = file_name.lower()
    pattern = KAGGLE_NORMAL_PATIENT if folder == "normal" else KAGGLE_PNEUMONIA_PATIENT
    match = pattern.match(file_name)
    if match is None:
        expected = "IM-<n>-… or NORMAL2-IM-<n>-…" if folder == "normal" else "person<n>_…"
        return None, None, f"no patient id in the name (expected {expected})"
    bacterial, viral = "bacteria" in name, "virus" in name
    if folder == "normal":
        if bacterial or viral:
            return None, None, "in NORMAL but named like a pneumonia image"
        return 0, match.group(1), None
    if rule == "kaggle_binary":
        return 1, match.group(1), None
    if bacterial == viral:
        return None, None, "name has both or neither of 'bacteria' and 'virus'"
    return (1 if bacterial else 2), match.group(1), None


def label_files(tree: ClassTree, cfg: DataConfig) -> tuple[list[str], list[int | None], list[str | None], list[BadFile]]:
    """Class names, and per tree file its class index and patient (None + a bad file if unreadable)."""
    fcfg = cfg.folders
    rule = fcfg.label_rule
    labels: list[int | None] = []
    patients: list[str | None] = []
    bad: list[BadFile] = []
    if rule == "folder":
        class_names = tree.class_dirs
        pattern = re.compile(fcfg.patient_pattern) if fcfg.patient_pattern else None
        for f in tree.files:
            patient = None
            if pattern is not None:
                match = pattern.search(f.path.name)
                if match is None:
                    bad.append(BadFile(f.shown, "no patient id: data.folders.patient_pattern does not match the file name"))
                    labels.append(None)
                    patients.append(None)
                    continue
                patient = match.group(1)
            labels.append(class_names.index(f.class_dir))
            patients.append(patient)
        return class_names, labels, patients, bad
    found = sorted({d.lower() for d in tree.class_dirs})
    if found != sorted(KAGGLE_CLASS_FOLDERS):
        raise DataSourceError(
            f"data.folders.label_rule={rule} expects class folders NORMAL and PNEUMONIA, found {tree.class_dirs}"
        )
    class_names = ["normal", "pneumonia"] if rule == "kaggle_binary" else ["normal", "bacterial", "viral"]
    for f in tree.files:
        label, patient, why = kaggle_label(rule, f.class_dir, f.path.name)
        if why is not None:
            bad.append(BadFile(f.shown, f"{rule}: {why}"))
        labels.append(label)
        patients.append(patient)
    return class_names, labels, patients, bad


def read_folders(cfg: DataConfig) -> SourceImages:
    """Images of a class-folder tree, labelled by data.folders.label_rule; split folders kept unless ignored."""
    fcfg = cfg.folders
    where = f"data.folders.root={fcfg.root!r}"
    redact = redacts(cfg)
    tree = walk_class_tree(fcfg.root, fcfg.splits, "data.folders", fcfg.extensions, redact)
    class_names, labels, patients, label_bad = label_files(tree, cfg)
    readable = [i for i, label in enumerate(labels) if label is not None]
    results = read_files([tree.files[i].path for i in readable], "pil", cfg, desc="reading folders")
    shown = [tree.files[i].shown for i in readable]
    ok, skipped = settle_reads(results, shown, tree.bad + label_bad, cfg.on_bad_file, where, redacted=redact)
    rows = [(i, r) for i, r, keep in zip(readable, results, ok) if keep]
    files = [tree.files[i] for i, _ in rows]
    require_classes(np.array([labels[i] for i, _ in rows], np.int64), class_names, where)
    has_patients = fcfg.label_rule != "folder" or fcfg.patient_pattern is not None
    use_split = tree.has_split_folders and fcfg.splits != "ignore"
    source = {
        "name": "folders",
        "root": fcfg.root,
        "resolved_root": str(Path(fcfg.root).expanduser().resolve()),
        "label_rule": fcfg.label_rule,
        "layout": "split folders" if tree.has_split_folders else "class folders",
        "splits": fcfg.splits,
        "images_read": images_per_split_folder(files, [labels[i] for i, _ in rows], class_names),
        "patients": "from file names" if has_patients else None,
        **tree_record(tree, redact),
        "accepted_by_content": accepted_by_content(results, shown, cfg.accept_by_content),
    }
    preprocessing = {
        **preprocessing_record(cfg.preprocess, cfg.image_size, [r.native_hw for _, r in rows]),
        "native_modes": count_values([r.native_mode for _, r in rows]),
    }
    return SourceImages(
        images=np.stack([r.pixels for _, r in rows])[:, None],
        labels=np.array([labels[i] for i, _ in rows], np.int64),
        class_names=class_names,
        item_ids=[f.shown for f in files],
        source=source,
        preprocessing=preprocessing,
        groups=anonymous_ids([patients[i] for i, _ in rows]) if has_patients else None,
        given_split=np.array([f.split for f in files]) if use_split else None,
        skipped_files=skipped,
    )
