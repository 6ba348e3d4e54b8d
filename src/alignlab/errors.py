"""Errors a user can act on. The CLI prints their message without a traceback."""


class AlignlabError(Exception):
    """Something the user can fix or should know; the message says what and what to do."""


class NonFiniteError(AlignlabError):
    """A loss or gradient became NaN or infinite; the message names the step and the batch."""
