"""Which settings of a search mattered: Optuna's fANOVA importance, on the completed trials' final scores or, where
the search pruned most of its trials, on the scores they had at the step most of them reached."""

from __future__ import annotations

import math

import optuna
from optuna.trial import FrozenTrial, TrialState


def importance(study: optuna.Study, *, folds: int = 1) -> tuple[dict[str, float] | None, str]:
    """({setting: share of the variance of the validation score it explains}, what the shares were computed on), or
    (None, why there are none). From the completed trials' final scores when there are 3 and they are at least half
    the trials that trained; otherwise from the scores the trials had at one step (an epoch, or a fold when trials
    are chosen on ``folds``), the step most of them reached, since a search on a short budget prunes most of its
    trials."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    step, reached = common_step(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    if len(complete) >= max(3, len(reached) / 2):  # a few completed trials see only the settings they differ in
        return _fanova(study, [(t, t.value) for t in complete],
                       f"the final validation scores of {len(complete)} completed trials")
    if len(reached) < 3:
        return None, (f"{len(complete)} completed trial(s) and no step reached by 3 trials: importance needs at "
                      "least 3")
    score = (f"the mean validation scores of folds 1 to {step}" if folds > 1 else
             f"the best validation scores after epoch {step}")
    return _fanova(study, [(t, t.intermediate_values[step]) for t in reached],
                   f"{score} of the {len(reached)} trials that reached it ({len(complete)} completed: too few to use "
                   "their final scores)")


def common_step(trials: list[FrozenTrial]) -> tuple[int, list[FrozenTrial]]:
    """The step (epoch or fold) the most ``trials`` reported a finite score at, the latest of equals, and those
    trials."""
    def scored(t: FrozenTrial, step: int) -> bool:
        return math.isfinite(t.intermediate_values.get(step, math.nan))

    steps = {s for t in trials for s in t.intermediate_values}
    if not steps:
        return 0, []
    step = max(steps, key=lambda s: (sum(scored(t, s) for t in trials), s))
    return step, [t for t in trials if scored(t, step)]


def _fanova(study: optuna.Study, scored: list[tuple[FrozenTrial, float | None]],
            basis: str) -> tuple[dict[str, float] | None, str]:
    """fANOVA on ``scored`` (trial, score), copied as completed trials into a study in memory."""
    if len({value for _, value in scored}) == 1:
        return None, f"{basis}: every trial scored the same"
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "a new study created in memory" is not news to a user
    try:
        view = optuna.create_study(direction=study.direction)
    finally:
        optuna.logging.set_verbosity(verbosity)
    for t, value in scored:
        view.add_trial(optuna.trial.create_trial(params=t.params, distributions=t.distributions, value=value))
    try:
        shares = optuna.importance.get_param_importances(
            view, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (RuntimeError, ValueError) as err:
        return None, f"not computed: {err}"
    if not shares:
        return None, f"{basis}: no setting differed between them"
    return {k: float(v) for k, v in shares.items()}, basis
