from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta

import optuna
import pytest
from optuna.trial import TrialState

from celltune.config.recipes import load_config
from celltune.errors import ConfigError
from celltune.metrics.results import RunMetrics
from celltune.tuning.search import new_tune, read_settings, run_tune
from celltune.tuning.study import FIRST_RUNG_EPOCHS, spent_seconds

from conftest import png, quick_config

SPACE = """
options:
  lr: {choices: [0.01, 0.005, 1.0e-7]}
start_with:
  - {lr: 0.01}
  - {lr: 1.0e-7}
"""


def study_of(tune_dir) -> optuna.Study:
    settings = read_settings(tune_dir)
    return optuna.load_study(study_name=settings.study, storage=settings.storage)


@pytest.mark.slow
def test_a_trial_behind_is_pruned_a_failing_one_recorded_and_the_winner_scored_once_on_test(
        tiny_data, tmp_path, scored_by_lr, monkeypatch):
    from celltune.training import fit
    real_prepare = fit.prepare

    def prepare(config, **kwargs):
        if config.optim.lr == 0.005:
            raise RuntimeError("a crash in the middle of a trial")
        return real_prepare(config, **kwargs)

    monkeypatch.setattr(fit, "prepare", prepare)
    (tmp_path / "space.yaml").write_text(SPACE)
    base = quick_config(tiny_data, tmp_path, name="search", epochs=4, freeze_backbone=True, bootstrap=0)
    tune_dir = new_tune(base, space=tmp_path / "space.yaml", max_trials=4, folds=1)
    study = study_of(tune_dir)
    study.enqueue_trial({"lr": 1e-7})  # behind the first two at the first rung: pruned there
    study.enqueue_trial({"lr": 0.005})  # crashes
    run_tune(tune_dir)

    first, slow_start, behind, failed = study_of(tune_dir).trials
    # The recipes tried first run to their end, however far behind (the second scores 0.1 at every epoch).
    assert (first.state, slow_start.state) == (TrialState.COMPLETE, TrialState.COMPLETE)
    assert (behind.state, failed.state) == (TrialState.PRUNED, TrialState.FAIL)
    assert first.value == 0.9 and first.user_attrs["epochs"] == 4
    assert behind.user_attrs["pruned_after"] == FIRST_RUNG_EPOCHS == 2
    pruned_run = tune_dir / "trials" / "trial-0002"
    assert len((pruned_run / "history.csv").read_text().splitlines()) == 1 + 2  # stopped after epoch 2 of 4
    assert failed.user_attrs["error"] == "RuntimeError: a crash in the middle of a trial"
    # No trial saw the test split: each run was scored on validation.
    for trial in ("trial-0000", "trial-0001", "trial-0002"):
        metrics = RunMetrics.from_dict(json.loads((tune_dir / "trials" / trial / "metrics.json").read_text()))
        assert metrics.split == "val"
    winner = json.loads((tune_dir / "winner.json").read_text())
    assert winner["trial"] == 0 and winner["test"] is not None
    assert (tune_dir / "winner" / "metrics_test.json").is_file()
    for name, value in winner["test"].items():
        assert winner["overstated_by"][name] == pytest.approx(winner["val"][name] - value)
    best = load_config(tune_dir / "best.yaml")
    trained = load_config(tune_dir / "trials" / "trial-0000" / "config.yaml")
    # A trial's report leaves out Grad-CAM; the winner's is drawn again with it, and the recipe handed on has it.
    assert not trained.eval.heatmaps and "Grad-CAM left out of this run" in (
        tune_dir / "trials" / "trial-0001" / "report.html").read_text()
    assert '<div class="cams">' in (tune_dir / "trials" / "trial-0000" / "report.html").read_text()
    assert best == trained.updated(name=None, out_dir="runs", time_budget=None, heatmaps=True)
    assert best.optim.lr == 0.01 and best.optim.epochs == 4
    page = (tune_dir / "tune.html").read_text()
    assert "pruned after epoch 2" in page and "failed: RuntimeError: a crash" in page and "<img" in page
    summary = json.loads((tune_dir / "tune.json").read_text())
    assert [r["state"] for r in summary["trials"]] == ["complete", "complete", "pruned", "fail"]
    assert summary["trials"][2]["curve"] == {"1": 0.1, "2": 0.1}
    # Two trials completed, too few for importance from final scores; three reached epoch 2, where lr is compared.
    assert summary["importance"] == {"lr": pytest.approx(1.0)}
    assert summary["importance_basis"].startswith("the best validation scores after epoch 2 of the 3 trials")

    # A finished search resumed has nothing left to do: the winner is not scored on test again.
    stamp = (tune_dir / "winner" / "metrics_test.json").stat().st_mtime_ns
    run_tune(tune_dir)
    assert (tune_dir / "winner" / "metrics_test.json").stat().st_mtime_ns == stamp
    assert len(study_of(tune_dir).trials) == 4


@pytest.mark.slow
def test_three_failures_in_a_row_stop_the_search_with_the_error_and_the_way_on(tiny_data, tmp_path, monkeypatch):
    from celltune.training import fit
    def prepare(config, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(fit, "prepare", prepare)
    (tmp_path / "space.yaml").write_text("options:\n  lr: {choices: [0.01, 0.001]}\n")
    tune_dir = new_tune(quick_config(tiny_data, tmp_path, name="broken"), space=tmp_path / "space.yaml",
                        max_trials=10, folds=1)
    with pytest.raises(ConfigError, match=r"3 trials in a row failed, the last with: RuntimeError: out of memory; "
                                          r".* then `celltune tune --resume "):
        run_tune(tune_dir)
    assert len(study_of(tune_dir).trials) == 3


def test_a_resumed_search_counts_the_time_its_trials_already_took():
    study = optuna.create_study()
    start = datetime(2026, 12, 6, 9, 0)
    for minutes, state in ((10, TrialState.COMPLETE), (25, TrialState.PRUNED), (3, TrialState.FAIL)):
        study.add_trial(optuna.trial.FrozenTrial(
            number=0, trial_id=0, state=state, value=0.5 if state == TrialState.COMPLETE else None,
            datetime_start=start, datetime_complete=start + timedelta(minutes=minutes), params={}, distributions={},
            user_attrs={}, system_attrs={}, intermediate_values={1: 0.5} if state == TrialState.PRUNED else {}))
    assert spent_seconds(study) == (10 + 25 + 3) * 60


def _write(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_trials_whose_budget_holds_no_epoch_are_pruned_and_the_search_stops_saying_what_to_give(
        tiny_data, tmp_path, monkeypatch):
    from celltune.errors import TooShortError
    from celltune.training import fit
    from celltune.tuning.report import why_stopped

    budgets = []

    def prepare(config, **kwargs):
        budgets.append(config.optim.time_budget)
        raise TooShortError(f"--time-budget {config.optim.time_budget}: not one epoch fits; give at least 1:35",
                            needed_seconds=95.0)

    monkeypatch.setattr(fit, "prepare", prepare)
    (tmp_path / "space.yaml").write_text(SPACE)
    tune_dir = new_tune(quick_config(tiny_data, tmp_path, name="short"), space=tmp_path / "space.yaml",
                        trial_budget="90s", max_trials=10, folds=1)
    with pytest.raises(ConfigError, match=r"3 trials in a row had no time for one epoch in their 95 s, the last: "
                       r"--time-budget 95.0s: not one epoch fits; give at least 1:35; give a longer --trial-budget"):
        run_tune(tune_dir)
    assert budgets == ["90.0s", "95.0s", "95.0s"]  # after the first, trials get what one turned out to need
    trials = study_of(tune_dir).trials
    assert [t.state for t in trials] == [TrialState.PRUNED] * 3  # not failures: the budget, not the recipe
    assert why_stopped(trials[0]) == "pruned before training: --time-budget 90.0s: not one epoch fits; give at " \
        "least 1:35"
    assert not (tune_dir / "trials").exists() or not any((tune_dir / "trials").iterdir())


def test_a_search_whose_time_left_holds_no_trial_it_needs_finishes_instead_of_failing(tiny_data, tmp_path,
                                                                                      monkeypatch):
    from celltune.errors import TooShortError
    from celltune.training import fit

    def prepare(config, **kwargs):
        raise TooShortError(f"--time-budget {config.optim.time_budget}: not one epoch fits", needed_seconds=200.0)

    monkeypatch.setattr(fit, "prepare", prepare)
    (tmp_path / "space.yaml").write_text(SPACE)
    config = quick_config(tiny_data, tmp_path, name="ending").updated(time_budget="4m")
    tune_dir = new_tune(config, space=tmp_path / "space.yaml", trial_budget="90s", folds=1)
    run_tune(tune_dir)  # 4 minutes less 60 s to finish leave under the 200 s a trial needs: no second try
    assert [t.state for t in study_of(tune_dir).trials if t.state != TrialState.WAITING] == [TrialState.PRUNED]
    assert json.loads((tune_dir / "tune.json").read_text())["winner"] is None


def test_a_budget_too_short_for_one_trial_is_refused_before_anything_is_written(tiny_data, tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    config = quick_config(tiny_data, tmp_path, name="hurried").updated(time_budget="2m")
    with pytest.raises(ConfigError, match=r"--time-budget 2m leaves no time for a trial: .* at least 3m"):
        new_tune(config, space=tmp_path / "space.yaml")
    assert not (tmp_path / "hurried").exists()
    with pytest.raises(ConfigError, match=r"--time-budget 3m leaves no time for a trial on 5 folds \(a run of 60 s "
                                          r"or more each\): give at least 7m, or --folds 1"):
        new_tune(config.updated(time_budget="3m"), space=tmp_path / "space.yaml")  # 18 validation images: folds
    assert not (tmp_path / "hurried").exists()
    assert new_tune(config.updated(time_budget="3m"), space=tmp_path / "space.yaml", folds=1).is_dir()


def test_a_search_needs_a_budget_or_a_trial_count(tiny_data, tmp_path):
    with pytest.raises(ConfigError, match=r"give --time-budget .* or --trials N"):
        new_tune(quick_config(tiny_data, tmp_path))


def _tune(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "celltune", "-q", "tune", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_a_killed_search_loses_only_its_trial_in_flight_and_two_processes_finish_it(tiny_data, tmp_path):
    (tmp_path / "space.yaml").write_text("options:\n  lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n"
                                         "start_with:\n  - {}\n")
    tune_dir = tmp_path / "out" / "shared"
    first = _tune("--data", str(tiny_data), "--space", str(tmp_path / "space.yaml"), "--trials", "6",
                  "--model", "mobilenet_v2", "--no-pretrained", "--image-size", "32", "--epochs", "2",
                  "--batch-size", "8", "--max-steps-per-epoch", "2", "--num-workers", "0", "--accelerator", "cpu",
                  "--bootstrap", "0", "--out-dir", str(tmp_path / "out"), "--name", "shared", "--folds", "1")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill it in the middle of its second trial
        if (tune_dir / "trials" / "trial-0001" / "config.yaml").is_file():
            break
        time.sleep(0.1)
    else:
        first.kill()
        pytest.fail(f"the search never reached its second trial:\n{first.communicate()[0]}")
    first.send_signal(signal.SIGKILL)
    first.wait()

    joined = [_tune("--resume", str(tune_dir)) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in joined]
    assert [p.returncode for p in joined] == [0, 0], outputs
    trials = study_of(tune_dir).trials
    assert trials[0].state == TrialState.COMPLETE and trials[0].user_attrs["pid"] == first.pid
    assert trials[1].state == TrialState.FAIL
    assert trials[1].user_attrs["error"] == f"interrupted: its process ({first.pid}) ended"
    rest = trials[2:]
    # --trials 6 in all; two processes that check at the same instant may each start one more.
    assert 4 <= len(rest) <= 5 and all(t.state == TrialState.COMPLETE for t in rest)
    assert {t.user_attrs["pid"] for t in rest} == {p.pid for p in joined}  # both worked on the one study
    assert len({t.user_attrs["run_dir"] for t in trials}) == len(trials)
    assert all("winner: trial" in out for out in outputs)
    assert (tune_dir / "tune.html").is_file() and (tune_dir / "best.yaml").is_file()


def test_a_search_on_data_with_no_validation_to_spare_is_refused_with_the_way_on(tmp_path):
    root = tmp_path / "d"
    for slide in (0, 1):
        for cls in ("stroma", "tumour"):
            for i in range(4):
                png(root / cls / f"slide{slide}_{cls}_{i}.png", value=40 * slide + 90 * (cls == "tumour") + i)
    with pytest.raises(ConfigError, match=r"no validation images .* a search chooses on validation; give finer "
                       r"groups .*`celltune train`, which runs without validation"):
        new_tune(quick_config(root, tmp_path, groups=r"(slide\d)_"), max_trials=2)


def test_two_joiners_failing_the_same_orphan_at_once_both_go_on(tmp_path, monkeypatch):
    """The second joiner still sees the orphan running (it listed the trials first): no error, one record."""
    import socket

    from celltune.tuning.study import fail_orphans

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}")
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    trial = study.ask()
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", ended.pid)
    stale = study.get_trials(deepcopy=True, states=(TrialState.RUNNING,))
    fail_orphans(study)  # the first joiner
    monkeypatch.setattr(study, "get_trials", lambda **_: stale)
    fail_orphans(study)  # the second, with its view from before the first's update
    (recorded,) = optuna.load_study(study_name=study.study_name, storage=f"sqlite:///{tmp_path / 'study.db'}").trials
    assert recorded.state == TrialState.FAIL
    assert recorded.user_attrs["error"] == f"interrupted: its process ({ended.pid}) ended"
