"""``python -m harness`` is ``ebm-bench`` (useful from a source checkout without installing)."""

import sys

from harness.cli import main

sys.exit(main())
