"""`python -m poller`: the same entry point as the `poller` console script."""

import sys

from poller.cli import main

sys.exit(main())
