"""`python -m liveml`: the same command as `liveml`."""

import sys

from liveml.cli import main

sys.exit(main())
