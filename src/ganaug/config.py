"""`params.yaml` loaded into typed, frozen dataclasses, validated once at the boundary.

Every error names the dotted key (``gan.lr_g``) and what was expected, so a misspelt or
mistyped parameter fails before any data is read or any model is trained.
"""

from __future__ import annotations

import dataclasses
import difflib
import io
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ruamel.yaml import YAML

class ConfigError(ValueError):
    """A params.yaml key or value is wrong; the message names the key."""


# ---------------------------------------------------------------------------------------
# Sections. Each field's comment is its documentation (README "Params reference").


@dataclass(frozen=True)
class PhantomConfig:
    n_images: int = 2000  # images generated before splitting
    label_mode: Literal["binary", "three_class", "multilabel"] = "binary"
    class_fractions: dict[str, float] = field(
        default_factory=lambda: {"normal": 0.26, "bacterial": 0.48, "viral": 0.26}
    )  # relative class sizes over normal / bacterial / viral
    cardiomegaly_rate: float = 0.1  # fraction of images with an enlarged heart
    effusion_rate: float = 0.1  # fraction of images with a pleural effusion
    severity_range: list[float] = field(default_factory=lambda: [0.4, 0.8])  # pneumonia strength, drawn per image


@dataclass(frozen=True)
class MedMNISTConfig:
    flag: str = "pneumoniamnist"  # MedMNIST data set flag
    path: str | None = None  # local .npz; None downloads with the medmnist package
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
    extensions: list[str] = field(default_factory=lambda: [".dcm", ".dicom"])


@dataclass(frozen=True)
class PreprocessConfig:
    resize: Literal["squash", "center_crop", "pad"] = "squash"  # how a non-square image becomes square
    equalize: Literal["none", "histogram", "clahe"] = "none"  # after resizing
    clahe_clip: float = 0.01  # CLAHE clip limit (scikit-image clip_limit), equalize=clahe only
    denoise_crop: bool = False  # AC-GAN paper: Otsu threshold, opening/closing, crop to the largest body region


@dataclass(frozen=True)
class DataConfig:
    source: Literal["phantom", "medmnist", "folders", "nih", "dicom"] = "phantom"
    image_size: int = 64  # square side in pixels
    val_fraction: float = 0.15  # for sources without their own split
    test_fraction: float = 0.15
    seed: int = 0
    workers: int = 2  # threads reading image files
    on_bad_file: Literal["fail", "skip"] = "fail"  # corrupt / unreadable / wrongly named files
    on_leakage: Literal["fail", "drop"] = "fail"  # drop: remove leaked images from the later split
    near_duplicate_threshold: float | None = 0.97  # centred correlation of 32 px thumbnails; null = exact only
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    phantom: PhantomConfig = field(default_factory=PhantomConfig)
    medmnist: MedMNISTConfig = field(default_factory=MedMNISTConfig)
    folders: FoldersConfig = field(default_factory=FoldersConfig)
    nih: NIHConfig = field(default_factory=NIHConfig)
    dicom: DicomConfig = field(default_factory=DicomConfig)


@dataclass(frozen=True)
class ClassifierConfig:
    arch: str = "simple_cnn"  # simple_cnn | a timm model name
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # one run per seed
    epochs: int = 12
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 3  # epochs without a better validation loss before stopping
    device: Literal["auto", "cpu", "cuda"] = "auto"


@dataclass(frozen=True)
class ReferenceConfig:
    arch: str = "simple_cnn"
    epochs: int = 12
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 4
    seed: int = 0


@dataclass(frozen=True)
class GANConfig:
    arch: Literal["dcgan", "cgan", "acgan"] = "dcgan"  # registry ganaug.gan.GANS; cgan and acgan need mode=conditional
    mode: Literal["minority", "conditional"] = "minority"
    latent_dim: int = 100
    base_channels: int = 32  # DCGAN's ngf / ndf
    epochs: int = 50
    batch_size: int = 32
    loss: Literal["nonsaturating", "hinge", "wgan_gp"] = "hinge"  # adversarial loss
    gp_weight: float = 10.0  # WGAN-GP gradient-penalty weight (loss=wgan_gp only)
    r1_gamma: float = 0.0  # R1 penalty on real images, gamma/2 * ||grad D||^2; 0 = off
    n_critic: int = 1  # D steps per G step (5 is usual with wgan_gp)
    spectral_norm: bool = True  # spectral normalisation of every D layer (D then has no BatchNorm)
    aux_weight: float = 1.0  # AC-GAN: weight of the auxiliary class loss
    optimizer: Literal["adam", "rmsprop"] = "adam"  # for G and D; rmsprop ignores beta1/beta2
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    augment: Literal["none", "diffaugment", "ada"] = "diffaugment"  # D-input augmentation: always (diffaugment) or adaptive p (ada)
    augment_policy: list[Literal["translation", "cutout", "color"]] = field(
        default_factory=lambda: ["translation", "cutout", "color"]
    )  # DiffAugment ops; color = brightness + contrast
    ada_target: float = 0.6  # ADA: target of r_t = E[sign(D(real))]
    ada_kimg: float = 10.0  # ADA: thousands of real images over which p can go from 0 to 1
    ema_kimg: float = 1.0  # half-life of the EMA of G's weights in thousands of images; 0 = off
    collapse_epochs: int = 5  # stop when D's loss stays ~0 (< 1e-3) in every step of this many epochs in a row; 0 = off
    # stop when the samples' diversity (their spread / the real images' spread, the lower of pixels and reference
    # features; 0 = one image repeated, ~1 = as varied as the real set) stays below this in diversity_evals
    # evaluations in a row; 0 = off
    min_diversity: float = 0.2
    diversity_evals: int = 2
    eval_every: int = 10  # epochs between quality evaluations
    n_eval: int = 500  # generated images per evaluation
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"


@dataclass(frozen=True)
class SynthesizeConfig:
    target_ratio: float = 1.0  # raise each scarce class to this fraction of the largest
    seed: int = 1234
    batch_size: int = 256
    filter: Literal["none", "ssim_likeness", "reference_confidence"] = "none"  # keep only images scoring >= filter_threshold
    filter_threshold: float = 0.8  # ssim_likeness: max SSIM to a training image; reference_confidence: p(intended class)
    max_draws: float = 5.0  # candidates drawn per image requested before the filter gives up
    # quality gate: the generator's final evaluation (train_gan) must reach these levels, else nothing is written
    # label_fidelity_relative: share of samples the reference classifier assigns to the intended class, over its
    # hit rate on real images of those classes (1 = as recognisable as real images). 0 = unchecked, the default:
    # on the phantom the reference classifier recognises half the real normals and 2-24 % as many of the default
    # GAN's samples (BENCHMARKS.md), so coverage and diversity carry the gate; 0.5 suits a reliable classifier
    min_label_fidelity: float = 0.0
    min_coverage: float = 0.1  # coverage_domain: share of real images with a sample among their nearest neighbours
    min_diversity: float = 0.25  # diversity: spread of the samples / spread of the real images of their class
    override_gate: bool = False  # true: write the set anyway (recorded in the manifest and shown by evaluate)


@dataclass(frozen=True)
class QualityConfig:
    inception_weights: str | None = None  # pytorch-fid weights file; None = torch hub cache if present, else no Inception metrics
    device: Literal["auto", "cpu", "cuda"] = "auto"  # for the Inception forward passes
    batch_size: int = 64


@dataclass(frozen=True)
class EvaluateConfig:
    n_bootstrap: int = 2000  # paired bootstrap resamples of the test set
    ci: float = 0.95  # confidence level of the intervals
    seed: int = 0


@dataclass(frozen=True)
class Params:
    data: DataConfig = field(default_factory=DataConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    gan: GANConfig = field(default_factory=GANConfig)
    synthesize: SynthesizeConfig = field(default_factory=SynthesizeConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)


# ---------------------------------------------------------------------------------------
# Range checks: (section dataclass, field) -> (predicate, expectation).

_POSITIVE = (lambda v: v > 0, "> 0")
_NON_NEGATIVE = (lambda v: v >= 0, ">= 0")
_FRACTION = (lambda v: 0 <= v < 1, "in [0, 1)")
_PROBABILITY = (lambda v: 0 <= v <= 1, "in [0, 1]")
_DISTINCT_NAMES = (lambda v: v is None or (len(v) >= 1 and len(set(v)) == len(v)), "null or a non-empty list of distinct names")
_EXTENSIONS = (
    lambda v: len(v) >= 1 and all(e.startswith(".") and e == e.lower() for e in v),
    "a non-empty list of lower-case extensions with the dot, e.g. ['.png', '.jpg']",
)
_CHECKS: dict[tuple[type, str], tuple[typing.Callable[[Any], bool], str]] = {
    (DataConfig, "image_size"): (lambda v: 28 <= v <= 256, "an integer in [28, 256]"),
    (DataConfig, "val_fraction"): _FRACTION,
    (DataConfig, "test_fraction"): _FRACTION,
    (PhantomConfig, "n_images"): (lambda v: v >= 10, ">= 10"),
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
    (PreprocessConfig, "clahe_clip"): (lambda v: 0 < v <= 1, "in (0, 1]"),
    (ClassifierConfig, "seeds"): (lambda v: len(v) >= 1 and len(set(v)) == len(v), "a non-empty list of distinct seeds"),
    (EvaluateConfig, "ci"): (lambda v: 0 < v < 1, "in (0, 1)"),
    (EvaluateConfig, "n_bootstrap"): (lambda v: v >= 100, ">= 100"),
    (GANConfig, "beta1"): (lambda v: 0 <= v < 1, "in [0, 1)"),
    (GANConfig, "beta2"): (lambda v: 0 <= v < 1, "in [0, 1)"),
    (GANConfig, "augment_policy"): (lambda v: len(v) >= 1 and len(set(v)) == len(v), "a non-empty list of distinct ops"),
    (GANConfig, "ada_target"): (lambda v: 0 < v < 1, "in (0, 1)"),
    (SynthesizeConfig, "target_ratio"): (lambda v: 0 < v <= 10, "in (0, 10]"),
    (SynthesizeConfig, "filter_threshold"): (lambda v: -1 <= v <= 1, "in [-1, 1] (an SSIM or a probability)"),
    (SynthesizeConfig, "max_draws"): (lambda v: 1 <= v <= 100, "in [1, 100]"),
}
for _cls, _names in {
    ClassifierConfig: ("epochs", "batch_size", "lr", "patience"),
    ReferenceConfig: ("epochs", "batch_size", "lr", "patience"),
    GANConfig: ("latent_dim", "base_channels", "epochs", "batch_size", "lr_g", "lr_d", "eval_every", "n_eval",
                "gp_weight", "n_critic", "ada_kimg"),
    SynthesizeConfig: ("batch_size",),
    QualityConfig: ("batch_size",),
}.items():
    for _name in _names:
        _CHECKS[(_cls, _name)] = _POSITIVE
for _cls in (ClassifierConfig, ReferenceConfig):
    _CHECKS[(_cls, "weight_decay")] = _NON_NEGATIVE
for _name in ("r1_gamma", "aux_weight", "ema_kimg", "collapse_epochs"):
    _CHECKS[(GANConfig, _name)] = _NON_NEGATIVE
_CHECKS[(GANConfig, "min_diversity")] = _NON_NEGATIVE
_CHECKS[(GANConfig, "diversity_evals")] = (lambda v: v >= 1, ">= 1")
for _name in ("min_label_fidelity", "min_coverage"):
    _CHECKS[(SynthesizeConfig, _name)] = _PROBABILITY
_CHECKS[(SynthesizeConfig, "min_diversity")] = _NON_NEGATIVE


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


def _check_cross_field(params: Params) -> None:
    _check_data(params.data)
    _check_gan(params.gan)
    data = params.data
    if data.val_fraction + data.test_fraction >= 0.9:
        raise ConfigError(
            f"data.val_fraction + data.test_fraction = {data.val_fraction + data.test_fraction:g}:"
            " expected < 0.9 so that a training split remains"
        )


def params_from_dict(raw: dict[str, Any]) -> Params:
    """Validate a parsed params mapping; raises ConfigError naming the bad key."""
    params = _build(Params, raw, "")
    _check_cross_field(params)
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml (YAML 1.2, as DVC writes it)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file {str(path)!r} not found (expected a YAML file of stage sections)")
    try:
        raw = YAML(typ="safe", pure=True).load(path.read_text())
    except Exception as exc:  # ruamel raises several parser error types
        raise ConfigError(f"params file {str(path)!r} is not valid YAML: {exc}") from exc
    return params_from_dict(raw or {})


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
