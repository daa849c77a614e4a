"""``python -m minisd.plot``: the entry point; the code is :mod:`minisd.tools.plot`."""
import sys

from .tools.plot import main

if __name__ == "__main__":
    sys.exit(main())
