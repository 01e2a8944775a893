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


def first_line(error: BaseException, default: str | None = None) -> str:
    """The first non-blank line of `error`'s message (`default`, else the exception's type name, when it has none)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else (type(error).__name__ if default is None else default)
