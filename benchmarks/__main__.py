"""``python -m benchmarks``: the same as ``dropcheck bench``."""

import sys

from benchmarks.run import main

sys.exit(main())
