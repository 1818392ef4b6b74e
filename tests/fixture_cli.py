"""``python tests/fixture_cli.py ARGS``: the ``ebm-bench`` CLI with the test fixture methods
(:mod:`baselines.testing`: ``test-constant``, ``test-raises``, ...) registered, for tests that
drive the CLI in a real process. The production CLI never knows these names.

``EBM_TEST_MANGLED_INTERRUPT=WHERE:HOW,MARKER`` makes one call of the driver behave like a
library that meets a signal's KeyboardInterrupt and mangles it (pyarrow, importing ``zoneinfo``
to convert a UTC timestamp, turns it into ``ArrowInvalid``). WHERE is ``driver`` (the run index's
refresh once a run is stored: the driver's own reading of Parquet) or ``fit`` (``test-sleep``'s
training, in the driver with the serial executor); its first call creates the file MARKER, then
sleeps for up to 60 s, and HOW says what a KeyboardInterrupt inside that sleep becomes: ``raise`` an
error of the library's own, or ``swallow`` it (the call returns as if nothing happened).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout, as `python -m` would

from baselines.testing import register_fixtures  # noqa: E402
from harness.cli import main  # noqa: E402


def _mangling_call(how: str, marker: Path, error: Exception):
    def call() -> None:
        marker.touch()
        try:
            time.sleep(60)
        except KeyboardInterrupt:
            if how == "raise":
                raise error from None
    return call


def _mangle_interrupts(spec: str) -> None:
    where_how, marker = spec.split(",", 1)
    where, how = where_how.split(":")
    if where == "driver":
        import pyarrow as pa

        from harness.store import RunIndex

        refresh = RunIndex.refresh
        mangled = _mangling_call(how, Path(marker), pa.ArrowInvalid("The zoneinfo module or pytz package must be "
                                                                     "installed."))

        def refresh_then_mangle(self) -> None:
            refresh(self)
            if self.status and not Path(marker).exists():
                mangled()
        RunIndex.refresh = refresh_then_mangle  # type: ignore[method-assign]
    elif where == "fit":
        from baselines.testing import SleepingMethod

        fit = SleepingMethod.fit
        mangled = _mangling_call(how, Path(marker), RuntimeError("a library's error in place of the interrupt"))

        def mangle_then_fit(self, *args, **kwargs):
            if not Path(marker).exists():
                mangled()
            return fit(self, *args, **kwargs)
        SleepingMethod.fit = mangle_then_fit  # type: ignore[method-assign]
    else:
        raise ValueError(f"EBM_TEST_MANGLED_INTERRUPT: WHERE must be 'driver' or 'fit', got {where!r}")


if __name__ == "__main__":
    register_fixtures()
    if os.environ.get("EBM_TEST_MANGLED_INTERRUPT"):
        _mangle_interrupts(os.environ["EBM_TEST_MANGLED_INTERRUPT"])
    sys.exit(main(sys.argv[1:]))
