"""``python -m slidebench``: see slidebench.cli."""
import sys

from .cli import main

sys.exit(main())
