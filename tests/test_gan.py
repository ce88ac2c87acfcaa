"""The training loop (one step changes weights, exact resume, divergence guard), seeded
sampling, and the generator as a registered MLflow pyfunc model, for every architecture.
Networks, losses and config checks: test_gan_architectures.py; augmentation and EMA:
test_gan_augment.py."""

from __future__ import annotations

import dataclasses

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from ganaug.config import GANConfig
from ganaug.gan.generator import TrainedGenerator
from ganaug.gan.train import GANDivergenceError, build_networks, divergence_remedies, last_good_path, training_loop
from ganaug.tracking import pyfunc_generator

CPU = torch.device("cpu")


def tiny_cfg(**overrides) -> GANConfig:
    # the plain DCGAN recipe (BCE, BatchNorm D, no augmentation, no EMA) that options below are added to
    base = dict(latent_dim=8, base_channels=4, epochs=1, batch_size=8, eval_every=1, n_eval=8, seed=0, device="cpu",
                loss="nonsaturating", spectral_norm=False, augment="none", ema_kimg=0.0)
    return dataclasses.replace(GANConfig(), **{**base, **overrides})


def tiny_images(n=16, size=28, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 1, size, size), dtype=np.uint8)


# (arch, mode, extra gan params): every architecture, every loss, both optimizers, the options
ONE_STEP_CASES = [
    ("dcgan", "minority", {}),
    ("dcgan", "conditional", {}),
    ("dcgan", "minority", {"loss": "hinge", "spectral_norm": True, "r1_gamma": 1.0}),
    ("dcgan", "minority", {"loss": "wgan_gp", "optimizer": "rmsprop"}),
    ("cgan", "conditional", {}),
    ("cgan", "conditional", {"loss": "hinge", "spectral_norm": True, "augment": "diffaugment"}),
    ("acgan", "conditional", {}),
    ("acgan", "conditional", {"loss": "wgan_gp", "augment": "diffaugment", "ema_kimg": 1.0}),
    ("stylegan2", "minority", {}),
    ("stylegan2", "conditional", {"spectral_norm": True, "augment": "diffaugment", "ema_kimg": 1.0,
                                  "stylegan2": {"r1_interval": 1, "pl_weight": 2.0, "pl_interval": 1}}),
]


@pytest.mark.parametrize("arch, mode, options", ONE_STEP_CASES)
def test_one_training_step_changes_both_networks(tmp_path, arch, mode, options):
    images = tiny_images(8)
    labels, n_classes = (np.array([0, 1] * 4), 2) if mode == "conditional" else (None, 0)
    cfg = tiny_cfg(arch=arch, mode=mode, **options)
    torch.manual_seed(cfg.seed)  # the loop seeds before building: the same initial weights
    g0, d0 = build_networks(cfg, 28, n_classes)
    result = training_loop(images, labels, n_classes, cfg, tmp_path / "ckpt.pt", CPU)
    assert len(result.losses) == 1  # 8 images / batch 8 = one step
    assert all(np.isfinite(v) for v in result.losses[0].values())
    for before, after in ((g0, result.trained_generator), (d0, result.discriminator)):
        pairs = list(zip(before.named_parameters(), after.parameters(), strict=True))
        unchanged = [name for (name, p0), p1 in pairs if torch.equal(p0, p1)]
        assert not unchanged, f"parameters not updated by one step: {unchanged}"


@pytest.mark.parametrize("arch", ["dcgan", "cgan", "acgan", "stylegan2"])
def test_multi_hot_labels_train_every_conditional_arch(tmp_path, arch):
    multi_hot = np.array([[1, 0, 0, 1], [0, 0, 0, 0], [0, 1, 1, 0], [1, 1, 0, 1]] * 2, dtype=np.uint8)  # NIH-style findings
    cfg = tiny_cfg(arch=arch, mode="conditional", epochs=2, batch_size=4)
    result = training_loop(tiny_images(8), multi_hot, 4, cfg, tmp_path / "c.pt", CPU)
    assert len(result.losses) == 4 and all(np.isfinite(v) for r in result.losses for v in r.values())
    if arch == "acgan":  # the auxiliary head is trained on the findings (sigmoid / BCE)
        assert result.losses[0]["loss_d_aux"] > 0
    images = result.generator(torch.randn(2, 8), torch.tensor([[1.0, 0, 0, 1], [0, 0, 0, 0]]))
    assert images.shape == (2, 1, 28, 28)


def test_wgan_gp_takes_n_critic_d_steps_per_g_step(tmp_path):
    cfg = tiny_cfg(loss="wgan_gp", n_critic=2, batch_size=4, epochs=2)
    result = training_loop(tiny_images(16), None, 0, cfg, tmp_path / "c.pt", CPU)
    assert [r["step"] for r in result.losses] == [1, 2, 3, 4]  # 16 images / (2 critic steps x 4) per epoch
    assert {"loss_d_adv", "penalty_gp"} <= set(result.losses[0]) and result.losses[0]["penalty_gp"] >= 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bf16 autocast, channels_last)")
@pytest.mark.parametrize("arch, options", [("dcgan", {}), ("cgan", {"loss": "wgan_gp", "augment": "diffaugment"}),
                                           ("acgan", {"augment": "ada", "ema_kimg": 1.0, "r1_gamma": 1.0}),
                                           ("stylegan2", {"augment": "ada", "ema_kimg": 1.0,
                                                          "stylegan2": {"r1_interval": 1, "pl_weight": 2.0, "pl_interval": 1}})])
def test_cuda_mixed_precision_step_is_finite_and_trains(tmp_path, arch, options):
    cfg = tiny_cfg(arch=arch, mode="conditional", epochs=2, **options)
    result = training_loop(tiny_images(16), np.arange(16) % 2, 2, cfg, tmp_path / "c.pt", torch.device("cuda"))
    assert all(np.isfinite(v) for r in result.losses for v in r.values())
    assert next(result.generator.parameters()).is_cuda
    images = result.generator(torch.randn(2, 8, device="cuda"), torch.tensor([0, 1], device="cuda"))
    assert images.shape == (2, 1, 28, 28) and torch.isfinite(images).all()


RESUME_CASES = [
    ("dcgan", {}),  # the default pipeline's GAN (conditional variant)
    # a fast D and ADA: p has moved before the kill (step 6), and its 4-step window straddles it
    ("acgan", {"augment": "ada", "ada_kimg": 0.05, "ada_target": 0.3, "lr_d": 5e-3, "batch_size": 4, "ema_kimg": 0.1}),
    ("cgan", {"augment": "diffaugment", "loss": "wgan_gp", "spectral_norm": True, "r1_gamma": 0.5, "ema_kimg": 0.1}),
    # lazy R1 every 4 D steps and path length every 4 G steps: the kill (step 6) falls between regularisation steps,
    # so the counters and the path-length mean must come back from the checkpoint
    ("stylegan2", {"augment": "ada", "ada_kimg": 0.05, "ada_target": 0.05, "batch_size": 4, "ema_kimg": 0.1,
                   "stylegan2": {"r1_gamma": 1.0, "r1_interval": 4, "pl_weight": 1.0, "pl_interval": 4}}),
    # a translator: a pool that is full before the kill (its content and RNG resume), learning-rate decay across it
    ("cyclegan", {"batch_size": 4, "mode": "minority", "cyclegan": {"pool_size": 6, "decay_start": 0.3}}),
]


def training_data(arch: str, n: int, n_classes: int) -> tuple[np.ndarray, np.ndarray | None, int]:
    """(labels, n_classes) for training_loop: class labels, or for cyclegan source (0) / target (1) domains."""
    return (np.arange(n) % 2, 0) if arch == "cyclegan" else (np.arange(n) % n_classes, n_classes)


def arch_cfg(arch: str, **options) -> GANConfig:
    cc = options.pop("cyclegan", {})
    cfg = tiny_cfg(arch=arch, **options)
    return dataclasses.replace(cfg, cyclegan=dataclasses.replace(cfg.cyclegan, **cc)) if cc else cfg


@pytest.mark.parametrize("arch, options", RESUME_CASES)
def test_resumed_run_continues_exactly(tmp_path, arch, options):
    images, (labels, n_classes) = tiny_images(24), training_data(arch, 24, 3)
    cfg = arch_cfg(arch, **{"mode": "conditional", "epochs": 3, **options})
    full = training_loop(images, labels, n_classes, cfg, tmp_path / "full.pt", CPU)
    killed = training_loop(images, labels, n_classes, cfg, tmp_path / "resume.pt", CPU, stop_after_epoch=1)
    assert killed.losses == full.losses[: len(killed.losses)]
    resumed = training_loop(images, labels, n_classes, cfg, tmp_path / "resume.pt", CPU)
    assert resumed.resumed_from_epoch == 1
    assert resumed.losses == full.losses  # bit-identical loss trajectory
    assert resumed.augment_p == full.augment_p
    for network in ("generator", "trained_generator", "discriminator"):  # generator = the EMA when it is on
        for a, b in zip(getattr(full, network).state_dict().values(), getattr(resumed, network).state_dict().values(), strict=True):
            assert torch.equal(a, b), network
    if arch != "cyclegan":  # the translator's loop keeps its pool and schedule instead (tests/test_cyclegan.py)
        full_state = torch.load(tmp_path / "full.pt", weights_only=True)["loss_state"]
        resumed_state = torch.load(tmp_path / "resume.pt", weights_only=True)["loss_state"]
        assert full_state.keys() == resumed_state.keys() and all(
            torch.equal(torch.as_tensor(full_state[k]), torch.as_tensor(resumed_state[k])) for k in full_state)
    if arch == "stylegan2":  # regularised at steps 4, 8, 12, 16 (R1 and path length): on either side of the kill
        assert [r["step"] for r in full.losses if r["penalty_r1"] > 0] == [4, 8, 12, 16]
        assert [r["step"] for r in full.losses if r["penalty_pl"] > 0] == [4, 8, 12, 16]
        assert full_state["d_steps"] == full_state["g_steps"] == 18 and full_state["pl_mean"] > 0
    if cfg.augment == "ada":  # the adaptive probability had moved when the run was killed
        assert killed.losses[-1]["ada_p"] > 0 and killed.losses[-1]["step"] % 4 != 0


def test_checkpoint_from_another_config_is_refused(tmp_path):
    training_loop(tiny_images(8), None, 0, tiny_cfg(), tmp_path / "c.pt", CPU)
    with pytest.raises(ValueError, match="another gan config"):
        training_loop(tiny_images(8), None, 0, tiny_cfg(lr_g=1e-3), tmp_path / "c.pt", CPU)


@pytest.mark.parametrize("arch, mode", [("dcgan", "minority"), ("cgan", "conditional"), ("acgan", "conditional"),
                                        ("stylegan2", "conditional"), ("cyclegan", "minority")])
def test_divergence_guard_names_step_and_checkpoint(tmp_path, monkeypatch, arch, mode):
    from ganaug.gan import cyclegan, losses

    calls = {"n": 0}
    loss_class = cyclegan.LeastSquaresLoss if arch == "cyclegan" else losses.NonSaturatingLoss
    original = loss_class.generator

    def poisoned(self, fake_logits):
        calls["n"] += 1
        loss = original(self, fake_logits)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(loss_class, "generator", poisoned)
    labels, n_classes = (np.arange(16) % 2, 2) if mode == "conditional" else (None, 0)
    if arch == "cyclegan":  # two adversarial terms per step (D_B, D_A): the third call is step 2's first
        labels, n_classes, calls["n"] = np.arange(16) % 2, 0, -2
    with pytest.raises(GANDivergenceError, match=r"loss_g = nan at epoch 2, step 3; last good checkpoint: .*c.pt \(epoch 1\)"):
        training_loop(tiny_images(16), labels, n_classes, tiny_cfg(arch=arch, mode=mode, epochs=3,
                                                                   batch_size=4 if arch == "cyclegan" else 8),  # 2 steps an epoch
                      tmp_path / "c.pt", CPU)
    assert torch.load(tmp_path / "c.pt", weights_only=True)["epoch"] == 1  # the good state is kept


def test_divergence_guard_stops_a_collapsed_discriminator_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from ganaug.gan import losses

    calls = {"n": 0}
    original = losses.NonSaturatingLoss.discriminator

    def certain_from_epoch_2(self, real_logits, fake_logits):  # D's loss ~0 from the 3rd step (epoch 2) on
        calls["n"] += 1
        loss = original(self, real_logits, fake_logits)
        return loss * 1e-4 if calls["n"] >= 3 else loss

    monkeypatch.setattr(losses.NonSaturatingLoss, "discriminator", certain_from_epoch_2)
    cfg = tiny_cfg(epochs=6, collapse_epochs=2)
    with pytest.raises(GANDivergenceError, match=r"discriminator collapsed: its nonsaturating loss stayed below 0.001 in every "
                       r"step of epochs 2..3 .*stopped at step 6. Last good checkpoint: .*c.last_good.pt \(epoch 1\)"):
        training_loop(tiny_images(16), None, 0, cfg, tmp_path / "c.pt", CPU)  # 2 steps per epoch
    assert torch.load(last_good_path(tmp_path / "c.pt"), weights_only=True)["epoch"] == 1
    assert torch.load(tmp_path / "c.pt", weights_only=True)["epoch"] == 2  # the collapsed epoch 3 is not saved


def test_divergence_remedies_leave_out_what_the_params_already_do():
    assert divergence_remedies(dataclasses.replace(GANConfig(), augment="none", spectral_norm=False, r1_gamma=0.0)) == (
        "gan.augment=diffaugment or ada, a lower gan.lr_d, gan.spectral_norm=true or gan.r1_gamma > 0")
    assert divergence_remedies(dataclasses.replace(GANConfig(), augment="ada", spectral_norm=True, r1_gamma=1.0)) == (
        "a lower gan.lr_d")


def test_collapse_guard_is_off_with_collapse_epochs_0(tmp_path, monkeypatch):
    from ganaug.gan import losses

    original = losses.NonSaturatingLoss.discriminator
    monkeypatch.setattr(losses.NonSaturatingLoss, "discriminator", lambda self, r, f: original(self, r, f) * 1e-4)
    result = training_loop(tiny_images(16), None, 0, tiny_cfg(epochs=3, collapse_epochs=0), tmp_path / "c.pt", CPU)
    assert len(result.losses) == 6


def trained_generator(tmp_path, conditional: bool, arch: str = "dcgan", **options) -> TrainedGenerator:
    labels, n_classes = (np.arange(16) % 3, 3) if conditional else (None, 0)
    cfg = tiny_cfg(arch=arch, mode="conditional" if conditional else "minority", **options)
    result = training_loop(tiny_images(16), labels, n_classes, cfg, tmp_path / "g.pt", CPU)
    classes = [0, 1, 2] if conditional else [1]
    return TrainedGenerator(result.generator, dataclasses.asdict(cfg), ["normal", "bacterial", "viral"], classes, conditional, {})


@pytest.mark.parametrize("arch", ["dcgan", "cgan", "acgan", "stylegan2"])
def test_sampling_is_a_pure_function_of_seed_and_counts(tmp_path, arch):
    generator = trained_generator(tmp_path, True, arch, ema_kimg=0.1, spectral_norm=True)
    generator.save(tmp_path / "generator.pt")
    loaded = TrainedGenerator.load(tmp_path / "generator.pt")
    a_images, a_labels = generator.sample({0: 5, 2: 3}, seed=7)
    b_images, b_labels = loaded.sample({0: 5, 2: 3}, seed=7)
    np.testing.assert_array_equal(a_images, b_images)
    np.testing.assert_array_equal(a_labels, [0] * 5 + [2] * 3)
    assert a_images.dtype == np.uint8 and a_images.shape == (8, 1, 28, 28)
    assert not np.array_equal(generator.sample({0: 5, 2: 3}, seed=8)[0], a_images)


def test_generator_file_with_another_layout_is_refused_by_name(tmp_path):
    generator = trained_generator(tmp_path, conditional=False)
    generator.save(tmp_path / "generator.pt")
    blob = torch.load(tmp_path / "generator.pt", weights_only=True)
    blob["state_dict"] = {k.replace("trunk.blocks.0.conv", "net.0"): v for k, v in blob["state_dict"].items()}  # pre-blocks DCGAN
    torch.save(blob, tmp_path / "old.pt")
    with pytest.raises(ValueError, match=r"old.pt' does not match this version's gan.arch=dcgan network; rerun the train_gan stage"):
        TrainedGenerator.load(tmp_path / "old.pt")


def test_unconditional_generator_refuses_other_classes(tmp_path):
    generator = trained_generator(tmp_path, conditional=False)
    with pytest.raises(ValueError, match=r"cannot produce classes \['viral'\]; it was trained for \['bacterial'\]"):
        generator.sample({2: 1}, seed=0)


@pytest.mark.parametrize("arch, conditional", [("dcgan", True), ("dcgan", False), ("cgan", True), ("acgan", True),
                                                  ("stylegan2", True), ("stylegan2", False)])
def test_registered_generator_loads_back_as_pyfunc(tmp_path, arch, conditional):
    generator = trained_generator(tmp_path, conditional, arch)
    generator.save(tmp_path / "generator.pt")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = mlflow.create_experiment("t", artifact_location=(tmp_path / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=exp):
        info = pyfunc_generator.log_generator(tmp_path / "generator.pt", 1, 28, generator.trained_classes[0])
    model = mlflow.pyfunc.load_model(f"models:/{pyfunc_generator.REGISTERED_NAME}/{info.registered_model_version}")
    for class_label in generator.trained_classes:
        images = model.predict(pd.DataFrame({"class_label": [class_label], "count": [3]}), params={"seed": 5})
        assert images.shape == (3, 1, 28, 28) and images.dtype == np.uint8
        np.testing.assert_array_equal(images, generator.sample({class_label: 3}, seed=5)[0])
    mlflow.set_tracking_uri(None)


# read_every=1 reads each step's records right after it (the former behaviour); 2 and 100 leave
# steps on the device across reads, within an epoch (6, 3 and 12 steps) and up to its end
READ_CASES = [
    ("dcgan", "minority", {}),
    ("acgan", "conditional", {"loss": "wgan_gp", "n_critic": 2, "augment": "diffaugment", "ema_kimg": 0.1}),
    ("cgan", "conditional", {"augment": "ada", "ada_kimg": 0.05, "ada_target": 0.3, "lr_d": 5e-3, "batch_size": 4}),
]


@pytest.mark.parametrize("arch, mode, options", READ_CASES)
def test_loss_records_read_in_batches_equal_the_per_step_reads(tmp_path, arch, mode, options):
    labels, n_classes = (np.arange(48) % 2, 2) if mode == "conditional" else (None, 0)
    cfg = tiny_cfg(arch=arch, mode=mode, epochs=2, **options)
    runs = {every: training_loop(tiny_images(48), labels, n_classes, cfg, tmp_path / f"{every}.pt", CPU, read_every=every)
            for every in (1, 2, 100)}
    assert len(runs[1].losses) == 2 * (48 // (cfg.batch_size * cfg.n_critic))
    assert runs[2].losses == runs[1].losses and runs[100].losses == runs[1].losses
    assert runs[2].augment_p == runs[1].augment_p
    if cfg.augment == "ada":  # ADA read r_t from the batched records and moved p
        assert runs[2].losses[-1]["ada_p"] > 0


def test_step_records_build_the_logged_record_from_device_scalars():
    from ganaug.gan.records import StepRecords

    t = torch.tensor
    records = StepRecords()
    d_steps = [{"loss_d": t(1.5), "loss_d_adv": t(1.0), "d_real": t(0.75), "d_fake": t(0.25), "adversarial_d": t(1.0), "rt": t(0.5)},
               {"loss_d": t(2.5), "loss_d_adv": t(2.0), "d_real": t(0.25), "d_fake": t(0.75), "adversarial_d": t(2.0), "rt": t(-0.5)}]
    records.add({"step": 7, "epoch": 2, "ada_p": 0.125}, d_steps, {"loss_g": t(3.0), "loss_g_adv": t(2.0)})
    assert len(records) == 1
    (read,) = records.read()
    assert len(records) == 0 and records.read() == []
    assert read.record == {"step": 7, "epoch": 2, "loss_d": 2.0, "loss_g": 3.0, "loss_d_adv": 1.5, "d_real": 0.5,
                           "d_fake": 0.5, "rt": 0.0, "loss_g_adv": 2.0, "ada_p": 0.125}
    assert read.adversarial_d == 1.5 and read.rt == [0.5, -0.5]
