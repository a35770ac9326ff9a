"""`python -m kerasops ...`: the `kerasops` command line."""

import sys

from kerasops.pipelines.cli import main

if __name__ == "__main__":
    sys.exit(main())
