"""--logger: the real CSV, TensorBoard and MLflow writers, read back from a temporary folder."""

import csv
import json

import pytest

from celltune.config import config_from_dict
from celltune.errors import ConfigError
from celltune.training import tracking
from celltune.training.fit import fit

from conftest import history, quick_config


def test_parameters_are_the_config_flat_by_section():
    config = config_from_dict({"data": "cells", "lr": 0.02, "channels": "red,green", "logger": "csv,mlflow"})
    params = tracking.parameters(config)
    assert params["optim.lr"] == 0.02 and params["data.channels"] == "red,green"
    assert params["output.logger"] == "csv,mlflow" and params["data.root"] == "cells"
    assert len(params) == sum(len(section) for section in config.to_dict().values())


def test_an_unknown_tracker_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match="choose from csv, tensorboard, mlflow"):
        config_from_dict({"data": "cells", "logger": "csv,wandb"})


@pytest.mark.slow
def test_every_tracker_gets_the_epochs_the_final_scores_and_mlflow_the_files(tiny_data, tmp_path):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = fit(quick_config(tiny_data, tmp_path / "runs", epochs=2, logger=["csv", "tensorboard", "mlflow"],
                           experiment="cells", bootstrap=50))
    rows = history(run)
    scores = json.loads((run / "metrics.json").read_text())
    split = scores["split"]

    with (run / "csv" / "metrics.csv").open() as f:
        logged = list(csv.DictReader(f))
    epochs = [r for r in logged if r.get("val_aca")]
    assert [float(r["val_aca"]) for r in epochs] == pytest.approx([float(r["val_aca"]) for r in rows])
    assert float(next(r for r in logged if r.get(f"{split}_aca"))[f"{split}_aca"]) == pytest.approx(
        scores["mean_class_accuracy"])

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("val_aca")] == [1, 2]
    assert events.Scalars(f"{split}_aca_ci_low")[0].value == pytest.approx(scores["ci"]["mean_class_accuracy"][0])

    kept = json.loads((run / tracking.TRACKING).read_text())
    assert kept["tracking_uri"] == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"  # beside the runs by default
    run_id, client = kept["mlflow_run_id"], MlflowClient(tracking_uri=kept["tracking_uri"])
    mlflow_run = client.get_run(run_id)
    assert mlflow_run.info.run_name == run.name
    assert client.get_experiment(mlflow_run.info.experiment_id).name == "cells"
    assert mlflow_run.data.params["optim.epochs"] == "2" and mlflow_run.data.params["data.root"] == str(tiny_data)
    assert [m.value for m in client.get_metric_history(run_id, "val_aca")] == pytest.approx(
        [float(r["val_aca"]) for r in rows])
    low, high = scores["ci"]["accuracy"]
    assert mlflow_run.data.metrics[f"{split}_acc"] == pytest.approx(scores["accuracy"])
    assert (mlflow_run.data.metrics[f"{split}_acc_ci_low"], mlflow_run.data.metrics[f"{split}_acc_ci_high"]) == \
        pytest.approx((low, high))
    assert {"report.html", "best.pt", "metrics.json"} <= {a.path for a in client.list_artifacts(run_id)}
    assert (tmp_path / "runs" / "mlartifacts").is_dir()


def _started_and_resumed(tmp_path, logger: str, first_epoch: dict | None = None):
    """The trackers of a run started, given ``first_epoch``, then of the process that resumes it: (first, again)."""
    config = config_from_dict({"data": "cells", "out_dir": str(tmp_path), "logger": logger})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    first = tracking.make_loggers(config.output, run_dir)
    tracking.start(first, config, run_dir, resumed=False)
    if first_epoch:
        tracking.log_epoch(first, first_epoch)
        first[0].save()
    again = tracking.make_loggers(config.output, run_dir)  # the resumed process: new trackers
    tracking.start(again, config, run_dir, resumed=True)  # parameters: logged once, by the first
    return first, again


def test_a_resumed_run_goes_on_in_the_same_mlflow_run(tmp_path):
    first, again = _started_and_resumed(tmp_path, "mlflow")
    assert again[0].run_id == first[0].run_id  # type: ignore[attr-defined]


def test_a_resumed_run_goes_on_in_the_csv_it_had(tmp_path):
    _, again = _started_and_resumed(tmp_path, "csv", {"epoch": 1, "val_aca": 0.5})
    tracking.log_epoch(again, {"epoch": 2, "val_aca": 0.75, "lr": 0.01})  # a column the first never wrote
    again[0].save()
    with (tmp_path / "run" / "csv" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["step"], r["val_aca"], r["lr"]) for r in rows] == [("1", "0.5", ""), ("2", "0.75", "0.01")]


def test_a_tracker_whose_package_is_missing_names_the_install(tmp_path, monkeypatch):
    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: None if name == "mlflow" else real(name))
    config = config_from_dict({"data": "cells", "out_dir": str(tmp_path), "logger": "csv,mlflow"})
    with pytest.raises(ConfigError, match=r"--logger mlflow needs the mlflow-skinny package: pip install "
                                          r"'celltune\[tracking\]'.* or leave mlflow out of --logger"):
        tracking.make_loggers(config.output, tmp_path)


@pytest.mark.slow
def test_a_run_that_fails_is_failed_in_mlflow_before_training_and_after_it(tiny_data, tmp_path, monkeypatch):
    """Before: left RUNNING (nothing closed it); after: FINISHED (Lightning closes its loggers as a success when
    training ends, before the best checkpoint is scored)."""
    from mlflow.tracking import MlflowClient

    from celltune.training import fit as fitting

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    config = quick_config(tiny_data, tmp_path / "runs", epochs=1, logger=["mlflow"], experiment="cells", bootstrap=0)
    for name in ("make_trainer", "finish_run"):  # before the first epoch; after the last
        with monkeypatch.context() as patched:
            patched.setattr(fitting, name, broken)
            with pytest.raises(RuntimeError, match="disk full"):
                fit(config.updated(name=name))
    client = MlflowClient(tracking_uri=tracking.tracking_uri(config.output))
    runs = client.search_runs([client.get_experiment_by_name("cells").experiment_id])
    assert sorted((r.info.run_name, r.info.status) for r in runs) == [("finish_run", "FAILED"),
                                                                      ("make_trainer", "FAILED")]
