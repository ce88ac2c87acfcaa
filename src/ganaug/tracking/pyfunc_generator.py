"""The generator as an MLflow pyfunc model: input rows (class_label, count), params seed and
truncation_psi, output uint8 images (N, C, H, W) in the order of the rows.

    model = mlflow.pyfunc.load_model("models:/ganaug-generator@champion")
    images = model.predict(pd.DataFrame({"class_label": [0], "count": [16]}), params={"seed": 7})
    closer = model.predict(..., params={"seed": 7, "truncation_psi": 0.7})  # StyleGAN2 only

truncation_psi is synthesize.truncation_psi's counterpart (1 = off; StyleGAN2 only, any other
generator refuses psi != 1 naming the param).

The model is logged as code (`generator_model.py`, MLflow's models-from-code), not as a
cloudpickled object: loading it unpickles nothing, and the weights load with weights_only=True.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

import ganaug

REGISTERED_NAME = "ganaug-generator"
MODEL_CODE = Path(__file__).with_name("generator_model.py")  # calls mlflow.models.set_model(GeneratorModel())


class GeneratorModel(mlflow.pyfunc.PythonModel):
    """Wraps `TrainedGenerator.sample`: a pure function of (weights, seed, requested counts)."""

    def load_context(self, context: Any) -> None:
        from ganaug.gan.generator import TrainedGenerator

        self.generator = TrainedGenerator.load(context.artifacts["generator"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        missing = {"class_label", "count"} - set(model_input.columns)
        if missing:
            raise ValueError(f"generator input needs columns class_label and count; missing {sorted(missing)}")
        seed = int((params or {}).get("seed", 0))
        psi = float((params or {}).get("truncation_psi", 1.0))
        try:
            generator = self.generator.with_truncation(psi)  # refuses psi outside [0, 1] or a non-StyleGAN2 G
        except ValueError as exc:  # its message names the synthesize key; here the key is the predict param
            raise ValueError(str(exc).replace("synthesize.truncation_psi", "params['truncation_psi']")) from None
        requests = [(int(c), int(n)) for c, n in zip(model_input["class_label"], model_input["count"])]
        images, _ = generator.sample(requests, seed)
        return images


def signature(channels: int, resolution: int) -> ModelSignature:
    return ModelSignature(
        inputs=Schema([ColSpec("long", "class_label"), ColSpec("long", "count")]),
        outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, channels, resolution, resolution))]),
        params=ParamSchema([ParamSpec("seed", "long", 0), ParamSpec("truncation_psi", "double", 1.0)]),
    )


def log_pyfunc(model_code: Path, generator_file: Path, model_signature: ModelSignature, input_example: Any,
               register: bool = True) -> Any:
    """Log (and register, under REGISTERED_NAME) a generator file as the pyfunc model that
    `model_code` defines, in the active run; returns the ModelInfo. The noise-driven generators
    and the translators (pyfunc_translator) differ only in the code, signature and example."""
    return mlflow.pyfunc.log_model(
        name="generator",
        python_model=str(model_code),  # models-from-code: no pickled object in the model
        artifacts={"generator": str(generator_file)},
        code_paths=[str(Path(ganaug.__file__).parent)],  # the model carries the code that samples it
        signature=model_signature,
        input_example=input_example,
        pip_requirements=["torch", "numpy", "pandas", "scipy", "ruamel.yaml", "tqdm"],
        registered_model_name=REGISTERED_NAME if register else None,
    )


def log_generator(generator_file: Path, channels: int, resolution: int, example_class: int, register: bool = True) -> Any:
    """Log (and register) the generator in the active run; returns the ModelInfo."""
    return log_pyfunc(MODEL_CODE, generator_file, signature(channels, resolution),
                      pd.DataFrame({"class_label": [example_class], "count": [2]}), register)
