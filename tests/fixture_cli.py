"""``python tests/fixture_cli.py ARGS``: the ``ebm-bench`` CLI with the test fixture methods
(:mod:`baselines.testing`: ``test-constant``, ``test-raises``, ...) registered, for tests that
drive the CLI in a real process. The production CLI never knows these names."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout, as `python -m` would

from baselines.testing import register_fixtures  # noqa: E402
from harness.cli import main  # noqa: E402

if __name__ == "__main__":
    register_fixtures()
    sys.exit(main(sys.argv[1:]))
