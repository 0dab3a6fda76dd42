"""``python -m esper_core.demo`` runs the demo without the ``esper`` command."""

import sys

from esper_core.demo.cli import main

sys.exit(main())
