"""The one exception type for mistakes a user can fix.

Library code raises :class:`UserInputError` with a sentence that names what was found, what was
expected and how to fix it. The CLI prints that sentence (no traceback) and exits with code 2;
Python callers can catch it like any other exception.
"""


class UserInputError(ValueError):
    """Bad input from the user (file, column, option): the message says how to fix it."""
