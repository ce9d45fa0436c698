"""The one exception type users see: every message names the problem and the input at fault."""


class SpineAIError(ValueError):
    """Bad input or state that the user can fix; the command line prints it without a traceback."""
