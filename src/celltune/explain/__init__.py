"""Why the model said what it said: Grad-CAM and friends on a trained model (cam), drawn over the images and
placed in the report (heatmaps).

May import: celltune.data, celltune.models, celltune.metrics, celltune.predict, celltune.reports, celltune.errors,
celltune.progress
"""

from celltune._moved import forward

# celltune 0.1 had a module of this name: its names, for one release
__getattr__ = forward(__name__, "celltune.explain.heatmaps")
