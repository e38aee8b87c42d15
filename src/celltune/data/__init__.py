"""Data: finding images and their labels (layouts, samples, discovery, class choice), reading pixels (images,
image_facts, imagefiles, csvfiles), splitting (splits), the datasets, the image cache, the resumable sampling order, the
transforms (the one pixels pipeline) and the synthetic cells the tests and the demo use.

May import: celltune.config, celltune.models, celltune.errors, celltune.progress
"""

from celltune._moved import forward

# celltune 0.1 had a module of this name: its names, for one release
__getattr__ = forward(__name__, "celltune.data.discovery")
