"""Where synthesize's generator comes from: the pipeline's own `models/gan/generator.pt`
(`synthesize.generator: null`) or a version of the model registry (`models:/<name>@<alias>`,
`models:/<name>/<version>`).

An alias moves without any file of the project changing, so DVC cannot see it. The
`resolve_generator` stage (always run) pins it: it looks the alias up, downloads the version's
generator file and writes `resolve(...)`'s record (name, version, run id, sha256 of the file) to
`models/resolved_generator.json`. synthesize depends on that file: when the alias still names
the same version the record is byte-identical and DVC skips synthesize; when it moved, synthesize
reruns, and takes exactly the pinned version (`fetch` checks the hash).

Only the weights file is downloaded (the pyfunc model's `generator` artifact, `artifacts/*.pt`),
and it is read with `TrainedGenerator.load` (`torch.load(weights_only=True)`): the model's code
(`python_model`, `code_paths`) is never loaded or run here.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from ganaug.config import registry_uri_parts
from ganaug.tracking import mlflow_utils

PIPELINE = {"source": "pipeline"}  # synthesize.generator: null: train_gan's models/gan/generator.pt
WEIGHTS_FOLDER = "artifacts"  # the pyfunc model's artifacts: {"generator": <the .pt file train_gan wrote>}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _version(uri: str, key: str) -> Any:
    """The ModelVersion that `uri` names now; ValueError naming `key`, the URI and the store."""
    name, alias, version = registry_uri_parts(uri, key)
    client = mlflow.MlflowClient()
    try:
        return client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as exc:
        what = f"no version with alias @{alias}" if alias else f"no version {version}"
        hint = " (`bin/ganaug promote` sets @champion)" if alias == "champion" else ""
        raise ValueError(f"{key}={uri!r}: registered model {name!r} has {what} in {mlflow.get_tracking_uri()}{hint}") \
            from exc


def _weights_artifact(name: str, version: str, key: str) -> str:
    """`artifacts/<file>.pt` of a registered generator (one .pt file, as train_gan logs it)."""
    listed = mlflow.artifacts.list_artifacts(artifact_uri=f"models:/{name}/{version}/{WEIGHTS_FOLDER}")
    found = [a.path for a in listed if a.path.endswith(".pt")]
    if len(found) != 1:
        raise ValueError(f"{key}: models:/{name}/{version} is not a generator logged by train_gan: expected one .pt file "
                         f"under {WEIGHTS_FOLDER}/, found {found}")
    return found[0] if found[0].startswith(f"{WEIGHTS_FOLDER}/") else f"{WEIGHTS_FOLDER}/{Path(found[0]).name}"


def _download(name: str, version: str, artifact: str, dst: Path) -> Path:
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}/{artifact}", dst_path=str(dst)))


def download(uri: str, dst: Path, key: str = "synthesize.generator") -> tuple[dict[str, str], Path]:
    """(record, weights file in `dst`) of the version `uri` names now. The record: source, uri,
    name, version, run_id, artifact (the weights file inside the model), sha256 (of that file)."""
    mlflow_utils.setup()
    found = _version(uri, key)
    name, version = found.name, str(found.version)
    artifact = _weights_artifact(name, version, key)
    path = _download(name, version, artifact, dst)
    return {"source": "registry", "uri": uri, "name": name, "version": version, "run_id": str(found.run_id),
            "artifact": artifact, "sha256": sha256_of(path)}, path


def resolve(uri: str, key: str = "synthesize.generator") -> dict[str, str]:
    """The record of the version `uri` names now (`download`'s, the file hashed and dropped)."""
    with tempfile.TemporaryDirectory(prefix="generator-") as tmp:
        return download(uri, Path(tmp), key)[0]


def fetch(record: dict[str, str], dst: Path, key: str = "synthesize.generator") -> Path:
    """Download the pinned version's weights file into `dst`; ValueError when it is no longer
    the file `resolve` hashed (the version's artifacts were replaced: rerun resolve_generator)."""
    mlflow_utils.setup()
    path = _download(record["name"], record["version"], record["artifact"], dst)
    digest = sha256_of(path)
    if digest != record["sha256"]:
        raise ValueError(f"{key}={record['uri']!r}: {record['name']} v{record['version']}'s generator file has sha256 "
                         f"{digest[:12]}, not the {record['sha256'][:12]} that resolve_generator pinned: rerun "
                         "`bin/ganaug resolve-generator` (dvc repro runs it)")
    return path


def describe(record: dict[str, str]) -> str:
    """`models:/ganaug-generator@champion (v3, run 1a2b…)` or `the pipeline's models/gan/generator.pt`."""
    if record.get("source") != "registry":
        return "the pipeline's models/gan/generator.pt"
    return f"{record['uri']} (v{record['version']} of {record['name']}, run {record['run_id']})"
