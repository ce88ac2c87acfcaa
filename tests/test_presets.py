"""`ganaug exp --preset`: a params overlay validated whole before DVC runs, turned into `-S` args."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ganaug.cli import main
from ganaug.config import ConfigError, load_params
from ganaug.presets import experiment_args, leaves, parse_override

ROOT = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_leaves_and_overrides_become_dvc_set_params(tmp_path):
    preset = write(tmp_path / "p.yaml", "data:\n  image_size: 28\n  medmnist: {path: /x.npz}\narms: {ratios: [0.25, 0.5]}\n"
                                       "quality: {inception_weights: null}\n")
    args = experiment_args(ROOT / "params.yaml", preset, ["classifier.epochs=5", "arms.synthetic=[]"])
    pairs = dict(a.split("=", 1) for a in args[1::2])
    assert args[::2] == ["-S"] * len(pairs)
    assert pairs == {"data.image_size": "28", "data.medmnist.path": "/x.npz", "arms.ratios": "[0.25,0.5]",
                     "quality.inception_weights": "null", "classifier.epochs": "5", "arms.synthetic": "[]"}


def test_every_committed_preset_is_valid_over_params_yaml():
    for preset in sorted((ROOT / "presets").glob("*.yaml")):
        experiment_args(ROOT / "params.yaml", preset, [])  # raises ConfigError naming the key


@pytest.mark.parametrize("text, override, key", [
    ("gan: {bogus: 1}\n", None, "gan.bogus"),
    ("arms: {ratios: [2]}\n", None, "arms.ratios[0]=2"),
    ("classifier: {epochs: 0}\n", None, "classifier.epochs=0"),
    ("data: {image_size: 64}\n", "synthesize.pool_ratio=0.1", "synthesize.pool_ratio=0.1"),
])
def test_a_bad_preset_or_override_fails_naming_the_key(tmp_path, capsys, text, override, key):
    preset = write(tmp_path / "p.yaml", text)
    argv = ["exp", "--preset", str(preset), "--dry-run"] + (["-S", override] if override else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert key in err and str(preset) in err


def test_missing_preset_and_nothing_to_change(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        experiment_args(ROOT / "params.yaml", tmp_path / "none.yaml", [])
    with pytest.raises(ConfigError, match="nothing to change"):
        experiment_args(ROOT / "params.yaml", None, [])
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("classifier.epochs")


def test_dry_run_prints_a_pasteable_dvc_command(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    preset = write(tmp_path / "p.yaml", "arms: {ratios: [0.25, 0.5]}\n")
    assert main(["exp", "--preset", str(preset), "-n", "curve", "--dry-run"]) == 0
    command = shlex.split(capsys.readouterr().out.strip())
    assert command[1:5] == ["exp", "run", "-n", "curve"] and command[-2:] == ["-S", "arms.ratios=[0.25,0.5]"]
    load_params(ROOT / "params.yaml")  # the committed params.yaml was read, not changed


def test_leaves_keeps_lists_and_empty_sections_whole():
    assert leaves({"a": {"b": [1, 2], "c": {}}, "d": None}) == {"a.b": [1, 2], "a.c": {}, "d": None}


def test_exp_says_which_workspace_params_differ_from_the_committed_ones(tmp_path, capsys, monkeypatch):
    """`dvc exp run` leaves an experiment's values in params.yaml, and the next experiment runs with
    them: `ganaug exp` names those keys before it starts."""
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    for command in (["init", "-q"], ["add", "params.yaml"], ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "p"]):
        subprocess.run(["git", *command], cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")  # dvc of the test's venv
    assert main(["exp", "-S", "classifier.epochs=5", "--dry-run"]) == 0
    assert "differs from the committed version" not in capsys.readouterr().err
    params.write_text(params.read_text().replace("  epochs: 50\n", "  epochs: 7\n", 1))  # gan.epochs, as DVC leaves it
    assert main(["exp", "-S", "classifier.epochs=5", "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "params.yaml differs from the committed version in gan.epochs (a previous experiment's" in err
