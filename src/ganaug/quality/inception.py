"""pytorch-fid's FID Inception-v3, loaded from a local weights file (never downloaded)."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import numpy as np
import pytorch_fid.inception as pfi
import torch
import torchvision

from ganaug.device import autocast

# pt_inception-2015-12-05-6726825d.pth: TF's 2015 FID Inception, ported by pytorch-fid
FID_WEIGHTS_FILE = pfi.FID_WEIGHTS_URL.rsplit("/", 1)[-1]
FID_FEATURE_DIM = 2048  # pool3 (final average pooling) features
FID_EXTRACTOR = "pytorch-fid-inception-v3-pool3"  # FeatureStats.extractor for these features


def to_three_channels(images: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) grayscale -> (N, 3, H, W) with the gray value in R, G and B.

    The one place where grayscale becomes RGB (Inception was trained on RGB).
    """
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"expected grayscale images (N, 1, H, W); got shape {tuple(images.shape)}")
    return images.repeat(1, 3, 1, 1)


def find_inception_weights(weights_path: str | os.PathLike | None) -> Path | None:
    """Locate the FID Inception weights: the configured file, else the torch hub cache, else None."""
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"Inception weights file {path} does not exist; it should be pytorch-fid's FID "
                f"Inception weights {FID_WEIGHTS_FILE} (from {pfi.FID_WEIGHTS_URL}). "
                "Weights are never downloaded here: copy the file there or fix the configured path."
            )
        return path
    cached = Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILE
    return cached if cached.is_file() else None


def fid_inception_architecture() -> torchvision.models.Inception3:
    """pytorch-fid's FID Inception network with untrained weights.

    Mirrors `pytorch_fid.inception.fid_inception_v3` without its download: torchvision's
    Inception3 (1008 classes, no aux head) with the TF-compatible blocks from pytorch-fid.
    A strict `load_state_dict` of the real weights checks that the layout still matches.
    """
    inception = torchvision.models.inception_v3(
        weights=None, num_classes=1008, aux_logits=False, init_weights=False
    )
    inception.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    inception.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    inception.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    inception.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    inception.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    inception.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    inception.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    inception.Mixed_7b = pfi.FIDInceptionE_1(1280)
    inception.Mixed_7c = pfi.FIDInceptionE_2(2048)
    return inception


def read_weights_file(weights_path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a weights file; anything else is a one-line error naming the file."""
    try:
        state_dict = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as err:  # by content: EOFError (empty), KeyError / UnpicklingError (text), RuntimeError (bad zip)
        raise ValueError(
            f"quality.inception_weights: {weights_path} is not a PyTorch weights file "
            f"({type(err).__name__}); expected pytorch-fid's {FID_WEIGHTS_FILE}"
        ) from err
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ValueError(
            f"quality.inception_weights: {weights_path} holds a {type(state_dict).__name__}, not a state dict of "
            f"tensors; expected pytorch-fid's {FID_WEIGHTS_FILE}"
        )
    return state_dict


def _refuse_download(url: str, *args, **kwargs):
    raise RuntimeError(f"pytorch-fid tried to download {url}; weights must come from a local file")


def load_fid_inception(weights_path: str | os.PathLike, device: str | torch.device) -> pfi.InceptionV3:
    """pytorch-fid's `InceptionV3` (2048-d pool3 output) with weights from a local file.

    The model takes (N, 3, H, W) in [0, 1], resizes to 299x299 (bilinear) and scales to
    [-1, 1] itself, exactly as in pytorch-fid.
    """
    # Why this way: `InceptionV3(use_fid_inception=True)` builds its backbone with
    # `fid_inception_v3()`, which always calls `load_state_dict_from_url` with a fixed URL
    # (torch hub cache only, so a file elsewhere or under another name is not found, and a
    # miss downloads). We build the same backbone ourselves, load the local state dict
    # strictly, and hand it to pytorch-fid's own InceptionV3 by patching `fid_inception_v3`
    # for the duration of the constructor. The wrapper (block split, resize,
    # normalisation, forward) is therefore pytorch-fid's code, not a copy. The URL loader
    # is patched to raise, so a future pytorch-fid that fetches weights another way fails
    # loudly instead of touching the network.
    weights_path = Path(weights_path)
    if not weights_path.is_file():
        raise FileNotFoundError(f"Inception weights file {weights_path} does not exist")
    state_dict = read_weights_file(weights_path)
    backbone = fid_inception_architecture()
    try:
        backbone.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        summary = " ".join(str(err).split())  # torch lists every key on its own line: keep the message one line
        raise ValueError(
            f"quality.inception_weights: {weights_path} does not hold pytorch-fid's FID Inception weights "
            f"({FID_WEIGHTS_FILE}): {summary[:300]}"
        ) from err

    with (
        mock.patch.object(pfi, "fid_inception_v3", lambda: backbone),
        mock.patch.object(pfi, "load_state_dict_from_url", _refuse_download),
    ):
        model = pfi.InceptionV3(
            output_blocks=[pfi.InceptionV3.BLOCK_INDEX_BY_DIM[FID_FEATURE_DIM]],
            resize_input=True,
            normalize_input=True,
            requires_grad=False,
            use_fid_inception=True,
        )
    return model.to(device).eval()


def inception_features(
    model: torch.nn.Module,
    images_uint8: np.ndarray,
    batch_size: int,
    device: str | torch.device,
    mixed_precision: bool = False,  # bf16 autocast on CUDA (quality.precision=bf16); no effect on the CPU
) -> np.ndarray:
    """Pool3 features (N, 2048) float32 of grayscale uint8 images (N, 1, H, W)."""
    images_uint8 = np.asarray(images_uint8)
    if images_uint8.dtype != np.uint8 or images_uint8.ndim != 4 or images_uint8.shape[1] != 1:
        raise ValueError(
            "inception_features expects uint8 grayscale images (N, 1, H, W); "
            f"got {images_uint8.dtype} {images_uint8.shape}"
        )
    if images_uint8.shape[0] == 0:
        raise ValueError("inception_features got no images")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")

    model.eval()  # BatchNorm must use its running statistics
    n = images_uint8.shape[0]
    features = np.empty((n, FID_FEATURE_DIM), dtype=np.float32)
    with torch.inference_mode(), autocast(torch.device(device), mixed_precision):
        for start in range(0, n, batch_size):
            batch = torch.from_numpy(images_uint8[start : start + batch_size]).to(device)
            batch = batch.float() / 255.0  # (B, 1, H, W) in [0, 1], as pytorch-fid's ToTensor
            pooled = model(to_three_channels(batch))[0]  # (B, 2048, 1, 1)
            if pooled.shape[1:] != (FID_FEATURE_DIM, 1, 1):
                raise ValueError(
                    f"expected pool3 output (B, {FID_FEATURE_DIM}, 1, 1); got {tuple(pooled.shape)}"
                )
            features[start : start + len(batch)] = pooled[:, :, 0, 0].float().cpu().numpy()
    if not np.isfinite(features).all():
        raise FloatingPointError("Inception features contain NaN or inf")
    return features


INCEPTION_CLASSES = 1008  # the 2015 TF Inception's ImageNet head (1000 classes + 8 unused)


def load_inception_fc(weights_path: str | os.PathLike) -> np.ndarray:
    """The classifier weights (1008, 2048) float64 of the same FID Inception weights file.

    With them the Inception Score needs no second forward pass: its logits are the pool3
    features already computed for the FID, times this matrix (see `inception_score`).
    """
    state_dict = read_weights_file(Path(weights_path))
    weight = state_dict.get("fc.weight")
    if weight is None or tuple(weight.shape) != (INCEPTION_CLASSES, FID_FEATURE_DIM):
        shape = None if weight is None else tuple(weight.shape)
        raise ValueError(
            f"{weights_path} has no Inception classifier 'fc.weight' of shape ({INCEPTION_CLASSES}, {FID_FEATURE_DIM}); "
            f"got {shape}. The Inception Score needs pytorch-fid's full weights file {FID_WEIGHTS_FILE}."
        )
    return weight.double().numpy()


def inception_score(pool3_features: np.ndarray, fc_weight: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """Inception Score (Salimans et al. 2016): (mean, std) over `splits` consecutive groups of
    exp(E_x KL(p(y|x) || p(y))).

    As the original code and torch-fidelity do, the logits are pool3 @ fc.weightᵀ without the
    bias ("logits_unbiased"), and the std is over splits with ddof = 0. The score only says how
    confidently and diversely an ImageNet classifier labels the images: it is reported because
    papers report it, and says little about X-rays, which are no ImageNet class.
    """
    features = np.asarray(pool3_features, dtype=np.float64)
    if features.ndim != 2 or features.shape[1] != fc_weight.shape[1]:
        raise ValueError(f"pool3 features must be (N, {fc_weight.shape[1]}); got {features.shape}")
    if not 1 <= splits <= len(features):
        raise ValueError(f"splits must be in [1, N={len(features)}]; got {splits}")
    logits = features @ fc_weight.T  # (N, 1008)
    log_p = logits - logits.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))  # log p(y|x)
    scores = []
    for part in np.array_split(log_p, splits):
        p = np.exp(part)
        log_marginal = np.log(p.mean(axis=0, keepdims=True))  # log p(y) within the split
        scores.append(np.exp((p * (part - log_marginal)).sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))
