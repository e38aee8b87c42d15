"""Scoring a trained run: the test split's metrics with intervals, calibration, TTA and the report (evaluate), and
two runs compared on the same images, or two cross-validations on their out-of-fold predictions (compare).

May import: celltune.config, celltune.data, celltune.models, celltune.metrics, celltune.audit, celltune.predict,
celltune.explain, celltune.reports, celltune.errors, celltune.progress
"""
