"""One error type for bad user input: the CLI prints it as a single line and exits non-zero."""


class UserInputError(Exception):
    """Bad input from the user (missing file, wrong shape, bad option). The message names what and where."""
