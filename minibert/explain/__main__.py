"""`python -m minibert.explain`: see minibert/explain/cli.py, or `--help`."""

import sys

from .cli import main

sys.exit(main())
