"""The one exception type the command line turns into a one-line message and a non-zero exit."""


class TinySRError(Exception):
    """A user-facing error: bad input, a missing file, an unknown model or option.

    The message must name the file, option or value at fault; the CLI prints it on one line.
    """
