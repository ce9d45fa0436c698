"""The one exception type users see: every message names the problem and the input at fault."""


class SpineAIError(ValueError):
    """Bad input or state that the user can fix; the command line prints it without a traceback."""


class SpineAIWarning(UserWarning):
    """Something the user should know about a result that still stands (the command line prints one line)."""


def warn(message: str) -> None:
    import warnings

    warnings.warn(message, SpineAIWarning, stacklevel=3)
