"""`python -m tokenizer.train`: train a SentencePiece tokenizer from the command line (`--help` for the options).

The command is `tokenizer.cli.main`. This module only runs it: import `tokenizer.cli` from Python, since importing
this module would bind its name over the package's function `tokenizer.train`.
"""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
