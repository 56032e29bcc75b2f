"""``python -m dragon_lab``: see :mod:`dragon_lab.cli`."""

import sys

from .cli import main

sys.exit(main())
