"""``python -m dragon_core``: see :mod:`dragon_core.cli`."""

import sys

from .cli import main

sys.exit(main())
