"""Stage `report`: one self-contained HTML page, reports/index.html, from what the pipeline wrote
(the evaluation, the plots, the prepared train split, the synthetic set, the GAN's records); see
ganaug.report.build for its sections. The page is logged to the evaluate run that wrote
reports/evaluation.json, or to a new `report` run when that run is not in the store (said so)."""

from __future__ import annotations

import dataclasses

import mlflow

from ganaug.config import Params
from ganaug.io import atomic_file
from ganaug.report.build import answer, build_page, read_inputs
from ganaug.report.lineage import find_evaluate_run, generator_version
from ganaug.stages import paths
from ganaug.tracking import mlflow_utils, runs

PAGE = paths.REPORTS / "index.html"


def main(params: Params) -> None:  # noqa: ARG001 (reads no params: everything comes from the pipeline's outputs)
    mlflow_utils.setup()
    inputs = read_inputs(paths.PREPARED, paths.SYNTHETIC, paths.GAN, paths.REPORTS, paths.PLOTS)
    tags = mlflow_utils.lineage_tags("report", inputs.meta)
    evaluate_run = find_evaluate_run(inputs.evaluation, inputs.meta["dataset_hash"])
    generator_run = (inputs.manifest or {}).get("generator_mlflow_run_id")
    version = generator_version(generator_run)
    lineage = {"git commit (report)": tags["git.commit"] + (" (uncommitted changes)" if tags["git.dirty"] == "true" else ""),
               "DVC experiment": tags["dvc.exp_name"], "evaluate MLflow run": evaluate_run or "not found in the store",
               "generator registry version": (f"{version[0]}" + (f" (@{', @'.join(version[1])})" if version[1] else ""))
               if version else "not registered"}
    if evaluate_run is not None:
        lineage["git commit (evaluate)"] = mlflow.MlflowClient().get_run(evaluate_run).data.tags.get("git.commit", "n/a")
    page = build_page(dataclasses.replace(inputs, lineage=lineage))
    with atomic_file(PAGE) as tmp:
        tmp.write_text(page, encoding="utf-8")
    print(answer(inputs.evaluation)[0])
    if evaluate_run is not None:
        mlflow.MlflowClient().log_artifact(evaluate_run, str(PAGE), "report")
        print(f"wrote {PAGE} ({len(page) // 1024} KiB); logged to the evaluate run {evaluate_run} (artifacts report/index.html)")
        return
    key = runs.input_key(report=inputs.meta["dataset_hash"], evaluation=inputs.evaluation.get("mlflow_runs"))
    with runs.start_run("report", key, run_name="report", tags=tags) as run:
        mlflow.log_artifact(str(PAGE), "report")
    print(f"wrote {PAGE} ({len(page) // 1024} KiB); the evaluate run of reports/evaluation.json is not in the MLflow "
          f"store ({mlflow_utils.tracking_uri()}): logged to a new report run {run.info.run_id} instead")
