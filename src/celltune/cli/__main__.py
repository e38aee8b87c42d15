"""``python -m celltune.cli``: the same as the ``celltune`` command (torchrun and srun launch it so)."""

import sys

from celltune.cli import main

sys.exit(main())
