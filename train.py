#!/usr/bin/env python3
"""Side-Step: `python train.py` (wizard) or `python train.py COMMAND ...` (CLI)."""

import sys

from sidestep.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
