"""`params.yaml` loaded into typed, frozen dataclasses, validated once at the boundary.

Every error names the dotted key (``gan.lr_g``) and what was expected, so a misspelt or
mistyped parameter fails before any data is read or any model is trained.
"""

from __future__ import annotations

import dataclasses
import difflib
import io
import json
import math
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ruamel.yaml import YAML

from ganaug.resolution import buildable_resolutions, resolution_plan

class ConfigError(ValueError):
    """A params.yaml key or value is wrong; the message names the key."""


# ---------------------------------------------------------------------------------------
# Sections. Each field's comment is its documentation (README "Params reference").


@dataclass(frozen=True)
class PhantomConfig:
    n_images: int = 2000  # images generated before splitting
    # binary: normal / pneumonia | three_class: normal / bacterial / viral | multilabel: consolidation,
    # interstitial, cardiomegaly, effusion (needs gan.mode=conditional and no balanced arm; README "Multi-label data")
    label_mode: Literal["binary", "three_class", "multilabel"] = "binary"
    class_fractions: dict[str, float] = field(
        default_factory=lambda: {"normal": 0.26, "bacterial": 0.48, "viral": 0.26}
    )  # relative class sizes over normal / bacterial / viral
    cardiomegaly_rate: float = 0.1  # fraction of images with an enlarged heart
    effusion_rate: float = 0.1  # fraction of images with a pleural effusion
    severity_range: list[float] = field(default_factory=lambda: [0.4, 0.8])  # pneumonia strength, drawn per image


@dataclass(frozen=True)
class MedMNISTConfig:
    flag: str = "pneumoniamnist"  # any 2D MedMNIST flag (multi-label chestmnist gives multi-hot labels)
    path: str | None = None  # local .npz; null downloads with the medmnist package
    size: int = 28  # MedMNIST release size to download (28, 64, 128, 224)
    # class subset by medmnist.INFO name; on a multi-label flag: "no finding" vs each class alone
    classes: list[str] | None = None


IMAGE_EXTENSIONS = [".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"]


@dataclass(frozen=True)
class FoldersConfig:
    root: str | None = None  # class-per-folder tree, optionally under split folders (train/val/test)
    # folder: class = folder name | kaggle_binary: NORMAL / PNEUMONIA |
    # kaggle_three_class: normal / bacterial / viral from "bacteria" / "virus" in the file name
    label_rule: Literal["folder", "kaggle_binary", "kaggle_three_class"] = "folder"
    # auto: keep split folders if present (carve missing val/test from train) | keep: require them | ignore: re-split
    splits: Literal["auto", "keep", "ignore"] = "auto"
    extensions: list[str] = field(default_factory=lambda: list(IMAGE_EXTENSIONS))  # other files are bad files
    patient_pattern: str | None = None  # regex on the file name, group 1 = patient id (label_rule=folder)


NIH_FINDINGS = [
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
]


@dataclass(frozen=True)
class NIHConfig:
    csv: str | None = None  # Data_Entry_2017.csv (Image Index, Finding Labels, Patient ID[, folder])
    images: str | None = None  # image root, searched recursively for each Image Index
    label_mode: Literal["multilabel", "binary"] = "multilabel"  # binary: no finding vs any finding
    findings: list[str] | None = None  # subset of the 14; images with a finding outside it are left out
    splits: Literal["keep", "patient"] = "patient"  # keep: CSV folder column / split folders; patient: re-split


@dataclass(frozen=True)
class DicomConfig:
    root: str | None = None  # class-per-folder tree of DICOM files, optionally under split folders
    splits: Literal["auto", "keep", "ignore"] = "auto"  # as data.folders.splits
    extensions: list[str] = field(default_factory=lambda: [".dcm", ".dicom"])  # other files are bad files


@dataclass(frozen=True)
class PreprocessConfig:
    resize: Literal["squash", "center_crop", "pad"] = "squash"  # how a non-square image becomes square
    equalize: Literal["none", "histogram", "clahe"] = "none"  # after resizing
    clahe_clip: float = 0.01  # CLAHE clip limit (scikit-image clip_limit), equalize=clahe only
    denoise_crop: bool = False  # AC-GAN paper: Otsu threshold, opening/closing, crop to the largest body region


@dataclass(frozen=True)
class DataConfig:
    # phantom: the embedded generator (offline) | medmnist: a MedMNIST .npz | folders: class-per-folder images |
    # nih: ChestX-ray14 CSV + images | dicom: class-per-folder DICOM files (README "Data sources")
    source: Literal["phantom", "medmnist", "folders", "nih", "dicom"] = "phantom"
    image_size: int = 64  # square side in pixels; every source's images are resized to it
    val_fraction: float = 0.15  # share of images when the split is made here (a missing val: of the train part)
    test_fraction: float = 0.15  # as val_fraction, for the test split
    seed: int = 0  # phantom generation and split seed
    workers: int = 2  # threads reading image files
    # unreadable or misnamed files. fail: list them all | skip: leave them out, counted in meta.json
    on_bad_file: Literal["fail", "skip"] = "fail"
    # duplicates or patients shared between splits. fail: list them | drop: remove them from the later split
    on_leakage: Literal["fail", "drop"] = "fail"
    near_duplicate_threshold: float | None = 0.97  # centred correlation of 32 px thumbnails; null = exact only
    max_image_pixels: int = 50_000_000  # larger images (width x height from the header, before decoding) are bad files
    accept_by_content: bool = False  # true: a file whose content is another image format than its extension is read (recorded)
    # file names in messages and meta.json as <class folder>/#k (csv row n): auto = where a patient rule applies
    redact_paths: bool | Literal["auto"] = "auto"
    dedup_within_split: Literal["none", "exact", "near"] = "none"  # remove copies inside a split, keeping the first (near = exact + near)
    max_leakage_drop: float = 0.2  # warn when leakage drop / dedup removes more than this share of a class in a split
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    phantom: PhantomConfig = field(default_factory=PhantomConfig)
    medmnist: MedMNISTConfig = field(default_factory=MedMNISTConfig)
    folders: FoldersConfig = field(default_factory=FoldersConfig)
    nih: NIHConfig = field(default_factory=NIHConfig)
    dicom: DicomConfig = field(default_factory=DicomConfig)


@dataclass(frozen=True)
class ClassifierConfig:
    arch: str = "simple_cnn"  # simple_cnn (the seed papers' conv/pool/dropout/dense) | a timm name, e.g. resnet18
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # one run per seed
    epochs: int = 12  # at most; early stopping on the classifier.select number
    batch_size: int = 64  # images per optimizer step
    lr: float = 1e-3  # AdamW learning rate (the start of the schedule)
    weight_decay: float = 1e-4  # AdamW weight decay
    # epochs without a better classifier.select value before stopping; >= epochs: no early stop (the default:
    # the cosine schedule runs to its end and the best epoch is kept)
    patience: int = 12
    # learning rate over the epochs: constant | cosine (decays per step from lr to 0 at the end of classifier.epochs)
    schedule: Literal["constant", "cosine"] = "cosine"
    # the validation number that picks the kept epoch and drives early stopping (the test split never does):
    # val_loss (lowest) | val_roc_auc | val_balanced_accuracy (highest). val_roc_auc ignores the decision threshold:
    # on the phantom it kept epochs that predict one class for every image (balanced accuracy 0.5, AUC 0.85)
    select: Literal["val_loss", "val_roc_auc", "val_balanced_accuracy"] = "val_loss"
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA if present, else CPU (also train_reference's device)
    # k-fold cross-validation, 0 or 1 = off: k models per seed, validated on k folds of the val split and trained on
    # the arm's set plus the other folds (the GAN never sees val images; README "Cross-validation")
    folds: int = 0


@dataclass(frozen=True)
class ReferenceConfig:
    arch: str = "simple_cnn"  # the domain feature network (fd_domain, label fidelity): simple_cnn | a timm model name
    epochs: int = 12  # at most; early stopping on the validation loss
    batch_size: int = 64  # images per optimizer step
    lr: float = 1e-3  # AdamW learning rate
    weight_decay: float = 1e-4  # AdamW weight decay
    patience: int = 4  # epochs without a better validation loss before stopping
    seed: int = 0  # initialisation and data-order seed


@dataclass(frozen=True)
class StyleGAN2Config:
    # --- StyleGAN2 (gan.arch=stylegan2) ---
    mapping_layers: int = 2  # depth of the mapping net z -> w (the paper: 8; StyleGAN2-ADA's small-set configs: 2)
    w_dim: int = 128  # size of w and of the label embedding (the paper: 512; smaller trains on a CPU)
    style_mixing: float = 0.9  # probability that a training batch mixes two ws at a random layer
    # R1 weight gamma on real images, applied lazily (every r1_interval D steps, scaled by it); StyleGAN2-ADA's
    # heuristic 0.0002 * R^2 / batch gives 0.005 at 28 px and 0.03 at 64 px with batch 32
    r1_gamma: float = 0.05
    r1_interval: int = 16  # D steps between lazy R1 penalties
    pl_weight: float = 0.0  # path-length regularisation weight (the paper: 2); 0 = off
    pl_interval: int = 4  # G steps between lazy path-length penalties


@dataclass(frozen=True)
class CycleGANConfig:
    # the class translated from (a class name of the train split); null = the largest class
    source_class: str | None = None
    # the class translated into, the one synthesize makes; null = the smallest class
    target_class: str | None = None
    lambda_cycle: float = 10.0  # weight of the cycle-consistency L1 loss (A -> B -> A and B -> A -> B)
    # weight of the identity L1 loss (G_AB(b) ~ b), relative to lambda_cycle as in the paper's code; 0 = off
    lambda_identity: float = 0.5
    pool_size: int = 50  # past fakes D also sees (image pool); 0 = off
    decay_start: float = 0.5  # share of gan.epochs at constant learning rate; then linear decay towards 0
    n_res_blocks: int = 0  # residual blocks in G; 0 = by resolution (3 up to 32 px, 6 up to 128, 9 above)


@dataclass(frozen=True)
class GANConfig:
    # registry ganaug.gan.GANS; cgan and acgan need mode=conditional; stylegan2 takes both modes (gan.stylegan2);
    # cyclegan (a translator between two classes, gan.cyclegan) needs mode=minority
    arch: Literal["dcgan", "cgan", "acgan", "stylegan2", "cyclegan"] = "dcgan"
    mode: Literal["minority", "conditional"] = "minority"  # minority: the minority class only | conditional: all
    latent_dim: int = 100  # length of the noise vector z
    base_channels: int = 32  # DCGAN's ngf / ndf
    epochs: int = 50  # passes over the GAN's training images
    batch_size: int = 32  # real images per D step
    loss: Literal["nonsaturating", "hinge", "wgan_gp"] = "hinge"  # adversarial loss
    gp_weight: float = 10.0  # WGAN-GP gradient-penalty weight (loss=wgan_gp only)
    r1_gamma: float = 0.0  # R1 penalty on real images, gamma/2 * ||grad D||^2; 0 = off
    n_critic: int = 1  # D steps per G step (5 is usual with wgan_gp)
    spectral_norm: bool = True  # spectral normalisation of every D layer (D then has no BatchNorm)
    aux_weight: float = 1.0  # AC-GAN: weight of the auxiliary class loss
    optimizer: Literal["adam", "rmsprop"] = "adam"  # for G and D; rmsprop ignores beta1/beta2
    lr_g: float = 2e-4  # G's learning rate
    lr_d: float = 2e-4  # D's learning rate
    beta1: float = 0.5  # Adam's beta1 (DCGAN: 0.5)
    beta2: float = 0.999  # Adam's beta2
    augment: Literal["none", "diffaugment", "ada"] = "diffaugment"  # D-input augmentation: always (diffaugment) or adaptive p (ada)
    augment_policy: list[Literal["translation", "cutout", "color"]] = field(
        default_factory=lambda: ["translation", "cutout", "color"]
    )  # DiffAugment ops; color = brightness + contrast
    ada_target: float = 0.6  # ADA: target of r_t = E[sign(D(real))]
    ada_kimg: float = 10.0  # ADA: thousands of real images over which p can go from 0 to 1
    # half-life of the EMA of G's weights in thousands of images; the EMA is evaluated, saved and sampled; 0 = off
    ema_kimg: float = 1.0
    collapse_epochs: int = 5  # stop when D's loss stays ~0 (< 1e-3) in every step of this many epochs in a row; 0 = off
    # stop when the samples' diversity (their spread / the real images' spread, the lower of pixels and reference
    # features; 0 = one image repeated, ~1 = as varied as the real set) stays below this in diversity_evals
    # evaluations in a row; 0 = off
    min_diversity: float = 0.2
    diversity_evals: int = 2  # evaluations in a row below gan.min_diversity before training stops
    eval_every: int = 10  # epochs between quality evaluations
    n_eval: int = 500  # generated images per evaluation
    seed: int = 0  # initialisation, noise and data-order seed
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA if present (bf16 autocast), else CPU
    # CUDA only: bf16 autocast of G's and D's forward passes (gradient penalties and R1 stay float32) | fp32; CPU: fp32
    precision: Literal["bf16", "fp32"] = "bf16"
    compile: bool = False  # CUDA only: torch.compile G's and D's forward passes (the penalties' double backward stays eager)
    # CUDA only: fused Adam and cudnn.benchmark (the fastest kernels; rounding then differs between runs)
    fast_kernels: bool = True
    stylegan2: StyleGAN2Config = field(default_factory=StyleGAN2Config)  # gan.arch=stylegan2's own keys
    # weights to start from (transfer learning to a small set), of the same arch, resolution and classes: a generator
    # file (a copy of a previous run's models/gan/generator.pt: G and its EMA; D starts fresh) or a train_gan
    # checkpoint (.ganaug/train_gan/<key>/checkpoint.pt of an unfinished run: G, D and EMA); null = random init
    init_from: str | None = None
    # gan.arch=cyclegan only (it reads base_channels, epochs, batch_size, lr_g, lr_d, beta1, beta2, eval_every,
    # n_eval, seed; its loss is least squares, without augmentation or EMA)
    cyclegan: CycleGANConfig = field(default_factory=CycleGANConfig)

    def __post_init__(self) -> None:
        # GANConfig(**saved_dict): a checkpoint's or generator file's config holds its nested blocks as dicts
        for key, block in (("stylegan2", StyleGAN2Config), ("cyclegan", CycleGANConfig)):
            if isinstance(getattr(self, key), dict):
                object.__setattr__(self, key, block(**getattr(self, key)))


@dataclass(frozen=True)
class SynthesizeConfig:
    # size of the synthetic pool the arms draw from: for each class the generator makes, this many times the
    # real training images of the largest class (at least the largest of arms.ratios; at least 1 with synthetic_only)
    pool_ratio: float = 1.0
    seed: int = 1234  # noise seed: the synthetic set is a pure function of (generator, seed, counts)
    batch_size: int = 256  # images generated per forward pass
    # keep only images scoring >= filter_threshold. ssim_likeness: highest SSIM to a training image of the class
    # (it selects near-copies: synthesize also audits the unfiltered candidates) | reference_confidence: the
    # reference classifier's p(intended class)
    filter: Literal["none", "ssim_likeness", "reference_confidence"] = "none"
    filter_threshold: float = 0.8  # ssim_likeness: max SSIM to a training image; reference_confidence: p(intended class)
    max_draws: float = 5.0  # candidates drawn per image requested before the filter stops with an error
    # quality gate: the generator's final evaluation (train_gan) must reach these levels, else nothing is written.
    # label_fidelity_relative: share of samples the reference classifier assigns to the intended class, over its
    # hit rate on real images of those classes (1 = as recognisable as real images). 0 = unchecked, the default:
    # on the phantom the reference classifier recognises half the real normals and 2-24 % as many of the default
    # GAN's samples (BENCHMARKS.md), so coverage and diversity carry the gate; 0.5 suits a reliable classifier
    min_label_fidelity: float = 0.0
    min_coverage: float = 0.1  # coverage_domain: share of real images with a sample among their nearest neighbours
    min_diversity: float = 0.25  # diversity: spread of the samples / spread of the real images of their class
    # gan.arch=cyclegan only: translation_change (mean absolute difference between a translated image and its
    # source, 0-1 units) at least this; a translator that returns its input unchanged scores 0
    min_translation_change: float = 0.01
    override_gate: bool = False  # true: write the set anyway (recorded in the manifest and shown by evaluate)
    # StyleGAN2 truncation: w = mean w of the class + psi * (w - mean); 1 = off, < 1 trades diversity for fidelity
    # (and more near-copies: the memorisation audit sees it); gan.arch=stylegan2 only
    truncation_psi: float = 1.0
    # where the generator comes from: null = the pipeline's own (train_gan's models/gan/generator.pt) | a registry
    # version, models:/<name>@<alias> (e.g. models:/ganaug-generator@champion) or models:/<name>/<version>; the
    # resolve_generator stage pins the version, so synthesize reruns when the alias moves (README "Synthesizing from the
    # registry")
    generator: str | None = None


@dataclass(frozen=True)
class QualityConfig:
    # pytorch-fid's pt_inception-2015-12-05-6726825d.pth, for fid_inception, kid_inception, inception_score;
    # null = the torch hub cache if the file is there, else no Inception metrics (never downloaded)
    inception_weights: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"  # for the Inception forward passes
    batch_size: int = 64  # images per Inception forward pass
    # CUDA only: bf16 autocast of the Inception forward passes (faster; features, and so FID, differ slightly from
    # pytorch-fid's fp32 ones: compare FIDs of one precision only) | fp32
    precision: Literal["fp32", "bf16"] = "fp32"


@dataclass(frozen=True)
class ClassicAugmentConfig:
    # random left-right flips: off for chest X-rays (the heart and the stomach lie on one side); on for
    # left-right symmetric anatomy
    hflip: bool = False
    rotation: float = 10.0  # degrees: each image turned by a uniform angle in [-rotation, rotation]; 0 = off
    zoom: float = 0.1  # each image cropped to a random square of side (1 - u * zoom), u in [0, 1], resized back; 0 = off
    brightness: float = 0.1  # brightness multiplied by a uniform factor in [1 - brightness, 1 + brightness]; 0 = off
    contrast: float = 0.1  # contrast multiplied by a uniform factor in [1 - contrast, 1 + contrast]; 0 = off


@dataclass(frozen=True)
class ArmsConfig:
    # arms on real images only, a DVC stage each: real (required: every arm is compared with it),
    # balanced (classes balanced by arms.balance), classic (arms.classic augmentation on the fly)
    real: list[Literal["real", "balanced", "classic"]] = field(default_factory=lambda: ["real", "balanced", "classic"])
    # arm families on real + synthetic images, a DVC stage per family and ratio: synthetic, classic_synthetic
    # (default: synthetic only, so that the default dvc repro stays within 15 minutes on 2 CPU cores; classic_synthetic
    # needs its control, classic, in arms.real and evaluate.references)
    mixed: list[Literal["synthetic", "classic_synthetic"]] = field(default_factory=lambda: ["synthetic"])
    # synthetic_ratio of the mixed arms: synthetic images of a class / real training images of the largest class.
    # Written as decimals (1.0, not 1): each names its stage and folder (models/arms/synthetic-1.0)
    ratios: list[float] = field(default_factory=lambda: [0.5, 1.0])
    # synthetic_only: synthetic images alone, as many per class as the real train split (needs gan.mode=conditional); [] = off
    synthetic: list[Literal["synthetic_only"]] = field(default_factory=list)
    # how the balanced arm balances: oversample (every class drawn equally often in an epoch of the same size)
    # | class_weight (cross-entropy weighted by inverse class frequency)
    balance: Literal["oversample", "class_weight"] = "oversample"
    classic: ClassicAugmentConfig = field(default_factory=ClassicAugmentConfig)  # classic augmentation (torchvision v2), seeded


@dataclass(frozen=True)
class EvaluateConfig:
    n_bootstrap: int = 2000  # paired bootstrap resamples of the test set
    ci: float = 0.95  # confidence level of the intervals
    seed: int = 0  # bootstrap seed
    references: list[str] = field(default_factory=lambda: ["real", "balanced"])  # every arm is compared with each (real first)


@dataclass(frozen=True)
class PromoteConfig:
    # the quality gate's distance (lower is better, with a half-sample interval): fd_domain | kd_domain | fid_inception
    metric: Literal["fd_domain", "kd_domain", "fid_inception"] = "fd_domain"
    # the challenger's distance at most (1 - margin) x the champion's, and its interval entirely below the champion's
    quality_margin: float = 0.05
    # memorisation gate: share of audited samples within the copy threshold of a training image (~0.01 without copying)
    max_copy_rate_pixel: float = 0.05
    max_copy_rate_domain: float = 0.05  # the same in the reference network's feature space


@dataclass(frozen=True)
class TrackingConfig:
    # MLflow's system metrics (system/cpu_utilization_percentage, system/system_memory_usage_megabytes, …; GPU ones
    # when pynvml is installed) on the training runs: train_reference, train_gan, each classifier arm's run. Listed in no
    # stage's dvc.yaml params: it changes what MLflow records, not what a stage writes, so switching it reruns nothing
    system_metrics: bool = True
    system_metrics_interval: float = 10.0  # seconds between samples (each is logged at once)


@dataclass(frozen=True)
class SearchRange:
    low: int | float | None = None  # lower bound of a numeric key (integers for an integer key such as latent_dim)
    high: int | float | None = None  # upper bound, inclusive
    log: bool = False  # sample on a log scale (needs low > 0): learning rates, penalty weights
    choices: list[str | int | float | bool | list[str]] | None = None  # the values to pick from, instead of low/high


@dataclass(frozen=True)
class TuneConfig:
    # GAN study search space, gan key -> {low, high[, log]} or {choices: [...]}; keys not listed keep their gan value
    gan_space: dict[str, SearchRange] = field(default_factory=lambda: {
        "lr_g": SearchRange(low=2e-5, high=1e-3, log=True),
        "lr_d": SearchRange(low=2e-5, high=1e-3, log=True),
        "beta1": SearchRange(low=0.0, high=0.9),
        "latent_dim": SearchRange(choices=[64, 100, 128]),
        "base_channels": SearchRange(choices=[16, 32, 64]),
        "loss": SearchRange(choices=["nonsaturating", "hinge"]),
        "augment": SearchRange(choices=["none", "diffaugment", "ada"]),
        "augment_policy": SearchRange(choices=[["translation", "cutout", "color"], ["translation", "cutout"]]),
        "ema_kimg": SearchRange(choices=[0.0, 1.0, 10.0]),
        "r1_gamma": SearchRange(choices=[0.0, 0.1, 1.0]),
        "n_critic": SearchRange(low=1, high=2),
    })
    # where studies live: null = sqlite:///<project root>/optuna.db | journal:<file> (an Optuna journal file: several
    # local worker processes; a relative path is from the project root) | postgresql+psycopg2://user@host/db (machines)
    storage: str | None = None
    n_trials: int = 24  # budget: finished (complete + pruned) trials of a study, in total across restarts and workers
    timeout: float = 0.0  # seconds after which a worker starts no new trial (the running one finishes); 0 = no limit
    epochs: int | None = None  # GAN epochs per trial (pruning looks at every gan.eval_every of them); null = gan.epochs
    objective: Literal["fd_domain", "kd_domain"] = "fd_domain"  # minimised, on the *validation* split's reference features
    # a second objective minimised with tune.objective (a multi-objective study: NSGA-II, no pruning, a Pareto front):
    # none | copy_rate_pixel | copy_rate_domain (memorisation copy rate of the last evaluation's samples vs the train split)
    multi_objective: Literal["none", "copy_rate_pixel", "copy_rate_domain"] = "none"
    population: int = 8  # NSGA-II population of a multi-objective study (its first generation is drawn at random)
    sampler: Literal["tpe", "gp"] = "tpe"  # tpe: multivariate TPE | gp: Gaussian-process sampler; seeded by tune.seed
    pruner: Literal["median", "hyperband", "none"] = "median"  # stops trials whose evaluations are clearly worse
    warmup_epochs: int = 10  # no trial is pruned before this epoch (median: n_warmup_steps; hyperband: min_resource)
    startup_trials: int = 4  # finished trials before the median pruner prunes and TPE stops sampling at random
    seed: int = 0  # sampler seed; trial k trains with gan.seed = tune.seed + k (a retried trial: its original k)
    heartbeat_s: int = 60  # a running trial's heartbeat period; silent for 2x this (or its process gone) = failed
    max_retries: int = 1  # times a failed (killed) trial is retried with the same params
    # mixing study search space (`ganaug tune mixing`), key -> {low, high[, log]} or {choices: [...]}: synthetic_ratio
    # (synthetic images per generated class / real train images of the largest class, as arms.ratios), filter and
    # filter_threshold (as synthesize's), lr and weight_decay (the classifier's, used by the real-only reference too)
    mixing_space: dict[str, SearchRange] = field(default_factory=lambda: {
        "synthetic_ratio": SearchRange(choices=[0.25, 0.5, 1.0, 2.0]),
        "filter": SearchRange(choices=["none", "reference_confidence"]),
        "filter_threshold": SearchRange(low=0.5, high=0.9),
        "lr": SearchRange(low=3e-4, high=3e-3, log=True),
    })
    # maximised on the real *validation* split, averaged over tune.mixing_seeds: balanced_accuracy | macro_f1 |
    # minority_recall (recall of the class with the fewest real train images)
    mixing_objective: Literal["balanced_accuracy", "macro_f1", "minority_recall"] = "balanced_accuracy"
    mixing_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # classifier seeds of every trial and of the final test
    # stops a mixing trial between seeds: median (running mean over seeds vs the other trials', from the second seed)
    # | wilcoxon (Optuna's WilcoxonPruner on per-seed values vs the best trial; needs about 6 seeds to ever prune) | none
    mixing_pruner: Literal["median", "wilcoxon", "none"] = "median"
    # the fixed generator of the mixing study: null = models/gan/generator.pt (train_gan's) | a generator file |
    # a registry URI such as models:/ganaug-generator@champion
    mixing_generator: str | None = None


@dataclass(frozen=True)
class Params:
    data: DataConfig = field(default_factory=DataConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    gan: GANConfig = field(default_factory=GANConfig)
    synthesize: SynthesizeConfig = field(default_factory=SynthesizeConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    arms: ArmsConfig = field(default_factory=ArmsConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    promote: PromoteConfig = field(default_factory=PromoteConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


# ---------------------------------------------------------------------------------------
# Range checks: (section dataclass, field) -> (predicate, expectation). Every int and float
# field has one (a test checks it): a value that fits its type but not the run (latent_dim
# 1e11, 1e9 epochs) fails here, not while allocating or after hours of training.


def _between(low: float, high: float, low_open: bool = False) -> tuple[typing.Callable[[Any], bool], str]:
    """low <= v <= high (low < v with low_open); the expectation names both bounds."""
    above = (lambda v: v > low) if low_open else (lambda v: v >= low)
    return (lambda v: above(v) and v <= high), f"{'>' if low_open else '>='} {low} and <= {high}"


IMAGE_SIZE_RANGE = (28, 256)  # data.image_size; within it, the GAN needs a buildable size (resolution_plan)
MAX_SEED = 2**32 - 1  # numpy's legacy seeding and most tools take 32-bit seeds
MAX_EPOCHS = 100_000
MAX_BATCH = 65_536
_SEED = _between(0, MAX_SEED)
_EPOCHS = _between(1, MAX_EPOCHS)
_BATCH = _between(1, MAX_BATCH)
_LEARNING_RATE = _between(0, 1, low_open=True)
_WEIGHT_DECAY = _between(0, 1)
_KIMG = _between(0, 10_000)  # thousands of images: 10 million is far beyond any run here
_FRACTION = (lambda v: 0 <= v < 1, "in [0, 1)")
_PROBABILITY = (lambda v: 0 <= v <= 1, "in [0, 1]")
_DISTINCT_NAMES = (lambda v: v is None or (len(v) >= 1 and len(set(v)) == len(v)), "null or a non-empty list of distinct names")
_EXTENSIONS = (
    lambda v: len(v) >= 1 and all(e.startswith(".") and e == e.lower() for e in v),
    "a non-empty list of lower-case extensions with the dot, e.g. ['.png', '.jpg']",
)
_CHECKS: dict[tuple[type, str], tuple[typing.Callable[[Any], bool], str]] = {
    (DataConfig, "image_size"): (
        lambda v: IMAGE_SIZE_RANGE[0] <= v <= IMAGE_SIZE_RANGE[1], "an integer in [{}, {}]".format(*IMAGE_SIZE_RANGE)
    ),
    (DataConfig, "val_fraction"): _FRACTION,
    (DataConfig, "test_fraction"): _FRACTION,
    (DataConfig, "seed"): _SEED,
    (PhantomConfig, "n_images"): _between(10, 100_000),
    (PhantomConfig, "class_fractions"): (
        lambda v: all(f >= 0 for f in v.values()) and sum(v.values()) > 0, "fractions >= 0, not all 0"
    ),
    (PhantomConfig, "cardiomegaly_rate"): _PROBABILITY,
    (PhantomConfig, "effusion_rate"): _PROBABILITY,
    (PhantomConfig, "severity_range"): (
        lambda v: len(v) == 2 and 0 < v[0] <= v[1] <= 1, "[low, high] with 0 < low <= high <= 1"
    ),
    (MedMNISTConfig, "size"): (lambda v: v in (28, 64, 128, 224), "one of 28, 64, 128, 224"),
    (MedMNISTConfig, "classes"): _DISTINCT_NAMES,
    (NIHConfig, "findings"): _DISTINCT_NAMES,
    (FoldersConfig, "extensions"): _EXTENSIONS,
    (DicomConfig, "extensions"): _EXTENSIONS,
    (DataConfig, "workers"): (lambda v: 1 <= v <= 64, "an integer in [1, 64]"),
    (DataConfig, "near_duplicate_threshold"): (lambda v: v is None or 0.5 <= v <= 1, "null or in [0.5, 1]"),
    (DataConfig, "max_image_pixels"): (  # PIL refuses more than 2 x Image.MAX_IMAGE_PIXELS outright
        lambda v: 784 <= v <= 178_956_970, "an integer in [784 (28 x 28), 178956970 (PIL's own hard limit)]"
    ),
    (DataConfig, "max_leakage_drop"): _PROBABILITY,
    (PreprocessConfig, "clahe_clip"): (lambda v: 0 < v <= 1, "in (0, 1]"),
    (ClassifierConfig, "seeds"): (
        lambda v: len(v) >= 1 and len(set(v)) == len(v) and all(0 <= s <= MAX_SEED for s in v),
        f"a non-empty list of distinct seeds in [0, {MAX_SEED}]",
    ),
    (ClassifierConfig, "folds"): _between(0, 20),
    (EvaluateConfig, "ci"): (lambda v: 0 < v < 1, "in (0, 1)"),
    (EvaluateConfig, "n_bootstrap"): _between(100, 1_000_000),
    (EvaluateConfig, "seed"): _SEED,
    (GANConfig, "latent_dim"): _between(1, 4096),
    (GANConfig, "base_channels"): _between(1, 1024),
    (GANConfig, "epochs"): _EPOCHS,
    (GANConfig, "batch_size"): _BATCH,
    (GANConfig, "lr_g"): _LEARNING_RATE,
    (GANConfig, "lr_d"): _LEARNING_RATE,
    (GANConfig, "gp_weight"): _between(0, 1000, low_open=True),
    (GANConfig, "r1_gamma"): _between(0, 1000),
    (GANConfig, "n_critic"): _between(0, 100, low_open=True),
    (GANConfig, "aux_weight"): _between(0, 100),
    (GANConfig, "beta1"): (lambda v: 0 <= v < 1, "in [0, 1)"),
    (GANConfig, "beta2"): (lambda v: 0 <= v < 1, "in [0, 1)"),
    (GANConfig, "augment_policy"): (lambda v: len(v) >= 1 and len(set(v)) == len(v), "a non-empty list of distinct ops"),
    (GANConfig, "ada_target"): (lambda v: 0 < v < 1, "in (0, 1)"),
    (GANConfig, "ada_kimg"): _between(0, 10_000, low_open=True),
    (GANConfig, "ema_kimg"): _KIMG,
    (GANConfig, "collapse_epochs"): _between(0, MAX_EPOCHS),
    (GANConfig, "eval_every"): _between(0, MAX_EPOCHS, low_open=True),
    (GANConfig, "n_eval"): _between(10, 100_000),
    (GANConfig, "seed"): _SEED,
    (SynthesizeConfig, "pool_ratio"): (lambda v: 0 < v <= 10, "in (0, 10]"),
    (ArmsConfig, "real"): (lambda v: "real" in v and len(set(v)) == len(v), "a list of distinct arms that includes real"),
    (ArmsConfig, "mixed"): (lambda v: len(set(v)) == len(v), "a list of distinct arm families"),
    (ArmsConfig, "ratios"): (lambda v: len(set(v)) == len(v) and all(0 < r <= 10 for r in v),
                             "a list of distinct ratios in (0, 10]"),
    (ArmsConfig, "synthetic"): (lambda v: len(set(v)) == len(v), "[] or [synthetic_only]"),
    (ClassicAugmentConfig, "rotation"): _between(0, 180),
    (ClassicAugmentConfig, "zoom"): (lambda v: 0 <= v < 1, "in [0, 1)"),
    (ClassicAugmentConfig, "brightness"): (lambda v: 0 <= v < 1, "in [0, 1)"),
    (ClassicAugmentConfig, "contrast"): (lambda v: 0 <= v < 1, "in [0, 1)"),
    (EvaluateConfig, "references"): (lambda v: len(v) >= 1 and v[0] == "real" and len(set(v)) == len(v),
                                     "a list of distinct arm names that starts with real"),
    (SynthesizeConfig, "seed"): _SEED,
    (SynthesizeConfig, "batch_size"): _BATCH,
    (SynthesizeConfig, "filter_threshold"): (lambda v: -1 <= v <= 1, "in [-1, 1] (an SSIM or a probability)"),
    (SynthesizeConfig, "max_draws"): (lambda v: 1 <= v <= 100, "in [1, 100]"),
    (QualityConfig, "batch_size"): _BATCH,
    (PromoteConfig, "quality_margin"): _FRACTION,
    (PromoteConfig, "max_copy_rate_pixel"): _PROBABILITY,
    (PromoteConfig, "max_copy_rate_domain"): _PROBABILITY,
    (TrackingConfig, "system_metrics_interval"): _between(0.1, 3600),
}
for _cls in (ClassifierConfig, ReferenceConfig):
    _CHECKS[(_cls, "epochs")] = _EPOCHS
    _CHECKS[(_cls, "batch_size")] = _BATCH
    _CHECKS[(_cls, "lr")] = _LEARNING_RATE
    _CHECKS[(_cls, "weight_decay")] = _WEIGHT_DECAY
    _CHECKS[(_cls, "patience")] = _EPOCHS
_CHECKS[(ReferenceConfig, "seed")] = _SEED
_CHECKS[(StyleGAN2Config, "mapping_layers")] = _between(1, 16)
_CHECKS[(StyleGAN2Config, "w_dim")] = _between(1, 2048)
_CHECKS[(StyleGAN2Config, "style_mixing")] = _PROBABILITY
_CHECKS[(StyleGAN2Config, "r1_gamma")] = _between(0, 1000)
_CHECKS[(StyleGAN2Config, "r1_interval")] = _between(1, 10_000)
_CHECKS[(StyleGAN2Config, "pl_weight")] = _between(0, 1000)
_CHECKS[(StyleGAN2Config, "pl_interval")] = _between(1, 10_000)
_CHECKS[(SynthesizeConfig, "truncation_psi")] = _between(0, 1)
_CHECKS[(GANConfig, "min_diversity")] = _between(0, 2)
_CHECKS[(CycleGANConfig, "lambda_cycle")] = _between(0, 1000)
_CHECKS[(CycleGANConfig, "lambda_identity")] = _between(0, 100)
_CHECKS[(CycleGANConfig, "pool_size")] = _between(0, 10_000)
_CHECKS[(CycleGANConfig, "decay_start")] = _PROBABILITY
_CHECKS[(CycleGANConfig, "n_res_blocks")] = _between(0, 64)
_CHECKS[(GANConfig, "diversity_evals")] = _between(1, 1000)
for _name in ("min_label_fidelity", "min_coverage"):
    _CHECKS[(SynthesizeConfig, _name)] = _PROBABILITY
_CHECKS[(SynthesizeConfig, "min_diversity")] = _between(0, 2)
_CHECKS[(SynthesizeConfig, "min_translation_change")] = _PROBABILITY
_CHECKS[(TuneConfig, "n_trials")] = _between(1, 100_000)
_CHECKS[(TuneConfig, "timeout")] = _between(0, 10 * 365 * 86_400)
_CHECKS[(TuneConfig, "epochs")] = (lambda v: v is None or 1 <= v <= MAX_EPOCHS, f"null or an integer in [1, {MAX_EPOCHS}]")
_CHECKS[(TuneConfig, "warmup_epochs")] = _between(0, MAX_EPOCHS)
_CHECKS[(TuneConfig, "startup_trials")] = _between(0, 10_000)
_CHECKS[(TuneConfig, "population")] = _between(2, 10_000)
_CHECKS[(TuneConfig, "seed")] = _SEED
_CHECKS[(TuneConfig, "heartbeat_s")] = _between(1, 3600)
_CHECKS[(TuneConfig, "max_retries")] = _between(0, 100)
_CHECKS[(TuneConfig, "mixing_seeds")] = (
    lambda v: len(v) >= 1 and len(set(v)) == len(v) and all(0 <= s <= MAX_SEED for s in v),
    f"a non-empty list of distinct seeds in [0, {MAX_SEED}]",
)
# the bounds of a search range are checked against its gan key (ganaug.tune.space), where the key is known
_CHECKS[(SearchRange, "low")] = (lambda v: v is None or math.isfinite(v), "null or a finite number")
_CHECKS[(SearchRange, "high")] = (lambda v: v is None or math.isfinite(v), "null or a finite number")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        k, v = typing.get_args(tp)
        return f"a mapping of {_type_name(k)} to {_type_name(v)}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false", type(None): "null"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; return it in canonical form."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin is Literal:
        if value not in typing.get_args(tp):
            close = difflib.get_close_matches(str(value), [str(a) for a in typing.get_args(tp)], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{key}={value!r}: expected {_type_name(tp)}{hint}")
        return value
    if origin in (types.UnionType, typing.Union):
        if float in typing.get_args(tp):
            _require_finite(value, key)  # say why .nan fails, rather than "expected a number or null"
        for option in typing.get_args(tp):
            try:
                return _convert(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}={value!r}: expected {_type_name(tp)}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}={value!r}: expected {_type_name(tp)}")
        (item_tp,) = typing.get_args(tp)
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}={value!r}: expected {_type_name(tp)}")
        k_tp, v_tp = typing.get_args(tp)
        return {_convert(k, k_tp, key): _convert(v, v_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{key}={value!r}: expected null")
        return None
    if tp is float:
        # YAML 1.2 reads 1e-4 as a float; ints are valid floats. Booleans are not numbers.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}={value!r}: expected a number")
        _require_finite(value, key)
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={value!r}: expected an integer")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: expected true or false")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={value!r}: expected a string")
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {key}")


def _require_finite(value: Any, key: str) -> None:
    """YAML reads .inf, .nan and 1e999 as floats: no key means anything by them (an infinite
    EMA half-life freezes the generator at its initial weights)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}={value!r}: expected a finite number")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > sys.float_info.max:
        raise ConfigError(f"{key}={value!r}: expected a finite number")


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'params'}: expected a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean '{_join(prefix, close[0])}'?" if close else ""
            raise ConfigError(
                f"unknown params key '{_join(prefix, key)}'{hint} (valid keys: {', '.join(names)})"
            )
    values = {}
    for name in names:
        if name not in raw:
            continue
        key = _join(prefix, name)
        value = _convert(raw[name], hints[name], key)
        check = _CHECKS.get((cls, name))
        if check is not None and not check[0](value):
            raise ConfigError(f"{key}={raw[name]!r}: expected {check[1]}")
        values[name] = value
    return cls(**values)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


CONDITIONAL_GAN_ARCHS = ("cgan", "acgan")  # gan.arch values that always take class labels


def _check_gan(gan: GANConfig) -> None:
    if gan.arch in CONDITIONAL_GAN_ARCHS and gan.mode != "conditional":
        raise ConfigError(
            f"gan.arch={gan.arch} is class-conditional but gan.mode={gan.mode}: expected gan.mode=conditional "
            "(train on all classes with their labels), or gan.arch=dcgan for a minority-class GAN"
        )
    if gan.arch == "stylegan2":
        if gan.loss == "wgan_gp":
            raise ConfigError("gan.arch=stylegan2 with gan.loss=wgan_gp: its D's minibatch standard deviation mixes samples, "
                              "which WGAN-GP's per-sample gradient penalty forbids; expected gan.loss=nonsaturating "
                              "(StyleGAN2's logistic loss) or hinge")
        if gan.r1_gamma > 0:
            raise ConfigError(f"gan.r1_gamma={gan.r1_gamma} with gan.arch=stylegan2: its R1 is lazy and set by "
                              "gan.stylegan2.r1_gamma (every gan.stylegan2.r1_interval steps); expected gan.r1_gamma=0")
    if gan.arch == "cyclegan":
        if gan.mode != "minority":
            raise ConfigError(
                f"gan.arch=cyclegan translates gan.cyclegan.source_class into gan.cyclegan.target_class (one class made) "
                f"but gan.mode={gan.mode}: expected gan.mode=minority"
            )
        cc = gan.cyclegan
        if cc.source_class is not None and cc.source_class == cc.target_class:
            raise ConfigError(f"gan.cyclegan.source_class and gan.cyclegan.target_class are both {cc.source_class!r}: "
                              "expected two different classes")
    if gan.augment == "ada" and gan.loss == "wgan_gp":
        raise ConfigError(
            "gan.augment=ada with gan.loss=wgan_gp: ADA reads sign(D(real)), which means nothing for a "
            "shift-invariant Wasserstein critic; expected gan.loss=nonsaturating or hinge, or gan.augment=diffaugment"
        )


def _check_data(data: DataConfig) -> None:
    for source, section, keys in (("folders", data.folders, ("root",)), ("nih", data.nih, ("csv", "images")),
                                  ("dicom", data.dicom, ("root",))):
        for key in keys:
            if data.source == source and getattr(section, key) is None:
                raise ConfigError(f"data.source={source} needs data.{source}.{key} (a path), but it is null")
    pattern = data.folders.patient_pattern
    if pattern is not None:
        if data.folders.label_rule != "folder":
            raise ConfigError(
                f"data.folders.patient_pattern is set but data.folders.label_rule={data.folders.label_rule}: "
                "the kaggle rules read patients from the file names themselves; expected patient_pattern: null"
            )
        try:
            groups = re.compile(pattern).groups
        except re.error as exc:
            raise ConfigError(f"data.folders.patient_pattern={pattern!r}: not a regular expression ({exc})") from exc
        if groups < 1:
            raise ConfigError(f"data.folders.patient_pattern={pattern!r}: expected a capturing group (the patient id)")
    unknown = [f for f in data.nih.findings or [] if f not in NIH_FINDINGS]
    if unknown:
        raise ConfigError(f"data.nih.findings: unknown {unknown}; expected names from {NIH_FINDINGS}")
    if data.nih.label_mode == "multilabel" and data.nih.findings is not None and len(data.nih.findings) < 2:
        raise ConfigError(
            f"data.nih.findings={data.nih.findings} with data.nih.label_mode=multilabel is a single-class set: "
            "expected at least 2 findings, or label_mode: binary (no finding vs the finding)"
        )


def _check_gan_resolution(params: Params) -> None:
    """The GAN trains at data.image_size, so an unbuildable size fails here, not in train_gan."""
    size = params.data.image_size
    try:
        resolution_plan(size)
    except ValueError:
        sizes = buildable_resolutions(*IMAGE_SIZE_RANGE)
        nearest = sorted(sorted(sizes, key=lambda s: abs(s - size))[:2])
        raise ConfigError(
            f"data.image_size={size}: gan.arch={params.gan.arch} cannot be built at {size} px (its networks double "
            f"base x base maps, base 4..8, at least twice); expected one of {', '.join(map(str, sizes))} "
            f"(nearest: {' or '.join(map(str, nearest))})"
        ) from None


def arm_names(arms: ArmsConfig) -> list[str]:
    """Every arm the params define, as named in DVC stages, folders and tables: real-only arms,
    then `<family>-<ratio>` per mixed family and ratio, then synthetic_only."""
    return [*arms.real, *(f"{family}-{ratio}" for family in arms.mixed for ratio in arms.ratios), *arms.synthetic]


def _check_arms(params: Params) -> None:
    arms, pool = params.arms, params.synthesize.pool_ratio
    if arms.mixed and not arms.ratios:
        raise ConfigError(f"arms.mixed={arms.mixed} needs at least one ratio in arms.ratios (it is empty)")
    if arms.mixed and arms.ratios and pool < max(arms.ratios):
        raise ConfigError(
            f"synthesize.pool_ratio={pool} is below the largest of arms.ratios ({max(arms.ratios)}): expected "
            f"pool_ratio >= {max(arms.ratios)}, so that every mixed arm's images come from one pool"
        )
    if arms.synthetic:
        if params.gan.mode != "conditional":
            raise ConfigError(
                f"arms.synthetic={arms.synthetic} trains on synthetic images of every class, but gan.mode="
                f"{params.gan.mode} makes one class: expected gan.mode=conditional, or arms.synthetic: []"
            )
        if pool < 1:
            raise ConfigError(f"arms.synthetic={arms.synthetic} needs as many synthetic images per class as the real "
                              f"train split: expected synthesize.pool_ratio >= 1, got {pool}")
    if "classic_synthetic" in arms.mixed and not ("classic" in arms.real and "classic" in params.evaluate.references):
        raise ConfigError(
            f"arms.mixed={arms.mixed} has classic_synthetic, whose control is the classic arm (the same augmentation "
            f"without synthetic images): expected classic in arms.real (got {arms.real}) and in evaluate.references "
            f"(got {params.evaluate.references}), so that a gain classic augmentation alone gives is not reported as "
            "the synthetic images'"
        )
    names = arm_names(arms)
    unknown = [r for r in params.evaluate.references if r not in names]
    if unknown:
        raise ConfigError(f"evaluate.references={params.evaluate.references}: {unknown} is not an arm of these params "
                          f"(arms: {', '.join(names)})")


def _check_ratio_spelling(raw: dict[str, Any]) -> None:
    """A ratio names a DVC stage and its folder: DVC writes 1 as '1' and Python 1.0 as '1.0', so an
    integer would make the stage look for a folder the code does not write."""
    ratios = (raw.get("arms") or {}).get("ratios") if isinstance(raw.get("arms"), dict) else None
    for i, ratio in enumerate(ratios if isinstance(ratios, list) else []):
        if isinstance(ratio, int) and not isinstance(ratio, bool):
            raise ConfigError(f"arms.ratios[{i}]={ratio}: write it as a decimal ({float(ratio)}); it names the DVC "
                              f"stage and folder (models/arms/synthetic-{float(ratio)})")


# gan keys a study keeps fixed: what is trained and how it is measured, not how well
TUNE_FIXED_GAN_KEYS = ("arch", "mode", "epochs", "eval_every", "n_eval", "seed", "device", "precision", "compile",
                       "fast_kernels")


def _check_search_range(name: str, space: SearchRange, gan: GANConfig) -> None:
    """One `tune.gan_space` entry: a known, searchable gan key; choices each a valid value of
    it, or numeric bounds low < high inside the key's own range (> 0 on a log scale)."""
    key = f"tune.gan_space.{name}"
    hints = typing.get_type_hints(GANConfig)
    if name not in hints:
        close = difflib.get_close_matches(name, list(hints), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{key}: unknown gan key '{name}'{hint} (expected a key of the gan section)")
    if name in TUNE_FIXED_GAN_KEYS:
        raise ConfigError(f"{key}: gan.{name} is fixed for a study (one of {', '.join(TUNE_FIXED_GAN_KEYS)}); "
                          f"set it in the gan section (tune.epochs sets a trial's epochs)")
    _check_range(key, space, hints[name], _CHECKS.get((GANConfig, name)), f"gan.{name}")


_RATIO = (lambda v: 0 < v <= 10, "in (0, 10]")
# tune.mixing_space keys -> (type, range check, the params key whose values they take)
MIXING_KEYS: dict[str, tuple[Any, tuple[typing.Callable[[Any], bool], str] | None, str]] = {
    "synthetic_ratio": (float, _RATIO, "arms.ratios"),
    "filter": (typing.get_type_hints(SynthesizeConfig)["filter"], None, "synthesize.filter"),
    "filter_threshold": (float, _CHECKS[(SynthesizeConfig, "filter_threshold")], "synthesize.filter_threshold"),
    "lr": (float, _CHECKS[(ClassifierConfig, "lr")], "classifier.lr"),
    "weight_decay": (float, _CHECKS[(ClassifierConfig, "weight_decay")], "classifier.weight_decay"),
}


def _check_mixing_range(name: str, space: SearchRange) -> None:
    """One `tune.mixing_space` entry: a key of MIXING_KEYS with valid choices or bounds."""
    key = f"tune.mixing_space.{name}"
    if name not in MIXING_KEYS:
        close = difflib.get_close_matches(name, list(MIXING_KEYS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{key}: unknown mixing key '{name}'{hint} (expected one of {', '.join(MIXING_KEYS)})")
    tp, check, target = MIXING_KEYS[name]
    _check_range(key, space, tp, check, target)


def _check_range(key: str, space: SearchRange, tp: Any, check: tuple[typing.Callable[[Any], bool], str] | None,
                 target: str) -> None:
    """choices each a valid value of `target` (type `tp`, range `check`), or numeric bounds
    low < high inside that range (> 0 on a log scale)."""

    def valid(value: Any, where: str) -> Any:
        converted = _convert(value, tp, where)
        if check is not None and not check[0](converted):
            raise ConfigError(f"{where}={value!r}: expected {check[1]} (the range of {target})")
        return converted

    if space.choices is not None:
        if space.low is not None or space.high is not None or space.log:
            raise ConfigError(f"{key}: expected either choices or low/high[/log], not both")
        if not space.choices:
            raise ConfigError(f"{key}.choices=[]: empty; expected at least one value of {target}")
        values = [valid(c, f"{key}.choices[{i}]") for i, c in enumerate(space.choices)]
        if len({json.dumps(v) for v in values}) != len(values):
            raise ConfigError(f"{key}.choices={space.choices!r}: expected distinct values")
        return
    if tp not in (int, float):
        raise ConfigError(f"{key}: {target} is {_type_name(tp)}, not a number: expected choices: [...]")
    if space.low is None or space.high is None:
        raise ConfigError(f"{key}: expected low and high (or choices); got low={space.low}, high={space.high}")
    if tp is int and not all(isinstance(b, int) for b in (space.low, space.high)):
        raise ConfigError(f"{key}: {target} is an integer: expected integer bounds, got [{space.low}, {space.high}]")
    low, high = valid(space.low, f"{key}.low"), valid(space.high, f"{key}.high")
    if low >= high:
        raise ConfigError(f"{key}: low={space.low} >= high={space.high}: an empty range; expected low < high "
                          f"(a single value belongs in {target})")
    if space.log and low <= 0:
        raise ConfigError(f"{key}: log=true with low={space.low}: a log scale needs bounds > 0")


def _check_tune(params: Params) -> None:
    space = params.tune.gan_space
    for name, entry in space.items():
        _check_search_range(name, entry, params.gan)
    mixing = params.tune.mixing_space
    for name, entry in mixing.items():
        _check_mixing_range(name, entry)
    filters = mixing["filter"].choices if "filter" in mixing else [params.synthesize.filter]
    if "filter_threshold" in mixing and all(f == "none" for f in filters or []):
        raise ConfigError(f"tune.mixing_space.filter_threshold searches a threshold, but the only filter is 'none' "
                          f"(tune.mixing_space.filter or synthesize.filter): add a filter to the choices, or drop "
                          "filter_threshold")

    def possible(name: str) -> list[Any]:
        return list(space[name].choices or []) if name in space else [getattr(params.gan, name)]

    if "ada" in possible("augment") and "wgan_gp" in possible("loss"):
        raise ConfigError(
            "tune.gan_space allows gan.augment=ada together with gan.loss=wgan_gp, which gan refuses "
            f"(augment: {possible('augment')}, loss: {possible('loss')}): drop one of the two from the choices"
        )


def _check_cyclegan_synthesis(params: Params) -> None:
    if params.gan.arch == "cyclegan" and params.synthesize.filter != "none":
        raise ConfigError(
            f"synthesize.filter={params.synthesize.filter} with gan.arch=cyclegan: a translator makes one image per "
            "source image (its provenance is recorded), so a filter has no further candidates to draw; expected "
            "synthesize.filter=none"
        )


# a model registry version: models:/<name>@<alias> or models:/<name>/<version>
REGISTRY_URI = re.compile(r"models:/(?P<name>[^/@\s]+)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>[1-9][0-9]*))")
REGISTRY_URI_FORMS = "models:/<name>@<alias> (e.g. models:/ganaug-generator@champion) or models:/<name>/<version> " \
                     "(e.g. models:/ganaug-generator/3)"


def registry_uri_parts(uri: str, key: str, otherwise: str = "") -> tuple[str, str | None, str | None]:
    """(name, alias, version) of a registry URI, one of alias and version None; ConfigError
    naming `key` when `uri` has neither form (`otherwise`: what else the key accepts)."""
    match = REGISTRY_URI.fullmatch(uri)
    if match is None:
        raise ConfigError(f"{key}={uri!r}: expected {otherwise}a registry URI {REGISTRY_URI_FORMS}")
    return match["name"], match["alias"], match["version"]


def _check_generator_uris(params: Params) -> None:
    if params.synthesize.generator is not None:
        registry_uri_parts(params.synthesize.generator, "synthesize.generator",
                           "null (the pipeline's own models/gan/generator.pt) or ")
    mixing = params.tune.mixing_generator
    if mixing is not None and mixing.startswith("models:"):
        registry_uri_parts(mixing, "tune.mixing_generator", "a generator file or ")


def _check_cross_field(params: Params) -> None:
    _check_generator_uris(params)
    _check_data(params.data)
    _check_gan(params.gan)
    _check_cyclegan_synthesis(params)
    _check_tune(params)
    _check_gan_resolution(params)
    _check_arms(params)
    if params.synthesize.truncation_psi != 1.0 and params.gan.arch != "stylegan2":
        raise ConfigError(f"synthesize.truncation_psi={params.synthesize.truncation_psi}: truncation needs a StyleGAN2 "
                          f"generator, but gan.arch={params.gan.arch}; expected gan.arch=stylegan2 or truncation_psi: 1.0")
    data = params.data
    if data.val_fraction + data.test_fraction >= 0.9:
        raise ConfigError(
            f"data.val_fraction + data.test_fraction = {data.val_fraction + data.test_fraction:g}:"
            " expected < 0.9 so that a training split remains"
        )


def _check_classifier_archs(params: Params) -> None:
    """Every classifier name is `simple_cnn` or one `timm.list_models()` knows (what
    `classify.models.create_classifier` accepts). timm imports torch (seconds), so it is
    imported only when a name is not `simple_cnn`."""
    names = {"reference.arch": params.reference.arch, "classifier.arch": params.classifier.arch}
    if all(name == "simple_cnn" for name in names.values()):
        return
    import timm

    known = set(timm.list_models())
    for key, name in names.items():
        if name != "simple_cnn" and name not in known:
            close = difflib.get_close_matches(name, ["simple_cnn", *sorted(known)], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{key}={name!r}: expected 'simple_cnn' or a timm model name (timm.list_models()){hint}")


def params_from_dict(raw: dict[str, Any]) -> Params:
    """Validate a parsed params mapping; raises ConfigError naming the bad key."""
    params = _build(Params, raw, "")
    _check_ratio_spelling(raw)
    _check_cross_field(params)
    _check_classifier_archs(params)
    return params


def _check_files(params: Params) -> None:
    """Files that params name and no stage creates exist (relative paths: from the working directory)."""
    weights = params.quality.inception_weights
    if weights is not None and not Path(weights).expanduser().is_file():
        raise ConfigError(
            f"quality.inception_weights={weights!r}: no such file (expected a local copy of pytorch-fid's FID "
            "Inception weights, which are never downloaded; null = torch hub cache if present)"
        )


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate the whole of params.yaml (YAML 1.2, as DVC writes it), whichever
    sections the calling stage reads, so the first stage already stops a bad run."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file {str(path)!r} not found (expected a YAML file of stage sections)")
    try:
        raw = YAML(typ="safe", pure=True).load(path.read_text())
    except Exception as exc:  # ruamel raises several parser error types
        mark = getattr(exc, "problem_mark", None)  # one line: the problem and where, not ruamel's caret drawing
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise ConfigError(f"params file {str(path)!r} is not valid YAML: {problem}{where}") from exc
    if raw is None or raw == {}:
        print(f"note: params file {str(path)!r} is empty: every key takes its default "
              "(README \"Params reference\")", file=sys.stderr)
        raw = {}
    if not isinstance(raw, dict):
        sections = ", ".join(f.name for f in dataclasses.fields(Params))
        raise ConfigError(
            f"params file {str(path)!r}: expected a mapping of sections ({sections}), got {type(raw).__name__} {raw!r:.60}"
        )
    params = params_from_dict(raw)
    _check_files(params)
    return params


def gan_config_from_dict(raw: dict[str, Any]) -> GANConfig:
    """A gan section as saved with a checkpoint or generator file (`to_dict`); GANConfig's
    __post_init__ turns its nested blocks (gan.stylegan2, gan.cyclegan) back into dataclasses, and
    files from before a block get its defaults. Unknown keys raise TypeError; values are not
    range-checked again (they were when trained)."""
    return GANConfig(**raw)


def to_dict(obj: Any) -> Any:
    """A config (or section, or a mapping of sections) as plain dicts and lists."""
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """`{'gan': {'lr_g': 2e-4}}` -> `{'gan.lr_g': 2e-4}` (lists kept as JSON strings)."""
    out: dict[str, Any] = {}
    for key, value in to_dict(obj).items():
        name = _join(prefix, key)
        if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
            out.update(flatten(value, name))
        elif isinstance(value, (list, dict)):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out


def dump_yaml(obj: Any) -> str:
    """A section as YAML text, for `--dry-run` and resolved-config files."""
    stream = io.StringIO()
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.dump(to_dict(obj), stream)
    return stream.getvalue()
