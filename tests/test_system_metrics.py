"""MLflow system metrics on training runs (tracking.system_metrics, tracking.system_metrics_interval):
a short real train_gan run records `system/…` metrics; switched off, a run records none; the
sampler thread is gone once the run's `with` block has ended (also when it ends in an error)."""

from __future__ import annotations

import threading
import time

import mlflow
import pytest

from conftest import prepared_project
from ganaug.cli import main as cli
from ganaug.config import TrackingConfig
from ganaug.tracking import mlflow_utils, runs

FAST = TrackingConfig(system_metrics=True, system_metrics_interval=0.1)  # the smallest interval params allow
TINY = {"data": {"image_size": 32, "phantom": {"n_images": 80}}, "reference": {"epochs": 1},
        "gan": {"epochs": 2, "eval_every": 1, "n_eval": 40, "batch_size": 16, "base_channels": 8, "min_diversity": 0.0},
        "tracking": {"system_metrics_interval": 0.2}}


def sampler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "SystemMetricsMonitor"]


def system_keys(run_id: str) -> set[str]:
    return {k for k in mlflow.get_run(run_id).data.metrics if k.startswith("system/")}


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    mlflow_utils.setup()
    yield
    mlflow.system_metrics.set_system_metrics_sampling_interval(None)  # the process-wide setting, back to MLflow's default


@pytest.mark.parametrize("cfg, recorded", [(FAST, True), (TrackingConfig(system_metrics=False), False)])
def test_the_switch_decides_and_the_sampler_stops_with_the_run(store, cfg, recorded):
    with runs.start_run("test", runs.input_key(cfg=str(cfg)), **mlflow_utils.system_metrics(cfg)) as run:
        time.sleep(0.6)  # several sampling intervals
        assert bool(sampler_threads()) == recorded
    assert not sampler_threads()
    assert bool(system_keys(run.info.run_id)) == recorded


def test_the_sampler_stops_when_the_run_ends_in_an_error(store):
    with pytest.raises(RuntimeError, match="training failed"):
        with runs.start_run("test", runs.input_key(case="error"), **mlflow_utils.system_metrics(FAST)) as run:
            time.sleep(0.3)
            raise RuntimeError("training failed")
    assert not sampler_threads()
    assert mlflow.get_run(run.info.run_id).info.status == "FAILED"


def test_a_short_train_gan_run_records_system_metrics(tmp_path):
    with prepared_project(tmp_path, TINY):
        assert cli(["real-features"]) == 0
        assert cli(["train-gan"]) == 0
        assert not sampler_threads()
        run = mlflow.search_runs(filter_string="tags.`ganaug.stage` = 'train_gan'", output_format="list")[0]
        keys = system_keys(run.info.run_id)
        assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= keys, keys
        history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
        assert [m.step for m in history] == list(range(len(history)))  # one step per sample
