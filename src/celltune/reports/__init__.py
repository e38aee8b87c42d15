"""Files people read: the run's history, metrics JSON and plots (run_files), the offline HTML report (html) and
its trust section (trust), image composites (pictures) and the explained-image picture (heatmap_picture). Results
come in as data from ``celltune.metrics``.

May import: celltune.data, celltune.metrics, celltune.errors
"""
