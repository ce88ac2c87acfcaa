"""Confirm a GAN study's winner: retrain its best trial's params and the default params with new
seeds, exactly as a trial trains (the study's epochs, `training_loop` + the study's validation
score), and compare their final validation domain distance.

A study's best value is the minimum over many trials, so it is biased low (the winner's curse):
only new seeds say whether the params, not the seed, won. Reads the study from the project's
tune.storage and the project's data/prepared (train and val) and models/reference, like
`ganaug tune gan`; the test split is never read.

    cd <project> && python <repo>/benchmarks/tune_confirm.py --study pm28 --seeds 100 101 --out confirm.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ganaug.config import load_params
from ganaug.data.packed import read_meta
from ganaug.gan.train import training_loop
from ganaug.stages import paths
from ganaug.stages.tune_gan import load_study_data
from ganaug.tracking import mlflow_utils
from ganaug.tune import study as studies
from ganaug.tune.objective import ValidationScore, objective_key
from ganaug.tune.space import params_to_gan, trial_gan_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[100, 101], help="gan seeds (not used by the study's trials)")
    parser.add_argument("--out", default="tune_confirm.json")
    parser.add_argument("--only", choices=("default", "best"), help="one of the two configurations (two processes at once)")
    args = parser.parse_args()

    params = load_params(args.params)
    tune = params.tune
    study = studies.load_existing(tune, args.study, mlflow_utils.project_root())
    best = study.best_trial
    used = {t.number for t in study.trials}
    clash = sorted(tune.seed + s for s in used if tune.seed + s in args.seeds)
    if clash:
        raise SystemExit(f"seeds {clash} trained trials of the study: choose new ones")
    data = load_study_data(params, read_meta(paths.PREPARED))
    key = objective_key(tune)
    configs = {"default": {}, f"best (trial {best.number})": params_to_gan(best.params)}
    if args.only:
        configs = {k: v for k, v in configs.items() if k.startswith(args.only)}
    rows = []
    for label, sampled in configs.items():
        for seed in args.seeds:
            cfg = trial_gan_config(params.gan, sampled, seed=seed, epochs=tune.epochs)
            started = time.monotonic()
            Path(paths.CACHE).mkdir(exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix="tune-confirm-", dir=paths.CACHE))  # a fresh run, never a resume
            try:
                result = training_loop(data.images, data.labels, data.n_classes, cfg, work / "checkpoint.pt",
                                       data.device, evaluate=ValidationScore(data))
            finally:
                shutil.rmtree(work, ignore_errors=True)
            value = float(result.quality[-1][key])
            rows.append({"config": label, "seed": seed, key: value, "epochs": cfg.epochs,
                         "seconds": round(time.monotonic() - started, 1), "params": sampled})
            print(f"{label} seed {seed}: {key} {value:.4g} ({rows[-1]['seconds']} s)", flush=True)
    means = {label: float(np.mean([r[key] for r in rows if r["config"] == label])) for label in configs}
    out = {"study": args.study, "best_trial": best.number, "best_value_in_study": best.value, "key": key,
           "seeds": args.seeds, "rows": rows, "means": means}
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(means, indent=2))


if __name__ == "__main__":
    main()
