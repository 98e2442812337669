"""The one exception type arlm raises for bad input.

`ArlmError` is a `ValueError` whose message is a single line naming the
problem; the CLI prints it to stderr and exits with status 2, never a traceback.
"""


class ArlmError(ValueError):
    """Bad input or a bad model directory; the message is one line naming the problem."""


class Interrupted(Exception):
    """A command stopped by SIGINT or SIGTERM after saving its work.

    The CLI prints the message as one line and exits ``128 + signum`` (130 for
    Ctrl-C, 143 for SIGTERM), as shell tools do, so ``arlm train ... && next``
    does not carry on.
    """

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = int(signum)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread where it arrives, so that every clean-up
    that runs on Ctrl-C (temporary files and directories, half-written outputs)
    runs on SIGTERM too; the CLI prints one line and exits 143."""

    signum = 15
