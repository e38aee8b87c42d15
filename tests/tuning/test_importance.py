from __future__ import annotations

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from celltune.tuning.importance import common_step, importance

SPACE = {"lr": CategoricalDistribution([0.1, 0.01]), "wd": CategoricalDistribution([0.0, 1.0])}


def trial(lr: float, wd: float, curve: dict[int, float], *, complete: bool = False) -> optuna.trial.FrozenTrial:
    return create_trial(state=TrialState.COMPLETE if complete else TrialState.PRUNED, params={"lr": lr, "wd": wd},
                        distributions=SPACE, intermediate_values=curve,
                        value=curve[max(curve)] if complete else None)


def study_of(trials: list[optuna.trial.FrozenTrial]) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    study.add_trials(trials)
    return study


def test_the_common_step_is_the_one_most_trials_reached_and_the_latest_of_equals():
    # steps reached: 1 by four trials, 2 by three, 3 and 4 by one
    trials = [trial(0.1, 0, {1: .5, 2: .6}), trial(0.1, 0, {1: .5, 2: .6, 3: .7, 4: .8}, complete=True),
              trial(0.1, 0, {1: .5, 2: .6}), trial(0.1, 0, {1: .5})]
    step, reached = common_step(trials)
    assert step == 1 and reached == trials
    step, reached = common_step(trials[:3])  # 1 and 2 by three each: the later
    assert step == 2 and reached == trials[:3]
    assert common_step([]) == (0, [])


def test_with_most_trials_pruned_importance_compares_them_where_they_all_were():
    # The score after epoch 2 is set by lr alone (0.9 or 0.5 whatever wd is); one trial completed, four pruned.
    trials = [trial(0.1, 0.0, {1: .8, 2: .9, 3: .9}, complete=True), trial(0.1, 1.0, {1: .8, 2: .9}),
              trial(0.01, 0.0, {1: .4, 2: .5}), trial(0.01, 1.0, {1: .4, 2: .5}), trial(0.1, 0.0, {1: .8, 2: .9})]
    shares, basis = importance(study_of(trials))
    assert shares is not None and shares["lr"] > 0.9 > shares["wd"]
    assert basis == ("the best validation scores after epoch 2 of the 5 trials that reached it "
                     "(1 completed: too few to use their final scores)")


def test_three_completed_trials_are_compared_on_their_final_scores():
    # wd sets the final score, lr the score after epoch 1: the final scores are the ones used
    trials = [trial(0.1, 0.0, {1: .9, 2: .5}, complete=True), trial(0.01, 1.0, {1: .4, 2: .9}, complete=True),
              trial(0.1, 1.0, {1: .9, 2: .9}, complete=True), trial(0.01, 0.0, {1: .4, 2: .5}, complete=True)]
    shares, basis = importance(study_of(trials))
    assert shares is not None and shares["wd"] > 0.5 > shares["lr"]
    assert basis == "the final validation scores of 4 completed trials"


def test_three_completed_trials_among_many_pruned_are_too_few():
    # 3 of 7 trained trials completed: under half, so the 7 are compared after epoch 1, where lr decides
    trials = [trial(0.1, 0.0, {1: .9, 2: .5}, complete=True), trial(0.01, 1.0, {1: .4, 2: .9}, complete=True),
              trial(0.1, 1.0, {1: .9, 2: .9}, complete=True)] + [trial(lr, 0.0, {1: .9 if lr == 0.1 else .4})
                                                                  for lr in (0.1, 0.01, 0.1, 0.01)]
    shares, basis = importance(study_of(trials))
    assert shares is not None and shares["lr"] > 0.5 > shares["wd"]
    assert basis == ("the best validation scores after epoch 1 of the 7 trials that reached it "
                     "(3 completed: too few to use their final scores)")


def test_without_three_trials_at_one_step_there_is_no_importance_and_the_page_says_why():
    shares, basis = importance(study_of([trial(0.1, 0.0, {1: .9}, complete=True), trial(0.01, 0.0, {1: .4})]))
    assert shares is None
    assert basis == "1 completed trial(s) and no step reached by 3 trials: importance needs at least 3"


def test_trials_chosen_on_folds_are_compared_on_the_mean_of_their_first_folds():
    trials = [trial(0.1, 0.0, {1: .9, 2: .8}), trial(0.01, 0.0, {1: .5}), trial(0.1, 1.0, {1: .9})]
    shares, basis = importance(study_of(trials), folds=5)
    assert shares is not None and shares["lr"] > shares["wd"]
    assert basis.startswith("the mean validation scores of folds 1 to 1 of the 3 trials that reached it")


def test_trials_that_all_scored_the_same_rank_no_setting():
    shares, basis = importance(study_of([trial(0.1, 0.0, {1: .5}), trial(0.01, 1.0, {1: .5}),
                                         trial(0.1, 1.0, {1: .5})]))
    assert shares is None and basis.endswith(": every trial scored the same")
