"""The one exception type arlm raises for bad input.

`ArlmError` is a `ValueError` whose message is a single line naming the
problem; the CLI prints it to stderr and exits with status 2, never a traceback.
"""


class ArlmError(ValueError):
    """Bad input or a bad model directory; the message is one line naming the problem."""
