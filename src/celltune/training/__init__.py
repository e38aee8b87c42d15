"""Training: ``fit`` (the outline) and what it checks first (preflight), the LightningModule (module), the
DataModule, the callbacks that persist a run, the experiment trackers (tracking), the runtime (hardware, trainer,
run directory), time budgets (budget, probe), the defaults read off the data, cross-validation, and the demo job.

May import: celltune.config, celltune.data, celltune.models, celltune.metrics, celltune.audit, celltune.predict,
celltune.evaluation, celltune.reports, celltune.errors, celltune.progress
"""
