"""The generator's pyfunc model as code (MLflow models-from-code).

`pyfunc_generator.log_generator` logs this file instead of a cloudpickled model object: MLflow
stores it with the model and runs it when the model is loaded, so loading a registered
generator unpickles nothing (the weights file loads with `weights_only=True`).
"""

import mlflow

from ganaug.tracking.pyfunc_generator import GeneratorModel

mlflow.models.set_model(GeneratorModel())
