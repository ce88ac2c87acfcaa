"""A CycleGAN translator as an MLflow pyfunc model: input uint8 images (N, C, H, W) of the
source class, output uint8 images (N, C, H, W) of the target class, row i translated from
input i (no params: a translator is deterministic).

    model = mlflow.pyfunc.load_model("models:/ganaug-generator@champion")
    translated = model.predict(source_images)  # (N, 1, 64, 64) uint8 -> (N, 1, 64, 64) uint8

Registered under the same name as the noise-driven generators (`pyfunc_generator`), so the
registry's aliases, model cards and promotion gates apply unchanged; the model card's tags say
which kind a version is (gan.arch). Logged as code (`translator_model.py`), like the generators.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from ganaug.tracking.pyfunc_generator import log_pyfunc

MODEL_CODE = Path(__file__).with_name("translator_model.py")  # calls mlflow.models.set_model(TranslatorModel())


class TranslatorModel(mlflow.pyfunc.PythonModel):
    """Wraps `ganaug.gan.cyclegan.translate` over the generator file's G_AB."""

    def load_context(self, context: Any) -> None:
        from ganaug.gan.generator import TrainedGenerator

        self.generator = TrainedGenerator.load(context.artifacts["generator"])
        if not self.generator.translator:
            raise ValueError(f"{context.artifacts['generator']} is a noise-driven generator, not a translator: "
                             "log it with pyfunc_generator.log_generator")

    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
        from ganaug.gan.cyclegan import translate

        images = np.asarray(model_input)
        shape = (self.generator.channels, self.generator.resolution, self.generator.resolution)
        if images.ndim != 4 or images.shape[1:] != shape or images.dtype != np.uint8:
            raise ValueError(f"translator input must be uint8 images (N, {', '.join(map(str, shape))}), "
                             f"got {images.dtype} {images.shape}")
        return translate(self.generator.network, images)


def signature(channels: int, resolution: int) -> ModelSignature:
    spec = TensorSpec(np.dtype(np.uint8), (-1, channels, resolution, resolution))
    return ModelSignature(inputs=Schema([spec]), outputs=Schema([spec]))


def log_translator(generator_file: Path, channels: int, resolution: int, register: bool = True) -> Any:
    """Log (and register) the translator in the active run; returns the ModelInfo."""
    return log_pyfunc(MODEL_CODE, generator_file, signature(channels, resolution),
                      np.full((1, channels, resolution, resolution), 128, np.uint8), register)
