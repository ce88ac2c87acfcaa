"""Bad input data through `ganaug prepare`: each case must exit non-zero with a message naming the
key or file and what was expected, and leave neither `data/prepared` nor a `data/.prepared.tmp-*`
folder behind. Cases cover class folders, MedMNIST files, NIH CSVs and DICOM trees (issue 16 items
3, 5, 6, 9, 10; issue 10 "Real folders that behave"); positive tests follow the table."""

from __future__ import annotations

import json
import os
import signal
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ganaug.cli import main

from conftest import smooth_images
from test_sources import kaggle_tree, nih_fixture, write_dicom, write_image

PREPARE_TIMEOUT_S = 60  # a FIFO once hung prepare forever: a hang fails the test instead of CI


def run_prepare(project: Path, data: dict, monkeypatch, capsys) -> tuple[int, str, str]:
    """`ganaug prepare` on a params file holding `data` (JSON is YAML), run in `project`."""
    project.mkdir(parents=True, exist_ok=True)
    params = project / "params.yaml"
    params.write_text(json.dumps({"data": {"image_size": 28, "workers": 1, **data}}))
    monkeypatch.chdir(project)

    def hung(signum, frame):
        raise TimeoutError(f"prepare still running after {PREPARE_TIMEOUT_S} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(PREPARE_TIMEOUT_S)
    try:
        code = main(["prepare", "--params", str(params)])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    out = capsys.readouterr()
    return code, out.out, out.err


# ----- builders: each writes its input under `tmp` and returns the data params ------------------


def two_classes(root: Path, n: int = 6, side: int = 32) -> Path:
    images = smooth_images(2 * n, side, seed=21)[:, 0]
    for i in range(n):
        write_image(root / "a" / f"{i}.png", images[i])
        write_image(root / "b" / f"{i}.png", images[n + i])
    return root


def folders(root: Path, **extra) -> dict:
    return {"source": "folders", "folders": {"root": str(root)}, **extra}


def png_header(path: Path, width: int, height: int) -> Path:
    """A grayscale PNG declaring width x height, its pixel data cut short (it must never be decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    stream = zlib.compressobj(9)
    idat = stream.compress(b"\0" * (width + 1) * 64) + stream.flush(zlib.Z_SYNC_FLUSH)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def empty_class_folder(tmp):
    (two_classes(tmp / "t") / "c").mkdir()
    return folders(tmp / "t")


def single_class(tmp):
    root = two_classes(tmp / "t")
    for f in (root / "b").iterdir():
        f.unlink()
    (root / "b").rmdir()
    return folders(root)


def hidden_only_class(tmp):
    root = two_classes(tmp / "t")
    write_image(root / "c" / ".ipynb_checkpoints" / "0-checkpoint.png", smooth_images(1, 32, 3)[0, 0])
    return folders(root)


def symlink_loop(tmp):
    root = two_classes(tmp / "t")
    os.symlink(root / "a", root / "a" / "loop")
    return folders(root)


def link_into_other_class(tmp):
    root = two_classes(tmp / "t")
    os.symlink("../a", root / "b" / "more")
    return folders(root)


def file_link_across_classes(tmp):
    root = two_classes(tmp / "t")
    os.symlink(root / "a" / "0.png", root / "b" / "x.png")
    return folders(root)


def broken_link(tmp):
    root = two_classes(tmp / "t")
    os.symlink(tmp / "nowhere.png", root / "a" / "gone.png")
    return folders(root)


def fifo(tmp):
    root = two_classes(tmp / "t")
    os.mkfifo(root / "a" / "x.png")
    return folders(root)


def fifo_skipped_is_no_hang(tmp):
    root = two_classes(tmp / "t")
    os.mkfifo(root / "b" / "x.png")
    for f in (root / "b").glob("*[0-9].png"):
        f.unlink()
    return folders(root, on_bad_file="skip")


def decompression_bomb(tmp):
    root = two_classes(tmp / "t")
    png_header(root / "a" / "bomb.png", 15000, 15000)  # 225 Mpixel: beyond PIL's own hard limit too
    return folders(root)


def over_max_pixels(tmp):
    root = two_classes(tmp / "t")
    png_header(root / "a" / "big.png", 8000, 8000)  # 64 Mpixel: under PIL's limits, over the default 50 M
    return folders(root)


def png_under_jpg(tmp):
    root = two_classes(tmp / "t")
    write_image(root / "a" / "x.jpg", smooth_images(1, 32, 4)[0, 0], fmt="PNG")
    return folders(root)


def all_bad_class_skipped(tmp):
    root = two_classes(tmp / "t")
    for f in (root / "b").iterdir():
        f.write_bytes(f.read_bytes()[:40])  # truncated
    return folders(root, on_bad_file="skip")


def kaggle_bad_name(tmp):
    root = kaggle_tree(tmp / "kaggle")
    write_image(root / "train" / "PNEUMONIA" / "person11_fungus_12.jpeg", smooth_images(1, 40, 5)[0, 0])
    return folders(root, folders={"root": str(root), "label_rule": "kaggle_three_class"})


def patient_named_file(tmp):
    root = two_classes(tmp / "t")
    for d in ("a", "b"):
        for f in (root / d).iterdir():
            f.rename(f.with_name(f"p{f.stem}{d}_{f.name}"))
    (root / "a" / "SMITH_JOHN_1.png").write_bytes(b"\x89PNG broken")
    return {"source": "folders", "folders": {"root": str(root), "patient_pattern": r"^([A-Za-z0-9]+)_"}}


def redact_off_names_files(tmp):
    return {**patient_named_file(tmp), "redact_paths": False}


def medmnist_arrays(n: int = 12, labels_of=None, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).astype(np.uint8).reshape(-1, 1)
    return arrays


def medmnist(tmp, change: Callable[[dict], None], **section) -> dict:
    arrays = medmnist_arrays()
    change(arrays)
    path = tmp / "mine.npz"
    np.savez(path, **arrays)
    return {"source": "medmnist", "medmnist": {"path": str(path), **section}}


def _set(key: str, row: int, value, dtype=None):
    def change(arrays):
        if dtype is not None:
            arrays[key] = arrays[key].astype(dtype)
        arrays[key][row] = value
    return change


def medmnist_object_labels(tmp):
    def change(arrays):
        arrays["train_labels"] = np.array([[1], [0]] * 6, dtype=object)
    return medmnist(tmp, change)


def medmnist_empty_split(tmp):
    def change(arrays):
        arrays["val_images"], arrays["val_labels"] = arrays["val_images"][:0], arrays["val_labels"][:0]
    return medmnist(tmp, change)


def medmnist_wrong_length(tmp):
    def change(arrays):
        arrays["train_labels"] = arrays["train_labels"][:-1]
    return medmnist(tmp, change)


def medmnist_multi_hot_not_binary(tmp):
    def change(arrays):
        for split in ("train", "val", "test"):
            arrays[f"{split}_labels"] = np.eye(3, dtype=np.uint8)[np.arange(12) % 3]
        arrays["test_labels"][5, 0] = 2
    return medmnist(tmp, change, flag="mylabels")


def medmnist_class_missing_from_test(tmp):
    def change(arrays):
        arrays["test_labels"][:] = 0
    return medmnist(tmp, change)


def medmnist_string_labels(tmp):
    def change(arrays):
        arrays["train_labels"] = arrays["train_labels"].astype(str)
    return medmnist(tmp, change)


def not_an_npz(tmp):
    (tmp / "mine.npz").write_text("not a zip")
    return {"source": "medmnist", "medmnist": {"path": str(tmp / "mine.npz")}}


def nih(tmp, change: Callable[[pd.DataFrame], pd.DataFrame] | None = None, **section) -> dict:
    csv, images = nih_fixture(tmp)
    if change is not None:
        change(pd.read_csv(csv, dtype=str, keep_default_na=False)).to_csv(csv, index=False)
    return {"source": "nih", "nih": {"csv": str(csv), "images": str(images), **section}}


def nih_blank(column: str, row: int):
    def change(entries):
        entries.loc[row, column] = ""
        return entries
    return change


def nih_fifo(tmp):
    section = nih(tmp)
    image = Path(section["nih"]["images"]) / "train" / "00000002_000.png"
    image.unlink()
    os.mkfifo(image)
    return section


def dicom_classes(root: Path, classes: tuple[str, ...] = ("normal", "nodule"), n: int = 6, side: int = 24) -> Path:
    images = smooth_images(n * len(classes), side, seed=8)[:, 0].astype(np.uint16) * 16
    for c, class_dir in enumerate(classes):
        for i in range(n):
            write_dicom(root / class_dir / f"{class_dir[0]}{i}.dcm", images[c * n + i], patient_id=f"P{c}{i}")
    return root


def dicom(root: Path, **extra) -> dict:
    return {"source": "dicom", "dicom": {"root": str(root)}, **extra}


def dicom_patient_named_file(tmp):
    root = dicom_classes(tmp / "d")
    (root / "normal" / "DOE_JANE_chest.dcm").write_bytes(b"\0" * 300)
    return dicom(root)


def dicom_fifo(tmp):
    root = dicom_classes(tmp / "d")
    os.mkfifo(root / "nodule" / "x.dcm")
    return dicom(root)


def dicom_empty_class(tmp):
    root = dicom_classes(tmp / "d")
    (root / "effusion").mkdir()
    return dicom(root)


# (id, builder, exit code, fragments the message must contain, fragments it must not contain)
CASES = [
    # class folders
    ("empty-class-folder", empty_class_folder, 1, ["data.folders.root=", "class folder(s) ['c'] hold no files"], []),
    ("single-class", single_class, 1, ["data.folders.root=", "1 class(es) ['a']", "at least 2 classes"], []),
    ("hidden-only-class-folder", hidden_only_class, 1, ["class folder(s) ['c'] hold no files"], []),
    ("symlink-loop", symlink_loop, 1, ["a/loop: a link to a folder already walked"], []),
    ("link-into-other-class", link_into_other_class, 1, ["b/more: a link to a folder already walked", "as a"], []),
    ("file-link-across-classes", file_link_across_classes, 1,
     ["b/x.png: the same file (a link) as one in another class folder; first reached as a/0.png"], []),
    ("broken-link", broken_link, 1, ["a/gone.png: a broken link"], []),
    ("fifo", fifo, 1, ["a/x.png: a FIFO, not a regular file"], []),
    ("fifo-skipped-class-empty", fifo_skipped_is_no_hang, 1, ["class(es) ['b'] have no images"], []),
    ("decompression-bomb", decompression_bomb, 1, ["a/bomb.png: larger than data.max_image_pixels=50,000,000"], []),
    ("over-max-image-pixels", over_max_pixels, 1,
     ["a/big.png: 8000 x 8000 = 64,000,000 pixels, more than data.max_image_pixels=50,000,000"], []),
    ("png-under-jpg", png_under_jpg, 1, ["a/x.jpg: content is PNG but the extension is .jpg", "data.accept_by_content"], []),
    ("all-bad-class-skipped", all_bad_class_skipped, 1, ["data.folders.root=", "class(es) ['b'] have no images"], []),
    ("kaggle-names-redacted", kaggle_bad_name, 1, ["train/PNEUMONIA/#", "name has both or neither", "data.redact_paths"],
     ["person", "fungus"]),
    ("patient-pattern-names-redacted", patient_named_file, 1, ["a/#", "not an image PIL can identify"], ["SMITH", "JOHN"]),
    ("redact-off-names-files", redact_off_names_files, 1, ["a/SMITH_JOHN_1.png: not an image"], []),
    # params of the data-source keys
    ("max-image-pixels-too-small", lambda tmp: {"max_image_pixels": 10}, 2, ["data.max_image_pixels=10", "784"], []),
    ("max-image-pixels-over-pil", lambda tmp: {"max_image_pixels": 10**9}, 2, ["data.max_image_pixels=1000000000"], []),
    ("redact-paths-not-bool", lambda tmp: {"redact_paths": "maybe"}, 2, ["data.redact_paths='maybe'", "'auto'"], []),
    ("accept-by-content-not-bool", lambda tmp: {"accept_by_content": "yes"}, 2, ["data.accept_by_content='yes'"], []),
    ("nih-one-finding-multilabel", lambda tmp: {"nih": {"findings": ["Cardiomegaly"]}}, 2,
     ["data.nih.findings=['Cardiomegaly']", "label_mode: binary"], []),
    # MedMNIST files
    ("medmnist-label-255", lambda tmp: medmnist(tmp, _set("train_labels", 3, 255)), 1,
     ["mine.npz", "train_labels has 1 label(s) beyond the class count", "rows [3]: [255]", "'pneumoniamnist' has 2 classes"], []),
    ("medmnist-label-255-own-flag", lambda tmp: medmnist(tmp, _set("train_labels", 3, 255), flag="mine"), 1,
     ["mine.npz", "labels run up to 255", "have no image in any split"], []),
    ("medmnist-nan-label", lambda tmp: medmnist(tmp, _set("val_labels", 2, np.nan, np.float32)), 1,
     ["mine.npz", "val_labels: 1 row(s) with NaN", "rows [2]"], []),
    ("medmnist-fractional-label", lambda tmp: medmnist(tmp, _set("val_labels", 4, 0.5, np.float64)), 1,
     ["val_labels", "non-integer"], []),
    ("medmnist-negative-label", lambda tmp: medmnist(tmp, _set("test_labels", 1, -1, np.int64)), 1,
     ["mine.npz", "test_labels has 1 negative label(s)", "rows [1]"], []),
    ("medmnist-object-labels", medmnist_object_labels, 1, ["mine.npz", "train_labels cannot be read", "Python objects"], []),
    ("medmnist-string-labels", medmnist_string_labels, 1, ["train_labels has dtype <U", "expected integer class indices"], []),
    ("medmnist-empty-split", medmnist_empty_split, 1, ["mine.npz", "the val split is empty", "(0, 28, 28)"], []),
    ("medmnist-label-count", medmnist_wrong_length, 1, ["train_labels has shape (11, 1); expected (12,)"], []),
    ("medmnist-multi-hot-not-0-1", medmnist_multi_hot_not_binary, 1, ["test_labels has 1 row(s) with values other than 0/1"], []),
    ("medmnist-class-missing-from-test", medmnist_class_missing_from_test, 1,
     ["mine.npz", "class 'pneumonia' has no images in the test split"], []),
    ("medmnist-single-class-subset", lambda tmp: medmnist(tmp, lambda a: None, classes=["normal"]), 1,
     ["mine.npz", "data.medmnist.classes=['normal']", "1 class(es)"], []),
    ("medmnist-not-npz", not_an_npz, 1, ["mine.npz' is not a readable .npz file"], []),
    # NIH
    ("nih-header-only-csv", lambda tmp: nih(tmp, lambda e: e.iloc[:0]), 1,
     ["data.nih.csv=", "Data_Entry_2017.csv' has a header but no rows"], []),
    ("nih-empty-patient-id", lambda tmp: nih(tmp, nih_blank("Patient ID", 4)), 1,
     ["Data_Entry_2017.csv", "1 row(s) with an empty 'Patient ID'", "csv row 6"], []),
    ("nih-empty-image-index", lambda tmp: nih(tmp, nih_blank("Image Index", 0)), 1,
     ["Data_Entry_2017.csv", "empty 'Image Index'", "csv row 2"], []),
    ("nih-fifo", nih_fifo, 1, ["data.nih.images=", "csv row", "a FIFO, not a regular file"], ["00000002_000"]),
    ("nih-binary-no-finding-only", lambda tmp: nih(tmp, lambda e: e.assign(**{"Finding Labels": "No Finding"}),
                                                   label_mode="binary"), 1,
     ["data.nih.csv=", "class(es) ['finding'] have no images"], []),
    # DICOM
    ("dicom-single-class", lambda tmp: dicom(dicom_classes(tmp / "d", ("normal",))), 1,
     ["data.dicom.root=", "1 class(es) ['normal']"], []),
    ("dicom-too-large", lambda tmp: dicom(dicom_classes(tmp / "d", side=30), max_image_pixels=800), 1,
     ["nodule/#0: 30 x 30 x 1 frame(s) = 900 pixels, more than data.max_image_pixels=800"], []),
    ("dicom-patient-named-file", dicom_patient_named_file, 1, ["normal/#0: not a DICOM file"], ["DOE", "JANE"]),
    ("dicom-fifo", dicom_fifo, 1, ["a FIFO, not a regular file"], []),
    ("dicom-empty-class-folder", dicom_empty_class, 1, ["data.dicom.root=", "class folder(s) ['effusion'] hold no files"], []),
]


@pytest.mark.parametrize(("builder", "code", "must", "must_not"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_data_fails_naming_it_and_leaves_nothing(tmp_path, monkeypatch, capsys, builder, code, must, must_not):
    data = builder(tmp_path)
    project = tmp_path / "project"
    got, _, err = run_prepare(project, data, monkeypatch, capsys)
    assert got == code, err
    for fragment in must:
        assert fragment in err, f"{fragment!r} not in: {err}"
    for fragment in must_not:
        assert fragment not in err, f"{fragment!r} in: {err}"
    assert "Traceback" not in err
    assert not (project / "data" / "prepared").exists()
    assert not list((project / "data").glob(".prepared.tmp-*")) if (project / "data").exists() else True


# ----- what these inputs do when they are accepted ----------------------------------------------


def prepared_meta(project: Path) -> dict:
    return json.loads((project / "data" / "prepared" / "meta.json").read_text())


def test_medmnist_1d_labels_are_class_indices(tmp_path):
    from test_sources import data_config
    from ganaug.data.sources import SOURCES

    arrays = medmnist_arrays()
    for split in ("train", "val", "test"):
        arrays[f"{split}_labels"] = arrays[f"{split}_labels"][:, 0].astype(np.int32)  # (N,)
    np.savez(tmp_path / "flat.npz", **arrays)
    raw = SOURCES["medmnist"](data_config(source="medmnist", image_size=28, medmnist={"path": str(tmp_path / "flat.npz")}))
    assert raw.class_names == ["normal", "pneumonia"] and raw.labels.dtype == np.int64
    assert raw.labels.tolist() == (np.arange(12) % 2).tolist() * 3


def test_accept_by_content_reads_png_under_jpg_and_records_it(tmp_path, monkeypatch, capsys):
    data = png_under_jpg(tmp_path)
    code, _, err = run_prepare(tmp_path / "project", {**data, "accept_by_content": True, "val_fraction": 0.25,
                                                      "test_fraction": 0.25}, monkeypatch, capsys)
    assert code == 0, err
    source = prepared_meta(tmp_path / "project")["source"]
    assert source["accepted_by_content"] == {"enabled": True, "count": 1, "files": [{"file": "a/x.jpg", "content": "PNG"}]}


def test_hidden_folders_and_files_are_counted(tmp_path):
    from test_sources import data_config
    from ganaug.data.sources import SOURCES

    root = two_classes(tmp_path / "t")
    for name in ("0-checkpoint.png", "1-checkpoint.png"):
        write_image(root / "a" / ".ipynb_checkpoints" / name, smooth_images(1, 32, 6)[0, 0])
    (root / "b" / ".DS_Store").write_bytes(b"\0")
    (root / ".hidden_top").write_bytes(b"\0")
    raw = SOURCES["folders"](data_config(source="folders", folders={"root": str(root)}))
    assert raw.source["hidden_files_ignored"] == 4 and raw.source["hidden_folders_ignored"] == 1
    assert len(raw.images) == 12


def test_symlink_loop_skipped_is_counted_and_does_not_inflate_a_class(tmp_path, monkeypatch, capsys):
    data = symlink_loop(tmp_path)
    code, out, err = run_prepare(tmp_path / "project", {**data, "on_bad_file": "skip", "val_fraction": 0.25,
                                                        "test_fraction": 0.25}, monkeypatch, capsys)
    assert code == 0, err
    meta = prepared_meta(tmp_path / "project")
    assert meta["source"]["images_read"]["all"] == {"a": 6, "b": 6}
    assert meta["skipped_files"]["count"] == 1
    assert meta["skipped_files"]["files"][0]["file"] == "a/loop"
    assert "skipped 1 bad file(s)" in out


def test_file_links_in_one_class_are_kept_and_counted(tmp_path):
    """DVC's symlink / hardlink caches share one file among identical images: both stay, counted."""
    from test_sources import data_config
    from ganaug.data.sources import SOURCES

    root = two_classes(tmp_path / "t")
    os.symlink(root / "a" / "0.png", root / "a" / "same.png")
    os.link(root / "b" / "0.png", root / "b" / "hard.png")
    raw = SOURCES["folders"](data_config(source="folders", folders={"root": str(root)}))
    assert len(raw.images) == 14 and raw.source["files_sharing_a_real_file"] == 2


def test_redacted_names_reach_meta_json_and_the_leakage_report(tmp_path, monkeypatch, capsys):
    root = kaggle_tree(tmp_path / "kaggle", test_overlap=True)
    write_image(root / "train" / "NORMAL" / "scan_7.jpeg", smooth_images(1, 40, 6)[0, 0])  # no patient id: skipped
    data = {"source": "folders", "on_bad_file": "skip", "on_leakage": "drop", "val_fraction": 0.3,
            "folders": {"root": str(root), "label_rule": "kaggle_binary"}}
    code, out, err = run_prepare(tmp_path / "project", data, monkeypatch, capsys)
    assert code == 0, err
    text = (tmp_path / "project" / "data" / "prepared" / "meta.json").read_text()
    for name in ("person", "IM-0", "scan_7", "jpeg"):
        assert name not in text and name not in out + err
    meta = json.loads(text)
    assert meta["source"]["redact_paths"] is True
    assert meta["skipped_files"]["files"] == [{"file": "train/NORMAL/#6", "reason": "kaggle_binary: no patient id in the name (expected IM-<n>-… or NORMAL2-IM-<n>-…)"}]
    # test/PNEUMONIA sorted: person1_virus_11 (#0), person8_bacteria_9, person9_virus_10
    overlap = meta["leakage"]["patient_overlap"][0]["images"]
    assert overlap["test"] == ["test/PNEUMONIA/#0"]
    code, _, _ = run_prepare(tmp_path / "project2", {**data, "redact_paths": False}, monkeypatch, capsys)
    assert code == 0
    assert "test/PNEUMONIA/person1_virus_11.jpeg" in (tmp_path / "project2" / "data" / "prepared" / "meta.json").read_text()
