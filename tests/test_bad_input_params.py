"""Bad params (issue 16): each case fails at load time, before any stage runs, with exit code 2,
one line on stderr naming the key (or the params file), and nothing written.

The whole file is validated whichever stage reads it, so `ganaug prepare` (the pipeline's first
stage) already stops a run whose `classifier.arch` or `evaluate.seed` is wrong.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ganaug
from ganaug.cli import main as cli_main

from conftest import REPO

# (case id, params.yaml text, fragment the one-line message must contain)
BAD_PARAMS = [
    # unknown keys, with the closest valid one
    ("unknown-section", "gann: {}\n", "unknown params key 'gann'; did you mean 'gan'?"),
    ("unknown-key", "gan:\n  lr_gg: 1.0e-4\n", "unknown params key 'gan.lr_gg'; did you mean 'gan.lr_g'?"),
    ("unknown-nested-key", "data:\n  phantom:\n    n_image: 10\n", "unknown params key 'data.phantom.n_image'"),
    # wrong types
    ("float-for-int", "gan:\n  epochs: 2.5\n", "gan.epochs=2.5: expected an integer"),
    ("bool-for-int", "classifier:\n  batch_size: true\n", "classifier.batch_size=True: expected an integer"),
    ("string-for-float", "gan:\n  lr_d: fast\n", "gan.lr_d='fast': expected a number"),
    ("float-for-int-1e11", "gan:\n  latent_dim: 1e11\n", "gan.latent_dim=100000000000.0: expected an integer"),
    ("section-not-mapping", "gan: 3\n", "gan: expected a mapping"),
    ("list-item-type", "classifier:\n  seeds: [0, '1']\n", "classifier.seeds[1]='1': expected an integer"),
    ("choice-typo", "gan:\n  mode: minorty\n", "gan.mode='minorty'"),
    ("string-for-bool", "gan:\n  spectral_norm: 'yes'\n", "gan.spectral_norm='yes': expected true or false"),
    # NaN and infinity, in every kind of float field
    ("nan", "gan:\n  lr_g: .nan\n", "gan.lr_g=nan: expected a finite number"),
    ("inf-ema", "gan:\n  ema_kimg: .inf\n", "gan.ema_kimg=inf: expected a finite number"),
    ("inf-weight-decay", "reference:\n  weight_decay: .inf\n", "reference.weight_decay=inf: expected a finite number"),
    ("minus-inf", "gan:\n  r1_gamma: -.inf\n", "gan.r1_gamma=-inf: expected a finite number"),
    ("overflow-1e999", "synthesize:\n  max_draws: 1e999\n", "synthesize.max_draws=inf: expected a finite number"),
    ("nan-optional-float", "data:\n  near_duplicate_threshold: .nan\n", "data.near_duplicate_threshold=nan: expected a finite number"),
    ("inf-in-mapping", "data:\n  phantom:\n    class_fractions: {normal: .inf, bacterial: 1, viral: 1}\n",
     "data.phantom.class_fractions.normal=inf: expected a finite number"),
    # ranges
    ("latent-dim-huge", "gan:\n  latent_dim: 100000000000\n", "gan.latent_dim=100000000000: expected >= 1 and <= 4096"),
    ("base-channels", "gan:\n  base_channels: 4096\n", "gan.base_channels=4096: expected >= 1 and <= 1024"),
    ("epochs", "gan:\n  epochs: 1000000000\n", "gan.epochs=1000000000: expected >= 1 and <= 100000"),
    ("batch-size-zero", "classifier:\n  batch_size: 0\n", "classifier.batch_size=0: expected >= 1 and <= 65536"),
    ("lr-above-one", "classifier:\n  lr: 2.0\n", "classifier.lr=2.0: expected > 0 and <= 1"),
    ("lr-zero", "gan:\n  lr_g: 0\n", "gan.lr_g=0: expected > 0 and <= 1"),
    ("weight-decay-negative", "reference:\n  weight_decay: -0.1\n", "reference.weight_decay=-0.1: expected >= 0"),
    ("n-eval", "gan:\n  n_eval: 1\n", "gan.n_eval=1: expected >= 10"),
    ("n-critic", "gan:\n  n_critic: 1000\n", "gan.n_critic=1000: expected > 0 and <= 100"),
    ("n-bootstrap", "evaluate:\n  n_bootstrap: 10\n", "evaluate.n_bootstrap=10: expected >= 100"),
    ("quality-batch", "quality:\n  batch_size: 0\n", "quality.batch_size=0"),
    ("pool-ratio", "synthesize:\n  pool_ratio: 0\n", "synthesize.pool_ratio=0"),
    ("workers", "data:\n  workers: 0\n", "data.workers=0: expected an integer in [1, 64]"),
    ("class-fractions-negative", "data:\n  phantom:\n    class_fractions: {normal: -1, bacterial: 1, viral: 1}\n",
     "data.phantom.class_fractions="),
    ("fractions-sum", "data:\n  val_fraction: 0.5\n  test_fraction: 0.45\n", "data.val_fraction + data.test_fraction"),
    # seeds
    ("evaluate-seed", "evaluate:\n  seed: -5\n", "evaluate.seed=-5: expected >= 0"),
    ("data-seed", "data:\n  seed: -1\n", "data.seed=-1"),
    ("gan-seed", "gan:\n  seed: -3\n", "gan.seed=-3"),
    ("reference-seed", "reference:\n  seed: -2\n", "reference.seed=-2"),
    ("synthesize-seed-33-bit", "synthesize:\n  seed: 4294967296\n", "synthesize.seed=4294967296: expected >= 0 and <= 4294967295"),
    ("classifier-seeds", "classifier:\n  seeds: [0, -1]\n", "classifier.seeds=[0, -1]: expected a non-empty list of distinct seeds"),
    # image size the GAN cannot be built at
    ("image-size-100", "data:\n  image_size: 100\n", "data.image_size=100: gan.arch=dcgan cannot be built at 100 px"),
    ("image-size-nearest", "data:\n  image_size: 100\n", "(nearest: 96 or 112)"),
    ("image-size-acgan", "data:\n  image_size: 30\ngan:\n  arch: acgan\n  mode: conditional\n", "data.image_size=30: gan.arch=acgan"),
    ("image-size-too-big", "data:\n  image_size: 512\n", "data.image_size=512: expected an integer in [28, 256]"),
    # architecture names, reported under their own key
    ("classifier-arch", "classifier:\n  arch: resnet181\n", "classifier.arch='resnet181': expected 'simple_cnn' or a timm model name"),
    ("classifier-arch-hint", "classifier:\n  arch: resnet181\n", "did you mean 'resnet18'?"),
    ("reference-arch", "reference:\n  arch: simplecnn\n", "reference.arch='simplecnn'"),
    ("gan-arch", "gan:\n  arch: stylegan9\n", "gan.arch='stylegan9'"),
    ("gan-arch-mode", "gan:\n  arch: acgan\n", "gan.arch=acgan is class-conditional but gan.mode=minority"),
    ("ada-wgan", "gan:\n  augment: ada\n  loss: wgan_gp\n", "gan.augment=ada with gan.loss=wgan_gp"),
    # classic_synthetic without its control: a gain classic augmentation alone gives would pass for the GAN's
    ("classic-synthetic-no-classic-reference", "arms:\n  mixed: [synthetic, classic_synthetic]\n",
     "arms.mixed=['synthetic', 'classic_synthetic'] has classic_synthetic, whose control is the classic arm"),
    ("classic-synthetic-no-classic-arm",
     "arms:\n  real: [real, balanced]\n  mixed: [classic_synthetic]\nevaluate:\n  references: [real]\n",
     "expected classic in arms.real (got ['real', 'balanced'])"),
    # files params name
    ("inception-weights-missing", "quality:\n  inception_weights: missing.pth\n", "quality.inception_weights='missing.pth': no such file"),
    ("folders-root-null", "data:\n  source: folders\n", "data.source=folders needs data.folders.root"),
    # the file itself
    ("file-is-a-list", "- data\n- gan\n", "params file 'params.yaml': expected a mapping of sections"),
    ("file-is-a-string", "hello\n", "params file 'params.yaml': expected a mapping of sections"),
    ("invalid-yaml", "gan: [unclosed\n", "params file 'params.yaml' is not valid YAML"),
    ("duplicate-key", "gan: {}\ngan: {}\n", "params file 'params.yaml' is not valid YAML"),
]


@pytest.mark.parametrize(("text", "fragment"), [case[1:] for case in BAD_PARAMS], ids=[case[0] for case in BAD_PARAMS])
def test_bad_params_fail_at_load_naming_the_key_and_write_nothing(text, fragment, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(text)
    code = cli_main(["prepare", "--params", "params.yaml"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert fragment in err
    assert len(err.strip().splitlines()) == 1, err  # one line, no traceback
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # no output, temp folder or store


def test_missing_params_file_names_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli_main(["evaluate", "--params", "nope.yaml"]) == 2
    assert "params file 'nope.yaml' not found" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n"], ids=["empty", "comment-only", "empty-mapping"])
def test_empty_params_file_says_that_defaults_are_used(text, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(text)
    assert cli_main(["prepare", "--params", "params.yaml", "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "params file 'params.yaml' is empty: every key takes its default" in captured.err
    assert "image_size: 64" in captured.out


def test_params_with_content_print_no_notice(capsys):
    assert cli_main(["prepare", "--params", str(REPO / "params.yaml"), "--dry-run"]) == 0
    assert capsys.readouterr().err == ""


def test_help_and_params_validation_import_no_torch():
    """A params typo or `--help` must not pay for torch (seconds, ~1 GB)."""
    code = (
        "import sys\n"
        "from ganaug.cli import build_parser, main\n"
        "build_parser()\n"
        "assert main(['prepare', '--params', 'no-such-params.yaml']) == 2\n"
        "heavy = [m for m in ('torch', 'torchvision', 'torchmetrics', 'pytorch_fid', 'timm', 'mlflow') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    env = {"PYTHONPATH": str(Path(ganaug.__file__).parents[1]), "PATH": "/usr/bin:/bin"}  # the ganaug under test
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr


def single_class_prepared(root: Path) -> None:
    from ganaug.data.packed import PackedDataset, Split, save_packed

    rng = np.random.default_rng(0)
    splits = {name: Split(rng.integers(0, 256, (4, 1, 32, 32), dtype=np.uint8), np.zeros(4, np.int64)) for name in ("train", "val", "test")}
    save_packed(PackedDataset(splits, ["normal"], {"name": "folders"}, {"image_size": 32}), root / "data" / "prepared")


@pytest.mark.parametrize("arch", ["acgan", "cgan", "dcgan", "stylegan2"])
def test_conditional_gan_on_one_class_fails_before_training(arch, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    single_class_prepared(tmp_path)
    Path("params.yaml").write_text(f"data:\n  image_size: 32\ngan:\n  arch: {arch}\n  mode: conditional\n")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert cli_main(["train-gan", "--params", "params.yaml"]) == 1
    err = capsys.readouterr().err
    assert f"gan.arch={arch} with gan.mode=conditional needs at least 2 classes" in err
    assert "has 1: ['normal']" in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # no models/, store or cache


def weights_files(root: Path) -> dict[str, Path]:
    import torch

    files = {"empty": root / "empty.pth", "text": root / "text.pth", "truncated": root / "truncated.pth",
             "tensor": root / "tensor.pth"}
    files["empty"].write_bytes(b"")
    files["text"].write_text("these are not weights\n")
    torch.save({"fc.weight": torch.zeros(3, 2)}, root / "whole.pth")
    files["truncated"].write_bytes((root / "whole.pth").read_bytes()[:200])
    torch.save(torch.zeros(3), files["tensor"])
    return files


@pytest.mark.parametrize("kind", ["empty", "text", "truncated", "tensor"])
def test_inception_weights_that_are_not_weights_name_key_and_file(kind, tmp_path):
    from ganaug.quality.inception import load_fid_inception, load_inception_fc

    path = weights_files(tmp_path)[kind]
    for load in (lambda: load_fid_inception(path, "cpu"), lambda: load_inception_fc(path)):
        with pytest.raises(ValueError) as excinfo:
            load()
        message = str(excinfo.value)
        assert message.startswith(f"quality.inception_weights: {path} ") and "\n" not in message
