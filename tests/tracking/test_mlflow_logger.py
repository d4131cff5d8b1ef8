"""logger=mlflow: a real training run lands in a real SQLite MLflow store, found by
`mlflow.search_runs` with the run's lineage in its tags, its config as params and its final
metrics; failures, resumes and `logger.mode: disabled` behave like W&B's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from liveml.tracking.loggers import (
    MLFLOW_ID_FILE,
    is_mlflow,
    mlflow_params,
    mlflow_tags,
    mlflow_tracking_uri,
    open_tracking,
)

from tinymodule import Tiny, fit

pytest.importorskip("mlflow")  # a dev dependency (pyproject's dev extra)

RECORD = {
    "run_id": "20261124-153012-ab12cd34",
    "task": "defects",
    "created": "2026-11-24T15:30:12Z",
    "fingerprint": "ab" * 32,
    "fingerprint_parts": {"code": "c" * 64, "config": "d" * 64, "data": "e" * 64},
    "code": {"commit": "f" * 40, "dirty": False, "diff_sha256": None},
    "data": {"data/defects/raw": "0123abcd.dir"},
    "sweep": {"name": "multirun/2026-11-24_15-30-00", "kind": "hydra", "job": 3},
}


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An empty SQLite MLflow store, made once: a new store runs MLflow's ~50 schema
    migrations (seconds); tests copy this one to where their runs go."""
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("mlflow") / "empty.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


def store_at(empty_store: Path, db: Path) -> str:
    """A copy of the empty store at `db`; its URI."""
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(empty_store, db)
    return f"sqlite:///{db}"


def search(uri: str, run_id: str):
    """The MLflow runs whose liveml run id is `run_id`, through MLflow's own search."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(
        experiment_names=["liveml"],
        filter_string=f"tags.`liveml.run_id` = '{run_id}'",
        output_format="list",
    )


def test_training_run_lands_in_the_sqlite_store(tiny_trainable, tiny_cfg, tmp_path, empty_store):
    from liveml.tracking.runs import RunStore
    from liveml.training.run import train

    cfg = tiny_cfg("logger=mlflow")
    assert is_mlflow(cfg) and not is_mlflow(tiny_cfg())  # W&B stays the default
    db = tiny_trainable.root / "mlflow" / "mlflow.db"  # conf/logger/mlflow.yaml's store
    uri = store_at(empty_store, db)
    record = train(cfg, out_dir=tmp_path / "model", project=tiny_trainable)

    assert record["mlflow"]["tracking_uri"] == uri
    assert record["wandb"] == {"id": None, "mode": "disabled", "dir": None}
    assert not (tiny_trainable.root / "wandb").exists()
    (run,) = search(uri, record["run_id"])
    assert run.info.run_id == record["mlflow"]["run_id"]
    assert run.info.run_name == record["run_id"] and run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith((db.parent / "artifacts").as_uri())

    tags = run.data.tags
    assert tags["liveml.fingerprint"] == record["fingerprint"]
    for part, value in record["fingerprint_parts"].items():
        assert tags[f"liveml.fingerprint.{part}"] == value
    for path, value in record["data"].items():
        assert tags[f"liveml.data.{path}"] == value
    assert tags["liveml.task"] == "defects"
    assert tags["liveml.weights_sha256"] == record["weights_sha256"]
    # The tiny project is no git repo: no commit, so no commit tags.
    assert record["code"]["commit"] is None and "liveml.commit" not in tags

    params = run.data.params
    assert params["model.lr"] == json.dumps(record["config"]["model"]["lr"])
    assert params["model.channels"] == "[8, 16, 16, 32]"
    assert params["trainer.max_epochs"] == "2" and params["logger.project"] == "liveml"
    assert not any(k.startswith("cfg/") for k in params)  # not the module's hparams again

    assert record["metrics"] and {"train/loss", "val/map"} <= set(record["metrics"])
    for key, value in record["metrics"].items():
        assert run.data.metrics[key] == pytest.approx(value, rel=1e-6), key

    stored = RunStore.for_project(tiny_trainable, cfg).get(record["run_id"])
    assert stored["mlflow"] == record["mlflow"]
    # The work folder (and its mlflow_id) is gone with the finished run's checkpoints.
    assert not list(tiny_trainable.path(cfg.paths.checkpoints).iterdir())


def test_failing_fit_fails_the_mlflow_run_and_resume_continues_it(
    tiny_project, tiny_cfg, tmp_path, empty_store
):
    uri = store_at(empty_store, tmp_path / "store" / "m.db")
    cfg = tiny_cfg("logger=mlflow", f"logger.dir={uri}")
    record = dict(RECORD)
    with (
        pytest.raises(RuntimeError, match="boom"),
        open_tracking(cfg, record, tmp_path / "w", project=tiny_project) as tr,
    ):
        fit(Tiny(fail_at_step=2), tr.loggers)
    (run,) = search(uri, RECORD["run_id"])
    assert run.info.status == "FAILED" and run.info.run_id == record["mlflow"]["run_id"]
    assert (tmp_path / "w" / MLFLOW_ID_FILE).read_text() == run.info.run_id
    assert [m.step for m in _history(uri, run.info.run_id, "train/loss")] == [0, 1]
    tags = run.data.tags
    assert tags["liveml.commit"] == tags["mlflow.source.git.commit"] == "f" * 40
    assert tags["liveml.sweep"] == RECORD["sweep"]["name"] and tags["liveml.sweep.job"] == "3"

    again = dict(RECORD)
    with open_tracking(cfg, again, tmp_path / "w", project=tiny_project, resume=True) as tr:
        fit(Tiny(), tr.loggers)
    assert again["mlflow"]["run_id"] == run.info.run_id  # the same MLflow run, continued
    (run,) = search(uri, RECORD["run_id"])
    assert run.info.status == "FINISHED"

    fresh = dict(RECORD)
    with open_tracking(cfg, fresh, tmp_path / "w", project=tiny_project) as tr:
        pass
    assert fresh["mlflow"]["run_id"] != run.info.run_id
    assert len(search(uri, RECORD["run_id"])) == 2


def _history(uri: str, run_id: str, key: str):
    from mlflow.tracking import MlflowClient

    return sorted(MlflowClient(uri).get_metric_history(run_id, key), key=lambda m: m.step)


def test_disabled_mode_starts_no_mlflow_run(tiny_project, tiny_cfg, tmp_path):
    cfg = tiny_cfg("logger=mlflow", "logger.mode=disabled")
    record = dict(RECORD)
    with open_tracking(cfg, record, tmp_path / "w", project=tiny_project) as tr:
        assert tr.loggers == [tr.csv]
    assert record["mlflow"] is None and not (tiny_project.root / "mlflow").exists()


def test_tracking_uri_tags_and_params(tiny_project, tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = tiny_cfg("logger=mlflow")
    uri = mlflow_tracking_uri(cfg, tiny_project)
    assert uri == f"sqlite:///{tiny_project.root}/mlflow/mlflow.db"
    absolute = tiny_cfg("logger=mlflow", f"logger.dir=sqlite:///{tmp_path}/a.db")
    assert mlflow_tracking_uri(absolute, tiny_project) == f"sqlite:///{tmp_path}/a.db"
    server = tiny_cfg("logger=mlflow", "logger.dir=http://127.0.0.1:5000")
    assert mlflow_tracking_uri(server, tiny_project) == "http://127.0.0.1:5000"
    # MLflow sets this itself once a process picked a store: never another run's choice.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://10.0.0.1:5000")
    assert mlflow_tracking_uri(cfg, tiny_project) == uri

    tags = mlflow_tags({**RECORD, "sweep": None, "code": {"commit": None, "dirty": True}})
    assert tags["liveml.dirty"] == "true" and "liveml.sweep" not in tags
    assert "liveml.commit" not in tags and tags["liveml.run_id"] == RECORD["run_id"]
    assert mlflow_params({"a": {"b": 1, "c": None, "d": {}}, "e": [1, 2], "f": "x"}) == {
        "a.b": "1",
        "a.c": "null",
        "a.d": "{}",
        "e": "[1, 2]",
        "f": "x",
    }
