"""``python -m eventtracking``: the same command line as the ``eventtracking`` script."""

from __future__ import annotations

import sys

from eventtracking.cli import main

if __name__ == "__main__":
    sys.exit(main())
