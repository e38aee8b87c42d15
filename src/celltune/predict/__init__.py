"""Prediction with a trained model: the ``Predictor`` (a checkpoint or an ONNX file, top-k, TTA, calibrated
probabilities and prediction sets), the ONNX runtime wrapper, and streaming a folder of any size to a CSV that
resumes where it stopped.

May import: celltune.data, celltune.models, celltune.metrics, celltune.errors, celltune.progress
"""

from celltune._moved import forward

# celltune 0.1 had a module of this name: its names, for one release
__getattr__ = forward(__name__, "celltune.predict.predictor")
