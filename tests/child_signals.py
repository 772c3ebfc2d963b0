"""For tests that signal a child process: the child's stop signals at their defaults.

A child inherits ignored signals, and the CLIs keep a signal that is ignored (nohup's contract,
drivers/stop_signals.py). A test runner started under nohup (SIGHUP ignored) or as a background
job of a non-interactive shell (SIGINT ignored) would otherwise see the child ignore the signal
and finish normally; pass `preexec_fn=default_stop_signals` so the child starts as in a terminal.
"""

from __future__ import annotations

import signal


def default_stop_signals() -> None:
    """In the child, before exec."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_DFL)
