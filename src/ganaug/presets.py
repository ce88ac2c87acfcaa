"""`ganaug exp --preset FILE [-S key=value ...]`: one DVC experiment from a params overlay.

A preset (`presets/*.yaml`) holds only the keys that differ from `params.yaml`, as nested YAML
sections. This command merges params.yaml, the preset and any `-S` overrides, validates the
result as a whole (every key, range and cross-field rule of `ganaug.config`), and only then runs
`dvc exp run -S key=value ...` with one `-S` per leaf of the preset and the overrides, so DVC
records the experiment and `dvc exp show` lists it beside the others. A bad key or value in a
preset fails here, before DVC copies the workspace or any stage starts.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from ganaug.config import ConfigError, params_from_dict


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
    merged = read_yaml(params_file, "params file")
    changed: dict[str, Any] = {}
    if preset is not None:
        changed |= leaves(read_yaml(preset, "preset"))
    changed |= dict(parse_override(text) for text in overrides)
    if not changed:
        raise ConfigError("nothing to change: give --preset FILE and/or -S key=value")
    for key, value in changed.items():
        set_leaf(merged, key, value)
    where = f"{preset} + params.yaml" if preset else "params.yaml"
    try:
        params_from_dict(merged)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
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
    command = [dvc_command(Path.cwd()), "exp", "run", *(["-n", name] if name else []), *args]
    print(shlex.join(command) if dry_run else f"running: {shlex.join(['dvc', *command[1:]])}", flush=True)
    if dry_run:
        return 0
    return subprocess.call(command, env=os.environ.copy())
