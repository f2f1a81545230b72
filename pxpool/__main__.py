"""`python -m pxpool ...` is the `pxpool` command."""

import sys

from .cli import main

sys.exit(main())
