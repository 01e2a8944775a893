"""The one exception type for what a user can fix: a path, a file's format, a flag, a checkpoint that does not fit.

The command-line programs (`cli.run_cli`) print a `UserError` as one line and exit with status 2; every other
exception is a bug and keeps its traceback. The subclasses keep the built-in type a caller would catch.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix, said in one line that names the file or flag and the fix."""


class InvalidInputError(UserError, ValueError):
    """A value, file content or format that cannot be used as given."""


class MissingInputError(UserError, FileNotFoundError):
    """A file, folder or Hub repository that is not there."""


class MissingDependencyError(UserError, ImportError):
    """An optional dependency the requested feature needs."""
