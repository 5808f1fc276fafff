"""User-facing errors.

Every problem a user can cause (a wrong file, an empty mask, a lesion off the image) raises
:class:`SynthsegError` with a one-line message that says what is wrong and what to do. The CLI
prints it to stderr and exits with status 2; the widgets show it as a napari notification. Any
other exception is a bug and keeps its traceback.
"""


class SynthsegError(ValueError):
    """A problem with the user's input, explained in one line."""


class CancelledError(RuntimeError):
    """Long work (training, export) was cancelled by the user."""
