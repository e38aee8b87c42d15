"""The Optuna study behind ``celltune tune``: its storage (SQLite in the tune directory or any RDB), the sampler's
seed per process, the pruner (successive halving, after the recipes tried first), and trials left running by a
process that has ended."""

from __future__ import annotations

import logging
import os
import socket
import warnings
import zlib

import optuna
from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger(__name__)

FIRST_RUNG_EPOCHS = 2  # successive halving compares trials first after this many epochs ...
REDUCTION = 3  # ... keeps the best third of them (only the best while fewer than 6 reached it), then after 3x as many
HEARTBEAT_SECONDS, GRACE_SECONDS = 60, 300  # a trial whose process stopped beating this long is failed (any host)


class AfterStartup(optuna.pruners.BasePruner):
    """``wrapped`` (successive halving) for every trial but the first ``startup``: the recipes tried first (the
    product defaults, a recipe found by hand) run to their end and set the bar. The wrapped pruner still sees their
    reports, so it records their values at each rung for the trials after them."""

    def __init__(self, wrapped: optuna.pruners.BasePruner, startup: int) -> None:
        self.wrapped, self.startup = wrapped, startup

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        behind = self.wrapped.prune(study, trial)
        return behind and trial.number >= self.startup


def open_study(url: str, name: str, *, seed: int, startup: int) -> optuna.Study:
    """The study ``name`` in ``url``, created if new. The sampler is seeded with ``seed`` in the process that starts
    the search; a process that joins or resumes it later draws with a seed of its own (the same seed would draw the
    same recipes again), and with a constant liar so that processes working at once try different recipes."""
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    with warnings.catch_warnings():  # "experimental" in Optuna since 2.9; the heartbeat is what fails orphans
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_SECONDS,
                                             grace_period=GRACE_SECONDS)
        started = 0
        if name in optuna.study.get_all_study_names(storage):
            started = sum(t.state != TrialState.WAITING for t in optuna.load_study(study_name=name,
                                                                                   storage=storage).trials)
        own = seed if not started else zlib.crc32(f"{seed}-{started}-{socket.gethostname()}-{os.getpid()}".encode())
        sampler = optuna.samplers.TPESampler(seed=own, constant_liar=True)
    pruner = AfterStartup(optuna.pruners.SuccessiveHalvingPruner(min_resource=FIRST_RUNG_EPOCHS,
                                                                 reduction_factor=REDUCTION), startup=startup)
    return optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                               sampler=sampler, pruner=pruner)


def trial_seconds(trial: FrozenTrial) -> float | None:
    """Seconds a finished trial took (None while it runs)."""
    if trial.datetime_complete is None or trial.datetime_start is None:
        return None
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def spent_seconds(study: optuna.Study) -> float:
    """Seconds the study's finished trials took, all processes together."""
    return sum(trial_seconds(t) or 0.0 for t in study.get_trials(deepcopy=False))


def fail_orphans(study: optuna.Study) -> None:
    """Trials left running by a process of this machine that no longer exists (killed) are failed now, so the search
    goes on without them; those of other machines are failed by Optuna's heartbeat after ``GRACE_SECONDS``."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = trial.user_attrs.get("pid")
        if trial.user_attrs.get("host") != socket.gethostname() or pid is None or _alive(int(pid)):
            continue
        # Processes joining at the same moment both find the orphan: the first to fail it wins. Both may record the
        # error while it still runs, and skip_if_finished checks before it writes, so the other's tell can raise.
        try:
            study._storage.set_trial_user_attr(trial._trial_id, "error", f"interrupted: its process ({pid}) ended")
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        log.warning("trial %d was left running by process %s, which has ended: recorded as failed",
                    trial.number, pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
