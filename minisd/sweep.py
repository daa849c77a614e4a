"""``python -m minisd.sweep``: the entry point; the code is :mod:`minisd.tools.sweep`."""
import sys

from .tools.sweep import main

if __name__ == "__main__":
    sys.exit(main())
