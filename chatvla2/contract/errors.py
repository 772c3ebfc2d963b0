"""Errors a user can cause and fix: a path, a name, a file's contents, a value out of range, a device
that does not answer. Our checks raise these; the front door prints them as one line and exits 2.
Anything else (a ValueError from deep inside numpy, a KeyError in our own code) is a bug and keeps
its traceback.

Each type also derives from the built-in error it used to be (ValueError, LookupError, OSError), so
`except ValueError` around a check keeps working. The drivers import nothing of ours, so their own
user-facing errors (drivers/errors.py) are listed here beside ours.
"""

from __future__ import annotations

from chatvla2.drivers.errors import DriverUserError


class UserError(Exception):
    """A problem the user can fix; its message is one line that names what was wrong."""


class InvalidInput(UserError, ValueError):
    """A value, file content or combination of options that is not accepted."""


class UnknownName(UserError, LookupError):
    """A name (preset, plan, task, split, engine, profile) that is not one of the known ones."""


class MissingFile(UserError, FileNotFoundError):
    """A path the user gave that does not exist, or a directory without a file it must hold."""


class DeviceError(UserError, OSError):
    """A device (camera, serial adapter, GPU) that is absent, refuses, or stops answering."""


# What the front door prints as one line. FileNotFoundError, FileExistsError, PermissionError,
# IsADirectoryError and NotADirectoryError come from opening a path the user named; no other OSError
# does by itself.
USER_ERRORS: tuple[type[BaseException], ...] = (
    UserError,
    DriverUserError,
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)
