"""The report's lineage from MLflow: the evaluate run that wrote reports/evaluation.json (the page
is logged to it) and the registry version of the generator whose images the arms used."""

from __future__ import annotations

from typing import Any

import mlflow

from ganaug.tracking.mlflow_utils import EXPERIMENT
from ganaug.tracking.pyfunc_generator import REGISTERED_NAME
from ganaug.tracking.runs import STAGE_TAG


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


def find_evaluate_run(evaluation: dict[str, Any], dataset_hash: str) -> str | None:
    """The newest finished evaluate run of this evaluation: same data set hash, the same arm runs
    (evaluate tags `runs.<arm>` with each arm's parent run id, as evaluation.json's mlflow_runs
    records them) and the same bootstrap settings; None when no run matches."""
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return None
    conditions = [f"tags.`{STAGE_TAG}` = 'evaluate'", f"tags.`data.dataset_hash` = '{_quote(dataset_hash)}'",
                  "attributes.status = 'FINISHED'"]
    conditions += [f"tags.`runs.{arm}` = '{_quote(str(runs.get('parent')))}'"
                   for arm, runs in (evaluation.get("mlflow_runs") or {}).items()]
    found = mlflow.MlflowClient().search_runs([experiment.experiment_id], " AND ".join(conditions),
                                              order_by=["attributes.start_time DESC"])
    settings = {"evaluate.n_bootstrap": str(evaluation.get("n_bootstrap")), "evaluate.ci": str(evaluation.get("ci_level")),
                "evaluate.seed": str(evaluation.get("bootstrap_seed"))}
    for run in found:
        if all(run.data.params.get(k, v) == v for k, v in settings.items()):
            return run.info.run_id
    return None


def generator_version(generator_run_id: str | None) -> tuple[str, list[str]] | None:
    """(version, aliases) of the registered generator that the train_gan run `generator_run_id`
    logged, or None when it registered none (or the registry has no such model)."""
    if not generator_run_id:
        return None
    client = mlflow.MlflowClient()
    try:
        found = client.search_model_versions(f"name = '{REGISTERED_NAME}' and run_id = '{_quote(generator_run_id)}'")
    except mlflow.exceptions.MlflowException:
        return None
    if not found:
        return None
    newest = max(found, key=lambda v: int(v.version))
    aliases = list(client.get_model_version(REGISTERED_NAME, newest.version).aliases or [])
    return str(newest.version), aliases
