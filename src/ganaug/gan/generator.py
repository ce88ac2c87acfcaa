"""A trained generator as a self-describing file, and seeded sampling from it.

A synthetic set is a pure function of (generator file, seed, per-class counts): noise comes
from an explicit `torch.Generator` on the CPU, class by class in class-index order. The
synthesize stage's pool uses `sample_stream` instead: one seeded stream per class whose images
do not depend on how many are asked for, so a smaller pool is a per-class prefix of a larger one.

A generator trained on multi-label data (`label_kind == "multi_hot"`: `class_names` are the K
findings) also samples from an array of multi-hot label vectors (N, K), one image per row
(`ganaug.gan.conditioning` draws such vectors from the train split's label combinations).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ganaug.config import GANConfig, gan_config_from_dict
from ganaug.gan import GANS
from ganaug.gan.train import build_generator, to_uint8
from ganaug.torchfile import BadFileError, load_torch_file, require_fields, save_torch_file, summary

FORMAT = "ganaug-generator-v1"
NOISE_CHUNK = 64  # images per noise seed in a class's stream (sample_stream)
EXPECTED = "a ganaug generator file written by the train_gan stage (rerun it)"
FIELDS = {"format": str, "state_dict": dict, "config": dict, "resolution": int, "channels": int,
          "class_names": list, "trained_classes": list, "conditional": bool, "info": dict}
LABEL_KINDS = ("class_index", "multi_hot")  # as meta.json's label_kind; files without the field are class_index


@dataclass
class TrainedGenerator:
    network: nn.Module  # G in eval mode (the EMA of G's weights when gan.ema_kimg > 0)
    config: dict[str, Any]  # the gan section it was trained with (gan.arch rebuilds the network)
    class_names: list[str]  # all classes of the data set
    trained_classes: list[int]  # classes this generator can produce
    conditional: bool  # True: G takes class labels; False: G models trained_classes[0] only
    info: dict[str, Any]  # data hash, epochs, final metrics…
    label_kind: str = "class_index"  # "multi_hot": trained on (N, K) finding vectors; class_names are the findings
    truncation_psi: float = 1.0  # StyleGAN2 truncation of every sample (synthesize.truncation_psi); 1 = off

    def __post_init__(self) -> None:
        assert self.label_kind in LABEL_KINDS, f"label_kind must be one of {LABEL_KINDS}, got {self.label_kind!r}"
        assert self.label_kind == "class_index" or self.conditional, "a multi-hot generator is conditional"

    @property
    def resolution(self) -> int:
        return self.network.resolution

    @property
    def channels(self) -> int:
        return self.network.channels

    def save(self, path: str | Path) -> None:
        """Write the generator file: tensors and plain values only (it loads with weights_only=True)."""
        save_torch_file(
            {
                "format": FORMAT,
                "state_dict": self.network.state_dict(),
                "config": self.config,
                "resolution": self.resolution,
                "channels": self.channels,
                "class_names": self.class_names,
                "trained_classes": self.trained_classes,
                "conditional": self.conditional,
                "info": self.info,
                # only multi-hot files carry it: class-index files stay as they were (same bytes, same DVC hash)
                **({"label_kind": self.label_kind} if self.multilabel else {}),
            },
            path,
        )

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> "TrainedGenerator":
        """Read a generator file with `weights_only=True` (nothing in the file can run code);
        a file that is not a generator file raises `BadFileError` naming it."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"generator file {str(path)!r} not found (run the train_gan stage)")
        blob = require_fields(load_torch_file(path, "generator file", EXPECTED), path, "generator file", EXPECTED, FIELDS)
        if blob["format"] != FORMAT:
            raise BadFileError(f"generator file {str(path)!r} has format {blob['format']!r}; expected {EXPECTED}")
        arch = blob["config"].get("arch", GANConfig().arch)
        if arch not in GANS:
            raise BadFileError(f"generator file {str(path)!r} has gan.arch={arch!r}; this version builds {sorted(GANS)}: "
                               "rerun the train_gan stage")
        try:
            cfg = gan_config_from_dict(blob["config"])
            n_cond = len(blob["class_names"]) if blob["conditional"] else 0
            network = build_generator(cfg, blob["resolution"], n_cond, blob["channels"])
        except (TypeError, ValueError, RuntimeError) as exc:  # unknown config keys, impossible sizes
            raise BadFileError(f"generator file {str(path)!r} has a gan config this version cannot build ({summary(exc)}); "
                               "rerun the train_gan stage") from exc
        try:
            network.load_state_dict(blob["state_dict"])
        except (RuntimeError, TypeError, AttributeError) as exc:  # e.g. a DCGAN file from before the shared blocks
            raise BadFileError(
                f"{str(path)!r} does not match this version's gan.arch={cfg.arch} network; rerun the train_gan stage ({summary(exc)})"
            ) from exc
        label_kind = blob.get("label_kind", "class_index")
        if label_kind not in LABEL_KINDS or (label_kind == "multi_hot" and not blob["conditional"]):
            raise BadFileError(f"generator file {str(path)!r} has label_kind={label_kind!r} (conditional={blob['conditional']}); "
                               f"expected one of {LABEL_KINDS}, multi_hot only for a conditional generator: {EXPECTED}")
        network.to(device).eval()
        return cls(network, blob["config"], blob["class_names"], blob["trained_classes"], blob["conditional"], blob["info"],
                   label_kind)

    def with_truncation(self, psi: float) -> "TrainedGenerator":
        """This generator sampling with truncation psi (w pulled towards its class's mean w); 1 = off.
        Only StyleGAN2 generators have a w to truncate: others raise naming synthesize.truncation_psi."""
        if psi != 1.0 and self.config.get("arch") != "stylegan2":
            raise ValueError(f"synthesize.truncation_psi={psi}: truncation needs a StyleGAN2 generator (gan.arch=stylegan2), "
                             f"this one is gan.arch={self.config.get('arch')}; expected synthesize.truncation_psi=1.0")
        if not 0.0 <= psi <= 1.0:
            raise ValueError(f"synthesize.truncation_psi={psi}: expected a value in [0, 1]")
        return dataclasses.replace(self, truncation_psi=psi)

    def _generate(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """G(z, y) in [-1, 1], truncated when truncation_psi != 1."""
        if self.truncation_psi != 1.0:
            return self.network(z, y, truncation_psi=self.truncation_psi)
        return self.network(z, y)

    @property
    def multilabel(self) -> bool:
        return self.label_kind == "multi_hot"

    @property
    def translator(self) -> bool:
        """gan.arch=cyclegan: the network translates images (`ganaug.gan.cyclegan.translate`), it takes no noise."""
        return self.config.get("arch") == "cyclegan"

    def _require_noise_driven(self) -> None:
        if self.translator:
            raise ValueError("this generator is a CycleGAN translator: it takes source images, not noise "
                             "(ganaug.gan.cyclegan.translate, or the synthesize stage)")

    @torch.no_grad()
    def sample(self, counts: dict[int, int] | list[tuple[int, int]] | np.ndarray, seed: int,
               batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """{class index: n} or [(class index, n), …] -> (images (N, C, R, R) uint8, labels (N,) int64),
        in the order given; one noise stream seeded by `seed` runs through all requests.

        A multi-hot generator also takes an array of label vectors (N, K) of 0/1 -> (images, the
        vectors as (N, K) uint8), one image per row; there a class-index request for finding k
        means the vector with finding k alone."""
        self._require_noise_driven()
        if isinstance(counts, np.ndarray):
            return self._sample_vectors(counts, seed, batch_size)
        requests = list(counts.items()) if isinstance(counts, dict) else [(int(c), int(n)) for c, n in counts]
        unknown = [c for c, _ in requests if c not in self.trained_classes]
        if unknown:
            names = [self.class_names[c] if 0 <= c < len(self.class_names) else str(c) for c in unknown]
            raise ValueError(
                f"generator cannot produce classes {names}; it was trained for "
                f"{[self.class_names[c] for c in self.trained_classes]}"
            )
        device = next(self.network.parameters()).device
        noise_rng = torch.Generator().manual_seed(seed)
        latent_dim = self.network.latent_dim
        images, labels = [], []
        for class_index, remaining in requests:
            if remaining < 0:
                raise ValueError(f"negative count {remaining} requested for class {class_index}")
            while remaining > 0:
                b = min(batch_size, remaining)
                z = torch.randn(b, latent_dim, generator=noise_rng).to(device)
                y = torch.full((b,), class_index, dtype=torch.long, device=device) if self.conditional else None
                images.append(to_uint8(self._generate(z, y)).cpu().numpy())
                labels.append(np.full(b, class_index, dtype=np.int64))
                remaining -= b
        if not images:
            shape = (0, self.channels, self.resolution, self.resolution)
            return np.zeros(shape, np.uint8), np.zeros(0, np.int64)
        return np.concatenate(images), np.concatenate(labels)

    def _sample_vectors(self, vectors: np.ndarray, seed: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Multi-hot label vectors (N, K) -> (images (N, C, R, R) uint8, vectors (N, K) uint8)."""
        k = len(self.class_names)
        if not self.multilabel:
            raise ValueError(f"label vectors need a generator trained on multi-label data; this one has "
                             f"label_kind={self.label_kind!r}: request {{class index: count}} instead")
        if vectors.ndim != 2 or vectors.shape[1] != k or not np.isin(vectors, (0, 1)).all():
            raise ValueError(f"label vectors must be multi-hot (N, {k}) of 0/1 over the findings {self.class_names}, "
                             f"got shape {vectors.shape}")
        vectors = vectors.astype(np.uint8)
        device = next(self.network.parameters()).device
        noise_rng = torch.Generator().manual_seed(seed)
        images = []
        for start in range(0, len(vectors), batch_size):
            y = torch.from_numpy(vectors[start : start + batch_size]).float().to(device)  # (B, K) as in training
            z = torch.randn(len(y), self.network.latent_dim, generator=noise_rng).to(device)
            images.append(to_uint8(self._generate(z, y)).cpu().numpy())
        if not images:
            return np.zeros((0, self.channels, self.resolution, self.resolution), np.uint8), vectors
        return np.concatenate(images), vectors

    @torch.no_grad()
    def sample_stream(self, class_index: int, start: int, n: int, seed: int, batch_size: int = 256) -> np.ndarray:
        """Images [start, start + n) of class `class_index`'s seeded stream: (n, C, R, R) uint8.

        Image i's noise comes from chunk i // NOISE_CHUNK, seeded by (seed, class_index, chunk),
        and every forward pass covers one whole aligned block of the stream (batch_size rounded up
        to a multiple of NOISE_CHUNK), so image i is the same, bit for bit, whatever `start` and `n`
        ask for it: the first m images of a class are a prefix of the first m' > m."""
        self._require_noise_driven()
        if class_index not in self.trained_classes:
            raise ValueError(f"generator cannot produce classes {[class_index]}; it was trained for "
                             f"{[self.class_names[c] for c in self.trained_classes]}")
        if start < 0 or n < 0:
            raise ValueError(f"sample_stream: start={start} and n={n} must be >= 0")
        block = -(-batch_size // NOISE_CHUNK) * NOISE_CHUNK  # images per forward pass, aligned to the chunks
        device = next(self.network.parameters()).device
        out = []
        for first in range(start // block * block, start + n, block):  # aligned blocks overlapping [start, start + n)
            z = torch.cat([
                torch.randn(NOISE_CHUNK, self.network.latent_dim, generator=torch.Generator().manual_seed(
                    int(np.random.SeedSequence([seed, class_index, chunk]).generate_state(1)[0])))
                for chunk in range(first // NOISE_CHUNK, (first + block) // NOISE_CHUNK)
            ]).to(device)  # (block, latent_dim)
            y = torch.full((block,), class_index, dtype=torch.long, device=device) if self.conditional else None
            images = to_uint8(self._generate(z, y)).cpu().numpy()  # (block, C, R, R)
            out.append(images[max(start - first, 0):start + n - first])
        if not out:
            return np.zeros((0, self.channels, self.resolution, self.resolution), np.uint8)
        return np.concatenate(out)
