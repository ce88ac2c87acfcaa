"""`ganaug exp --preset FILE [-S key=value ...]`: one DVC experiment from a params overlay; and
`ganaug preset NAME`: a published study's overlay (presets/published/NAME.yaml) as one DVC
experiment, or one per value of its sweep, and `--table`, their results read back from DVC.

A preset (`presets/*.yaml`) holds only the keys that differ from `params.yaml`, as nested YAML
sections. This command merges params.yaml, the preset and any `-S` overrides, validates the
result as a whole (every key, range and cross-field rule of `ganaug.config`), and only then runs
`dvc exp run -S key=value ...` with one `-S` per leaf of the preset and the overrides, so DVC
records the experiment and `dvc exp show` lists it beside the others. A bad key or value in a
preset fails here, before DVC copies the workspace or any stage starts.
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from ganaug.config import ConfigError, params_from_dict

META_SECTION = "preset"  # a published preset's own section (presets/published/*.yaml): not params


def read_yaml(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} not found")
    try:
        raw = YAML(typ="safe", pure=True).load(path.read_text())
    except Exception as exc:  # ruamel's several parser errors
        raise ConfigError(f"{what} {str(path)!r} is not valid YAML: {' '.join(str(exc).split())}") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {str(path)!r}: expected a mapping of params sections, got {type(raw).__name__}")
    return raw


def leaves(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'data': {'image_size': 28}} -> {'data.image_size': 28}; lists and scalars are leaves."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out |= leaves(value, name)
        else:
            out[name] = value
    return out


def set_leaf(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    *parents, last = dotted.split(".")
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[last] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`-S key=value` as DVC reads it: the value is YAML (numbers, lists, null, true)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"-S {text!r}: expected key=value, e.g. -S gan.epochs=20")
    return key.strip(), YAML(typ="safe", pure=True).load(value) if value.strip() else ""


def dvc_value(value: Any) -> str:
    """A leaf as DVC's `-S` reads it back (YAML flow: lists as [a, b], null, true/false)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def experiment_args(params_file: Path, preset: Path | None, overrides: list[str]) -> list[str]:
    """Validate params.yaml + preset + overrides together; return the `-S` arguments for DVC."""
    changed: dict[str, Any] = {}
    if preset is not None:
        overlay = read_yaml(preset, "preset")
        overlay.pop(META_SECTION, None)  # a published preset's own section (`ganaug preset`), not params
        changed |= leaves(overlay)
    changed |= dict(parse_override(text) for text in overrides)
    if not changed:
        raise ConfigError("nothing to change: give --preset FILE and/or -S key=value")
    validated_changes(params_file, changed, f"{preset} + params.yaml" if preset else "params.yaml")
    return set_args(changed)


def set_args(changed: dict[str, Any]) -> list[str]:
    """`-S key=value` for DVC, one per dotted leaf."""
    args: list[str] = []
    for key, value in changed.items():
        args += ["-S", f"{key}={dvc_value(value)}"]
    return args


def dvc_command(root: Path) -> str:
    local = root / ".venv" / "bin" / "dvc"
    if local.is_file():
        return str(local)
    found = shutil.which("dvc")
    if found is None:
        raise FileNotFoundError(f"no dvc found: expected {local} (run `make setup`) or dvc on PATH")
    return found


def main(preset: str | None, overrides: list[str], name: str | None, dry_run: bool, params_file: str = "params.yaml") -> int:
    args = experiment_args(Path(params_file), Path(preset) if preset else None, overrides)
    inherited = uncommitted_keys(Path(params_file))
    if inherited:  # DVC runs on the workspace's params; a previous `dvc exp run` left its values there
        print(f"note: {params_file} differs from the committed version in {first_keys(inherited)} (a previous "
              f"experiment's values or your edits): this experiment runs with them too; `git checkout {params_file}` "
              f"first to start from the committed params", file=sys.stderr, flush=True)
    command = [dvc_command(Path.cwd()), "exp", "run", *(["-n", name] if name else []), *args]
    print(shlex.join(command) if dry_run else f"running: {shlex.join(['dvc', *command[1:]])}", flush=True)
    if dry_run:
        return 0
    return subprocess.call(command, env=os.environ.copy())


# ---------------------------------------------------------------------------------------
# `ganaug preset NAME`: the published studies (presets/published/NAME.yaml), one command each.
#
# A published preset is a params overlay like any other, plus one section of its own, `preset:`,
# which is not a params section and never reaches DVC:
#   preset:
#     expects: which data the preset reads and where a user gets it (printed by --list and when
#              the data is missing)
#     sweep: {one.params.key: [v1, v2, ...]}   # optional: one DVC experiment per value, named NAME-v
# A sweep runs its experiments one after another in the workspace: stages whose params and deps
# did not change (the GAN, the real-only arms) are up to date and do not rerun, and DVC's run cache
# restores any that a previous value already ran.

PUBLISHED_DIR = Path("presets") / "published"
META_KEYS = ("expects", "sweep")
# data.source -> the params keys naming files or folders it reads (checked before DVC starts)
DATA_PATH_KEYS = {
    "medmnist": ("data.medmnist.path",),
    "folders": ("data.folders.root",),
    "nih": ("data.nih.csv", "data.nih.images"),
    "dicom": ("data.dicom.root",),
}


@dataclass(frozen=True)
class PublishedPreset:
    name: str  # file stem: presets/published/<name>.yaml
    path: Path
    overlay: dict[str, Any]  # the params sections, nested as in params.yaml
    expects: str  # which data and where a user gets it
    sweep_key: str | None  # dotted params key the sweep varies; None = one experiment
    sweep_values: list[Any]  # [] without a sweep


def published_names(root: Path = Path(".")) -> list[str]:
    return sorted(p.stem for p in (root / PUBLISHED_DIR).glob("*.yaml"))


def load_published(name: str, root: Path = Path(".")) -> PublishedPreset:
    """presets/published/<name>.yaml split into its params overlay and its `preset:` section
    (checked: known keys, a sweep of one key over a non-empty list of distinct values)."""
    path = root / PUBLISHED_DIR / f"{name}.yaml"
    if not path.is_file():
        known = published_names(root)
        raise ConfigError(f"preset {name!r}: no {path} (published presets: {', '.join(known) or 'none'})")
    raw = read_yaml(path, "preset")
    meta = raw.pop(META_SECTION, None) or {}
    where = f"{path}: {META_SECTION}"
    if not isinstance(meta, dict):
        raise ConfigError(f"{where}: expected a mapping with {', '.join(META_KEYS)}, got {type(meta).__name__}")
    unknown = sorted(set(meta) - set(META_KEYS))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (expected {', '.join(META_KEYS)})")
    expects = meta.get("expects") or ""
    if not isinstance(expects, str) or not expects.strip():
        raise ConfigError(f"{where}.expects: expected a sentence saying which data the preset reads and where to get it")
    sweep = meta.get("sweep") or {}
    if not isinstance(sweep, dict) or len(sweep) > 1:
        raise ConfigError(f"{where}.sweep={sweep!r}: expected one params key and its list of values, "
                          "e.g. {synthesize.filter_threshold: [0.8, 0.85]}")
    key, values = next(iter(sweep.items())) if sweep else (None, [])
    if key is not None:
        check_sweep_values(f"{where}.sweep.{key}", values)
    return PublishedPreset(name, path, raw, " ".join(expects.split()), key, list(values))


def check_sweep_values(where: str, values: Any) -> None:
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}={values!r}: expected a non-empty list of values")
    if len({dvc_value(v) for v in values}) != len(values):
        raise ConfigError(f"{where}={values!r}: expected distinct values (each names an experiment)")


def validated_changes(params_file: Path, changed: dict[str, Any], where: str,
                      base: dict[str, Any] | None = None) -> dict[str, Any]:
    """`base` (default: params_file's contents) with the dotted `changed` leaves set, validated
    whole; returns the merged mapping."""
    merged = copy.deepcopy(base) if base is not None else read_yaml(params_file, "params file")
    for key, value in changed.items():
        set_leaf(merged, key, value)
    try:
        params_from_dict(merged)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return merged


def leaf(tree: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted key of a nested mapping (None when a level is missing)."""
    node: Any = tree
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def missing_data(merged: dict[str, Any], root: Path = Path(".")) -> list[tuple[str, str]]:
    """(key, path) for each file or folder the data source reads that does not exist (relative
    paths from `root`, where DVC runs the stages). A null MedMNIST path downloads: not missing."""
    data = merged.get("data") or {}
    source = data.get("source", "phantom")
    out = []
    for key in DATA_PATH_KEYS.get(source, ()):
        path = leaf(merged, key)
        if path is not None and not (root / Path(str(path)).expanduser()).exists():
            out.append((key, str(path)))
    return out


def experiment_name(prefix: str, value: Any) -> str:
    """`NAME-<value>` as a DVC experiment (a git ref name): characters git refuses become '_'."""
    text = dvc_value(value)
    return f"{prefix}-" + "".join(c if c.isalnum() or c in "._-" else "_" for c in text).strip(".")


def committed_text(params_file: Path) -> str | None:
    """params.yaml as the last commit holds it (`git show HEAD:<file>`); None outside a git
    checkout or before the first commit."""
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=params_file.parent.resolve(),
                             capture_output=True, text=True)
        if top.returncode != 0:
            return None
        relative = params_file.resolve().relative_to(Path(top.stdout.strip()).resolve())
        shown = subprocess.run(["git", "show", f"HEAD:{relative.as_posix()}"], cwd=top.stdout.strip(),
                               capture_output=True, text=True)
    except (OSError, ValueError):
        return None
    return shown.stdout if shown.returncode == 0 else None


def parse_params_text(text: str, where: str) -> dict[str, Any]:
    raw = YAML(typ="safe", pure=True).load(text)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of params sections, got {type(raw).__name__}")
    return raw


def differing_keys(current: str, committed: str, params_file: Path) -> list[str]:
    """The dotted keys whose values differ between two params.yaml texts (sorted)."""
    before = leaves(parse_params_text(current, str(params_file))) if current.strip() else {}
    after = leaves(parse_params_text(committed, f"git HEAD:{params_file}"))
    return sorted(k for k in set(before) | set(after) if before.get(k, ...) != after.get(k, ...))


def uncommitted_keys(params_file: Path) -> list[str]:
    """Keys whose workspace value differs from the committed params.yaml ([] outside git or when equal)."""
    committed = committed_text(params_file)
    current = params_file.read_text() if params_file.is_file() else None
    if committed is None or current is None or current == committed:
        return []
    return differing_keys(current, committed, params_file)


def first_keys(keys: list[str], shown: int = 5) -> str:
    """The first `shown` keys, then how many more."""
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


def restore_committed(params_file: Path, committed: str) -> list[str]:
    """Write the committed params.yaml back over the workspace's when they differ; returns the
    dotted keys whose values differed. `dvc exp run` leaves an experiment's params in the
    workspace and the next experiment starts from them: a preset run after another would inherit
    its keys, and DVC's rewriting of an already rewritten file has broken its YAML here (a block
    list after a comment, joined lines)."""
    current = params_file.read_text()
    if current == committed:
        return []
    changed = differing_keys(current, committed, params_file)
    params_file.write_text(committed)
    return changed


def preset_runs(preset: PublishedPreset, params_file: Path, overrides: list[str], sweep: str | None,
                name: str | None, base: dict[str, Any] | None = None) -> list[tuple[str, list[str]]]:
    """[(experiment name, `-S` arguments)], one per sweep value (one without a sweep), each
    validated whole, laid over `base` (the committed params.yaml; default: params_file), before
    any runs."""
    overridden = dict(parse_override(text) for text in overrides)
    changed = leaves(preset.overlay) | overridden
    values = preset.sweep_values
    if sweep is not None:
        if preset.sweep_key is None:
            raise ConfigError(f"--sweep {sweep!r}: preset {preset.name!r} has no sweep ({preset.path}: preset.sweep)")
        values = YAML(typ="safe", pure=True).load(sweep)
        check_sweep_values(f"--sweep (values of {preset.sweep_key})", values)
    if preset.sweep_key is not None and preset.sweep_key in overridden:
        raise ConfigError(f"-S {preset.sweep_key}=...: preset {preset.name!r} sweeps {preset.sweep_key}; "
                          f"give its values with --sweep '[v1, v2]' instead")
    prefix = name or preset.name
    runs = []
    for value in values or [None]:
        this = changed if preset.sweep_key is None else changed | {preset.sweep_key: value}
        where = f"{preset.path} + params.yaml" + (f" with {preset.sweep_key}={dvc_value(value)}" if preset.sweep_key else "")
        validated_changes(params_file, this, where, base)
        runs.append((prefix if preset.sweep_key is None else experiment_name(prefix, value), set_args(this)))
    return runs


def list_presets(root: Path = Path(".")) -> str:
    lines = []
    for name in published_names(root):
        preset = load_published(name, root)
        sweep = f" Sweep: {preset.sweep_key} over {dvc_value(preset.sweep_values)}." if preset.sweep_key else ""
        lines.append(f"{name}\n    expects: {preset.expects}{sweep}")
    return "\n".join(lines) + ("\n" if lines else "no published presets in presets/published/\n")


def run_preset(name: str, overrides: list[str], sweep: str | None, exp_name: str | None, dry_run: bool,
               params_file: str = "params.yaml") -> int:
    """Validate every run of the preset over the committed params.yaml, check its data exists,
    then, for each run in turn, put the committed params.yaml back in the workspace (a previous
    experiment's params are still there) and `dvc exp run` it, stopping at the first that fails.
    Outside git the preset is laid over the workspace's params.yaml. --dry-run prints the commands
    (and any missing data) and changes nothing."""
    preset = load_published(name)
    path = Path(params_file)
    committed = committed_text(path)
    base = parse_params_text(committed, f"git HEAD:{params_file}") if committed is not None else None
    runs = preset_runs(preset, path, overrides, sweep, exp_name, base)
    merged = validated_changes(path, leaves(preset.overlay) | dict(parse_override(t) for t in overrides),
                               f"{preset.path} + params.yaml", base)
    missing = missing_data(merged)
    if missing:
        listing = "; ".join(f"{key}={path!r} does not exist" for key, path in missing)
        message = (f"preset {name}: {listing} (relative paths are from {Path.cwd()}). It expects: {preset.expects} "
                   f"Point it elsewhere with -S {missing[0][0]}=PATH")
        if not dry_run:
            raise FileNotFoundError(message)
        print(f"note: {message}", file=sys.stderr)
    if dry_run and committed is not None and path.read_text() != committed:
        print(f"note: {params_file} differs from the committed version: a run puts the committed one back first",
              file=sys.stderr)
    try:
        dvc = dvc_command(Path.cwd())
    except FileNotFoundError:
        if not dry_run:
            raise
        dvc = "dvc"
    for i, (experiment, args) in enumerate(runs):
        command = [dvc, "exp", "run", "-n", experiment, *args]
        if dry_run:
            print(shlex.join(command))
            continue
        restored = restore_committed(path, committed) if committed is not None else []
        if restored:
            print(f"{params_file}: restored to the committed version (it held other values of "
                  f"{first_keys(restored)}: a previous experiment's, or uncommitted edits; give those as -S)", flush=True)
        print(f"running ({i + 1}/{len(runs)}): {shlex.join(['dvc', *command[1:]])}", flush=True)
        code = subprocess.call(command, env=os.environ.copy())
        if code != 0:
            print(f"ganaug preset {name}: experiment {experiment} failed (exit {code}); "
                  f"{len(runs) - i - 1} of {len(runs)} not run", file=sys.stderr)
            return code
    return 0


# ---------------------------------------------------------------------------------------
# `ganaug preset NAME --table`: the preset's experiments as DVC recorded them.

def dvc_experiments(root: Path = Path(".")) -> list[dict[str, Any]]:
    """Every experiment of the workspace's baseline commit (`dvc exp show --json`), each as
    {name, rev, params (params.yaml as a mapping), metrics {file: mapping}}."""
    done = subprocess.run([dvc_command(root), "exp", "show", "--json"], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"dvc exp show --json failed: {done.stderr.strip()[-500:]}")
    out = []
    for baseline in json.loads(done.stdout):
        for experiment in baseline.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                data = rev.get("data") or {}
                params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
                metrics = {f: (m or {}).get("data") or {} for f, m in (data.get("metrics") or {}).items()}
                out.append({"name": rev.get("name") or experiment.get("name"), "rev": rev["rev"], "params": params,
                            "metrics": metrics, "baseline": baseline.get("rev")})
    return out


def synthetic_manifest(rev: str, root: Path = Path(".")) -> dict[str, Any] | None:
    """data/synthetic/manifest.json of an experiment's commit, from DVC's cache (None when absent)."""
    import dvc.api

    try:
        return json.loads(dvc.api.read("data/synthetic/manifest.json", repo=str(root), rev=rev))
    except Exception:  # the set was never written (a failed run) or its cache was garbage-collected
        return None


def _number(value: Any, digits: int = 3, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def not_beaten(numbers: dict[str, Any]) -> str:
    """" (not against N other references)" after the `helped` of an arm that beat real but not every
    other reference evaluate compared it with (a control gets there without synthetic images)."""
    n = int(numbers.get("references_not_beaten") or 0)
    return f" (not against {n} other reference{'s' if n > 1 else ''})" if n else ""


def results_table(name: str, exp_name: str | None = None, root: Path = Path(".")) -> str:
    """Markdown: per experiment of the preset (named NAME, or NAME-<value> for a sweep) and per arm,
    evaluate's primary metric against `real` (difference, corrected interval, verdict, from
    metrics/evaluation.json; "(not against N other references)" after a `helped` that a control
    exposes; "(gate overridden)" after the verdict of an arm trained on a set the
    quality gate refused and synthesize wrote anyway), beside the synthetic set's memorisation audit
    and SSIM likeness (data/synthetic/manifest.json of that experiment) and the GAN's fd_domain
    (metrics/gan.json).
    A sweep lists only the arms that use synthetic images: the real-only ones do not change with it."""
    from ganaug.stats.compare import verdict

    preset = load_published(name, root)
    prefix = exp_name or preset.name
    mine = [e for e in dvc_experiments(root)
            if e["name"] == prefix or (preset.sweep_key and str(e["name"]).startswith(f"{prefix}-"))]
    if not mine:
        return f"no DVC experiments named {prefix} or {prefix}-<value> (run: bin/ganaug preset {name})\n"
    sweep = preset.sweep_key
    head = ["experiment", *([sweep] if sweep else []), "arm", "metric", "real", "arm − real",
            "corrected interval", "verdict", "synthetic pool", "copy rate pixel", "copy rate domain",
            "copy rate pixel, unfiltered", "SSIM likeness median", "GAN fd_domain"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    def order(experiment: dict[str, Any]) -> tuple:
        value = leaf(experiment["params"], sweep) if sweep else None
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return (0, value, "") if number else (1, 0, dvc_value(value) + experiment["name"])

    for experiment in sorted(mine, key=order):
        evaluation = experiment["metrics"].get("metrics/evaluation.json") or {}
        gan = experiment["metrics"].get("metrics/gan.json") or {}
        manifest = synthetic_manifest(experiment["rev"], root) or {}
        audit = manifest.get("memorisation") or {}
        unfiltered = manifest.get("unfiltered_candidates") or {}
        pool = manifest.get("pool") or {}
        n_pool = pool.get("n_images", sum((pool.get("per_class") or {}).values()) if pool else None)
        real_only = {str(a) for a in leaf(experiment["params"], "arms.real") or []}
        overridden = " (gate overridden)" if (manifest.get("quality_gate") or {}).get("overridden") else ""
        for key, value in evaluation.items():
            if not key.endswith("_vs_real") or not isinstance(value, dict):
                continue
            metric = key[: -len("_vs_real")]
            for arm, numbers in value.items():
                if sweep and arm in real_only:
                    continue
                low, high = numbers.get("corrected_low"), numbers.get("corrected_high")
                row = [experiment["name"], *([dvc_value(leaf(experiment["params"], sweep))] if sweep else []), arm,
                       metric, _number(evaluation.get(f"real_{metric}")), _number(numbers.get("diff"), signed=True),
                       f"[{_number(low, signed=True)}, {_number(high, signed=True)}]",
                       (verdict(low, high) + not_beaten(numbers) + ("" if arm in real_only else overridden)
                        if low is not None and high is not None else "not computed"),
                       *(["–"] * 5 if arm in real_only else  # trained on real images only: no synthetic set
                         [str(n_pool) if n_pool is not None else "–",
                          _number(audit.get("memorisation_pixel_copy_rate")),
                          _number(audit.get("memorisation_domain_copy_rate")),
                          _number(unfiltered.get("unfiltered_memorisation_pixel_copy_rate")),
                          _number((manifest.get("ssim_likeness") or {}).get("ssim_likeness_median"))]),
                       _number(gan.get("fd_domain"), 2)]
                lines.append("| " + " | ".join(row) + " |")
    baselines = sorted({str(e["baseline"])[:7] for e in mine})
    notes = (f"\nDVC experiments of commit {', '.join(baselines)}. arm − real: evaluate's difference of means over seeds; corrected interval: at level 1 − (1 − evaluate.ci) / m for evaluate's m "
             "comparisons, over seeds and test images (README \"What the metrics are\"); copy rates: the memorisation "
             "audit of the synthetic set each experiment wrote (unfiltered: of every candidate the filter saw).\n")
    return "\n".join(lines) + "\n" + notes
