"""Models that leave celltune: ONNX and torch.export files checked against the checkpoint (formats), and BioImage
Model Zoo packages for Fiji, ilastik and QuPath (modelzoo, modelzoo_files).

May import: celltune.config, celltune.data, celltune.models, celltune.metrics, celltune.predict, celltune.reports,
celltune.errors, celltune.progress
"""

from celltune._moved import forward

# celltune 0.1 had a module of this name: its names, for one release
__getattr__ = forward(__name__, "celltune.export.formats")
