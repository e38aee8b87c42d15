"""``python -m celltune``: the same as the ``celltune`` command."""

import sys

from celltune.cli import main

sys.exit(main())
