"""Nothing the project reads can run code: every .pt file loads with weights_only=True, the
registered generator is MLflow models-from-code (loading it unpickles nothing), and outputs
are created with the user's umask. Malicious, damaged and foreign files, case by case:
test_bad_input_files.py."""

from __future__ import annotations

import ast
import dataclasses
import os
import pickle
from pathlib import Path

import cloudpickle
import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from ganaug.classify.models import create_classifier
from ganaug.classify.train import load_classifier, save_classifier
from ganaug.config import GANConfig, to_dict
from ganaug.gan.generator import TrainedGenerator
from ganaug.gan.train import build_generator
from ganaug.io import atomic_dir, atomic_file
from ganaug.tracking import pyfunc_generator

SRC = Path(__file__).resolve().parents[1] / "src" / "ganaug"


def untrained_generator(info: dict | None = None) -> TrainedGenerator:
    cfg = dataclasses.replace(GANConfig(), latent_dim=8, base_channels=4, seed=0)
    torch.manual_seed(0)
    network = build_generator(cfg, 28, 0, 1).eval()
    return TrainedGenerator(network, to_dict(cfg), ["normal", "pneumonia"], [0], False, info or {})


def test_every_torch_load_in_the_package_is_weights_only():
    calls = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "load" and \
                    getattr(node.func.value, "id", None) == "torch":
                safe = any(k.arg == "weights_only" and getattr(k.value, "value", None) is True for k in node.keywords)
                calls.append((f"{path.relative_to(SRC)}:{node.lineno}", safe))
    assert calls, "expected torch.load calls in the package"
    assert [where for where, safe in calls if not safe] == []


def test_numpy_values_in_a_generator_or_classifier_file_still_load_weights_only(tmp_path):
    """Metrics arrive as NumPy scalars; the files keep only plain values."""
    info = {"final_quality": {"fd_domain": np.float64(1.5), "n": np.int64(3)}, "path": tmp_path}
    untrained_generator(info).save(tmp_path / "generator.pt")
    blob = torch.load(tmp_path / "generator.pt", weights_only=True)
    assert blob["info"] == {"final_quality": {"fd_domain": 1.5, "n": 3}, "path": str(tmp_path)}
    assert type(blob["info"]["final_quality"]["fd_domain"]) is float
    save_classifier(create_classifier("simple_cnn", 2), tmp_path / "model.pt", "simple_cnn", 2, ["a", "b"], 1,
                    {"best_epoch": np.int64(4)})
    _, loaded = load_classifier(tmp_path / "model.pt")
    assert loaded["info"] == {"best_epoch": 4}


def test_registered_generator_is_models_from_code_and_loads_without_unpickling(tmp_path, monkeypatch):
    generator = untrained_generator()
    generator.save(tmp_path / "generator.pt")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        exp = mlflow.create_experiment("t", artifact_location=(tmp_path / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=exp):
            info = pyfunc_generator.log_generator(tmp_path / "generator.pt", 1, 28, 0)
        local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "model")))
        flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
        assert "model_code_path" in flavor and "python_model" not in flavor
        assert not list(local.rglob("*.pkl"))

        def refuse(*args, **kwargs):
            raise AssertionError("something was unpickled while loading the generator")

        monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
        for module in (pickle, cloudpickle):
            monkeypatch.setattr(module, "load", refuse)
            monkeypatch.setattr(module, "loads", refuse)
        model = mlflow.pyfunc.load_model(f"models:/{pyfunc_generator.REGISTERED_NAME}/{info.registered_model_version}")
        images = model.predict(pd.DataFrame({"class_label": [0], "count": [3]}), params={"seed": 5})
    finally:
        mlflow.set_tracking_uri(None)
    np.testing.assert_array_equal(images, generator.sample({0: 3}, seed=5)[0])


@pytest.mark.parametrize("umask, dir_mode, file_mode", [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600), (0o002, 0o775, 0o664)])
def test_atomic_outputs_follow_the_umask(tmp_path, umask, dir_mode, file_mode):
    previous = os.umask(umask)
    try:
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "a.json").write_text("{}")
        with atomic_file(tmp_path / "b.pt") as tmp:
            torch.save({"x": torch.zeros(1)}, tmp)
    finally:
        os.umask(previous)
    assert (tmp_path / "out").stat().st_mode & 0o777 == dir_mode
    assert (tmp_path / "b.pt").stat().st_mode & 0o777 == file_mode

