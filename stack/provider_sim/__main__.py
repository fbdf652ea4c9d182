"""``python -m stack.provider_sim``: run the simulator from the command line."""

from __future__ import annotations

import sys

from stack.provider_sim.cli import main

if __name__ == "__main__":
    sys.exit(main())
