"""`kill -9` at chosen points of prepare, train_gan, synthesize and train_classifier, then a
rerun: no temp folder is left, no MLflow run stays RUNNING, every run's metric history is
complete, and the outputs equal those of an uninterrupted run.

The kills come from the stages' own `GANAUG_TEST_KILL_AT` hook (`ganaug.io.kill_point`). To pay
for the heavy imports once, a driver process (this file run as a script) imports the stages
and forks one child per attempt; each child runs its stages in the project folder and is
killed or exits.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
PIPELINE = ["prepare", "train-reference", "real-features", "train-gan", "synthesize", "train-classifier --arm real"]
# (stages run by one process, the kill point that ends it or None): each kill leaves debris the next attempt must clear
KILLED_ATTEMPTS = [
    (["prepare"], "atomic_dir:prepared"),  # data/.prepared.tmp-* written, not yet in place
    (["prepare", "train-reference", "real-features", "train-gan"], "run_started:train_gan"),  # before the first checkpoint
    (["train-gan"], "gan_checkpoint_saved:1"),  # epoch 1 checkpointed, not yet logged to MLflow
    (["train-gan"], "atomic_dir:gan"),  # models/gan written in its temp folder, not yet in place
    (["train-gan"], "train_gan_registered"),  # models/gan in place, the generator registered, the run not finished
    (["train-gan", "synthesize"], "atomic_dir:synthetic"),  # synthesize's run open, its output not in place
    (["synthesize", "train-classifier --arm real"], "run_started:train_classifier_real@3"),  # arm run, seed 0 done, seed 1 started
    (["train-classifier --arm real"], None),
]


def temp_folders(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*.tmp-*"))


def running_runs(root: Path) -> int:
    if not (root / "mlflow.db").is_file():
        return 0
    with sqlite3.connect(root / "mlflow.db") as db:
        return db.execute("SELECT COUNT(*) FROM runs WHERE status = 'RUNNING'").fetchone()[0]


def drive(plan: list[dict]) -> list[dict]:
    """Run each attempt in a forked child; what each left behind, in order."""
    from ganaug import cli
    from ganaug.stages import prepare, real_features, synthesize, train_classifier, train_gan, train_reference  # noqa: F401

    outcomes = []
    for attempt in plan:
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # child: the stages, one after the other, as `ganaug <stage>` would run them
            code = 1
            try:
                os.chdir(attempt["root"])
                os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{attempt['root']}/mlflow.db"
                if attempt["kill_at"]:
                    os.environ["GANAUG_TEST_KILL_AT"] = attempt["kill_at"]
                code = 0
                for stage in attempt["stages"]:
                    code = cli.main(stage.split())
                    if code:
                        break
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)  # reaped: its pid is gone, as a killed stage's is
        root = Path(attempt["root"])
        outcomes.append({
            "killed": os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL,
            "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            "temps": temp_folders(root), "running": running_runs(root), "seconds": round(time.perf_counter() - start, 1),
        })
    return outcomes


def make_project(root: Path) -> Path:
    from test_pipeline import TINY, merge
    from ruamel.yaml import YAML

    root.mkdir()
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    yaml = YAML()
    params = yaml.load((REPO / "params.yaml").read_text())
    with open(root / "params.yaml", "w") as f:
        yaml.dump(merge(params, TINY), f)
    return root


def finished_runs(root: Path) -> dict[tuple[str, str], object]:
    """The last FINISHED run of each (stage, seed) in the project's store."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ganaug")
    found = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'", order_by=["attributes.start_time ASC"])
    return {(r.data.tags["ganaug.stage"], r.data.params.get("seed", "")): r for r in found}


def history(client, run) -> dict[str, list[tuple[int, float]]]:
    """Every training metric's (step, value) pairs, sorted; duplicates kept. The `system/` metrics
    are left out: samples of the machine every tracking.system_metrics_interval seconds, whose
    number follows the wall time of each process (a resumed run shorter than one interval has none)."""
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
            for key in run.data.metrics if not key.startswith("system/")}


def state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The weights of a generator or classifier file."""
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_atomic_write_removes_temps_of_dead_processes_only(tmp_path):
    from ganaug.io import atomic_dir, atomic_file

    gone = subprocess.Popen(["true"])
    gone.wait()  # reaped: its pid belongs to no process now
    out = tmp_path / "prepared"
    dead, alive, legacy = (tmp_path / f".prepared.tmp-{gone.pid}-x", tmp_path / f".prepared.tmp-{os.getpid()}-y",
                           tmp_path / ".prepared.tmp-z")
    for folder in (dead, alive, legacy):
        folder.mkdir()
    other = tmp_path / f".prepared2.tmp-{gone.pid}-x"  # another output's temp: not this write's business
    other.mkdir()
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("a")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other.name, "prepared"])
    stale_file = tmp_path / f".m.json.tmp-{gone.pid}-q.json"
    stale_file.write_text("{")
    with atomic_file(tmp_path / "m.json") as tmp:
        tmp.write_text("{}")
    assert not stale_file.exists() and (tmp_path / "m.json").read_text() == "{}"


def test_git_ignores_temp_siblings():
    for path in ("data/.prepared.tmp-123-abc", "models/arms/.real.tmp-9-x", "metrics/.gan.json.tmp-5-y.json"):
        assert subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=REPO).returncode == 0, path


@pytest.mark.slow
def test_killed_stages_rerun_to_the_uninterrupted_result(tmp_path):
    import mlflow

    from ganaug.tracking.runs import logged_image_steps

    reference, killed = make_project(tmp_path / "uninterrupted"), make_project(tmp_path / "killed")
    plan = [{"root": str(reference), "stages": PIPELINE, "kill_at": None}]
    plan += [{"root": str(killed), "stages": stages, "kill_at": kill_at} for stages, kill_at in KILLED_ATTEMPTS]
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, __file__, str(tmp_path / "plan.json")], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"driver failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    outcomes = json.loads((tmp_path / "outcomes.json").read_text())
    log = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    assert {k: outcomes[0][k] for k in ("killed", "exit_code", "temps", "running")} == {
        "killed": False, "exit_code": 0, "temps": [], "running": 0}, log
    for (stages, kill_at), outcome in zip(KILLED_ATTEMPTS, outcomes[1:], strict=True):
        assert (outcome["killed"], outcome["exit_code"]) == ((True, None) if kill_at else (False, 0)), (kill_at, outcome, log)
    # what each kill left behind (the debris the reruns must clear)
    after = dict(zip([kill_at for _, kill_at in KILLED_ATTEMPTS], outcomes[1:]))
    assert [t.split(".tmp-")[0] for t in after["atomic_dir:prepared"]["temps"]] == ["data/.prepared"]
    assert after["run_started:train_gan"]["running"] == 1
    assert [t.split(".tmp-")[0] for t in after["atomic_dir:gan"]["temps"]] == ["models/.gan"]
    assert after["atomic_dir:synthetic"]["running"] == 1
    assert [t.split(".tmp-")[0] for t in after["atomic_dir:synthetic"]["temps"]] == ["data/.synthetic"]
    assert [t.split(".tmp-")[0] for t in after["run_started:train_classifier_real@3"]["temps"]] == ["models/arms/.real"]
    # after the reruns: no debris, no RUNNING run
    assert outcomes[-1]["temps"] == [] and outcomes[-1]["running"] == 0

    # complete history: each stage's last FINISHED run logged what the uninterrupted one did, once
    runs_ref, runs_killed = finished_runs(reference), finished_runs(killed)
    assert set(runs_killed) == set(runs_ref)
    client_ref = mlflow.MlflowClient(f"sqlite:///{reference / 'mlflow.db'}")
    client_killed = mlflow.MlflowClient(f"sqlite:///{killed / 'mlflow.db'}")
    for key, run in runs_ref.items():
        expected, got = history(client_ref, run), history(client_killed, runs_killed[key])
        assert set(got) == set(expected), key
        for metric in expected:
            assert [s for s, _ in got[metric]] == [s for s, _ in expected[metric]], (key, metric)
    gan_ref, gan_killed = runs_ref[("train_gan", "")], runs_killed[("train_gan", "")]
    assert history(client_killed, gan_killed)["loss_d"] == history(client_ref, gan_ref)["loss_d"]  # same values too
    assert gan_killed.data.metrics["train_images_per_second"] > 0
    mlflow.set_tracking_uri(f"sqlite:///{killed / 'mlflow.db'}")
    assert logged_image_steps(gan_killed.info.run_id, "samples") == {1, 2}
    assert "memorisation_closest_pairs.png" in {a.path for a in client_killed.list_artifacts(gan_killed.info.run_id)}
    mlflow.set_tracking_uri(None)
    assert len(client_killed.search_model_versions("name = 'ganaug-generator'")) == 1  # registered once
    challenger = client_killed.get_model_version_by_alias("ganaug-generator", "challenger")  # with its model card
    assert challenger.tags["data.dataset_hash"] and "metric.memorisation_pixel_copy_rate" in challenger.tags
    killed_runs = client_killed.search_runs([client_killed.get_experiment_by_name("ganaug").experiment_id], "attributes.status = 'KILLED'")
    assert sorted(r.data.tags["ganaug.stage"] for r in killed_runs) == ["synthesize", "train_classifier_real", "train_classifier_real", "train_gan"]  # the arm run and its seed 1

    # identical outputs
    assert sorted(p.name for p in (killed / "models/gan").iterdir()) == sorted(p.name for p in (reference / "models/gan").iterdir())
    for path in ("models/gan/generator.pt", "models/arms/real/seed0.pt", "models/arms/real/seed1.pt"):
        a, b = state_dict(reference / path), state_dict(killed / path)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), path
    for path in ("data/prepared/dataset.npz", "data/synthetic/synthetic.npz", "models/arms/real/test_predictions.npz"):
        with np.load(reference / path) as a, np.load(killed / path) as b:
            assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files), path


if __name__ == "__main__":  # the driver: python tests/test_kill.py plan.json -> outcomes.json beside it
    plan_file = Path(sys.argv[1])
    plan_outcomes = drive(json.loads(plan_file.read_text()))
    (plan_file.parent / "outcomes.json").write_text(json.dumps(plan_outcomes))
