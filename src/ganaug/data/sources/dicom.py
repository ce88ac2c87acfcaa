"""Source `dicom`: a class-per-folder tree of DICOM files, read with pydicom, pixel data only.

Pixels: modality LUT, window to 8 bits, MONOCHROME1 inverted (`ganaug.data.readers.dicom_pixels`).
The PatientID tag only groups images into patients for the split; it is replaced by an
anonymous integer in the main process and no tag value (names, ids, dates) leaves this
module: not in the packed arrays, not in meta.json, not in an error message. Images without a
PatientID count as one patient each, and their number is recorded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ganaug.config import DataConfig
from ganaug.data.preprocess import preprocessing_record
from ganaug.data.readers import DICOM_RULE, read_files, settle_reads
from ganaug.data.source_images import SourceImages, anonymous_ids, redacts, require_classes
from ganaug.data.sources.tree import count_values, images_per_split_folder, tree_record, walk_class_tree


def read_dicom(cfg: DataConfig) -> SourceImages:
    """DICOM images labelled by their class folder; patients from PatientID, anonymised."""
    dcfg = cfg.dicom
    where = f"data.dicom.root={dcfg.root!r}"
    redact = redacts(cfg)
    tree = walk_class_tree(dcfg.root, dcfg.splits, "data.dicom", dcfg.extensions, redact)
    class_names = tree.class_dirs
    results = read_files([f.path for f in tree.files], "dicom", cfg, desc="reading DICOM")
    readable, skipped = settle_reads(results, [f.shown for f in tree.files], list(tree.bad), cfg.on_bad_file,
                                     where, "DICOM images", redact)
    rows = [(f, r) for f, r, ok in zip(tree.files, results, readable) if ok]
    files = [f for f, _ in rows]
    labels = [class_names.index(f.class_dir) for f in files]
    require_classes(np.array(labels, np.int64), class_names, where)
    # a file without PatientID is its own patient: keyed by its path, which never leaves this process
    patients = [r.patient if r.patient is not None else f"\0no-id:{f.rel}" for f, r in rows]
    source = {
        "name": "dicom",
        "root": dcfg.root,
        "resolved_root": str(Path(dcfg.root).expanduser().resolve()),
        "layout": "split folders" if tree.has_split_folders else "class folders",
        "splits": dcfg.splits,
        "images_read": images_per_split_folder(files, labels, class_names),
        "patients": "PatientID, anonymised to integers",
        "images_without_patient_id": sum(r.patient is None for _, r in rows),
        **tree_record(tree, redact),
    }
    preprocessing = {
        **preprocessing_record(cfg.preprocess, cfg.image_size, [r.native_hw for _, r in rows]),
        "dicom": DICOM_RULE,
        "native_modes": count_values([r.native_mode for _, r in rows]),
    }
    use_split = tree.has_split_folders and dcfg.splits != "ignore"
    return SourceImages(
        images=np.stack([r.pixels for _, r in rows])[:, None],
        labels=np.array(labels, np.int64),
        class_names=class_names,
        item_ids=[f.shown for f in files],
        source=source,
        preprocessing=preprocessing,
        groups=anonymous_ids(patients),
        given_split=np.array([f.split for f in files]) if use_split else None,
        skipped_files=skipped,
    )
