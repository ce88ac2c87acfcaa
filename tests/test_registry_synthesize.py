"""synthesize from the model registry (`synthesize.generator: models:/…`): the URI form is checked
when params load; resolve_generator pins the version an alias names (its file changes exactly
when the alias moves); synthesize samples that version, records it in the manifest, and refuses
a registered generator of other data before writing anything.

A tiny prepared phantom project (the real prepare and train_reference stages) and tiny untrained
DCGANs logged and registered as train_gan does it (`pyfunc_generator.log_generator`,
`registry.register_generator`): training one would add a minute and change nothing tested here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
from ruamel.yaml import YAML

from conftest import prepared_project
from ganaug.cli import main as cli
from ganaug.config import ConfigError, GANConfig, params_from_dict, to_dict
from ganaug.data.packed import read_meta
from ganaug.gan.generator import TrainedGenerator
from ganaug.gan.train import build_generator
from ganaug.tracking import pyfunc_generator, registry

TINY = {"data": {"image_size": 32, "phantom": {"n_images": 80}}, "reference": {"epochs": 1}}
NAME = pyfunc_generator.REGISTERED_NAME
PASSING = {"coverage_domain": 0.5, "diversity": 0.8, "label_fidelity_relative": 1.0}  # clears synthesize's gate
RESOLVED = Path("models/resolved_generator.json")


@pytest.mark.parametrize("uri", ["models:/ganaug-generator@champion", "models:/ganaug-generator/3", "models:/other@v2-x"])
def test_a_registry_uri_is_accepted(uri):
    assert params_from_dict({"synthesize": {"generator": uri}}).synthesize.generator == uri


@pytest.mark.parametrize("uri", ["models:/ganaug-generator", "models:/ganaug-generator/0", "models:/ganaug-generator/latest",
                                 "models:/ganaug-generator@", "models:/a/b@champion", "models/gan/generator.pt",
                                 "runs:/abc/generator"])
def test_a_malformed_uri_fails_at_load_naming_the_key(uri):
    with pytest.raises(ConfigError, match=r"synthesize\.generator=.*expected null .* or a registry URI models:/<name>@<alias>"):
        params_from_dict({"synthesize": {"generator": uri}})


def test_a_malformed_mixing_generator_uri_names_its_key():
    with pytest.raises(ConfigError, match=r"tune\.mixing_generator='models:/x'"):
        params_from_dict({"tune": {"mixing_generator": "models:/x"}})
    assert params_from_dict({"tune": {"mixing_generator": "some/generator.pt"}}).tune.mixing_generator == "some/generator.pt"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The prepared tiny project with three registered versions: v1 and v2 (two generators of its
    minority class) and v3 (a generator of another data set at 28 px with other class names)."""
    root = tmp_path_factory.mktemp("registry-synthesize")
    with prepared_project(root, TINY):
        meta = read_meta(root / "data/prepared")
        counts = [meta["counts"]["train"]["per_class"][n] for n in meta["class_names"]]
        minority = int(np.argmin(counts))
        cfg = dataclasses.replace(GANConfig(), latent_dim=8, base_channels=4, device="cpu")
        versions = {}
        for label, (seed, size, classes, data_hash) in {
            "v1": (0, 32, meta["class_names"], meta["dataset_hash"]),
            "v2": (1, 32, meta["class_names"], meta["dataset_hash"]),
            "other": (2, 28, ["healthy", "sick"], "e" * 64),
        }.items():
            torch_seed(seed)
            with mlflow.start_run() as run:
                info = {"dataset_hash": data_hash, "mlflow_run_id": run.info.run_id, "final_quality": PASSING}
                generator = TrainedGenerator(build_generator(cfg, size, 0).eval(), to_dict(cfg), classes, [minority], False, info)
                path = root / f"{label}.pt"
                generator.save(path)
                logged = pyfunc_generator.log_generator(path, 1, size, minority, register=False)
            versions[label] = (registry.register_generator(logged.model_uri, {}, f"test generator {label}"),
                               hashlib.sha256(path.read_bytes()).hexdigest(), run.info.run_id)
        yield root, versions


def torch_seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def use_generator(root: Path, uri: str | None) -> None:
    with open(root / "params.yaml", "w") as f:
        YAML().dump({**TINY, "synthesize": {"generator": uri}}, f)


def resolved(root: Path) -> dict:
    return json.loads((root / RESOLVED).read_text())


def test_synthesize_uses_the_pinned_version_and_resolve_follows_the_alias(project, monkeypatch):
    root, versions = project
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    v1, sha1, run1 = versions["v1"]
    v2, sha2, _ = versions["v2"]
    mlflow.MlflowClient().set_registered_model_alias(NAME, registry.CHAMPION, v1)
    use_generator(root, "models:/ganaug-generator@champion")

    assert cli(["resolve-generator"]) == 0
    first = (root / RESOLVED).read_bytes()
    assert resolved(root) == {"source": "registry", "uri": "models:/ganaug-generator@champion", "name": NAME, "version": v1,
                              "run_id": run1, "artifact": "artifacts/v1.pt", "sha256": sha1}
    assert cli(["resolve-generator"]) == 0
    assert (root / RESOLVED).read_bytes() == first  # the alias did not move: same bytes, DVC skips synthesize

    assert cli(["synthesize"]) == 0
    manifest = json.loads((root / "data/synthetic/manifest.json").read_text())
    assert manifest["generator_source"] == resolved(root)
    assert manifest["generator_file"] == f"models:/{NAME}/{v1}"
    assert manifest["generator_sha256"] == sha1 and manifest["generator_mlflow_run_id"] == run1
    run = mlflow.search_runs(filter_string="tags.`ganaug.stage` = 'synthesize'", output_format="list")[0]
    assert run.data.tags["synthetic.generator_version"] == v1

    mlflow.MlflowClient().set_registered_model_alias(NAME, registry.CHAMPION, v2)  # promotion moved the alias
    assert cli(["resolve-generator"]) == 0
    assert (root / RESOLVED).read_bytes() != first
    assert (resolved(root)["version"], resolved(root)["sha256"]) == (v2, sha2)

    use_generator(root, None)  # the pipeline's own generator: no registry lookup
    assert cli(["resolve-generator"]) == 0
    assert resolved(root) == {"source": "pipeline"}


def test_an_incompatible_registered_generator_is_refused_before_writing(project, monkeypatch, capsys):
    root, versions = project
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    shutil.rmtree(root / "data/synthetic", ignore_errors=True)  # the previous test's set
    other = versions["other"][0]
    use_generator(root, f"models:/ganaug-generator/{other}")
    assert cli(["resolve-generator"]) == 0
    capsys.readouterr()
    assert cli(["synthesize"]) == 1
    err = capsys.readouterr().err
    for fragment in (f"models:/ganaug-generator/{other} (v{other} of {NAME}", "does not fit the prepared data",
                     "data set hash eeeeeeeeeeee vs", "images 1 x 28 px vs 1 x 32 px", "classes ['healthy', 'sick'] vs"):
        assert fragment in err, err
    assert not (root / "data/synthetic").exists()


def test_synthesize_refuses_a_missing_or_stale_resolution_and_resolve_names_an_unknown_alias(project, monkeypatch, capsys):
    root, _ = project
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    use_generator(root, "models:/ganaug-generator/1")
    (root / RESOLVED).write_text(json.dumps({"source": "pipeline"}))  # resolved for another setting
    capsys.readouterr()
    assert cli(["synthesize"]) == 1
    assert "run `bin/ganaug resolve-generator` first" in capsys.readouterr().err
    use_generator(root, "models:/ganaug-generator@nobody")
    assert cli(["resolve-generator"]) == 1
    assert (f"synthesize.generator='models:/ganaug-generator@nobody': registered model '{NAME}' has no version with "
            "alias @nobody") in capsys.readouterr().err


def test_the_mixing_study_takes_a_registry_version_s_weights_file(project, monkeypatch):
    from ganaug.stages.tune_mixing import generator_file

    root, versions = project
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    v2, sha2, _ = versions["v2"]
    path = generator_file(f"models:/ganaug-generator/{v2}", root)
    assert path.name == "v2.pt" and hashlib.sha256(path.read_bytes()).hexdigest() == sha2
    assert TrainedGenerator.load(path).resolution == 32
