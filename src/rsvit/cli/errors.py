"""Which exceptions the ``rsvit`` command reports as one line, and how.

A user mistake (a bad file, a bad argument, a hostile checkpoint) deserves one line that says what is
wrong, not a traceback; a bug deserves the traceback. rsvit's own exception types (any class defined in an
``rsvit.*`` module, including a shared ``RsvitError`` base if one exists) and the standard
``ValueError``/``OSError``/``KeyError`` raised by argument and file checks count as user errors.
``--debug`` or ``RSVIT_DEBUG=1`` shows the traceback of those too.
"""

from __future__ import annotations

import os

__all__ = ["DEBUG_ENV", "debug_requested", "is_user_error", "one_line"]

DEBUG_ENV = "RSVIT_DEBUG"
# Errors of libraries that only reach the user through a bad input file.
_FOREIGN_USER_ERRORS = frozenset({"SafetensorError", "YAMLError"})


def debug_requested() -> bool:
    """Whether ``RSVIT_DEBUG`` asks for tracebacks (anything but empty, 0, false, no)."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def is_user_error(err: BaseException) -> bool:
    """An exception to report as one line: rsvit's own types and the standard input-checking ones."""
    if isinstance(err, (ValueError, OSError, KeyError)):
        return True
    return any(
        cls.__module__.split(".")[0] == "rsvit" or cls.__name__ in _FOREIGN_USER_ERRORS
        for cls in type(err).__mro__
    )


def one_line(err: BaseException) -> str:
    """The error's message on one line (KeyError's quotes dropped; the type when there is no text)."""
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    text = " ".join(text.split())
    return text or type(err).__name__
