"""`ganaug tune mixing | show mixing | apply mixing`: the mixing study (logic in `ganaug.tune.mixing`).

`tune mixing` needs `data/prepared` and a fixed generator (tune.mixing_generator: train_gan's
models/gan/generator.pt by default, a file, or a registry URI such as
models:/ganaug-generator@champion); with the reference_confidence filter among the choices, also
models/reference. The search reads the train and val arrays only (`load_packed(splits=("train",
"val"))`). The test split is read in one place: the final evaluation of the chosen trial
(`tune mixing --final` after the search, or `tune apply mixing`), which runs once per study and
is stored in it; asking for another trial's test evaluation afterwards is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import mlflow

from ganaug.classify.models import check_arch
from ganaug.config import Params, SynthesizeConfig, TuneConfig, flatten
from ganaug.data.packed import load_packed, read_meta
from ganaug.device import pick_device
from ganaug.gan.generator import TrainedGenerator
from ganaug.quality.filters import reference_confidence_scorer, ssim_likeness_scorer
from ganaug.stages import paths
from ganaug.stages.checks import require_single_label
from ganaug.tracking import generator_source, mlflow_utils, runs
from ganaug.tune import mixing
from ganaug.tune import study as studies
from ganaug.tune.space import params_to_mixing, space_as_dict
from ganaug.tune.storage import open_storage, redact, resolve_storage_url

SPLITS_READ = ("train", "val")  # the search never reads "test"
REGISTRY_PREFIX = "models:/"


def tune_config(params: Params, args: argparse.Namespace) -> TuneConfig:
    """params.yaml's tune section with the command line's overrides (show and apply take --storage only)."""
    return studies.with_overrides(params.tune, getattr(args, "trials", None), getattr(args, "timeout", None), args.storage)


def filters_possible(params: Params) -> list[str]:
    space = params.tune.mixing_space
    return list(space["filter"].choices) if "filter" in space else [params.synthesize.filter]


def generator_file(spec: str | None, root: Path) -> Path:
    """tune.mixing_generator as a local generator file (a registry URI is downloaded first)."""
    if spec is None:
        return root / paths.GAN / "generator.pt"
    if spec.startswith(REGISTRY_PREFIX):  # only the version's weights file (read with weights_only=True)
        return generator_source.download(spec, Path(tempfile.mkdtemp(prefix="generator-")), "tune.mixing_generator")[1]
    path = Path(spec).expanduser()
    return path if path.is_absolute() else root / path


def require_inputs(params: Params, root: Path) -> Path:
    """The generator file; FileNotFoundError naming every missing input."""
    generator = generator_file(params.tune.mixing_generator, root)
    needed = [root / paths.PREPARED / "meta.json", generator]
    if "reference_confidence" in filters_possible(params):
        needed.append(root / paths.REFERENCE / "model.pt")
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"a mixing study needs the prepared data and a generator (tune.mixing_generator), and the reference "
            f"classifier for the reference_confidence filter, but {', '.join(missing)} is missing: run "
            "`.venv/bin/dvc repro train_gan train_reference` first")
    return generator


def load_generator(path: Path, meta: dict, cfg: SynthesizeConfig) -> tuple[TrainedGenerator, str]:
    """The fixed generator and its sha256, after synthesize's quality gate (synthesize.min_*;
    synthesize.override_gate): a generator that fails it never reaches a training set here either."""
    from ganaug.quality.gate import check_gate  # synthesize's own gate, levels and messages

    generator = TrainedGenerator.load(path)  # on the CPU, as synthesize samples: the same images
    check_gate(generator, str(path), cfg)
    if generator.info.get("dataset_hash") != meta["dataset_hash"]:
        raise ValueError(f"generator {path} was trained on another data set than {paths.PREPARED}; rerun train_gan "
                         "(or point tune.mixing_generator at a generator of this data)")
    if generator.multilabel:
        raise ValueError(f"generator {path} is multi-label: a mixing study needs a class-index generator")
    return generator, generator_source.sha256_of(path)


def load_study_data(params: Params, meta: dict, generator: TrainedGenerator,
                    splits: tuple[str, ...] = SPLITS_READ) -> tuple[mixing.MixingData, mixing.SyntheticPool, Any]:
    """Train and val (plus test only when `splits` asks: the final evaluation), and the pool."""
    require_single_label(meta, "tune mixing")
    check_arch(params.classifier.arch, "classifier.arch")
    dataset = load_packed(paths.PREPARED, splits=splits)
    device = pick_device(params.classifier.device, "classifier.device")
    data = mixing.MixingData(dataset.train.images, dataset.train.labels, dataset.val.images, dataset.val.labels,
                             dataset.class_names, device, meta["dataset_hash"])

    def reference_scorer():
        import torch

        from ganaug.stages.train_reference import load_reference

        cpu = torch.device("cpu")  # as synthesize scores: the same kept images
        return reference_confidence_scorer(load_reference(paths.REFERENCE, cpu)[0], cpu)

    syn = params.synthesize
    pool = mixing.SyntheticPool(generator, syn.seed, syn.batch_size, syn.max_draws, {
        "reference_confidence": reference_scorer,
        "ssim_likeness": lambda: ssim_likeness_scorer(dataset.train.images, dataset.train.labels)})
    return data, pool, dataset


def study_settings(params: Params, tune: TuneConfig, meta: dict, generator_sha256: str) -> dict[str, Any]:
    """What makes trials of one mixing study comparable."""
    fixed = {k: v for k, v in flatten(params.classifier, "classifier").items()
             if k.removeprefix("classifier.") not in tune.mixing_space and k != "classifier.seeds"}
    return {"kind": "mixing", "space": space_as_dict(tune.mixing_space), "objective": tune.mixing_objective,
            "seeds": list(tune.mixing_seeds), "pruner": tune.mixing_pruner, "classifier_fixed": fixed,
            "synthesize": {"seed": params.synthesize.seed, "max_draws": params.synthesize.max_draws,
                           "override_gate": params.synthesize.override_gate,
                           "filter": params.synthesize.filter, "filter_threshold": params.synthesize.filter_threshold},
            "default_ratio": default_ratio(params), "dataset_hash": meta["dataset_hash"], "generator_sha256": generator_sha256}


def default_ratio(params: Params) -> float:
    """The synthetic ratio of a study whose space does not search it: the largest of arms.ratios."""
    return max(params.arms.ratios) if params.arms.ratios else 1.0


def open_mixing_study(params: Params, tune: TuneConfig, name: str, worker_index: int, meta: dict, generator_sha256: str):
    url = resolve_storage_url(tune.storage, mlflow_utils.project_root())
    storage = open_storage(url, tune.heartbeat_s, tune.max_retries)
    study = studies.open_study(name, storage, study_settings(params, tune, meta, generator_sha256),
                               studies.make_sampler(tune, worker_index), mixing.make_pruner(tune), studies.MIXING_STUDY)
    return study, url


def parent_params(tune: TuneConfig, generator: Path) -> dict[str, Any]:
    return {"tune.pruner": tune.mixing_pruner, "tune.objective": f"{tune.mixing_objective} (validation split)",
            "tune.mixing_seeds": str(list(tune.mixing_seeds)), "tune.mixing_space": json.dumps(space_as_dict(tune.mixing_space)),
            "tune.mixing_generator": tune.mixing_generator or str(paths.GAN / "generator.pt"), "generator.file": str(generator)}


def main(params: Params, args: argparse.Namespace) -> int:
    """`ganaug tune mixing`: run (or resume) the study until its budget is spent; --final then
    evaluates the best trial once on the test split."""
    tune = tune_config(params, args)
    root = mlflow_utils.project_root()
    generator_path = require_inputs(params, root)
    meta = read_meta(paths.PREPARED)
    generator, generator_sha256 = load_generator(generator_path, meta, params.synthesize)
    study, url = open_mixing_study(params, tune, args.study, args.worker_index, meta, generator_sha256)
    mlflow_utils.setup()
    parent = studies.ensure_parent_run(study, url, tune, mlflow_utils.lineage_tags("tune_mixing", meta),
                                       parent_params(tune, generator_path))
    print(f"tune: mixing study {study.study_name!r} in {redact(url)}; budget {tune.n_trials} trials; "
          f"{len(study.trials)} trial(s) so far; MLflow parent run {parent}")
    code = 0
    if args.workers > 1:  # the workers load the data; here only the study and its parent run are opened
        argv = ["tune", "mixing", "--params", args.params, "--study", study.study_name, "--storage", url,
                "--trials", str(tune.n_trials), "--timeout", str(tune.timeout)]
        code = studies.launch_workers(argv, args.workers, env=dict(os.environ))
    else:
        data, pool, _ = load_study_data(params, meta, generator)
        with studies.StudyProgress(study, tune.n_trials, tune.timeout) as bar:
            studies.run_worker(study, lambda trial: mixing.run_trial(trial, study, tune, params.classifier,
                                                                     params.synthesize, default_ratio(params), data,
                                                                     pool, parent, args.worker_index),
                               tune.n_trials, tune.timeout, tune.max_retries, on_trial=bar.trial_finished)
    studies.log_study_summary(study, studies.MIXING_STUDY)
    print(studies.show(study, kind=studies.MIXING_STUDY))
    if args.final and code == 0:
        print(final_report(evaluate_once(params, tune, study, None, generator, meta)))
    return code


def evaluate_once(params: Params, tune: TuneConfig, study, trial_number: int | None, generator: TrainedGenerator,
                  meta: dict) -> dict[str, Any]:
    """The chosen trial's one test evaluation against real-only and the real-only controls of
    evaluate.references (stored in the study; a stored
    one is returned as it is; another trial's is refused: choosing again after seeing a test
    result would be a choice made on the test split)."""
    trial = studies.chosen_trial(study, trial_number)
    stored = study.user_attrs.get(mixing.FINAL_ATTR)
    if stored is not None:
        if stored["trial"] != trial.number:
            raise ValueError(f"study {study.study_name!r} already used the test split once, for trial {stored['trial']}: "
                             f"evaluating trial {trial.number} too would make the test split choose between them; "
                             "start another study (--study) to choose again")
        return stored
    data, pool, dataset = load_study_data(params, meta, generator, splits=("train", "val", "test"))
    choice = mixing.choice_of(params_to_mixing(trial.params), params.classifier, params.synthesize, default_ratio(params))
    seeds = list(tune.mixing_seeds)
    found = mixing.final_test(choice, data, pool, dataset.test.images, dataset.test.labels, seeds, params.evaluate,
                              tune.mixing_objective, params.arms)
    metric = found["comparison"]["metric"]
    means = {arm: summary["metrics"][metric]["mean"] for arm, summary in found["result"]["arms"].items()}
    record = {"trial": trial.number, "params": params_to_mixing(trial.params), "validation_value": trial.value,
              "objective": tune.mixing_objective, "seeds": seeds, "train_counts": found["train_counts"],
              **{k: found["comparison"][k] for k in ("metric", "difference", "low", "high", "corrected_low",
                                                      "corrected_high", "corrected_level", "p_value",
                                                      "collapsed_seeds_arm", "collapsed_seeds_reference")},
              "verdict": found["verdict"],  # against real-only, "(not against <control>)" when a control matched the gain
              "mixing_mean": means[mixing.MIXED_ARM], "real_mean": means[mixing.REAL_ARM],
              "controls": {ref: {"mean": means[ref], **{k: c[k] for k in ("difference", "corrected_low", "corrected_high",
                                                                           "corrected_level", "p_value", "verdict")}}
                           for ref, c in found["controls"].items()}}
    record["mlflow_run_id"] = log_final(study, record, found["result"], meta)
    study.set_user_attr(mixing.FINAL_ATTR, record)
    return record


def log_final(study, record: dict[str, Any], result: dict[str, Any], meta: dict) -> str:
    """A run nested under the study's parent run: the comparison as metrics and tags, compare_arms'
    whole record as comparison.json; the verdict also on the parent run."""
    parent = study.user_attrs[studies.PARENT_RUN_ATTR]
    mlflow_utils.setup()
    tags = {**mlflow_utils.lineage_tags("tune_mixing_final", meta), "mlflow.parentRunId": parent,
            "optuna.study": study.study_name, "optuna.trial": str(record["trial"]), "final.verdict": record["verdict"]}
    with runs.start_run("tune_mixing_final", runs.input_key(study=study.study_name, trial=record["trial"]),
                        run_name=f"{study.study_name}-final-test", tags=tags) as run:
        mlflow.log_params({**{f"mixing.{k}": v for k, v in record["params"].items()}, "seeds": str(record["seeds"]),
                           "metric": record["metric"]})
        mlflow.log_metrics({f"test_{k}": record[k] for k in ("difference", "low", "high", "corrected_low", "corrected_high",
                                                             "mixing_mean", "real_mean") if record[k] is not None}
                           | {f"test_difference_vs_{ref}": c["difference"] for ref, c in record["controls"].items()
                              if c["difference"] is not None}
                           | {"validation_value": record["validation_value"]})
        mlflow.log_dict(result, "comparison.json")
    client = mlflow.MlflowClient()
    client.set_tag(parent, "final.verdict", record["verdict"])
    client.set_tag(parent, "final.trial", str(record["trial"]))
    if record["difference"] is not None:
        client.log_metric(parent, "final_test_difference", record["difference"])
    return run.info.run_id


def final_report(record: dict[str, Any]) -> str:
    def num(x, sign="+"):
        return "n/a" if x is None else f"{x:{sign}.4f}"

    params = ", ".join(f"{k}={v}" for k, v in sorted(record["params"].items()))
    return (f"final test evaluation of trial {record['trial']} ({params}); validation {record['objective']} "
            f"{record['validation_value']:.4f}\n"
            f"  test {record['metric']}: mixing {num(record['mixing_mean'], '')} vs real-only {num(record['real_mean'], '')} "
            f"(seeds {record['seeds']}); difference {num(record['difference'])}, {record['corrected_level']:.1%} "
            f"corrected interval [{num(record['corrected_low'])}, {num(record['corrected_high'])}]: {record['verdict']}"
            + "".join(f"\n  against {ref} (real-only control, {num(c['mean'], '')}): difference {num(c['difference'])}, "
                      f"{c['corrected_level']:.1%} corrected interval [{num(c['corrected_low'])}, {num(c['corrected_high'])}]: "
                      f"{c['verdict']}" for ref, c in record.get("controls", {}).items())
            + collapse_note(record))


def collapse_note(record: dict[str, Any]) -> str:
    """A warning when seeds predict (nearly) one class for every test image (compare_arms' collapse rule):
    a verdict between collapsed classifiers says nothing about the synthetic images."""
    arm, reference, n = record.get("collapsed_seeds_arm", 0), record.get("collapsed_seeds_reference", 0), len(record["seeds"])
    if not arm and not reference:
        return ""
    return (f"\n  caveat: {arm} of {n} mixing seeds and {reference} of {n} real-only seeds collapsed to one class on "
            "the test split (classifier.epochs, classifier.select or the class balance need attention first)")


def overrides(params: Params):
    """A mixing trial's params as pipeline params: arms.ratios (and synthesize.pool_ratio when the
    pool is too small), synthesize.filter / filter_threshold, classifier.lr / weight_decay."""

    def to_settings(trial_params: dict[str, Any]) -> list[tuple[str, Any]]:
        values = params_to_mixing(trial_params)
        settings: list[tuple[str, Any]] = []
        if "synthetic_ratio" in values:
            ratio = values["synthetic_ratio"]
            settings.append(("arms.ratios", [ratio]))
            if params.synthesize.pool_ratio < ratio:
                settings.append(("synthesize.pool_ratio", ratio))
        for key in ("filter", "filter_threshold"):
            if key in values:
                settings.append((f"synthesize.{key}", values[key]))
        for key in ("lr", "weight_decay"):
            if key in values:
                settings.append((f"classifier.{key}", values[key]))
        return settings

    return to_settings


def load_existing(params: Params, args: argparse.Namespace):
    return studies.load_existing(tune_config(params, args), args.study, mlflow_utils.project_root(), studies.MIXING_STUDY)


def show(params: Params, args: argparse.Namespace) -> int:
    """`ganaug tune show mixing`: the best trials and, once made, the final test evaluation."""
    study = load_existing(params, args)
    print(studies.show(study, kind=studies.MIXING_STUDY))
    stored = study.user_attrs.get(mixing.FINAL_ATTR)
    print(final_report(stored) if stored else "no final test evaluation yet (`bin/ganaug tune apply mixing` makes it)")
    return 0


def apply(params: Params, args: argparse.Namespace) -> int:
    """`ganaug tune apply mixing`: the chosen trial's one test evaluation against real-only (made
    now if not yet), then the `dvc exp run` of its params (printed; --run runs it)."""
    study = load_existing(params, args)
    tune = tune_config(params, args)
    command = studies.apply_command(study, args.trial, overrides(params))
    root = mlflow_utils.project_root()
    generator_path = require_inputs(params, root)
    meta = read_meta(paths.PREPARED)
    generator, generator_sha256 = load_generator(generator_path, meta, params.synthesize)
    stored = study.user_attrs.get(studies.SETTINGS_ATTR, {})
    current = json.loads(json.dumps(study_settings(params, tune, meta, generator_sha256)))
    differing = sorted(k for k in current if json.dumps(stored.get(k), sort_keys=True) != json.dumps(current[k], sort_keys=True))
    if differing:
        raise ValueError(f"study {study.study_name!r} was made with other settings ({', '.join(differing)} differ from "
                         "these params, generator and data): its choice is evaluated under the study's own; restore them")
    print(final_report(evaluate_once(params, tune, study, args.trial, generator, meta)))
    print(shlex.join(command))
    if not args.run:
        return 0
    trial_number = command[command.index("--name") + 1].rsplit("-", 1)[1]
    env = {**os.environ, "GANAUG_TUNE_STUDY": study.study_name, "GANAUG_TUNE_TRIAL": trial_number}
    dvc = Path(sys.executable).parent / "dvc"
    return subprocess.run([str(dvc) if dvc.exists() else "dvc", *command[1:]], env=env).returncode
