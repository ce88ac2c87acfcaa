"""The CycleGAN translator's pyfunc model as code (MLflow models-from-code): see
`pyfunc_translator`. Loading it unpickles nothing; the weights load with `weights_only=True`."""

import mlflow

from ganaug.tracking.pyfunc_translator import TranslatorModel

mlflow.models.set_model(TranslatorModel())
