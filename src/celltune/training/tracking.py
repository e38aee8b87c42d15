"""Runs beside a lab's other experiments (``--logger csv,tensorboard,mlflow``): Lightning's loggers get the config as
parameters, each epoch's history row, the scored split's headline numbers with their bootstrap intervals and, for
MLflow, report.html and best.pt as artifacts. The run directory stays the record; the trackers get copies."""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger

from celltune.config import OutputConfig, TrainConfig
from celltune.errors import ConfigError
from celltune.metrics.results import RunMetrics
from celltune.reports.run_files import write_json

log = logging.getLogger(__name__)

TRACKING = "tracking.json"  # {"mlflow_run_id", "tracking_uri"}: a resumed run goes on in the same MLflow run
FOLDERS = ("csv", "tensorboard")  # what the file loggers write inside the run directory
ARTIFACTS = ("report.html", "best.pt", "metrics.json", "config.yaml")  # what MLflow keeps a copy of


def _needs(module: str, package: str, flag: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"--logger {flag} needs the {package} package: pip install 'celltune[tracking]' (or "
                          f"pip install {package}), or leave {flag} out of --logger")


def _csv(output: OutputConfig, run_dir: Path) -> Logger:
    return CSVLogger(save_dir=run_dir, name=FOLDERS[0], version="")  # RUN/csv/metrics.csv, hparams.yaml


def _tensorboard(output: OutputConfig, run_dir: Path) -> Logger:
    _needs("tensorboard", "tensorboard", "tensorboard")
    return TensorBoardLogger(save_dir=run_dir, name=FOLDERS[1], version="", default_hp_metric=False)


def tracking_uri(output: OutputConfig) -> str:
    """The MLflow store: ``--tracking-uri``, else ``mlflow.db`` (SQLite) in the runs' parent folder, which
    ``mlflow ui --backend-store-uri sqlite:///OUT_DIR/mlflow.db`` shows. (MLflow has retired its ``mlruns/`` file
    store: it refuses it unless told otherwise.)"""
    return output.tracking_uri or f"sqlite:///{Path(output.out_dir).resolve() / 'mlflow.db'}"


def _artifacts(output: OutputConfig) -> str | None:
    """Where a new experiment keeps its files: beside the local store; a server's own place for a server's."""
    return None if output.tracking_uri else str(Path(output.out_dir).resolve() / "mlartifacts")


def _mlflow(output: OutputConfig, run_dir: Path) -> Logger:
    _needs("mlflow", "mlflow-skinny", "mlflow")
    if not output.tracking_uri:
        _needs("sqlalchemy", "sqlalchemy", "mlflow")  # the local SQLite store
    earlier = json.loads((run_dir / TRACKING).read_text()) if (run_dir / TRACKING).is_file() else {}
    return MLFlowLogger(experiment_name=output.experiment, run_name=run_dir.name, tracking_uri=tracking_uri(output),
                        artifact_location=_artifacts(output), run_id=earlier.get("mlflow_run_id"))


_MAKERS: dict[str, Callable[[OutputConfig, Path], Logger]] = {
    "csv": _csv, "tensorboard": _tensorboard, "mlflow": _mlflow}


def make_loggers(output: OutputConfig, run_dir: Path) -> list[Logger]:
    """The trackers ``--logger`` names, each once, writing under ``run_dir`` (MLflow: to its store)."""
    return [_MAKERS[name](output, run_dir) for name in dict.fromkeys(output.logger or [])]


def parameters(config: TrainConfig) -> dict[str, Any]:
    """The config as flat parameters: ``optim.lr``, ``data.image_size``, ... (lists as comma-separated text)."""
    return {f"{section}.{name}": ",".join(map(str, value)) if isinstance(value, list) else value
            for section, values in config.to_dict().items() for name, value in values.items()}


def start(loggers: Sequence[Logger], config: TrainConfig, run_dir: Path, *, resumed: bool) -> None:
    """Before the first epoch (rank 0): the config as parameters, and MLflow's run id kept for ``--resume``."""
    for logger in loggers:
        if isinstance(logger, CSVLogger) and resumed:
            _keep_earlier_rows(logger)
        if isinstance(logger, MLFlowLogger):
            uri = tracking_uri(config.output)
            write_json(run_dir / TRACKING, {"mlflow_run_id": logger.run_id, "tracking_uri": uri})
            log.info("MLflow run %s in %s", logger.run_id, uri)
        if not resumed:  # MLflow's parameters cannot change, and a resumed run's are the same
            logger.log_hyperparams(parameters(config))


@contextmanager
def failed_on_error(loggers: Sequence[Logger]) -> Iterator[None]:
    """Trackers closed as failed when what runs inside fails: an MLflow run stays RUNNING otherwise (a failure
    between its start and the first epoch), or reads FINISHED (Lightning closes the trackers as a success when
    training ends, before the best checkpoint is scored and the report written)."""
    try:
        yield
    except BaseException:
        for logger in loggers:
            logger.finalize("failed")
        raise


def log_epoch(loggers: Sequence[Logger], row: dict[str, float]) -> None:
    """One epoch's history row, at step = the epoch (1-based)."""
    for logger in loggers:
        logger.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))


def _keep_earlier_rows(logger: CSVLogger) -> None:
    """A resumed run's metrics.csv goes on from the epochs it holds: Lightning's CSV writer deletes the file it finds
    when it starts (it warns that it will)."""
    path = Path(logger.log_dir) / "metrics.csv"
    earlier = path.read_bytes() if path.is_file() else None
    logger.experiment  # noqa: B018 (starting the writer is what deletes the file)
    if earlier is not None:
        path.write_bytes(earlier)
        _columns_written_elsewhere(logger)


def _columns_written_elsewhere(logger: CSVLogger) -> None:
    """Lightning's CSV writer, given a row with columns new to it, rewrites metrics.csv under the columns it has seen
    itself. Under ddp_spawn the epochs were written by rank 0's process, and a resumed run's by the process before:
    this one never saw their columns (the rewrite failed on them), so they are taken from the file's header."""
    writer = logger.experiment
    path = Path(writer.metrics_file_path)
    if path.is_file():
        with path.open(newline="") as f:
            header = next(csv.reader(f), [])
        writer.metrics_keys = sorted(set(writer.metrics_keys) | set(header))


def finish(loggers: Sequence[Logger], run_dir: Path, metrics: RunMetrics) -> None:
    """After scoring (rank 0): the scored split's headline numbers and intervals (what metrics.json holds), MLflow's
    artifacts; then flushed."""
    result, split = metrics.result, metrics.split
    final = {**result.tracked(prefix=split), **result.tracked_intervals(prefix=split)}
    final = {k: float(v) for k, v in final.items() if v is not None}
    for logger in loggers:
        if isinstance(logger, CSVLogger):
            _columns_written_elsewhere(logger)
        logger.log_metrics(final, step=metrics.epochs_run)
        if isinstance(logger, MLFlowLogger):
            for name in ARTIFACTS:
                if (run_dir / name).is_file():
                    logger.experiment.log_artifact(logger.run_id, str(run_dir / name))
        logger.finalize("success")
