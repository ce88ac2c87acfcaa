"""params.yaml validation: every bad key or value fails with a message naming it."""

from __future__ import annotations

import pytest

from ganaug.cli import main as cli_main
from ganaug.config import ConfigError, Params, flatten, load_params, params_from_dict

from conftest import REPO


def test_repository_params_load_and_match_defaults():
    params = load_params(REPO / "params.yaml")
    assert isinstance(params, Params)
    assert params.gan.lr_g == pytest.approx(2e-4)
    assert params.data.phantom.class_fractions["normal"] < params.data.phantom.class_fractions["bacterial"]


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"gan": {"lr_gg": 1e-4}}, "unknown params key 'gan.lr_gg'; did you mean 'gan.lr_g'?"),
        ({"gan": {"arch": "stylegan9"}}, "gan.arch='stylegan9': expected one of 'dcgan'"),
        ({"gan": {"mode": "minorty"}}, "did you mean 'minority'"),
        ({"gan": {"lr_g": -1.0}}, "gan.lr_g=-1.0: expected > 0"),
        ({"gan": {"epochs": 2.5}}, "gan.epochs=2.5: expected an integer"),
        ({"gan": {"epochs": True}}, "gan.epochs=True: expected an integer"),
        ({"gan": {"lr_d": "fast"}}, "gan.lr_d='fast': expected a number"),
        ({"data": {"image_size": 512}}, "data.image_size=512: expected an integer in [28, 256]"),
        ({"data": {"source": "kaggle"}}, "data.source='kaggle'"),
        ({"data": {"phantom": {"n_image": 10}}}, "unknown params key 'data.phantom.n_image'"),
        ({"data": {"val_fraction": 0.5, "test_fraction": 0.45}}, "data.val_fraction + data.test_fraction"),
        ({"classifier": {"seeds": []}}, "classifier.seeds=[]: expected a non-empty list"),
        ({"classifier": {"seeds": [0, "1"]}}, "classifier.seeds[1]='1': expected an integer"),
        ({"evaluate": {"ci": 1.5}}, "evaluate.ci=1.5: expected in (0, 1)"),
        ({"data": {"phantom": {"severity_range": [0.5, 0.2]}}}, "data.phantom.severity_range=[0.5, 0.2]: expected [low, high]"),
        ({"gann": {}}, "unknown params key 'gann'; did you mean 'gan'?"),
        ({"gan": 3}, "gan: expected a mapping"),
    ],
)
def test_bad_params_name_the_key(raw, fragment):
    with pytest.raises(ConfigError) as excinfo:
        params_from_dict(raw)
    assert fragment in str(excinfo.value)


def test_yaml_1_2_floats_as_dvc_writes_them(tmp_path):
    """`dvc exp run -S gan.lr_g=1e-4` writes `1e-4`, a float in YAML 1.2 (a string in PyYAML)."""
    path = tmp_path / "params.yaml"
    path.write_text("gan:\n  lr_g: 1e-4\n")
    assert load_params(path).gan.lr_g == pytest.approx(1e-4)


def test_missing_and_invalid_params_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("gan: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_config_is_frozen():
    params = params_from_dict({})
    with pytest.raises(AttributeError):
        params.gan.lr_g = 1.0  # type: ignore[misc]


def test_flatten_for_mlflow():
    flat = flatten(params_from_dict({}).data, "data")
    assert flat["data.phantom.class_fractions.normal"] == pytest.approx(0.26)
    assert flat["data.image_size"] == 64


def test_cli_reports_params_error_before_any_stage_runs(tmp_path, capsys):
    path = tmp_path / "params.yaml"
    path.write_text("gan:\n  lr_gg: 1\n")
    ran = []
    code = cli_main(["train-gan", "--params", str(path)], run=lambda *a: ran.append(a))
    assert code == 2 and not ran
    assert "gan.lr_gg" in capsys.readouterr().err


def test_cli_dry_run_prints_only_the_stage_sections(tmp_path, capsys):
    code = cli_main(["train-gan", "--params", str(REPO / "params.yaml"), "--dry-run"], run=lambda *a: pytest.fail("ran"))
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("gan:") and "lr_g" in out and "data:" not in out
