"""Models: the one factory (``create_model``: torchvision and timm names, new head, frozen layers, stems for 1..N
channels), the pretrained weights and their preprocessing, and the checkpoint with its ``ModelCard`` (labels and
preprocessing as plain data).

May import: celltune.config, celltune.errors
"""

from celltune._moved import forward

# celltune 0.1 had a module of this name: its names, for one release
__getattr__ = forward(__name__, "celltune.models.factory")
