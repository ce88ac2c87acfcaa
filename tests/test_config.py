"""params.yaml validation: every bad key or value fails with a message naming it."""

from __future__ import annotations

import dataclasses
import math
import re
import typing

import pytest

from ganaug.cli import main as cli_main
from ganaug.config import _CHECKS, IMAGE_SIZE_RANGE, ConfigError, Params, flatten, load_params, params_from_dict
from ganaug.resolution import buildable_resolutions

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


def section_fields(cls=Params, prefix=""):
    """(section class, field name, annotation, dotted key) of every leaf field of params."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(hints[f.name]):
            yield from section_fields(hints[f.name], key)
        else:
            yield cls, f.name, hints[f.name], key


def numeric_parts(tp) -> set:
    """int / float inside an annotation (Optional, list, dict values), without bool."""
    if tp in (int, float):
        return {tp}
    return set().union(*(numeric_parts(a) for a in typing.get_args(tp))) if typing.get_args(tp) else set()


NUMERIC_FIELDS = [(cls, name, key) for cls, name, tp, key in section_fields() if numeric_parts(tp)]
FLOAT_FIELDS = [key for cls, name, tp, key in section_fields() if tp is float or tp == float | None]


@pytest.mark.parametrize(("cls", "name", "key"), NUMERIC_FIELDS, ids=[key for *_, key in NUMERIC_FIELDS])
def test_every_numeric_key_has_a_range(cls, name, key):
    """A new int or float key needs its range in config._CHECKS (latent_dim 1e11 once allocated 1.6 PB)."""
    assert (cls, name) in _CHECKS, f"{key} has no range check in ganaug.config._CHECKS"


def nested(key: str, value):
    out = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


@pytest.mark.parametrize("key", FLOAT_FIELDS)
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_every_float_key_must_be_finite(key, value):
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}=(-?inf|nan): expected a finite number$"):
        params_from_dict(nested(key, value))


SEED_KEYS = [key for cls, name, tp, key in section_fields() if name == "seed"]


@pytest.mark.parametrize("key", SEED_KEYS)
def test_every_seed_is_a_32_bit_non_negative_integer(key):
    for bad in (-1, 2**32):
        with pytest.raises(ConfigError, match=rf"^{re.escape(key)}={bad}: expected >= 0 and <= 4294967295$"):
            params_from_dict(nested(key, bad))
    assert params_from_dict(nested(key, 2**32 - 1))


def test_image_sizes_the_gan_builds_pass_and_others_list_them():
    sizes = buildable_resolutions(*IMAGE_SIZE_RANGE)
    assert {28, 32, 64, 128, 224, 256} <= set(sizes)
    for size in sizes:
        params_from_dict({"data": {"image_size": size}})
    for size in set(range(IMAGE_SIZE_RANGE[0], IMAGE_SIZE_RANGE[1] + 1)) - set(sizes):
        with pytest.raises(ConfigError, match=rf"^data.image_size={size}: gan.arch=dcgan cannot be built") as excinfo:
            params_from_dict({"data": {"image_size": size}})
        assert ", ".join(map(str, sizes)) in str(excinfo.value)


def test_timm_model_names_are_accepted_for_both_classifiers():
    params = params_from_dict({"reference": {"arch": "resnet18"}, "classifier": {"arch": "efficientnet_b0"}})
    assert (params.reference.arch, params.classifier.arch) == ("resnet18", "efficientnet_b0")


def test_inception_weights_must_be_an_existing_file(tmp_path):
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"checked for content where it is loaded")
    path = tmp_path / "params.yaml"
    path.write_text(f"quality:\n  inception_weights: {weights}\n")
    assert load_params(path).quality.inception_weights == str(weights)
    path.write_text(f"quality:\n  inception_weights: {tmp_path}\n")
    with pytest.raises(ConfigError, match=r"^quality.inception_weights=.*: no such file"):
        load_params(path)
