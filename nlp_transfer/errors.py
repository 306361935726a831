"""The one exception type for mistakes a user can fix.

Library code raises :class:`UserInputError` with a sentence that names what was found, what was
expected and how to fix it. The CLI prints that sentence (no traceback) and exits with code 2;
Python callers can catch it like any other exception.
"""


class UserInputError(ValueError):
    """Bad input from the user (file, column, option): the message says how to fix it."""


class PushError(UserInputError):
    """A push that could not be done: not logged in, no write access, bad repo id, network down.

    A :class:`UserInputError`, so the CLI prints the message on one line and exits with code 2.
    The message never contains the token.
    """


def check_positive_int(value: object, name: str) -> int:
    """Return ``value`` if it is an integer of at least 1 (not a bool); else raise :class:`UserInputError`.

    Args:
        value: what the user gave.
        name: how the user named it (an option such as ``--batch-size`` or a field name).
    """
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UserInputError(f"{name} must be a positive integer; got {value!r}.")
    return value
