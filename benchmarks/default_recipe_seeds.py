"""The default GAN recipe (params.yaml `gan`) over several GAN seeds: does it give usable images
on the default data for every seed? (issue 10: the old default DCGAN collapsed on seed 0.)

Run from the repository root. Uses ./data/prepared and ./models/reference when present, else
makes them from params.yaml (`ganaug prepare`, `ganaug train-reference`). For each seed
(--seeds) it trains the GAN exactly as the train_gan stage does (`training_loop` with the
stage's `QualityEvaluator`, Inception metrics off) in a temporary checkpoint folder, without
MLflow, and reports the final evaluation against the *train* split: label fidelity,
recall and coverage (domain features), diversity (`ganaug.quality.diversity`), fd_domain and
the memorisation copy rates. A run the divergence or mode-collapse guard stops is reported as
such, with its last evaluation. Also writes each seed's sample grid.

    python benchmarks/default_recipe_seeds.py [--seeds 0 1 2] [--set gan.key=value ...] \\
        [--label new] [--out benchmarks/results/default_recipe_seeds]

Writes <out>/<label>.json and <out>/<label>.md (table, command, commit, machine) and prints the table.
Seeds can run in parallel processes (one --seeds each, its own --label); `--merge A.json B.json
--label L` then joins their runs into one table (L.json, L.md) without training.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from ruamel.yaml import YAML  # noqa: E402

from ganaug.config import load_params, params_from_dict, to_dict  # noqa: E402
from ganaug.data.packed import load_packed, read_meta  # noqa: E402
from ganaug.device import describe, pick_device  # noqa: E402
from ganaug.gan.train import GANDivergenceError, training_loop  # noqa: E402
from ganaug.io import write_json  # noqa: E402
from ganaug.stages import paths  # noqa: E402
from ganaug.stages.train_gan import QualityEvaluator, sample_grid, select_training_data  # noqa: E402
from ganaug.stages.train_reference import load_reference  # noqa: E402
from gan_architectures import parse_overrides  # noqa: E402  (beside this script: benchmarks/ is sys.path[0])

COLUMNS = [  # (key, header, format)
    ("label_fidelity", "label fidelity ↑", ".3f"),
    ("label_fidelity_relative", "(relative to real)", ".3f"),
    ("recall_domain", "recall ↑", ".3f"),
    ("coverage_domain", "coverage ↑", ".3f"),
    ("diversity", "diversity ↑", ".3f"),
    ("diversity_domain", "(features)", ".3f"),
    ("diversity_pixel", "(pixels)", ".3f"),
    ("fd_domain", "fd_domain ↓", ".1f"),
    ("precision_domain", "precision", ".3f"),
    ("memorisation_pixel_copy_rate", "copy rate (pixels)", ".3f"),
    ("memorisation_domain_copy_rate", "copy rate (features)", ".3f"),
]


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = merged(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def ensure_inputs() -> None:
    """data/prepared and models/reference, made by the stages when absent."""
    for path, command in ((paths.PREPARED / "meta.json", "prepare"), (paths.REFERENCE / "model.pt", "train-reference")):
        if not path.is_file():
            print(f"{path} not found: running ganaug {command}")
            subprocess.run([sys.executable, "-m", "ganaug.cli", command], check=True)


def run_seed(params, seed: int, out: Path, label: str) -> dict[str, Any]:
    cfg = dataclasses.replace(params.gan, seed=seed)
    meta = read_meta(paths.PREPARED)
    dataset = load_packed(paths.PREPARED)
    data = select_training_data(dataset, cfg)
    device = pick_device(cfg.device, "gan.device")
    reference, extractor = load_reference(paths.REFERENCE, device)
    evaluator = QualityEvaluator(dataset, data, reference, extractor, device, None, meta["dataset_hash"], final_epoch=cfg.epochs)
    history: list[dict[str, float]] = []

    def evaluate(epoch: int, generator: torch.nn.Module) -> dict[str, float]:
        metrics = evaluator(epoch, generator)
        history.append({"epoch": epoch, **metrics})
        print(f"   seed {seed} epoch {epoch}: " + ", ".join(f"{k} {metrics[k]:{f}}" for k, _, f in COLUMNS if k in metrics), flush=True)
        return metrics

    row: dict[str, Any] = {"seed": seed, "gan": to_dict(cfg), "dataset_hash": meta["dataset_hash"],
                           "n_train_images": len(data.images)}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="default_recipe_") as work:
        try:
            result = training_loop(data.images, data.labels, data.n_classes, cfg, Path(work) / "checkpoint.pt", device,
                                   evaluate=evaluate)
            row["status"] = "ok"
            grid = sample_grid(result.generator, data, device)
            plt.imsave(out / f"{label}_seed{seed}_samples.png", grid, cmap="gray", vmin=0, vmax=255)
        except GANDivergenceError as exc:
            row["status"] = f"stopped: {exc}"
    row["seconds"] = time.perf_counter() - start
    row["final"] = history[-1] if history else {}
    row["history"] = history
    return row


def markdown(rows: list[dict[str, Any]], label: str, command: str, commit: str, machine: str) -> str:
    head = "| seed | status | epoch | " + " | ".join(h for _, h, _ in COLUMNS) + " | seconds |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 4)]
    for r in rows:
        final = r["final"]
        status = "ok" if r["status"] == "ok" else r["status"].split(":")[1].strip().split(" at ")[0][:40]
        cells = [format(final[k], f) if k in final else "–" for k, _, f in COLUMNS]
        lines.append(f"| {r['seed']} | {status} | {final.get('epoch', '–')} | " + " | ".join(cells) + f" | {r['seconds']:.0f} |")
    return (f"### {label}\n\n" + "\n".join(lines)
            + f"\n\nCommand: `{command}`\nCommit: {commit}\nMachine: {machine}\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="GAN seeds (gan.seed)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="params override")
    parser.add_argument("--label", default="default", help="name of this recipe in the output files")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/default_recipe_seeds"))
    parser.add_argument("--merge", nargs="+", type=Path, help="join these result files into one table; no training")
    args = parser.parse_args(argv)
    if args.merge:
        parts = [json.loads(path.read_text()) for path in args.merge]
        rows = sorted((r for part in parts for r in part["runs"]), key=lambda r: r["seed"])
        info = {k: "; ".join(dict.fromkeys(part[k] for part in parts)) for k in ("command", "commit", "machine")}
        table = markdown(rows, args.label, info["command"], info["commit"], info["machine"])
        write_json(args.out / f"{args.label}.json", {"label": args.label, **info, "merged": [str(p) for p in args.merge],
                                                      "runs": rows})
        (args.out / f"{args.label}.md").write_text(table)
        print(table)
        return

    raw = YAML(typ="safe", pure=True).load(Path("params.yaml").read_text())
    params = params_from_dict(merged(raw, parse_overrides(args.set)))
    load_params("params.yaml")  # the file itself must be valid too
    ensure_inputs()
    args.out.mkdir(parents=True, exist_ok=True)
    # the code that trains is the code of now (a run takes long; HEAD may move meanwhile)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "src", "params.yaml"], capture_output=True, text=True).stdout.strip()
    commit += " (+ uncommitted changes)" if dirty else ""
    rows = []
    for seed in args.seeds:
        rows.append(run_seed(params, seed, args.out, args.label))
        write_json(args.out / f"{args.label}.seed{seed}.json", rows[-1])  # kept if a later seed is stopped

    device = pick_device(params.gan.device, "gan.device")
    machine = ", ".join(f"{k} {v}" for k, v in describe(device).items()) + f", torch {torch.__version__}"
    command = "python benchmarks/default_recipe_seeds.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    table = markdown(rows, args.label, command, commit, machine)
    write_json(args.out / f"{args.label}.json", {"label": args.label, "command": command, "commit": commit, "machine": machine,
                                                  "overrides": args.set, "runs": rows})
    (args.out / f"{args.label}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
