"""The time budget: duration parsing, the planner's arithmetic on fake timings, the keeper's decisions on a fake
clock, and a real run that falls behind its plan."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from types import SimpleNamespace

import lightning as L
import pytest

from celltune.cli.output import print_run
from celltune.errors import ConfigError
from celltune.training import budget
from celltune.training.budget import (
    HEATMAP_SECONDS,
    MARGIN,
    MIN_EPOCHS,
    REPORT_SECONDS,
    BudgetKeeper,
    Plan,
    Speed,
    Workload,
    clock,
    larger_sizes,
    plan_run,
)
from celltune.training.fit import prepare, run_prepared

from conftest import FakeClock, quick_config

WORK = Workload(train_images=1000, val_images=200, test_images=400)
FAST = Speed(96, train_images_per_second=100.0, eval_images_per_second=400.0)


def test_durations_print():
    assert (clock(75), clock(1234.4), clock(3725), clock(-3)) == ("1:15", "20:34", "1:02:05", "0:00")


def test_plan_fills_the_budget_by_hand():
    # An epoch: 1000 / 100 + 200 / 400 = 10.5 s. Finishing: 400 / 400 + 6 (the report) + 4 (Grad-CAM) = 11 s.
    # 600 s less 3% and 30 s spent leaves 552 s; (552 - 11) / 10.5 = 51.52 -> 51 epochs.
    assert (REPORT_SECONDS, HEATMAP_SECONDS) == (6.0, 4.0)
    plan = plan_run(budget=600, spent=30, speeds=[FAST], work=WORK, batch_size=64, size_fixed=False)
    assert (plan.epochs, plan.image_size, plan.batch_size) == (51, 96, 64)
    assert plan.epoch_seconds == pytest.approx(10.5) and plan.finish_seconds == pytest.approx(11.0)
    whole = plan.spent_seconds + plan.epochs * plan.epoch_seconds + plan.finish_seconds
    assert whole <= 600 * (1 - MARGIN) < whole + plan.epoch_seconds  # fits, and one more epoch would not


def test_plan_counts_ema_validation_and_tta_views():
    work = Workload(train_images=1000, val_images=200, test_images=400, val_passes=2, test_views=8)
    plan = plan_run(budget=600, spent=30, speeds=[FAST], work=work, batch_size=64, size_fixed=False)
    # 10 + 2 * 0.5 = 11 s an epoch; 8 * 400 / 400 + 6 + 4 = 18 s to finish; (552 - 18) / 11 = 48.5
    assert (plan.epoch_seconds, plan.finish_seconds, plan.epochs) == (11.0, 18.0, 48)
    # Without Grad-CAM (--no-heatmaps, a search's trials) 4 s less: (552 - 14) / 11 = 48.9
    bare = plan_run(budget=600, spent=30, speeds=[FAST], work=replace(work, heatmaps=False), batch_size=64,
                    size_fixed=False)
    assert (bare.finish_seconds, bare.epochs) == (14.0, 48)


def test_plan_respects_the_epoch_cap():
    assert plan_run(budget=600, spent=30, speeds=[FAST], work=WORK, batch_size=64, size_fixed=False,
                    max_epochs=12).epochs == 12
    assert plan_run(budget=1e6, spent=0, speeds=[FAST], work=WORK, batch_size=64, size_fixed=False).epochs == \
        budget.MAX_EPOCHS


def test_tight_budget_falls_back_to_smaller_images_unless_the_size_was_given():
    slow = Speed(128, train_images_per_second=10.0, eval_images_per_second=40.0)  # 105 s an epoch at 128 px
    speeds = [slow, slow.scaled(96), slow.scaled(64)]
    assert speeds[1].train_images_per_second == pytest.approx(10 * (128 / 96) ** 2) and not speeds[1].measured
    plan = plan_run(budget=580, spent=30, speeds=speeds, work=WORK, batch_size=64, size_fixed=False)
    # 580 s less 3% and 30 s spent leaves 532.6 s. 128 px: 10 s to score, 10 to report: (532.6 - 20) / 105 = 4.88
    # -> 4 < MIN_EPOCHS; 96 px: 56.25 + 2.81 = 59.06 s an epoch, (532.6 - 5.6 - 10) / 59.06 = 8.75 -> 8
    assert (plan.image_size, plan.epochs) == (96, 8) and plan.epochs >= MIN_EPOCHS
    assert "smaller images" in plan.reason
    fixed = plan_run(budget=580, spent=30, speeds=speeds, work=WORK, batch_size=64, size_fixed=True)
    assert (fixed.image_size, fixed.epochs) == (128, 4)


def test_sizes_to_grow_to_go_up_by_32_to_half_as_large_again_and_never_past_the_native_size():
    assert budget.GROWTH == 1.5
    assert larger_sizes(64, largest=224) == [96]
    assert larger_sizes(96, largest=224) == [128]  # 144 is not a step of 32 above 96
    assert larger_sizes(128, largest=224) == [160, 192]
    assert larger_sizes(192, largest=224) == [224]
    assert larger_sizes(224, largest=224) == []


SMALL = Speed(64, train_images_per_second=225.0, eval_images_per_second=900.0)


def test_a_budget_with_time_over_after_all_epochs_grows_the_image_while_half_the_epochs_still_fit():
    assert (budget.MAX_EPOCHS, budget.GROWN_EPOCHS) == (100, 50)
    larger = [SMALL.scaled(96)]  # 225 * (64/96)^2 = 100 and 400 images/s: FAST's 10.5 s an epoch, 11 s to finish
    assert larger[0].train_images_per_second == pytest.approx(100.0)
    # At 64 px an epoch is 1000 / 225 + 200 / 900 = 4.667 s and finishing 400 / 900 + 10 = 10.44 s.
    # 540 s: 0.97 * 540 = 523.8 s; 64 px holds (523.8 - 10.44) / 4.667 = 110 -> all 100 epochs; 96 px holds
    # (523.8 - 11) / 10.5 = 48.8 -> 48, fewer than 50: the image stays at 64 px.
    kept = plan_run(budget=540, spent=0, speeds=[SMALL], work=WORK, batch_size=64, size_fixed=False, larger=larger)
    assert (kept.image_size, kept.epochs) == (64, 100)
    # 600 s: 582 s; 96 px holds (582 - 11) / 10.5 = 54.4 -> 54 epochs, at least 50: grown.
    grown = plan_run(budget=600, spent=0, speeds=[SMALL], work=WORK, batch_size=64, size_fixed=False, larger=larger)
    assert (grown.image_size, grown.epochs) == (96, 54) and "larger images" in grown.reason
    assert plan_run(budget=1e6, spent=0, speeds=[SMALL], work=WORK, batch_size=64, size_fixed=False,
                    larger=larger).epochs == 100
    # A size or an epoch count the user gave is kept; and a budget that does not hold all 100 epochs never grows.
    assert plan_run(budget=600, spent=0, speeds=[SMALL], work=WORK, batch_size=64, size_fixed=True,
                    larger=larger).image_size == 64
    assert plan_run(budget=600, spent=0, speeds=[SMALL], work=WORK, batch_size=64, size_fixed=False, larger=larger,
                    max_epochs=100).image_size == 64
    short = plan_run(budget=400, spent=0, speeds=[SMALL], work=WORK, batch_size=64, size_fixed=False, larger=larger)
    assert (short.image_size, short.epochs) == (64, 80)  # (388 - 10.44) / 4.667 = 80.9


def test_a_budget_too_small_for_one_epoch_says_what_would_do():
    # 30 spent + 11 finishing + 10.5 an epoch = 51.5 s, over 0.97: 53.1 s, and a second more
    with pytest.raises(ConfigError, match=r"not one epoch fits \(one takes ~10 s at 96 px.* give at least 0:54"):
        plan_run(budget=50, spent=30, speeds=[FAST], work=WORK, batch_size=64, size_fixed=True)


@pytest.fixture
def fake_clock(monkeypatch):
    clock_ = FakeClock()
    monkeypatch.setattr(budget.time, "monotonic", clock_)
    return clock_


def fake_trainer(*, epoch: int, max_epochs: int, batches: int = 10):
    return SimpleNamespace(sanity_checking=False, current_epoch=epoch, num_training_batches=batches,
                           should_stop=False, fit_loop=SimpleNamespace(max_epochs=max_epochs))


def keeper_after_epoch(clock_: FakeClock, *, epoch: int, planned: int, epoch_seconds: float, left: float,
                       max_epochs: int = 100):
    """A keeper whose deadline is ``left`` seconds after an epoch of ``epoch_seconds`` (the last 2 validating)."""
    plan = Plan(budget_seconds=1000, spent_seconds=0, image_size=96, batch_size=64, epochs=planned,
                epoch_seconds=10.0, finish_seconds=20.0, reason="test")
    keeper = BudgetKeeper(plan, deadline=clock_.now + epoch_seconds + left, max_epochs=max_epochs)
    trainer, relaid = fake_trainer(epoch=epoch, max_epochs=planned), []
    module = SimpleNamespace(relay_schedule=relaid.append)
    keeper.on_train_epoch_start(trainer, module)
    clock_.now += epoch_seconds - 2
    keeper.on_validation_start(trainer, module)
    clock_.now += 2
    keeper.on_validation_end(trainer, module)
    return keeper, trainer, relaid


def test_keeper_cuts_a_run_that_falls_behind(fake_clock):
    # Epoch 3 took 15 s (planned 10); 100 s left less 20 to finish hold 5 more: 8 epochs, not 20.
    keeper, trainer, relaid = keeper_after_epoch(fake_clock, epoch=2, planned=20, epoch_seconds=15, left=100)
    assert trainer.fit_loop.max_epochs == 8 and relaid == [8] and not trainer.should_stop
    assert keeper.plan.adjustments[0]["epochs"] == 8


def test_keeper_judges_by_the_recent_mean_epoch_so_one_slow_epoch_does_not_cut_alone(fake_clock):
    plan = Plan(1000, 0, 96, 64, 10, 10.0, 20.0, "test")
    keeper = BudgetKeeper(plan, deadline=fake_clock.now + 140, max_epochs=10)
    trainer, module = fake_trainer(epoch=0, max_epochs=10), SimpleNamespace(relay_schedule=lambda epochs: None)
    for epoch, seconds in enumerate([10, 10, 16, 40]):
        trainer.current_epoch = epoch
        keeper.on_train_epoch_start(trainer, module)
        keeper.on_validation_start(trainer, module)
        fake_clock.now += seconds
        keeper.on_validation_end(trainer, module)
        if epoch == 2:
            # 104 s left less 20 to finish: 7 more at the mean of 12 s (10 in all, as planned); 5 at the last 16 s
            assert trainer.fit_loop.max_epochs == 10 and keeper.plan.adjustments == []
    # epoch 4 took 40 s: the mean of the last three is (10 + 16 + 40) / 3 = 22 s and (64 - 20) / 22 leaves room for 2
    assert trainer.fit_loop.max_epochs == 6 and keeper.plan.adjustments[-1]["epoch_seconds"] == 22.0


def test_keeper_wins_back_the_epochs_a_busy_spell_cut_up_to_the_plan(fake_clock):
    # Planned 20 epochs of 10 s with 20 s to finish in a 230 s budget; the first two take 50 s (a busy machine).
    plan = Plan(1000, 0, 96, 64, 20, 10.0, 20.0, "test")
    keeper = BudgetKeeper(plan, deadline=fake_clock.now + 230, max_epochs=100)
    trainer, relaid = fake_trainer(epoch=0, max_epochs=20), []
    module = SimpleNamespace(relay_schedule=relaid.append)
    ends = []
    for epoch, seconds in enumerate([50, 50, 10, 10, 10, 10]):
        trainer.current_epoch = epoch
        keeper.on_train_epoch_start(trainer, module)
        keeper.on_validation_start(trainer, module)
        fake_clock.now += seconds
        keeper.on_validation_end(trainer, module)
        ends.append(trainer.fit_loop.max_epochs)
    # 1: (180 - 20) / 50 = 3 more: cut to 4. 2: (130 - 20) / 50 = 2 more: 4 stays. 3: (120 - 20) / 36.7 = 2 more
    # and 1 in hand: 4 stays. 4: (110 - 20) / 23.3 = 3 more, 1 in hand: 6, past the first half of 4, back towards
    # the plan. 5: (100 - 20) / 10 = 8 more, 1 in hand: 12. 6: (90 - 20) / 10 = 7 more, 1 in hand: 12 stays.
    assert ends == [4, 4, 4, 6, 12, 12]
    assert relaid == [4, 6, 12] and not trainer.should_stop


def test_keeper_wins_back_no_more_than_the_plan_late_in_a_run(fake_clock):
    plan = Plan(1000, 0, 96, 64, 8, 10.0, 20.0, "test")
    keeper = BudgetKeeper(plan, deadline=fake_clock.now + 500, max_epochs=100)
    trainer = fake_trainer(epoch=4, max_epochs=6)  # cut to 6 earlier; epoch 5 is past its first half
    module = SimpleNamespace(relay_schedule=lambda epochs: None)
    keeper.on_train_epoch_start(trainer, module)
    keeper.on_validation_start(trainer, module)
    fake_clock.now += 10
    keeper.on_validation_end(trainer, module)
    assert trainer.fit_loop.max_epochs == 8  # (490 - 20) / 10 = 47 would fit: only the 8 planned come back


def test_keeper_stops_when_no_epoch_fits_any_more(fake_clock):
    _, trainer, relaid = keeper_after_epoch(fake_clock, epoch=4, planned=20, epoch_seconds=15, left=30)
    assert trainer.fit_loop.max_epochs == 5 and trainer.should_stop and relaid == []


def test_keeper_grows_the_run_in_its_first_half_only(fake_clock):
    _, trainer, relaid = keeper_after_epoch(fake_clock, epoch=0, planned=5, epoch_seconds=5, left=100)
    assert trainer.fit_loop.max_epochs == 1 + 16 and relaid == [17]  # (100 - 20) / 5
    _, trainer, relaid = keeper_after_epoch(fake_clock, epoch=0, planned=5, epoch_seconds=5, left=100, max_epochs=9)
    assert trainer.fit_loop.max_epochs == 9
    _, trainer, relaid = keeper_after_epoch(fake_clock, epoch=0, planned=1, epoch_seconds=5, left=100, max_epochs=3)
    assert trainer.fit_loop.max_epochs == 3 and relaid == [3]  # a one-epoch plan grows after its epoch too
    _, trainer, relaid = keeper_after_epoch(fake_clock, epoch=1, planned=5, epoch_seconds=5, left=100)
    assert trainer.fit_loop.max_epochs == 2 + 16 - 1 and relaid == [17]  # epoch 2 of 5: the first half, 1 in hand
    _, trainer, relaid = keeper_after_epoch(fake_clock, epoch=1, planned=5, epoch_seconds=20, left=100)
    assert trainer.fit_loop.max_epochs == 5 and relaid == []  # (100 - 20) / 20 = 4 more: 6, the one over 5 in hand
    _, trainer, relaid = keeper_after_epoch(fake_clock, epoch=2, planned=5, epoch_seconds=5, left=100)
    assert trainer.fit_loop.max_epochs == 5 and relaid == []  # ahead later on: the schedule stays as laid out


def test_keeper_stops_inside_an_epoch_when_one_more_validation_would_not_fit(fake_clock):
    keeper, trainer, _ = keeper_after_epoch(fake_clock, epoch=0, planned=2, epoch_seconds=10, left=30)
    assert keeper.val_seconds == 2 and trainer.fit_loop.max_epochs == 2  # (30 - 20) / 10: one more, as planned
    trainer.current_epoch = 1
    keeper.on_train_batch_end(trainer, None, None, None, 3)
    assert not trainer.should_stop  # 30 s left: room for validation (2) and finishing (20)
    fake_clock.now = keeper.deadline - 21.5
    keeper.on_train_batch_end(trainer, None, None, None, trainer.num_training_batches - 1)
    assert not trainer.should_stop  # the epoch's last batch: its validation comes anyway
    keeper.on_train_batch_end(trainer, None, None, None, 4)
    assert trainer.should_stop and keeper.plan.adjustments[-1]["stopped_at_batch"] == 5


def test_keeper_never_stops_before_a_first_checkpoint(fake_clock):
    plan = Plan(1000, 0, 96, 64, 3, 10.0, 20.0, "test")
    keeper = BudgetKeeper(plan, deadline=fake_clock.now + 5, max_epochs=100)
    trainer = fake_trainer(epoch=0, max_epochs=3)
    keeper.on_train_batch_end(trainer, None, None, None, 0)
    assert not trainer.should_stop and math.isclose(keeper.left(), 5)


class Busy(L.Callback):
    """Every training batch after the plan takes ``seconds`` longer than the probe measured: a machine gone busy."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        time.sleep(self.seconds)


@pytest.mark.slow
def test_a_run_that_falls_behind_its_plan_cuts_epochs_and_ends_in_time_with_a_report(tiny_data, tmp_path, capsys):
    started = time.monotonic()
    run = prepare(quick_config(tiny_data, tmp_path, time_budget="40s", epochs=30, ema=0.9, bootstrap=0),
                  started=started)
    planned = json.loads((run.run_dir / "plan.json").read_text())
    assert planned["epochs"] == run.config.optim.epochs == run.trainer.max_epochs
    assert planned["probe"][0]["train_images_per_second"] > 0 and planned["epoch_seconds"] > 0
    run.trainer.callbacks.insert(0, Busy(1.0))  # 2 batches an epoch: each epoch 2 s longer than planned
    run_prepared(run)
    elapsed = time.monotonic() - started
    kept = json.loads((run.run_dir / "plan.json").read_text())
    assert kept["adjustments"] and kept["epochs_run"] < planned["epochs"]
    assert elapsed <= 40 and kept["within_budget"] and kept["finished_seconds"] <= 40
    assert all((run.run_dir / name).is_file() for name in ("best.pt", "metrics.json", "report.html"))
    print_run(run.run_dir)
    assert f"time budget 0:40: {kept['epochs_run']} of {planned['epochs']} planned epochs" in capsys.readouterr().out
