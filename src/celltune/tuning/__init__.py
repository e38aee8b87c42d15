"""``celltune tune``: the search space (space.yaml, read and sampled), the Optuna study that processes share
(study), the search with its pruning by successive halving (search), trials chosen on folds where the data is
small (folds), which settings mattered (importance) and its report.

May import: celltune.config, celltune.data, celltune.models, celltune.metrics, celltune.training,
celltune.evaluation, celltune.reports, celltune.errors, celltune.progress
"""
