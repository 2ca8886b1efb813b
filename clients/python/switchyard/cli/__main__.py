"""``python -m switchyard.cli``: the same as the ``switchyard`` console script."""

import sys

from switchyard.cli import main

sys.exit(main())
