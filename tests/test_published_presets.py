"""The published studies' presets (presets/published/*.yaml, `bin/ganaug preset NAME`): each
validates over params.yaml and says which data it expects; each runs end to end through
`dvc exp run` on tiny stand-in data (a Kaggle-named folder tree, a class-folder brain MRI tree, a
MedMNIST-layout .npz, an NIH-style CSV + PNGs, all generated here); a sweep runs one named
experiment per value without retraining the GAN, and `--table` reads the sweep back from DVC."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ruamel.yaml import YAML

from ganaug.cli import main
from ganaug.config import ConfigError
from ganaug.presets import PUBLISHED_DIR, load_published, preset_runs, published_names, results_table

from conftest import REPO, SHARED_DATA, dvc_project, smooth_images
from test_sources import write_image

NAMES = published_names(REPO)


def test_the_four_studies_and_the_brain_mri_variant_are_published():
    assert NAMES == ["acgan_brain_mri", "acgan_three_class", "dcgan_minority_kaggle", "healthgan_likeness",
                     "nih_multilabel"]


@pytest.mark.parametrize("name", NAMES)
def test_each_preset_validates_over_params_yaml_and_documents_itself(name):
    preset = load_published(name, REPO)
    runs = preset_runs(preset, REPO / "params.yaml", [], None, None)  # every run validated whole (ConfigError names the key)
    assert len(runs) == max(1, len(preset.sweep_values)) and preset.expects
    header = preset.path.read_text().split("\npreset:")[0]
    for part in ("Published claim:", "Data:", "Differs from the paper:"):
        assert part in header, f"{preset.path}: the header comment lacks {part!r}"


def test_the_likeness_preset_sweeps_ten_thresholds_one_named_experiment_each():
    preset = load_published("healthgan_likeness", REPO)
    assert preset.sweep_key == "synthesize.filter_threshold"
    assert preset.sweep_values == pytest.approx([0.80 + 0.01 * k for k in range(10)])
    runs = preset_runs(preset, REPO / "params.yaml", ["classifier.epochs=2"], "[0.8, 0.85]", "pm")
    assert [name for name, _ in runs] == ["pm-0.8", "pm-0.85"]
    for (_, args), value in zip(runs, ("0.8", "0.85")):
        pairs = dict(a.split("=", 1) for a in args[1::2])
        assert pairs["synthesize.filter_threshold"] == value and pairs["classifier.epochs"] == "2"
        assert pairs["classifier.folds"] == "3" and pairs["synthesize.filter"] == "ssim_likeness"


def write_preset(root: Path, name: str, text: str) -> None:
    (root / PUBLISHED_DIR).mkdir(parents=True, exist_ok=True)
    (root / PUBLISHED_DIR / f"{name}.yaml").write_text(text)


@pytest.mark.parametrize("text, fragment", [
    ("data: {image_size: 28}\n", "preset.expects"),
    ("preset: {expects: x, sweeps: {}}\n", "preset.sweeps: unknown key"),
    ("preset: {expects: x, sweep: {gan.lr_g: [0.1], gan.lr_d: [0.1]}}\n", "expected one params key"),
    ("preset: {expects: x, sweep: {gan.lr_g: [1.0e-4, 0.0001]}}\n", "expected distinct values"),
    ("preset: {expects: x, sweep: {gan.lr_g: []}}\n", "expected a non-empty list"),
])
def test_a_bad_preset_section_fails_naming_the_key(tmp_path, text, fragment):
    write_preset(tmp_path, "bad", text)
    with pytest.raises(ConfigError, match=fragment):
        load_published("bad", tmp_path)


def test_sweep_values_and_overrides_are_validated_before_dvc(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert main(["preset", "healthgan_likeness", "--sweep", "[0.8, 2.0]", "--dry-run"]) == 2
    assert "synthesize.filter_threshold=2.0" in capsys.readouterr().err
    assert main(["preset", "healthgan_likeness", "-S", "synthesize.filter_threshold=0.9", "--dry-run"]) == 2
    assert "give its values with --sweep" in capsys.readouterr().err
    assert main(["preset", "nih_multilabel", "--sweep", "[1]", "--dry-run"]) == 2
    assert "has no sweep" in capsys.readouterr().err
    assert main(["preset", "acgan_three_class", "-S", "gan.bogus=1", "--dry-run"]) == 2
    assert "gan.bogus" in capsys.readouterr().err
    assert main(["preset", "chestmnist", "--dry-run"]) == 2
    assert "published presets: acgan_brain_mri" in capsys.readouterr().err


def test_each_run_starts_from_the_committed_params_not_a_previous_experiments(tmp_path, monkeypatch, capsys):
    """`dvc exp run` leaves an experiment's params in the workspace: a preset puts the committed
    params.yaml back before each of its runs, and validates over it."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"}
    for command in (["git", "init", "-q"], ["git", "add", "params.yaml"], ["git", "commit", "-qm", "params"]):
        subprocess.run(command, check=True, env={**os.environ, **env})
    committed = (tmp_path / "params.yaml").read_text()
    write_preset(tmp_path, "p", "preset: {expects: x, sweep: {gan.lr_g: [1.0e-4, 2.0e-4]}}\ngan: {epochs: 3}\n")
    previous = YAML(typ="safe", pure=True).load(committed)
    previous["reference"]["epochs"], previous["gan"]["epochs"] = 2, 9

    def leave_previous_params() -> None:  # what an experiment leaves in the workspace
        with open(tmp_path / "params.yaml", "w") as f:
            YAML().dump(previous, f)

    leave_previous_params()
    calls = []

    def fake_dvc(command, env):
        calls.append((command, (tmp_path / "params.yaml").read_text()))
        leave_previous_params()
        return 0

    monkeypatch.setattr("ganaug.presets.subprocess.call", fake_dvc)
    # the command looks for ./.venv/bin/dvc, then dvc on PATH: this project has no .venv, the test's venv has dvc
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    assert main(["preset", "p"]) == 0
    assert [c[c.index("-n") + 1] for c, _ in calls] == ["p-0.0001", "p-0.0002"]
    assert all(text == committed for _, text in calls)  # each run started from the committed file
    assert "restored to the committed version (it held other values of gan.epochs, reference.epochs" in capsys.readouterr().out
    previous["gan"]["bogus"] = 1
    leave_previous_params()  # a key only the workspace has does not reach validation: the committed file is the base
    assert main(["preset", "p", "--dry-run"]) == 0
    assert "differs from the committed version" in capsys.readouterr().err


def test_missing_data_fails_before_dvc_naming_the_key_and_what_the_preset_expects(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    absent = tmp_path / "no_brain_mri"
    assert main(["preset", "acgan_brain_mri", "-S", f"data.folders.root={absent}"]) == 1
    err = capsys.readouterr().err
    assert f"data.folders.root='{absent}' does not exist" in err and "a brain MRI set as class folders" in err
    assert main(["preset", "acgan_brain_mri", "-S", f"data.folders.root={absent}", "--dry-run"]) == 0  # a note only
    out, err = capsys.readouterr()
    assert "note:" in err and shlex.split(out)[1:5] == ["exp", "run", "-n", "acgan_brain_mri"]


def test_list_names_every_preset_with_its_data(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert main(["preset", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(f"{name}\n    expects: " in out for name in NAMES) and "Sweep: synthesize.filter_threshold" in out


def test_list_and_a_dry_run_import_no_torch():
    """`ganaug preset --list` and a simple_cnn preset's dry run stay as light as `ganaug --help`
    (a timm classifier name is checked against timm, which imports torch)."""
    code = (
        "import sys\n"
        "from ganaug.cli import main\n"
        "assert main(['preset', '--list']) == 0\n"
        "assert main(['preset', 'dcgan_minority_kaggle', '--dry-run']) == 0\n"
        "heavy = [m for m in ('torch', 'timm', 'mlflow', 'dvc') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["dcgan_minority_kaggle", "healthgan_likeness", "nih_multilabel", "acgan_three_class"])
def test_the_shared_data_presets_find_their_data(name, monkeypatch, capsys):
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent (the presets read the shared real sets there)")
    monkeypatch.chdir(REPO)
    assert main(["preset", name, "--dry-run"]) == 0
    assert "note:" not in capsys.readouterr().err


# ------------------------------------------------------------------------ through DVC, on tiny stand-ins

# every preset's arms and data as published; the training made tiny (a 1-epoch GAN makes noise: no diversity stop,
# the quality gate overridden and recorded)
TINY = ["reference.epochs=1", "gan.epochs=1", "gan.eval_every=1", "gan.n_eval=16", "gan.batch_size=8",
        "gan.base_channels=4", "gan.latent_dim=8", "gan.min_diversity=0.0", "gan.device=cpu",
        "synthesize.override_gate=true", "classifier.epochs=1", "classifier.seeds=[0]", "classifier.device=cpu",
        "evaluate.n_bootstrap=100", "tracking.system_metrics=false"]


def kaggle_tree(root: Path, per_class: int = 16, size: int = 32) -> Path:
    """train/test x NORMAL/PNEUMONIA with Kaggle file names: per_class normal, bacterial and viral
    images, one patient each, a quarter of them under test."""
    pixels = iter(smooth_images(3 * per_class, size, seed=11)[:, 0])
    for i in range(per_class):
        split = "test" if i % 4 == 0 else "train"
        write_image(root / split / "NORMAL" / f"IM-{1000 + i:04d}-0001.jpeg", next(pixels))
        write_image(root / split / "PNEUMONIA" / f"person{i + 1}_bacteria_{i + 1}.jpeg", next(pixels))
        write_image(root / split / "PNEUMONIA" / f"person{i + 101}_virus_{i + 101}.jpeg", next(pixels))
    return root


def brain_tree(root: Path, size: int = 32) -> Path:
    """Training/Testing x glioma / meningioma / notumor PNGs, as brain MRI sets come."""
    pixels = iter(smooth_images(48, size, seed=12)[:, 0])
    for split, n in (("Training", 12), ("Testing", 4)):
        for tumour in ("glioma", "meningioma", "notumor"):
            for i in range(n):
                write_image(root / split / tumour / f"{split[:2]}_{i}.png", next(pixels))
    return root


def medmnist_npz(path: Path) -> Path:
    """A PneumoniaMNIST-layout .npz at 28 px: (N, 28, 28) uint8 images, (N, 1) labels, 1:2 normal:pneumonia."""
    images = smooth_images(108, 28, seed=13)[:, 0]
    arrays, start = {}, 0
    for split, n in (("train", 60), ("val", 24), ("test", 24)):
        arrays[f"{split}_images"] = images[start:start + n]
        arrays[f"{split}_labels"] = (np.arange(n) % 3 != 0).astype(np.uint8)[:, None]
        start += n
    np.savez(path, **arrays)
    return path


FINDINGS = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
            "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"]


def nih_set(root: Path, per_finding: int = 7, size: int = 28) -> tuple[Path, Path]:
    """An NIH-style Data_Entry_2017.csv and PNGs, one patient per image: each of the 14 findings on
    per_finding images (prepare needs every finding in train, val and test), and as many with no finding."""
    labels = [FINDINGS[k % 14] for k in range(14 * per_finding)] + ["No Finding"] * per_finding
    pixels = smooth_images(len(labels), size, seed=14)[:, 0]
    rows = []
    for k, found in enumerate(labels):
        name = f"{k + 1:08d}_000.png"
        write_image(root / "images" / name, pixels[k], mode="RGB")
        rows.append({"Image Index": name, "Finding Labels": found, "Patient ID": k + 1})
    csv = root / "Data_Entry_2017.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv, root / "images"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """One git + DVC project (this repository's pipeline, params.yaml and presets) that every
    preset's experiments run in, one after another; and the tiny stand-in data sets."""
    root = tmp_path_factory.mktemp("published")
    data = tmp_path_factory.mktemp("published_data")
    sh, env = dvc_project(root, YAML().load((REPO / "params.yaml").read_text()), copy=("presets",))
    stand_ins = {
        "kaggle": kaggle_tree(data / "chest_xray"),
        "brain": brain_tree(data / "brain_mri"),
        "npz": medmnist_npz(data / "pneumoniamnist.npz"),
        "nih": nih_set(data / "nih"),
    }
    return root, sh, stand_ins


def preset(sh, name: str, *args: str) -> str:
    return sh("bin/ganaug", "preset", name, *args, *(a for t in TINY for a in ("-S", t)))


def ran(output: str, stage: str) -> bool:
    return f"Running stage '{stage}'" in output


def arms_of(root: Path) -> set[str]:
    return set(json.loads((root / "reports/evaluation.json").read_text())["arms"])



pipeline = pytest.mark.slow


@pipeline
def test_dcgan_minority_kaggle_adds_synthetic_normals_beside_the_controls(project):
    root, sh, data = project
    out = preset(sh, "dcgan_minority_kaggle", "-S", "data.image_size=28", "-S", f"data.folders.root={data['kaggle']}")
    assert ran(out, "train_gan") and ran(out, "report")
    assert arms_of(root) == {"real", "balanced", "classic", "synthetic-0.67"}
    manifest = json.loads((root / "data/synthetic/manifest.json").read_text())
    largest = max(manifest["real_train_counts"].values())
    assert manifest["counts"] == {"normal": round(0.67 * largest)}  # the minority class only, 0.67 x the largest
    meta = json.loads((root / "data/prepared/meta.json").read_text())
    assert meta["class_names"] == ["normal", "pneumonia"] and meta["split"]["method"] == "split here"
    assert "dcgan_minority_kaggle" in sh("dvc", "exp", "list", "--name-only")


@pipeline
def test_acgan_three_class_trains_real_fake_and_real_plus_fake(project):
    root, sh, data = project
    out = preset(sh, "acgan_three_class", "-S", "data.image_size=32", "-S", f"data.folders.root={data['kaggle']}")
    assert ran(out, "arm_synthetic@synthetic_only")
    assert arms_of(root) == {"real", "balanced", "classic", "synthetic-1.0", "synthetic_only"}
    meta = json.loads((root / "data/prepared/meta.json").read_text())
    assert meta["class_names"] == ["normal", "bacterial", "viral"]
    assert meta["preprocessing"]["denoise_crop"].startswith("Otsu threshold")  # the step's description when it ran
    manifest = json.loads((root / "data/synthetic/manifest.json").read_text())
    assert set(manifest["counts"]) == {"normal", "bacterial", "viral"}  # AC-GAN: every class
    record = json.loads((root / "models/arms/synthetic_only/metrics.json").read_text())
    assert sum(record["train_counts"]["real"].values()) == 0
    gan = YAML(typ="safe", pure=True).load((root / "models/gan/gan_config.yaml").read_text())
    assert (gan["arch"], gan["optimizer"], gan["lr_g"], gan["lr_d"]) == ("acgan", "rmsprop", 1e-4, 1e-4)


@pipeline
def test_acgan_brain_mri_reads_a_class_folder_tree(project):
    root, sh, data = project
    out = preset(sh, "acgan_brain_mri", "-S", "data.image_size=32", "-S", f"data.folders.root={data['brain']}")
    assert ran(out, "prepare") and ran(out, "evaluate")
    meta = json.loads((root / "data/prepared/meta.json").read_text())
    assert meta["class_names"] == ["glioma", "meningioma", "notumor"]
    assert meta["counts"]["test"]["total"] == 12  # the Testing folder kept as the test split
    assert arms_of(root) == {"real", "balanced", "classic", "synthetic-1.0", "synthetic_only"}


@pipeline
def test_nih_multilabel_compares_macro_auroc_per_finding(project):
    root, sh, data = project
    csv, images = data["nih"]
    preset(sh, "nih_multilabel", "-S", "data.image_size=28", "-S", f"data.nih.csv={csv}", "-S", f"data.nih.images={images}")
    result = json.loads((root / "reports/evaluation.json").read_text())
    assert result["label_kind"] == "multi_hot" and result["metrics"][0] == "roc_auc"
    assert set(result["arms"]) == {"real", "classic", "synthetic-0.5", "synthetic-1.0"}
    assert {"macro", "Effusion"} <= {r["finding"] for r in result["per_finding"]}
    meta = json.loads((root / "data/prepared/meta.json").read_text())
    assert len(meta["class_names"]) == 14  # all of NIH's findings: a 14-output sigmoid head
    params = YAML(typ="safe", pure=True).load((root / "params.yaml").read_text())  # the experiment's, in the workspace
    assert params["data"]["preprocess"]["denoise_crop"] is False and params["arms"]["classic"]["hflip"] is False
    assert params["gan"]["optimizer"] == "adam"  # the committed value: nothing inherited from the AC-GAN presets


@pipeline
def test_the_likeness_sweep_runs_one_experiment_per_threshold_and_trains_the_gan_once(project):
    root, sh, data = project
    out = preset(sh, "healthgan_likeness", "--sweep", "[-1.0, 0.0]", "-S", f"data.medmnist.path={data['npz']}")
    first, second = out.split("running (2/2)")
    assert ran(first, "train_gan") and not ran(second, "train_gan")  # the GAN's params did not change
    assert not ran(second, "arm_real@real") and ran(second, "synthesize") and ran(second, "arm_mixed@synthetic-0.65")
    assert {"healthgan_likeness--1.0", "healthgan_likeness-0.0"} <= set(sh("dvc", "exp", "list", "--name-only").split())
    manifest = json.loads((root / "data/synthetic/manifest.json").read_text())  # the workspace holds the last value's
    assert manifest["filter"]["name"] == "ssim_likeness" and manifest["filter"]["threshold"] == 0.0
    record = json.loads((root / "models/arms/synthetic-0.65/metrics.json").read_text())
    assert record["folds"] == 3 and set(record["seeds"]) == {"0_fold0", "0_fold1", "0_fold2"}  # 3 folds over val

    table = sh("bin/ganaug", "preset", "healthgan_likeness", "--table").splitlines()
    head = [cell.strip() for cell in table[0].strip("|").split("|")]
    rows = [dict(zip(head, (c.strip() for c in line.strip("|").split("|")))) for line in table[2:] if line.startswith("| ")]
    assert [(r["experiment"], r["synthesize.filter_threshold"], r["arm"]) for r in rows] == [
        ("healthgan_likeness--1.0", "-1.0", "synthetic-0_65"), ("healthgan_likeness-0.0", "0.0", "synthetic-0_65")]
    summary = json.loads((root / "metrics/evaluation.json").read_text())["balanced_accuracy_vs_real"]["synthetic-0_65"]
    marked = " (gate overridden)" if manifest["quality_gate"]["overridden"] else ""  # TINY overrides the gate
    assert rows[1]["arm − real"] == f"{summary['diff']:+.3f}"
    assert rows[1]["verdict"] in (f"helped{marked}", f"hurt{marked}", f"no clear difference{marked}")
    assert rows[0]["copy rate pixel"] != "–"  # the first value's set, read from DVC's cache at its experiment
    assert rows[1]["copy rate pixel"] == f"{manifest['memorisation']['memorisation_pixel_copy_rate']:.3f}"
    unfiltered = manifest["unfiltered_candidates"]["unfiltered_memorisation_pixel_copy_rate"]
    assert rows[1]["copy rate pixel, unfiltered"] == f"{unfiltered:.3f}"


def test_the_table_marks_the_verdicts_of_a_gate_overridden_set(monkeypatch):
    """Rows from DVC's records (stubbed here; the slow likeness test reads real ones): an arm trained
    on a synthetic set that failed the quality gate says so beside its verdict, a real-only arm not."""
    experiment = {"name": "dcgan_minority_kaggle", "rev": "abc", "baseline": "97686ed0",
                  "params": {"arms": {"real": ["real", "balanced"]}},
                  "metrics": {"metrics/evaluation.json": {
                      "real_balanced_accuracy": 0.9,
                      "balanced_accuracy_vs_real": {"balanced": {"diff": 0.01, "corrected_low": -0.02, "corrected_high": 0.04},
                                                    "synthetic-0_67": {"diff": 0.05, "corrected_low": 0.01, "corrected_high": 0.09}}}}}
    monkeypatch.setattr("ganaug.presets.dvc_experiments", lambda root: [experiment])
    gates = iter([{"quality_gate": {"overridden": True}}, {"quality_gate": {"overridden": False}}])
    monkeypatch.setattr("ganaug.presets.synthetic_manifest", lambda rev, root: next(gates))
    rows = {line.split(" | ")[1]: line for line in results_table("dcgan_minority_kaggle", root=REPO).splitlines()
            if line.startswith("| dcgan")}
    assert "| helped (gate overridden) |" in rows["synthetic-0_67"] and "| no clear difference |" in rows["balanced"]
    rows = [line for line in results_table("dcgan_minority_kaggle", root=REPO).splitlines() if "synthetic-0_67" in line]
    assert "| helped |" in rows[0]  # the same numbers with a gate that passed
