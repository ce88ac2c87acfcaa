"""The real-only classifier (the `real` arm) over several seeds on a prepared dataset: is the
baseline as strong as the published one? (issue 9: MedMNIST v2's ResNet-18 (28) on
PneumoniaMNIST, test ACC 0.854 / AUC 0.944.)

Trains exactly what the `real` arm trains (`ganaug.classify.train.train_classifier` on the real
train split, the real val split for selection and early stopping, no balancing, no augmentation)
with the `classifier` section of params.yaml's defaults, then a params overlay (--params, e.g.
presets/pneumoniamnist.yaml), then --set overrides. Per seed it reports the validation numbers
of the kept epoch (what a recipe is chosen by) and the test ACC / AUC (reported only: no number
from the test split chooses anything here), the kept and the last epoch, and the seconds.

    python benchmarks/classifier_baseline.py --prepared /tmp/pm28/data/prepared \\
        [--params presets/pneumoniamnist.yaml] [--set classifier.key=value ...] [--seeds 0 1 2] \\
        [--label name] [--out benchmarks/results/classifier_baseline]

Writes <out>/<label>.json and <out>/<label>.md (table, command, commit, machine) and prints the table.
Seeds can run in parallel processes (one --seeds each, its own --label, OMP_NUM_THREADS=1);
`--merge A.json B.json ... --label L` then joins their rows into one table without training.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ruamel.yaml import YAML

from ganaug.classify.metrics import classification_metrics
from ganaug.classify.train import predict_proba, train_classifier
from ganaug.config import params_from_dict, to_dict
from ganaug.data.packed import load_packed, read_meta
from ganaug.device import describe, pick_device
from ganaug.io import write_json
from gan_architectures import parse_overrides  # noqa: E402  (beside this script: benchmarks/ is sys.path[0])


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Nested dict update: override's leaves win."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def run_seed(dataset, cfg, seed: int, device: torch.device) -> dict[str, Any]:
    """Train the real-only classifier for one seed; val numbers of the kept epoch, test ACC / AUC."""
    started = time.perf_counter()
    result = train_classifier(
        dataset.train.images, dataset.train.labels, dataset.val.images, dataset.val.labels, dataset.n_classes,
        cfg.arch, cfg.epochs, cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.patience, seed, device,
        schedule=cfg.schedule, select=cfg.select, desc=f"baseline seed {seed}",
    )
    seconds = time.perf_counter() - started
    kept = result.history[result.best_epoch - 1]
    # the model is fixed now (chosen on val); the test split is only measured
    test = classification_metrics(dataset.test.labels, predict_proba(result.model, dataset.test.images, device),
                                  dataset.class_names)
    return {"seed": seed, "best_epoch": result.best_epoch, "stopped_epoch": result.stopped_epoch,
            "seconds": round(seconds, 1), "val_accuracy": kept["val_accuracy"], "val_roc_auc": kept["val_roc_auc"],
            "val_loss": kept["val_loss"], "test_accuracy": test["accuracy"], "test_roc_auc": test["roc_auc"],
            "test_balanced_accuracy": test["balanced_accuracy"], "history": result.history}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| seed | kept epoch | last epoch | val AUC | val ACC | test ACC | test AUC | test bal. acc. | seconds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['best_epoch']} | {r['stopped_epoch']} | {r['val_roc_auc']:.3f} | "
                     f"{r['val_accuracy']:.3f} | {r['test_accuracy']:.3f} | {r['test_roc_auc']:.3f} | "
                     f"{r['test_balanced_accuracy']:.3f} | {r['seconds']:.0f} |")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in
            ("val_roc_auc", "val_accuracy", "test_accuracy", "test_roc_auc", "test_balanced_accuracy", "seconds")}
    lines.append(f"| mean | | | {mean['val_roc_auc']:.3f} | {mean['val_accuracy']:.3f} | **{mean['test_accuracy']:.3f}** | "
                 f"**{mean['test_roc_auc']:.3f}** | {mean['test_balanced_accuracy']:.3f} | {mean['seconds']:.0f} |")
    return "\n".join(lines)


def merge(files: list[str], out: Path, label: str) -> int:
    """One table from the rows of several runs (same classifier and data required)."""
    runs = [json.loads(Path(f).read_text()) for f in files]
    for key in ("classifier", "dataset_hash"):
        if any(r[key] != runs[0][key] for r in runs):
            raise SystemExit(f"--merge: the runs differ in {key}; only runs of one recipe on one dataset join")
    rows = sorted((row for r in runs for row in r["seeds"]), key=lambda row: row["seed"])
    commands = "  \n".join(f"`{r['command']}` (commit {r['commit']}{', uncommitted changes' if r['dirty'] else ''})" for r in runs)
    text = (f"{table(rows)}\n\ncommands:  \n{commands}  \nmachine: {runs[0]['machine']}  \n"
            f"classifier: `{json.dumps(runs[0]['classifier'])}`\n")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{label}.md").write_text(text)
    write_json(out / f"{label}.json", {**{k: runs[0][k] for k in ("classifier", "dataset_hash", "machine")},
                                        "merged": [{k: r[k] for k in ("command", "commit", "dirty")} for r in runs],
                                        "seeds": rows})
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", help="a prepared dataset folder (ganaug prepare's data/prepared)")
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="join the rows of earlier runs' JSON files; no training")
    parser.add_argument("--params", help="a params overlay (YAML) over params.yaml's defaults")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides, e.g. classifier.epochs=20")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--label", default="baseline")
    parser.add_argument("--out", default="benchmarks/results/classifier_baseline")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.merge:
        return merge(args.merge, out, args.label)
    if not args.prepared:
        parser.error("--prepared is required (unless --merge)")

    raw: dict[str, Any] = {}
    if args.params:
        raw = YAML(typ="safe", pure=True).load(Path(args.params).read_text()) or {}
    raw = merged(raw, parse_overrides(args.set))
    cfg = params_from_dict(raw).classifier
    meta = read_meta(args.prepared)
    if meta.get("multi_label"):
        raise SystemExit(f"{args.prepared}: multi-label data; this benchmark trains a single-label classifier")
    dataset = load_packed(args.prepared)
    device = pick_device(cfg.device, "classifier.device")
    print(f"classifier: {to_dict(cfg)}; data {args.prepared} (hash {meta.get('dataset_hash')}), "
          f"train {len(dataset.train.labels)}, val {len(dataset.val.labels)}, test {len(dataset.test.labels)}")

    rows = []
    for seed in args.seeds:
        rows.append(run_seed(dataset, cfg, seed, device))
        r = rows[-1]
        print(f"seed {seed}: kept epoch {r['best_epoch']} of {r['stopped_epoch']}, val AUC {r['val_roc_auc']:.3f}, "
              f"test ACC {r['test_accuracy']:.3f} AUC {r['test_roc_auc']:.3f} ({r['seconds']:.0f} s)", flush=True)

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
    command = "python benchmarks/classifier_baseline.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    machine = f"{platform.machine()}, {describe(device)}, torch {torch.__version__}"
    out.mkdir(parents=True, exist_ok=True)
    text = (f"{table(rows)}\n\ncommand: `{command}`  \ncommit: {commit}{' (uncommitted changes)' if dirty else ''}  \n"
            f"machine: {machine}  \nclassifier: `{json.dumps(to_dict(cfg))}`\n")
    (out / f"{args.label}.md").write_text(text)
    write_json(out / f"{args.label}.json", {"command": command, "commit": commit, "dirty": bool(dirty), "machine": machine,
                                             "classifier": to_dict(cfg), "dataset_hash": meta.get("dataset_hash"), "seeds": rows})
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
