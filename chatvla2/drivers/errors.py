"""The drivers' errors a user can cause and fix (a port that does not open, an unknown profile, an
arm that does not answer). The drivers import nothing of ours, so they have their own base type;
chatvla2/contract/errors.py lists it with the rest, and the front door prints it as one line."""

from __future__ import annotations


class DriverUserError(Exception):
    """A driver problem the user can fix; its message is one line that names what was wrong."""


class DriverInvalidInput(DriverUserError, ValueError):
    """A driver option or combination of options that is not accepted (two arms on one adapter)."""


class DriverDeviceError(DriverUserError, OSError):
    """An arm or adapter that is absent, refuses, or stops answering."""
