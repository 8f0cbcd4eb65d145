"""``python -m kldiv``: the ``kldiv`` command line."""

import sys

from .cli.main import main

sys.exit(main())
