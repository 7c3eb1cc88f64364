"""``python -m rsvit.cli``: the ``rsvit`` command."""

import sys

from rsvit.cli import main

if __name__ == "__main__":
    sys.exit(main())
