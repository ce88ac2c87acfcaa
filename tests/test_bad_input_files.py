"""Bad input files: a generator, classifier or GAN checkpoint that is malicious, empty, text,
truncated or of another layout, and an MLflow store that is not one (or belongs to a moved
project). Each case gets one line naming the file and what was expected, runs nothing from
the file (a malicious pickle's payload would create a marker file), and leaves no output or
temp folder behind."""

from __future__ import annotations

import dataclasses
import os
import pickle
import shlex
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from ganaug import cli
from ganaug.classify.models import create_classifier
from ganaug.classify.train import save_classifier
from ganaug.config import GANConfig, to_dict
from ganaug.data.packed import PackedDataset, Split, save_packed
from ganaug.gan.generator import TrainedGenerator
from ganaug.gan.train import build_generator, load_checkpoint, training_loop
from ganaug.torchfile import BadFileError
from ganaug.tracking import mlflow_utils

pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the raw-pickle cases

GENERATOR = Path("models/gan/generator.pt")
CLASSIFIER = Path("models/reference/model.pt")
CHECKPOINT = Path("checkpoint.pt")
STORE = Path("store/mlflow.db")
MARKER = "payload-ran"  # created in the project folder if a payload runs


class Payload:
    """Unpickling this runs a shell command (the attack: a swapped .pt file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def tiny_cfg() -> GANConfig:
    return dataclasses.replace(GANConfig(), latent_dim=8, base_channels=4, epochs=1, batch_size=8, seed=0, device="cpu")


def tiny_dataset() -> PackedDataset:
    rng = np.random.default_rng(0)

    def split(n: int) -> Split:
        return Split(rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8), np.arange(n) % 2)

    return PackedDataset({"train": split(12), "val": split(6), "test": split(6)}, ["normal", "pneumonia"],
                         {"name": "test"}, {"image_size": 28})


@pytest.fixture(scope="module")
def good_project(tmp_path_factory) -> Path:
    """A project where `ganaug synthesize` reads a good generator and reference classifier, a
    good GAN checkpoint, and an MLflow store made by `mlflow_utils.setup`."""
    root = tmp_path_factory.mktemp("good")
    meta = save_packed(tiny_dataset(), root / "data" / "prepared")
    network = build_generator(tiny_cfg(), 28, 0, 1).eval()
    TrainedGenerator(network, to_dict(tiny_cfg()), ["normal", "pneumonia"], [0], False,
                     {"dataset_hash": meta["dataset_hash"]}).save(root / GENERATOR)
    save_classifier(create_classifier("simple_cnn", 2), root / CLASSIFIER, "simple_cnn", 2, ["normal", "pneumonia"], 1,
                    {"extractor": "simple_cnn@test"})
    training_loop(tiny_dataset().train.images[:8], None, 0, tiny_cfg(), root / CHECKPOINT, torch.device("cpu"))
    # the tiny generator has no final evaluation: the gate is overridden so that the classifier file is read
    (root / "params.yaml").write_text("synthesize:\n  seed: 0\n  override_gate: true\n")
    old_uri = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / STORE}"
    try:
        mlflow_utils.setup()
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI") if old_uri is None else os.environ.update(MLFLOW_TRACKING_URI=old_uri)
    return root


@pytest.fixture(autouse=True)
def _forget_tracking_uri():
    yield
    mlflow.set_tracking_uri(None)  # setup() points the process at the case's store


# --- what each case does to the target file ------------------------------------------------

def malicious_torch_save(path: Path, project: Path) -> None:
    torch.save({"format": "ganaug-generator-v1", "state_dict": Payload(project / MARKER)}, path)


def malicious_raw_pickle(path: Path, project: Path) -> None:
    path.write_bytes(pickle.dumps({"state_dict": Payload(project / MARKER)}))


def zero_bytes(path: Path, project: Path) -> None:
    path.write_bytes(b"")


def text(path: Path, project: Path) -> None:
    path.write_text("model weights are in the other folder\n")


def truncated(path: Path, project: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def without(key: str) -> Callable[[Path, Path], None]:
    def drop_key(path: Path, project: Path) -> None:
        blob = torch.load(path, weights_only=True)
        del blob[key]
        torch.save(blob, path)
    return drop_key


def with_value(key: str, value: object) -> Callable[[Path, Path], None]:
    def set_key(path: Path, project: Path) -> None:
        blob = torch.load(path, weights_only=True)
        blob[key] = value
        torch.save(blob, path)
    return set_key


def random_bytes(path: Path, project: Path) -> None:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def foreign_sqlite(path: Path, project: Path) -> None:
    path.unlink()
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE patients (id INTEGER, name TEXT)")


def moved_project(path: Path, project: Path) -> None:
    """The store of a project that lived elsewhere: its experiment's artifact root is the old folder."""
    with sqlite3.connect(path) as db:
        db.execute("UPDATE experiments SET artifact_location = 'file:///old/place/ganaug/mlartifacts'")


# (file, damage, what the one-line message must say besides the file name)
SYNTHESIZE = ["synthesize", "--params", "params.yaml"]
PROMOTE = ["promote"]
CASES = [
    (GENERATOR, malicious_torch_save, SYNTHESIZE, "refuses (Trying to load unsupported GLOBAL posix.system"),
    (GENERATOR, malicious_raw_pickle, SYNTHESIZE, "safe (weights-only) loader refuses"),
    (GENERATOR, zero_bytes, SYNTHESIZE, "is empty (0 bytes); expected a ganaug generator file"),
    (GENERATOR, text, SYNTHESIZE, "is not a torch file (it starts with b'model we'); expected a ganaug generator"),
    (GENERATOR, truncated, SYNTHESIZE, "is not a readable torch file ("),
    (GENERATOR, without("state_dict"), SYNTHESIZE, r"lacks keys ['state_dict']; expected a ganaug generator file"),
    (GENERATOR, with_value("resolution", "28"), SYNTHESIZE, "wrong type ('resolution' is str)"),
    (GENERATOR, with_value("format", "ganaug-classifier-v1"), SYNTHESIZE, "has format 'ganaug-classifier-v1'"),
    (GENERATOR, with_value("config", {"arch": "stylegan9"}), SYNTHESIZE, "has gan.arch='stylegan9'; this version builds ['acgan', 'cgan', 'cyclegan', 'dcgan', 'stylegan2']"),
    (CLASSIFIER, malicious_torch_save, SYNTHESIZE, "refuses (Trying to load unsupported GLOBAL posix.system"),
    (CLASSIFIER, zero_bytes, SYNTHESIZE, "is empty (0 bytes); expected a ganaug classifier file"),
    (CLASSIFIER, text, SYNTHESIZE, "is not a torch file"),
    (CLASSIFIER, truncated, SYNTHESIZE, "is not a readable torch file"),
    (CLASSIFIER, without("arch"), SYNTHESIZE, r"lacks keys ['arch']; expected a ganaug classifier file"),
    (CLASSIFIER, with_value("arch", "no_such_net"), SYNTHESIZE, "describes a network this version cannot build (arch='no_such_net': expected 'simple_cnn' or a timm model name"),
    (CLASSIFIER, with_value("info", {}), SYNTHESIZE, "has no info.extractor: expected the reference network"),
    (CLASSIFIER, with_value("n_classes", 5), SYNTHESIZE, "does not match its arch='simple_cnn' network (Error(s) in loading state_dict for SimpleCNN: size mismatch"),
    (CHECKPOINT, malicious_torch_save, None, "refuses (Trying to load unsupported GLOBAL posix.system"),
    (CHECKPOINT, malicious_raw_pickle, None, "safe (weights-only) loader refuses"),
    (CHECKPOINT, zero_bytes, None, "is empty (0 bytes); expected a GAN checkpoint"),
    (CHECKPOINT, text, None, "is not a torch file"),
    (CHECKPOINT, truncated, None, "is not a readable torch file"),
    (CHECKPOINT, without("opt_g"), None, r"lacks keys ['opt_g']; expected a GAN checkpoint"),
    (STORE, random_bytes, PROMOTE, "is not an SQLite database"),
    (STORE, text, PROMOTE, "is not an SQLite database (it starts with b'model we'); expected an MLflow SQLite store"),
    (STORE, truncated, PROMOTE, "is a damaged SQLite database, or cannot be read (database disk image is malformed)"),
    (STORE, foreign_sqlite, PROMOTE, "an SQLite database without MLflow's tables (it has ['patients'])"),
    (STORE, moved_project, PROMOTE, "keeps its artifacts in '/old/place/ganaug/mlartifacts', outside"),
]


def _listing(root: Path) -> set[str]:
    # the store's lock file is made beside it on first use: not an output
    return {str(p.relative_to(root)) for p in root.rglob("*") if not p.name.endswith(".lock")}


@pytest.mark.parametrize("target, damage, command, says", CASES,
                         ids=[f"{t.stem}-{getattr(d, '__name__', 'x')}-{i}" for i, (t, d, _, _) in enumerate(CASES)])
def test_bad_file_gives_one_line_naming_it(good_project, tmp_path, monkeypatch, capsys, target, damage, command, says):
    project = tmp_path / "project"
    shutil.copytree(good_project, project)
    monkeypatch.chdir(project)
    monkeypatch.delenv("GANAUG_DEBUG", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / STORE}")
    damage(project / target, project)
    before = _listing(project)

    if command is None:  # the checkpoint: train_gan's loader (the stage needs a full reference set up)
        with pytest.raises(BadFileError) as caught:
            load_checkpoint(target)
        message = str(caught.value)
    else:
        assert cli.main(command) == 1
        err = capsys.readouterr().err
        assert "Traceback" not in err
        message = err.strip().splitlines()[-1]
        assert message.startswith(f"ganaug {command[0]}: error: ")

    assert "\n" not in message
    assert f"{str(target)!r}" in message or str(project / target) in message, message
    assert says in message, message
    assert not (project / MARKER).exists(), "the file's payload ran"
    assert _listing(project) == before  # no output, no temp folder (.<name>.tmp-*)
