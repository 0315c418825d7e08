"""``python -m dropcheck.benchmarks``: the same as ``dropcheck bench``."""

import sys

from dropcheck.benchmarks.run import main

sys.exit(main())
