"""Stage real_features: Inception features of the train split as a DVC output, or a record
that there are no local weights (never a download)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ganaug.config import params_from_dict
from ganaug.data.packed import save_packed
from ganaug.data.sources import load_phantom
from ganaug.quality.inception import fid_inception_architecture
from ganaug.stages import real_features


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # an empty hub cache
    params = params_from_dict({"data": {"image_size": 28, "phantom": {"n_images": 40}}})
    meta = save_packed(load_phantom(params.data), tmp_path / "data/prepared")
    return tmp_path, meta


def test_without_weights_it_records_why_and_downstream_gets_none(project):
    root, meta = project
    real_features.main(params_from_dict({}))
    written = json.loads((root / "data/real_features/meta.json").read_text())
    assert written["inception"]["available"] is False and "quality.inception_weights" in written["inception"]["reason"]
    assert real_features.load_real_inception(root / "data/real_features", meta["dataset_hash"]) is None


def test_with_local_weights_it_writes_train_features_for_this_dataset_version(project):
    root, meta = project
    torch.manual_seed(0)
    torch.save(fid_inception_architecture().state_dict(), root / "weights.pth")
    real_features.main(params_from_dict({"quality": {"inception_weights": str(root / "weights.pth"), "device": "cpu"}}))
    features = real_features.load_real_inception(root / "data/real_features", meta["dataset_hash"])
    assert features.shape == (meta["counts"]["train"]["total"], 2048) and np.isfinite(features).all()
    written = json.loads((root / "data/real_features/meta.json").read_text())
    assert written["split"] == "train" and len(written["inception"]["weights_sha256"]) == 64
    with pytest.raises(ValueError, match="another data set"):
        real_features.load_real_inception(root / "data/real_features", "0" * 64)


def test_a_configured_weights_path_that_is_missing_fails_naming_it(project):
    root, _ = project
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        real_features.main(params_from_dict({"quality": {"inception_weights": str(root / "missing.pth")}}))
    assert not (root / "data/real_features").exists()
