"""The platform against a team server: a real PostgreSQL (tests/postgres_server.py) behind a
real `mlflow server` on 127.0.0.1 with a proxied artifact store in a temporary folder, set by
the one setting the pipeline, the studies' trial runs and the notebook read
(`MLFLOW_TRACKING_URI`, through `mlflow_utils.setup`).

A train_gan-like run logs through the stage's own helpers (lineage tags, the data set input,
per-step metrics, an artifact, the pyfunc generator, the model card and @challenger); then
`ganaug promote` promotes, refuses a copier, promotes a better generator, rolls back, and
everything is read back over HTTP: MLflow's REST API for runs, metric history, the registered
model's aliases and tags, the artifact proxy for files, and the champion loaded as a pyfunc
model from the server and sampled.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from ganaug.cli import main as cli
from ganaug.config import GANConfig, flatten
from ganaug.gan.generator import TrainedGenerator
from ganaug.gan.train import build_networks
from ganaug.tracking import mlflow_utils, pyfunc_generator, registry, runs
from postgres_server import free_port, postgres_server  # noqa: F401  (the session fixture)
from test_promotion import EXTRACTOR, final_metrics, phantoms

NAME = pyfunc_generator.REGISTERED_NAME
SERVER_START_S = 120  # MLflow creates its tables in PostgreSQL on first start: seconds, more on a busy CI machine


def _wait_until_healthy(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"mlflow server not healthy at {url} after {SERVER_START_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def team_server(postgres_server, tmp_path_factory):  # noqa: F811
    """`mlflow server` on 127.0.0.1:<free port>: runs and registry in PostgreSQL, artifacts in a
    temporary folder served through the server (clients need no access to that folder)."""
    root = tmp_path_factory.mktemp("team-server")
    backend = postgres_server.create_database("mlflow_team")
    port = free_port()
    log = root / "server.log"
    command = [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", backend,
               "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--uvicorn-opts", "--timeout-graceful-shutdown 3"]  # clients keep connections open
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(process, url, log)
        yield url, root / "artifacts"
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # its own session: the server, its uvicorn worker and job runner
        try:
            process.wait(timeout=5)  # the data is thrown away: no need to wait out a slow shutdown
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def rest(url: str, endpoint: str, body: dict | None = None, **query: str) -> dict:
    """One call of MLflow's REST API (POST with a JSON body, else GET with a query)."""
    address = f"{url}/api/2.0/mlflow/{endpoint}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(address, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def train_gan_like_run(tmp_path: Path, final: dict[str, float], tag: str) -> str:
    """A run shaped like train_gan's: lineage tags, the training data as an input, per-step losses,
    an artifact, the generator logged and registered with its card as @challenger; returns the version."""
    cfg = GANConfig(latent_dim=8, base_channels=4, device="cpu")
    network, _ = build_networks(cfg, 28, 0)
    generator = TrainedGenerator(network.eval(), dataclasses.asdict(cfg), ["normal"], [0], False, {})
    generator.save(tmp_path / f"generator-{tag}.pt")
    meta = {"dataset_hash": "a" * 64, "source": {"name": "phantom"}, "content_hash": {"train": "b" * 64}}
    mlflow_utils.setup()
    with runs.start_run("train_gan", runs.input_key(tag=tag), run_name=f"train_gan-{tag}",
                        tags=mlflow_utils.lineage_tags("train_gan", meta)):
        mlflow_utils.log_split(meta, "train", phantoms(8, seed=3), np.zeros(8, dtype=int), "training")
        mlflow.log_params(flatten(cfg, "gan"))
        mlflow_utils.log_step_metrics([{"step": s, "loss_d": 1.0 / (s + 1), "loss_g": 2.0 - s / 10} for s in range(5)],
                                      ["loss_d", "loss_g"])
        mlflow.log_metrics({k: v for k, v in final.items() if "_ci_" not in k}, step=1)
        mlflow.log_dict({"final": final}, "quality.json")
        info = pyfunc_generator.log_generator(tmp_path / f"generator-{tag}.pt", 1, 28, 0, register=False)
        card = registry.model_card(final, flatten(cfg, "gan"), meta, ["normal"], EXTRACTOR, 28,
                                   {"epochs": 1, "steps": 5, "images_seen": 40, "train_seconds": 0.1}, {"device": "cpu"})
        return registry.register_generator(info.model_uri, *card)


def test_pipeline_registry_and_promotion_through_a_postgresql_backed_server(team_server, tmp_path, monkeypatch, capsys):
    url, artifact_root = team_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)  # the one setting
    assert mlflow_utils.tracking_uri() == url
    train = phantoms(120, seed=0)
    rng = np.random.default_rng(5)
    blurry = np.clip(phantoms(100, seed=2) * 0.8 + rng.normal(0, 20, (100, 1, 28, 28)), 0, 255).astype(np.uint8)
    copier = np.clip(train[rng.integers(0, len(train), 100)] + rng.normal(0, 2, (100, 1, 28, 28)), 0, 255).astype(np.uint8)

    v1 = train_gan_like_run(tmp_path, final_metrics(blurry, train), "blurry")
    assert cli(["promote"]) == 0 and "result: PROMOTED" in capsys.readouterr().out
    v2 = train_gan_like_run(tmp_path, final_metrics(copier, train), "copier")
    assert cli(["promote"]) == 3
    assert "[   FAIL] memorisation: pixel copy rate 1 > 0.05" in capsys.readouterr().out
    v3 = train_gan_like_run(tmp_path, final_metrics(phantoms(100, seed=1), train), "fresh")
    assert cli(["promote"]) == 0 and f"v{v3} is @champion, v{v1} is @previous-champion" in capsys.readouterr().out

    # read back over HTTP: runs, their metrics, inputs and artifacts
    experiment = rest(url, "experiments/get-by-name", experiment_name=mlflow_utils.EXPERIMENT)["experiment"]
    found = rest(url, "runs/search", {"experiment_ids": [experiment["experiment_id"]],
                                      "filter": "tags.`ganaug.stage` = 'train_gan'"})["runs"]
    assert sorted(r["info"]["run_name"] for r in found) == ["train_gan-blurry", "train_gan-copier", "train_gan-fresh"]
    fresh = next(r for r in found if r["info"]["run_name"] == "train_gan-fresh")
    assert fresh["info"]["status"] == "FINISHED"
    assert fresh["inputs"]["dataset_inputs"][0]["dataset"]["digest"] == "b" * 16  # the train split's content hash
    history = rest(url, "metrics/get-history", run_id=fresh["info"]["run_id"], metric_key="loss_d")["metrics"]
    assert [m["step"] for m in sorted(history, key=lambda m: m["step"])] == [0, 1, 2, 3, 4]
    query = urllib.parse.urlencode({"run_uuid": fresh["info"]["run_id"], "path": "quality.json"})
    with urllib.request.urlopen(f"{url}/get-artifact?{query}", timeout=30) as response:
        assert "fd_domain" in json.load(response)["final"]
    assert any(artifact_root.rglob("quality.json"))  # stored under the server's artifact root, sent over HTTP

    # the registered model: aliases, the model card and the promotion record
    model = rest(url, "registered-models/get", name=NAME)["registered_model"]
    aliases = {a["alias"]: a["version"] for a in model["aliases"]}
    assert aliases == {"champion": v3, "previous-champion": v1}  # @challenger went with v3's promotion
    card = rest(url, "model-versions/get", name=NAME, version=v2)["model_version"]
    card_tags = {t["key"]: t["value"] for t in card["tags"]}
    assert card_tags["promotion.gate.memorisation"].startswith("fail: pixel copy rate 1")
    assert card_tags["data.dataset_hash"] == "a" * 64 and "copy rate" in card["description"]

    # the champion as a pyfunc model, served from the server's artifact store
    champion = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    images = champion.predict(pd.DataFrame({"class_label": [0], "count": [3]}), params={"seed": 7})
    assert images.shape == (3, 1, 28, 28) and images.dtype == np.uint8

    assert cli(["promote", "--rollback"]) == 0
    assert f"v{v1} is @champion again" in capsys.readouterr().out
    assert rest(url, "registered-models/alias", name=NAME, alias="champion")["model_version"]["version"] == v1
    mlflow.set_tracking_uri(None)
