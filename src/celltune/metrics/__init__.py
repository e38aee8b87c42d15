"""Numbers from predictions, as typed results: single-label and multi-label scores, calibration (temperature, ECE,
reliability), conformal prediction sets, bootstrap intervals and paired tests (stats). Nothing here reads images,
prints or draws.

May import: celltune.models, celltune.errors
"""

from celltune._moved import forward

# celltune 0.1 had a module of this name: its names, for one release
__getattr__ = forward(__name__, "celltune.metrics.results", "celltune.metrics.classification")
