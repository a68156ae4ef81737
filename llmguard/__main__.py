"""``python -m llmguard``: the ``llmguard`` command line."""

import sys

from .cli import main

sys.exit(main())
