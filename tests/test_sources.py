"""Sources on small fixture trees: folders (Kaggle rules, brain-MRI layout), NIH CSV, DICOM,
MedMNIST class subsets, bad files; and the real shared data sets (skipped when absent)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ganaug.config import ConfigError, params_from_dict
from ganaug.data.build import build_dataset
from ganaug.data.leakage import LeakageError
from ganaug.data.packed import load_packed, save_packed
from ganaug.data.source_images import DataSourceError
from ganaug.data.sources import SOURCES

from conftest import shared_file, smooth_images


def data_config(**data):
    """A small data config; file names shown as found (redaction is tested on its own)."""
    return params_from_dict({"data": {"image_size": 32, "workers": 1, "redact_paths": False, **data}}).data


def write_image(path: Path, pixels: np.ndarray, mode: str = "L", fmt: str | None = None) -> Path:
    """Save (H, W) uint8 pixels as an image file; mode RGB / RGBA stores the gray value in each channel."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels, mode="L")
    if mode != "L":
        image = image.convert(mode)
    image.save(path, format=fmt)
    return path


def kaggle_tree(root: Path, size: int = 40, test_overlap: bool = False) -> Path:
    """train/test x NORMAL/PNEUMONIA with Kaggle names: 3 images per class and split, per patient
    a distinct image; with test_overlap, one test image belongs to a train patient."""
    pixels = iter(smooth_images(64, size, seed=1)[:, 0])
    names = {
        "train": {"NORMAL": ["IM-0101-0001.jpeg", "IM-0102-0001.jpeg", "NORMAL2-IM-0101-0001.jpeg",
                             "IM-0103-0001.jpeg", "IM-0104-0001-0001.jpeg", "IM-0104-0001-0002.jpeg"],
                  "PNEUMONIA": ["person1_bacteria_1.jpeg", "person1_bacteria_2.jpeg", "person2_virus_3.jpeg",
                                "person3_bacteria_4.jpeg", "person4_virus_5.jpeg", "person5_virus_6.jpeg",
                                "person6_bacteria_7.jpeg", "person7_virus_8.jpeg"]},
        "test": {"NORMAL": ["IM-0201-0001.jpeg", "NORMAL2-IM-0202-0001.jpeg"],
                 "PNEUMONIA": ["person8_bacteria_9.jpeg", "person9_virus_10.jpeg",
                               "person1_virus_11.jpeg" if test_overlap else "person10_virus_11.jpeg"]},
    }
    for split, classes in names.items():
        for class_dir, files in classes.items():
            for name in files:
                write_image(root / split / class_dir / name, next(pixels))
    return root


def test_kaggle_three_class_rule_reads_labels_and_patients_from_names(tmp_path):
    root = kaggle_tree(tmp_path / "kaggle")
    raw = SOURCES["folders"](data_config(source="folders", folders={"root": str(root), "label_rule": "kaggle_three_class"}))
    assert raw.class_names == ["normal", "bacterial", "viral"]
    by_name = dict(zip(raw.item_ids, raw.labels.tolist()))
    assert by_name["train/PNEUMONIA/person1_bacteria_2.jpeg"] == 1
    assert by_name["train/PNEUMONIA/person2_virus_3.jpeg"] == 2
    assert by_name["test/NORMAL/IM-0201-0001.jpeg"] == 0
    assert raw.source["images_read"] == {
        "test": {"normal": 2, "bacterial": 1, "viral": 2},
        "train": {"normal": 6, "bacterial": 4, "viral": 4},
    }
    group = dict(zip(raw.item_ids, raw.groups.tolist()))
    assert group["train/PNEUMONIA/person1_bacteria_1.jpeg"] == group["train/PNEUMONIA/person1_bacteria_2.jpeg"]
    assert group["train/NORMAL/IM-0104-0001-0001.jpeg"] == group["train/NORMAL/IM-0104-0001-0002.jpeg"]
    # NORMAL2-IM-0101 is a separately numbered batch: not the same patient as IM-0101
    assert group["train/NORMAL/IM-0101-0001.jpeg"] != group["train/NORMAL/NORMAL2-IM-0101-0001.jpeg"]
    assert set(raw.given_split) == {"train", "test"}


def test_kaggle_binary_keeps_test_folder_and_carves_val_patient_aware(tmp_path):
    root = kaggle_tree(tmp_path / "kaggle")
    dataset = build_dataset(data_config(source="folders", val_fraction=0.3, folders={"root": str(root), "label_rule": "kaggle_binary"}))
    assert dataset.class_names == ["normal", "pneumonia"]
    assert len(dataset.test) == 5 and len(dataset.train) + len(dataset.val) == 14
    assert dataset.extra["split"]["carved_from_train"] == {"val": 0.3}
    train_patients, val_patients = set(dataset.train.groups.tolist()), set(dataset.val.groups.tolist())
    assert not train_patients & val_patients
    assert dataset.meta()["counts"]["test"]["patients"] == 5


def test_kaggle_patient_in_train_and_test_fails_by_default_and_drop_removes_it_from_test(tmp_path):
    root = kaggle_tree(tmp_path / "kaggle", test_overlap=True)
    cfg = data_config(source="folders", val_fraction=0.3, folders={"root": str(root), "label_rule": "kaggle_binary"})
    with pytest.raises(LeakageError, match=r"1 patient\(s\) in two splits") as excinfo:
        build_dataset(cfg)
    assert "test: 1 image(s), e.g. test/PNEUMONIA/person1_virus_11.jpeg" in str(excinfo.value)
    dataset = build_dataset(dataclasses.replace(cfg, on_leakage="drop"))
    assert len(dataset.test) == 4 and dataset.extra["leakage"]["dropped"]["test"] == 1
    assert dataset.extra["leakage"]["counts"]["patients_in_two_splits"] == 1


def test_splits_ignore_pools_the_split_folders_and_splits_by_patient(tmp_path):
    root = kaggle_tree(tmp_path / "kaggle", test_overlap=True)
    dataset = build_dataset(data_config(source="folders", val_fraction=0.2, test_fraction=0.2,
                                        folders={"root": str(root), "label_rule": "kaggle_binary", "splits": "ignore"}))
    assert sum(len(s) for s in dataset.splits.values()) == 19
    patients = [set(s.groups.tolist()) for s in dataset.splits.values()]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    assert dataset.extra["leakage"]["counts"]["patients_in_two_splits"] == 0


def test_kaggle_names_the_rule_cannot_read_are_bad_files(tmp_path):
    root = kaggle_tree(tmp_path / "kaggle")
    write_image(root / "train" / "PNEUMONIA" / "person11_fungus_12.jpeg", smooth_images(1, 40, 5)[0, 0])
    write_image(root / "train" / "NORMAL" / "scan_7.jpeg", smooth_images(1, 40, 6)[0, 0])
    cfg = data_config(source="folders", folders={"root": str(root), "label_rule": "kaggle_three_class"})
    with pytest.raises(DataSourceError) as excinfo:
        SOURCES["folders"](cfg)
    message = str(excinfo.value)
    assert "2 bad file(s)" in message
    assert "train/PNEUMONIA/person11_fungus_12.jpeg: kaggle_three_class: name has both or neither" in message
    assert "train/NORMAL/scan_7.jpeg: kaggle_three_class: no patient id in the name" in message
    # binary: the fungus image is just pneumonia
    binary = SOURCES["folders"](dataclasses.replace(cfg, on_bad_file="skip", folders=dataclasses.replace(cfg.folders, label_rule="kaggle_binary")))
    assert "train/PNEUMONIA/person11_fungus_12.jpeg" in binary.item_ids
    assert [b.file for b in binary.skipped_files] == ["train/NORMAL/scan_7.jpeg"]


def bad_file_tree(root: Path) -> Path:
    """Class folders a / b with good grayscale, RGBA and mixed-size images, plus bad files."""
    images = smooth_images(12, 48, seed=2)[:, 0]
    for i in range(4):
        write_image(root / "a" / f"a{i}.png", images[i])
        write_image(root / "b" / f"b{i}.png", images[4 + i], mode="RGBA")
    write_image(root / "a" / "wide.jpg", np.array(Image.fromarray(images[8]).resize((64, 40))), mode="RGB")
    write_image(root / "b" / "nested" / "small.bmp", images[9][:20, :30])
    (root / "a" / "notes.txt").write_text("not an image")
    good = (root / "a" / "a0.png").read_bytes()
    (root / "b" / "truncated.png").write_bytes(good[: len(good) // 2])
    write_image(root / "b" / "renamed.png", images[10], fmt="JPEG")  # JPEG bytes behind a .png name
    (root / "b" / "empty.jpeg").write_bytes(b"")
    (root / "stray.png").write_bytes(good)  # not inside a class folder
    (root / "a" / ".DS_Store").write_bytes(b"\0")
    return root


def test_bad_files_fail_with_each_file_and_reason(tmp_path):
    root = bad_file_tree(tmp_path / "tree")
    with pytest.raises(DataSourceError) as excinfo:
        SOURCES["folders"](data_config(source="folders", folders={"root": str(root)}))
    message = str(excinfo.value)
    assert "5 bad file(s)" in message and "data.on_bad_file=skip" in message
    for fragment in (
        "a/notes.txt: extension '.txt' is not one of",
        "b/truncated.png: cannot decode",
        "b/renamed.png: content is JPEG but the extension is .png",
        "b/empty.jpeg: not an image PIL can identify",
        "stray.png: not inside a class folder",
    ):
        assert fragment in message
    assert ".DS_Store" not in message


def test_skip_bad_files_records_them_and_reads_rgba_and_mixed_sizes(tmp_path):
    root = bad_file_tree(tmp_path / "tree")
    raw = SOURCES["folders"](data_config(source="folders", on_bad_file="skip", folders={"root": str(root)}))
    assert raw.class_names == ["a", "b"] and raw.images.shape == (10, 1, 32, 32)
    assert raw.given_split is None and raw.groups is None
    assert "b/nested/small.bmp" in raw.item_ids
    assert len(raw.skipped_files) == 5 and raw.source["hidden_files_ignored"] == 1
    assert raw.preprocessing["native_modes"] == {"L": 5, "RGBA": 4, "RGB": 1}
    assert raw.preprocessing["native_size"] == {"min_hw": [20, 30], "max_hw": [48, 64]}
    # an RGBA X-ray (gray in R = G = B, opaque) becomes exactly its gray values
    rgba_row = raw.item_ids.index("b/b0.png")
    expected = np.asarray(Image.fromarray(smooth_images(12, 48, seed=2)[4, 0]).resize((32, 32), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(raw.images[rgba_row, 0], expected)


def test_skipped_count_reaches_meta_json(tmp_path):
    root = bad_file_tree(tmp_path / "tree")
    for i in range(4, 12):  # enough images per class for a 3-way split
        write_image(root / "a" / f"more{i}.png", smooth_images(1, 48, seed=100 + i)[0, 0])
        write_image(root / "b" / f"more{i}.png", smooth_images(1, 48, seed=200 + i)[0, 0])
    cfg = data_config(source="folders", on_bad_file="skip", val_fraction=0.25, test_fraction=0.25, folders={"root": str(root)})
    meta = save_packed(build_dataset(cfg), tmp_path / "prepared")
    on_disk = json.loads((tmp_path / "prepared" / "meta.json").read_text())
    assert on_disk["skipped_files"]["count"] == 5 == meta["skipped_files"]["count"]
    assert {f["file"] for f in on_disk["skipped_files"]["files"]} >= {"b/truncated.png", "a/notes.txt"}
    assert on_disk["preprocessing"]["resize"] == "squash" and on_disk["split"]["method"] == "split here"


def test_brain_mri_training_testing_layout_and_layout_errors(tmp_path):
    images = iter(smooth_images(24, 36, seed=3)[:, 0])
    for split in ("Training", "Testing"):
        for tumour in ("glioma", "meningioma", "notumor"):
            for i in range(4 if split == "Training" else 2):
                write_image(tmp_path / "mri" / split / tumour / f"{split[:2]}_{i}.jpg", next(images))
    dataset = build_dataset(data_config(source="folders", val_fraction=0.25, folders={"root": str(tmp_path / "mri")}))
    assert dataset.class_names == ["glioma", "meningioma", "notumor"]
    assert len(dataset.test) == 6 and len(dataset.val) == 3 and len(dataset.train) == 9
    (tmp_path / "mri" / "extra").mkdir()
    with pytest.raises(DataSourceError, match=r"mixes split folders \['Testing', 'Training'\] with other folders \['extra'\]"):
        SOURCES["folders"](data_config(source="folders", folders={"root": str(tmp_path / "mri")}))
    with pytest.raises(DataSourceError, match="data.folders.splits=keep but .* has no split folders"):
        SOURCES["folders"](data_config(source="folders", folders={"root": str(tmp_path / "mri" / "Training"), "splits": "keep"}))
    with pytest.raises(DataSourceError, match=r"data.folders.root='.*nowhere': not a directory"):
        SOURCES["folders"](data_config(source="folders", folders={"root": str(tmp_path / "nowhere")}))


def test_folder_rule_patient_pattern_groups_images(tmp_path):
    images = iter(smooth_images(8, 32, seed=4)[:, 0])
    for name in ("p1_a.png", "p1_b.png", "p2_a.png", "p3_a.png"):
        write_image(tmp_path / "t" / "x" / name, next(images))
    write_image(tmp_path / "t" / "x" / "unnamed.png", next(images))
    write_image(tmp_path / "t" / "y" / "p4_a.png", next(images))
    cfg = data_config(source="folders", on_bad_file="skip", folders={"root": str(tmp_path / "t"), "patient_pattern": r"^(p\d+)_"})
    raw = SOURCES["folders"](cfg)
    assert raw.groups.tolist() == [0, 0, 1, 2, 3]
    assert raw.skipped_files[0].reason.startswith("no patient id: data.folders.patient_pattern does not match")


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"source": "folders"}, "data.source=folders needs data.folders.root"),
        ({"source": "nih", "nih": {"csv": "x.csv"}}, "data.source=nih needs data.nih.images"),
        ({"folders": {"label_rule": "kaggle_binary", "patient_pattern": "(x)"}}, "the kaggle rules read patients"),
        ({"folders": {"patient_pattern": "p\\d+"}}, "expected a capturing group"),
        ({"folders": {"patient_pattern": "(p"}}, "not a regular expression"),
        ({"folders": {"extensions": ["png"]}}, "lower-case extensions with the dot"),
        ({"nih": {"findings": ["Cardiomegaly", "Heart"]}}, "data.nih.findings: unknown ['Heart']"),
        ({"preprocess": {"resize": "stretch"}}, "data.preprocess.resize='stretch'"),
        ({"on_leakage": "ignore"}, "data.on_leakage='ignore'"),
        ({"workers": 0}, "data.workers=0: expected an integer in [1, 64]"),
    ],
)
def test_data_params_are_checked_by_name(data, fragment):
    with pytest.raises(ConfigError) as excinfo:
        params_from_dict({"data": data})
    assert fragment in str(excinfo.value)


def nih_fixture(root: Path) -> tuple[Path, Path]:
    """12 images of 6 patients in train/valid/test folders, and a CSV like NIH's (+ folder column)."""
    rows = [
        ("train", "00000001_000.png", "Cardiomegaly", 1), ("train", "00000001_001.png", "Cardiomegaly|Effusion", 1),
        ("train", "00000002_000.png", "No Finding", 2), ("train", "00000003_000.png", "Effusion", 3),
        ("train", "00000004_000.png", "No Finding", 4), ("train", "00000004_001.png", "Hernia", 4),
        ("valid", "00000005_000.png", "Effusion", 5), ("valid", "00000002_001.png", "No Finding", 2),
        ("test", "00000006_000.png", "Cardiomegaly", 6), ("test", "00000006_001.png", "No Finding", 6),
        ("test", "00000003_001.png", "Effusion|Cardiomegaly", 3), ("test", "00000005_001.png", "No Finding", 5),
    ]
    images = smooth_images(len(rows), 40, seed=7)[:, 0]
    for (split, name, _, _), pixels in zip(rows, images):
        write_image(root / "images" / split / name, pixels, mode="RGBA" if name.endswith("1.png") else "RGB")
    csv = root / "Data_Entry_2017.csv"
    pd.DataFrame({
        "folder": [f"{s}/x" for s, *_ in rows], "Image Index": [r[1] for r in rows],
        "Finding Labels": [r[2] for r in rows], "Follow-up #": 0, "Patient ID": [r[3] for r in rows],
    }).to_csv(csv, index=False)
    return csv, root / "images"


def test_nih_csv_gives_multi_hot_findings_and_patients(tmp_path):
    csv, images = nih_fixture(tmp_path)
    raw = SOURCES["nih"](data_config(source="nih", nih={"csv": str(csv), "images": str(images)}))
    assert len(raw.class_names) == 14 and raw.labels.shape == (12, 14) and raw.labels.dtype == np.uint8
    row = dict(zip(raw.item_ids, raw.labels))
    names = raw.class_names
    assert {names[i] for i in np.flatnonzero(row["train/00000001_001.png"])} == {"Cardiomegaly", "Effusion"}
    assert row["train/00000002_000.png"].sum() == 0  # No Finding = all zero
    group = dict(zip(raw.item_ids, raw.groups.tolist()))
    assert group["train/00000002_000.png"] == group["valid/00000002_001.png"]
    assert raw.given_split is None  # default data.nih.splits=patient


def test_nih_findings_subset_binary_mode_and_kept_split(tmp_path):
    csv, images = nih_fixture(tmp_path)
    cfg = data_config(source="nih", nih={"csv": str(csv), "images": str(images), "findings": ["Cardiomegaly", "Effusion"],
                                         "label_mode": "binary", "splits": "keep"})
    raw = SOURCES["nih"](cfg)
    assert "train/00000004_001.png" not in raw.item_ids  # Hernia: outside the subset, left out
    assert raw.source["rows_with_findings_outside_subset"] == 1
    assert raw.class_names == ["no finding", "finding"]
    assert dict(zip(raw.item_ids, raw.labels.tolist()))["test/00000003_001.png"] == 1
    assert dict(zip(raw.item_ids, raw.given_split.tolist()))["valid/00000005_000.png"] == "val"
    # the folder split puts patients 2, 3 and 5 in two splits
    with pytest.raises(LeakageError, match=r"3 patient\(s\) in two splits"):
        build_dataset(cfg)


def test_nih_unknown_finding_and_missing_image(tmp_path):
    csv, images = nih_fixture(tmp_path)
    entries = pd.read_csv(csv)
    entries.loc[3, "Finding Labels"] = "Effusion|Flu"
    entries.to_csv(csv, index=False)
    with pytest.raises(DataSourceError, match=r"row 5 \(00000003_000.png\): 'Effusion\|Flu'"):
        SOURCES["nih"](data_config(source="nih", nih={"csv": str(csv), "images": str(images)}))
    entries.loc[3, "Finding Labels"] = "Effusion"
    entries.to_csv(csv, index=False)
    (images / "test" / "00000006_000.png").unlink()
    with pytest.raises(DataSourceError, match="00000006_000.png: listed in data.nih.csv but not found"):
        SOURCES["nih"](data_config(source="nih", nih={"csv": str(csv), "images": str(images)}))


def write_dicom(path: Path, pixels: np.ndarray, patient_id: str, patient_name: str = "DOE^JANE",
                photometric: str = "MONOCHROME2", slope: float = 1.0, intercept: float = 0.0,
                window: tuple[float, float] | None = None) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.Modality = "CR"
    ds.set_pixel_data(pixels.astype(np.uint16), photometric, 12)
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def dicom_tree(root: Path) -> Path:
    images = (smooth_images(18, 40, seed=8)[:, 0].astype(np.uint16) * 16)  # 12-bit values
    for i in range(9):
        write_dicom(root / "normal" / f"n{i}.dcm", images[i], patient_id=f"JANE-{i // 2:03d}")
        write_dicom(root / "nodule" / f"d{i}.dcm", images[9 + i], patient_id=f"JOHN-{i // 2:03d}",
                    patient_name="ROE^JOHN", photometric="MONOCHROME1" if i % 2 else "MONOCHROME2")
    return root


def test_dicom_pixels_patients_and_no_tag_value_in_any_output(tmp_path):
    root = dicom_tree(tmp_path / "dicom")
    cfg = data_config(source="dicom", val_fraction=0.25, test_fraction=0.25, dicom={"root": str(root)})
    dataset = build_dataset(cfg)
    assert dataset.class_names == ["nodule", "normal"] and sum(len(s) for s in dataset.splits.values()) == 18
    patients = [set(s.groups.tolist()) for s in dataset.splits.values()]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    assert len(set().union(*patients)) == 10  # 5 per class: images 2i and 2i+1 share a PatientID
    save_packed(dataset, tmp_path / "prepared")
    for output in (tmp_path / "prepared").iterdir():
        content = output.read_bytes()
        for tag_value in (b"DOE^JANE", b"JANE-", b"ROE^JOHN", b"JOHN-", b"19700101", b"DOE", b"JANE"):
            assert tag_value not in content, f"{tag_value!r} found in {output.name}"
    assert "MONOCHROME1 inverted" in dataset.preprocessing["dicom"]


def test_dicom_monochrome1_rescale_and_window(tmp_path):
    from ganaug.data.readers import dicom_pixels
    import pydicom

    ramp = np.tile(np.arange(0, 4000, 100, dtype=np.uint16), (8, 1))  # (8, 40), 0..3900
    plain = dicom_pixels(pydicom.dcmread(write_dicom(tmp_path / "a.dcm", ramp, "1")))
    assert plain[0, 0] == 0 and plain[0, -1] == 255  # no window: the image's min-max
    inverted = dicom_pixels(pydicom.dcmread(write_dicom(tmp_path / "b.dcm", ramp, "1", photometric="MONOCHROME1")))
    np.testing.assert_array_equal(inverted, 255 - plain)
    # rescale to HU-like values, then a window of centre 0, width 1000: -500 .. 500 fill the 8 bits
    windowed = dicom_pixels(pydicom.dcmread(write_dicom(tmp_path / "c.dcm", ramp, "1", slope=1.0, intercept=-2000.0,
                                                        window=(0.0, 1000.0))))
    hu = ramp[0].astype(float) - 2000
    assert (windowed[0][hu <= -500] == 0).all() and (windowed[0][hu >= 500] == 255).all()
    inside = (hu > -400) & (hu < 400)
    assert np.all(np.diff(windowed[0][inside].astype(int)) > 0)


def test_dicom_non_dicom_file_is_a_bad_file(tmp_path):
    root = dicom_tree(tmp_path / "dicom")
    (root / "normal" / "fake.dcm").write_bytes(b"\0" * 200)
    with pytest.raises(DataSourceError, match="normal/fake.dcm: not a DICOM file"):
        SOURCES["dicom"](data_config(source="dicom", dicom={"root": str(root)}))


def write_chestmnist(path: Path) -> Path:
    """A ChestMNIST-like .npz: 14 multi-hot columns, with no-finding, cardiomegaly-only and mixed rows."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        labels = np.zeros((9, 14), np.uint8)
        labels[3:6, 1] = 1  # cardiomegaly only
        labels[6, [1, 2]] = 1  # cardiomegaly + effusion: left out of the subset
        labels[7, 2] = 1  # effusion only: left out
        labels[8, 0] = 1  # atelectasis only: left out
        arrays[f"{split}_images"] = rng.integers(0, 256, (9, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = labels
    np.savez(path, **arrays)
    return path


def test_medmnist_multilabel_and_the_healthgan_subset(tmp_path):
    path = write_chestmnist(tmp_path / "chestmnist.npz")
    multi = SOURCES["medmnist"](data_config(source="medmnist", image_size=28, medmnist={"flag": "chestmnist", "path": str(path)}))
    assert multi.labels.shape == (27, 14) and multi.labels.dtype == np.uint8 and multi.class_names[1] == "cardiomegaly"
    subset = build_dataset(data_config(source="medmnist", image_size=28,
                                       medmnist={"flag": "chestmnist", "path": str(path), "classes": ["cardiomegaly"]}))
    assert subset.class_names == ["no finding", "cardiomegaly"] and not subset.multilabel
    assert subset.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert subset.source["rows"]["train"] == {"in_file": 9, "kept": 6}
    with pytest.raises(DataSourceError, match=r"data.medmnist.classes: \['heart'\] not classes of 'chestmnist'"):
        build_dataset(data_config(source="medmnist", medmnist={"flag": "chestmnist", "path": str(path), "classes": ["heart"]}))


def test_medmnist_multiclass_subset_is_reindexed(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 256, (12, 28, 28, 3), dtype=np.uint8)  # RGB flag
        arrays[f"{split}_labels"] = (np.arange(12) % 4).reshape(-1, 1)
    np.savez(tmp_path / "octmnist.npz", **arrays)
    names = ["drusen", "choroidal neovascularization"]  # octmnist classes 2 and 0, in this order
    dataset = build_dataset(data_config(source="medmnist", image_size=28,
                                        medmnist={"flag": "octmnist", "path": str(tmp_path / "octmnist.npz"), "classes": names}))
    assert dataset.class_names == names and dataset.image_shape == (1, 28, 28)
    assert sorted(set(dataset.train.labels.tolist())) == [0, 1] and len(dataset.train) == 6
    train_rgb = arrays["train_images"][np.isin(arrays["train_labels"][:, 0], [0, 2])]
    np.testing.assert_array_equal(dataset.train.images[:, 0],
                                  np.stack([np.asarray(Image.fromarray(img).convert("L")) for img in train_rgb]))


def test_two_workers_give_the_same_bytes_as_one(tmp_path):
    root = tmp_path / "t"
    images = smooth_images(80, 36, seed=9)[:, 0]
    for i, pixels in enumerate(images):
        write_image(root / ("a" if i % 2 else "b") / f"{i:03d}.png", pixels)
    one = SOURCES["folders"](data_config(source="folders", folders={"root": str(root)}))
    two = SOURCES["folders"](data_config(source="folders", workers=2, folders={"root": str(root)}))
    np.testing.assert_array_equal(one.images, two.images)
    assert one.item_ids == two.item_ids


# ----- the real shared data sets ----------------------------------------------------------------


@pytest.mark.shared_data
def test_real_kaggle_binary_prepares_patient_aware_with_the_readme_counts():
    root = shared_file("chest_xray_224")
    dataset = build_dataset(data_config(source="folders", image_size=28, workers=2,
                                        folders={"root": str(root), "label_rule": "kaggle_binary", "splits": "ignore"}))
    read = dataset.source["images_read"]
    assert read["train"] == {"normal": 1341, "pneumonia": 3875} and read["test"] == {"normal": 234, "pneumonia": 390}
    assert sum(len(s) for s in dataset.splits.values()) == 5840
    assert dataset.extra["leakage"]["counts"]["patients_in_two_splits"] == 0
    assert dataset.extra["split"]["duplicate_images_kept_together"] > 0  # the set has exact duplicates


@pytest.mark.shared_data
def test_real_kaggle_three_class_folder_split_leaks_patients():
    root = shared_file("chest_xray_224")
    dataset = build_dataset(data_config(source="folders", image_size=28, workers=2, on_leakage="drop",
                                        folders={"root": str(root), "label_rule": "kaggle_three_class"}))
    read = dataset.source["images_read"]
    assert read["train"] == {"normal": 1341, "bacterial": 2530, "viral": 1345}
    assert read["test"] == {"normal": 234, "bacterial": 242, "viral": 148}
    leakage = dataset.extra["leakage"]
    # person ids are one namespace across train and test (person1: train bacteria_1, test virus_11)
    assert leakage["counts"]["patients_in_two_splits"] == 170
    assert leakage["dropped"]["train"] == 0 and leakage["dropped"]["test"] > 0


@pytest.mark.shared_data
def test_real_nih_multilabel_patient_split_and_folder_split_leakage():
    csv = shared_file("nih1000_64/Data_Entry_2017.csv")
    nih = {"csv": str(csv), "images": str(csv.parent)}
    dataset = build_dataset(data_config(source="nih", image_size=32, nih=nih))
    assert dataset.multilabel and dataset.n_classes == 14
    assert sum(len(s) for s in dataset.splits.values()) == 1000
    assert dataset.extra["leakage"]["counts"]["patients_in_two_splits"] == 0
    assert dataset.meta()["counts"]["train"]["patients"] + dataset.meta()["counts"]["val"]["patients"] \
        + dataset.meta()["counts"]["test"]["patients"] == 264
    with pytest.raises(LeakageError, match=r"30 patient\(s\) in two splits"):
        build_dataset(data_config(source="nih", image_size=32, nih={**nih, "splits": "keep"}))


@pytest.mark.shared_data
def test_real_pneumoniamnist_duplicates_fail_by_name_and_drop_from_val():
    path = shared_file("pneumoniamnist.npz")
    cfg = data_config(source="medmnist", image_size=28, medmnist={"path": str(path)})
    with pytest.raises(LeakageError, match=r"8 exact duplicate\(s\) \{'train-val': 8") as excinfo:
        build_dataset(cfg)
    assert "exact duplicate: train: train[2714] = val: val[61]" in str(excinfo.value)
    dataset = build_dataset(dataclasses.replace(cfg, on_leakage="drop"))
    assert [len(s) for s in dataset.splits.values()] == [4708, 516, 624]


def test_loaded_packed_dataset_keeps_patient_groups(tmp_path):
    root = kaggle_tree(tmp_path / "kaggle")
    dataset = build_dataset(data_config(source="folders", val_fraction=0.3, folders={"root": str(root), "label_rule": "kaggle_binary"}))
    save_packed(dataset, tmp_path / "prepared")
    loaded = load_packed(tmp_path / "prepared")
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(loaded.splits[name].groups, dataset.splits[name].groups)
    assert loaded.content_hashes() == dataset.content_hashes()
