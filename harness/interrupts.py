"""How a driver is stopped: SIGINT (Ctrl-C), SIGTERM and SIGHUP all raise
:class:`KeyboardInterrupt`, and the stop is remembered while the handlers are in place.

Why remembered: a signal handler's exception lands wherever the main thread happens to be,
including inside a library that turns any Python error it meets into one of its own, or drops
it. pyarrow does both: converting a UTC timestamp, it imports ``zoneinfo`` and, if that import
fails for any reason (a KeyboardInterrupt raised inside it), reports ``ArrowInvalid: The
zoneinfo module or pytz package must be installed``; so a SIGHUP at that moment ended
``ebm-bench run`` with an "error" (exit 2) and its invocation recorded ``finished``. With the stop
remembered, the driver tells such an error from a real one (:func:`stop_requested`: an error
after a stop is the stop), and still stops when a library swallowed the exception whole
(:func:`raise_if_stopped`, called between jobs).

Only the main thread receives signals; elsewhere these functions do nothing.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

#: signals that stop a driver the way Ctrl-C does (finished runs are already on disk)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_stop: str | None = None


class TimeLimitReached(Exception):
    """A driver's ``--stop-after`` time has come: it started nothing more, and every job that was
    running then has finished and been recorded (nothing to redo; run again to resume)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"--stop-after {seconds:g} s reached")
        self.seconds = seconds


def _on_stop_signal(signum: int, frame: object) -> None:
    global _stop
    _stop = signal.Signals(signum).name
    raise KeyboardInterrupt(f"signal {_stop}")


def stop_on_signals() -> Callable[[], None]:
    """Handle :data:`STOP_SIGNALS` as Ctrl-C and remember the stop; returns a function that puts
    the previous handlers back. A signal the driver's parent set to be ignored stays ignored:
    ``nohup`` ignores SIGHUP so that closing the terminal does not stop the job, and a shell
    script's background job ignores SIGINT (Python leaves an ignored SIGINT alone too). A first
    installation forgets an earlier stop; a nested one (the CLI installs the handlers from its
    start, ``run_suite`` again) keeps it, and the outermost one's restore forgets it."""
    global _stop
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    handled = [sig for sig in STOP_SIGNALS if signal.getsignal(sig) is not signal.SIG_IGN]
    outermost = not any(signal.getsignal(sig) is _on_stop_signal for sig in handled)
    if outermost:
        _stop = None
    previous = {sig: signal.signal(sig, _on_stop_signal) for sig in handled}

    def restore() -> None:
        global _stop
        put_back(previous)
        if outermost:
            _stop = None
    return restore


def stop_requested() -> str | None:
    """The name of the signal that asked this driver to stop (``"SIGHUP"``), or None."""
    return _stop


def raise_if_stopped() -> None:
    """Raise the stop again when one was asked for: its first exception may have been swallowed
    by a library (the driver would otherwise carry on as if no signal had come)."""
    if _stop is not None:
        raise KeyboardInterrupt(f"signal {_stop}")


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """Ignore :data:`STOP_SIGNALS` inside the block (a driver's cleanup: a second signal must not
    leave its manifest saying ``running``)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        put_back(previous)


def put_back(handlers: dict) -> None:
    """Install ``handlers`` (signal → handler, as ``signal.getsignal`` gave them; None, a handler
    not set from Python, becomes the default)."""
    for sig, handler in handlers.items():
        signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
