"""Auditing data before it is trusted: ``celltune check``'s runner (check), exact and near duplicates, confounds
(size, brightness, file format that give the class away), groups kept whole, leaks between splits, findings a user
accepts, and labels that look wrong (label_issues).

May import: celltune.config, celltune.data, celltune.errors, celltune.progress
"""

from celltune._moved import forward

# celltune 0.1 had a module of this name: its names, for one release
__getattr__ = forward(__name__, "celltune.audit.check")
